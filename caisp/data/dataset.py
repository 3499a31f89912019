"""Training pairs: bilinear-demosaiced raw -> sRGB target (-> its real codec's output), as (3, h, w) tensors.

Crops start on multiples of 16, so they keep the Bayer phase and the 8x8 / 16x16 JPEG block grid:
the block artifacts of `coded` stay where the encoder put them. Patch sides are multiples of 16, so
flips and 90-degree rotations map that grid onto itself.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from caisp import CaispError
from caisp.data.bayer import (apply_colour_matrix, check_cfa, check_input_norm, demosaic_bilinear,
                              normalise_mosaic)
from caisp.data.store import RenderedImage

GRID = 16


Augment = tuple[int, int, int]  # (flip rows, flip columns, quarter turns counter-clockwise)
NO_AUGMENT: Augment = (0, 0, 0)


def _augment(a: np.ndarray, aug: Augment) -> np.ndarray:
    """Flip and rotate the first two axes of `a` (a view; np.rot90 turns like torch.rot90)."""
    flip_v, flip_h, rot = aug
    if flip_v:
        a = a[::-1]
    if flip_h:
        a = a[:, ::-1]
    return np.rot90(a, rot, axes=(0, 1))


def _augment_box(y: int, x: int, h: int, w: int, H: int, W: int, aug: Augment) -> tuple[int, int, int, int]:
    """Where the box (y, x, h, w) of an H x W array lands after `_augment`: (y, x, h, w)."""
    flip_v, flip_h, rot = aug
    if flip_v:
        y = H - y - h
    if flip_h:
        x = W - x - w
    for _ in range(rot):  # np.rot90: new[i, j] = old[j, W - 1 - i]
        y, x, h, w, H, W = W - x - w, y, w, h, W, H
    return y, x, h, w


def _raw_window(img: RenderedImage, y0: int, x0: int, h: int, w: int, input_norm: str,
                aug: Augment = NO_AUGMENT) -> Tensor:
    """The ISP input of the crop, augmented: `aug` applied to
    demosaic_bilinear(normalised mosaic)[:, y0:y0+h, x0:x0+w], read and computed on a window only.

    y0, x0 are even, and so is the 2-pixel margin: the window keeps the CFA phase. Crop pixels get
    their real neighbours from the margin, or the same reflect padding as the full image at its border.
    The flips and turns are applied to the one-channel mosaic window before demosaicing, with the CFA
    pattern turned alike (the window's sides are even): bilinear demosaicing is symmetric, so this
    equals augmenting its three-channel output, at a third of the memory traffic.
    """
    H, W = img.shape
    top, left = max(y0 - 2, 0), max(x0 - 2, 0)
    bottom, right = min(y0 + h + 2, H), min(x0 + w + 2, W)
    meta = img.meta
    cfa = check_cfa(meta["cfa"])
    m = normalise_mosaic(img.mosaic(top, left, bottom - top, right - left), cfa, meta["wb"], input_norm)
    if aug != NO_AUGMENT:
        cfa = "".join(_augment(np.array(list(cfa)).reshape(2, 2), aug).ravel())
        y, x, h, w = _augment_box(y0 - top, x0 - left, h, w, bottom - top, right - left, aug)
        m = torch.from_numpy(np.ascontiguousarray(_augment(m.numpy(), aug)))
    else:
        y, x = y0 - top, x0 - left
    raw = demosaic_bilinear(m, cfa)[:, y : y + h, x : x + w]
    if input_norm == "camera":
        raw = apply_colour_matrix(raw, torch.from_numpy(meta["rgb_cam"]))
    return raw


KEYS = ("raw", "srgb", "coded")


def to_float(img: Tensor) -> Tensor:
    """uint8 -> float32 in [0, 1], the one conversion of the dataset and the training loop."""
    return img.float().div_(255.0)


class RawRGBDataset(Dataset):
    """Items `{"raw", "srgb", ["coded"], "stem"}`; images float32 (3, h, w) in [0, 1].

    `keys` limits an item to the images a task reads (`caisp.losses`: CAS-Net training never needs
    the demosaic, half of a crop's work). `uint8=True` leaves `srgb` and `coded` as uint8 (3, h, w),
    a quarter of the bytes through the loader's shared memory and the copy to the GPU; the training
    loop turns them into floats on the device (`caisp.train`), with the same division as here.

    `raw` is the ISP-Net's input (see `caisp.data.bayer.INPUT_NORMS`): the bilinear demosaic of the
    mosaic, first multiplied by the camera WB gains and clipped (unless input_norm == "none"), then
    mapped to linear sRGB by the camera's colour matrix when input_norm == "camera".
    patch=None: the whole image, cropped at the bottom/right to a multiple of 16, not augmented.
    patch=p: a square crop whose top-left lies on the 16-grid, random with a random flip/rotation
    (the same for all outputs) when `train`, else the centre crop snapped down to the grid. An image
    smaller than p gives the largest square multiple of 16 that fits (its side is then < p, so such
    images do not batch with others). `repeat` visits every image `repeat` times per epoch.
    Every item reads its crop's window from the memory-mapped arrays of `caisp.data.store` and
    computes the demosaic on that window (equal to cropping a full-image demosaic): O(crop) work and
    memory per item, and nothing cached per process, so DataLoader workers stay small on any data set.
    """

    def __init__(
        self,
        rendered_dir: str | os.PathLike,
        stems: Iterable[str],
        *,
        coded_dir: str | os.PathLike | None = None,
        patch: int | None = None,
        train: bool = True,
        input_norm: str = "camera",
        repeat: int = 1,
        keys: Iterable[str] | None = None,
        uint8: bool = False,
    ) -> None:
        if patch is not None and (
            isinstance(patch, bool) or not isinstance(patch, int) or patch <= 0 or patch % GRID
        ):
            raise CaispError(f"patch must be a positive multiple of {GRID} or None, got {patch!r}")
        check_input_norm(input_norm)
        if isinstance(repeat, bool) or not isinstance(repeat, int) or repeat < 1:
            raise CaispError(f"repeat must be a positive integer, got {repeat!r}")
        self.rendered_dir = Path(rendered_dir)
        self.coded_dir = None if coded_dir is None else Path(coded_dir)
        self.stems = list(stems)
        self.patch, self.train, self.input_norm = patch, train, input_norm
        self.repeat = repeat
        self.keys = tuple(keys) if keys is not None else KEYS[:2] + (("coded",) if coded_dir is not None else ())
        unknown = sorted(set(self.keys) - set(KEYS))
        if unknown:
            raise CaispError(f"unknown dataset key(s) {unknown} (known: {', '.join(KEYS)})")
        if "coded" in self.keys and coded_dir is None:
            raise CaispError("dataset key 'coded' needs a coded_dir (the decoded files of an operating point)")
        self.uint8 = bool(uint8)
        # Paths and metadata only (a few hundred bytes an image): pixels are read per item.
        self.images = [RenderedImage(self.rendered_dir, stem, self.coded_dir) for stem in self.stems]

    def __len__(self) -> int:
        return len(self.stems) * self.repeat

    def _image(self, index: int) -> RenderedImage:
        img = self.images[index % len(self.images)]
        H, W = img.shape
        if min(H, W) < GRID:
            raise CaispError(f"image {img.stem!r}: {H}x{W} is smaller than {GRID}x{GRID}")
        return img  # its CFA is checked where it is used, in _raw_window

    def _window(self, H: int, W: int) -> tuple[int, int, int, int]:
        """(y0, x0, h, w) of the crop, all multiples of 16."""
        if self.patch is None:
            return 0, 0, H // GRID * GRID, W // GRID * GRID
        s = min(self.patch, H // GRID * GRID, W // GRID * GRID)
        if self.train:
            y0 = GRID * int(torch.randint((H - s) // GRID + 1, ()).item())
            x0 = GRID * int(torch.randint((W - s) // GRID + 1, ()).item())
        else:
            y0, x0 = (H - s) // 2 // GRID * GRID, (W - s) // 2 // GRID * GRID
        return y0, x0, s, s

    def __getitem__(self, index: int) -> dict[str, Tensor | str]:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} items")
        img = self._image(index)
        y0, x0, h, w = self._window(*img.shape)
        aug = NO_AUGMENT
        if self.train and self.patch is not None:
            flip_v, flip_h = torch.randint(2, (2,)).tolist()
            aug = (flip_v, flip_h, int(torch.randint(4, ()).item()))
        out: dict[str, Tensor | str] = {}
        if "raw" in self.keys:
            out["raw"] = _raw_window(img, y0, x0, h, w, self.input_norm, aug).contiguous()
        for key, read in (("srgb", img.target), ("coded", img.coded)):
            if key in self.keys:  # flipped as 8-bit HWC, a quarter of the bytes of float32 CHW
                chw = torch.from_numpy(np.ascontiguousarray(_augment(read(y0, x0, h, w), aug).transpose(2, 0, 1)))
                out[key] = chw if self.uint8 else to_float(chw)
        out["stem"] = img.stem
        return out

"""Training pairs: bilinear-demosaiced raw -> sRGB target (-> its real JPEG), as (3, h, w) tensors.

Crops start on multiples of 16, so they keep the Bayer phase and the 8x8 / 16x16 JPEG block grid:
the block artifacts of `jpeg` stay where the encoder put them. Patch sides are multiples of 16, so
flips and 90-degree rotations map that grid onto itself.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from caisp import CaispError
from caisp.data.bayer import (apply_colour_matrix, check_cfa, check_input_norm, demosaic_bilinear,
                              normalise_mosaic)

GRID = 16


@dataclass
class _Image:
    mosaic: Tensor             # float32 (H, W), WB applied and clipped unless input_norm == "none"
    cfa: str
    rgb_cam: Tensor | None     # (3, 3) applied after demosaicing when input_norm == "camera"
    srgb: np.ndarray           # uint8 (H, W, 3)
    jpeg: np.ndarray | None    # uint8 (H, W, 3)


def _read_rgb(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as im:
            return np.array(im.convert("RGB"))  # a writable copy: torch.from_numpy needs one
    except OSError as e:
        raise CaispError(f"{path}: cannot read image ({e})") from e


def _demosaic_window(mosaic: Tensor, cfa: str, y0: int, x0: int, h: int, w: int) -> Tensor:
    """demosaic_bilinear(mosaic)[:, y0:y0+h, x0:x0+w], computed on a window only.

    y0, x0 are even, and so is the 2-pixel margin: the window keeps the CFA phase. Crop pixels get
    their real neighbours from the margin, or the same reflect padding as the full image at its border.
    """
    H, W = mosaic.shape
    top, left = max(y0 - 2, 0), max(x0 - 2, 0)
    window = mosaic[top : min(y0 + h + 2, H), left : min(x0 + w + 2, W)]
    return demosaic_bilinear(window, cfa)[:, y0 - top : y0 - top + h, x0 - left : x0 - left + w]


class RawRGBDataset(Dataset):
    """Items `{"raw", "srgb", ["jpeg"], "stem"}`; images float32 (3, h, w) in [0, 1].

    `raw` is the ISP-Net's input (see `caisp.data.bayer.INPUT_NORMS`): the bilinear demosaic of the
    mosaic, first multiplied by the camera WB gains and clipped (unless input_norm == "none"), then
    mapped to linear sRGB by the camera's colour matrix when input_norm == "camera".
    patch=None: the whole image, cropped at the bottom/right to a multiple of 16, not augmented.
    patch=p: a square crop whose top-left lies on the 16-grid, random with a random flip/rotation
    (the same for all outputs) when `train`, else the centre crop snapped down to the grid. An image
    smaller than p gives the largest square multiple of 16 that fits (its side is then < p, so such
    images do not batch with others). `repeat` visits every image `repeat` times per epoch.
    cache=True keeps the WB-normalised mosaic (float32) and the 8-bit images in memory (per process,
    so per DataLoader worker); the demosaic is computed per item on the crop's window, which equals
    cropping a full-image demosaic.
    """

    def __init__(
        self,
        rendered_dir: str | os.PathLike,
        stems: Iterable[str],
        *,
        jpeg_dir: str | os.PathLike | None = None,
        patch: int | None = None,
        train: bool = True,
        input_norm: str = "camera",
        repeat: int = 1,
        cache: bool = True,
    ) -> None:
        if patch is not None and (
            isinstance(patch, bool) or not isinstance(patch, int) or patch <= 0 or patch % GRID
        ):
            raise CaispError(f"patch must be a positive multiple of {GRID} or None, got {patch!r}")
        check_input_norm(input_norm)
        if isinstance(repeat, bool) or not isinstance(repeat, int) or repeat < 1:
            raise CaispError(f"repeat must be a positive integer, got {repeat!r}")
        self.rendered_dir = Path(rendered_dir)
        self.jpeg_dir = None if jpeg_dir is None else Path(jpeg_dir)
        self.stems = list(stems)
        self.patch, self.train, self.input_norm = patch, train, input_norm
        self.repeat, self.cache = repeat, cache
        self._cache: dict[str, _Image] = {}
        for stem in self.stems:
            for path in self._paths(stem):
                if path is not None and not path.is_file():
                    raise CaispError(f"{path}: missing (image {stem!r})")

    def _paths(self, stem: str) -> tuple[Path, Path, Path | None]:
        jpeg = None if self.jpeg_dir is None else self.jpeg_dir / f"{stem}.jpg"
        return self.rendered_dir / "mosaics" / f"{stem}.npz", self.rendered_dir / "targets" / f"{stem}.png", jpeg

    def __len__(self) -> int:
        return len(self.stems) * self.repeat

    def _load(self, stem: str) -> _Image:
        if stem in self._cache:
            return self._cache[stem]
        npz_path, png_path, jpg_path = self._paths(stem)
        try:
            with np.load(npz_path, allow_pickle=False) as z:
                mosaic, cfa, wb = z["mosaic"].astype(np.float32), str(z["cfa"]), z["wb"]
                rgb_cam = z["rgb_cam"] if self.input_norm == "camera" else None
        except (OSError, KeyError, ValueError) as e:
            raise CaispError(f"{npz_path}: not a caisp mosaic ({e})") from e
        if mosaic.ndim != 2:
            raise CaispError(f"{npz_path}: mosaic must be 2-D, got shape {mosaic.shape}")
        try:
            cfa = check_cfa(cfa)
        except CaispError as e:
            raise CaispError(f"{npz_path}: {e}") from e
        m = normalise_mosaic(torch.from_numpy(mosaic), cfa, wb, self.input_norm)
        srgb = _read_rgb(png_path)
        jpeg = None if jpg_path is None else _read_rgb(jpg_path)
        for name, img in (("target", srgb), ("jpeg", jpeg)):
            if img is not None and img.shape[:2] != mosaic.shape:
                raise CaispError(
                    f"image {stem!r}: {name} is {img.shape[0]}x{img.shape[1]}, "
                    f"mosaic is {mosaic.shape[0]}x{mosaic.shape[1]}"
                )
        if min(mosaic.shape) < GRID:
            h, w = mosaic.shape
            raise CaispError(f"image {stem!r}: {h}x{w} is smaller than {GRID}x{GRID}")
        item = _Image(m, cfa, None if rgb_cam is None else torch.from_numpy(rgb_cam).float(), srgb, jpeg)
        if self.cache:
            self._cache[stem] = item
        return item

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
        stem = self.stems[index % len(self.stems)]
        img = self._load(stem)
        y0, x0, h, w = self._window(*img.mosaic.shape)
        raw = _demosaic_window(img.mosaic, img.cfa, y0, x0, h, w)
        if img.rgb_cam is not None:
            raw = apply_colour_matrix(raw, img.rgb_cam)
        out: dict[str, Tensor] = {"raw": raw}
        for key, arr in (("srgb", img.srgb), ("jpeg", img.jpeg)):
            if arr is not None:
                crop = torch.from_numpy(arr[y0 : y0 + h, x0 : x0 + w]).permute(2, 0, 1)
                out[key] = crop.float().div_(255.0)
        if self.train and self.patch is not None:
            flip_v, flip_h, rot = torch.randint(2, (2,)).tolist() + [int(torch.randint(4, ()).item())]
            for key, t in out.items():
                if flip_v:
                    t = t.flip(-2)
                if flip_h:
                    t = t.flip(-1)
                out[key] = torch.rot90(t, rot, dims=(-2, -1))
        result: dict[str, Tensor | str] = {k: v.contiguous() for k, v in out.items()}
        result["stem"] = stem
        return result

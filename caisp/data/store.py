"""The rendered data set on disk, in a form that a training crop reads in O(crop), not O(image).

Layout under `data/rendered` (written by the render stage) and `data/codecs/<point>` (`qf80` for
JPEG at QF 80, `webp-80` for another codec; the encode stages):

    mosaics/<stem>.npy   uint16 (H, W): the raw sensor values as LibRaw unpacked them, H and W even
    meta/<stem>.json     cfa, black (2x2, per CFA site), white, wb, daylight_wb, rgb_cam, flip, camera
    targets/<stem>.npy   uint8 (H, W, 3): LibRaw's sRGB rendering, y
    <point>/<stem>.jpg   the real codec's file c(y) (its bytes give the BPP); .webp, .avif, .jp2, .heic likewise
    <point>/<stem>.npy   uint8 (H, W, 3): that file decoded once, so crops never decode a whole file

Plain `.npy` files are memory-mapped per read and the mapping dropped at once: the pages stay in the
OS page cache, shared by every DataLoader worker, and no process's RSS grows with the data set.
Uncompressed, an image costs H*W*(2 + 3 + 3 per QF) bytes (FiveK's 12 MP: 60 MB + 36 MB per QF).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from caisp import CaispError
from caisp.io import atomic_path, write_json

META_KEYS = ("cfa", "black", "white", "wb", "daylight_wb", "rgb_cam", "flip")


def write_array(path: str | os.PathLike, array: np.ndarray) -> None:
    """np.save, atomically: a reader never maps a half-written file."""
    with atomic_path(Path(path)) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, np.ascontiguousarray(array), allow_pickle=False)


def open_array(path: str | os.PathLike) -> np.ndarray:
    """A read-only memory map of a `.npy` file; CaispError naming the file when it is not one."""
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as e:
        raise CaispError(f"{path}: not a caisp .npy array ({e})") from e


def read_window(path: str | os.PathLike, y0: int = 0, x0: int = 0, h: int | None = None,
                w: int | None = None) -> np.ndarray:
    """A copy of array[y0:y0+h, x0:x0+w] (the whole array when h, w are None), read through a
    mapping that is closed before returning, so only the window's pages are touched."""
    arr = open_array(path)
    try:
        y1 = arr.shape[0] if h is None else y0 + h
        x1 = arr.shape[1] if w is None else x0 + w
        return np.array(arr[y0:y1, x0:x1])
    finally:
        mm = getattr(arr, "_mmap", None)
        del arr
        if mm is not None:
            mm.close()


def write_meta(path: str | os.PathLike, **meta: Any) -> None:
    """Metadata as JSON; float32 values survive the round trip exactly (float64 repr)."""
    missing = [k for k in META_KEYS if k not in meta]
    if missing:
        raise ValueError(f"write_meta: missing {', '.join(missing)}")
    write_json(path, {k: (np.asarray(v).tolist() if isinstance(v, np.ndarray) else v) for k, v in meta.items()})


def read_meta(path: str | os.PathLike) -> dict[str, Any]:
    """The metadata of one mosaic, arrays as float32 numpy arrays."""
    try:
        meta = json.loads(Path(path).read_text())
        out = {k: meta[k] for k in META_KEYS}
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CaispError(f"{path}: not a caisp mosaic description ({e})") from e
    for k in ("black", "wb", "daylight_wb", "rgb_cam"):
        out[k] = np.asarray(out[k], dtype=np.float32)
    out["white"] = float(out["white"])
    if out["black"].shape != (2, 2):
        raise CaispError(f"{path}: black must be 2x2 (one level per CFA site), got {out['black'].shape}")
    return {**meta, **out}


def normalise_raw(data: np.ndarray, black: np.ndarray, white: float) -> np.ndarray:
    """(raw - black) / (white - black), clipped to [0, 1], float32; `data` starts on an even row and
    column, so the 2x2 `black` tiles onto its CFA sites. The arithmetic is LibRaw-side
    `caisp.data.raw.raw_image_from`'s, so a window equals the same window of the whole image."""
    h, w = data.shape
    black_map = np.tile(black, ((h + 1) // 2, (w + 1) // 2))[:h, :w]
    mosaic = (data.astype(np.float32) - black_map) / (white - black_map)
    np.clip(mosaic, 0.0, 1.0, out=mosaic)
    return mosaic


class RenderedImage:
    """Paths and metadata of one rendered image; pixel windows are read on demand."""

    def __init__(self, rendered_dir: str | os.PathLike, stem: str, coded_dir: str | os.PathLike | None = None):
        root = Path(rendered_dir)
        self.stem = stem
        self.mosaic_path = root / "mosaics" / f"{stem}.npy"
        self.meta_path = root / "meta" / f"{stem}.json"
        self.target_path = root / "targets" / f"{stem}.npy"
        self.coded_path = None if coded_dir is None else Path(coded_dir) / f"{stem}.npy"
        for path in self.paths():
            if not path.is_file():
                raise CaispError(f"{path}: missing (image {stem!r})")
        self._meta: dict[str, Any] | None = None
        self._shape: tuple[int, int] | None = None

    def paths(self) -> list[Path]:
        return [p for p in (self.mosaic_path, self.meta_path, self.target_path, self.coded_path) if p is not None]

    @property
    def meta(self) -> dict[str, Any]:
        if self._meta is None:
            self._meta = read_meta(self.meta_path)
        return self._meta

    @property
    def shape(self) -> tuple[int, int]:
        """(H, W), checked once against the target's and the coded image's."""
        if self._shape is None:
            shape = open_array(self.mosaic_path).shape
            if len(shape) != 2 or shape[0] % 2 or shape[1] % 2:
                raise CaispError(f"{self.mosaic_path}: mosaic must be 2-D with even sides, got shape {shape}")
            for name, path in (("target", self.target_path), ("coded", self.coded_path)):
                if path is None:
                    continue
                other = open_array(path).shape
                if other != (*shape, 3):
                    raise CaispError(f"image {self.stem!r}: {name} {path.name} is {other}, mosaic is {shape}")
            self._shape = shape
        return self._shape

    def mosaic(self, y0: int = 0, x0: int = 0, h: int | None = None, w: int | None = None) -> np.ndarray:
        """The normalised mosaic window (float32 in [0, 1]); y0 and x0 even."""
        if y0 % 2 or x0 % 2:
            raise ValueError(f"mosaic window must start on an even row/column, got ({y0}, {x0})")
        m = self.meta
        return normalise_raw(read_window(self.mosaic_path, y0, x0, h, w), m["black"], m["white"])

    def target(self, y0: int = 0, x0: int = 0, h: int | None = None, w: int | None = None) -> np.ndarray:
        return read_window(self.target_path, y0, x0, h, w)

    def coded(self, y0: int = 0, x0: int = 0, h: int | None = None, w: int | None = None) -> np.ndarray | None:
        return None if self.coded_path is None else read_window(self.coded_path, y0, x0, h, w)

"""Read a camera raw file (through LibRaw/rawpy) into a normalised Bayer mosaic plus its metadata."""
from __future__ import annotations

import contextlib
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import rawpy

from caisp import CaispError


class RawError(CaispError):
    """A raw file that cannot be used; `file` and `reason` are kept apart for manifests."""

    def __init__(self, file: str | os.PathLike, reason: str):
        self.file = str(file)
        self.reason = reason
        super().__init__(f"{self.file}: {reason}")


@dataclass
class RawImage:
    mosaic: np.ndarray       # float32 (H, W) in [0, 1], H and W even
    cfa: str                 # 2x2 pattern at the mosaic's top-left, e.g. "RGGB"
    wb: np.ndarray           # float32 (3,) R, G, B multipliers with G = 1
    daylight_wb: np.ndarray  # float32 (3,) likewise
    wb_valid: bool           # False: camera WB missing, `wb` falls back to daylight (or ones)
    flip: int                # LibRaw sizes.flip
    black: np.ndarray        # float32 (4,) per-channel black level
    white: float
    bits: int
    camera: str
    path: str


def _libraw_reason(exc: Exception) -> str:
    msg = exc.args[0] if exc.args else ""
    if isinstance(msg, bytes):
        msg = msg.decode("utf-8", "replace")
    return f"{type(exc).__name__}: {msg}" if msg else type(exc).__name__


@contextlib.contextmanager
def open_raw(path: str | os.PathLike) -> Iterator[rawpy.RawPy]:
    """Open and unpack `path` with LibRaw; any LibRaw failure in the block becomes a RawError."""
    path = Path(path)
    if not path.exists():
        raise RawError(path, "no such file")
    if not path.is_file():
        raise RawError(path, "not a regular file")
    if path.stat().st_size == 0:
        raise RawError(path, "empty file")
    try:
        raw = rawpy.imread(str(path))
    except (rawpy.LibRawError, rawpy.NotSupportedError) as exc:
        raise RawError(path, f"not a raw file LibRaw can open ({_libraw_reason(exc)})") from None
    try:
        try:
            raw.unpack()  # decode now, so truncation is reported as such and not at first pixel access
        except (rawpy.LibRawError, rawpy.NotSupportedError) as exc:
            raise RawError(path, f"truncated or corrupt raw data ({_libraw_reason(exc)})") from None
        try:
            yield raw
        except (rawpy.LibRawError, rawpy.NotSupportedError) as exc:
            raise RawError(path, f"LibRaw failed ({_libraw_reason(exc)})") from None
    finally:
        raw.close()


def _normalised_wb(values) -> tuple[np.ndarray, bool]:
    """First three LibRaw multipliers scaled to G = 1, and whether they look like a real WB."""
    v = np.asarray(list(values)[:3], dtype=np.float64)
    ok = v.shape == (3,) and bool(np.all(np.isfinite(v))) and bool(np.all(v > 0))
    if not ok:
        return np.ones(3, np.float32), False
    v = v / v[1]
    # All-equal multipliers are LibRaw's placeholder for "no WB recorded" (e.g. Kodak DC50).
    return v.astype(np.float32), not bool(np.allclose(v, 1.0))


def _camera_name(path: Path) -> str:
    """Make and model from the TIFF IFD0 most raw formats start with; '' when not TIFF-based."""
    from PIL import TiffImagePlugin

    try:
        with path.open("rb") as fh:
            head = fh.read(8)
            ifd = TiffImagePlugin.ImageFileDirectory_v2(ifh=head)
            fh.seek(ifd.next)
            ifd.load(fh)
    except Exception:  # noqa: BLE001 - the name is cosmetic; any parse failure just means unknown
        return ""
    make, model = (str(ifd.get(t, "")).strip("\x00 ") for t in (271, 272))
    if model.lower().startswith(make.lower()):
        make = ""
    return f"{make} {model}".strip()


def _cfa(raw: rawpy.RawPy, path: Path) -> str:
    if raw.raw_type != rawpy.RawType.Flat:
        raise RawError(path, f"not a Bayer sensor (LibRaw raw_type {raw.raw_type.name}, "
                             "several values per pixel)")
    if raw.num_colors != 3:
        raise RawError(path, f"not a Bayer sensor ({raw.num_colors} colours)")
    pattern = raw.raw_pattern
    if pattern is None or pattern.shape != (2, 2):
        shape = "none" if pattern is None else "x".join(map(str, pattern.shape))
        raise RawError(path, f"not a Bayer sensor (CFA pattern {shape}, e.g. X-Trans)")
    desc = raw.color_desc.decode("ascii", "replace")
    letters = "".join(desc[int(c)] if int(c) < len(desc) else "?"
                      for c in raw.raw_colors_visible[:2, :2].ravel())
    if sorted(letters) != ["B", "G", "G", "R"]:
        raise RawError(path, f"not a Bayer sensor (2x2 pattern {letters!r} from colours {desc!r})")
    return letters


def raw_image_from(raw: rawpy.RawPy, path: str | os.PathLike) -> RawImage:
    """Build a RawImage from an already opened (and unpacked) rawpy object."""
    path = Path(path)
    cfa = _cfa(raw, path)
    data = raw.raw_image_visible
    h, w = data.shape[0] // 2 * 2, data.shape[1] // 2 * 2
    if h == 0 or w == 0:
        raise RawError(path, f"image too small ({data.shape[0]}x{data.shape[1]})")
    colors = raw.raw_colors_visible[:h, :w]
    black = np.asarray(raw.black_level_per_channel, dtype=np.float32)
    white = float(raw.white_level)
    if black.shape != (4,) or not white > float(black.max()):
        raise RawError(path, f"bad levels (black {black.tolist()}, white {white})")
    black_map = black[colors]
    mosaic = (data[:h, :w].astype(np.float32) - black_map) / (white - black_map)
    np.clip(mosaic, 0.0, 1.0, out=mosaic)

    daylight, day_ok = _normalised_wb(raw.daylight_whitebalance)
    wb, wb_ok = _normalised_wb(raw.camera_whitebalance)
    if not wb_ok:
        # LibRaw itself falls back to its daylight multipliers when the camera WB is missing.
        wb = daylight.copy() if day_ok else np.ones(3, np.float32)
    return RawImage(
        mosaic=mosaic, cfa=cfa, wb=wb, daylight_wb=daylight, wb_valid=wb_ok,
        flip=int(raw.sizes.flip), black=black, white=white,
        bits=int(math.ceil(math.log2(white + 1))), camera=_camera_name(path), path=str(path),
    )


def read_raw(path: str | os.PathLike) -> RawImage:
    """Read `path` into a RawImage; raises RawError naming the file and the reason."""
    with open_raw(path) as raw:
        return raw_image_from(raw, path)

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
    wb_valid: bool           # True only when `wb` is the camera's own as-shot WB (wb_source "camera")
    wb_source: str           # where `wb` came from: one of WB_SOURCES (see white_balance)
    rgb_cam: np.ndarray      # float32 (3, 3) white-balanced camera RGB -> linear sRGB, as LibRaw renders
    colour_valid: bool       # False: LibRaw knows no colour matrix; rgb_cam is the identity, as in LibRaw
    flip: int                # LibRaw sizes.flip
    black: np.ndarray        # float32 (4,) per-channel black level
    white: float
    bits: int
    camera: str
    path: str
    # (H, W) of the sensor's visible area; `mosaic` drops an odd last row/column (whole CFA cells only)
    visible_shape: tuple[int, int] | None = None


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
        size = _tiff_image_size(path)
        if size is not None and min(size) < LIBRAW_MIN_SIDE:
            raise RawError(path, f"image too small for LibRaw ({size[1]}x{size[0]} pixels; it opens raws of at "
                                 f"least {LIBRAW_MIN_SIDE} pixels a side)") from None
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


# Where RawImage.wb comes from (see white_balance); anything but "camera" deserves a warning.
WB_SOURCES = ("camera", "unity", "auto", "daylight", "generic")
# Only where LibRaw itself has no usable multipliers (it would divide by zero): a typical daylight
# balance of Bayer cameras (red and blue gains around 2 and 1.5).
GENERIC_WB = np.array([2.0, 1.0, 1.5], dtype=np.float32)
_LIBRAW_NO_WB = 0.00001  # LibRaw >= 0.20: cam_mul[0] at or below this means "no WB parsed"
_AUTO_WB_MARGIN = 25     # dcraw's auto WB skips 8x8 blocks holding a value above maximum - 25


def _normalised_wb(values) -> tuple[np.ndarray, bool]:
    """First three LibRaw multipliers scaled to G = 1 (ones when unusable), and whether usable."""
    v = np.asarray(list(values)[:3], dtype=np.float64)
    ok = v.shape == (3,) and bool(np.all(np.isfinite(v))) and bool(np.all(v > 0))
    return ((v / v[1]) if ok else np.ones(3)).astype(np.float32), ok


def auto_white_balance(data: np.ndarray, colors: np.ndarray, black, white: float,
                       adjust_maximum_thr: float = 0.75, band: int = 512) -> np.ndarray | None:
    """dcraw's automatic white balance (LibRaw scale_colors, `use_auto_wb`): over 8x8 blocks of the
    visible raw, skipping every block that holds a value near saturation (above maximum - 25), sum
    each colour's black-subtracted values; the gain is count / sum (1 / mean). Returns R, G, B with
    G = 1, or None when a colour has no usable sample (LibRaw then keeps its daylight multipliers).

    LibRaw keeps the two greens apart; pooling them gives the same output channel means. `band`
    (a multiple of 8, so bands keep the block grid) bounds the temporaries on large frames."""
    black = np.asarray(black, dtype=np.float32).reshape(-1)
    h, w = data.shape
    bands = [slice(y, y + band) for y in range(0, h, band)]

    def signal(rows: slice) -> np.ndarray:
        return data[rows] - black[colors[rows]]  # float32, not yet clipped at 0

    maximum = float(white) - float(black.min())
    if adjust_maximum_thr > 0:  # LibRaw's adjust_maximum runs first and moves `maximum` likewise
        real = max(float(signal(rows).max()) for rows in bands)
        if adjust_maximum_thr * maximum < real < maximum:
            maximum = real
    sums, counts = np.zeros(4), np.zeros(4)
    w8 = -(-w // 8) * 8
    for rows in bands:
        vals = signal(rows)
        n = vals.shape[0]
        hot = np.zeros((-(-n // 8) * 8, w8), dtype=bool)
        hot[:n, :w] = vals > maximum - _AUTO_WB_MARGIN
        hot_blocks = hot.reshape(hot.shape[0] // 8, 8, w8 // 8, 8).any(axis=(1, 3))
        keep = ~np.repeat(np.repeat(hot_blocks, 8, axis=0), 8, axis=1)[:n, :w]
        c = colors[rows][keep]
        sums += np.bincount(c, weights=np.clip(vals[keep], 0, None), minlength=4)[:4]
        counts += np.bincount(c, minlength=4)[:4]
    sums[1] += sums[3]  # LibRaw colour 3 is the second green
    counts[1] += counts[3]
    if not np.all(sums[:3] > 0):
        return None
    gains = counts[:3] / sums[:3]
    return (gains / gains[1]).astype(np.float32)


def white_balance(raw, adjust_maximum_thr: float = 0.75) -> tuple[np.ndarray, str]:
    """The R, G, B multipliers (G = 1) that LibRaw applies for `postprocess(use_camera_wb=True)`
    and where they come from (one of WB_SOURCES), following LibRaw 0.22's scale_colors:

    * "camera": the as-shot multipliers, as they are;
    * "unity": the camera reports (1, 1, 1) (e.g. Kodak DC50); LibRaw applies it as is;
    * "auto": cam_mul[0] is -1 or <= 1e-5 (dcraw's "auto", or no WB parsed: LibRaw zeroes it for a
      zero or absurd DNG AsShotNeutral): LibRaw renders exactly its `use_auto_wb` balance;
    * "daylight": any other unusable WB (zero blue, non-finite): LibRaw keeps its daylight pre_mul;
    * "generic": GENERIC_WB, where even those are unusable (LibRaw would divide by zero).

    `raw` is an unpacked rawpy object (or anything with its attributes); `adjust_maximum_thr` is
    the postprocess option of that name, which moves the auto WB's saturation limit."""
    cam = np.asarray(list(raw.camera_whitebalance)[:3], dtype=np.float64)
    if cam.shape != (3,):
        return _fallback_wb(raw)
    r, g, b = (float(v) for v in cam)
    if r <= _LIBRAW_NO_WB:  # NaN compares False here and falls through to the fallback
        wb = auto_white_balance(raw.raw_image_visible, raw.raw_colors_visible,
                                raw.black_level_per_channel, raw.white_level, adjust_maximum_thr)
        return (wb, "auto") if wb is not None else _fallback_wb(raw)
    if np.all(np.isfinite(cam)) and b > _LIBRAW_NO_WB and g >= 0:
        g = g or 1.0  # LibRaw reads a zero green multiplier as 1
        wb = np.array([r / g, 1.0, b / g])
        return wb.astype(np.float32), "unity" if np.allclose(wb, 1.0, rtol=0, atol=1e-4) else "camera"
    return _fallback_wb(raw)


def _fallback_wb(raw) -> tuple[np.ndarray, str]:
    daylight, ok = _normalised_wb(raw.daylight_whitebalance)
    return (daylight, "daylight") if ok else (GENERIC_WB.copy(), "generic")


def camera_matrix(raw: rawpy.RawPy) -> tuple[np.ndarray, bool]:
    """LibRaw's `rgb_cam` (white-balanced camera RGB -> linear sRGB, rows summing to 1) and whether the
    camera has one. LibRaw renders a camera it has no matrix for in raw colour, i.e. with the identity."""
    m = np.asarray(raw.color_matrix, dtype=np.float64)[:3, :3]
    ok = m.shape == (3, 3) and bool(np.all(np.isfinite(m))) and bool(np.any(m != 0))
    return (m if ok else np.eye(3)).astype(np.float32), ok


# LibRaw refuses raws whose sides are below 22 pixels (identify.cpp: "width < 22 || height < 22").
LIBRAW_MIN_SIDE = 22


def _tiff_image_size(path: Path) -> tuple[int, int] | None:
    """(width, height) of the largest image in a TIFF-based raw's IFD0 and SubIFDs (DNG keeps the raw
    in a SubIFD); None when the file is not TIFF-based."""
    from PIL import TiffImagePlugin

    try:
        with path.open("rb") as fh:
            head = fh.read(8)
            sizes, todo = [], [TiffImagePlugin.ImageFileDirectory_v2(ifh=head).next]
            for _ in range(16):  # a bounded walk: a hostile file may loop its offsets
                if not todo:
                    break
                ifd = TiffImagePlugin.ImageFileDirectory_v2(ifh=head)
                fh.seek(todo.pop())
                ifd.load(fh)
                if 256 in ifd and 257 in ifd:
                    sizes.append((int(ifd[256]), int(ifd[257])))
                sub = ifd.get(330)
                todo += list(sub) if isinstance(sub, tuple) else ([sub] if sub else [])
    except Exception:  # noqa: BLE001 - not TIFF, or unreadable: no size to report
        return None
    return max(sizes, key=lambda s: s[0] * s[1]) if sizes else None


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


def raw_image_from(raw: rawpy.RawPy, path: str | os.PathLike,
                   adjust_maximum_thr: float = 0.75) -> RawImage:
    """Build a RawImage from an already opened (and unpacked) rawpy object; `adjust_maximum_thr`:
    that of the LibRaw rendering whose white balance `wb` should be (it matters for auto WB only)."""
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

    daylight, _ = _normalised_wb(raw.daylight_whitebalance)
    wb, wb_source = white_balance(raw, adjust_maximum_thr)
    rgb_cam, colour_ok = camera_matrix(raw)
    return RawImage(
        mosaic=mosaic, cfa=cfa, wb=wb, daylight_wb=daylight, wb_valid=wb_source == "camera",
        wb_source=wb_source,
        rgb_cam=rgb_cam, colour_valid=colour_ok,
        flip=int(raw.sizes.flip), black=black, white=white,
        bits=int(math.ceil(math.log2(white + 1))), camera=_camera_name(path), path=str(path),
        visible_shape=(int(data.shape[0]), int(data.shape[1])),
    )


def read_raw(path: str | os.PathLike) -> RawImage:
    """Read `path` into a RawImage; raises RawError naming the file and the reason."""
    with open_raw(path) as raw:
        return raw_image_from(raw, path)

"""Synthetic camera: unprocess sRGB photos into real DNG files that LibRaw renders back.

Each step inverts what `rawpy.postprocess(use_camera_wb=True, no_auto_bright=True)` does to a DNG
(LibRaw 0.22 as bundled with rawpy, checked by experiment against its output):

* output curve: rawpy's default `gamma=(2.222, 4.5)` is LibRaw's `gamma_curve(1/2.222, 4.5)`, a
  BT.709-style curve whose linear toe and offset LibRaw solves by bisection (reproduced in
  `_libraw_curve_params`), NOT the sRGB curve; with `no_auto_bright` the linear white is 1.0 and the
  8-bit output is `floor(256 * curve(x))` (the 16-bit curve table shifted right by 8), so an 8-bit
  value v stands for curve values in [v/256, (v+1)/256) and we unprocess its midpoint;
* colour: LibRaw takes ColorMatrix1 (XYZ->camera) as `cam_xyz`, forms `cam_rgb = cam_xyz @ xyz_rgb`
  (sRGB D65), normalises each row to sum 1 and renders with `rgb_cam = pinv(cam_rgb)`; so linear
  sRGB -> camera is exactly that row-normalised `cam_rgb`;
* white balance: AsShotNeutral n gives camera multipliers 1/n, normalised to min 1; data are scaled
  by (value - black) / (white - black) times those multipliers and clipped to [0, 1].

On top of the exact inverse, a camera model (all seeded per photo): a lens (a Gaussian point-spread
function of `blur` pixels applied to the scene in linear light, so that every detail spans several
sensor pixels as in a real camera, where today's photos are pixel-sharp downscales), a sensor
resolution (`scale` resamples the photo before the lens), one of several real cameras' colour
matrices (so that a network cannot learn a single camera's colour), a random white balance,
heteroscedastic shot/read noise and 14-bit quantisation with a black level.

One LibRaw default cannot be inverted: `adjust_maximum_thr=0.75` replaces the white level by the
image's largest value when that lies in (0.75, 1) of the range, brightening images (or tiles) with
no clipped highlight; render with `adjust_maximum_thr=0` for an exact round trip of those.
"""
from __future__ import annotations

import hashlib
import math
from concurrent.futures import ProcessPoolExecutor
from fractions import Fraction
from pathlib import Path

import numpy as np

from caisp import CaispError
from caisp.data.cameras import CAMERAS
from caisp.io import atomic_path

SKIMAGE_PHOTOS: tuple[str, ...] = (
    "astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "retina",
    "immunohistochemistry", "motorcycle_left", "motorcycle_right",
)
# The two views of scikit-image's stereo pair show one scene: one source, so never split apart.
_SOURCE = {"motorcycle_left": "stereo_motorcycle", "motorcycle_right": "stereo_motorcycle"}
PHOTO_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
# The Kodak Lossless True Color suite, vendored (see photos/README.md): lossless scans, unlike the
# downscaled and partly JPEG-compressed scikit-image photos.
KODAK_DIR = Path(__file__).parent / "photos" / "kodak24"

# DNG CFAPattern colour indices (0 = R, 1 = G, 2 = B) for the 2x2 tile, row-major.
_CFA = {"RGGB": (0, 1, 1, 2), "BGGR": (2, 1, 1, 0), "GRBG": (1, 0, 2, 1), "GBRG": (1, 2, 0, 1)}
_ORIENTATIONS = (1, 3, 6, 8)
def xyz_to_cam(camera: str) -> np.ndarray:
    if camera not in CAMERAS:
        raise CaispError(f"unknown camera {camera!r} (known: {', '.join(CAMERAS)})")
    return np.array(CAMERAS[camera], dtype=np.float64).reshape(3, 3) / 10000


D700_XYZ_TO_CAM = xyz_to_cam("Nikon D700")
# LibRaw's xyz_rgb (linear sRGB D65 -> XYZ), copied so our inverse matches its forward exactly.
_XYZ_FROM_SRGB = np.array([[0.4124564, 0.3575761, 0.1804375],
                           [0.2126729, 0.7151522, 0.0721750],
                           [0.0193339, 0.1191920, 0.9503041]])
LIBRAW_MIN_SIZE = 22  # LibRaw refuses raws narrower or shorter than this


def _libraw_curve_params(pwr: float = 1 / 2.222, ts: float = 4.5) -> tuple[float, float]:
    """Breakpoint (in linear units) and offset of LibRaw's gamma_curve, found as LibRaw finds them."""
    bnd = [0.0, 0.0]
    bnd[int(ts >= 1)] = 1.0
    g2 = 0.0
    for _ in range(48):  # same bisection as LibRaw: where the power segment's tangent meets the toe
        g2 = (bnd[0] + bnd[1]) / 2
        bnd[int(((g2 / ts) ** -pwr - 1) / pwr - 1 / g2 > -1)] = g2
    return g2 / ts, g2 * (1 / pwr - 1)


_PWR, _TS = 1 / 2.222, 4.5
_BREAK, _OFFSET = _libraw_curve_params(_PWR, _TS)


def libraw_curve(linear: np.ndarray) -> np.ndarray:
    """LibRaw's default output curve (linear [0, 1] -> encoded [0, 1])."""
    x = np.clip(linear, 0.0, 1.0)
    return np.where(x < _BREAK, x * _TS, (1 + _OFFSET) * x ** _PWR - _OFFSET)


def libraw_curve_inverse(encoded: np.ndarray) -> np.ndarray:
    y = np.clip(encoded, 0.0, 1.0)
    return np.where(y < _BREAK * _TS, y / _TS, ((y + _OFFSET) / (1 + _OFFSET)) ** (1 / _PWR))


def camera_from_srgb(xyz_to_cam: np.ndarray = D700_XYZ_TO_CAM) -> np.ndarray:
    """Linear sRGB -> white-balanced camera RGB, the inverse of the rgb_cam LibRaw renders with."""
    cam_rgb = np.asarray(xyz_to_cam, dtype=np.float64) @ _XYZ_FROM_SRGB
    return cam_rgb / cam_rgb.sum(axis=1, keepdims=True)


def image_seed(seed: int, name: str) -> int:
    """Per-image seed from (seed, name); stable across runs (Python's str hash is salted)."""
    digest = hashlib.sha256(f"{seed}\0{name}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


def _rngs(seed: int) -> tuple[np.random.Generator, np.random.Generator]:
    """White-balance and noise generators; separate streams, so noise on/off keeps the same gains."""
    wb, noise = np.random.SeedSequence(int(seed)).spawn(2)
    return np.random.default_rng(wb), np.random.default_rng(noise)


def draw_camera(seed: int, cameras: list[str] | tuple[str, ...]) -> str:
    """The seeded camera of one photo (its own stream, so adding cameras leaves WB and noise alone)."""
    if not cameras:
        raise CaispError("cameras must name at least one camera")
    for c in cameras:
        xyz_to_cam(c)
    stream = np.random.SeedSequence([int(seed), 0xCA3E]).generate_state(1)[0]
    return cameras[int(stream) % len(cameras)]


def draw_wb_gains(seed: int) -> tuple[float, float, float]:
    """The seeded camera WB gains (R, G = 1, B) that `write_dng` inverts when wb_gains is None."""
    rng = _rngs(seed)[0]
    return float(rng.uniform(1.7, 2.4)), 1.0, float(rng.uniform(1.3, 1.9))


def _check_int(name: str, value: object, lo: int, hi: int | None = None) -> None:
    ok = isinstance(value, (int, np.integer)) and not isinstance(value, bool) and lo <= value
    if not ok or (hi is not None and value > hi):
        span = f"in {lo}..{hi}" if hi is not None else f">= {lo}"
        raise CaispError(f"{name}={value!r} must be an integer {span}")


def _check_cfa(cfa: str) -> None:
    if cfa not in _CFA:
        raise CaispError(f"cfa={cfa!r} is not one of {sorted(_CFA)}")


# ---------------------------------------------------------------------------------------- photos
def _skimage_photo(name: str) -> np.ndarray:
    import skimage.data

    if name.startswith("motorcycle_"):
        left, right, _ = skimage.data.stereo_motorcycle()
        return left if name == "motorcycle_left" else right
    return getattr(skimage.data, name)()


def _read_photo(path: Path) -> np.ndarray:
    from PIL import Image, ImageOps

    try:
        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im)  # a phone JPEG's pixels are stored sideways
            if im.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16-bit greyscale: keep the top 8 bits
                grey = (np.asarray(im, dtype=np.uint32) >> 8).clip(0, 255).astype(np.uint8)
                return np.repeat(grey[..., None], 3, axis=2)
            return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()
    except Exception as exc:  # Pillow raises many types for corrupt or exotic files
        raise CaispError(f"cannot decode photo {path}: {exc}") from exc


def _user_photos(folder: Path) -> list[tuple[str, np.ndarray]]:
    if not folder.is_dir():
        raise CaispError(f"extra photo folder {folder} does not exist")
    files = sorted(p for p in folder.iterdir()
                   if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in PHOTO_EXTENSIONS)
    if not files:
        raise CaispError(f"extra photo folder {folder} holds no image ({', '.join(PHOTO_EXTENSIONS)})")
    return [(p.stem, _read_photo(p)) for p in files]


def kodak_photos() -> list[tuple[str, np.ndarray]]:
    """The vendored Kodak suite, checked against its SHA256SUMS (a damaged file is refused by name)."""
    sums = KODAK_DIR / "SHA256SUMS"
    if not sums.is_file():
        raise CaispError(f"{sums} missing: the vendored Kodak photos are incomplete")
    out = []
    for line in sums.read_text().splitlines():
        digest, name = line.split()
        path = KODAK_DIR / name.lstrip("*")
        if not path.is_file() or hashlib.sha256(path.read_bytes()).hexdigest() != digest:
            raise CaispError(f"{path}: missing or not the vendored Kodak photo (sha256 mismatch)")
        out.append((path.stem, _read_photo(path)))
    return out


def _tiles(name: str, img: np.ndarray, tile: int) -> list[tuple[str, np.ndarray]]:
    h, w = img.shape[:2]
    if tile <= 0 or h < tile or w < tile:
        return [(name, img)]
    return [(f"{name}_r{i}c{j}", img[i * tile:(i + 1) * tile, j * tile:(j + 1) * tile])
            for i in range(h // tile) for j in range(w // tile)]


def load_photos(extra_dir: Path | None = None, tile: int = 0,
                kodak: bool = True) -> list[tuple[str, str, np.ndarray]]:
    """(name, source photo, uint8 HxWx3) for the scikit-image photos, the Kodak suite (`kodak`) and
    any in `extra_dir`, optionally cut into tiles: every tile keeps the name of its source photo,
    so that the split can keep each photo's tiles together."""
    _check_int("tile", tile, 0)
    photos = [(n, _skimage_photo(n)) for n in SKIMAGE_PHOTOS]
    if kodak:
        photos += kodak_photos()
    if extra_dir is not None:
        taken = {n for n, _ in photos}
        for name, img in _user_photos(Path(extra_dir)):
            if name in taken:  # two files with one stem would overwrite each other's DNG
                raise CaispError(f"photo name {name!r} in {extra_dir} is used twice (or clashes "
                                 f"with a built-in photo); rename the file")
            taken.add(name)
            photos.append((name, img))
    out: list[tuple[str, str, np.ndarray]] = []
    for name, img in photos:
        for tname, part in _tiles(name, np.ascontiguousarray(img[..., :3], dtype=np.uint8), tile):
            out.append((tname, _SOURCE.get(name, name), part))
    return out


# ------------------------------------------------------------------------------------------- DNG
def _rational(x: float, what: str, signed: bool = False) -> list[int]:
    f = Fraction(float(x)).limit_denominator(1_000_000)
    lo, hi = (-(2**31), 2**31 - 1) if signed else (0, 2**32 - 1)
    if not (lo <= f.numerator <= hi and f.denominator <= hi):
        raise CaispError(f"{what}={x!r} cannot be written as a DNG rational")
    return [f.numerator, f.denominator]


def _mosaic(raw_rgb: np.ndarray, cfa: str) -> np.ndarray:
    h, w, _ = raw_rgb.shape
    mosaic = np.empty((h, w), dtype=raw_rgb.dtype)
    for k, colour in enumerate(_CFA[cfa]):
        dy, dx = divmod(k, 2)
        mosaic[dy::2, dx::2] = raw_rgb[dy::2, dx::2, colour]
    return mosaic


def _dng_bytes(mosaic: np.ndarray, *, cfa: str, neutral: tuple[float, ...], black: int, white: int,
               orientation: int, camera: str) -> bytes:
    from pidng.core import RAW2DNG
    from pidng.defs import CalibrationIlluminant, PhotometricInterpretation
    from pidng.dng import DNGTags, Tag

    h, w = mosaic.shape
    t = DNGTags()
    t.set(Tag.ImageWidth, w)
    t.set(Tag.ImageLength, h)
    t.set(Tag.TileWidth, w)  # one tile holds the whole image
    t.set(Tag.TileLength, h)
    t.set(Tag.Orientation, orientation)
    t.set(Tag.PhotometricInterpretation, PhotometricInterpretation.Color_Filter_Array)
    t.set(Tag.SamplesPerPixel, 1)
    t.set(Tag.BitsPerSample, 16)  # 16-bit containers for every `bits`; WhiteLevel holds the range
    t.set(Tag.CFARepeatPatternDim, [2, 2])
    t.set(Tag.CFAPattern, list(_CFA[cfa]))
    t.set(Tag.BlackLevel, black)
    t.set(Tag.WhiteLevel, white)
    t.set(Tag.ColorMatrix1, [_rational(v, "ColorMatrix1", signed=True) for v in xyz_to_cam(camera).ravel()])
    t.set(Tag.CalibrationIlluminant1, CalibrationIlluminant.D65)
    t.set(Tag.AsShotNeutral, [_rational(v, "as_shot_neutral") for v in neutral])
    t.set(Tag.Make, "caisp")
    t.set(Tag.Model, f"synthetic {camera}")
    t.set(Tag.UniqueCameraModel, f"caisp synthetic {camera}")
    writer = RAW2DNG()
    writer.options(t, path="", compress=False)
    # An empty filename makes pidng return the bytes instead of writing (and appending ".dng").
    return bytes(writer.convert(mosaic.astype(np.uint16), filename=""))


def write_dng(path: str | Path, rgb: np.ndarray, *, cfa: str = "RGGB", seed: int = 0, noise: bool = True,
              wb_gains: tuple[float, float, float] | None = None,
              as_shot_neutral: tuple[float, float, float] | None = None, bits: int = 14,
              black_level: int = 600, orientation: int = 1, shot_noise: float = 4e-4,
              read_noise: float = 2e-3, camera: str = "Nikon D700", blur: float = 0.0,
              scale: float = 1.0, even: bool = True) -> Path:
    """Unprocess one uint8 sRGB photo into a DNG at `path` (written atomically); returns the path.

    The photo is resampled by `scale` (the sensor's pixels per photo pixel) and blurred by a Gaussian
    lens PSF of `blur` sensor pixels (sigma) in linear light, then seen through `camera`'s colour
    matrix. Noise is heteroscedastic Gaussian on the [0, 1] raw signal x: variance
    shot_noise * x + read_noise**2. `even=False` keeps an odd height or width (a partial last row or
    column of CFA cells, as some cameras write); the data set's photos are cropped to even sides.
    """
    _check_cfa(cfa)
    _check_int("bits", bits, 10, 16)
    _check_int("seed", seed, 0)
    path = Path(path)
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise CaispError(f"rgb for {path} must be uint8 HxWx3, got {rgb.dtype} {rgb.shape}")
    if not (math.isfinite(blur) and 0 <= blur <= 20):
        raise CaispError(f"blur={blur!r} must be a lens PSF sigma in 0..20 pixels")
    if not (math.isfinite(scale) and 0.1 <= scale <= 8):
        raise CaispError(f"scale={scale!r} must be in 0.1..8")
    xyz_cam = xyz_to_cam(camera)
    if scale != 1:
        from PIL import Image

        h, w = rgb.shape[:2]
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        rgb = np.asarray(Image.fromarray(np.ascontiguousarray(rgb)).resize(size, Image.Resampling.LANCZOS))
    if even:  # whole 2x2 Bayer tiles
        rgb = rgb[: rgb.shape[0] // 2 * 2, : rgb.shape[1] // 2 * 2]
    if min(rgb.shape[:2]) < LIBRAW_MIN_SIZE:
        raise CaispError(f"photo for {path} is {rgb.shape[1]}x{rgb.shape[0]}; LibRaw needs at least "
                         f"{LIBRAW_MIN_SIZE} pixels a side")
    if orientation not in _ORIENTATIONS:
        raise CaispError(f"orientation={orientation!r} must be one of {_ORIENTATIONS}")
    white = 2**bits - 1
    _check_int("black_level", black_level, 0, white // 2)  # leave the signal most of the range
    if shot_noise < 0 or read_noise < 0:
        raise CaispError(f"shot_noise={shot_noise!r} and read_noise={read_noise!r} must be >= 0")

    gains = np.asarray(draw_wb_gains(seed) if wb_gains is None else wb_gains, dtype=np.float64)
    if gains.shape != (3,) or not np.all(np.isfinite(gains)) or np.any(gains <= 0):
        raise CaispError(f"wb_gains={wb_gains!r} must be three positive numbers")
    gains = gains / gains[1]
    neutral = tuple(1.0 / gains) if as_shot_neutral is None else tuple(as_shot_neutral)
    if len(neutral) != 3:
        raise CaispError(f"as_shot_neutral={as_shot_neutral!r} must have three values")

    encoded = (rgb.astype(np.float64) + 0.5) / 256  # midpoint of the bin LibRaw's floor() maps to v
    # 255 is a clipped highlight: make it saturate the sensor, so that white reaches WhiteLevel and
    # LibRaw's adjust_maximum (see module docstring) leaves the white level alone.
    encoded[rgb == 255] = 1.0
    linear = libraw_curve_inverse(encoded)
    if blur > 0:
        from scipy.ndimage import gaussian_filter

        # Optics blur the scene's light, so in linear units; clipped highlights spread like light does.
        linear = gaussian_filter(linear, sigma=(blur, blur, 0), mode="reflect", truncate=3.0)
    cam = linear @ camera_from_srgb(xyz_cam).T
    raw = _mosaic(cam / (gains / gains.min()), cfa)  # LibRaw multiplies by gains normalised to min 1
    if noise:
        var = shot_noise * np.clip(raw, 0, None) + read_noise**2
        raw = raw + np.sqrt(var) * _rngs(seed)[1].standard_normal(raw.shape)
    # Values below black are kept (as real sensors record them); LibRaw clips after subtracting.
    dn = np.clip(np.round(black_level + raw * (white - black_level)), 0, white).astype(np.uint16)

    data = _dng_bytes(dn, cfa=cfa, neutral=neutral, black=black_level, white=white, orientation=orientation,
                      camera=camera)
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return path


def _write_one(job: tuple) -> Path:
    path, rgb, kwargs = job
    return write_dng(path, rgb, **kwargs)


def synthesize(out_dir: Path, *, cfa: str = "RGGB", seed: int = 0, noise: bool = True, tile: int = 0,
               extra_dir: Path | None = None, bits: int = 14, workers: int = 1, kodak: bool = True,
               cameras: list[str] | tuple[str, ...] = ("Nikon D700",), blur: float = 0.0,
               scale: float = 1.0, noise_scale: float = 1.0) -> list[dict]:
    """Write `<name>.dng` into `out_dir` for every photo (or tile); returns, sorted by file name,
    {"path", "name", "source", "camera"}: `source` is the photo a tile came from."""
    _check_cfa(cfa)
    _check_int("bits", bits, 10, 16)
    _check_int("tile", tile, 0)
    _check_int("seed", seed, 0)
    _check_int("workers", workers, 1)
    if not (math.isfinite(noise_scale) and noise_scale >= 0):
        raise CaispError(f"noise_scale={noise_scale!r} must be >= 0")
    out_dir = Path(out_dir)
    entries, jobs = [], []
    for name, source, img in load_photos(extra_dir, tile, kodak=kodak):
        # One camera per source photo: all tiles of a photo come from the same camera.
        camera = draw_camera(image_seed(seed, source), cameras)
        kw = dict(cfa=cfa, seed=image_seed(seed, name), noise=noise and noise_scale > 0, bits=bits,
                  camera=camera, blur=blur, scale=scale,
                  shot_noise=4e-4 * noise_scale**2, read_noise=2e-3 * noise_scale)
        path = out_dir / f"{name}.dng"
        jobs.append((path, img, kw))
        entries.append({"path": path, "name": path.name, "source": source, "camera": camera})
    if workers == 1:
        for j in jobs:
            _write_one(j)
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            list(pool.map(_write_one, jobs, chunksize=2))
    return sorted(entries, key=lambda e: e["name"])

"""The encoder: real codecs through Pillow, the compression whose artifacts CAS-Net learns to simulate.

JPEG (libjpeg, the paper's codec), WebP (libwebp), AVIF (libavif), JPEG 2000 (OpenJPEG) and HEIC (HEVC
intra via x265, from the pillow-heif plugin); and JPEG's encoder-side anchors, the same format coded
with optimised Huffman tables (Pillow) or by mozjpeg (trellis quantisation, through jpeglib). What each codec is (its quality scale, extension,
simulators) is described in `caisp.codecs`. The BPP always comes from the real file bytes.
"""
from __future__ import annotations

import io
import json
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
from PIL import Image

from caisp import CaispError
from caisp.codecs import Codec, check_quality, get
from caisp.io import write_bytes, write_text

if TYPE_CHECKING:
    import pandas as pd

# Pillow's `subsampling` codes.
SUBSAMPLING = {"4:4:4": 0, "4:2:2": 1, "4:2:0": 2}


def check_subsampling(subsampling: str) -> int:
    if subsampling not in SUBSAMPLING:
        raise CaispError(f"JPEG subsampling must be one of {', '.join(SUBSAMPLING)}, got {subsampling!r}")
    return SUBSAMPLING[subsampling]


def _import(spec: Codec):
    """The Python package the codec's encoder needs (pillow-heif registers its Pillow plugin)."""
    try:
        mod = __import__(spec.module)  # top-level packages only
    except ImportError:
        raise CaispError(f"codec {spec.name} needs the {spec.package} package, which is not installed: "
                         f"pip install {spec.package} (or drop {spec.name} from codec_points and "
                         f"rate.anchors)") from None
    if spec.module == "pillow_heif":
        mod.register_heif_opener()
    return mod


def require(codec: str) -> Codec:
    """The codec's description, after checking that this Pillow (and the package its encoder needs)
    can encode and decode it."""
    spec = get(codec)
    if spec.module is not None:
        _import(spec)
    if spec.feature is not None:
        from PIL import features

        if not features.check(spec.feature):
            raise CaispError(f"codec {codec}: this Pillow ({Image.__version__}) was built without "
                             f"{spec.feature}; install a Pillow wheel that has it (or drop {codec} from the codecs)")
    return spec


def _save_kwargs(codec: str, quality: int, settings: dict) -> dict:
    """Pillow save arguments (mozjpeg: `_mozjpeg`'s), the settings checked. Fixed choices (why): JPEG
    baseline without Huffman optimisation, so sizes are stable; every lossy codec in its 8-bit 4:2:0
    default unless a setting says otherwise."""
    s = dict(settings)
    if codec in ("jpeg", "jpegopt"):  # jpegopt: the anchor with Huffman tables optimised per image
        kw = {"quality": quality, "subsampling": check_subsampling(s.pop("subsampling", "4:2:0")),
              "optimize": codec == "jpegopt", "progressive": False}
    elif codec == "mozjpeg":  # not Pillow's: _mozjpeg's arguments
        kw = {"quality": quality, "subsampling": check_subsampling(s.pop("subsampling", "4:2:0"))}
    elif codec == "webp":
        kw = {"quality": quality, "method": int(s.pop("method", 4)), "lossless": False, "exact": False}
    elif codec == "avif":
        kw = {"quality": quality, "speed": int(s.pop("speed", 6)), "subsampling": s.pop("subsampling", "4:2:0"),
              "range": "full"}
    elif codec == "jpeg2000":
        kw = {"quality_mode": "dB", "quality_layers": [quality], "irreversible": True}
    else:  # heic
        kw = {"quality": quality, "enc_params": {"preset": s.pop("preset", "fast")}}
    if s:
        raise CaispError(f"codec {codec}: unknown setting(s) {', '.join(sorted(s))}")
    return kw


# jpeglib selects its libjpeg build through a process-wide setting: one mozjpeg encode at a time.
_JPEGLIB = threading.Lock()
# libjpeg's sampling factors (luma h, v) of each of Pillow's subsampling codes (check_subsampling)
_FACTORS = {SUBSAMPLING["4:4:4"]: (1, 1), SUBSAMPLING["4:2:2"]: (2, 1), SUBSAMPLING["4:2:0"]: (2, 2)}


def _mozjpeg(img: np.ndarray, quality: int, subsampling: int) -> bytes:
    """mozjpeg 4.0.3 (through jpeglib) at libjpeg's quality scale and tables (base table 0, the IJG
    one, as `jpeg`'s), trellis quantisation of AC and DC, optimised Huffman tables. jpeglib 1.0.2
    cannot switch off mozjpeg's progressive scans, part of its saving."""
    import tempfile

    jpeglib = _import(get("mozjpeg"))
    with _JPEGLIB, jpeglib.version("mozjpeg403"), tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "x.jpg")  # jpeglib writes files only
        im = jpeglib.from_spatial(np.ascontiguousarray(img))
        im.samp_factor = (_FACTORS[subsampling], (1, 1), (1, 1))
        im.write_spatial(path, qt=quality, base_quant_tbl_idx=0,
                         flags=["+TRELLIS_QUANT", "+TRELLIS_QUANT_DC", "+OPTIMIZE_CODING"])
        return Path(path).read_bytes()


def encode(img: np.ndarray, codec: str, quality: int, **settings: Any) -> bytes:
    """The `codec` file bytes of an HxWx3 uint8 image at `quality` (deterministic: same bytes each time)."""
    quality = check_quality(codec, quality)
    spec = require(codec)
    img = np.asarray(img)
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise CaispError(f"encode wants an HxWx3 uint8 image, got {img.dtype} {img.shape}")
    kw = _save_kwargs(codec, quality, settings)
    if codec == "mozjpeg":
        return _mozjpeg(img, **kw)
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(img), "RGB").save(buf, format=spec.pillow_format, **kw)
    return buf.getvalue()


def decode(data: bytes, codec: str) -> np.ndarray:
    """Decode `codec` bytes into an HxWx3 uint8 array."""
    spec = require(codec)
    try:
        with Image.open(io.BytesIO(data)) as im:
            if im.format != spec.pillow_format:
                raise CaispError(f"decode: data is {im.format}, not {spec.pillow_format}")
            return np.asarray(im.convert("RGB"))
    except (OSError, SyntaxError, ValueError) as exc:  # Pillow's ways of saying "corrupt"
        raise CaispError(f"decode {codec}: cannot decode ({exc})") from None


def roundtrip(img: np.ndarray, codec: str, quality: int, **settings: Any) -> tuple[np.ndarray, int]:
    """(decoded `codec` file of `img`, its size in bytes)."""
    data = encode(img, codec, quality, **settings)
    return decode(data, codec), len(data)


def encoder(codec: str, settings: dict | None = None) -> tuple[Callable[[np.ndarray, int], bytes],
                                                               Callable[[bytes], np.ndarray]]:
    """(encode(img, quality), decode(bytes)) bound to one codec and its settings."""
    require(codec)
    settings = dict(settings or {})
    return (lambda img, q: encode(img, codec, q, **settings)), (lambda data: decode(data, codec))


def encode_jpeg(img: np.ndarray, qf: int, subsampling: str = "4:2:0") -> bytes:
    """Baseline JPEG bytes of an HxWx3 uint8 image.

    Pillow's `quality` scales the IJG (libjpeg) example tables, as the paper's QF does; no `optimize`
    (Huffman optimisation) and no progressive mode, so sizes are the plain baseline ones and stable.
    """
    check_subsampling(subsampling)
    return encode(img, "jpeg", qf, subsampling=subsampling)


def decode_jpeg(data: bytes) -> np.ndarray:
    """Decode JPEG bytes into an HxWx3 uint8 array."""
    return decode(data, "jpeg")


def jpeg_roundtrip(img: np.ndarray, qf: int, subsampling: str = "4:2:0") -> tuple[np.ndarray, int]:
    """(decoded JPEG of `img`, its size in bytes)."""
    data = encode_jpeg(img, qf, subsampling)
    return decode_jpeg(data), len(data)


def _load_target(path: Path) -> np.ndarray:
    from caisp.data.store import read_window

    img = read_window(path)
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise CaispError(f"{path}: target must be an HxWx3 uint8 array, got {img.dtype} {img.shape}")
    return img


def _encode_task(src: Path, dst: Path, codec: str, quality: int, settings: dict) -> tuple[int, int, int]:
    """The codec's file (its bytes are the BPP) and its decoded pixels beside it (`<stem>.npy`), which
    training crops read without decoding the whole file."""
    from caisp.data.store import write_array

    img = _load_target(src)
    data = encode(img, codec, quality, **settings)
    write_array(dst.with_suffix(".npy"), decode(data, codec))
    write_bytes(dst, data)
    return img.shape[0], img.shape[1], len(data)


def _target_stems(rendered_dir: Path) -> list[str]:
    """Stems from the render manifest (so stale targets are ignored), else every targets/*.npy."""
    manifest = rendered_dir / "manifest.json"
    if manifest.is_file():
        try:
            return sorted(e["stem"] for e in json.loads(manifest.read_text())["images"])
        except (ValueError, KeyError, TypeError) as exc:
            raise CaispError(f"{manifest}: bad render manifest ({exc})") from None
    return sorted(p.stem for p in (rendered_dir / "targets").glob("*.npy"))


def encode_all(rendered_dir: str | os.PathLike, out_dir: str | os.PathLike, *, codec: str, quality: int,
               settings: dict | None = None, workers: int = 1) -> "pd.DataFrame":
    """Encode every rendered target with `codec` at `quality` (on the codec's scale) with its encoder
    `settings` into `out_dir/<stem><ext>` (+ its decoded `<stem>.npy`) and write `out_dir/bpp.csv`."""
    # Heavy imports (pandas; torch via metrics) stay here: spawned workers only import this module.
    import pandas as pd

    from caisp.metrics import bpp

    qf = check_quality(codec, quality)
    spec = require(codec)
    settings = dict(settings or {})
    _save_kwargs(codec, qf, settings)  # unknown settings fail here, before any work
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise CaispError(f"encode.workers must be an integer >= 1, got {workers!r}")
    rendered_dir, out_dir = Path(rendered_dir), Path(out_dir)
    stems = _target_stems(rendered_dir)
    if not stems:
        raise CaispError(f"{rendered_dir}: no rendered targets to encode")
    srcs = [rendered_dir / "targets" / f"{s}.npy" for s in stems]
    for src in srcs:
        if not src.is_file():
            raise CaispError(f"{src}: target listed in the manifest is missing")
    dsts = [out_dir / f"{s}{spec.ext}" for s in stems]
    n = len(stems)
    if workers > 1 and n > 1:
        # Threads, not processes: Pillow releases the GIL while it encodes and decodes, and a
        # thread pool starts in microseconds where a spawned process pool costs ~0.5 s.
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(min(workers, n)) as pool:
            sizes = list(pool.map(_encode_task, srcs, dsts, [codec] * n, [qf] * n, [settings] * n))
    else:
        sizes = [_encode_task(s, d, codec, qf, settings) for s, d in zip(srcs, dsts)]

    keep = set(stems)
    for p in [*out_dir.glob(f"*{spec.ext}"), *out_dir.glob("*.npy")]:  # drop images no longer rendered
        if p.stem not in keep:
            p.unlink()
    df = pd.DataFrame({"stem": stems, "height": [s[0] for s in sizes], "width": [s[1] for s in sizes],
                       "bytes": [s[2] for s in sizes]})
    df["bpp"] = [bpp(b, h, w) for b, h, w in zip(df["bytes"], df["height"], df["width"])]
    write_text(out_dir / "bpp.csv", df.to_csv(index=False))
    return df

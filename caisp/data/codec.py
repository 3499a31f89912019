"""Real JPEG through Pillow (libjpeg): the codec whose artifacts CAS-Net learns to simulate."""
from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from caisp import CaispError
from caisp.io import write_bytes, write_text

if TYPE_CHECKING:
    import pandas as pd

# Pillow's `subsampling` codes.
SUBSAMPLING = {"4:4:4": 0, "4:2:2": 1, "4:2:0": 2}


def check_qf(qf: int) -> int:
    if isinstance(qf, bool) or not isinstance(qf, (int, np.integer)) or not 1 <= qf <= 100:
        raise CaispError(f"JPEG quality factor must be an integer in 1..100, got {qf!r}")
    return int(qf)


def check_subsampling(subsampling: str) -> int:
    if subsampling not in SUBSAMPLING:
        raise CaispError(f"JPEG subsampling must be one of {', '.join(SUBSAMPLING)}, got {subsampling!r}")
    return SUBSAMPLING[subsampling]


def encode_jpeg(img: np.ndarray, qf: int, subsampling: str = "4:2:0") -> bytes:
    """Baseline JPEG bytes of an HxWx3 uint8 image.

    Pillow's `quality` scales the IJG (libjpeg) example tables, as the paper's QF does; no `optimize`
    (Huffman optimisation) and no progressive mode, so sizes are the plain baseline ones and stable.
    """
    qf, code = check_qf(qf), check_subsampling(subsampling)
    img = np.asarray(img)
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise CaispError(f"encode_jpeg wants an HxWx3 uint8 image, got {img.dtype} {img.shape}")
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(img), "RGB").save(
        buf, format="JPEG", quality=qf, subsampling=code, optimize=False, progressive=False)
    return buf.getvalue()


def decode_jpeg(data: bytes) -> np.ndarray:
    """Decode JPEG bytes into an HxWx3 uint8 array."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            if im.format != "JPEG":
                raise CaispError(f"decode_jpeg: data is {im.format}, not JPEG")
            return np.asarray(im.convert("RGB"))
    except (OSError, SyntaxError, ValueError) as exc:  # Pillow's ways of saying "corrupt"
        raise CaispError(f"decode_jpeg: cannot decode ({exc})") from None


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


def _encode_task(src: Path, dst: Path, qf: int, subsampling: str) -> tuple[int, int, int]:
    """The JPEG file (its bytes are the BPP) and its decoded pixels beside it (`<stem>.npy`), which
    training crops read without decoding the whole file."""
    from caisp.data.store import write_array

    img = _load_target(src)
    data = encode_jpeg(img, qf, subsampling)
    write_array(dst.with_suffix(".npy"), decode_jpeg(data))
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


def encode_all(rendered_dir: str | os.PathLike, out_dir: str | os.PathLike, *, qf: int,
               subsampling: str = "4:2:0", workers: int = 1) -> "pd.DataFrame":
    """JPEG-encode every rendered target into `out_dir/<stem>.jpg` (+ its decoded `<stem>.npy`) and
    write `out_dir/bpp.csv`."""
    # Heavy imports (pandas; torch via metrics) stay here: spawned workers only import this module.
    import pandas as pd

    from caisp.metrics import bpp

    qf = check_qf(qf)
    check_subsampling(subsampling)
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
    dsts = [out_dir / f"{s}.jpg" for s in stems]
    n = len(stems)
    if workers > 1 and n > 1:
        # Threads, not processes: Pillow releases the GIL while it encodes and decodes JPEG, and a
        # thread pool starts in microseconds where a spawned process pool costs ~0.5 s.
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(min(workers, n)) as pool:
            sizes = list(pool.map(_encode_task, srcs, dsts, [qf] * n, [subsampling] * n))
    else:
        sizes = [_encode_task(s, d, qf, subsampling) for s, d in zip(srcs, dsts)]

    keep = set(stems)
    for p in [*out_dir.glob("*.jpg"), *out_dir.glob("*.npy")]:  # drop images no longer rendered
        if p.stem not in keep:
            p.unlink()
    df = pd.DataFrame({"stem": stems, "height": [s[0] for s in sizes], "width": [s[1] for s in sizes],
                       "bytes": [s[2] for s in sizes]})
    df["bpp"] = [bpp(b, h, w) for b, h, w in zip(df["bytes"], df["height"], df["width"])]
    write_text(out_dir / "bpp.csv", df.to_csv(index=False))
    return df

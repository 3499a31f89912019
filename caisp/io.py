"""Atomic file writes: an interrupted stage never leaves a half-written file under its final name."""
from __future__ import annotations

import contextlib
import glob
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np


def _temp_prefix(path: Path) -> str:
    return f".{path.name}.{os.getpid()}."


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, replace: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside `path`; move it onto `path` only if the block succeeds.

    `replace=False` never replaces an existing `path`: the move is a hard link, which the file system
    refuses atomically when `path` exists (FileExistsError), so two writers racing for one name cannot
    both win. The temporary name carries the writer's PID, so `reap_temporaries` can tell the leftovers
    of a killed writer from the file of one still running."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path), suffix=".part", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp creates 0600; give the final file the usual permissions (0666 minus the umask).
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_path, 0o666 & ~umask)
        if replace:
            os.replace(tmp_path, path)
        else:
            os.link(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def reap_temporaries(path: str | os.PathLike) -> list[Path]:
    """Remove the temporary files that writers of `path` killed mid-write left beside it (their PID is
    no longer running); the ones of live writers stay. Returns what it removed."""
    path = Path(path)
    gone = []
    for tmp in path.parent.glob(f".{glob.escape(path.name)}.*.part"):
        pid = tmp.name[len(path.name) + 2:].split(".", 1)[0]
        if not pid.isdigit() or _alive(int(pid)):
            continue
        try:
            tmp.unlink()
            gone.append(tmp)
        except OSError:
            pass
    return gone


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, another user's
        return True
    return True


def write_bytes(path: str | os.PathLike, data: bytes, *, replace: bool = True) -> None:
    with atomic_path(path, replace=replace) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def json_float(x: Any) -> float | None:
    """A plain float for JSON; NaN, inf and what is not a number -> None (JSON has no NaN)."""
    import math

    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def write_npz(path: str | os.PathLike, **arrays: Any) -> None:
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    write_bytes(path, buf.getvalue())


def write_png(path: str | os.PathLike, image: np.ndarray, *, replace: bool = True) -> None:
    """Write an HxWx3 uint8 or uint16 array as PNG (16-bit through Pillow's 'I;16' path is lossy, so
    uint16 RGB goes through imageio-free raw encoding via Pillow's 'RGB;16B' mode)."""
    from PIL import Image

    buf = io.BytesIO()
    if image.dtype == np.uint8:
        Image.fromarray(image).save(buf, format="PNG")
    elif image.dtype == np.uint16:
        _write_png16(buf, image)
    else:
        raise TypeError(f"write_png wants uint8 or uint16, got {image.dtype}")
    write_bytes(path, buf.getvalue(), replace=replace)


def _write_png16(buf: io.BytesIO, image: np.ndarray) -> None:
    """Minimal 16-bit RGB PNG encoder (Pillow cannot write 48-bit RGB)."""
    import struct
    import zlib

    h, w = image.shape[:2]
    channels = 1 if image.ndim == 2 else image.shape[2]
    color_type = {1: 0, 3: 2, 4: 6}[channels]
    rows = image.astype(">u2").reshape(h, -1).view(np.uint8)
    raw = np.concatenate([np.zeros((h, 1), np.uint8), rows], axis=1).tobytes()

    def chunk(tag: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + tag + payload + struct.pack(">I", zlib.crc32(tag + payload))

    buf.write(b"\x89PNG\r\n\x1a\n")
    buf.write(chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, color_type, 0, 0, 0)))
    buf.write(chunk(b"IDAT", zlib.compress(raw, 6)))
    buf.write(chunk(b"IEND", b""))

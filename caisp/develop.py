"""`caisp develop`: turn camera raws into oriented sRGB pictures with a trained ISP-Net."""
from __future__ import annotations

import argparse
import contextlib
import os
import sys
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from caisp import CaispError

# Used when neither the camera's as-shot WB nor LibRaw's daylight multipliers are usable: a typical
# daylight balance of Bayer cameras (red and blue gains around 2 and 1.5).
GENERIC_WB = np.array([2.0, 1.0, 1.5], dtype=np.float32)
ISP_TYPES = {"isp_net"}
JPEG_SUFFIXES = {".jpg", ".jpeg"}


def _warn(msg: str) -> None:
    """One line on stderr that does not tear a running tqdm bar."""
    from tqdm import tqdm

    tqdm.write(msg, file=sys.stderr)


@contextlib.contextmanager
def _libraw_quiet() -> Iterator[None]:
    """Silence file descriptor 2 while LibRaw runs: its C code prints "<file>: Unexpected end of
    file" itself, and a bad input must cost exactly one stderr line (RawError carries the reason)."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no real fd 2 (embedded interpreters): nothing to silence
        yield
        return
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _usable_wb(wb: np.ndarray | None) -> np.ndarray | None:
    """`wb` normalised to G = 1, or None when it is missing, non-finite, non-positive, absurd, or the
    (1, 1, 1) that LibRaw reports when it knows nothing."""
    if wb is None:
        return None
    wb = np.asarray(wb, dtype=np.float64).reshape(-1)[:3]
    if wb.size != 3 or not np.all(np.isfinite(wb)) or np.any(wb <= 0):
        return None
    wb = wb / wb[1]
    if np.allclose(wb, 1.0, atol=1e-3) or wb.max() / wb.min() > 20:
        return None
    return wb.astype(np.float32)


def choose_wb(raw, warn: bool = True) -> np.ndarray:
    """Camera WB when valid, else daylight multipliers, else GENERIC_WB (with one warning line)."""
    if getattr(raw, "wb_valid", True):
        wb = _usable_wb(raw.wb)
        if wb is not None:
            return wb
    daylight = _usable_wb(getattr(raw, "daylight_wb", None))
    if daylight is not None:
        if warn:
            _warn(f"{raw.path}: camera white balance missing/invalid; using daylight multipliers "
                  f"({', '.join(f'{v:.3f}' for v in daylight)})")
        return daylight
    if warn:
        _warn(f"{raw.path}: camera white balance missing/invalid and no daylight multipliers; "
              f"using generic ({', '.join(f'{v:.2f}' for v in GENERIC_WB)})")
    return GENERIC_WB.copy()


def apply_flip(img: np.ndarray, flip: int) -> np.ndarray:
    """Orient an (H, W, C) image by LibRaw's `sizes.flip` as dcraw's flip_index does: mirror rows
    (bit 2), mirror columns (bit 1), then transpose (bit 4). 3 = 180, 5 = 90 CCW, 6 = 90 CW."""
    flip = int(flip) & 7
    if flip & 2:
        img = img[::-1]
    if flip & 1:
        img = img[:, ::-1]
    if flip & 4:
        img = img.transpose(1, 0, 2)
    return np.ascontiguousarray(img)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise CaispError(f"--device {name}: CUDA is not available on this machine")
    return torch.device(name)


def _demosaic_in_strips(mosaic: torch.Tensor, cfa: str, strip: int = 256) -> torch.Tensor:
    """Bilinear demosaic of a full frame in even-aligned row strips with a 2-row halo: exactly the
    whole-frame result (the kernels reach one row), without the whole-frame temporaries (~2 GiB at
    12 MP: masks, padded planes and the grouped convolution's buffers)."""
    from caisp.data.bayer import demosaic_bilinear

    h, w = mosaic.shape
    if h <= strip + 4:
        return demosaic_bilinear(mosaic, cfa)
    out = mosaic.new_empty(3, h, w)
    for y0 in range(0, h, strip):
        y1 = min(h, y0 + strip)
        a, z = max(0, y0 - 2), min(h, y1 + 2)  # a is even: the strip keeps the frame's CFA phase
        out[:, y0:y1] = demosaic_bilinear(mosaic[a:z], cfa)[:, y0 - a:y1 - a]
    return out


def develop_raw(path: str | Path, net: nn.Module, config: dict, *, tile: int = 512, overlap: int = 32,
                device: str | torch.device = "cpu") -> np.ndarray:
    """Develop one raw file: float32 (H, W, 3) sRGB in [0, 1], oriented as the camera intended."""
    from caisp.data.bayer import apply_wb, to_pattern
    from caisp.data.raw import read_raw
    from caisp.tiling import run_tiled, validate_tile

    validate_tile(tile, overlap)  # fail before the (slow) raw decode
    input_norm = config.get("input_norm", "wb")
    if input_norm not in ("wb", "none"):
        raise CaispError(f"model config input_norm={input_norm!r}: expected 'wb' or 'none'")
    device = torch.device(device)
    with _libraw_quiet():
        raw = read_raw(path)
    h, w = raw.mosaic.shape
    cfa = str(config.get("cfa", "RGGB")).upper()
    mosaic, (dy, dx) = to_pattern(raw.mosaic, raw.cfa, cfa)
    mosaic = torch.as_tensor(np.ascontiguousarray(mosaic), dtype=torch.float32)
    if input_norm == "wb":
        mosaic = torch.as_tensor(apply_wb(mosaic, cfa, choose_wb(raw), clip=True), dtype=torch.float32)
    rgb = _demosaic_in_strips(mosaic, cfa)[None]  # (1, 3, h', w')
    del mosaic

    # channels_last: oneDNN's fastest CPU convolution layout (about 1.7x over NCHW here), and good
    # for tensor cores on CUDA.
    net = net.to(device, memory_format=torch.channels_last).eval()

    def fn(x: torch.Tensor) -> torch.Tensor:
        return net(x.to(device).contiguous(memory_format=torch.channels_last)).float().cpu()

    out = run_tiled(fn, rgb, tile, overlap, out_channels=3).clamp_(0.0, 1.0)
    del rgb
    # to_pattern cropped rows/columns to shift the CFA phase: put them back by replication.
    hh, ww = out.shape[-2:]
    pads = (dx, w - ww - dx, dy, h - hh - dy)
    if any(pads):
        out = F.pad(out, pads, mode="replicate")
    img = out[0].permute(1, 2, 0).numpy()
    return apply_flip(img, raw.flip)


def save_output(img: np.ndarray, out_path: str | Path, fmt: str = "jpeg", qf: int = 90,
                subsampling: str = "4:2:0") -> Path:
    """Write float [0, 1] (H, W, 3) as a JPEG at `qf` or a 16-bit PNG, atomically."""
    from caisp.io import write_bytes, write_png

    out_path = Path(out_path)
    img = np.clip(img, 0.0, 1.0)
    if fmt == "jpeg":
        from caisp.data.codec import encode_jpeg

        u8 = np.rint(img * 255.0).astype(np.uint8)
        write_bytes(out_path, encode_jpeg(u8, int(qf), subsampling))
    elif fmt == "png16":
        write_png(out_path, np.rint(img * 65535.0).astype(np.uint16))
    else:
        raise CaispError(f"unknown output format {fmt!r}; use jpeg or png16")
    return out_path


def add_develop_parser(subparsers) -> argparse.ArgumentParser:
    """Register `develop` on an argparse subparsers object."""
    p = subparsers.add_parser(
        "develop", help="develop camera raw files into sRGB pictures with a trained ISP-Net",
        description="Develop camera raws (DNG, NEF, CR2, ...) with a trained ISP-Net: white balance, "
                    "bilinear demosaic, the network (tiled, so memory stays bounded), the camera's "
                    "orientation; then JPEG or 16-bit PNG. A bad input is reported on one stderr "
                    "line and skipped; the exit code is 1 if any input failed, 2 for a bad model "
                    "or option.")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="raw files to develop")
    p.add_argument("-o", "--output", required=True, metavar="OUT",
                   help="output directory (files <OUT>/<stem>.jpg or .png); with a single INPUT, a "
                        "file name ending in .jpg/.jpeg/.png writes that file")
    p.add_argument("--model", required=True, metavar="PATH", help="caisp ISP-Net checkpoint (.pt)")
    p.add_argument("--qf", type=int, default=None,
                   help="JPEG quality factor 1-100 (default: the QF the model was trained for, else 90)")
    p.add_argument("--format", choices=["jpeg", "png16"], default=None,
                   help="jpeg (4:2:0) or png16 (16-bit RGB PNG); default jpeg, or from -o's suffix")
    p.add_argument("--tile", type=int, default=512,
                   help="tile size in pixels, a multiple of 16 >= 2*overlap+16; smaller uses less "
                        "memory (default 512)")
    p.add_argument("--overlap", type=int, default=32,
                   help="overlap between tiles, blended with a raised-cosine window (default 32)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                   help="where the network runs (default auto: cuda if available)")
    p.set_defaults(func=run_develop)
    return p


def _output_paths(inputs: list[Path], output: Path, fmt: str) -> list[Path]:
    suffix = ".jpg" if fmt == "jpeg" else ".png"
    if len(inputs) == 1 and output.suffix.lower() in JPEG_SUFFIXES | {".png"}:
        return [output]
    return [output / f"{p.stem}{suffix}" for p in inputs]


def run_develop(args: argparse.Namespace) -> int:
    """Develop every input; 0 if all succeeded, 1 if any input failed, 2 for a bad model/option."""
    from tqdm import tqdm

    from caisp.checkpoint import load_model
    from caisp.tiling import validate_tile

    inputs = [Path(p) for p in args.inputs]
    output = Path(args.output)
    fmt = args.format
    if fmt is None:
        single_file = len(inputs) == 1 and output.suffix.lower() == ".png"
        fmt = "png16" if single_file else "jpeg"
    try:
        if len(inputs) > 1 and output.suffix.lower() in JPEG_SUFFIXES | {".png"}:
            raise CaispError(f"-o {output} names a file, but {len(inputs)} inputs were given; "
                             "pass an output directory")
        validate_tile(args.tile, args.overlap)
        device = resolve_device(args.device)
        try:
            net, config = load_model(args.model, device=str(device))
        except CaispError:
            raise
        except Exception as e:  # a torch/pickle error on a foreign file: say so in one line
            raise CaispError(f"{args.model}: not a caisp checkpoint ({type(e).__name__}: {e})") from None
        if config.get("type") not in ISP_TYPES:
            raise CaispError(f"{args.model}: a {config.get('type')!r} checkpoint, not an ISP-Net "
                             f"({', '.join(sorted(ISP_TYPES))})")
        if config.get("input_norm", "wb") not in ("wb", "none"):
            raise CaispError(f"{args.model}: unknown input_norm {config.get('input_norm')!r}")
        qf = args.qf if args.qf is not None else int(config.get("qf") or 90)
        if not 1 <= qf <= 100:
            raise CaispError(f"--qf must be in 1..100, got {qf}")
    except CaispError as e:
        print(f"caisp develop: error: {e}", file=sys.stderr)
        return 2

    failed = 0
    seen: dict[Path, Path] = {}
    outs = _output_paths(inputs, output, fmt)
    for src, dst in zip(tqdm(inputs, desc="develop", unit="img", disable=None), outs):
        try:
            if dst in seen:
                raise CaispError(f"{src}: output {dst} would overwrite the one from {seen[dst]}")
            seen[dst] = src
            img = develop_raw(src, net, config, tile=args.tile, overlap=args.overlap, device=device)
            save_output(img, dst, fmt, qf)
        except Exception as e:  # one line per bad input, then go on with the others
            failed += 1
            msg = str(e).splitlines()[0] if str(e) else type(e).__name__
            if not isinstance(e, CaispError):
                msg = f"{type(e).__name__}: {msg}"
            if str(src) not in msg:
                msg = f"{src}: {msg}"
            _warn(msg)
    return 1 if failed else 0

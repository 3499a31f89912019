"""`caisp develop`: turn camera raws into oriented sRGB pictures with a trained ISP-Net."""
from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from caisp import CaispError
from caisp.data.bayer import INPUT_NORMS

ISP_TYPES = {"isp_net"}


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


# What develop says when a raw's WB is not the camera's own (RawImage.wb_source; see
# caisp.data.raw.white_balance, which picks the WB LibRaw's use_camera_wb rendering applies).
_WB_NOTES = {
    "unity": "camera white balance is (1, 1, 1); applying it as unity gains, as LibRaw does",
    "auto": "no camera white balance recorded; using LibRaw's automatic white balance",
    "daylight": "camera white balance missing/invalid; using LibRaw's daylight multipliers",
    "generic": "camera white balance missing/invalid and no daylight multipliers; using generic gains",
}


def choose_wb(raw, warn: bool = True) -> np.ndarray:
    """The raw's white balance (`RawImage.wb`, as LibRaw would apply it), with one warning line
    naming the file when it is not the camera's own."""
    source = getattr(raw, "wb_source", "camera")
    if warn and source != "camera":
        note = _WB_NOTES.get(source, f"white balance from {source}")
        _warn(f"{raw.path}: {note} ({', '.join(f'{v:.3f}' for v in raw.wb)})")
    return np.asarray(raw.wb, dtype=np.float32)


def camera_rgb_matrix(raw, warn: bool = True) -> np.ndarray:
    """The camera's colour matrix as LibRaw renders it: rawpy's, else fitted to LibRaw's own renders
    (caisp.data.colour), else the identity (raw colour), with one warning line naming the file."""
    if getattr(raw, "colour_valid", True):
        return np.asarray(raw.rgb_cam, dtype=np.float32)
    from caisp.data.colour import fit_libraw_matrix

    with _libraw_quiet():
        fitted = fit_libraw_matrix(raw.path)
    if warn:
        how = "fitted to LibRaw's own rendering" if fitted is not None else "none found; using raw colour"
        _warn(f"{raw.path}: rawpy exposes no colour matrix for this camera; {how}")
    return fitted if fitted is not None else np.eye(3, dtype=np.float32)


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


# Tiles of 768 pixels cover a 12 MP frame in 4 x 6 tiles, 17 % more pixels than the frame with a
# 64-pixel overlap (1024: 3 x 5, 30 % more; 512: 7 x 10, 52 % more). The whole image's attention
# statistics are gathered during the output pass (caisp.tiling._settle): about one pass over the
# tiles where the attention hardly depends on the image, at most about two where it swings
# (benchmarks/results/develop.md).
DEFAULT_TILE, DEFAULT_OVERLAP = 768, 64


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


def _network_input(path: str | Path, config: dict):
    """(the network's input (1, 3, h', w') for the raw at `path`, the RawImage, the (dy, dx) rows and
    columns `to_pattern` cropped to reach the model's CFA phase)."""
    from caisp.data.bayer import apply_colour_matrix, check_input_norm, normalise_mosaic, to_pattern
    from caisp.data.raw import read_raw

    try:
        input_norm = check_input_norm(config.get("input_norm", "wb"))
    except CaispError as e:
        raise CaispError(f"model config: {e}") from None
    with _libraw_quiet():
        raw = read_raw(path)
    cfa = str(config.get("cfa", "RGGB")).upper()
    mosaic, shift = to_pattern(raw.mosaic, raw.cfa, cfa)
    mosaic = torch.as_tensor(np.ascontiguousarray(mosaic), dtype=torch.float32)
    if input_norm != "none":
        mosaic = normalise_mosaic(mosaic, cfa, choose_wb(raw), input_norm)
    rgb = _demosaic_in_strips(mosaic, cfa)[None]  # (1, 3, h', w')
    del mosaic
    if input_norm == "camera":
        rgb = apply_colour_matrix(rgb, camera_rgb_matrix(raw))
    return rgb, raw, shift


def network_input(path: str | Path, config: dict) -> torch.Tensor:
    """What the ISP-Net of `config` sees for the raw at `path`: (1, 3, h, w) float32."""
    return _network_input(path, config)[0]


# The network's arithmetic: fp32, bf16 autocast, or auto (bf16 where the device computes it natively).
PRECISIONS = ("auto", "fp32", "bf16")


def native_bf16(device: torch.device) -> bool:
    """Whether `device` has bf16 arithmetic of its own: a CUDA GPU that supports it, or a CPU with
    AVX512-BF16 or AMX. Elsewhere oneDNN emulates bf16: 9x slower than fp32 on an AVX2 EPYC, while
    a Zen 4 EPYC with AVX512-BF16 runs it 1.9x faster than fp32 (benchmarks/results/develop_floor.md)."""
    if device.type == "cuda":
        if not torch.cuda.is_available():
            return False
        try:  # torch >= 2.3 counts emulated bf16 (pre-Ampere GPUs) unless told not to
            return bool(torch.cuda.is_bf16_supported(including_emulation=False))
        except TypeError:
            return bool(torch.cuda.is_bf16_supported())
    if device.type != "cpu":
        return False
    # private probes (torch >= 2.1); a torch without them gets fp32
    probes = (getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"))
    return any(bool(probe()) for probe in probes if probe is not None)


def resolve_precision(precision: str, device: torch.device) -> str:
    """"fp32" or "bf16" for `precision` (one of PRECISIONS) on `device`."""
    if precision not in PRECISIONS:
        raise CaispError(f"--precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "auto":
        return "bf16" if native_bf16(torch.device(device)) else "fp32"
    return precision


def develop_raw(path: str | Path, net: nn.Module, config: dict, *, tile: int = DEFAULT_TILE,
                overlap: int = DEFAULT_OVERLAP, device: str | torch.device = "cpu",
                attention_tol: float | None = None, report: dict | None = None,
                precision: str = "fp32") -> np.ndarray:
    """Develop one raw file: float32 (H, W, 3) sRGB in [0, 1], oriented as the camera intended.
    `attention_tol`: how close each tile's channel-attention weights are held to the whole image's
    (None: caisp.tiling.ATTENTION_TOL); `report` receives the tile counts (caisp.tiling.run_tiled);
    `precision`: the network's arithmetic, one of PRECISIONS (`resolve_precision`)."""
    from caisp.tiling import ATTENTION_TOL, run_tiled, validate_tile

    validate_tile(tile, overlap)  # fail before the (slow) raw decode
    device = torch.device(device)
    bf16 = resolve_precision(precision, device) == "bf16"
    rgb, raw, (dy, dx) = _network_input(path, config)
    h, w = raw.mosaic.shape

    # channels_last: oneDNN's fastest CPU convolution layout (about 1.7x over NCHW here), and good
    # for tensor cores on CUDA.
    net = net.to(device, memory_format=torch.channels_last).eval()

    def fn(x: torch.Tensor) -> torch.Tensor:
        # bf16 autocast: convolutions in bf16 with float32 accumulation; the whole-image attention
        # statistics that tiles share (caisp.tiling) and the blending stay float32
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            return net(x.to(device).contiguous(memory_format=torch.channels_last)).float().cpu()

    out = run_tiled(fn, rgb, tile, overlap, out_channels=3, model=net, report=report,
                    attention_tol=ATTENTION_TOL if attention_tol is None else attention_tol)
    if not bool(torch.isfinite(out).all()):  # NaN would be written as a black picture
        raise CaispError(f"{path}: the model's output holds non-finite values (NaN or inf); "
                         "the checkpoint does not work on this input")
    out = out.clamp_(0.0, 1.0)
    del rgb
    # to_pattern cropped rows/columns to shift the CFA phase, and an odd-sized sensor loses its last
    # row/column to the 2x2 CFA cells (read_raw): put them back by replication, so the picture has
    # the sensor's full visible size.
    hh, ww = out.shape[-2:]
    full_h, full_w = raw.visible_shape or (h, w)
    pads = (dx, full_w - ww - dx, dy, full_h - hh - dy)
    if any(pads):
        out = F.pad(out, pads, mode="replicate")
    img = out[0].permute(1, 2, 0).numpy()
    return apply_flip(img, raw.flip)


def _jpeg_encoders() -> tuple[str, ...]:
    from caisp.codecs import JPEG, JPEG_ANCHORS

    return (JPEG.name, *JPEG_ANCHORS)  # baseline libjpeg-turbo and JPEG's encoder-side anchors


JPEG_ENCODERS = _jpeg_encoders()


def save_output(img: np.ndarray, out_path: str | Path, fmt: str = "jpeg", qf: int = 90,
                subsampling: str = "4:2:0", overwrite: bool = True, encoder: str = "jpeg") -> int:
    """Write float [0, 1] (H, W, 3) as a JPEG at `qf` (with `encoder`, one of JPEG_ENCODERS) or a
    16-bit PNG, atomically; the bytes written. Without `overwrite` an existing file is never replaced,
    also when another process creates it meanwhile: the final move itself refuses
    (caisp.io.atomic_path(replace=False))."""
    from caisp.io import reap_temporaries, write_bytes, write_png

    out_path = Path(out_path)
    img = np.clip(img, 0.0, 1.0)
    reap_temporaries(out_path)  # what a develop killed mid-write left beside this name
    try:
        if fmt == "jpeg":
            from caisp.data.codec import encode

            u8 = np.rint(img * 255.0).astype(np.uint8)
            write_bytes(out_path, encode(u8, encoder, int(qf), subsampling=subsampling), replace=overwrite)
        elif fmt == "png16":
            write_png(out_path, np.rint(img * 65535.0).astype(np.uint16), replace=overwrite)
        else:
            raise CaispError(f"unknown output format {fmt!r}; use jpeg or png16")
    except FileExistsError:
        raise CaispError(f"{out_path} already exists (written meanwhile by another process); "
                         "pass --overwrite to replace it") from None
    except OSError as e:  # name the output, not the temporary file beside it that failed
        raise CaispError(f"{out_path}: cannot write it ({e.strerror or e})") from None
    return out_path.stat().st_size


def add_develop_parser(subparsers) -> argparse.ArgumentParser:
    """Register `develop` on an argparse subparsers object."""
    p = subparsers.add_parser(
        "develop", help="develop camera raw files into sRGB pictures with a trained ISP-Net",
        description="Develop camera raws (DNG, NEF, CR2, ...) with a trained ISP-Net: white balance, "
                    "bilinear demosaic, the network (tiled, so memory stays bounded), the camera's "
                    "orientation; then JPEG or 16-bit PNG. A bad input, or an output that already "
                    "exists (without --overwrite), is reported on one stderr line and skipped; the "
                    "exit code is 1 if any input failed, 2 for a bad model or option.")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="raw files to develop")
    p.add_argument("-o", "--output", required=True, metavar="OUT",
                   help="output folder (files <OUT>/<stem>.jpg or .png); with a single INPUT, a "
                        "file name ending in .jpg/.jpeg/.png writes that file")
    p.add_argument("--model", required=True, metavar="PATH", help="caisp ISP-Net checkpoint (.pt)")
    p.add_argument("--qf", type=int, default=None,
                   help="JPEG quality factor 1-100 (default: the QF the model was trained for, else 90)")
    p.add_argument("--encoder", choices=JPEG_ENCODERS, default="jpeg",
                   help="JPEG encoder: jpeg (libjpeg-turbo, baseline Huffman tables, what the models were "
                        "scored with), jpegopt (optimised Huffman tables: same pixels, fewer bytes) or mozjpeg "
                        "(trellis quantisation, progressive)")
    p.add_argument("--format", choices=["jpeg", "png16"], default=None,
                   help="jpeg (4:2:0) or png16 (16-bit RGB PNG); default jpeg, or from -o's suffix")
    p.add_argument("--overwrite", action="store_true",
                   help="replace output files that already exist (default: refuse and skip them)")
    p.add_argument("--tile", type=int, default=DEFAULT_TILE,
                   help="tile size in pixels, a multiple of 16 >= 2*overlap+16; smaller uses less "
                        f"memory (default {DEFAULT_TILE})")
    p.add_argument("--overlap", type=int, default=DEFAULT_OVERLAP,
                   help="overlap between tiles, blended with a raised-cosine window (default "
                        f"{DEFAULT_OVERLAP}: with the whole image's attention statistics, tiles then match one "
                        "whole-image pass within ~0.2/255)")
    p.add_argument("--attention-tol", type=float, default=None, metavar="TOL",
                   help="tiles whose channel-attention weights differ from the whole image's by more than "
                        "this are computed again, once (default 1e-3; "
                        "0: every tile twice)")
    p.add_argument("--precision", default="auto", choices=PRECISIONS,
                   help="the network's arithmetic: fp32, bf16 (autocast: bf16 convolutions, float32 "
                        "accumulation), or auto (default: bf16 where the device computes it natively, a "
                        "GPU or a CPU with AVX512-BF16 or AMX; else fp32). bf16 is ~2x faster there and "
                        "moves output pixels by 0.02-0.04/255 on average, under 0.5/255 at most")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                   help="where the network runs (default auto: cuda if available)")
    p.set_defaults(func=run_develop)
    return p


# -o suffixes develop writes, and the format each implies.
OUTPUT_FORMATS = {".jpg": "jpeg", ".jpeg": "jpeg", ".png": "png16"}
FORMAT_SUFFIX = {"jpeg": ".jpg", "png16": ".png"}
# Picture suffixes develop cannot write: `-o pic.tif` is a mistake, not a folder to create.
OTHER_PICTURE_SUFFIXES = {".tif", ".tiff", ".webp", ".bmp", ".gif", ".heic", ".heif", ".avif", ".jxl",
                          ".jp2", ".ppm"}


def _plan_outputs(inputs: list[Path], output: Path, fmt: str | None) -> tuple[list[Path], str, Path]:
    """(output file per input, format, the folder they go in); CaispError for an -o that cannot work."""
    suffix = output.suffix.lower()
    if not output.is_dir() and (suffix in OUTPUT_FORMATS or suffix in OTHER_PICTURE_SUFFIXES):
        what = "an existing file" if output.exists() else "a file"
        if len(inputs) > 1:
            raise CaispError(f"-o {output} names {what}, but {len(inputs)} inputs were given; "
                             "pass an output folder")
        if suffix not in OUTPUT_FORMATS:
            raise CaispError(f"-o {output}: develop writes .jpg/.jpeg (--format jpeg) or .png "
                             f"(--format png16), not {suffix}")
        if fmt is not None and fmt != OUTPUT_FORMATS[suffix]:
            raise CaispError(f"-o {output} is a {suffix} file, but --format {fmt} writes "
                             f"{FORMAT_SUFFIX[fmt]}; change one of them")
        return [output], OUTPUT_FORMATS[suffix], output.parent
    if output.exists() and not output.is_dir():
        raise CaispError(f"-o {output} is an existing file, not a folder; pass an output folder")
    fmt = fmt or "jpeg"
    return [output / f"{p.stem}{FORMAT_SUFFIX[fmt]}" for p in inputs], fmt, output


def _check_writable(folder: Path) -> None:
    """Fail before developing anything when `folder` (created later if missing) cannot take files."""
    existing = next((p for p in (folder, *folder.parents) if p.exists()), Path("."))
    if not existing.is_dir():
        raise CaispError(f"output folder {folder}: {existing} is a file, not a folder")
    try:
        # A real file, not os.access: root passes every access() check, a read-only mount does not.
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as e:
        where = "" if existing == folder else f" (it would be created in {existing})"
        raise CaispError(f"output folder {folder} is not writable{where}: {e.strerror or e}") from None


def _check_free(src: Path, dst: Path, overwrite: bool) -> None:
    """Never lose a user's file: an existing output needs --overwrite, and is never the input."""
    if dst.is_dir():
        raise CaispError(f"{src}: output {dst} is a folder; not replacing it")
    if not (dst.exists() or dst.is_symlink()):
        return
    if dst.resolve() == src.resolve():
        raise CaispError(f"{src}: output {dst} is the input itself; not replacing it")
    if not overwrite:
        raise CaispError(f"{src}: output {dst} already exists; pass --overwrite to replace it")


def _load_isp(args: argparse.Namespace, device: torch.device) -> tuple[nn.Module, dict, int]:
    """The ISP-Net, its config and the QF to write at; CaispError (a bad model or option) otherwise."""
    from caisp.checkpoint import load_model

    try:
        net, config = load_model(args.model, device=str(device))
    except CaispError:
        raise
    except Exception as e:  # a torch error on a foreign file: say so in one line
        raise CaispError(f"{args.model}: not a caisp checkpoint ({type(e).__name__}: {e})") from None
    if config.get("type") not in ISP_TYPES:
        raise CaispError(f"{args.model}: a {config.get('type')!r} checkpoint, not an ISP-Net "
                         f"({', '.join(sorted(ISP_TYPES))})")
    if config.get("input_norm", "wb") not in INPUT_NORMS:
        raise CaispError(f"{args.model}: unknown input_norm {config.get('input_norm')!r}")
    qf = args.qf if args.qf is not None else int(config.get("qf") or 90)
    if not 1 <= qf <= 100:
        raise CaispError(f"--qf must be in 1..100, got {qf}")
    return net, config, qf


def run_develop(args: argparse.Namespace) -> int:
    """Develop every input; 0 if all succeeded, 1 if any input failed, 2 for a bad model/option."""
    from tqdm import tqdm

    from caisp.tiling import validate_tile

    inputs = [Path(p) for p in args.inputs]
    overwrite = bool(getattr(args, "overwrite", False))
    tol = getattr(args, "attention_tol", None)
    try:
        outs, fmt, folder = _plan_outputs(inputs, Path(args.output), args.format)
        validate_tile(args.tile, args.overlap)
        if tol is not None and not tol >= 0:
            raise CaispError(f"--attention-tol must be >= 0, got {tol}")
        device = resolve_device(args.device)
        precision = resolve_precision(getattr(args, "precision", "auto"), device)
        net, config, qf = _load_isp(args, device)
        _check_writable(folder)
    except CaispError as e:
        print(f"caisp develop: error: {e}", file=sys.stderr)
        return 2

    failed, written = 0, []
    seen: dict[Path, Path] = {}
    for src, dst in zip(tqdm(inputs, desc="develop", unit="img", disable=None), outs):
        try:
            if dst in seen:
                raise CaispError(f"{src}: output {dst} would overwrite the one from {seen[dst]}")
            seen[dst] = src
            _check_free(src, dst, overwrite)
            img = develop_raw(src, net, config, tile=args.tile, overlap=args.overlap, device=device,
                              attention_tol=tol, precision=precision)
            _check_free(src, dst, overwrite)  # again: developing takes a while
            size = save_output(img, dst, fmt, qf, overwrite=overwrite, encoder=getattr(args, "encoder", "jpeg"))
            written.append(size)
            # what a rate-aware model is for: the bytes of each picture (stdout; progress is on stderr)
            h, w = img.shape[:2]
            tqdm.write(f"{dst}: {size} bytes, {8 * size / (h * w):.3f} bpp")
        except Exception as e:  # one line per bad input, then go on with the others
            failed += 1
            msg = str(e).splitlines()[0] if str(e) else type(e).__name__
            if not isinstance(e, CaispError):
                msg = f"{type(e).__name__}: {msg}"
            if str(src) not in msg:
                msg = f"{src}: {msg}"
            _warn(msg)
    if len(written) > 1:
        tqdm.write(f"{len(written)} files, {sum(written)} bytes")
    return 1 if failed else 0

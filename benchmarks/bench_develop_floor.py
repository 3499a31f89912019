"""The compute floor of `caisp develop` on this machine: how fast one pass of the ISP-Net over a
12-megapixel image can be, whatever the tiling.

    python benchmarks/bench_develop_floor.py [--width 32] [--tile 768] [--repeat 3]

Times the network alone on one tile (fp32 channels_last, as develop runs it, and under CPU bf16
autocast), then extrapolates to the image's pixels: with no overlap and one run a tile, develop
cannot be faster than that. Also prints the pixels develop's default tiling computes (overlap and
edge tiles included) against the image's. Writes benchmarks/results/develop_floor.md.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from caisp.io import write_text  # noqa: E402

SIZE = (2848, 4256)  # H, W: Nikon D700, as bench_develop.py


def _time(net, x, ctx, repeat: int) -> float:
    import torch

    with torch.no_grad(), ctx():
        net(x)  # warm-up: oneDNN picks its kernels on the first call
        best = float("inf")
        for _ in range(repeat):
            t0 = time.perf_counter()
            net(x)
            best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--tile", type=int, default=None, help="default: caisp develop's")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()

    import torch

    from caisp import develop
    from caisp.models import build
    from caisp.tiling import fit_tile, tile_origins

    tile = args.tile or develop.DEFAULT_TILE
    torch.manual_seed(0)
    net = build("isp_net", base_width=args.width).eval().to(memory_format=torch.channels_last)
    x = torch.rand(1, 3, tile, tile).contiguous(memory_format=torch.channels_last)
    fp32 = _time(net, x, contextlib.nullcontext, args.repeat)
    bf16 = _time(net, x, lambda: torch.autocast("cpu", dtype=torch.bfloat16), args.repeat)
    h, w = SIZE
    scale = h * w / tile**2
    ty, tx = fit_tile(h, w, tile, develop.DEFAULT_OVERLAP)  # develop sizes its tiles to the frame
    ys, xs = tile_origins(h, ty, develop.DEFAULT_OVERLAP), tile_origins(w, tx, develop.DEFAULT_OVERLAP)
    computed = len(ys) * len(xs) * ty * tx
    rows = [("fp32, channels_last (develop --precision fp32)", fp32),
            ("bf16 autocast (develop's default where the CPU has AVX512-BF16 or AMX)", bf16)]
    table = ["| precision | one tile s | one pass over 12 MP, no overlap (floor) s | develop's default tiling s |",
             "| --- | ---: | ---: | ---: |"]
    for name, t in rows:
        table.append(f"| {name} | {t:.3f} | {t * scale:.1f} | {t * computed / tile**2:.1f} |")
    from bench_develop import cpu_description
    out = "\n".join([
        "# caisp develop: the compute floor on this machine", "",
        f"Written by `benchmarks/bench_develop_floor.py` on {datetime.date.today()}: ISP-Net base width "
        f"{args.width} (random weights) on one {tile}x{tile} tile, best of {args.repeat}, "
        f"{torch.get_num_threads()} torch threads, torch {torch.__version__}; {cpu_description()}, "
        f"{os.cpu_count()} cores. Extrapolated to {w}x{h} "
        f"({h * w / 1e6:.1f} MP, {scale:.1f} tiles' worth of pixels). develop's default tiling "
        f"({len(ys)} x {len(xs)} tiles of {ty}x{tx}, fitted to the frame from at most {tile}, overlap "
        f"{develop.DEFAULT_OVERLAP}) computes "
        f"{computed / (h * w):.2f}x the image's pixels.", "",
        *table, "",
        "The network alone, one pass, no overlap, is the floor of `caisp develop`'s time (raw decode, "
        "demosaic and JPEG come on top, ~3 s here). Where the floor is above issue 19's 45 s, no tiling "
        "or statistics scheme meets the goal on this machine; only fewer FLOPs (a narrower net) or a "
        "faster machine do.", ""])
    print(out)
    write_text(ROOT / "benchmarks" / "results" / "develop_floor.md", out)


if __name__ == "__main__":
    main()

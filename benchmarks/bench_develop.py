"""Time `caisp develop` of one 12-megapixel raw (Nikon D700 size, 4256x2848) on the CPU per tile size.

    python benchmarks/bench_develop.py [--tiles 256 512 1024] [--width 32] [--threads N]

Each tile size runs in a fresh subprocess that reports its wall time and its own peak RSS
(getrusage RUSAGE_SELF ru_maxrss), so one run's memory does not mask another's. ISP-Net weights are
random (timing does not depend on them). Writes benchmarks/results/develop.md.
Goal: <= 60 s and <= 3 GiB peak RSS per 12 MP image.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from caisp.io import write_text  # noqa: E402

SIZE = (2848, 4256)  # H, W: Nikon D700
GOAL_S, GOAL_GIB = 60.0, 3.0


def make_raw(path: Path) -> None:
    """A noisy synthetic DNG from a skimage photo upscaled to the D700 size."""
    import skimage.data
    from PIL import Image

    from caisp.data.synthetic import write_dng

    h, w = SIZE
    photo = Image.fromarray(skimage.data.coffee()).resize((w, h), Image.BICUBIC)
    write_dng(path, np.asarray(photo), seed=1, noise=True)


def make_checkpoint(path: Path, width: int) -> None:
    import torch

    from caisp.checkpoint import save_model
    from caisp.models import build

    torch.manual_seed(0)
    config = {"type": "isp_net", "kwargs": {"base_width": width}, "qf": 90, "input_norm": "wb",
              "cfa": "RGGB"}
    save_model(path, build("isp_net", **config["kwargs"]), config)


def child(raw: Path, ckpt: Path, tile: int, overlap: int, out: Path, threads: int | None) -> None:
    """Develop once (as `caisp develop` does) and print a JSON line with timings and peak RSS."""
    t0 = time.perf_counter()
    import torch

    from caisp.checkpoint import load_model
    from caisp.develop import develop_raw, save_output

    if threads:
        torch.set_num_threads(threads)
    net, config = load_model(ckpt)
    t1 = time.perf_counter()
    img = develop_raw(raw, net, config, tile=tile, overlap=overlap, device="cpu")
    t2 = time.perf_counter()
    save_output(img, out, "jpeg", config["qf"])
    t3 = time.perf_counter()
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    print(json.dumps({"tile": tile, "load_s": t1 - t0, "develop_s": t2 - t1, "save_s": t3 - t2,
                      "total_s": t3 - t0, "peak_gib": peak_kib / 2**20, "shape": list(img.shape),
                      "threads": torch.get_num_threads()}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiles", type=int, nargs="+", default=[256, 512, 1024])
    ap.add_argument("--overlap", type=int, default=32)
    ap.add_argument("--width", type=int, default=32, help="ISP-Net base width")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--child", nargs=3, metavar=("RAW", "CKPT", "OUT"), help=argparse.SUPPRESS)
    ap.add_argument("--tile", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        raw, ckpt, out = map(Path, args.child)
        child(raw, ckpt, args.tile, args.overlap, out, args.threads)
        return

    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_develop_") as tmp:
        tmp = Path(tmp)
        t = time.perf_counter()
        make_raw(tmp / "d700.dng")
        make_checkpoint(tmp / "isp.pt", args.width)
        print(f"made a {SIZE[1]}x{SIZE[0]} DNG in {time.perf_counter() - t:.1f} s", flush=True)
        for tile in args.tiles:
            cmd = [sys.executable, __file__, "--child", str(tmp / "d700.dng"), str(tmp / "isp.pt"),
                   str(tmp / f"out{tile}.jpg"), "--tile", str(tile), "--overlap", str(args.overlap)]
            if args.threads:
                cmd += ["--threads", str(args.threads)]
            load = os.getloadavg()[0]
            res = subprocess.run(cmd, capture_output=True, text=True)
            if res.returncode:
                raise SystemExit(f"tile {tile} failed:\n{res.stderr}")
            row = json.loads(res.stdout.strip().splitlines()[-1])
            row["load"] = load
            rows.append(row)
            print(f"tile {tile}: {row['total_s']:.1f} s, peak {row['peak_gib']:.2f} GiB", flush=True)

    table = ["| tile | overlap | develop s | total s (incl. import, load, JPEG) | peak RSS GiB | goal met |",
             "| ---: | ---: | ---: | ---: | ---: | :---: |"]
    for r in rows:
        ok = r["total_s"] <= GOAL_S and r["peak_gib"] <= GOAL_GIB
        table.append(f"| {r['tile']} | {args.overlap} | {r['develop_s']:.1f} | {r['total_s']:.1f} | "
                     f"{r['peak_gib']:.2f} | {'yes' if ok else 'no'} |")
    import torch

    loads = ", ".join(f"{r['load']:.1f}" for r in rows)
    text = "\n".join([
        "# caisp develop: one 12-megapixel raw on the CPU",
        "",
        f"Written by `benchmarks/bench_develop.py` on {datetime.date.today()}: a synthetic noisy DNG of "
        f"{SIZE[1]}x{SIZE[0]} (the Nikon D700 size; skimage `coffee` upscaled), ISP-Net base width "
        f"{args.width} (random weights), fp32, channels_last, JPEG QF 90 4:2:0 output. Each tile size "
        "ran in a fresh process; peak RSS is that process's own `ru_maxrss`.",
        "",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, "
        f"torch {torch.__version__}, {rows[0]['threads'] if rows else '?'} torch threads; 1-minute "
        f"load average before the runs: {loads} (other jobs "
        "shared the cores, so times are upper bounds).",
        f"Goal: <= {GOAL_S:.0f} s and <= {GOAL_GIB:.0f} GiB peak.",
        "",
        *table,
        "",
    ])
    write_text(ROOT / "benchmarks" / "results" / "develop.md", text)
    print("\n".join(table))


if __name__ == "__main__":
    main()

"""Time render_all + encode_all per image with 1 and 2 worker processes.

    python benchmarks/bench_render_encode.py [--n 24] [--size 1024x1536] [--qf 90]

Writes benchmarks/results/render_encode.md. Goal: 2 workers at least 1.7x faster than 1.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from caisp.data.codec import encode_all  # noqa: E402
from caisp.data.render import render_all  # noqa: E402
from caisp.io import write_text  # noqa: E402

CANON = ROOT.parent / "shared" / "raw-samples" / "canon550d_magiclantern_colorchart.dng"


def make_raws(raw_dir: Path, n: int, size: tuple[int, int]) -> str:
    """N synthetic DNGs (photo crops, each different) or, without the synthetic camera, Canon copies."""
    raw_dir.mkdir(parents=True)
    try:
        from caisp.data import synthetic
    except ImportError:
        if not CANON.is_file():
            raise SystemExit(f"neither caisp.data.synthetic nor {CANON} is available")
        for i in range(n):
            shutil.copy(CANON, raw_dir / f"canon{i:03d}.dng")
        return f"{n} copies of {CANON.name} (1156x1734)"
    import skimage.data

    photos = [skimage.data.chelsea(), skimage.data.coffee(), skimage.data.rocket()]
    h, w = size
    for i in range(n):
        photo = photos[i % len(photos)]
        reps = (-(-2 * h // photo.shape[0]), -(-2 * w // photo.shape[1]), 1)
        big = np.tile(photo, reps)  # tiled, then an image-specific crop so files differ
        y, x = (i * 37) % h, (i * 53) % w
        synthetic.write_dng(raw_dir / f"synth{i:03d}.dng", np.ascontiguousarray(big[y:y + h, x:x + w]),
                            seed=i, noise=True)
    return f"{n} synthetic DNGs ({h}x{w}, caisp.data.synthetic)"


def run_once(raw_dir: Path, work: Path, workers: int, qf: int) -> tuple[float, float]:
    out = work / f"rendered_w{workers}"
    jpg = work / f"jpeg_w{workers}"
    for d in (out, jpg):
        shutil.rmtree(d, ignore_errors=True)  # fresh output dirs every run
    t0 = time.perf_counter()
    render_all(raw_dir, out, workers=workers, progress=False)
    t1 = time.perf_counter()
    encode_all(out, jpg, codec="jpeg", quality=qf, workers=workers)
    t2 = time.perf_counter()
    return t1 - t0, t2 - t1


def versions() -> dict[str, str]:
    import rawpy
    import PIL

    try:
        import torch
        torch_v = torch.__version__
    except ImportError:
        torch_v = "absent"
    return {"python": platform.python_version(), "torch": torch_v, "rawpy": rawpy.__version__,
            "libraw": ".".join(map(str, rawpy.libraw_version)), "pillow": PIL.__version__,
            "numpy": np.__version__}


def child(args: argparse.Namespace) -> None:
    """One timed configuration in a fresh process, so OMP_NUM_THREADS takes effect in LibRaw."""
    work = Path(args.work)
    runs = [run_once(work / "raw", work, args.workers, args.qf) for _ in range(args.repeats)]
    print(json.dumps(min(runs, key=sum)))  # best of the repeats: least disturbed by other load


def timed(work: Path, workers: int, omp: int | None, args: argparse.Namespace) -> tuple[float, float]:
    env = dict(os.environ)
    if omp is not None:
        env["OMP_NUM_THREADS"] = str(omp)
    cmd = [sys.executable, __file__, "--child", "--work", str(work), "--workers", str(workers),
           "--qf", str(args.qf), "--repeats", str(args.repeats)]
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
    return tuple(json.loads(out.strip().splitlines()[-1]))  # type: ignore[return-value]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=24)
    ap.add_argument("--size", default="1024x1536", help="HxW of the synthetic raws")
    ap.add_argument("--qf", type=int, default=90)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "render_encode.md")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--work", help=argparse.SUPPRESS)
    ap.add_argument("--workers", type=int, default=1, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args)
    size = tuple(int(v) for v in args.size.lower().split("x"))

    # Three configurations: one worker with LibRaw's own OpenMP threads (what `workers: 1` does), one
    # single-threaded worker (the unit a process pool scales), and two pool workers (one thread each).
    configs = [("1", "LibRaw default (OpenMP, all cores)", 1, None),
               ("1", "OMP_NUM_THREADS=1", 1, 1),
               ("2", "pool, 1 thread each", 2, None)]
    with tempfile.TemporaryDirectory(prefix="bench_render_") as tmp:
        work = Path(tmp)
        source = make_raws(work / "raw", args.n, size)  # type: ignore[arg-type]
        best = [timed(work, workers, omp, args) for _, _, workers, omp in configs]

    rows = []
    for (label, threads, _, _), (render_s, encode_s) in zip(configs, best):
        total = render_s + encode_s
        rows.append(f"| {label} | {threads} | {1000 * render_s / args.n:.0f} | {1000 * encode_s / args.n:.0f} | "
                    f"{1000 * total / args.n:.0f} | {total:.2f} |")
    scaling = sum(best[1]) / sum(best[2])
    overall = sum(best[0]) / sum(best[2])
    table = "\n".join(["| workers | threads | render ms/img | encode ms/img | total ms/img | total s |",
                       "| --- | --- | --- | --- | --- | --- |", *rows])
    info = versions()
    report = "\n".join([
        "# render_all + encode_all throughput", "",
        f"Command: `python benchmarks/bench_render_encode.py --n {args.n} --size {args.size} --qf {args.qf}`", "",
        f"- date: {datetime.datetime.now().isoformat(timespec='seconds')}",
        f"- machine: {platform.machine()}, {os.cpu_count()} CPUs "
        f"(load average {', '.join(f'{v:.1f}' for v in os.getloadavg())} at the end)",
        "- versions: " + ", ".join(f"{k} {v}" for k, v in info.items()),
        f"- data: {source}; JPEG QF {args.qf} 4:2:0; best of {args.repeats} runs, fresh output dirs",
        "- each configuration runs in a fresh process; pool start-up (spawn) is included in the times", "",
        table, "",
        f"**2 workers vs 1 single-threaded worker: {scaling:.2f}x** (goal >= 1.7x); "
        f"vs 1 worker using LibRaw's OpenMP threads: {overall:.2f}x.", "",
        "LibRaw parallelises its own demosaicing with OpenMP, so one worker already uses both cores for",
        "part of the render; the pool scales the rest (decode, PNG and JPEG writes, mosaic storage).", "",
    ])
    print(report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_text(args.out, report)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

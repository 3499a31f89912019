"""Seed runs at once or in turn (`train.parallel_runs`): training throughput of the default's ISP-Net step.

    python benchmarks/bench_parallel_runs.py [--steps 40]

One training step of the offline default (ISP-Net base width 12 with the tone prior, batch 8 of 96^2
crops, L1, Adam, channels_last, fp32) in N processes at once, each with T threads, N x T = the
machine's cores: one 2-thread run (the default's `threads: 2` in turn) against 2 and 3 runs of one
thread at once (`parallel_runs: 3`). Reports ms per step of each run and the runs' steps per second
in all. Data loading, validation and process start-up are not in it: the whole stages' times are in
the README's budget. Writes benchmarks/results/parallel_runs.md.
"""
from __future__ import annotations

import argparse
import datetime
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "parallel_runs.md"


def one_run(threads: int, steps: int) -> float:
    """Seconds per training step of one run on `threads` threads (after 5 warm-up steps)."""
    import torch

    sys.path.insert(0, str(ROOT))
    from caisp.models.unet import ISPNet

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    net = ISPNet(12, tone_prior=True).to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    x = torch.rand(8, 3, 96, 96).contiguous(memory_format=torch.channels_last)
    y = torch.rand(8, 3, 96, 96)
    for i in range(steps + 5):
        if i == 5:
            t0 = time.perf_counter()
        loss = (net(x) - y).abs().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return (time.perf_counter() - t0) / steps


def at_once(n: int, threads: int, steps: int) -> list[float]:
    """Seconds per step of each of `n` runs started together."""
    cmd = [sys.executable, __file__, "--child", str(threads), "--steps", str(steps)]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) for _ in range(n)]
    return [float(p.communicate()[0].strip()) for p in procs]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child is not None:
        print(one_run(a.child, a.steps))
        return
    rows = []
    for n, threads in ((1, 2), (2, 1), (3, 1), (1, 1)):
        per = at_once(n, threads, a.steps)
        mean = sum(per) / n
        rows.append((n, threads, 1000 * mean, n / mean))
    base = rows[0][3]
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_develop import cpu_description

    cpu = cpu_description()
    lines = [f"# Seed runs at once or in turn (`python benchmarks/bench_parallel_runs.py --steps {a.steps}`)", "",
             f"{datetime.date.today()}, {cpu}, {__import__('os').cpu_count()} cores, torch "
             f"{__import__('torch').__version__}: one training step of the default's ISP-Net (batch 8, 96^2).", "",
             "| runs at once | threads each | ms per step of a run | steps per second, all runs | vs one 2-thread run |",
             "|---:|---:|---:|---:|---:|"]
    lines += [f"| {n} | {t} | {ms:.0f} | {sps:.2f} | {sps / base:.2f}x |" for n, t, ms, sps in rows]
    text = "\n".join(lines) + "\n"
    print(text)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(text)


if __name__ == "__main__":
    main()

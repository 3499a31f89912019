"""Why the FiveK rehearsal's CAS training ran at one core's crop rate with 8 loader workers.

    python benchmarks/bench_epoch_boundary.py [--workers 2] [--batch 64]

A DataLoader worker builds whole batches, and an epoch's iterator ends before the next epoch's
batches are prefetched. With one global batch per epoch (24 raws: 19 training images x 4 crops = 76
crops, batch 64) a single worker builds every batch while the others idle. Items here cost 7 ms of
CPU, as one 448² training crop does (benchmarks/results/loader.md). Writes
benchmarks/results/epoch_boundary.md. `train.crops_per_image` (auto) now gives every epoch two batches
per worker.
"""
from __future__ import annotations

import argparse
import datetime
import os
import sys
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from caisp.io import write_text  # noqa: E402
from caisp.pipeline.fitting import crops_per_image  # noqa: E402

CROP_S = 0.007


class _Crops(Dataset):
    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> torch.Tensor:
        t = time.perf_counter()
        while time.perf_counter() - t < CROP_S:  # busy CPU, as a crop's reads and demosaic are
            pass
        return torch.zeros(3, 8, 8)


def crops_per_s(n: int, batch: int, workers: int, steps: int) -> float:
    loader = DataLoader(_Crops(n), batch_size=batch, shuffle=True, drop_last=True, num_workers=workers,
                        persistent_workers=workers > 0)
    it = iter(loader)
    next(it)  # workers started
    t, done = time.perf_counter(), 0
    while done < steps:
        try:
            next(it)
            done += 1
        except StopIteration:  # the training loop's next epoch
            it = iter(loader)
    return steps * batch / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=8)
    args = ap.parse_args()
    n_train = 19
    rows = []
    for label, repeat in (("before: one batch per epoch", 4),
                          ("now: two batches per worker", crops_per_image(n_train, args.batch, args.workers))):
        n = n_train * repeat
        rate = crops_per_s(n, args.batch, args.workers, args.steps)
        rows.append(f"| {label} | {repeat} | {n} | {n // args.batch} | {rate:.0f} |")
        print(rows[-1], flush=True)
    ideal = args.workers / CROP_S
    text = "\n".join([
        "# Loader throughput at an epoch boundary", "",
        f"Written by `benchmarks/bench_epoch_boundary.py` on {datetime.date.today()}: {n_train} training images, "
        f"batch {args.batch}, {args.workers} workers, items costing {CROP_S * 1000:.0f} ms of CPU each "
        f"(one 448² crop), {os.cpu_count()} CPU cores; {args.workers} busy workers could give ~{ideal:.0f} crops/s.",
        "", "| epoch | crops per image | crops per epoch | batches per epoch | crops/s |", "|---|---:|---:|---:|---:|",
        *rows, "",
        "With one batch per epoch only one worker builds batches, so the rate is one core's whatever the "
        "number of workers: the rehearsal's 50 crops/s with 8 workers on the H100 machine, whose cores make "
        "~50 crops/s each. The auto `train.crops_per_image` now gives an epoch two batches per worker.", ""])
    write_text(ROOT / "benchmarks" / "results" / "epoch_boundary.md", text)


if __name__ == "__main__":
    main()

"""What the training stages share: their datasets and the call of the one training loop with a resume
state keyed by everything that defines the run."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any, Callable, Sequence

from caisp.codecs import Point
from caisp.params import Params
from caisp.pipeline import layout


def crops_per_image(n_train: int, batch_size: int, num_workers: int) -> int:
    """The auto `train.crops_per_image`: crops of each training image per epoch.

    On small data sets one epoch visits each image several times (at least 64 crops, and one global
    batch), so that the loader's reshuffles and the dvclive curves do not tick every couple of steps;
    at FiveK's 390 training images it is 1, the paper's epoch. With loader workers an epoch also holds
    two batches per worker: a DataLoader worker builds whole batches and an epoch's iterator ends
    before the next one prefetches, so at one batch per epoch a single worker fed the GPU (the 24-raw
    rehearsal's CAS training ran at one core's ~50 crops/s with 8 workers;
    benchmarks/results/epoch_boundary.md)."""
    n = max(n_train, 1)
    worker_crops = 2 * num_workers * batch_size
    return max(1, 64 // n, -(-batch_size // n), -(-worker_crops // n))


def datasets(p: Params, point: Point | None, batch_size: int, keys: tuple[str, ...]):
    """(train, val) datasets of the task's `keys`; `point`: whose coded images the task reads (None: none)."""
    from caisp.data.dataset import RawRGBDataset

    split = layout.split()
    coded = layout.codec_dir(point) if point is not None else None
    repeat = p.train.crops_per_image or crops_per_image(len(split["train"]), batch_size, p.train.num_workers)
    # Only the images the task reads, 8-bit ones as uint8 until the device (caisp.data.dataset).
    common = dict(coded_dir=coded, input_norm=p.model.input_norm, keys=keys, uint8=True)
    train = RawRGBDataset(layout.RENDERED, split["train"], patch=p.train.patch, train=True, repeat=repeat, **common)
    val = RawRGBDataset(layout.RENDERED, split["val"] or split["train"][:1], patch=None, train=False, **common)
    return train, val


def run_layout(p: Params, n_runs: int) -> tuple[int, int]:
    """(processes, threads of each run) of a stage that trains `n_runs` runs.

    On the CPU, runs train at once in min(train.parallel_runs, n_runs) processes: on two cores three
    1-thread runs at once take 1.10-1.14x the steps per second of 2-thread runs in turn, and whole
    multi-seed stages 15 % less time (benchmarks/bench_parallel_runs.py, README "Budget"). The thread
    count comes from the params alone, never from the machine or the load, so that the same params
    give the same numbers.
    On CUDA, and under torchrun, runs go one after another at `train.threads`."""
    from caisp.device import resolve_device

    k = min(p.train.parallel_runs, n_runs)
    if k <= 1 or int(os.environ.get("WORLD_SIZE", "1")) > 1 or resolve_device(p.train.device).type != "cpu":
        return 1, p.train.threads
    return k, max(1, p.train.threads // k)


def _one_run(job: tuple[Callable[..., dict], Params, int, tuple]) -> dict:
    fn, p, seed, args = job
    import torch

    torch.set_num_threads(p.train.threads)  # the loop sets it too; this covers loading before it
    return fn(p, seed, *args, label=f"seed {seed}")


def run_seeds(fn: Callable[..., dict], p: Params, seeds: Sequence[int], *args: Any) -> dict[int, dict]:
    """{seed: fn(p, seed, *args)} for each seed: at once in `run_layout`'s processes (each run with
    p.train.threads set to its own thread count, and fn called with label="seed N" for its log lines),
    or one after another in this process. fn and args must pickle (a module-level function, no
    lambdas): the processes are spawned, since a fork of a process whose OpenMP pool has run can hang."""
    seeds = list(seeds)
    procs, threads = run_layout(p, len(seeds))
    if procs == 1:
        return {s: fn(p, s, *args) for s in seeds}
    import multiprocessing

    q = dataclasses.replace(p, train=dataclasses.replace(p.train, threads=threads))
    with multiprocessing.get_context("spawn").Pool(procs) as pool:  # leaving it terminates the others
        results = pool.map(_one_run, [(fn, q, s, args) for s in seeds], chunksize=1)
    return dict(zip(seeds, results))


def _fingerprint(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]


def fit(task, train, val, *, log_dir: Path, steps: int, batch_size: int, lr: float, grad_clip: float | None,
        seed: int, p: Params, fingerprint: list, label: str = "") -> dict:
    """Run the one training loop. Its resume state is keyed by `fingerprint` (everything that defines
    the run) and the seed, so an interrupted stage resumes, while a stage rerun with other params
    starts fresh (and the states of runs with other params are removed once this one completes)."""
    from caisp.train import TrainConfig, fit as train_loop, is_main

    key = log_dir.relative_to(layout.REPORTS / "train").as_posix().replace("/", "_")
    state = layout.STATES / f"{key}-{_fingerprint([fingerprint, seed])}.pt"
    if not state.exists() and log_dir.exists():
        shutil.rmtree(log_dir)  # a fresh run must not append to an older run's curves
    # Five points of each validation curve: one whole-photo validation costs ~1.5 training steps here.
    cfg = TrainConfig(steps=steps, batch_size=batch_size, lr=lr, seed=seed,
                      num_workers=p.train.num_workers, ckpt_every=p.train.ckpt_every,
                      val_every=max(1, steps // 5), device=p.train.device, amp=p.train.amp,
                      lr_decay=p.train.lr_decay, grad_clip=grad_clip,
                      warmup_steps=min(p.train.warmup_steps, steps // 4),
                      threads=p.train.threads, deterministic=p.train.deterministic,
                      val_tile=p.evaluate.tile, val_overlap=p.evaluate.overlap,
                      log_dir=log_dir, state_path=state, label=label)
    result = train_loop(task, train, val, cfg)
    if not is_main():
        # Under torchrun the other ranks are done: rank 0 alone saves, evaluates and writes metrics.
        raise SystemExit(0)
    for stale in layout.STATES.glob(f"{key}-*.pt"):
        stale.unlink(missing_ok=True)
    return result

"""The one training loop of every stage: CAS-Net (L_cas), ISP-Net (L_isp), compression-aware
fine-tuning (L_total). A plain nanoGPT-style loop: Adam on the task's trainable parameters,
optional cosine decay, channels_last (CPU and CUDA) + bf16 autocast on CUDA, DistributedDataParallel under
torchrun, validation PSNR and dvclive metrics, and an atomic training-state file to resume from.

Steps are optimizer steps; `step` always counts the steps completed so far. `batch_size` is the
global batch of one step, as in the paper: under torchrun each of the N processes loads batch_size / N.
"""
from __future__ import annotations

import itertools
import math
import os
import random
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler, Subset

from caisp import CaispError
from caisp.checkpoint import _load_reason
from caisp.data.dataset import to_float
from caisp.device import resolve_device, set_determinism  # noqa: F401 (also the loop's API)
from caisp.io import atomic_path, write_text
from caisp.metrics import psnr
from caisp.progress import Progress

STATE_FORMAT = "caisp-train-state"
STATE_VERSION = 1
LR_DECAYS = ("cosine", "none")


@dataclass
class TrainConfig:
    """Loop settings (the stage maps params.yaml onto these). `val_every=None`: once per epoch.
    `batch_size` is the global batch: torchrun's N processes load batch_size / N samples each, so
    the samples per step, and hence the run, do not change with N (N must divide it)."""

    steps: int
    batch_size: int  # global, over all processes
    lr: float
    seed: int = 0
    num_workers: int = 0
    ckpt_every: int = 100
    val_every: int | None = None
    lr_decay: str = "cosine"
    grad_clip: float | None = None
    warmup_steps: int = 0
    device: str = "auto"
    amp: bool = True  # bf16 autocast; CUDA only, CPU always trains in fp32
    # oneDNN's and cuDNN's faster layout: on a 2-core CPU ~10 % per training step and ~1.8x per
    # validation pass of ISP-Net (measured), still deterministic at a fixed thread count.
    channels_last: bool = True
    log_dir: Path | None = None  # dvclive directory
    state_path: Path | None = None  # training state for resume; keep it outside the DVC outs
    progress: bool = True
    # Prefix of this run's log lines ("seed 1"): runs trained at once share a terminal, so a labelled
    # run logs plain lines, never a bar.
    label: str = ""
    val_batch_size: int = 1  # validation images may differ in size
    # Validation images larger than this run tile by tile (caisp.tiling): 12 MP in bounded memory.
    val_tile: int | None = None
    val_overlap: int = 64
    # Same inputs, same numbers: a fixed intra-op thread count (a reduction split over another number
    # of threads sums in another order) and deterministic kernels. None leaves torch's own settings.
    threads: int | None = None
    deterministic: bool = True

    def __post_init__(self) -> None:
        def need(ok: bool, what: str) -> None:
            if not ok:
                raise CaispError(f"TrainConfig: {what}")

        need(self.steps >= 1, f"steps must be >= 1, got {self.steps}")
        need(self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}")
        need(self.lr > 0, f"lr must be > 0, got {self.lr}")
        need(self.num_workers >= 0, f"num_workers must be >= 0, got {self.num_workers}")
        need(self.ckpt_every >= 1, f"ckpt_every must be >= 1, got {self.ckpt_every}")
        need(self.val_every is None or self.val_every >= 1,
             f"val_every must be >= 1 or None, got {self.val_every}")
        need(self.lr_decay in LR_DECAYS, f"lr_decay must be one of {LR_DECAYS}, got {self.lr_decay!r}")
        need(self.warmup_steps >= 0, f"warmup_steps must be >= 0, got {self.warmup_steps}")
        need(self.grad_clip is None or self.grad_clip > 0,
             f"grad_clip must be > 0 or None, got {self.grad_clip}")
        need(self.val_batch_size >= 1, f"val_batch_size must be >= 1, got {self.val_batch_size}")
        if self.val_tile is not None:
            from caisp.tiling import validate_tile

            validate_tile(self.val_tile, self.val_overlap)
        self.log_dir = Path(self.log_dir) if self.log_dir is not None else None
        self.state_path = Path(self.state_path) if self.state_path is not None else None


# ----------------------------------------------------------------------------- devices, DDP

def get_rank() -> int:
    """Global rank: from the process group, else torchrun's RANK (so it holds after cleanup)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return int(os.environ.get("RANK", "0"))


def get_world_size() -> int:
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return 1


def lr_factor(step: int, cfg: "TrainConfig") -> float:
    """Learning-rate multiplier: linear warm-up over `warmup_steps` (Adam's early steps on an
    unnormalised U-Net are what blows up at high rates), then cosine decay or constant."""
    warm = min(1.0, (step + 1) / cfg.warmup_steps) if cfg.warmup_steps else 1.0
    if cfg.lr_decay == "cosine":
        return warm * 0.5 * (1.0 + math.cos(math.pi * min(step, cfg.steps) / cfg.steps))
    return warm


def is_main() -> bool:
    """True on the process that logs and writes files (rank 0, or the only process)."""
    return get_rank() == 0


def setup_distributed(backend: str | None = None) -> bool:
    """Join the process group that torchrun describes (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR,
    MASTER_PORT). nccl on CUDA, gloo on CPU. Returns True if this call created the group, False
    when not launched by torchrun (WORLD_SIZE absent or 1) or already initialised."""
    if dist.is_initialized() or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend)  # env:// rendezvous
    return True


def cleanup_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


# ----------------------------------------------------------------------------- RNG and state

def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device


def _rng_state() -> dict[str, Any]:
    """This process's RNG states, in types that `torch.load(weights_only=True)` accepts."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss)],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def _set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


@dataclass
class RunningMeans:
    """Sums of the train loss and its terms over the `n` steps since the last logged step."""

    sums: dict[str, float] = field(default_factory=dict)
    n: int = 0

    def add(self, values: dict[str, float]) -> None:
        for k, v in values.items():
            self.sums[k] = self.sums.get(k, 0.0) + v
        self.n += 1

    def mean(self, key: str) -> float:
        return self.sums[key] / self.n

    def clear(self) -> None:
        self.sums.clear()
        self.n = 0


def _read_state(path: Path) -> dict[str, Any]:
    hint = "; delete it to train from scratch"
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # any failure means the file is not a state we can continue from
        raise CaispError(f"{path}: cannot read training state: {_load_reason(e)}{hint}") from e
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise CaispError(f"{path}: not a caisp training state{hint}")
    if state.get("version") != STATE_VERSION:
        raise CaispError(f"{path}: training state version {state.get('version')!r} "
                         f"is not {STATE_VERSION}{hint}")
    return state


@dataclass
class ResumeState:
    """Where a run stands: steps done, the last validation's metrics and the running means to log
    next. With the weights, Adam moments, schedule position and every rank's RNG state it is what
    the training-state file holds."""

    step: int = 0
    metrics: dict[str, float] = field(default_factory=lambda: {"train_loss": math.nan, "val_psnr": math.nan})
    # A resumed run's first logged train loss averages the same steps as an uninterrupted run's.
    log: RunningMeans = field(default_factory=RunningMeans)

    @classmethod
    def load(cls, path: Path, task: nn.Module, opt: torch.optim.Optimizer,
             sched: torch.optim.lr_scheduler.LRScheduler, seed: int) -> ResumeState:
        """Resume from the state file `path`: put its weights, Adam moments, schedule position and
        this rank's RNG state back in place, and return where the run stood."""
        state = _read_state(path)
        try:
            task.load_state_dict(state["task"])
            opt.load_state_dict(state["optimizer"])
        except (RuntimeError, ValueError, KeyError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise CaispError(f"{path}: training state does not match this task ({first}); "
                             "delete it to train from scratch") from e
        sched.load_state_dict(state["scheduler"])
        step = int(state["step"])
        sums = dict(state.get("log_sums", {}))
        # States written before log_n existed kept the count in the sums, under "n".
        n = int(state.get("log_n", sums.pop("n", 0)))
        run = cls(step, dict(state.get("metrics", cls().metrics)), RunningMeans(sums, n))
        if len(state["rng"]) == get_world_size():
            _set_rng_state(state["rng"][get_rank()])
        else:  # another world size: data order stays right, random draws just differ
            _seed_all(seed + get_rank() + 7919 * step)
        if is_main():
            print(f"resuming from {path} at step {step}", file=sys.stderr, flush=True)
        return run

    def save(self, path: Path, task: nn.Module, opt: torch.optim.Optimizer,
             sched: torch.optim.lr_scheduler.LRScheduler) -> None:
        """Collective (every rank calls it): rank 0 writes the state, every rank's RNG state included."""
        rngs = [_rng_state()]
        if get_world_size() > 1:
            rngs = [None] * get_world_size()
            dist.all_gather_object(rngs, _rng_state())
        if not is_main():
            return
        state = {
            "format": STATE_FORMAT, "version": STATE_VERSION, "step": self.step, "world_size": len(rngs),
            "task": task.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
            "rng": rngs, "metrics": self.metrics, "log_sums": dict(self.log.sums), "log_n": self.log.n,
        }
        with atomic_path(path) as tmp:
            torch.save(state, tmp)


class _Live:
    """dvclive on rank 0 (`log_dir` None elsewhere or when not logging: then a no-op). The x axis
    is optimizer steps, also across resumes."""

    def __init__(self, log_dir: Path | None, step: int, resuming: bool) -> None:
        self.live = None
        if log_dir is None:
            return
        from dvclive import Live  # late: it imports dvc

        if resuming and log_dir.is_dir():
            _truncate_live(log_dir, step)
        self.live = Live(dir=str(log_dir), resume=resuming, save_dvc_exp=False, dvcyaml=None)

    def log(self, step: int, metrics: dict[str, float]) -> None:
        if self.live is None:
            return
        self.live.step = step
        for name, value in metrics.items():
            self.live.log_metric(name, value)
        self.live.next_step()

    def end(self) -> None:
        if self.live is not None:
            self.live.end()


def _truncate_live(log_dir: Path, step: int) -> None:
    """Drop dvclive history rows logged after `step`: a run killed between its last state file and
    its end logged points that the resumed run will log again."""
    for tsv in (log_dir / "plots" / "metrics").rglob("*.tsv"):
        lines = tsv.read_text(encoding="utf-8").splitlines(keepends=True)
        if not lines:
            continue
        col = lines[0].rstrip("\r\n").split("\t").index("step")
        keep = [r for r in lines[1:] if r.strip() and int(r.split("\t")[col]) <= step]
        if len(keep) != len(lines) - 1:
            write_text(tsv, lines[0] + "".join(keep))


# ----------------------------------------------------------------------------- data

class _ResumableSampler(Sampler[int]):
    """A DistributedSampler (for one process too: it is a shuffle seeded by seed + epoch) that can
    start an epoch part-way, so a resumed run sees the samples an uninterrupted one would."""

    def __init__(self, base: DistributedSampler) -> None:
        self.base, self.skip = base, 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.base.set_epoch(epoch)
        self.skip = skip

    def __iter__(self) -> Iterator[int]:
        return itertools.islice(iter(self.base), self.skip, None)

    def __len__(self) -> int:
        return len(self.base) - self.skip


def _to_device(batch: dict[str, Any], dev: torch.device, channels_last: bool) -> dict[str, Any]:
    out = {}
    for k, v in batch.items():
        if isinstance(v, torch.Tensor):
            v = v.to(dev, non_blocking=True)
            if v.dtype == torch.uint8:  # 8-bit images travel as such (RawRGBDataset(uint8=True))
                v = to_float(v)
            if channels_last and v.dim() == 4:
                v = v.contiguous(memory_format=torch.channels_last)
        out[k] = v
    return out


@torch.no_grad()
def _validate(task: nn.Module, loader: DataLoader | None, dev: torch.device, amp: bool,
              channels_last: bool, tile: int | None = None, overlap: int = 64) -> float:
    """Mean PSNR of task.predict over the validation set (each rank takes a shard; all-reduced)."""
    if loader is None:
        return math.nan
    was_training = task.training
    task.eval()
    total = torch.zeros(2, dtype=torch.float64, device=dev)  # sum of PSNRs, number of images
    for batch in loader:
        batch = _to_device(batch, dev, channels_last)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
            pred, target = task.predict(batch, tile=tile, overlap=overlap)
        # Clamp: outputs are stored as 8-bit images, so out-of-range values are never seen.
        p = psnr(pred.float().clamp(0, 1), target.float())
        total += torch.stack([p.sum(), torch.tensor(float(p.numel()), dtype=torch.float64, device=dev)])
    if get_world_size() > 1:
        dist.all_reduce(total)
    task.train(was_training)
    s, n = total.tolist()
    return s / n if n else math.nan


def _loaders(train_set: Dataset, val_set: Dataset | None, cfg: TrainConfig, start: int,
             dev: torch.device) -> tuple[Iterator[dict[str, Any]], DataLoader | None, int]:
    """This rank's training batches from step `start` on, epoch after epoch without end; the
    loader of its validation shard (None without validation images); the steps of an epoch."""
    rank, world = get_rank(), get_world_size()
    local_batch = cfg.batch_size // world
    base = DistributedSampler(train_set, num_replicas=world, rank=rank, shuffle=True,
                              seed=cfg.seed, drop_last=True)
    # Each rank's shard is one permutation strided by rank, so global step k takes exactly the
    # permutation's k-th run of batch_size samples, and epochs have len(train_set) // batch_size
    # steps, whatever the world size.
    steps_per_epoch = len(base) // local_batch
    if steps_per_epoch == 0:
        raise CaispError(f"training set has {len(train_set)} samples, fewer than batch_size "
                         f"{cfg.batch_size} (the global batch of one step)")
    sampler = _ResumableSampler(base)
    gen = torch.Generator()  # worker seeds come from here, not from the global RNG we checkpoint
    loader = DataLoader(train_set, batch_size=local_batch, sampler=sampler, drop_last=True,
                        num_workers=cfg.num_workers, pin_memory=dev.type == "cuda",
                        persistent_workers=cfg.num_workers > 0, generator=gen)

    def batches() -> Iterator[dict[str, Any]]:
        epoch, skip = divmod(start, steps_per_epoch)
        while True:
            sampler.set_epoch(epoch, skip * local_batch)  # the samples of this rank's shard
            gen.manual_seed(((cfg.seed * 1_000_003 + epoch) * 4096 + rank) % 2**63)
            yield from loader
            epoch, skip = epoch + 1, 0

    val_loader = None
    if val_set is not None and len(val_set) > 0:
        val_loader = DataLoader(Subset(val_set, range(rank, len(val_set), world)),
                                batch_size=cfg.val_batch_size, shuffle=False,
                                num_workers=cfg.num_workers, pin_memory=dev.type == "cuda")
    return batches(), val_loader, steps_per_epoch


# ----------------------------------------------------------------------------- the loop

def fit(task: nn.Module, train_set: Dataset, val_set: Dataset | None, cfg: TrainConfig,
        on_step: Callable[[int, dict[str, float]], None] | None = None) -> dict[str, Any]:
    """Train `task` (a `caisp.losses` task) in place for `cfg.steps` optimizer steps; resume from
    `cfg.state_path` when it exists. `on_step(step, logs)` runs after each step's validation and
    state save (tests interrupt with it). Returns {"step", "start_step", "train_loss", "val_psnr"}."""
    dev = resolve_device(cfg.device)
    created = setup_distributed("nccl" if dev.type == "cuda" else "gloo")
    try:
        return _fit(task, train_set, val_set, cfg, dev, on_step)
    finally:
        if created:
            cleanup_distributed()


def _backend(cfg: TrainConfig, dev: torch.device, rank: int) -> tuple[bool, bool]:
    """Process-wide settings and seeds of a run; returns (bf16 autocast: CUDA only, channels_last)."""
    set_determinism(cfg.threads, cfg.deterministic)
    _seed_all(cfg.seed + rank)  # ranks draw different crops / dropout masks
    cuda = dev.type == "cuda"
    if cuda:
        torch.cuda.set_device(dev)  # nccl collectives (all_gather_object) use the current device
        # Fixed patch size: autotuning pays off, but it picks kernels by timing, run to run.
        torch.backends.cudnn.benchmark = not cfg.deterministic
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return cfg.amp and cuda, cfg.channels_last


def _optimizer(task: nn.Module, cfg: TrainConfig) -> tuple[
        list[nn.Parameter], torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """Adam on the parameters that require grad, and its learning-rate schedule."""
    params = [p for p in task.parameters() if p.requires_grad]
    if not params:
        raise CaispError("nothing to train: the task has no parameters that require grad")
    opt = torch.optim.Adam(params, lr=cfg.lr)
    return params, opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, cfg))


def _train_step(model: nn.Module, batch: dict[str, Any], opt: torch.optim.Optimizer,
                sched: torch.optim.lr_scheduler.LRScheduler, params: list[nn.Parameter],
                grad_clip: float | None, dev: torch.device, amp: bool, step: int) -> dict[str, float]:
    """Optimizer step number `step`; returns the loss and its terms, means over all ranks."""
    with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
        loss, logs = model(batch)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    # One sync per step: the global mean loss and terms, checked before the update so that a
    # non-finite loss never reaches the weights, and every rank stops at the same step.
    names = list(logs)
    vals = torch.stack([loss.detach().float().reshape(())]
                       + [torch.as_tensor(logs[k], device=dev).float().reshape(()) for k in names])
    if get_world_size() > 1:
        dist.all_reduce(vals)
        vals /= get_world_size()
    values = dict(zip(["loss", *names], vals.tolist()))
    if not math.isfinite(values["loss"]):
        raise CaispError(f"loss became {values['loss']} at step {step}")
    if grad_clip is not None:
        torch.nn.utils.clip_grad_norm_(params, grad_clip)
    opt.step()
    sched.step()
    return values


def _fit(task: nn.Module, train_set: Dataset, val_set: Dataset | None, cfg: TrainConfig,
         dev: torch.device, on_step: Callable[[int, dict[str, float]], None] | None) -> dict[str, Any]:
    rank, world = get_rank(), get_world_size()
    # Raised on every rank alike, before any collective, so that no rank waits for another.
    if cfg.batch_size % world:
        raise CaispError(f"batch_size {cfg.batch_size} is the global batch and must be divisible by "
                         f"the {world} processes of torchrun")
    amp, channels_last = _backend(cfg, dev, rank)
    task.to(dev)
    if channels_last:
        task.to(memory_format=torch.channels_last)
    params, opt, sched = _optimizer(task, cfg)
    resuming = cfg.state_path is not None and cfg.state_path.is_file()
    run = ResumeState.load(cfg.state_path, task, opt, sched, cfg.seed) if resuming else ResumeState()
    start_step = run.step
    # DDP only sees parameters that require grad, so a frozen CAS costs no communication.
    model = task if world == 1 else DistributedDataParallel(
        task, device_ids=[dev.index] if dev.type == "cuda" else None, find_unused_parameters=False)
    data, val_loader, steps_per_epoch = _loaders(train_set, val_set, cfg, run.step, dev)
    val_every = cfg.val_every or steps_per_epoch
    live = _Live(cfg.log_dir if rank == 0 else None, run.step, resuming)
    tag = f"{cfg.label}: " if cfg.label else ""
    progress = Progress(cfg.steps, tag + "train: step {n}/{total}, loss {loss:.4g}, {rate:.1f} images/s",
                        initial=run.step, desc="train", unit="step", per_unit=cfg.batch_size,
                        items="images", enabled=rank == 0 and cfg.progress, bar=not cfg.label)
    model.train()
    try:
        while run.step < cfg.steps:
            batch = _to_device(next(data), dev, channels_last)
            lr = opt.param_groups[0]["lr"]  # the step's own: sched.step() moves it
            values = _train_step(model, batch, opt, sched, params, cfg.grad_clip, dev, amp, run.step + 1)
            run.step += 1
            run.log.add(values)
            progress.update(loss=values["loss"])
            if run.step % val_every == 0 or run.step == cfg.steps:
                val_psnr = _validate(task, val_loader, dev, amp, channels_last, cfg.val_tile, cfg.val_overlap)
                run.metrics = {"train_loss": run.log.mean("loss"), "val_psnr": val_psnr}
                live.log(run.step, {**{f"train/{k}": run.log.mean(k) for k in values}, "lr": lr,
                                    **({"val/psnr": val_psnr} if val_loader is not None else {})})
                if rank == 0 and not math.isnan(val_psnr):
                    progress.write(f"{tag}step {run.step}: train loss {run.metrics['train_loss']:.4g}, "
                                   f"val PSNR {val_psnr:.2f} dB")
                run.log.clear()
            if cfg.state_path is not None and (run.step % cfg.ckpt_every == 0 or run.step == cfg.steps):
                run.save(cfg.state_path, task, opt, sched)
            if on_step is not None:
                on_step(run.step, values)
    finally:
        progress.close()
        live.end()
    if world > 1:
        dist.barrier()  # when fit returns anywhere, rank 0's files are complete
    return {"step": run.step, "start_step": start_step, **run.metrics}

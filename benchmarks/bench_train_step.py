"""FLOPs and time of one training step of the paper's models: the input of the H100 extrapolation.

    python benchmarks/bench_train_step.py [--patch 448] [--width 32] [--cpu-batch 2] [--peak-tflops 989]

For each training kind of the paper's graph (CAS-Net and ACN at batch 64, ISP-Net at batch 32,
compression-aware fine-tuning with the U-Net CAS frozen or updated at batch 16; `caisp.losses`'
tasks, L1, Adam): the FLOPs of one step (forward + backward, `FlopCounterMode` on batch 1 times the
batch, so that the CPU needs little memory) and its measured time: on CUDA at the real batch with
bf16 autocast + channels_last, on the CPU in fp32 + channels_last at `--cpu-batch` crops scaled to
the real batch (as caisp/train.py trains). Writes benchmarks/results/train_step.json and .md.

`paper_schedule()` and `training_time()` turn the figures into the training time of the paper's
schedule (FiveK: 487 raws, 390 training images); `fivek_rehearsal.py` imports them.
"""
from __future__ import annotations

import argparse
import datetime
import json
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# Batch sizes of params-paper.yaml; epochs of the paper (Section IV.B), one crop per image per epoch.
BATCH = {"cas_unet": 64, "cas_acn": 64, "isp": 32, "finetune": 16, "finetune_unfrozen": 16}
EPOCHS = {"cas": 30, "isp": 30, "finetune": 10}


def build_task(kind: str, width: int):
    """The task (model + loss) that the pipeline trains for `kind`."""
    from caisp.losses import CasTask, CompressionAwareTask, IspTask
    from caisp.models.acn import ACN
    from caisp.models.unet import CASUNet, ISPNet

    if kind == "cas_unet":
        return CasTask(CASUNet(width))
    if kind == "cas_acn":
        return CasTask(ACN(width))
    if kind == "isp":
        return IspTask(ISPNet(width, tone_prior=False))
    if kind in ("finetune", "finetune_unfrozen"):
        return CompressionAwareTask(ISPNet(width, tone_prior=False), CASUNet(width),
                                    freeze_cas=kind == "finetune")
    raise ValueError(kind)


def make_batch(batch: int, patch: int, device, channels_last: bool) -> dict:
    import torch

    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return {k: torch.rand(batch, 3, patch, patch, device=device).contiguous(memory_format=fmt)
            for k in ("raw", "srgb", "coded")}


def count_flops(kind: str, width: int, patch: int) -> float:
    """FLOPs of forward + backward of one crop (fp32 on the CPU; the count does not depend on it)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    torch.manual_seed(0)
    task = build_task(kind, width)
    batch = make_batch(1, patch, "cpu", False)
    with FlopCounterMode(display=False) as counter:
        loss, _ = task(batch)
        loss.backward()
    return float(counter.get_total_flops())


def time_step(kind: str, width: int, patch: int, batch: int, device: str, steps: int, warmup: int,
              deterministic: bool) -> tuple[float, float]:
    """(seconds per step at `batch`, peak CUDA memory GiB or 0) of Adam steps, as caisp/train.py runs them."""
    import torch

    from caisp.device import set_determinism

    torch.manual_seed(0)
    cuda = device == "cuda"
    set_determinism(None, deterministic)
    if cuda:
        torch.backends.cudnn.benchmark = not deterministic
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        torch.cuda.reset_peak_memory_stats()
    task = build_task(kind, width).to(device)
    task.to(memory_format=torch.channels_last)
    task.train()
    opt = torch.optim.Adam([p for p in task.parameters() if p.requires_grad], lr=1e-4)
    data = make_batch(batch, patch, device, True)

    def step() -> None:
        with torch.autocast(device, dtype=torch.bfloat16, enabled=cuda):
            loss, _ = task(data)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(warmup):
        step()
    if cuda:
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if cuda:
        torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else 0.0
    return (time.perf_counter() - t0) / steps, peak


def paper_schedule(n_train: int = 390, qfs: int = 2, seeds: int = 3,
                   variants: tuple[str, ...] = ("unet", "acn", "djs", "kornia"),
                   unfrozen: tuple[str, ...] = ("unet", "acn")) -> list[dict]:
    """The training runs of params-paper.yaml's graph: {phase, kind, runs, steps, batch}. Steps =
    epochs x n_train / batch (390 FiveK training images: CAS 183, ISP 366, fine-tuning 244).
    Costs are the measured kinds': an ACN in the loss and the controls are counted as the U-Net CAS
    (upper bound) and plain ISP training; the analytic DJS / kornia simulators as plain ISP (lower bound)."""
    def steps(epochs: int, batch: int) -> int:
        return round(epochs * n_train / batch)

    rows = [{"phase": f"train_cas {v}", "kind": f"cas_{v}", "runs": qfs,
             "steps": steps(EPOCHS["cas"], BATCH[f"cas_{v}"]), "batch": BATCH[f"cas_{v}"]}
            for v in variants if v in ("unet", "acn")]
    rows.append({"phase": "pretrain_isp", "kind": "isp", "runs": 1,
                 "steps": steps(EPOCHS["isp"], BATCH["isp"]), "batch": BATCH["isp"]})
    ft = {"steps": steps(EPOCHS["finetune"], BATCH["finetune"]), "batch": BATCH["finetune"]}
    rows.append({"phase": "finetune_control (agnostic, identity)", "kind": "isp", "runs": 2 * seeds, **ft})
    learned = sum(v in ("unet", "acn") for v in variants)
    rows.append({"phase": "finetune (U-Net, ACN CAS)", "kind": "finetune", "runs": qfs * learned * seeds, **ft})
    rows.append({"phase": "finetune (DJS, kornia)", "kind": "isp", "runs": qfs * (len(variants) - learned) * seeds,
                 **ft})
    rows.append({"phase": "finetune_unfrozen", "kind": "finetune_unfrozen", "runs": qfs * len(unfrozen) * seeds, **ft})
    return [r for r in rows if r["runs"]]


def training_time(flops_per_crop: dict[str, float], rate: float | dict[str, float],
                  schedule: list[dict] | None = None) -> dict:
    """Seconds of every phase of `schedule` (default: the paper's on FiveK) at `rate` FLOP/s, one
    number (assumed, e.g. 40 % of peak) or one per kind (measured); compute only, no data loading."""
    rows = []
    for r in schedule or paper_schedule():
        flops = flops_per_crop[r["kind"]] * r["batch"] * r["steps"] * r["runs"]
        per = rate[r["kind"]] if isinstance(rate, dict) else rate
        rows.append({**r, "flops": flops, "seconds": flops / per})
    return {"rows": rows, "total_s": sum(r["seconds"] for r in rows)}


def load_results(path: Path = ROOT / "benchmarks" / "results" / "train_step.json") -> dict:
    """train_step.json as {"flops_per_crop": {kind: FLOPs}, "rate": {kind: FLOP/s measured}, "device"}."""
    data = json.loads(Path(path).read_text())
    kinds = data["kinds"]
    return {"device": data["device"], "flops_per_crop": {k: v["flops_per_crop"] for k, v in kinds.items()},
            "rate": {k: v["tflops"] * 1e12 for k, v in kinds.items()}}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kinds", nargs="+", default=list(BATCH), choices=list(BATCH))
    ap.add_argument("--patch", type=int, default=448)
    ap.add_argument("--width", type=int, default=32, help="base width (paper: 32)")
    ap.add_argument("--cpu-batch", type=int, default=2, help="crops per timed step on the CPU")
    ap.add_argument("--steps", type=int, default=None, help="timed steps (default: CUDA 10, CPU 2)")
    ap.add_argument("--no-deterministic", action="store_true",
                    help="cuDNN autotuning instead of train.deterministic=true (the paper params' default)")
    ap.add_argument("--peak-tflops", type=float, default=989.0, help="device peak (H100 SXM dense bf16: 989)")
    ap.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results")
    args = ap.parse_args(argv)
    import torch

    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    name = torch.cuda.get_device_name() if cuda else f"CPU {platform.machine()}, {torch.get_num_threads()} threads"
    steps = args.steps or (10 if cuda else 2)
    kinds = {}
    for kind in args.kinds:
        flops = count_flops(kind, args.width, args.patch)
        batch = BATCH[kind] if cuda else args.cpu_batch  # the CPU cannot hold 64 crops of 448 in time
        s, peak = time_step(kind, args.width, args.patch, batch, device, steps, 2 if cuda else 1,
                            not args.no_deterministic)
        per_crop = s / batch
        row = {"batch": BATCH[kind], "timed_batch": batch, "flops_per_crop": flops,
               "flops_per_step": flops * BATCH[kind], "s_per_step": per_crop * BATCH[kind],
               "crops_per_s": 1 / per_crop, "tflops": flops / per_crop / 1e12, "peak_gib": peak}
        row["share_of_peak"] = row["tflops"] / args.peak_tflops
        kinds[kind] = row
        print(f"{kind}: {flops * BATCH[kind] / 1e12:.2f} TFLOP/step, {row['s_per_step']:.3f} s/step "
              f"(timed at batch {batch}), {row['crops_per_s']:.1f} crops/s, {row['tflops']:.2f} TFLOP/s "
              f"({100 * row['share_of_peak']:.1f} % of {args.peak_tflops:g}), peak {peak:.1f} GiB", flush=True)
    est = training_time({k: v["flops_per_crop"] for k, v in kinds.items()},
                        {k: v["tflops"] * 1e12 for k, v in kinds.items()}) if set(kinds) == set(BATCH) else None
    out = {"date": str(datetime.date.today()), "device": name, "torch": torch.__version__, "patch": args.patch,
           "width": args.width, "amp_bf16": cuda, "channels_last": True, "deterministic": not args.no_deterministic,
           "timed_steps": steps, "peak_tflops": args.peak_tflops, "kinds": kinds, "paper_training": est}
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "train_step.json").write_text(json.dumps(out, indent=1) + "\n")
    lines = ["# One training step of the paper's models", "",
             f"Written by `benchmarks/bench_train_step.py` on {out['date']}: {name}, torch {torch.__version__}, "
             f"{args.patch}x{args.patch} crops, base width {args.width}, "
             + ("bf16 autocast + channels_last" if cuda else f"fp32 + channels_last, timed at {args.cpu_batch} crops and scaled")
             + f", deterministic kernels {'on' if out['deterministic'] else 'off'}, {steps} timed steps. "
             "FLOPs: FlopCounterMode (convolutions and matmuls, forward + backward) on one crop x the batch.", "",
             "| kind | batch | TFLOP/step | s/step | crops/s | TFLOP/s | share of peak | peak GiB |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for k, r in kinds.items():
        lines.append(f"| {k} | {r['batch']} | {r['flops_per_step'] / 1e12:.2f} | {r['s_per_step']:.3f} | "
                     f"{r['crops_per_s']:.1f} | {r['tflops']:.2f} | {100 * r['share_of_peak']:.1f} % | {r['peak_gib']:.1f} |")
    if est:
        lines += ["", f"Paper schedule on FiveK (390 training images) at these measured rates, compute only: "
                  f"{est['total_s'] / 3600:.2f} h", "", "| phase | runs | steps | batch | PFLOP | hours |",
                  "| --- | ---: | ---: | ---: | ---: | ---: |"]
        lines += [f"| {r['phase']} | {r['runs']} | {r['steps']} | {r['batch']} | {r['flops'] / 1e15:.1f} | "
                  f"{r['seconds'] / 3600:.2f} |" for r in est["rows"]]
    (args.results / "train_step.md").write_text("\n".join(lines) + "\n")
    if est:
        print(f"paper schedule, compute only: {est['total_s'] / 3600:.2f} h")
    return out


if __name__ == "__main__":
    main()

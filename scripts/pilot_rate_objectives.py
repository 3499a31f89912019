"""Pilot of the two rate objectives issue 22 had not tried, outside the DVC graph: does the distortion
measured *after* compression, or a longer fine-tuning, let a rate-aware ISP save bits at equal
PSNR(c(f(x)), y)?

From the pretrained ISP of a regime (the graph's own model: run `dvc repro` first), per fine-tuning
length and seed, four fine-tunings that differ only in their loss (same start, seeds, crops, steps and
learning rate as the graph's agnostic control):

- control: lambda_isp * |f(x) - y|                       (the graph's control-agnostic)
- before:  lambda_isp * |f(x) - y| + lambda_rate * R      (the graph's rate axis)
- after-0: lambda_isp * |DJS(f(x)) - y|                   (distortion after JPEG, no rate term)
- after:   lambda_isp * |DJS(f(x)) - y| + lambda_rate * R (the rate-distortion objective of a codec)

DJS is the graph's simulator at the training QF and R the graph's fitted size estimate. Each is scored
with the real libjpeg-turbo encoder over rate.sweep_qfs on the whole test photos, against the control
of the same length: dPSNR(c(f(x)), y) and dBPP at the training QF and BD-rate over the sweep, with
bootstrap intervals over test photos and seeds. A pilot, not a stage: its runs are not cached and its
report (reports/pilots/) is not read by the report stage.

    python scripts/pilot_rate_objectives.py --regime today --qf 80 --steps 100 400 --lambda-rate 0.003
"""
from __future__ import annotations

import argparse
import json
import math
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from caisp.losses import CompressionAwareTask, l1  # noqa: E402

CONFIGS = ("control", "before", "after-0", "after")


class DistortionAfterTask(CompressionAwareTask):
    """lambda_comp * |g(f(x)) - y|_1 (+ lambda_rate * R(f(x)) / pixels): the distortion that evaluation
    measures, PSNR(c(f(x)), y), through the frozen simulator g, with no term on f(x) itself."""

    def forward(self, batch):
        x, y = batch["raw"], batch["srgb"]
        out = self.net(x)
        l_after = l1(self.cas(out), y)
        loss, logs = self.lambda_comp * l_after, {"l_after": l_after.detach()}
        if self.rate is not None:
            l_rate = self.rate.bpp(out.clamp(0, 1)).mean()
            logs["l_rate"] = l_rate.detach()
            loss = loss + self.lambda_rate * l_rate
        return loss, logs


def _train(p, seed: int, regime: str, qf: int, config: str, steps: int, lam: float, work: str, *, label: str = ""):
    """One fine-tuning of `config`; saves its ISP under `work` and returns the loop's result."""
    from caisp import rate as r
    from caisp.checkpoint import load_model, save_model
    from caisp.codecs import JPEG, Point
    from caisp.pipeline import layout
    from caisp.pipeline.fitting import datasets
    from caisp.pipeline.isp import load_cas
    from caisp.pipeline.layout import Run
    from caisp.train import TrainConfig, fit

    q, f, point = p.regime(regime), p.finetune, Point(JPEG.name, qf)
    isp, base = load_model(layout.isp_path(Run(layout.PRETRAINED, regime=regime), p.pretrain_seed(regime, seed)))
    rate = r.load(layout.rate_model(point)) if config in ("before", "after") else None
    lam_rate = lam if rate is not None else 0.0
    if config.startswith("after"):
        task = DistortionAfterTask(isp.train(), load_cas(layout.cas_path(point, "djs")), lambda_isp=0.0,
                                   lambda_comp=p.lambda_isp, rate=rate, lambda_rate=lam_rate)
    else:
        task = CompressionAwareTask(isp.train(), None, lambda_isp=p.lambda_isp, lambda_comp=0.0, rate=rate,
                                    lambda_rate=lam_rate)
    train, val = datasets(q, None, f.batch_size, CompressionAwareTask.batch_keys())
    name = f"{config}-{steps}-seed{seed}"
    cfg = TrainConfig(steps=steps, batch_size=f.batch_size, lr=p.isp.lr * f.lr_scale, seed=seed,
                      num_workers=p.train.num_workers, ckpt_every=10**9, val_every=steps, device=p.train.device,
                      amp=p.train.amp, lr_decay=p.train.lr_decay, grad_clip=f.grad_clip,
                      warmup_steps=min(p.train.warmup_steps, steps // 4), threads=p.train.threads,
                      deterministic=p.train.deterministic, val_tile=p.evaluate.tile, val_overlap=p.evaluate.overlap,
                      log_dir=Path(work) / "logs" / name, state_path=Path(work) / "states" / f"{name}.pt", label=label)
    result = fit(task, train, val, cfg)
    save_model(Path(work) / f"{name}.pt", isp, {**base, "stage": "pilot", "config": config, "seed": seed})
    return {k: v for k, v in result.items() if isinstance(v, (int, float, str)) or v is None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--regime", default="today")
    ap.add_argument("--qf", type=int, default=80)
    ap.add_argument("--steps", type=int, nargs="+", default=[100, 400])
    ap.add_argument("--lambda-rate", type=float, default=0.003)
    ap.add_argument("--seeds", type=int, nargs="+", default=None, help="default: params.yaml seeds")
    ap.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=CONFIGS)
    ap.add_argument("--work", default="/tmp/caisp-pilot", help="its models, logs and resume states")
    ap.add_argument("--out", default=str(ROOT / "reports" / "pilots"))
    a = ap.parse_args()

    import torch

    from caisp.checkpoint import load_model
    from caisp.codecs import JPEG, Point
    from caisp.device import resolve_device, set_determinism
    from caisp.evaluate import evaluate_isps
    from caisp.params import load_params
    from caisp.pipeline import layout
    from caisp.pipeline.evaluation import test_set
    from caisp.pipeline.fitting import run_seeds
    from caisp.report import _bd, _ci
    from caisp.stats import bd_bootstrap, compare

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_develop import cpu_description

    start = time.time()
    p = load_params(ROOT / "params.yaml")
    seeds = a.seeds if a.seeds is not None else list(p.seeds)
    configs = ["control", *[c for c in a.configs if c != "control"]]
    work = Path(a.work) / f"{a.regime}-qf{a.qf}-{a.lambda_rate:g}"
    shutil.rmtree(work, ignore_errors=True)  # fresh: a resume state of other params would be taken up
    work.mkdir(parents=True)
    val = {}
    for steps in a.steps:
        for config in configs:
            res = run_seeds(_train, p, seeds, a.regime, a.qf, config, steps, a.lambda_rate, str(work))
            val[(config, steps)] = [r.get("val_psnr") for r in res.values()]
            print(f"{config} x {steps} steps: val PSNR {val[(config, steps)]}", flush=True)
    nets = {(f"{c}-{s}", seed): load_model(work / f"{c}-{s}-seed{seed}.pt")[0].eval()
            for s in a.steps for c in configs for seed in seeds}
    points = [Point(JPEG.name, qf) for qf in sorted(set(p.rate.sweep_qfs) | {a.qf})]
    set_determinism(p.train.threads, p.train.deterministic)
    with torch.no_grad():
        df = evaluate_isps(nets, test_set(p.regime(a.regime)), points=points,
                           settings={JPEG.name: p.codec_settings(JPEG.name)}, device=resolve_device(p.train.device),
                           tile=p.evaluate.tile, overlap=p.evaluate.overlap, workers=p.evaluate.workers)
    # the independent unit is the source photo (a stereo pair is one), as in the graph's statistics
    df.insert(df.columns.get_loc("stem") + 1, "source", df.stem.map(layout.sources()))
    b = p.evaluate
    rows, summary = [], {}
    for s in a.steps:
        ctl = df[df.model == f"control-{s}"]
        curve = ctl.groupby("qf")[["bpp", "psnr_y"]].mean()
        lo, hi = curve.iloc[0], curve.iloc[-1]
        slope = (hi.psnr_y - lo.psnr_y) / (100 * math.log(hi.bpp / lo.bpp))  # dB per % of bits, as the report
        summary[f"control-{s}"] = {"psnr_y": float(ctl[ctl.qf == a.qf].psnr_y.mean()),
                                   "bpp": float(ctl[ctl.qf == a.qf].bpp.mean()), "encoder_db_per_pct": slope}
        rows.append(f"| {s} | control | — | — | — | {slope:.4f} (the encoder's, over the sweep) |")
        for c in configs[1:]:
            t = df[df.model == f"{c}-{s}"]
            vs = compare(t, ctl, qf=a.qf, paired_seeds=True, n_boot=b.bootstrap, seed=p.seed,
                         bd_min_overlap=b.bd_min_overlap)
            bd = bd_bootstrap(t, ctl, "psnr_y", n_boot=b.bootstrap, seed=p.seed, min_overlap=b.bd_min_overlap)
            dp, db = vs["d_psnr_y"]["mean"], vs["d_bpp_pct"]["mean"]
            trade = f"{dp / db:.3f}" if dp is not None and db is not None and db < 0 else "—"
            summary[f"{c}-{s}"] = {"d_psnr_y": vs["d_psnr_y"], "d_bpp_pct": vs["d_bpp_pct"], "bd_rate": bd}
            rows.append(f"| {s} | {c} | {_ci(vs['d_psnr_y'])} | {_ci(vs['d_bpp_pct'], 2, ' %')} "
                        f"| {_bd(bd)} | {trade} |")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    cpu = cpu_description()
    command = "python scripts/pilot_rate_objectives.py " + " ".join(sys.argv[1:])
    n_photos = int(df.source.nunique())
    wall = time.time() - start
    lines = [f"# Pilot: rate objectives, regime `{a.regime}`, QF {a.qf}, λ_rate {a.lambda_rate:g}", "",
             f"<!-- Generated by `{command}` on commit {commit} ({cpu}, train.threads {p.train.threads}, "
             f"train.parallel_runs {p.train.parallel_runs}, "
             f"{wall / 60:.1f} min wall). Not read by the report stage. -->", "",
             __doc__.split("\n\n")[1].replace("\n", " "), "", __doc__.split("\n\n")[2], "",
             f"Against the control of the same length, {n_photos} test photos × {len(seeds)} seeds {seeds}, "
             "95 % bootstrap intervals over photos and seeds (libjpeg-turbo; BD-rate over QF "
             f"{', '.join(str(pt.quality) for pt in points)} at equal PSNR(c(f(x)), y); negative = fewer bytes).", "",
             "| fine-tuning steps | objective | ΔPSNR(c(f(x)), y) at the QF (dB) | ΔBPP at the QF | BD-rate (PSNR) "
             "| dB given up per % of bits |", "|---|---|---|---|---|---|", *rows, "",
             "A run saves bits at equal PSNR only if it gives up fewer dB per % of bits than the encoder does "
             "along its own curve (the control's row).", ""]
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"rate_objectives-{a.regime}-qf{a.qf}"
    (out / f"{stem}.md").write_text("\n".join(lines))
    (out / f"{stem}.json").write_text(json.dumps({"command": command, "commit": commit, "cpu": cpu, "wall_s": wall,
                                                  "seeds": seeds, "n_photos": n_photos,
                                                  "val_psnr": {f"{c}-{s}": v for (c, s), v in val.items()},
                                                  "summary": summary}, indent=1, default=float))
    print("\n".join(lines))


if __name__ == "__main__":
    main()

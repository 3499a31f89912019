"""Pilot, outside the DVC graph: how much does aware - fine-tuned control depend on which simulator g
the ISP was fine-tuned with?

The graph trains each QF's learned simulator once (seed `seed`), and its intervals resample test
photos, fine-tuning seeds and pretrainings, never the simulator's own training. A rerun on another
machine, whose last bits differ, moved the U-Net's aware - control from -0.05 to -0.02 dB, outside
the rerun's interval. This pilot trains the simulator again with other seeds (the graph's own
stage code, `run_train_cas` and `run_finetune`, in a scratch folder that links the graph's data and
pretrained ISPs), fine-tunes the graph's pretrained ISPs with each, and compares every one with the
graph's own fine-tuned controls exactly as the evaluate stage does. It then pools them: a three-way
bootstrap over simulator seeds, fine-tuning seeds and test photos, the interval the graph would give
if each fine-tuning seed had trained its own simulator.

    python scripts/pilot_cas_seeds.py --regime paper --variant unet --cas-seeds 1 2
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def bootstrap3(d: np.ndarray, n_boot: int, seed: int, level: float = 0.95) -> dict:
    """Mean of a (simulator seeds x fine-tuning seeds x photos) array of paired differences and its
    percentile interval, the three axes resampled independently with replacement."""
    d = np.asarray(d, dtype=float)
    k, s, n = d.shape
    rng = np.random.default_rng(seed)
    means = np.empty(n_boot)
    for b in range(n_boot):
        means[b] = d[np.ix_(rng.integers(0, k, k), rng.integers(0, s, s), rng.integers(0, n, n))].mean()
    alpha = (1 - level) / 2
    lo, hi = np.quantile(means, [alpha, 1 - alpha])
    return {"mean": float(d.mean()), "lo": float(lo), "hi": float(hi), "n_sims": k, "n_seeds": s, "n_photos": n}


def _scratch(work: Path, regime: str) -> Path:
    """A folder the stage code can run in: the graph's data and pretrained ISPs linked, all else its own."""
    shutil.rmtree(work, ignore_errors=True)  # fresh: a resume state of another run would be taken up
    pre = work / "models" / "isp" / regime / "pretrained"
    pre.parent.mkdir(parents=True)
    (work / "data").symlink_to(ROOT / "data")
    pre.symlink_to(ROOT / "models" / "isp" / regime / "pretrained")
    return work


def _train(p, regime: str, variant: str, cas_seed: int, work: Path) -> dict:
    """The simulator of every QF trained with `cas_seed`, then the aware ISPs fine-tuned with it."""
    from caisp.codecs import JPEG, Point
    from caisp.pipeline.cas import run_train_cas
    from caisp.pipeline.isp import run_finetune

    here = os.getcwd()
    os.chdir(work)  # layout's paths are relative; spawned seed runs start in this folder too
    try:
        summaries = {}
        for qf in p.qfs:
            point = Point(JPEG.name, qf)
            summaries[qf] = run_train_cas(dataclasses.replace(p, seed=cas_seed), point, variant)
            run_finetune(p, regime, point, variant)
        return summaries
    finally:
        os.chdir(here)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--regime", default="paper")
    ap.add_argument("--variant", default="unet")
    ap.add_argument("--cas-seeds", type=int, nargs="+", default=[1, 2],
                    help="simulator seeds beside the graph's own (params.yaml seed)")
    ap.add_argument("--work", default="/tmp/caisp-cas-seeds", help="its simulators, ISPs, logs and states")
    ap.add_argument("--out", default=str(ROOT / "reports" / "pilots"))
    ap.add_argument("--reuse", action="store_true",
                    help="evaluate the simulators and ISPs a previous run left under --work, without training")
    a = ap.parse_args()

    from caisp.checkpoint import load_model
    from caisp.codecs import JPEG, Point
    from caisp.params import load_params
    from caisp.pipeline import layout
    from caisp.pipeline.evaluation import _evaluate_models, at_codec, read_rows
    from caisp.pipeline.layout import Run
    from caisp.report import _ci
    from caisp.stats import _matrix, compare_all

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_develop import cpu_description

    start = time.time()
    os.chdir(ROOT)
    p = load_params("params.yaml")
    if a.variant not in p.cas.variants:
        raise SystemExit(f"--variant {a.variant}: not in this graph's cas.variants {p.cas.variants}")
    if p.seed in a.cas_seeds:
        raise SystemExit(f"--cas-seeds: {p.seed} is the graph's own simulator seed, already measured")
    regime, variant, b = a.regime, a.variant, p.evaluate
    controls = read_rows(layout.controls_eval(regime) / "per_image.csv")
    # the graph's own simulator and aware ISPs: its stage outputs, read, not rerun
    sims = {p.seed: {qf: json.loads((layout.REPORTS / "cas" / f"qf{qf}-{variant}" / "summary.json").read_text())
                     for qf in p.qfs}}
    rows = {(p.seed, qf): read_rows(layout.REPORTS / "eval" / regime / f"aware-qf{qf}-{variant}" / "per_image.csv")
            for qf in p.qfs}
    for k in a.cas_seeds:
        work = Path(a.work) / f"cas-seed{k}"
        if a.reuse:
            sims[k] = {qf: json.loads((work / "reports" / "cas" / f"qf{qf}-{variant}" / "summary.json").read_text())
                       for qf in p.qfs}
        else:
            sims[k] = _train(p, regime, variant, k, _scratch(work, regime))
        for qf in p.qfs:
            run = Run("aware", Point(JPEG.name, qf), variant, regime)
            nets = {("aware", s): load_model(work / layout.isp_path(run, s))[0] for s in p.seeds}
            rows[(k, qf)] = _evaluate_models(p.regime(regime), nets, work / "eval" / run.name,
                                             ssim_points=[Point(JPEG.name, qf)])
        print(f"simulator seed {k}: trained, fine-tuned with and evaluated ({time.time() - start:.0f} s)", flush=True)

    keys = ("d_psnr", "d_specific")
    table, pooled, summary = [], {}, {}
    cas_seeds = [p.seed, *a.cas_seeds]
    for qf in p.qfs:
        mats = {key: [] for key in keys}
        for k in cas_seeds:
            s = compare_all(at_codec(rows[(k, qf)], "jpeg"), at_codec(controls, "jpeg"), aware="aware", qf=qf,
                            n_boot=b.bootstrap, seed=p.seed, bd_min_overlap=b.bd_min_overlap)
            sim = sims[k][qf]
            vs, pre = s["vs"]["agnostic"], s["vs"]["pretrained"]
            summary[f"qf{qf}-cas{k}"] = {"cas_psnr": sim["psnr"], "gate_margin_db": sim["gate"]["val_margin_db"],
                                         **{key: vs[key] for key in (*keys, "d_psnr_before", "d_bpp_pct")},
                                         "vs_pretrained": pre["d_psnr"]}
            own = " (the graph's)" if k == p.seed else ""
            table.append(f"| {qf} | {k}{own} | {sim['psnr']:.2f} | {sim['gate']['val_margin_db']:+.2f} "
                         f"| {_ci(pre['d_psnr'])} | {_ci(vs['d_psnr'])} | {_ci(vs['d_specific'])} "
                         f"| {_ci(vs['d_bpp_pct'], 2, ' %')} |")
            a_rows, c_rows = rows[(k, qf)], controls[controls.model == "agnostic"]
            at_a, at_c = a_rows[(a_rows.qf == qf) & (a_rows.codec == "jpeg")], c_rows[(c_rows.qf == qf) & (c_rows.codec == "jpeg")]
            psnr = _matrix(at_a, at_c, "psnr", True)
            mats["d_psnr"].append(psnr.to_numpy())
            mats["d_specific"].append((psnr - _matrix(at_a, at_c, "psnr_before", True)).to_numpy())
        means = [summary[f"qf{qf}-cas{k}"]["d_psnr"]["mean"] for k in cas_seeds]
        pooled[qf] = {key: bootstrap3(np.stack(mats[key]), b.bootstrap, p.seed) for key in keys}
        pooled[qf]["between_sims_sd"] = float(np.std(means, ddof=1))
        g = summary[f"qf{qf}-cas{p.seed}"]["d_psnr"]
        table.append(f"| {qf} | pooled over {len(cas_seeds)} | — | — | — | {_ci(pooled[qf]['d_psnr'])} "
                     f"| {_ci(pooled[qf]['d_specific'])} | — |")
        pooled[qf]["graph_half_width"] = (g["hi"] - g["lo"]) / 2
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    command = "python scripts/pilot_cas_seeds.py " + " ".join(sys.argv[1:])
    wall = time.time() - start
    n_photos = int(controls.source.nunique())
    spread = "; ".join(f"QF {qf}: between-simulator SD of the mean {pooled[qf]['between_sims_sd']:.3f} dB, "
                       f"pooled interval half-width {(pooled[qf]['d_psnr']['hi'] - pooled[qf]['d_psnr']['lo']) / 2:.3f} "
                       f"dB against the graph's {pooled[qf]['graph_half_width']:.3f}" for qf in p.qfs)
    lines = [f"# Pilot: the simulator's training seed, regime `{regime}`, {variant}", "",
             f"<!-- Generated by `{command}` on commit {commit} ({cpu_description()}, train.threads "
             f"{p.train.threads}, train.parallel_runs {p.train.parallel_runs}, {wall / 60:.1f} min wall). "
             "Not read by the report stage. -->", "",
             " ".join(__doc__.split("\n\n")[1].split()), "",
             f"Each row: the aware ISPs fine-tuned with the simulator of that seed (fine-tuning seeds {list(p.seeds)}, "
             f"each from its own pretraining), {n_photos} test photos, 95 % bootstrap intervals over photos and "
             "seeds, against the graph's pretrained ISP and fine-tuned control (λ_comp = 0) at the training QF; "
             "the pooled rows resample the simulator seeds too.", "",
             "| QF | simulator seed | its PSNR(g(y), c(y)), test (dB) | its validation margin over the better of "
             "identity and blur (dB) | aware − pretrained | aware − fine-tuned control | of which compression-specific "
             "| ΔBPP against the control |", "|---|---|---|---|---|---|---|---|", *table, "", spread + ".", ""]
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"cas_seeds-{regime}-{variant}"
    (out / f"{stem}.md").write_text("\n".join(lines))
    (out / f"{stem}.json").write_text(json.dumps({"command": command, "commit": commit, "cpu": cpu_description(),
                                                  "wall_s": wall, "cas_seeds": cas_seeds, "seeds": list(p.seeds),
                                                  "n_photos": n_photos, "runs": summary,
                                                  "pooled": {str(q): v for q, v in pooled.items()}}, indent=1))
    print("\n".join(lines))


if __name__ == "__main__":
    main()

"""Evidence for "the aware ISP beats the control": paired differences per (seed, test photo), their
mean with a bootstrap interval over photos and seeds, the compression-specific part of the gain, and
the rate-distortion summary (ΔPSNR and ΔBPP at equal QF, BD-PSNR, BD-rate only where it is defined).

Every aware run with seed s is paired with the control run with seed s (same pretrained start, same
crops in the same order); a pretrained ISP shared by every seed has no seed and pairs with every aware
seed, one pretrained per seed (`regimes.<name>.pretrain_per_seed`) pairs with the runs of its seed.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from caisp.bjontegaard import bd_psnr, bd_rate
from caisp.io import json_float as _f

# What each column of the evaluation's per-image rows measures; every table names one of these.
PSNR_LABELS = {
    "psnr": "PSNR(c(f(x)), c(y))",      # after compression, against the compressed ground truth
    "psnr_before": "PSNR(f(x), y)",     # before compression
    "psnr_y": "PSNR(c(f(x)), y)",       # after compression, against the uncompressed ground truth
}
CONTROL_KINDS = ("agnostic", "identity", "pretrained")


def rd_points(df: pd.DataFrame) -> pd.DataFrame:
    """Figure 5: mean (bpp, psnr) per model and QF, PSNR against the uncompressed ground truth y
    (PSNR(c(f(x)), y), column psnr_y) so that the models' curves share an axis with the 'ground_truth'
    curve PSNR(c(y), y). Against c(y) instead, a curve can fall as the QF rises (c(y) keeps detail the
    ISP cannot reproduce), which is no rate-distortion curve and breaks Bjontegaard's interpolation."""
    cols = ["model", "qf", "bpp", "psnr"]
    if df.empty:
        return pd.DataFrame(columns=cols)
    clean = df.replace([np.inf, -np.inf], np.nan)
    models = (clean.groupby(["model", "qf"], as_index=False)[["bpp", "psnr_y"]].mean()
              .rename(columns={"psnr_y": "psnr"}))
    gt = (clean.drop_duplicates(["stem", "qf"]).groupby("qf", as_index=False)[["bpp_gt", "psnr_gt"]].mean()
          .rename(columns={"bpp_gt": "bpp", "psnr_gt": "psnr"}).assign(model="ground_truth"))
    return pd.concat([models[cols], gt[cols]], ignore_index=True).sort_values(["model", "qf"], ignore_index=True)


def bootstrap_mean(d: np.ndarray, n_boot: int = 4000, seed: int = 0, level: float = 0.95) -> dict[str, Any]:
    """Mean of a (seeds x photos) matrix of paired differences and its percentile interval from a
    two-way bootstrap: seeds and photos are resampled independently, with replacement (photos are
    the independent test units, seeds the training noise). NaN cells (inf PSNRs) are dropped."""
    d = np.asarray(d, dtype=float)
    if d.ndim != 2 or d.size == 0:
        return {"mean": None, "lo": None, "hi": None, "n_seeds": 0, "n_photos": 0}
    d = d[:, np.all(np.isfinite(d), axis=0)]
    s, n = d.shape
    out: dict[str, Any] = {"mean": _f(d.mean()) if d.size else None, "lo": None, "hi": None,
                           "n_seeds": int(s), "n_photos": int(n)}
    if n == 0:
        return out
    rng = np.random.default_rng(seed)
    # The mean of d[rows][:, cols] is w_s' d w_n / (s n) with w the resampling counts: no copies.
    ws = np.stack([np.bincount(r, minlength=s) for r in rng.integers(0, s, size=(n_boot, s))])
    wn = np.stack([np.bincount(c, minlength=n) for c in rng.integers(0, n, size=(n_boot, n))])
    means = np.einsum("bs,sn,bn->b", ws, d, wn) / (s * n)
    alpha = (1 - level) / 2
    out["lo"], out["hi"] = (_f(v) for v in np.quantile(means, [alpha, 1 - alpha]))
    return out


def _unit(df: pd.DataFrame) -> str:
    """The independent test unit: the source photo (images of one scene, e.g. a stereo pair or the
    tiles of one photo, are averaged into one unit), else the image."""
    return "source" if "source" in df.columns else "stem"


def _matrix(aware: pd.DataFrame, control: pd.DataFrame, metric: str, paired_seeds: bool) -> pd.DataFrame:
    """(seeds x source photos) of aware - control for `metric`; rows of `aware`/`control` at one QF."""
    unit = _unit(aware)
    clean = [f.replace([np.inf, -np.inf], np.nan) for f in (aware, control)]
    a = clean[0].pivot_table(index="seed", columns=unit, values=metric, aggfunc="mean", dropna=False)
    if paired_seeds:
        c = clean[1].pivot_table(index="seed", columns=unit, values=metric, aggfunc="mean", dropna=False)
        seeds = a.index.intersection(c.index)
        d = a.loc[seeds] - c.loc[seeds, a.columns]
    else:  # one control model (the pretrained ISP): every aware seed against it
        c = clean[1].groupby(unit)[metric].mean()
        d = a - c[a.columns]
    return d


def bd_checked(ref: pd.DataFrame, test: pd.DataFrame, min_overlap: float) -> dict[str, Any]:
    """BD-PSNR always (where the rates overlap); BD-rate only where both curves rise with rate and
    their PSNR ranges overlap by >= min_overlap dB; otherwise `bd_rate_why` says why not."""
    out: dict[str, Any] = {"bd_psnr": None, "bd_rate": None, "bd_rate_why": None, "psnr_overlap": None}
    ref, test = ref.sort_values("bpp"), test.sort_values("bpp")
    try:
        out["bd_psnr"] = _f(bd_psnr(ref.bpp, ref.psnr, test.bpp, test.psnr))
    except ValueError as e:
        out["bd_psnr_why"] = str(e)
    falling = [name for name, c in (("control", ref), ("aware", test)) if np.any(np.diff(c.psnr.to_numpy()) <= 0)]
    overlap = min(ref.psnr.max(), test.psnr.max()) - max(ref.psnr.min(), test.psnr.min())
    out["psnr_overlap"] = _f(overlap)
    if falling:
        out["bd_rate_why"] = f"PSNR does not rise with rate on the {' and '.join(falling)} curve"
    elif overlap < min_overlap:
        out["bd_rate_why"] = (f"the curves overlap over {max(overlap, 0):.2f} dB of PSNR, "
                              f"less than {min_overlap:g} dB")
    else:
        out["bd_rate"] = _f(bd_rate(ref.bpp, ref.psnr, test.bpp, test.psnr))
    return out


def _deltas(at_a: pd.DataFrame, at_c: pd.DataFrame, metrics: tuple[str, ...], paired_seeds: bool, n_boot: int,
            seed: int) -> tuple[dict[str, Any], dict[str, pd.DataFrame]]:
    """Paired aware − control differences at one point (`metrics` include psnr, psnr_before and bpp):
    d_<metric>, the compression-specific part d_specific and the relative d_bpp_pct, each a
    bootstrap_mean; and the (seeds x photos) matrices they came from."""
    mats = {m: _matrix(at_a, at_c, m, paired_seeds) for m in metrics}
    out: dict[str, Any] = {f"d_{m}": bootstrap_mean(mats[m].to_numpy(), n_boot, seed) for m in metrics}
    # The compression-specific gain: what the aware ISP gains after compression beyond what it gains before.
    out["d_specific"] = bootstrap_mean((mats["psnr"] - mats["psnr_before"]).to_numpy(), n_boot, seed)
    rel = mats["bpp"] / at_c.groupby(_unit(at_c)).bpp.mean()
    out["d_bpp_pct"] = bootstrap_mean(100 * rel.to_numpy(), n_boot, seed)
    return out, mats


def compare(aware: pd.DataFrame, control: pd.DataFrame, *, qf: int, paired_seeds: bool, n_boot: int,
            seed: int, bd_min_overlap: float) -> dict[str, Any]:
    """The aware configuration against one control, at evaluation QF `qf` (and over the QF sweep)."""
    at_a, at_c = aware[aware.qf == qf], control[control.qf == qf]
    out, mats = _deltas(at_a, at_c, ("psnr", "psnr_before", "psnr_y", "ssim", "bpp"), paired_seeds, n_boot, seed)
    per_photo = mats["psnr"].mean(axis=0)
    out["photos_improved"] = int((per_photo > 0).sum())
    out["per_photo"] = {str(k): {"d_psnr": _f(v), "d_psnr_before": _f(mats["psnr_before"].mean(axis=0)[k])}
                        for k, v in per_photo.items()}
    out["per_seed"] = {str(k): _f(v) for k, v in mats["psnr"].mean(axis=1).items()}
    # Mean curves over seeds and photos, PSNR(c(f(x)), y) against BPP (rd_points' axis).
    curves = rd_points(pd.concat([aware.assign(model="aware"), control.assign(model="control")]))
    out["bd"] = bd_checked(curves[curves.model == "control"], curves[curves.model == "aware"], bd_min_overlap)
    out["bd"]["psnr"] = PSNR_LABELS["psnr_y"]
    return out


def model_means(df: pd.DataFrame, qf: int) -> dict[str, Any]:
    at = df[df.qf == qf].replace([np.inf, -np.inf], np.nan)
    cols = ["psnr", "psnr_before", "psnr_y", "ssim", "bpp"]
    out = {k: _f(at[k].mean()) for k in cols}
    seeds = at.groupby("seed")["psnr"].mean()
    out["psnr_seed_sd"] = _f(seeds.std(ddof=1)) if len(seeds) > 1 else None
    return out


def compare_all(aware_df: pd.DataFrame, controls_df: pd.DataFrame, *, aware: str, qf: int, n_boot: int = 4000,
                seed: int = 0, bd_min_overlap: float = 0.5) -> dict[str, Any]:
    """Summary of one aware configuration (all seeds) against each control kind, at its training QF."""
    a = aware_df[aware_df.model == aware]
    at = a[a.qf == qf]
    gt = at.drop_duplicates("stem")
    out: dict[str, Any] = {
        "psnr": PSNR_LABELS, "n_photos": int(at[_unit(at)].nunique()), "n_images": int(at.stem.nunique()),
        "n_seeds": int(at.seed.nunique()),
        "ground_truth": {"bpp": _f(gt.bpp_gt.mean()), "psnr_gt": _f(gt.psnr_gt.mean())},
        "models": {aware: model_means(a, qf)}, "vs": {},
    }
    present = set(controls_df.model)
    for kind in (k for k in CONTROL_KINDS if k in present):
        c = controls_df[controls_df.model == kind]
        out["models"][kind] = model_means(c, qf)
        out["vs"][kind] = compare(a, c, qf=qf, paired_seeds=bool(c.seed.notna().any()), n_boot=n_boot, seed=seed,
                                  bd_min_overlap=bd_min_overlap)
    return out


def cross_point(aware_df: pd.DataFrame, controls_df: pd.DataFrame, *, aware: str, qf: int, control: str = "agnostic",
                n_boot: int = 4000, seed: int = 0) -> dict[str, Any]:
    """The aware ISP against one control at another operating point (rows of that point's codec, at
    quality `qf`): ΔPSNR after and before compression, the compression-specific part and ΔBPP, each
    with its interval. One cell of the cross-codec table: does an ISP tuned for codec A help under B?"""
    a = aware_df[(aware_df.model == aware) & (aware_df.qf == qf)]
    c = controls_df[(controls_df.model == control) & (controls_df.qf == qf)]
    if a.empty or c.empty:
        return {"control": control, "d_psnr": bootstrap_mean(np.empty((0, 0)))}
    deltas, _ = _deltas(a, c, ("psnr", "psnr_before", "bpp"), True, n_boot, seed)
    deltas.pop("d_bpp")  # the cell reports the relative ΔBPP only
    return {"control": control, **deltas}


def _curves(df: pd.DataFrame, metric: str) -> tuple[np.ndarray, np.ndarray, list, list]:
    """(seeds x photos x qualities) arrays of bpp and `metric` (images of one photo averaged), the seeds, the photos."""
    unit = _unit(df)
    g = df.replace([np.inf, -np.inf], np.nan).groupby(["seed", unit, "qf"])[["bpp", metric]].mean()
    seeds = sorted(g.index.get_level_values(0).unique())
    units = sorted(g.index.get_level_values(1).unique())
    qfs = sorted(g.index.get_level_values(2).unique())
    full = g.reindex(pd.MultiIndex.from_product([seeds, units, qfs]))
    shape = (len(seeds), len(units), len(qfs))
    return full.bpp.to_numpy().reshape(shape), full[metric].to_numpy().reshape(shape), seeds, units


def bd_bootstrap(test: pd.DataFrame, ref: pd.DataFrame, metric: str = "psnr_y", *, n_boot: int = 4000,
                 seed: int = 0, min_overlap: float = 0.5, level: float = 0.95) -> dict[str, Any]:
    """BD-rate (%) of `test` against `ref` at equal `metric` (rows of one codec each, every seed at every
    quality of a sweep; negative: `test` needs fewer bits) on the curves averaged over seeds and photos,
    with a two-way bootstrap interval: each resample draws seeds and photos with replacement, averages
    both curves over the same draw (the runs pair by seed and photo) and computes BD-rate again. Where
    the mean curves admit no BD-rate (`bd_checked`; `min_overlap` is in dB and applies to PSNR metrics,
    other metrics need any overlap), none is given; resamples that admit none are counted in
    `n_undefined`."""
    from caisp.bjontegaard import bd_rate

    out: dict[str, Any] = {"metric": metric, "mean": None, "lo": None, "hi": None, "n_seeds": 0, "n_photos": 0}
    if test.empty or ref.empty:
        out["why"] = "no rows"
        return out
    (tb, tm, ts, tu), (rb, rm, rs, ru) = _curves(test, metric), _curves(ref, metric)
    if ts != rs or tu != ru or tb.shape != rb.shape:
        raise ValueError(f"bd_bootstrap: the curves do not pair (seeds {ts} / {rs}, photos {len(tu)} / {len(ru)})")
    keep = np.all(np.isfinite(tb) & np.isfinite(tm) & np.isfinite(rb) & np.isfinite(rm), axis=(0, 2))
    tb, tm, rb, rm = (a[:, keep] for a in (tb, tm, rb, rm))
    s, n, _ = tb.shape
    out.update(n_seeds=int(s), n_photos=int(n))
    if n == 0:
        out["why"] = "no photo has finite values"
        return out
    check = bd_checked(pd.DataFrame({"bpp": rb.mean((0, 1)), "psnr": rm.mean((0, 1))}),
                       pd.DataFrame({"bpp": tb.mean((0, 1)), "psnr": tm.mean((0, 1))}),
                       min_overlap if metric.startswith("psnr") else 0.0)
    out["mean"], out["why"] = check["bd_rate"], check["bd_rate_why"]
    if out["mean"] is None:
        return out
    rng = np.random.default_rng(seed)
    values, undefined = [], 0
    for _ in range(n_boot):
        ws = np.bincount(rng.integers(0, s, s), minlength=s) / s
        wn = np.bincount(rng.integers(0, n, n), minlength=n) / n
        curve = [np.einsum("s,snq,n->q", ws, a, wn) for a in (rb, rm, tb, tm)]
        try:
            values.append(bd_rate(*curve))
        except ValueError:  # a resample whose curve does not rise with rate
            undefined += 1
    if values:
        alpha = (1 - level) / 2
        out["lo"], out["hi"] = (_f(v) for v in np.quantile(values, [alpha, 1 - alpha]))
    out["n_undefined"] = undefined
    return out

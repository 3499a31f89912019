"""Stage `evaluate_rate` (issue 22): the rate-aware ISP and the agnostic fine-tuned control scored
with the real encoders (libjpeg-turbo's baseline and JPEG's encoder-side anchors, `rate.anchors`) over
the QF sweep: BD-rates with bootstrap intervals, and R against the real bytes of their outputs."""
from __future__ import annotations

import numpy as np

from caisp import io
from caisp.codecs import JPEG, Point
from caisp.params import Params
from caisp.pipeline import layout
from caisp.pipeline.layout import Run
from caisp.pipeline.rate_fit import _features, fit_quality
from caisp.rate import check_jpeg, lambda_of, load


def _proxy_rows(p: Params, nets: dict, point: Point) -> list[dict]:
    """Predicted and real baseline JPEG bits of every ISP output at `point`: R validated on what it trained."""
    from caisp.data.codec import encode
    from caisp.device import resolve_device
    from caisp.evaluate import isp_outputs
    from caisp.pipeline.evaluation import test_set

    est = load(layout.rate_model(point))
    rows = []
    for (label, seed), net in nets.items():
        for stem, pred, _ in isp_outputs(net, test_set(p), device=resolve_device(p.train.device), tile=p.evaluate.tile,
                                         overlap=p.evaluate.overlap):
            real = 8 * len(encode(pred, JPEG.name, point.quality, **p.codec_settings(JPEG.name)))
            rows.append({"model": label, "seed": seed, "stem": stem,
                         "bits_pred": float(_features(est, pred) @ est.weights.double().numpy()), "bits": real})
    return rows


def run_evaluate_rate(p: Params, regime: str, point: Point, lambda_rate: str) -> dict:
    """Every seed of the rate-aware ISP and of the agnostic control, over the QF sweep (rate.sweep_qfs)
    with each encoder (baseline and `rate.anchors`): BD-rate against the control at equal PSNR(c(f(x)), y) with
    each encoder, and at equal SSIM(c(f(x)), y) with the baseline, with bootstrap intervals over photos
    and seeds; the anchors' own saving on the control; and whether the ISP's saving adds to theirs."""
    import pandas as pd

    from caisp.checkpoint import load_model
    from caisp.device import resolve_device, set_determinism
    from caisp.evaluate import evaluate_isps
    from caisp.pipeline.evaluation import test_set
    from caisp.stats import bd_bootstrap, compare

    check_jpeg(point)
    lam = lambda_of(p.rate.lambdas, lambda_rate)
    q = p.regime(regime)
    run = Run(layout.RATE, point, lambda_rate, regime)
    control = Run("agnostic", regime=regime)
    nets = {(kind, seed): load_model(layout.isp_path(r, seed))[0]
            for kind, r in ((layout.RATE, run), ("agnostic", control)) for seed in p.seeds}
    codecs = [JPEG.name, *p.rate.anchors]
    points = [Point(c, qf) for c in codecs for qf in sorted(set(p.rate.sweep_qfs) | set(p.qfs))]
    set_determinism(p.train.threads, p.train.deterministic)
    # SSIM (against y) over the baseline encoder's sweep only: at ~0.2 s a picture it would be most of
    # the stage's time with every encoder, and its goal is the baseline's (README "Rate-aware ISP")
    df = evaluate_isps(nets, test_set(q), points=points, ssim_points=[pt for pt in points if pt.codec == JPEG.name],
                       ssim_vs=("y",),
                       settings={c: p.codec_settings(c) for c in codecs}, device=resolve_device(p.train.device),
                       tile=p.evaluate.tile, overlap=p.evaluate.overlap, workers=p.evaluate.workers)
    df.insert(df.columns.get_loc("stem") + 1, "source", df.stem.map(layout.sources()))
    out = layout.eval_dir(run)
    io.write_text(out / "per_image.csv", df.to_csv(index=False))
    proxy = pd.DataFrame(_proxy_rows(q, nets, point))
    io.write_text(out / "proxy.csv", proxy.to_csv(index=False))

    b = p.evaluate
    kw = dict(n_boot=b.bootstrap, seed=p.seed, min_overlap=b.bd_min_overlap)
    rows = {kind: df[df.model == kind] for kind in (layout.RATE, "agnostic")}

    def at(kind: str, codec: str):
        return rows[kind][rows[kind].codec == codec]

    bd = {"psnr_y": {
        # the ISP's saving with each encoder: rate-aware ISP + E against the control + E
        **{c: bd_bootstrap(at(layout.RATE, c), at("agnostic", c), "psnr_y", **kw) for c in codecs},
        # the encoders' own saving on the control's pictures, and both savings together
        **{f"anchor-{c}": bd_bootstrap(at("agnostic", c), at("agnostic", JPEG.name), "psnr_y", **kw)
           for c in p.rate.anchors},
        **{f"both-{c}": bd_bootstrap(at(layout.RATE, c), at("agnostic", JPEG.name), "psnr_y", **kw)
           for c in p.rate.anchors}},
        "ssim_y": {JPEG.name: bd_bootstrap(at(layout.RATE, JPEG.name), at("agnostic", JPEG.name), "ssim_y", **kw)}}
    jpeg = {kind: at(kind, JPEG.name) for kind in rows}
    summary = {"regime": regime, "qf": point.quality, "lambda_rate": lam, "seeds": list(p.seeds),
               "codecs": codecs, "n_photos": int(df.source.nunique()),
               "vs_agnostic": compare(jpeg[layout.RATE], jpeg["agnostic"], qf=point.quality, paired_seeds=True,
                                      n_boot=b.bootstrap, seed=p.seed, bd_min_overlap=b.bd_min_overlap),
               "bd_rate": bd,
               "proxy": {kind: _proxy_fit(proxy[proxy.model == kind]) for kind in rows},
               "curves": _mean_curves(df)}
    summary["vs_agnostic"].pop("per_photo", None)
    io.write_json(out / "summary.json", summary)
    return summary


def _mean_curves(df) -> dict:
    """{codec: {model: [{qf, bpp, psnr_y, ssim_y}]}}: the mean over photos and seeds of each sweep point,
    what the report plots (a record keeps summaries, not per-image rows)."""
    clean = df.replace([np.inf, -np.inf], np.nan)
    means = clean.groupby(["codec", "model", "qf"], as_index=False)[["bpp", "psnr_y", "ssim_y"]].mean()
    out: dict = {}
    for (codec, model), g in means.groupby(["codec", "model"]):
        out.setdefault(codec, {})[model] = [{k: io.json_float(v) if k != "qf" else int(v) for k, v in r.items()}
                                            for r in g[["qf", "bpp", "psnr_y", "ssim_y"]].to_dict("records")]
    return out


def _proxy_fit(rows) -> dict:
    return fit_quality(rows.bits_pred.to_numpy(), rows.bits.to_numpy())

"""Stages `evaluate_controls` and `evaluate`: every ISP's outputs compressed with the real codec over
each codec's sweep, scored against the compressed ground truth; the aware ISPs compared with every
control (paired by photo and seed, bootstrap intervals)."""
from __future__ import annotations

from pathlib import Path

from caisp import io
from caisp.codecs import Point
from caisp.params import Params
from caisp.pipeline import layout
from caisp.pipeline.layout import Run


def test_set(p: Params, names: list[str] | None = None):
    """The whole test photos (or `names`), raw and target."""
    from caisp.data.dataset import RawRGBDataset

    return RawRGBDataset(layout.RENDERED, names if names is not None else layout.split()["test"],
                         patch=None, train=False, input_norm=p.model.input_norm)


def _evaluate_models(p: Params, nets: dict, out: Path, ssim_points: list[Point]):
    """Real-codec evaluation of `nets` ({(kind, seed or None): net}) on the whole test photos at every
    evaluation point (each codec's sweep, training points included); writes out/per_image.csv."""
    from caisp.evaluate import evaluate_isps
    from caisp.device import resolve_device, set_determinism

    set_determinism(p.train.threads, p.train.deterministic)
    points = p.eval_points
    df = evaluate_isps(nets, test_set(p), points=points, ssim_points=ssim_points,
                       settings={c: p.codec_settings(c) for c in {pt.codec for pt in points}},
                       device=resolve_device(p.train.device), tile=p.evaluate.tile,
                       overlap=p.evaluate.overlap, workers=p.evaluate.workers)
    df.insert(df.columns.get_loc("stem") + 1, "source", df.stem.map(layout.sources()))
    io.write_text(out / "per_image.csv", df.to_csv(index=False))
    return df


def run_evaluate_controls(p: Params, regime: str) -> None:
    """The baselines every aware ISP of `regime` is compared with, evaluated once: the pretrained ISP
    (the paper's compression-agnostic ISP) and each seed of the two fine-tuned controls. A pretrained
    ISP shared by every seed has no seed in the rows; one pretrained per seed carries that seed, so
    that it pairs with the runs that started from it."""
    from caisp.checkpoint import load_model

    per_seed = p.regimes[regime].pretrain_per_seed
    pretrained = Run(layout.PRETRAINED, regime=regime)
    nets = {(layout.PRETRAINED, s if per_seed else None): load_model(layout.isp_path(pretrained, s))[0]
            for s in p.pretrain_seeds(regime)}
    for control in layout.CONTROLS:
        for seed in p.seeds:
            nets[(control, seed)] = load_model(layout.isp_path(Run(control, regime=regime), seed))[0]
    _evaluate_models(p.regime(regime), nets, layout.controls_eval(regime), ssim_points=p.points)


def read_rows(path: Path):
    """An evaluation's per_image.csv (the pretrained ISP's empty seed stays empty, the others ints)."""
    import pandas as pd

    return pd.read_csv(path, dtype={"seed": "Int64"})


def at_codec(df, codec: str):
    """Rows of one codec (the statistics and RD curves compare within a codec's quality scale)."""
    return df[df.codec == codec]


def run_evaluate(p: Params, regime: str, point: Point, variant: str, frozen: bool = True) -> dict:
    """Evaluate the aware ISP of (point, variant) for every seed, and compare it with each control at
    its own point; and, against the fine-tuned control, at every other training point (the cross-codec
    table): reports/eval/<run>/summary.json."""
    from caisp.checkpoint import load_model
    from caisp.stats import compare_all, cross_point

    run = Run("aware" if frozen else "aware-unfrozen", point, variant, regime)
    nets = {(run.kind, seed): load_model(layout.isp_path(run, seed))[0] for seed in p.seeds}
    # SSIM costs ~25 round trips: at the training point only
    df = _evaluate_models(p.regime(regime), nets, layout.eval_dir(run), ssim_points=[point])
    controls = read_rows(layout.controls_eval(regime) / "per_image.csv")
    b = p.evaluate
    summary = {"regime": regime, "qf": point.quality, "variant": variant, "frozen": frozen, "seeds": list(p.seeds),
               "codec": point.codec,
               **compare_all(at_codec(df, point.codec), at_codec(controls, point.codec), aware=run.kind,
                             qf=point.quality, n_boot=b.bootstrap, seed=p.seed, bd_min_overlap=b.bd_min_overlap)}
    summary["cross"] = {other.name: {"codec": other.codec, "qf": other.quality,
                                     **cross_point(at_codec(df, other.codec), at_codec(controls, other.codec),
                                                   aware=run.kind, qf=other.quality, n_boot=b.bootstrap, seed=p.seed)}
                        for other in p.points}
    io.write_json(layout.eval_dir(run) / "summary.json", summary)
    return summary

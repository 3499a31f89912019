"""Stage `train_cas`: CAS-Net g trained with L_cas against the real codec (or an analytic simulator,
built), then its fidelity to the codec on the test photos (paper Table 1) and the simulator gate."""
from __future__ import annotations

import sys

import torch

from caisp import CaispError, io
from caisp.codecs import Point
from caisp.params import Params, to_dict
from caisp.pipeline import layout
from caisp.pipeline.fitting import datasets, fit


def cas_config(p: Params, point: Point, variant: str) -> dict:
    """The checkpoint config of the simulator: registry type and kwargs, and the point it models."""
    spec = point.spec
    if variant not in spec.simulators:
        raise CaispError(f"CAS variant {variant!r} cannot model {spec.display} (its simulators: "
                         f"{', '.join(spec.simulators)})")
    kw = {"base_width": p.model.base_width}
    if spec.simulator_settings is not None:  # a simulator built from the codec's own parameters
        kw = {"qf": point.quality, **{k: p.codec_settings(point.codec)[k] for k in spec.simulator_settings}, **kw}
    if variant == "unet":
        kw["residual"] = p.cas.residual
        kw["domain"] = p.cas.domain
        if p.cas.domain == "dct":  # He init: PyTorch's default shrinks the signal through the deep path
            kw["init"] = "kaiming"
    if variant == "acn":
        kw["domain"] = p.cas.domain
    if variant == "djs":
        kw["terms"] = p.cas.djs_terms
    return {"type": variant, "kwargs": kw, "qf": point.quality, "role": "cas", **spec.checkpoint_fields}


def _pairs(p: Params, point: Point, names: list[str]):
    """The whole (y, c(y)) images of `names` at `point`, unaugmented."""
    from caisp.data.dataset import RawRGBDataset
    from caisp.losses import CasTask

    return RawRGBDataset(layout.RENDERED, names, coded_dir=layout.codec_dir(point), patch=None, train=False,
                         input_norm=p.model.input_norm, keys=CasTask.batch_keys())


def _fidelity(p: Params, cas, point: Point, names: list[str]):
    from caisp.device import resolve_device
    from caisp.evaluate import evaluate_cas

    return evaluate_cas(cas.eval(), _pairs(p, point, names), device=resolve_device(p.train.device),
                        tile=p.evaluate.tile, overlap=p.evaluate.overlap)


def fit_blur(p: Params, point: Point, cas=None):
    """The blur baseline fitted on the training photos (into `cas` if given): (model, fit record)."""
    from caisp import models

    blur = cas if cas is not None else models.build("blur")
    data = _pairs(p, point, layout.split()["train"])
    record = blur.fit((item["srgb"], item["coded"]) for item in (data[i] for i in range(len(data))))
    return blur, record


def run_train_cas(p: Params, point: Point, variant: str) -> dict:
    from caisp import models
    from caisp.checkpoint import save_model
    from caisp.losses import CasTask

    config = cas_config(p, point, variant)
    torch.manual_seed(p.seed)
    cas = models.build(variant, **config["kwargs"])
    result: dict = {}
    run = layout.Run(layout.CAS, point, variant)
    if getattr(cas, "fitted", False):  # the blur baseline: one number, fitted on the training photos
        _, record = fit_blur(p, point, cas)
        config["kwargs"]["sigma"] = record["sigma"]
        io.write_json(layout.train_log(run) / "metrics.json",
                      {"trained": False, "fitted": True, "variant": variant, **record})
    elif not getattr(cas, "trainable", False):
        # Analytic simulators have no training curve; the stage's log folder says so.
        io.write_json(layout.train_log(run) / "metrics.json", {"trained": False, "variant": variant})
    else:
        task = CasTask(cas)
        c = p.cas
        train, val = datasets(p, point, c.batch_size, task.batch_keys())
        result = fit(task, train, val, log_dir=layout.train_log(run), steps=c.acn_steps if variant == "acn" else c.steps,
                     batch_size=c.batch_size, lr=c.lr, grad_clip=p.train.grad_clip, seed=p.seed, p=p,
                     fingerprint=[config, to_dict(c), to_dict(p.train)])
    save_model(layout.cas_path(point, variant), cas, config)
    split = layout.split()
    df = _fidelity(p, cas, point, split["test"])
    out = layout.cas_report_dir(point, variant)
    io.write_text(out / "per_image.csv", df.to_csv(index=False))
    summary = {"qf": point.quality, "variant": variant, "codec": point.codec,
               **{k: float(df[k].mean()) for k in df.columns if k not in ("stem", "model") and df[k].dtype.kind == "f"}}
    if "val_psnr" in result:
        summary["val_psnr"] = result["val_psnr"]
    summary["gate"] = _gate(p, cas, point, variant, config, split)
    if not summary["gate"]["passed"]:
        g = summary["gate"]
        print(f"warning: CAS {variant} at {point.label} fails the simulator gate: it beats the {g['reference']} "
              f"by {g['val_margin_db']:+.3f} dB on the validation photos, less than cas.gate_db = "
              f"{p.cas.gate_db} dB; the report flags every result that uses it", file=sys.stderr, flush=True)
    io.write_json(out / "summary.json", summary)
    return summary


def _gate(p: Params, cas, point: Point, variant: str, config: dict, split: dict) -> dict:
    """The simulator gate, on validation photos (the test photos only report): g must beat the better
    of the identity and the fitted blur by cas.gate_db. Fine-tuning against a g no better than those
    tests a blur (or nothing), not a simulator of the codec. The blur itself is held to the identity."""
    names = split["val"] or split["train"][:1]
    val = _fidelity(p, cas, point, names)
    ident = float(val["psnr_gt"].mean())
    if variant == "blur":
        blur_psnr, sigma = float(val["psnr"].mean()), config["kwargs"]["sigma"]
    else:
        blur, record = fit_blur(p, point)
        blur_psnr, sigma = float(_fidelity(p, blur, point, names)["psnr"].mean()), record["sigma"]
    reference, ref_psnr = ("identity", ident) if variant == "blur" or ident >= blur_psnr else ("blur", blur_psnr)
    margin = float(val["psnr"].mean()) - ref_psnr
    return {"val_margin_db": margin, "reference": reference, "gate_db": p.cas.gate_db,
            "passed": margin >= p.cas.gate_db, "n_val": int(len(val)), "val_psnr": float(val["psnr"].mean()),
            "val_identity": ident, "val_blur": blur_psnr, "blur_sigma": sigma}

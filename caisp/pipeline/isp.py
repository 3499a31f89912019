"""Stages `pretrain_isp`, `finetune` and `finetune_control`: ISP-Net f trained with L_isp (the
compression-agnostic ISP), then fine-tuned once per seed with L_total and a frozen (or unfrozen) CAS g,
or as one of the two controls. Each runs in one regime of the operating-point axis (`regimes`), whose
overrides of `model` and `isp` (input, tone prior, pretraining steps) it trains with."""
from __future__ import annotations

from collections import Counter
from functools import partial

import torch

from caisp import CaispError, io
from caisp.codecs import Point
from caisp.params import Params, to_dict
from caisp.pipeline import layout
from caisp.pipeline.fitting import datasets, fit, run_seeds
from caisp.pipeline.layout import Run


def _isp_config(p: Params, **extra) -> dict:
    cfas = Counter(im["cfa"] for im in layout.manifest()["images"])
    return {"type": "isp_net", "kwargs": {"base_width": p.model.base_width, "tone_prior": p.model.tone_prior},
            "role": "isp",
            "input_norm": p.model.input_norm, "cfa": cfas.most_common(1)[0][0],
            "subsampling": p.encode.subsampling, **extra}


def _pretrain_seed(p: Params, seed: int, regime: str, *, label: str = "") -> dict:
    """One pretraining of regime `regime` with `seed`: trains and saves its ISP."""
    from caisp import models
    from caisp.checkpoint import save_model
    from caisp.losses import IspTask

    q = p.regime(regime)
    config = _isp_config(q, qf=None, cas=None, stage="pretrain", regime=regime)
    i = q.isp
    run = Run(layout.PRETRAINED, regime=regime)
    torch.manual_seed(seed)
    isp = models.build("isp_net", **config["kwargs"])
    task = IspTask(isp)
    train, val = datasets(q, None, i.batch_size, task.batch_keys())
    result = fit(task, train, val, log_dir=layout.train_log(run, seed), steps=i.steps,
                 batch_size=i.batch_size, lr=i.lr, grad_clip=q.train.grad_clip, seed=seed, p=q,
                 fingerprint=[config, to_dict(i), to_dict(q.train)], label=label)
    save_model(layout.isp_path(run, seed), isp, {**config, "seed": seed})
    return result


def run_pretrain_isp(p: Params, regime: str) -> dict:
    """ISP-Net f trained with L_isp only, in `regime`: the compression-agnostic ISP, one model per
    pretraining seed (`Params.pretrain_seeds`)."""
    q = p.regime(regime)
    results = run_seeds(_pretrain_seed, p, p.pretrain_seeds(regime), regime)
    vals = [r["val_psnr"] for r in results.values() if r.get("val_psnr") is not None]
    summary = {"regime": regime, "steps": q.isp.steps, "input_norm": q.model.input_norm,
               "tone_prior": q.model.tone_prior, "per_seed": p.regimes[regime].pretrain_per_seed,
               "val_psnr": sum(vals) / len(vals) if vals else None,
               "seeds": {str(s): r for s, r in results.items()}}
    io.write_json(layout.pretrain_report(regime), summary)
    return summary


def no_cas() -> None:
    """`make_cas` of a fine-tuning without L_comp (a module-level function: it pickles)."""
    return None


def load_cas(path) -> torch.nn.Module:
    """`make_cas` of a trained simulator (use with functools.partial: it pickles)."""
    from caisp.checkpoint import load_model

    return load_model(path)[0]


def finetune(p: Params, run: Run, cas_name: str, lambda_comp: float, frozen: bool, make_cas, *,
             rate=None, lambda_rate: float = 0.0) -> dict:
    """Fine-tune the pretrained ISP once per seed of `p.seeds` with g = make_cas() (None: no L_comp),
    and the rate term lambda_rate * R / pixels with the size estimate `rate` (caisp.rate.JPEGRate).
    Seed s of every run sees the same crops in the same order, so that runs pair by seed. make_cas
    must pickle (the seeds may train in other processes: `fitting.run_seeds`)."""
    return run_seeds(_finetune_seed, p, p.seeds, run, cas_name, lambda_comp, frozen, make_cas, rate, lambda_rate)


def _finetune_seed(p: Params, seed: int, run: Run, cas_name: str, lambda_comp: float, frozen: bool, make_cas,
                   rate, lambda_rate: float, *, label: str = "") -> dict:
    from caisp.checkpoint import load_model, save_model
    from caisp.losses import CompressionAwareTask

    f = p.finetune
    q = p.regime(run.regime)
    # L_comp compares g(f(x)) with g(y): no real codec needed
    train, val = datasets(q, None, f.batch_size, CompressionAwareTask.batch_keys())
    point = {"qf": run.point.quality, **run.point.spec.checkpoint_fields} if run.point else {"qf": None}
    start = layout.isp_path(Run(layout.PRETRAINED, regime=run.regime), p.pretrain_seed(run.regime, seed))
    isp, base_config = load_model(start)
    cas = make_cas()
    config = {**base_config, **point, "cas": cas_name, "cas_frozen": frozen, "stage": "finetune",
              "kind": run.kind, "seed": seed, "pretrain_seed": base_config.get("seed"), "lambda_isp": p.lambda_isp,
              "lambda_comp": lambda_comp}
    if rate is not None:  # the estimate is part of the run's definition: its weights key the resume state
        config = {**config, "lambda_rate": lambda_rate, "rate_weights": [float(w) for w in rate.weights]}
    task = CompressionAwareTask(isp.train(), cas, lambda_isp=p.lambda_isp, lambda_comp=lambda_comp,
                                freeze_cas=frozen, rate=rate, lambda_rate=lambda_rate)
    result = fit(task, train, val, log_dir=layout.train_log(run, seed), steps=f.steps,
                 batch_size=f.batch_size, lr=p.isp.lr * f.lr_scale, grad_clip=f.grad_clip, seed=seed,
                 p=q, fingerprint=[config, to_dict(f), to_dict(p.train), p.isp.lr], label=label)
    save_model(layout.isp_path(run, seed), isp, config)
    return result


def run_finetune(p: Params, regime: str, point: Point, variant: str, frozen: bool = True) -> dict:
    """Compression-aware fine-tuning with L_total and the CAS of (point, variant), frozen unless not `frozen`."""
    run = Run("aware" if frozen else "aware-unfrozen", point, variant, regime)
    return finetune(p, run, variant, p.lambda_comp, frozen, partial(load_cas, layout.cas_path(point, variant)))


def run_finetune_control(p: Params, regime: str, control: str) -> dict:
    """A control, with the aware runs' seeds, steps and learning rate:

    - "agnostic": lambda_isp * L_isp alone (lambda_comp = 0), the fair control;
    - "identity": g = identity, so L_comp = |f(x) - y| with the aware run's weights and loss scale."""
    from torch import nn

    if control not in layout.CONTROLS:
        raise CaispError(f"unknown control {control!r} (known: {', '.join(layout.CONTROLS)})")
    if control == "agnostic":
        return finetune(p, Run(control, regime=regime), control, 0.0, True, no_cas)
    return finetune(p, Run(control, regime=regime), control, p.lambda_comp, True, nn.Identity)

"""What each DVC stage does, in terms of the library: params in, files out.

`stages/*.py` are thin command-line wrappers around these functions; everything here takes the
validated `Params` and the stage's matrix item (QF, CAS variant), so each is importable and testable.
Paths below are the DVC outputs declared in dvc.yaml.
"""
from __future__ import annotations

import hashlib
import json
import shutil
from collections import Counter
from pathlib import Path

import torch

from caisp import CaispError, io
from caisp.params import Params, to_dict

RAW = Path("data/raw")
RENDERED = Path("data/rendered")
SPLIT = Path("data/split.json")
MODELS = Path("models")
REPORTS = Path("reports")
# Resume states live outside every DVC output: DVC deletes outputs before it reruns a stage.
STATES = Path("checkpoints")


def jpeg_dir(qf: int) -> Path:
    return Path(f"data/jpeg/qf{qf}")


def cas_path(qf: int, variant: str) -> Path:
    return MODELS / "cas" / f"qf{qf}-{variant}.pt"


def isp_path(kind: str, qf: int | None = None, variant: str | None = None) -> Path:
    """kind: pretrained | agnostic | aware | aware-unfrozen."""
    if kind in ("pretrained", "agnostic"):
        return MODELS / "isp" / f"{kind}.pt"
    return MODELS / "isp" / f"{kind}-qf{qf}-{variant}.pt"


# ---------------------------------------------------------------- data stages (issue: data pipeline)

def run_download(p: Params) -> None:
    from caisp.data import download

    src = p.data.source
    if RAW.exists():
        # A partial earlier FiveK run is resumed, not thrown away; other sources rebuild cleanly.
        if src != "fivek":
            shutil.rmtree(RAW)
    RAW.mkdir(parents=True, exist_ok=True)
    if src == "synthetic":
        from caisp.data.synthetic import synthesize

        s = p.data.synthetic
        paths = synthesize(RAW, cfa=s.cfa, seed=p.seed, noise=s.noise, tile=s.tile,
                           extra_dir=s.extra_photos, bits=s.bits, workers=p.render.workers)
        download.write_manifest(RAW, "synthetic", download.file_manifest(paths))
    elif src == "fivek":
        f = p.data.fivek
        files = download.download_fivek(f.list_url, RAW, workers=f.workers, retries=f.retries,
                                        limit=f.limit)
        # Files of an earlier, larger run (a lowered `limit`) must not reach the render stage.
        keep = {e["name"] for e in files} | {"manifest.json"}
        for stale in RAW.iterdir():
            if stale.is_file() and stale.name not in keep and not stale.name.endswith(".part"):
                stale.unlink()
    else:
        download.copy_folder(p.data.folder.path, RAW)


def run_render(p: Params) -> dict:
    from caisp.data.render import RenderSettings, render_all

    r = p.render
    if RENDERED.exists():
        shutil.rmtree(RENDERED)
    settings = RenderSettings(use_camera_wb=r.use_camera_wb, no_auto_bright=r.no_auto_bright,
                              demosaic=r.demosaic, extra={"adjust_maximum_thr": r.adjust_maximum_thr})
    manifest = render_all(RAW, RENDERED, settings=settings, workers=r.workers, on_error=r.on_error)
    io.write_json(REPORTS / "data" / "render.json",
                  {"images": len(manifest["images"]), "skipped": len(manifest["skipped"])})
    return manifest


def run_encode(p: Params, qf: int) -> dict:
    from caisp.data.codec import encode_all

    out = jpeg_dir(qf)
    if out.exists():
        shutil.rmtree(out)
    df = encode_all(RENDERED, out, qf=qf, subsampling=p.encode.subsampling, workers=p.encode.workers)
    summary = {"qf": qf, "images": int(len(df)), "bpp_mean": float(df["bpp"].mean())}
    io.write_json(REPORTS / "data" / f"encode_qf{qf}.json", summary)
    return summary


def run_split(p: Params) -> dict:
    from caisp.data.split import make_split

    stems = [im["stem"] for im in _manifest()["images"]]
    # Only images that have their real JPEG at every QF take part: evaluation needs c(y) for each.
    for qf in p.qfs:
        bpp = jpeg_dir(qf) / "bpp.csv"
        if not bpp.exists():
            raise CaispError(f"{bpp} missing: run the encode stage for QF {qf} first")
        encoded = {line.split(",", 1)[0] for line in bpp.read_text().splitlines()[1:]}
        stems = [s for s in stems if s in encoded]
    split = make_split(stems, ratios=tuple(p.split.ratios), seed=p.seed)
    io.write_json(SPLIT, split)
    return split


def _manifest() -> dict:
    return json.loads((RENDERED / "manifest.json").read_text())


def _split() -> dict:
    return json.loads(SPLIT.read_text())


# ---------------------------------------------------------------- training stages

def _datasets(p: Params, qf: int | None):
    from caisp.data.dataset import RawRGBDataset

    split = _split()
    jd = jpeg_dir(qf) if qf is not None else None
    n_train = max(len(split["train"]), 1)
    # Small data sets: one epoch visits each image several times (at least 64 crops), so that the
    # loader's reshuffles and the dvclive curves do not tick every couple of steps.
    repeat = max(1, 64 // n_train)
    common = dict(jpeg_dir=jd, input_norm=p.model.input_norm)
    train = RawRGBDataset(RENDERED, split["train"], patch=p.train.patch, train=True, repeat=repeat, **common)
    val = RawRGBDataset(RENDERED, split["val"] or split["train"][:1], patch=None, train=False, **common)
    return train, val


def _fingerprint(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _fit(task, train, val, *, run: str, steps: int, batch_size: int, lr: float, p: Params,
         identity: dict) -> dict:
    """Run the one training loop with resume state keyed by everything that defines the run, so an
    interrupted stage resumes, while a stage rerun with other params starts fresh."""
    from caisp.train import TrainConfig, fit, is_main

    state = STATES / f"{run}-{_fingerprint(identity)}.pt"
    live = REPORTS / "train" / run
    if not state.exists() and live.exists():
        shutil.rmtree(live)  # a fresh run must not append to an older run's curves
    cfg = TrainConfig(steps=steps, batch_size=batch_size, lr=lr, seed=p.seed,
                      num_workers=p.train.num_workers, ckpt_every=p.train.ckpt_every,
                      val_every=max(1, steps // 10), device=p.train.device, amp=p.train.amp,
                      lr_decay=p.train.lr_decay, grad_clip=p.train.grad_clip,
                      warmup_steps=min(p.train.warmup_steps, steps // 4),
                      log_dir=live, state_path=state)
    result = fit(task, train, val, cfg)
    if not is_main():
        # Under torchrun the other ranks are done: rank 0 alone saves, evaluates and writes metrics.
        raise SystemExit(0)
    state.unlink(missing_ok=True)
    return result


def _cas_kwargs(p: Params, qf: int, variant: str) -> dict:
    kw = {"qf": qf, "subsampling": p.encode.subsampling, "base_width": p.model.base_width}
    if variant == "unet":
        kw["residual"] = p.cas.residual
    if variant == "djs":
        kw["terms"] = p.cas.djs_terms
    return kw


def run_train_cas(p: Params, qf: int, variant: str) -> dict:
    """Train CAS-Net g (L_cas against the real JPEG) or, for the analytic simulators, just build it;
    then measure its fidelity to real JPEG on the test split (paper Table 1)."""
    from caisp import models
    from caisp.checkpoint import save_model
    from caisp.evaluate import evaluate_cas
    from caisp.losses import CasTask
    from caisp.data.dataset import RawRGBDataset
    from caisp.train import resolve_device

    config = {"type": variant, "kwargs": _cas_kwargs(p, qf, variant), "qf": qf, "role": "cas"}
    torch.manual_seed(p.seed)
    cas = models.build(variant, **config["kwargs"])
    result: dict = {}
    run = f"cas-qf{qf}-{variant}"
    if not getattr(cas, "trainable", False):
        # Analytic simulators have no training curve; the stage's log folder says so.
        io.write_json(REPORTS / "train" / run / "metrics.json", {"trained": False, "variant": variant})
    else:
        train, val = _datasets(p, qf)
        c = p.cas
        steps = c.acn_steps if variant == "acn" else c.steps
        result = _fit(CasTask(cas), train, val, run=run, steps=steps,
                      batch_size=c.batch_size, lr=c.lr, p=p, identity=[config, to_dict(c), to_dict(p.train)])
    save_model(cas_path(qf, variant), cas, config)
    test = RawRGBDataset(RENDERED, _split()["test"], jpeg_dir=jpeg_dir(qf), patch=None, train=False,
                         input_norm=p.model.input_norm)
    df = evaluate_cas(cas.eval(), test, device=resolve_device(p.train.device))
    out = REPORTS / "cas" / f"qf{qf}-{variant}"
    io.write_text(out / "per_image.csv", df.to_csv(index=False))
    summary = {"qf": qf, "variant": variant, **{k: float(df[k].mean()) for k in df.columns
                                                if k not in ("stem", "model") and df[k].dtype.kind == "f"}}
    if "val_psnr" in result:
        summary["val_psnr"] = result["val_psnr"]
    io.write_json(out / "summary.json", summary)
    return summary


def _isp_config(p: Params, **extra) -> dict:
    cfas = Counter(im["cfa"] for im in _manifest()["images"])
    return {"type": "isp_net", "kwargs": {"base_width": p.model.base_width}, "role": "isp",
            "input_norm": p.model.input_norm, "cfa": cfas.most_common(1)[0][0],
            "subsampling": p.encode.subsampling, **extra}


def run_pretrain_isp(p: Params) -> dict:
    """ISP-Net f trained with L_isp only: the compression-agnostic ISP."""
    from caisp import models
    from caisp.checkpoint import save_model
    from caisp.losses import IspTask

    config = _isp_config(p, qf=None, cas=None, stage="pretrain")
    torch.manual_seed(p.seed)
    isp = models.build("isp_net", **config["kwargs"])
    train, val = _datasets(p, None)
    i = p.isp
    result = _fit(IspTask(isp), train, val, run="isp-pretrain", steps=i.steps, batch_size=i.batch_size,
                  lr=i.lr, p=p, identity=[config, to_dict(i), to_dict(p.train)])
    save_model(isp_path("pretrained"), isp, config)
    io.write_json(REPORTS / "isp" / "pretrain.json", result)
    return result


def run_finetune(p: Params, qf: int | None, variant: str | None, frozen: bool = True) -> dict:
    """Fine-tune the pretrained ISP-Net with L_total and CAS g (frozen unless `frozen` is False).
    `variant=None` is the agnostic control: the same fine-tuning with lambda_comp = 0."""
    from caisp.checkpoint import load_model, save_model
    from caisp.losses import CompressionAwareTask

    isp, base_config = load_model(isp_path("pretrained"))
    lambda_comp = p.lambda_comp if variant else 0.0
    cas = load_model(cas_path(qf, variant))[0] if variant else None
    if variant:
        kind = "aware" if frozen else "aware-unfrozen"
        out, run = isp_path(kind, qf, variant), f"{kind}-qf{qf}-{variant}"
    else:
        out, run = isp_path("agnostic"), "agnostic"
    config = {**base_config, "qf": qf, "cas": variant, "cas_frozen": frozen, "stage": "finetune",
              "lambda_isp": p.lambda_isp, "lambda_comp": lambda_comp}
    task = CompressionAwareTask(isp.train(), cas, lambda_isp=p.lambda_isp, lambda_comp=lambda_comp,
                                freeze_cas=frozen)
    train, val = _datasets(p, None)  # L_comp compares g(f(x)) with g(y): no real JPEG needed
    f = p.finetune
    result = _fit(task, train, val, run=run, steps=f.steps, batch_size=f.batch_size,
                  lr=p.isp.lr * f.lr_scale, p=p, identity=[config, to_dict(f), to_dict(p.train), p.isp.lr])
    save_model(out, isp, config)
    return result


# ---------------------------------------------------------------- evaluation and report

def run_evaluate(p: Params, qf: int, variant: str, frozen: bool = True) -> dict:
    """Real-JPEG evaluation of the aware ISP (trained with `variant` at `qf`) against the agnostic
    control: PSNR(c(f(x)), c(y)), SSIM and BPP from the file bytes, over the QF sweep."""
    from caisp.checkpoint import load_model
    from caisp.data.dataset import RawRGBDataset
    from caisp.evaluate import evaluate_isps, rd_points, summarize
    from caisp.train import resolve_device

    kind = "aware" if frozen else "aware-unfrozen"
    nets = {"agnostic": load_model(isp_path("agnostic"))[0],
            "aware": load_model(isp_path(kind, qf, variant))[0]}
    test = RawRGBDataset(RENDERED, _split()["test"], jpeg_dir=None, patch=None, train=False,
                         input_norm=p.model.input_norm)
    sweep = sorted(set(p.evaluate.sweep_qfs) | {qf})
    df = evaluate_isps(nets, test, qfs=sweep, train_qf=qf, subsampling=p.encode.subsampling,
                       device=resolve_device(p.train.device), tile=p.evaluate.tile,
                       overlap=p.evaluate.overlap)
    out = REPORTS / "eval" / f"{kind}-qf{qf}-{variant}"
    io.write_text(out / "per_image.csv", df.to_csv(index=False))
    rd = rd_points(df)
    for model, part in rd.groupby("model"):
        io.write_text(out / f"rd_{model}.csv", part.to_csv(index=False))
    summary = {"qf": qf, "variant": variant, "frozen": frozen, **summarize(df, train_qf=qf)}
    io.write_json(out / "summary.json", summary)
    return summary


def _read_summaries(folder: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in sorted(folder.glob("*/summary.json"))}


def _figure4_examples(p: Params, qf: int, variant: str, n: int = 2) -> list[dict]:
    """Run the agnostic and the aware ISP on the first test images for the visual comparison."""
    from caisp.checkpoint import load_model
    from caisp.data.dataset import RawRGBDataset
    from caisp.evaluate import isp_outputs, make_example

    test = RawRGBDataset(RENDERED, _split()["test"][:n], patch=None, train=False,
                         input_norm=p.model.input_norm)
    outs = {}
    for label, path in (("agnostic", isp_path("agnostic")), ("aware", isp_path("aware", qf, variant))):
        net = load_model(path)[0]
        outs[label] = list(isp_outputs(net, test, tile=p.evaluate.tile, overlap=p.evaluate.overlap))
    return [make_example(f"{stem} (QF {qf}, CAS {variant})", gt, pred_ag, aware[1], qf=qf,
                         subsampling=p.encode.subsampling, crop=128)
            for (stem, pred_ag, gt), aware in zip(outs["agnostic"], outs["aware"])]


def run_report(p: Params) -> Path:
    """reports/report.md: the paper's Tables 1-3 and Figures 4-5 re-made from this run."""
    import pandas as pd

    from caisp.report import write_report

    qf = max(p.qfs)  # the paper's Figure 5 shows the ISPs trained at QF 90
    variant = "unet" if "unet" in p.cas.variants else p.cas.variants[0]
    rd_parts = []
    for v in p.cas.variants:
        folder = REPORTS / "eval" / f"aware-qf{qf}-{v}"
        aware = pd.read_csv(folder / "rd_aware.csv").assign(model=f"aware ({v})")
        rd_parts.append(aware)
    first = REPORTS / "eval" / f"aware-qf{qf}-{p.cas.variants[0]}"
    rd_parts += [pd.read_csv(first / "rd_agnostic.csv"), pd.read_csv(first / "rd_ground_truth.csv")]
    curves = {}
    for run in sorted((REPORTS / "train").iterdir()):
        tsv = run / "plots" / "metrics" / "val" / "psnr.tsv"
        if tsv.exists():
            curves[f"{run.name}: val PSNR"] = pd.read_csv(tsv, sep="\t").rename(columns={"psnr": "value"})
    ablation_csv = REPORTS / "ablation.csv"
    ablation = pd.read_csv(ablation_csv) if ablation_csv.exists() else None
    if ablation is not None and ablation.empty:
        ablation = None
    return write_report(REPORTS, cas_tables=_read_summaries(REPORTS / "cas"),
                        isp_summaries=_read_summaries(REPORTS / "eval"), ablation=ablation,
                        rd=pd.concat(rd_parts, ignore_index=True), curves=curves,
                        examples=_figure4_examples(p, qf, variant))

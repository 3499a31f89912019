"""What each DVC stage does, in terms of the library: params in, files out.

`stages/*.py` are thin command-line wrappers around these functions; everything here takes the
validated `Params` and the stage's matrix item (operating point, CAS variant), so each is importable
and testable. Paths below are the DVC outputs declared in dvc.yaml. An operating point
(`caisp.data.codec.Point`) is a codec at one quality: JPEG at each of `qfs` (the paper), and the
`codec_points` of the other codecs; its `name` (`qf80`, `webp-80`) names its files.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import sys
from collections import Counter
from pathlib import Path

import torch

from caisp import CaispError, io
from caisp.data.codec import Point
from caisp.params import Params, to_dict

RAW = Path("data/raw")
RENDERED = Path("data/rendered")
SPLIT = Path("data/split.json")
MODELS = Path("models")
REPORTS = Path("reports")
# Resume states live outside every DVC output: DVC deletes outputs before it reruns a stage.
STATES = Path("checkpoints")


def as_point(point: Point | int) -> Point:
    """A Point; a bare int is a JPEG quality factor (the paper's codec)."""
    return point if isinstance(point, Point) else Point("jpeg", int(point))


def codec_dir(point: Point | int) -> Path:
    """The encode stage's files at `point`: data/jpeg/qf80, data/codecs/webp-80."""
    pt = as_point(point)
    return Path(f"data/jpeg/{pt.name}") if pt.codec == "jpeg" else Path(f"data/codecs/{pt.name}")


def cas_path(point: Point | int, variant: str) -> Path:
    return MODELS / "cas" / f"{as_point(point).name}-{variant}.pt"


CONTROLS = ("agnostic", "identity")


def isp_path(kind: str, point: Point | int | None = None, variant: str | None = None,
             seed: int | None = None) -> Path:
    """kind: pretrained | agnostic | identity (the controls) | aware | aware-unfrozen. Fine-tuned
    models live in one folder per configuration, one file per seed: <folder>/seed<seed>.pt."""
    if kind == "pretrained":
        return MODELS / "isp" / "pretrained.pt"
    folder = MODELS / "isp" / (f"control-{kind}" if kind in CONTROLS
                               else f"{kind}-{as_point(point).name}-{variant}")
    return folder if seed is None else folder / f"seed{seed}.pt"


def run_name(kind: str, point: Point | int | None = None, variant: str | None = None) -> str:
    """The name of a fine-tuning configuration: its folder under models/isp, reports/train, reports/eval."""
    return isp_path(kind, point, variant).name


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
        entries = synthesize(RAW, cfa=s.cfa, seed=p.seed, noise=s.noise, tile=s.tile,
                             extra_dir=s.extra_photos, bits=s.bits, workers=p.render.workers,
                             kodak=s.kodak, cameras=s.cameras, blur=s.blur, scale=s.scale,
                             noise_scale=s.noise_scale)
        files = download.file_manifest([e["path"] for e in entries])
        for f, e in zip(files, entries):  # the split keeps every tile of a photo in one subset
            f.update(source=e["source"], camera=e["camera"])
        download.write_manifest(RAW, "synthetic", files)
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
    raw_manifest = RAW / "manifest.json"
    files = json.loads(raw_manifest.read_text())["files"] if raw_manifest.is_file() else []
    sources = {f["name"]: f["source"] for f in files if "source" in f}
    manifest = render_all(RAW, RENDERED, settings=settings, workers=r.workers, on_error=r.on_error,
                          sources=sources)
    io.write_json(REPORTS / "data" / "render.json",
                  {"images": len(manifest["images"]), "skipped": len(manifest["skipped"])})
    return manifest


def run_encode(p: Params, point: Point | int) -> dict:
    from caisp.data.codec import encode_all

    pt = as_point(point)
    out = codec_dir(pt)
    if out.exists():
        shutil.rmtree(out)
    df = encode_all(RENDERED, out, qf=pt.quality, codec=pt.codec, settings=p.codec_settings(pt.codec),
                    workers=p.encode.workers)
    summary = {"qf": pt.quality, "images": int(len(df)), "bpp_mean": float(df["bpp"].mean())}
    if pt.codec != "jpeg":
        summary["codec"] = pt.codec
    io.write_json(REPORTS / "data" / f"encode_{pt.name}.json", summary)
    return summary


def run_split(p: Params) -> dict:
    from caisp.data.split import make_split

    # Every rendered image takes part: the encode stages encode each one or fail, so the split does not
    # depend on the codecs (adding an operating point never reshuffles train and test).
    images = _manifest()["images"]
    stems = [im["stem"] for im in images]
    sources = {im["stem"]: im.get("source", im["stem"]) for im in images}
    split = make_split(stems, ratios=tuple(p.split.ratios), seed=p.seed,
                       sources={s: sources[s] for s in stems})
    io.write_json(SPLIT, split)
    return split


def _manifest() -> dict:
    return json.loads((RENDERED / "manifest.json").read_text())


def _split() -> dict:
    return json.loads(SPLIT.read_text())


# ---------------------------------------------------------------- training stages

def crops_per_image(n_train: int, batch_size: int, num_workers: int) -> int:
    """The auto `train.crops_per_image`: crops of each training image per epoch.

    On small data sets one epoch visits each image several times (at least 64 crops, and one global
    batch), so that the loader's reshuffles and the dvclive curves do not tick every couple of steps;
    at FiveK's 390 training images it is 1, the paper's epoch. With loader workers an epoch also holds
    two batches per worker: a DataLoader worker builds whole batches and an epoch's iterator ends
    before the next one prefetches, so at one batch per epoch a single worker fed the GPU (the 24-raw
    rehearsal's CAS training ran at one core's ~50 crops/s with 8 workers;
    benchmarks/results/epoch_boundary.md)."""
    n = max(n_train, 1)
    worker_crops = 2 * num_workers * batch_size
    return max(1, 64 // n, -(-batch_size // n), -(-worker_crops // n))


def _datasets(p: Params, point: Point | None, batch_size: int, keys: tuple[str, ...]):
    from caisp.data.dataset import RawRGBDataset

    split = _split()
    jd = codec_dir(point) if point is not None else None
    repeat = p.train.crops_per_image or crops_per_image(len(split["train"]), batch_size, p.train.num_workers)
    # Only the images the task reads, 8-bit ones as uint8 until the device (caisp.data.dataset).
    common = dict(jpeg_dir=jd, input_norm=p.model.input_norm, keys=keys, uint8=True)
    train = RawRGBDataset(RENDERED, split["train"], patch=p.train.patch, train=True, repeat=repeat, **common)
    val = RawRGBDataset(RENDERED, split["val"] or split["train"][:1], patch=None, train=False, **common)
    return train, val


def _fingerprint(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _fit(task, train, val, *, run: str, steps: int, batch_size: int, lr: float, p: Params,
         identity: list, seed: int | None = None, grad_clip: float | None | str = "train") -> dict:
    """Run the one training loop with resume state keyed by everything that defines the run, so an
    interrupted stage resumes, while a stage rerun with other params starts fresh (and the states
    of runs with other params are removed once this one completes)."""
    from caisp.train import TrainConfig, fit, is_main

    seed = p.seed if seed is None else seed
    key = run.replace("/", "_")
    state = STATES / f"{key}-{_fingerprint([identity, seed])}.pt"
    live = REPORTS / "train" / run
    if not state.exists() and live.exists():
        shutil.rmtree(live)  # a fresh run must not append to an older run's curves
    cfg = TrainConfig(steps=steps, batch_size=batch_size, lr=lr, seed=seed,
                      num_workers=p.train.num_workers, ckpt_every=p.train.ckpt_every,
                      val_every=max(1, steps // 10), device=p.train.device, amp=p.train.amp,
                      lr_decay=p.train.lr_decay,
                      grad_clip=p.train.grad_clip if grad_clip == "train" else grad_clip,
                      warmup_steps=min(p.train.warmup_steps, steps // 4),
                      threads=p.train.threads, deterministic=p.train.deterministic,
                      val_tile=p.evaluate.tile, val_overlap=p.evaluate.overlap,
                      log_dir=live, state_path=state)
    result = fit(task, train, val, cfg)
    if not is_main():
        # Under torchrun the other ranks are done: rank 0 alone saves, evaluates and writes metrics.
        raise SystemExit(0)
    for stale in STATES.glob(f"{key}-*.pt"):
        stale.unlink(missing_ok=True)
    return result


def _cas_kwargs(p: Params, pt: Point, variant: str) -> dict:
    if pt.codec != "jpeg" and variant not in ("unet", "acn"):
        raise CaispError(f"CAS variant {variant!r} models JPEG only; it has no {pt.codec} simulator")
    kw = {"base_width": p.model.base_width}
    if pt.codec == "jpeg":
        kw = {"qf": pt.quality, "subsampling": p.encode.subsampling, **kw}
    if variant == "unet":
        kw["residual"] = p.cas.residual
    if variant == "djs":
        kw["terms"] = p.cas.djs_terms
    return kw


def run_train_cas(p: Params, point: Point | int, variant: str) -> dict:
    """Train CAS-Net g (L_cas against the real codec) or, for the analytic simulators, just build it;
    then measure its fidelity to the real codec on the test split (paper Table 1)."""
    from caisp import models
    from caisp.checkpoint import save_model
    from caisp.evaluate import evaluate_cas
    from caisp.losses import CasTask
    from caisp.data.dataset import RawRGBDataset
    from caisp.train import resolve_device

    pt = as_point(point)
    config = {"type": variant, "kwargs": _cas_kwargs(p, pt, variant), "qf": pt.quality, "role": "cas"}
    if pt.codec != "jpeg":
        config["codec"] = pt.codec
    torch.manual_seed(p.seed)
    cas = models.build(variant, **config["kwargs"])
    result: dict = {}
    run = f"cas-{pt.name}-{variant}"
    if not getattr(cas, "trainable", False):
        # Analytic simulators have no training curve; the stage's log folder says so.
        io.write_json(REPORTS / "train" / run / "metrics.json", {"trained": False, "variant": variant})
    else:
        task = CasTask(cas)
        train, val = _datasets(p, pt, p.cas.batch_size, task.batch_keys())
        c = p.cas
        steps = c.acn_steps if variant == "acn" else c.steps
        result = _fit(task, train, val, run=run, steps=steps,
                      batch_size=c.batch_size, lr=c.lr, p=p, identity=[config, to_dict(c), to_dict(p.train)])
    save_model(cas_path(pt, variant), cas, config)
    split = _split()

    def fidelity(names: list[str]):
        data = RawRGBDataset(RENDERED, names, jpeg_dir=codec_dir(pt), patch=None, train=False,
                             input_norm=p.model.input_norm, keys=CasTask.batch_keys())
        return evaluate_cas(cas.eval(), data, device=resolve_device(p.train.device), tile=p.evaluate.tile,
                            overlap=p.evaluate.overlap)

    df = fidelity(split["test"])
    out = REPORTS / "cas" / f"{pt.name}-{variant}"
    io.write_text(out / "per_image.csv", df.to_csv(index=False))
    summary = {"qf": pt.quality, "variant": variant, **({"codec": pt.codec} if pt.codec != "jpeg" else {}), **{k: float(df[k].mean()) for k in df.columns
                                                if k not in ("stem", "model") and df[k].dtype.kind == "f"}}
    if "val_psnr" in result:
        summary["val_psnr"] = result["val_psnr"]
    # The simulator gate, on validation photos (the test photos only report): fine-tuning against a g
    # that is no better than the identity is the identity-g control under another name.
    val = fidelity(split["val"] or split["train"][:1])
    margin = float((val["psnr"] - val["psnr_identity"]).mean())
    summary["gate"] = {"val_margin_db": margin, "gate_db": p.cas.gate_db, "passed": margin >= p.cas.gate_db,
                       "n_val": int(len(val))}
    if not summary["gate"]["passed"]:
        print(f"warning: CAS {variant} at {pt.label} fails the simulator gate: it beats the identity by "
              f"{margin:+.3f} dB on the validation photos, less than cas.gate_db = {p.cas.gate_db} dB; the "
              f"report flags every result that uses it", file=sys.stderr, flush=True)
    io.write_json(out / "summary.json", summary)
    return summary


def _isp_config(p: Params, **extra) -> dict:
    cfas = Counter(im["cfa"] for im in _manifest()["images"])
    return {"type": "isp_net", "kwargs": {"base_width": p.model.base_width, "tone_prior": p.model.tone_prior},
            "role": "isp",
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
    i = p.isp
    task = IspTask(isp)
    train, val = _datasets(p, None, i.batch_size, task.batch_keys())
    result = _fit(task, train, val, run="isp-pretrain", steps=i.steps, batch_size=i.batch_size,
                  lr=i.lr, p=p, identity=[config, to_dict(i), to_dict(p.train)])
    save_model(isp_path("pretrained"), isp, config)
    io.write_json(REPORTS / "isp" / "pretrain.json", result)
    return result


def run_finetune(p: Params, point: Point | int | None = None, variant: str | None = None, frozen: bool = True,
                 control: str | None = None) -> dict:
    """Fine-tune the pretrained ISP-Net once per seed in `p.seeds`, with L_total and CAS g (frozen
    unless `frozen` is False), or as a control (`control`, and no variant):

    - "agnostic": lambda_isp * L_isp alone (lambda_comp = 0), the fair control;
    - "identity": g = identity, so L_comp = |f(x) - y| with the aware run's weights and loss scale.

    Seed s of every configuration sees the same crops in the same order, so that runs pair by seed."""
    from torch import nn

    from caisp.checkpoint import load_model, save_model
    from caisp.losses import CompressionAwareTask

    if control is not None:
        if control not in CONTROLS:
            raise CaispError(f"unknown control {control!r} (known: {', '.join(CONTROLS)})")
        kind = control
    else:
        kind = "aware" if frozen else "aware-unfrozen"
    lambda_comp = 0.0 if kind == "agnostic" else p.lambda_comp
    pt = None if point is None else as_point(point)
    name = run_name(kind, pt, variant)
    f = p.finetune
    # L_comp compares g(f(x)) with g(y): no real JPEG needed
    train, val = _datasets(p, None, f.batch_size, CompressionAwareTask.batch_keys())
    results = {}
    for seed in p.seeds:
        isp, base_config = load_model(isp_path("pretrained"))
        if kind == "agnostic":
            cas = None
        elif kind == "identity":
            cas = nn.Identity()
        else:
            cas = load_model(cas_path(pt, variant))[0]
        codec = {} if pt is None or pt.codec == "jpeg" else {"codec": pt.codec}
        config = {**base_config, "qf": pt.quality if pt else None, **codec, "cas": variant or control, "cas_frozen": frozen, "stage": "finetune",
                  "kind": kind, "seed": seed, "lambda_isp": p.lambda_isp, "lambda_comp": lambda_comp}
        task = CompressionAwareTask(isp.train(), cas, lambda_isp=p.lambda_isp, lambda_comp=lambda_comp,
                                    freeze_cas=frozen)
        results[seed] = _fit(task, train, val, run=f"{name}/seed{seed}", steps=f.steps,
                             batch_size=f.batch_size, lr=p.isp.lr * f.lr_scale, p=p, seed=seed,
                             grad_clip=f.grad_clip,
                             identity=[config, to_dict(f), to_dict(p.train), p.isp.lr])
        save_model(isp_path(kind, pt, variant, seed), isp, config)
    return results


# ---------------------------------------------------------------- evaluation and report

def _test_set(p: Params, names: list[str] | None = None):
    from caisp.data.dataset import RawRGBDataset

    return RawRGBDataset(RENDERED, names if names is not None else _split()["test"], jpeg_dir=None,
                         patch=None, train=False, input_norm=p.model.input_norm)


def _evaluate_models(p: Params, nets: dict, out: Path, ssim_points: list[Point]):
    """Real-codec evaluation of `nets` ({(kind, seed): net}) on the whole test photos at every
    evaluation point (each codec's sweep, training points included); writes out/per_image.csv."""
    from caisp.evaluate import evaluate_isps
    from caisp.train import resolve_device, set_determinism

    set_determinism(p.train.threads, p.train.deterministic)
    points = p.eval_points
    df = evaluate_isps(nets, _test_set(p), points=points, ssim_points=ssim_points,
                       settings={c: p.codec_settings(c) for c in {pt.codec for pt in points}},
                       device=resolve_device(p.train.device), tile=p.evaluate.tile,
                       overlap=p.evaluate.overlap, workers=p.evaluate.workers)
    source = {im["stem"]: im.get("source", im["stem"]) for im in _manifest()["images"]}
    df.insert(df.columns.get_loc("stem") + 1, "source", df.stem.map(source))
    io.write_text(out / "per_image.csv", df.to_csv(index=False))
    return df


def run_evaluate_controls(p: Params) -> None:
    """The baselines every aware ISP is compared with, evaluated once: the pretrained ISP (the paper's
    compression-agnostic ISP) and each seed of the two fine-tuned controls."""
    from caisp.checkpoint import load_model

    nets = {("pretrained", -1): load_model(isp_path("pretrained"))[0]}
    for control in CONTROLS:
        for seed in p.seeds:
            nets[(control, seed)] = load_model(isp_path(control, seed=seed))[0]
    _evaluate_models(p, nets, REPORTS / "eval" / "controls", ssim_points=p.points)


def _at(df, codec: str):
    """Rows of one codec (the statistics and RD curves compare within a codec's quality scale)."""
    return df[df.codec == codec]


def run_evaluate(p: Params, point: Point | int, variant: str, frozen: bool = True) -> dict:
    """Evaluate the aware ISP of (point, variant) for every seed, and compare it with each control
    (paired by photo and seed, bootstrap intervals) at its own point; and, against the fine-tuned
    control, at every other training point (the cross-codec table): reports/eval/<run>/summary.json."""
    import pandas as pd

    from caisp.checkpoint import load_model
    from caisp.stats import compare_all, cross_point

    pt = as_point(point)
    kind = "aware" if frozen else "aware-unfrozen"
    name = run_name(kind, pt, variant)
    nets = {(kind, seed): load_model(isp_path(kind, pt, variant, seed))[0] for seed in p.seeds}
    out = REPORTS / "eval" / name
    df = _evaluate_models(p, nets, out, ssim_points=[pt])  # SSIM costs ~25 JPEG round trips
    controls = pd.read_csv(REPORTS / "eval" / "controls" / "per_image.csv")
    summary = {"qf": pt.quality, "variant": variant, "frozen": frozen, "seeds": list(p.seeds),
               **({"codec": pt.codec} if pt.codec != "jpeg" else {}),
               **compare_all(_at(df, pt.codec), _at(controls, pt.codec), aware=kind, qf=pt.quality,
                             n_boot=p.evaluate.bootstrap, seed=p.seed, bd_min_overlap=p.evaluate.bd_min_overlap)}
    summary["cross"] = {other.name: {"codec": other.codec, "qf": other.quality,
                                     **cross_point(_at(df, other.codec), _at(controls, other.codec), aware=kind,
                                                   qf=other.quality, n_boot=p.evaluate.bootstrap, seed=p.seed)}
                        for other in p.points}
    io.write_json(out / "summary.json", summary)
    return summary


def _read_summaries(folder: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in sorted(folder.glob("*/summary.json"))}


def _figure4_examples(p: Params, pt: Point, variant: str, n: int = 2) -> list[dict]:
    """Run the fine-tuned control and the aware ISP (first seed each) on the first test photos."""
    from caisp.checkpoint import load_model
    from caisp.evaluate import isp_outputs, make_example
    from caisp.train import resolve_device, set_determinism

    # On the training device: the FiveK rehearsal's report ran these 12 MP photos on the CPU for minutes.
    set_determinism(p.train.threads, p.train.deterministic)
    device = resolve_device(p.train.device)
    test = _test_set(p, _split()["test"][:n])
    seed = p.seeds[0]
    outs = {}
    for label, path in (("agnostic", isp_path("agnostic", seed=seed)),
                        ("aware", isp_path("aware", pt, variant, seed))):
        net = load_model(path)[0]
        outs[label] = list(isp_outputs(net, test, device=device, tile=p.evaluate.tile, overlap=p.evaluate.overlap))
    return [make_example(f"{stem} ({pt.label}, CAS {variant})", gt, pred_ag, aware[1], qf=pt.quality,
                         codec=pt.codec, settings=p.codec_settings(pt.codec), crop=128)
            for (stem, pred_ag, gt), aware in zip(outs["agnostic"], outs["aware"])]


def _rd_curves(p: Params, pt: Point):
    """Figure 5's curves at `pt`: mean (BPP, PSNR(c(f(x)), y)) over photos and seeds per model, over the
    sweep of `pt`'s codec, for the controls and the frozen aware ISPs trained at `pt`."""
    import pandas as pd

    from caisp.evaluate import rd_points

    variants = p.cas.variants if pt.codec == "jpeg" else p.cas.codec_variants
    frames = [pd.read_csv(REPORTS / "eval" / "controls" / "per_image.csv")]
    for v in variants:
        df = pd.read_csv(REPORTS / "eval" / run_name("aware", pt, v) / "per_image.csv")
        frames.append(df.assign(model=f"aware ({v})"))
    return rd_points(_at(pd.concat(frames, ignore_index=True), pt.codec))


def _setup_text(p: Params) -> str:
    split = _split()
    src = split.get("sources", {})
    return (f"Data: {len(split['train'])} training, {len(split['val'])} validation and {len(split['test'])} test "
            f"images from {len(src.get('train', []))}/{len(src.get('val', []))}/{len(src.get('test', []))} "
            f"source photos; test photos: {', '.join(src.get('test', split['test']))}. Fine-tuning seeds: "
            f"{', '.join(map(str, p.seeds))}; ISP input: {p.model.input_norm}; "
            f"source: {p.data.source}.")


HEADLINE_START, HEADLINE_END = "<!-- headline:start (written by dvc repro) -->", "<!-- headline:end -->"


def _update_readme_headline(text: str, readme: Path = Path("README.md")) -> None:
    """The README's measured headline comes from this run, between its markers (never typed in)."""
    if not readme.is_file():
        return
    body = readme.read_text()
    if HEADLINE_START not in body or HEADLINE_END not in body:
        return
    head, rest = body.split(HEADLINE_START, 1)
    _, tail = rest.split(HEADLINE_END, 1)
    new = f"{head}{HEADLINE_START}\n{text}\n{HEADLINE_END}{tail}"
    if new != body:
        io.write_text(readme, new)


def configurations(p: Params) -> list[tuple[str, Point, str]]:
    """Every fine-tuned aware configuration of the current params, as (kind, point, variant): what the
    finetune and evaluate matrices of dvc.yaml expand to."""
    out = []
    for pt in p.points:
        variants = p.cas.variants if pt.codec == "jpeg" else p.cas.codec_variants
        out += [("aware", pt, v) for v in variants] + [("aware-unfrozen", pt, v) for v in p.cas.unfrozen]
    return out


def run_report(p: Params) -> Path:
    """reports/report.md: the paper's Tables 1-3 and Figures 4-5 re-made from this run, with the
    operating point, every control, seeds and intervals, a section per other codec and the cross-codec
    table; the README's headline block."""
    import pandas as pd

    from caisp.report import headline, write_report

    qf = Point("jpeg", max(p.qfs))  # the paper's Figure 5 shows the ISPs trained at QF 90
    variant = "unet" if "unet" in p.cas.variants else p.cas.variants[0]
    rd = _rd_curves(p, qf)
    io.write_text(REPORTS / "rd_curves.csv", rd.to_csv(index=False))
    codec_rd = {}
    for codec in dict.fromkeys(pt.codec for pt in p.points if pt.codec != "jpeg"):
        top = max(q.quality for q in p.points if q.codec == codec)  # its highest training quality
        codec_rd[codec] = _rd_curves(p, Point(codec, top))
    curves = {}
    for tsv in sorted((REPORTS / "train").glob("**/plots/metrics/val/psnr.tsv")):
        run = tsv.parents[3].relative_to(REPORTS / "train").as_posix()
        if run.startswith(("isp-pretrain", "cas-qf")) or run.endswith("seed0") and "qf90-unet" in run:
            curves[f"{run}: val PSNR"] = pd.read_csv(tsv, sep="\t").rename(columns={"psnr": "value"})
    ablation_csv = REPORTS / "ablation.csv"
    ablation = pd.read_csv(ablation_csv) if ablation_csv.exists() else None
    if ablation is not None and ablation.empty:
        ablation = None
    # Only this run's configurations: an earlier experiment's folders (another codec, a variant since
    # dropped) stay on disk when their stages leave dvc.yaml's matrices.
    configs = configurations(p)
    summaries = {k: v for k, v in _read_summaries(REPORTS / "eval").items()
                 if k in {run_name(kind, pt, v) for kind, pt, v in configs}}
    cas_tables = {k: v for k, v in _read_summaries(REPORTS / "cas").items()
                  if k in {f"{pt.name}-{v}" for kind, pt, v in configs if kind == "aware"}}
    path = write_report(REPORTS, cas_tables=cas_tables, isp_summaries=summaries,
                        ablation=ablation, rd=rd, curves=curves, examples=_figure4_examples(p, qf, variant),
                        setup=_setup_text(p), codec_rd=codec_rd)
    _update_readme_headline(headline(summaries, cas_tables=cas_tables) + "\n\n" + _setup_text(p))
    return path

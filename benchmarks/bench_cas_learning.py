"""Why the U-Net CAS-Net g does not learn on the default data (issue 20): a probe.

Usage (from the repository root, after `dvc repro` has built data/):

    python benchmarks/bench_cas_learning.py [--quick] [--steps N] [--long N] [--out PATH]

It trains the default CAS-Net (caisp.models.unet.CASUNet, base width from params.yaml) against the
real Pillow JPEG c(y) of the pipeline's own data (data/rendered targets, data/codecs/qf<Q> decoded
files, data/split.json) with a small training loop of its own (Adam, the real loop's warm-up +
cosine schedule from caisp.train.lr_factor, clipping as caisp.train), on one CPU thread, and
measures PSNR(g(y), c(y)) on whole validation photos with 8-bit rounded outputs, as
caisp.evaluate.evaluate_cas does. Probes, in one process, sequentially:

1. gradient norms (head, first encoder conv, bottleneck, total before clipping), steps 1..20;
2. schedule: default (warm-up, cosine, clip 1.0) vs constant lr; lr 1e-3 / 3e-3 / 1e-4;
3. loss: L1 vs L2 vs Charbonnier;
4. head initialisation: zero vs small random;
5. width 12 vs 24, crop 96 vs 192 (at batch 2: the same pixels per step);
6. augmentation: is rot90(jpeg(y)) == jpeg(rot90(y))? and training with / without 90-degree turns;
7. do the dataset's (y, c(y)) crops sit on the JPEG grid (re-encode the crop, compare; 4-px shift);
8. block-phase inputs (one-hot row/col mod 8 and the 16-grid parity) for a wrapped UNet;
9. a longer run of the best configuration, validation PSNR against steps.

Baselines on the same photos: identity, a Gaussian blur whose sigma is fitted (grid search, L1 to
c(y)) on training crops, and the analytic DJS. Results: benchmarks/results/cas_learning.md.
--quick: a few steps per configuration (smoke test, about a minute).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from caisp.data.codec import jpeg_roundtrip  # noqa: E402
from caisp.evaluate import psnr_u8  # noqa: E402
from caisp.models.blur import gaussian_blur  # noqa: E402
from caisp.models.unet import CASUNet  # noqa: E402
from caisp.params import load_params  # noqa: E402
from caisp.train import lr_factor  # noqa: E402

GRID = 16


def log(*a):
    print(*a, flush=True)


# --- data -----------------------------------------------------------------------------------------

class Data:
    """Training arrays in memory (uint8 HxWx3 y and c(y)), crops on the 16-grid like RawRGBDataset."""

    def __init__(self, qf: int, split: dict):
        self.qf = qf
        tdir, cdir = ROOT / "data/rendered/targets", ROOT / f"data/codecs/qf{qf}"
        load = lambda d, s: np.ascontiguousarray(np.load(d / f"{s}.npy"))  # noqa: E731
        self.train = [(load(tdir, s), load(cdir, s)) for s in split["train"]]
        val_stems = split["val"] or split["train"][:1]
        self.val = [(s, load(tdir, s), load(cdir, s)) for s in val_stems]
        self.test = [(s, load(tdir, s), load(cdir, s)) for s in split["test"]]

    def batch(self, gen: torch.Generator, n: int, patch: int, rot: bool, order: list) -> tuple:
        ys, cs = [], []
        for _ in range(n):
            if not order:
                order.extend(torch.randperm(len(self.train), generator=gen).tolist())
            y, c = self.train[order.pop()]
            H, W = y.shape[:2]
            s = min(patch, H // GRID * GRID, W // GRID * GRID)
            y0 = GRID * int(torch.randint((H - s) // GRID + 1, (), generator=gen))
            x0 = GRID * int(torch.randint((W - s) // GRID + 1, (), generator=gen))
            fv, fh = torch.randint(2, (2,), generator=gen).tolist()
            k = int(torch.randint(4, (), generator=gen)) if rot else 0
            out = []
            for a in (y, c):
                a = a[y0:y0 + s, x0:x0 + s]
                if fv:
                    a = a[::-1]
                if fh:
                    a = a[:, ::-1]
                a = np.rot90(a, k, axes=(0, 1))
                out.append(torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1))))
            ys.append(out[0])
            cs.append(out[1])
        return torch.stack(ys).float().div_(255), torch.stack(cs).float().div_(255)


def t_of(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1))).float().div_(255)[None]


def u8(x: torch.Tensor) -> np.ndarray:
    """As caisp.evaluate.to_uint8: clamp, x255, round."""
    return x[0].detach().float().clamp(0, 1).mul(255).round().to(torch.uint8).permute(1, 2, 0).numpy()


# --- models ---------------------------------------------------------------------------------------

class LinearCAS(nn.Module):
    """g(y) = y + conv5x5(y), zero-initialised: the smallest model that holds the fitted blur. How fast
    it learns what it can represent measures the conditioning of learning JPEG from pixels."""

    def __init__(self):
        super().__init__()
        self.head = nn.Conv2d(3, 3, 5, padding=2, padding_mode="reflect")
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, x):
        return x + self.head(x)


# --- configurations -------------------------------------------------------------------------------

@dataclass
class Cfg:
    name: str
    qf: int = 90
    steps: int = 200
    lr: float = 1e-3
    sched: str = "default"      # default: warm-up min(200, steps//4) + cosine + clip 1.0; const: none of them
    loss: str = "l1"            # l1 | l2 | charb
    head: str = "zero"          # zero | random (N(0, 0.01))
    width: int = 12
    patch: int = 96
    batch: int = 8
    rot: bool = True            # the dataset's 90-degree turns
    phase: bool = False
    eps: float = 1e-8           # Adam eps (torch default)
    init: str = "torch"         # torch: PyTorch's default conv init; kaiming: He normal (LeakyReLU 0.2 gain), zero biases
    domain: str = "pixel"       # pixel: the paper's U-Net on RGB; dct: caisp's CAS-Net on block-DCT coefficients;
                                # linear: y + a 5x5 linear filter of y (zero-initialised), which can represent the blur
    val_every: int = 50
    test: bool = False
    note: str = ""


def loss_fn(kind: str, pred, target):
    d = pred - target
    if kind == "l1":
        return d.abs().mean()
    if kind == "l2":
        return d.pow(2).mean()
    if kind == "charb":
        return torch.sqrt(d * d + 1e-6).mean()  # eps 1e-3 (~0.26/255)
    raise ValueError(kind)


def build(cfg: Cfg) -> nn.Module:
    torch.manual_seed(0)
    if cfg.domain == "linear":
        return LinearCAS()
    if cfg.domain == "dct":  # the pipeline's default CAS-Net (caisp.pipeline.cas.cas_config)
        return CASUNet(cfg.width, domain="dct", init="kaiming")
    # phase: caisp.models.unet.block_phase's 18 channels beside RGB; kaiming: He init, head still zero
    m = CASUNet(cfg.width, phase=cfg.phase, init="kaiming" if cfg.init == "kaiming" else "default")
    if cfg.head == "random":
        nn.init.normal_(m.head.weight, std=0.01)
    return m


@torch.no_grad()
def psnr_on(model, items) -> float:
    model.eval()
    vals = [psnr_u8(u8(model(t_of(y))), c) for _, y, c in items]
    model.train()
    return float(np.mean(vals))


def gnorm(p):
    return 0.0 if p.grad is None else float(p.grad.norm())


def train(cfg: Cfg, data: Data, ident: dict) -> dict:
    model = build(cfg)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=cfg.lr, eps=cfg.eps)
    sc = SimpleNamespace(steps=cfg.steps, lr_decay="cosine" if cfg.sched == "default" else "none",
                         warmup_steps=min(200, cfg.steps // 4) if cfg.sched == "default" else 0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, sc))
    clip = 1.0 if cfg.sched == "default" else None
    gen = torch.Generator().manual_seed(0)
    order: list = []
    losses, l1s, grads, curve = [], [], [], []
    train_s = 0.0
    for step in range(1, cfg.steps + 1):
        t0 = time.perf_counter()
        y, c = data.batch(gen, cfg.batch, cfg.patch, cfg.rot, order)
        pred = model(y)
        loss = loss_fn(cfg.loss, pred, c)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if step <= 20 and hasattr(model, "encoders"):
            enc0 = model.encoders[0][0].weight
            bott = model.bottleneck[0].weight
            tot = float(torch.sqrt(sum(p.grad.pow(2).sum() for p in params if p.grad is not None)))
            grads.append((step, gnorm(model.head.weight), gnorm(model.head.bias), gnorm(enc0), gnorm(bott), tot))
        if clip is not None:
            torch.nn.utils.clip_grad_norm_(params, clip)
        opt.step()
        sched.step()
        train_s += time.perf_counter() - t0
        losses.append(float(loss.detach()))
        l1s.append(float((pred.detach() - c).abs().mean()))
        if step % cfg.val_every == 0 or step == cfg.steps:
            v = psnr_on(model, data.val)
            curve.append((step, round(train_s, 1), v))
            log(f"  [{cfg.name}] step {step}: loss {np.mean(losses[-10:]):.6f} L1 {np.mean(l1s[-10:]):.6f} "
                f"val {v:.3f} dB ({v - ident['val']:+.3f} vs identity), {train_s:.0f} s")
    k = min(10, len(l1s))
    res = dict(cfg=cfg.__dict__.copy(), seconds=train_s, s_per_step=train_s / cfg.steps,
               loss_start=float(np.mean(losses[:k])), loss_end=float(np.mean(losses[-k:])),
               l1_start=float(np.mean(l1s[:k])), l1_end=float(np.mean(l1s[-k:])),
               val=curve[-1][2], curve=curve, grads=grads)
    if cfg.test:
        res["test"] = psnr_on(model, data.test)
    return res


# --- baselines and direct checks ------------------------------------------------------------------

def baselines(data: Data, n_crops: int) -> dict:
    gen = torch.Generator().manual_seed(123)
    ys, cs = data.batch(gen, n_crops, 96, False, [])
    sigmas = [0.0] + [round(0.3 + 0.05 * i, 2) for i in range(19)]
    fit = []
    for s in sigmas:
        b = gaussian_blur(ys, s)
        fit.append((s, float((b - cs).abs().mean()), float((b - cs).pow(2).mean()),
                    float((b.mul(255).round().div(255) - cs).abs().mean())))
    s_l1 = min(fit, key=lambda r: r[1])[0]
    s_l2 = min(fit, key=lambda r: r[2])[0]
    ev = lambda f, items: float(np.mean([psnr_u8(u8(f(t_of(y))), c) for _, y, c in items]))  # noqa: E731
    out = dict(fit=fit, sigma_l1=s_l1, sigma_l2=s_l2)
    out["identity"] = dict(val=ev(lambda x: x, data.val), test=ev(lambda x: x, data.test))
    out["blur"] = dict(val=ev(lambda x: gaussian_blur(x, s_l1), data.val), test=ev(lambda x: gaussian_blur(x, s_l1), data.test))
    out["blur_l2"] = dict(val=ev(lambda x: gaussian_blur(x, s_l2), data.val), test=ev(lambda x: gaussian_blur(x, s_l2), data.test))
    out["blur06"] = dict(val=ev(lambda x: gaussian_blur(x, 0.6), data.val), test=ev(lambda x: gaussian_blur(x, 0.6), data.test))
    try:
        from caisp import models
        djs = models.build("djs", qf=data.qf, subsampling="4:2:0", terms=9).eval()
        with torch.no_grad():
            out["djs"] = dict(val=ev(djs, data.val), test=ev(djs, data.test))
    except Exception as e:  # noqa: BLE001
        out["djs"] = dict(val=float("nan"), test=float("nan"), error=str(e))
    # Residual statistics on the crops: how much of c(y) - y is exactly zero / one level.
    d = (cs - ys).mul(255).round().abs()
    out["resid"] = dict(zero=float((d == 0).float().mean()), one=float((d == 1).float().mean()),
                        ge2=float((d >= 2).float().mean()))
    return out


def rotation_check(data: Data, n: int) -> dict:
    """PSNR of jpeg(T(y)) vs T(jpeg(y)) on 96-px grid crops (interior, 16 px off the edges)."""
    gen = torch.Generator().manual_seed(7)
    rows = {"rot90": [], "rot180": [], "flip_h": [], "flip_v": [], "transpose": [], "none": []}
    ops = {"rot90": lambda a: np.rot90(a, 1, (0, 1)), "rot180": lambda a: np.rot90(a, 2, (0, 1)),
           "flip_h": lambda a: a[:, ::-1], "flip_v": lambda a: a[::-1], "transpose": lambda a: a.transpose(1, 0, 2),
           "none": lambda a: a}
    for i in range(n):
        y = data.train[i % len(data.train)][0]
        H, W = y.shape[:2]
        y0 = GRID * int(torch.randint((H - 96) // GRID + 1, (), generator=gen))
        x0 = GRID * int(torch.randint((W - 96) // GRID + 1, (), generator=gen))
        crop = np.ascontiguousarray(y[y0:y0 + 96, x0:x0 + 96])
        j = jpeg_roundtrip(crop, data.qf, "4:2:0")[0]
        for k, op in ops.items():
            a = jpeg_roundtrip(np.ascontiguousarray(op(crop)), data.qf, "4:2:0")[0]
            b = np.ascontiguousarray(op(j))
            rows[k].append(psnr_u8(a[16:-16, 16:-16], b[16:-16, 16:-16]))
    return {k: float(np.mean(np.minimum(v, 99.0))) for k, v in rows.items()}


def alignment_check(qf: int, split: dict, n: int) -> dict:
    """Crops of the pipeline's own dataset: jpeg(crop of y) vs crop of c(y), aligned and shifted 4 px."""
    from caisp.data.dataset import RawRGBDataset
    ds = RawRGBDataset(ROOT / "data/rendered", split["train"], coded_dir=ROOT / f"data/codecs/qf{qf}", patch=96,
                       train=False, keys=("srgb", "coded"), uint8=True)
    tdir, cdir = ROOT / "data/rendered/targets", ROOT / f"data/codecs/qf{qf}"
    al, sh, ds_ok = [], [], []
    for i in range(min(n, len(ds))):
        item = ds[i]
        y = item["srgb"].permute(1, 2, 0).numpy()
        c = item["coded"].permute(1, 2, 0).numpy()
        j = jpeg_roundtrip(np.ascontiguousarray(y), qf, "4:2:0")[0]
        al.append(min(99.0, psnr_u8(j[16:-16, 16:-16], c[16:-16, 16:-16])))
        # The same window, moved 4 px off the grid (read from the full arrays).
        Y, C = np.load(tdir / f"{item['stem']}.npy"), np.load(cdir / f"{item['stem']}.npy")
        H, W = Y.shape[:2]
        y0, x0 = (H - 96) // 2 // GRID * GRID, (W - 96) // 2 // GRID * GRID
        ds_ok.append(bool(np.array_equal(Y[y0:y0 + 96, x0:x0 + 96], y)))
        ys = np.ascontiguousarray(Y[y0 + 4:y0 + 100, x0 + 4:x0 + 100])
        cs = C[y0 + 4:y0 + 100, x0 + 4:x0 + 100]
        js = jpeg_roundtrip(ys, qf, "4:2:0")[0]
        sh.append(min(99.0, psnr_u8(js[16:-16, 16:-16], cs[16:-16, 16:-16])))
    return dict(aligned=float(np.mean(al)), aligned_min=float(np.min(al)), shifted=float(np.mean(sh)),
                n=len(al), window_matches=all(ds_ok))


# --- report ---------------------------------------------------------------------------------------

def write_md(path: Path, S: dict):
    L = []
    L.append("# CAS-Net learning probe (issue 20)\n")
    L.append(f"Machine: {S['machine']}; torch {torch.__version__}, 1 thread. Date: {S['date']}. "
             f"Command: `{S['command']}`. Data: the pipeline's default data/ (train {S['n_train']} photos, "
             f"val {S['val_stems']}, test {S['n_test']} photos). PSNR(g(y), c(y)) on whole photos, "
             f"8-bit rounded outputs (as caisp.evaluate.evaluate_cas).\n")
    for qf, b in S.get("baselines", {}).items():
        L.append(f"## Baselines, QF {qf}\n")
        L.append(f"Blur sigma fitted on {S['n_fit']} training crops of 96 px: L1-optimal {b['sigma_l1']}, "
                 f"L2-optimal {b['sigma_l2']}. Residual |c(y) - y| on those crops: {100*b['resid']['zero']:.1f} % "
                 f"exactly 0, {100*b['resid']['one']:.1f} % one level, {100*b['resid']['ge2']:.1f} % two or more.\n")
        L.append("| simulator | val PSNR | test PSNR |\n|---|---|---|")
        for k, lab in (("identity", "identity"), ("blur", f"blur sigma {b['sigma_l1']} (L1 fit)"),
                       ("blur_l2", f"blur sigma {b['sigma_l2']} (L2 fit)"), ("blur06", "blur sigma 0.6"), ("djs", "DJS")):
            L.append(f"| {lab} | {b[k]['val']:.3f} | {b[k]['test']:.3f} |")
        L.append("\nBlur fit (training crops): sigma, L1, MSE x1e6, L1 after 8-bit rounding\n")
        L.append("| sigma | L1 | MSE x1e6 | L1 (rounded) |\n|---|---|---|---|")
        for s, l1, l2, l1r in b["fit"]:
            L.append(f"| {s} | {l1:.6f} | {1e6*l2:.3f} | {l1r:.6f} |")
        L.append("")
    for qf, r in S.get("rotation", {}).items():
        L.append(f"## Augmentation consistency, QF {qf}: PSNR(jpeg(T(y)), T(jpeg(y))) on 96-px grid crops (interior)\n")
        L.append("| T | PSNR (99 = identical) |\n|---|---|")
        for k, v in r.items():
            L.append(f"| {k} | {v:.2f} |")
        L.append("")
    for qf, a in S.get("alignment", {}).items():
        L.append(f"## Grid alignment of dataset crops, QF {qf}\n")
        L.append(f"RawRGBDataset crops (n={a['n']}, window == full-array window: {a['window_matches']}): PSNR(jpeg(crop y), "
                 f"crop c(y)) interior = {a['aligned']:.2f} dB (min {a['aligned_min']:.2f}; 99 = identical); "
                 f"the same window shifted by 4 px: {a['shifted']:.2f} dB.\n")
    runs = S.get("runs", [])
    if runs:
        L.append("## Training runs\n")
        L.append("Margins are val PSNR minus the identity's / the L1-fitted blur's on the same photos and QF. "
                 "'loss' is the config's own training loss (mean of first / last 10 steps), 'L1' the L1 of the same "
                 "batches. s/step: training only (1 thread).\n")
        L.append("| config | QF | steps | seconds | s/step | loss start -> end | L1 start -> end | val PSNR | vs identity | vs blur | test PSNR (vs id.) |")
        L.append("|---|---|---|---|---|---|---|---|---|---|---|")
        for r in runs:
            c = r["cfg"]
            b = S["baselines"][c["qf"]]
            t = f"{r['test']:.3f} ({r['test'] - b['identity']['test']:+.3f})" if "test" in r else ""
            L.append(f"| {c['name']} | {c['qf']} | {c['steps']} | {r['seconds']:.0f} | {r['s_per_step']:.3f} | "
                     f"{r['loss_start']:.3g} -> {r['loss_end']:.3g} | {r['l1_start']:.5f} -> {r['l1_end']:.5f} | "
                     f"{r['val']:.3f} | {r['val'] - b['identity']['val']:+.3f} | {r['val'] - b['blur']['val']:+.3f} | {t} |")
        L.append("\nConfigs: " + "; ".join(f"**{r['cfg']['name']}**: lr {r['cfg']['lr']}, sched {r['cfg']['sched']}, "
                                          f"loss {r['cfg']['loss']}, head {r['cfg']['head']}, width {r['cfg']['width']}, "
                                          f"crop {r['cfg']['patch']}x batch {r['cfg']['batch']}, rot {r['cfg']['rot']}, "
                                          f"phase {r['cfg']['phase']}, init {r['cfg']['init']}, eps {r['cfg']['eps']:g}, "
                                          f"domain {r['cfg'].get('domain', 'pixel')}" for r in runs) + "\n")
        L.append("## Validation curves (step: seconds, val PSNR)\n")
        for r in runs:
            L.append(f"- {r['cfg']['name']} (QF {r['cfg']['qf']}): " +
                     ", ".join(f"{s}: {t:.0f} s, {v:.3f}" for s, t, v in r["curve"]))
        L.append("\n## Gradient norms, steps 1-20 (before clipping)\n")
        for r in runs:
            if r["cfg"]["name"] not in ("default", "l2", "head_random", "const_lr") and not r["cfg"]["name"].startswith("default"):
                continue
            L.append(f"**{r['cfg']['name']}** (QF {r['cfg']['qf']}):\n")
            L.append("| step | head w | head b | enc0 conv | bottleneck conv | total |\n|---|---|---|---|---|---|")
            for g in r["grads"]:
                if g[0] in (1, 2, 3, 5, 10, 15, 20):
                    L.append(f"| {g[0]} | {g[1]:.2e} | {g[2]:.2e} | {g[3]:.2e} | {g[4]:.2e} | {g[5]:.2e} |")
            L.append("")
    if S.get("choice"):
        L.append(f"## Automatic choice\n\n{S['choice']}\n")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(L) + "\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--steps", type=int, default=None, help="steps per probe configuration (default 200)")
    ap.add_argument("--long", type=int, default=None, help="steps of the long run of the best config (default 800)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/cas_learning.md"))
    ap.add_argument("--only", nargs="*", default=None,
                    help="run only these configs, each NAME:key=value,key=value over the default (e.g. "
                         "eps:eps=1e-15 or x:loss=l2,rot=False,qf=80,test=True), and append their table to --out")
    args = ap.parse_args()
    torch.set_num_threads(1)
    S_steps = args.steps or (12 if args.quick else 200)
    L_steps = args.long or (24 if args.quick else 800)
    ve = max(1, S_steps // 4)
    out = Path(args.out)
    split = json.loads((ROOT / "data/split.json").read_text())
    p = load_params(str(ROOT / "params.yaml"))
    width = p.model.base_width
    patch = p.train.patch
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_develop import cpu_description

    S = dict(machine=f"{cpu_description()}, {torch.get_num_threads()} torch thread",
             date=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
             command="python benchmarks/bench_cas_learning.py" + (" --quick" if args.quick else ""),
             n_train=len(split["train"]), val_stems=", ".join(split["val"] or split["train"][:1]),
             n_test=len(split["test"]), n_fit=16 if args.quick else 64, baselines={}, rotation={}, alignment={}, runs=[])
    t_all = time.perf_counter()
    if args.only is not None:
        return only(args, S, split, width, patch, S_steps, ve, out)
    data = {}
    for qf in (90, 80):
        data[qf] = Data(qf, split)
        log(f"QF {qf}: baselines")
        S["baselines"][qf] = baselines(data[qf], S["n_fit"])
        b = S["baselines"][qf]
        log(f"  identity {b['identity']}, blur(sigma {b['sigma_l1']}) {b['blur']}, djs {b['djs']}")
        S["rotation"][qf] = rotation_check(data[qf], 4 if args.quick else 24)
        log(f"  rotation check {S['rotation'][qf]}")
        S["alignment"][qf] = alignment_check(qf, split, 4 if args.quick else 12)
        log(f"  alignment check {S['alignment'][qf]}")
    write_md(out, S)
    ident = {qf: dict(val=S["baselines"][qf]["identity"]["val"]) for qf in (90, 80)}

    def run(cfg: Cfg) -> dict:
        log(f"run {cfg.name} (QF {cfg.qf}, {cfg.steps} steps) at {time.perf_counter() - t_all:.0f} s")
        r = train(cfg, data[cfg.qf], ident[cfg.qf])
        S["runs"].append(r)
        write_md(out, S)
        return r

    base = Cfg("default", steps=S_steps, width=width, patch=patch, val_every=ve)
    R = {}
    R["default"] = run(replace(base, test=True))
    R["const_lr"] = run(replace(base, name="const_lr", sched="const"))
    R["lr3e-3"] = run(replace(base, name="lr3e-3", lr=3e-3))
    R["lr1e-4"] = run(replace(base, name="lr1e-4", lr=1e-4))
    R["l2"] = run(replace(base, name="l2", loss="l2"))
    R["charb"] = run(replace(base, name="charb", loss="charb"))
    R["head_random"] = run(replace(base, name="head_random", head="random"))
    R["no_rot"] = run(replace(base, name="no_rot", rot=False))
    # Greedy combination of the single-factor winners (by val PSNR at equal steps).
    v = lambda k: R[k]["val"]  # noqa: E731
    loss = max((("l1", "default"), ("l2", "l2"), ("charb", "charb")), key=lambda t: v(t[1]))[0]
    lr, sched = max(((1e-3, "default", "default"), (1e-3, "const", "const_lr"), (3e-3, "default", "lr3e-3"),
                     (1e-4, "default", "lr1e-4")), key=lambda t: v(t[2]))[:2]
    head = "random" if v("head_random") > v("default") else "zero"
    rot = not (v("no_rot") > v("default"))
    best = replace(base, name="best", loss=loss, lr=lr, sched=sched, head=head, rot=rot)
    R["best"] = run(best)
    R["best+phase"] = run(replace(best, name="best+phase", phase=True, rot=False))
    use_phase = R["best+phase"]["val"] > R["best"]["val"]
    best2 = replace(best, phase=use_phase, rot=False if use_phase else best.rot)
    best2_name = "best+phase" if use_phase else "best"
    R["best2_w24"] = run(replace(best2, name=f"{best2_name}+w24", width=2 * width))
    R["best2_crop192"] = run(replace(best2, name=f"{best2_name}+crop192/b2", patch=2 * patch, batch=2))
    S["choice"] = (f"best = loss {loss}, lr {lr}, sched {sched}, head {head}, rot {rot}; phase inputs "
                   f"{'kept' if use_phase else 'not kept'} ({R['best+phase']['val']:.3f} vs {R['best']['val']:.3f} dB).")
    write_md(out, S)
    R["default80"] = run(replace(base, name="default", qf=80, test=True))
    R["best80"] = run(replace(best2, name=f"{best2_name}", qf=80, test=True))
    R["long"] = run(replace(best2, name=f"{best2_name} long", steps=L_steps, val_every=max(1, L_steps // 8), test=True))
    log(f"done in {time.perf_counter() - t_all:.0f} s; wrote {out}")


def parse_cfg(spec: str, base: Cfg) -> Cfg:
    name, _, kv = spec.partition(":")
    kw: dict = {"name": name}
    for item in filter(None, kv.split(",")):
        k, v = item.split("=")
        t = type(getattr(base, k))
        kw[k] = (v in ("1", "True", "true")) if t is bool else t(v)
    return replace(base, **kw)


def only(args, S, split, width, patch, S_steps, ve, out: Path):
    """Extra configs on top of an existing results file: their baselines and runs as an appended section."""
    base = Cfg("default", steps=S_steps, width=width, patch=patch, val_every=ve)
    cfgs = [parse_cfg(s, base) for s in args.only]
    for c in cfgs:
        if c.steps != S_steps and c.val_every == ve:
            c.val_every = max(1, c.steps // 8)
    data, ident = {}, {}
    for qf in sorted({c.qf for c in cfgs}, reverse=True):
        data[qf] = Data(qf, split)
        S["baselines"][qf] = baselines(data[qf], S["n_fit"])
        ident[qf] = dict(val=S["baselines"][qf]["identity"]["val"])
    prev = out.read_text() if out.exists() else ""
    S["command"] = "python benchmarks/bench_cas_learning.py --only " + " ".join(args.only)
    for c in cfgs:
        log(f"run {c.name} (QF {c.qf}, {c.steps} steps)")
        S["runs"].append(train(c, data[c.qf], ident[c.qf]))
        tmp = out.with_suffix(".only.md")
        write_md(tmp, S)
        body = tmp.read_text().replace("# CAS-Net learning probe (issue 20)", "# Follow-up runs (--only)", 1)
        body = body.replace("## Baselines", "### Baselines").replace("## Training runs", "### Training runs")
        body = body.replace("## Validation curves", "### Validation curves").replace("## Gradient norms", "### Gradient norms")
        body = body.replace("### Baselines", "### Baselines (recomputed)").replace("\n# ", "\n## ")
        out.write_text(prev.rstrip() + "\n\n#" + body)
        tmp.unlink()


if __name__ == "__main__":
    main()

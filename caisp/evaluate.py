"""Evaluation with the real codec (Section IV-C/D/F): ISP outputs rounded to 8 bits, compressed by
Pillow with the ground truth's settings, scored against the compressed ground truth; CAS fidelity
against c(y). Every operating point (`caisp.codecs.Point`: JPEG, the paper's, or another codec) is
scored the same way."""
from __future__ import annotations

import math
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from caisp import metrics
from caisp.io import json_float
from caisp.models.unet import pad_to_multiple

Codec = tuple[Callable[[np.ndarray, int], bytes], Callable[[bytes], np.ndarray]]
# One row per (model, seed, photo, point). `qf` is the quality on the codec's own scale (JPEG's quality
# factor, WebP's quality, ...); `seed` the fine-tuning seed (empty for a pretrained ISP that every seed shares).
# psnr = PSNR(c(f(x)), c(y)), the paper's; psnr_y = PSNR(c(f(x)), y); psnr_before = PSNR(f(x), y), before
# the codec; ssim and ssim_y likewise, where computed; bpp_gt and psnr_gt = PSNR(c(y), y): the compressed ground truth's own rate and loss.
ISP_COLUMNS = ["model", "seed", "stem", "codec", "qf", "psnr", "ssim", "bpp", "psnr_y", "ssim_y", "psnr_before",
               "bpp_gt", "psnr_gt"]


def _codec(codec: str, settings: Mapping[str, Any] | None = None) -> Codec:
    """(encode(img, quality), decode(bytes)) of `codec` with `settings`; imported lazily."""
    from caisp.data.codec import encoder

    return encoder(codec, dict(settings or {}))


# --- metrics on 8-bit HxWx3 arrays -------------------------------------------------------------

def _t(img: np.ndarray, device: str | torch.device) -> torch.Tensor:
    # Decoded JPEGs are read-only views; np.require copies only then (torch wants writable memory).
    return torch.from_numpy(np.require(img, requirements=["C", "W"])).to(device).permute(2, 0, 1)[None].double()


_CHUNK = 1 << 18


def psnr_u8(a: np.ndarray, b: np.ndarray, device: str | torch.device = "cpu") -> float:
    """PSNR (dB, data range 255) of two uint8 HxWx3 images; inf when identical. The squared error is
    summed in exact integers (independent of summation order), in chunks of 256 Ki values that stay in
    the cache: at 12 MP 0.09 s on one core against 0.32 s (up to 0.7 s on a first call) for
    whole-image int64 copies, which made these sums most of the scoring's CPU time
    (benchmarks/results/evaluate.md)."""
    if a.shape != b.shape:
        raise ValueError(f"psnr_u8: shapes differ, {a.shape} and {b.shape}")
    fa, fb = np.ascontiguousarray(a).reshape(-1), np.ascontiguousarray(b).reshape(-1)
    sse = 0
    for i in range(0, fa.size, _CHUNK):
        d = fa[i : i + _CHUNK].astype(np.int64) - fb[i : i + _CHUNK]
        sse += int(np.dot(d, d))
    return metrics.mse_to_psnr(sse / fa.size, 255.0)


def ssim_u8(a: np.ndarray, b: np.ndarray, device: str | torch.device = "cpu") -> float:
    """SSIM of two uint8 HxWx3 pictures: on a GPU with torch, else with SciPy (`metrics.ssim_hwc`,
    the same float64 value ~4x faster than torch on a CPU)."""
    if torch.device(device).type == "cpu":
        return metrics.ssim_hwc(a, b, data_range=255.0)
    return float(metrics.ssim(_t(a, device), _t(b, device), data_range=255.0)[0])


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """(3,H,W) or (1,3,H,W) float in [0,1] -> HxWx3 uint8 (clamped, rounded as an 8-bit file would be)."""
    if x.dim() == 4:
        x = x[0]
    x = x.detach().float().clamp(0, 1).mul(255).round().to(torch.uint8)
    return x.permute(1, 2, 0).cpu().numpy()


# --- one image ---------------------------------------------------------------------------------

def _coded_gt(target: np.ndarray, qf: int, codec: Codec, target_bytes: bytes | None, device) -> dict[str, Any]:
    enc, dec = codec
    data = target_bytes if target_bytes is not None else enc(target, qf)
    decoded = dec(data)
    if decoded.shape != target.shape:
        raise ValueError(f"compressed ground truth is {decoded.shape}, target is {target.shape}")
    h, w = target.shape[:2]
    return {"decoded": decoded, "bpp_gt": metrics.bpp(len(data), h, w),
            "psnr_gt": psnr_u8(decoded, target, device)}


def _score(pred: np.ndarray, target: np.ndarray, gt: dict[str, Any], *, qf: int,
           codec: Codec, psnr_before: float, with_ssim: bool, device,
           ssim_vs: tuple[str, ...] = ("coded",)) -> dict[str, float]:
    enc, dec = codec
    data = enc(pred, qf)
    decoded = dec(data)
    h, w = pred.shape[:2]
    return {"psnr": psnr_u8(decoded, gt["decoded"], device),
            "ssim": ssim_u8(decoded, gt["decoded"], device) if with_ssim and "coded" in ssim_vs else math.nan,
            "bpp": metrics.bpp(len(data), h, w),
            "psnr_y": psnr_u8(decoded, target, device),
            "ssim_y": ssim_u8(decoded, target, device) if with_ssim and "y" in ssim_vs else math.nan,
            "psnr_before": psnr_before, "bpp_gt": gt["bpp_gt"], "psnr_gt": gt["psnr_gt"]}


def evaluate_pair(pred_uint8: np.ndarray, target_uint8: np.ndarray, *, point: Any,
                  settings: Mapping[str, Any] | None = None, target_bytes: bytes | None = None,
                  with_ssim: bool = True, device: str | torch.device = "cpu") -> dict[str, float]:
    """Score one ISP output at operating point `point` (a `caisp.codecs.Point`) with the codec's
    `settings`: PSNR/SSIM of c(f(x)) vs c(y), its bpp, PSNR(c(f(x)), y) ('psnr_y'), PSNR(f(x), y)
    ('psnr_before'), and the compressed ground truth's own bpp ('bpp_gt') and PSNR(c(y), y)
    ('psnr_gt'). `target_bytes` (the encode stage's file) replaces re-encoding y."""
    if pred_uint8.shape != target_uint8.shape or pred_uint8.dtype != np.uint8 or target_uint8.dtype != np.uint8:
        raise ValueError(f"evaluate_pair wants two uint8 HxWx3 arrays of one shape, got "
                         f"{pred_uint8.dtype}{pred_uint8.shape} and {target_uint8.dtype}{target_uint8.shape}")
    codec = _codec(point.codec, settings)
    gt = _coded_gt(target_uint8, point.quality, codec, target_bytes, device)
    return _score(pred_uint8, target_uint8, gt, qf=point.quality, codec=codec,
                  psnr_before=psnr_u8(pred_uint8, target_uint8, device), with_ssim=with_ssim, device=device)


# --- ISP inference -----------------------------------------------------------------------------

@torch.inference_mode()
def run_model(model: nn.Module, image: torch.Tensor, *, device: str | torch.device, tile: int | None,
              overlap: int = 32, multiple: int = 16, channels_last: bool = False) -> torch.Tensor:
    """Apply `model` to one (3,H,W) image at full size (tiled when larger than `tile`); (1,3,H,W) on CPU.
    The model is moved to `device` (checkpoints load on the CPU; analytic simulators hold buffers).
    `channels_last`: oneDNN's faster layout for convolution nets (ISP-Net: ~1.4x on a CPU, as develop
    runs it); the block-DCT simulators run faster in the default layout (measured)."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model.to(device, memory_format=fmt).eval()
    x = image[None] if image.dim() == 3 else image
    h, w = x.shape[-2:]
    # Bottom/right only: the 8x8 JPEG grid and the CFA phase stay at the top-left.
    x = pad_to_multiple(x.to(device, torch.float32), multiple).contiguous(memory_format=fmt)
    if tile is not None and max(x.shape[-2:]) > tile:
        from caisp.tiling import run_tiled

        y = run_tiled(model, x, tile, overlap, model=model)
    else:
        y = model(x)
    return y[..., :h, :w].float().cpu()


def isp_outputs(model: nn.Module, dataset: Sequence[dict], *, device: str | torch.device,
                tile: int | None = None, overlap: int = 32) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """Yield (stem, f(x) as uint8, y as uint8) for every full-size image of `dataset`."""
    for i in range(len(dataset)):
        item = dataset[i]
        pred = run_model(model, item["raw"], device=device, tile=tile, overlap=overlap, channels_last=True)
        yield item["stem"], to_uint8(pred), to_uint8(item["srgb"])


def evaluate_isps(models: Mapping[tuple[str, int | None], nn.Module], dataset: Sequence[dict], *,
                  points: Sequence[Any], ssim_points: Sequence[Any] = (),
                  settings: Mapping[str, Mapping[str, Any]] | None = None,
                  device: str | torch.device = "cpu", tile: int | None = None, overlap: int = 32,
                  ssim_all: bool = False, ssim_vs: Sequence[str] = ("coded",), workers: int = 1) -> pd.DataFrame:
    """One row per (model, seed, stem, codec, qf) over the operating points.

    `points` are `caisp.codecs.Point`s (codec, quality), with `settings` {codec: encoder settings}.
    `models` maps (label, seed) to a network, seed None for a model that has no fine-tuning seed.
    Each model runs once per image; the compressed ground truth is encoded once per (image, point) and
    shared by all models. SSIM is computed at the `ssim_points` (elsewhere NaN) unless `ssim_all`: it
    costs ~10x a JPEG round trip on CPU; against c(y) (column ssim) and/or y (ssim_y), as `ssim_vs`
    says ("coded", "y")."""
    from concurrent.futures import ThreadPoolExecutor

    settings = settings or {}
    codecs = {c: _codec(c, settings.get(c)) for c in dict.fromkeys(pt.codec for pt in points)}
    ssim_at = set(ssim_points)
    rows: list[dict[str, Any]] = []
    # The codec work (a round trip per point, for JPEG at 12 MP ~0.2 s) runs in threads: Pillow and
    # numpy release the GIL, and map keeps the order of the points, so the rows do not depend on `workers`.
    with ThreadPoolExecutor(max(1, workers)) as pool:
        for i in range(len(dataset)):
            item = dataset[i]
            stem, target = item["stem"], to_uint8(item["srgb"])
            gts = dict(zip(points, pool.map(lambda pt: _coded_gt(target, pt.quality, codecs[pt.codec], None, device),
                                            points)))
            for (label, seed), model in models.items():
                pred = to_uint8(run_model(model, item["raw"], device=device, tile=tile, overlap=overlap,
                                          channels_last=True))
                before = psnr_u8(pred, target, device)
                scores = pool.map(lambda pt: _score(pred, target, gts[pt], qf=pt.quality, codec=codecs[pt.codec],
                                                    psnr_before=before, with_ssim=ssim_all or pt in ssim_at,
                                                    device=device, ssim_vs=tuple(ssim_vs)), points)
                rows += [{"model": label, "seed": seed, "stem": stem, "codec": pt.codec, "qf": pt.quality, **sc}
                         for pt, sc in zip(points, scores)]
    return pd.DataFrame(rows, columns=ISP_COLUMNS).astype({"seed": "Int64"})


# --- summaries ---------------------------------------------------------------------------------

def _finite_mean(s: pd.Series) -> float | None:
    s = pd.to_numeric(s, errors="coerce").replace([np.inf, -np.inf], np.nan).dropna()
    return json_float(s.mean()) if len(s) else None


# --- CAS fidelity (Table 1) --------------------------------------------------------------------

def evaluate_cas(cas: nn.Module | None, dataset: Sequence[dict], *, device: str | torch.device = "cpu",
                 tile: int | None = None, overlap: int = 32) -> pd.DataFrame:
    """Per test image: PSNR/SSIM of g(y) (8-bit) vs the real codec's c(y), and of y vs c(y) (psnr_gt,
    ssim_gt: the identity simulator's score, the same quantity as the ISP rows' psnr_gt). `cas=None`
    gives the latter only."""
    rows = []
    for i in range(len(dataset)):
        item = dataset[i]
        if "coded" not in item:
            raise ValueError("evaluate_cas needs a dataset built with coded_dir (items lack 'coded')")
        y, cy = to_uint8(item["srgb"]), to_uint8(item["coded"])
        row: dict[str, Any] = {"stem": item["stem"], "psnr_gt": psnr_u8(y, cy, device),
                               "ssim_gt": ssim_u8(y, cy, device)}
        if cas is not None:
            gy = to_uint8(run_model(cas, item["srgb"], device=device, tile=tile, overlap=overlap))
            row["psnr"], row["ssim"] = psnr_u8(gy, cy, device), ssim_u8(gy, cy, device)
        rows.append(row)
    return pd.DataFrame(rows)


def summarize_cas(df: pd.DataFrame) -> dict[str, float | int | None]:
    """Means of evaluate_cas columns: psnr, ssim (None without a CAS), psnr_gt, ssim_gt, n."""
    out: dict[str, float | int | None] = {k: (_finite_mean(df[k]) if k in df else None)
                                          for k in ("psnr", "ssim", "psnr_gt", "ssim_gt")}
    out["n"] = int(len(df))
    return out


# --- Figure 4 material -------------------------------------------------------------------------

def make_example(title: str, gt: np.ndarray, agnostic_pred: np.ndarray, aware_pred: np.ndarray, *,
                 point: Any, settings: Mapping[str, Any] | None = None, crop: int | None = 256) -> dict[str, Any]:
    """Compress both ISP outputs at operating point `point` with the codec's `settings` and crop the
    window where the aware model helps most (Figure 4)."""
    enc, dec = _codec(point.codec, settings)
    qf = point.quality
    h, w = gt.shape[:2]
    out: dict[str, Any] = {"title": title}
    coded = {}
    for name, img in (("agnostic", agnostic_pred), ("aware", aware_pred)):
        data = enc(img, qf)
        coded[name] = dec(data)
        out[f"{name}_bpp"] = metrics.bpp(len(data), h, w)
    y0 = x0 = 0
    if crop is not None and crop < min(h, w):
        gain = (np.abs(coded["agnostic"].astype(np.int16) - gt).mean(2)
                - np.abs(coded["aware"].astype(np.int16) - gt).mean(2))
        # Coarse grid search on an integral image: cheap and deterministic.
        ii = np.pad(gain.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
        step = max(crop // 4, 8)
        best = -np.inf
        for yy in range(0, h - crop + 1, step):
            for xx in range(0, w - crop + 1, step):
                s = ii[yy + crop, xx + crop] - ii[yy, xx + crop] - ii[yy + crop, xx] + ii[yy, xx]
                if s > best:
                    best, y0, x0 = s, yy, xx
        sl = (slice(y0, y0 + crop), slice(x0, x0 + crop))
    else:
        sl = (slice(None), slice(None))
    out["gt"] = gt[sl]
    for name in ("agnostic", "aware"):
        out[f"{name}_coded"] = coded[name][sl]
        out[f"{name}_psnr"] = psnr_u8(coded[name], gt)  # whole image, as reported under the crops
    out["crop"] = (y0, x0, crop)
    return out

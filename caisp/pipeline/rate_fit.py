"""Stage `fit_rate` (issue 22): the JPEG size estimate R of `caisp.rate` fitted per QF to the real
baseline JPEG sizes of the training photos and validated on the others (and the features and fit
measures that evaluate_rate applies to ISP outputs)."""
from __future__ import annotations

from typing import Iterator

import numpy as np

from caisp import io
from caisp.codecs import JPEG, Point
from caisp.params import Params
from caisp.pipeline import layout

# What the estimate is fitted and validated on besides the photos themselves: smoother and sharper
# versions of them, the directions a rate-aware ISP can move its pictures in (Pillow filters, fixed).
VERSIONS = ("photo", "blurred", "sharpened")


def _versions(img: np.ndarray) -> Iterator[tuple[str, np.ndarray]]:
    from PIL import Image, ImageFilter

    im = Image.fromarray(img)
    yield "photo", img
    yield "blurred", np.asarray(im.filter(ImageFilter.GaussianBlur(1.0)))
    yield "sharpened", np.asarray(im.filter(ImageFilter.UnsharpMask(radius=2, percent=80, threshold=0)))


def _features(est, img: np.ndarray) -> np.ndarray:
    import torch

    x = torch.from_numpy(np.array(img)).permute(2, 0, 1)[None].float() / 255.0  # a writable copy
    with torch.no_grad():
        return est.features(x)[0].double().numpy()


def fit_quality(pred: np.ndarray, real: np.ndarray) -> dict:
    """How well predicted bits follow the real ones: Spearman's rank correlation, mean and largest
    absolute relative error (%), over `n` files."""
    from scipy.stats import spearmanr

    pred, real = np.asarray(pred, float), np.asarray(real, float)
    err = 100 * np.abs(pred - real) / real
    rho = spearmanr(pred, real).statistic if len(real) > 2 else None
    return {"n": int(len(real)), "spearman": io.json_float(rho), "mean_abs_err_pct": io.json_float(err.mean()),
            "max_abs_err_pct": io.json_float(err.max())}


def run_fit_rate(p: Params, point: Point) -> dict:
    """R's weights at `point`, fitted (non-negative least squares, relative error) to the real baseline
    JPEG sizes of the training photos in every version (VERSIONS); validated on the validation and test
    photos, which the fit never saw: models/rate/<point>.json and reports/rate/<point>.json."""
    from caisp.data.codec import encode
    from caisp.data.store import read_window
    from caisp.rate import FEATURES, JPEGRate, check_jpeg, fit, save

    check_jpeg(point)
    est = JPEGRate(point.quality, p.encode.subsampling)
    split = layout.split()
    rows = {"train": [], "held_out": []}
    for part, stems in (("train", split["train"]), ("held_out", split["val"] + split["test"])):
        for stem in stems:
            target = read_window(layout.RENDERED / "targets" / f"{stem}.npy")
            for version, img in _versions(target):
                bits = 8 * len(encode(img, JPEG.name, point.quality, **p.codec_settings(JPEG.name)))
                rows[part].append((version, _features(est, img), bits))
    feats = {k: np.stack([r[1] for r in v]) for k, v in rows.items()}
    bits = {k: np.array([r[2] for r in v], float) for k, v in rows.items()}
    w = fit(feats["train"], bits["train"])
    summary = {"point": point.name, "qf": point.quality, "subsampling": p.encode.subsampling,
               "features": list(FEATURES), "n_train_photos": len(split["train"]),
               "n_held_out_photos": len(split["val"]) + len(split["test"])}
    for part in rows:
        pred = feats[part] @ w
        summary[part] = fit_quality(pred, bits[part])
        summary[part]["versions"] = {v: fit_quality(pred[m], bits[part][m]) for v in VERSIONS
                                     if (m := np.array([r[0] == v for r in rows[part]])).any()}
    save(layout.rate_model(point), point.quality, p.encode.subsampling, w)
    io.write_json(layout.rate_report(point), summary)
    return summary

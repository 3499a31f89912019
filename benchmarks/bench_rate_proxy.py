"""Does the differentiable rate proxy (caisp.rate.JPEGRate) predict real JPEG sizes? (issue 22)

    python benchmarks/bench_rate_proxy.py [--qfs 50 70 80 90 95]

Fits the proxy's weights to the real libjpeg (Pillow, baseline, 4:2:0) sizes of half the default
data's photos (scikit-image's 9 and the Kodak 24, split by photo) over a QF sweep, then scores it on
the other half: as they are, and as an ISP would change them (blurred, sharpened, noisier), since a
rate-aware ISP moves its output away from the photos the weights were fitted on. Reports the rank
correlation (Spearman) and the relative error of predicted against real bytes, per QF and per
variant, and whether a step against the proxy's gradient shrinks the real files. Writes
benchmarks/results/rate_proxy.md.
"""
from __future__ import annotations

import argparse
import datetime
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from caisp.io import write_text  # noqa: E402


VARIANTS = ("photo", "blur 1.0", "sharpen", "noise 2/255")


def _variants(img: np.ndarray) -> dict[str, np.ndarray]:
    """The photo and what an ISP might make of it (uint8 HxWx3)."""
    import torch

    from caisp.models.blur import gaussian_blur

    x = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255
    soft = gaussian_blur(x, 1.0)
    rng = np.random.default_rng(0)
    out = {"photo": x, "blur 1.0": soft, "sharpen": (x + 1.0 * (x - soft)).clamp(0, 1),
           "noise 2/255": (x + torch.from_numpy(rng.normal(0, 2 / 255, x.shape)).float()).clamp(0, 1)}
    assert tuple(out) == VARIANTS
    return {k: (v[0].permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8) for k, v in out.items()}


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).statistic)


def _gradient_check(photos, fit_set, weights, qfs) -> list[str]:
    """Step each held-out photo by 1/255 against the sign of the proxy's gradient: do the real bytes
    fall, and by about what the proxy predicts?"""
    import torch

    from caisp.data.codec import encode_jpeg
    from caisp.rate import JPEGRate

    out = ["Gradient: each held-out photo stepped by 1/255 against the sign of the proxy's gradient "
           "(x - sign(dR/dx) / 255, clamped, rounded to 8 bits), real bytes before and after:", "",
           "| QF | photos whose real file shrank | real change (mean) | predicted change (mean) |",
           "| ---: | ---: | ---: | ---: |"]
    for qf in qfs:
        rate = JPEGRate(qf, weights=weights[qf])
        shrank, real_d, pred_d = 0, [], []
        held = [(n, im) for n, im in photos if n not in fit_set]
        for _, img in held:
            x = (torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255).requires_grad_(True)
            bits = rate(x)
            bits.backward()
            x2 = ((x.detach() - x.grad.sign() / 255).clamp(0, 1) * 255).round() / 255
            im2 = (x2[0].permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)
            before, after = 8 * len(encode_jpeg(img, qf)), 8 * len(encode_jpeg(im2, qf))
            shrank += after < before
            real_d.append(after / before - 1)
            pred_d.append(float(rate(x2)) / float(bits) - 1)
        out.append(f"| {qf} | {shrank} / {len(held)} | {100 * np.mean(real_d):+.1f} % | {100 * np.mean(pred_d):+.1f} % |")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--qfs", type=int, nargs="+", default=[50, 70, 80, 90, 95])
    args = ap.parse_args()

    import torch

    from caisp.data.codec import encode_jpeg
    from caisp.data.synthetic import load_photos
    from caisp.rate import FEATURES, JPEGRate, fit

    torch.set_num_threads(2)
    photos = [(name, img) for name, _, img in load_photos()]
    fit_set = {name for i, (name, _) in enumerate(sorted(photos)) if i % 2 == 0}
    rows = []  # (qf, variant, photo, held out, features, real bits, pixels)
    for name, img in photos:
        for variant, im in _variants(img).items():
            x = torch.from_numpy(im).permute(2, 0, 1)[None].float() / 255
            for qf in args.qfs:
                f = JPEGRate(qf).features(x)[0].numpy()
                rows.append((qf, variant, name, name not in fit_set, f, 8 * len(encode_jpeg(im, qf)),
                             im.shape[0] * im.shape[1]))
    lines = [
        "# Rate proxy against real JPEG bytes", "",
        f"Written by `benchmarks/bench_rate_proxy.py` on {datetime.date.today()}: `caisp.rate.JPEGRate` "
        f"(features {', '.join(FEATURES)}), fitted per QF by non-negative least squares on the photos "
        f"(as they are) of {len(fit_set)} of the {len(photos)} default photos, scored on the other "
        f"{len(photos) - len(fit_set)} (held out, every variant). Real sizes: Pillow baseline JPEG, 4:2:0.", "",
        "| QF | variant | photos | Spearman (held out) | mean abs rel. error | max abs rel. error | bpp real (mean) |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    weights = {}
    for qf in args.qfs:
        train = [r for r in rows if r[0] == qf and not r[3] and r[1] == "photo"]
        w = fit(np.stack([r[4] for r in train]), np.array([r[5] for r in train]))
        weights[qf] = w
        for variant in VARIANTS:
            test = [r for r in rows if r[0] == qf and r[3] and r[1] == variant]
            real = np.array([r[5] for r in test], float)
            pred = np.stack([r[4] for r in test]) @ w
            rel = np.abs(pred - real) / real
            pixels = np.array([r[6] for r in test], float)
            lines.append(f"| {qf} | {variant} | {len(test)} | {_spearman(pred, real):.3f} | {rel.mean():.3f} | "
                         f"{rel.max():.3f} | {np.mean(real / pixels):.3f} |")
    # Pooled over QFs and variants: does the proxy order every held-out file by size?
    test = [r for r in rows if r[3]]
    pred = np.array([r[4] @ weights[r[0]] for r in test])
    real = np.array([r[5] for r in test], float)
    lines += ["", f"All held-out files pooled ({len(test)}: QFs x variants x photos): Spearman "
              f"{_spearman(pred, real):.4f}, mean abs rel. error {np.mean(np.abs(pred - real) / real):.3f}.", "",
              "Weights (bits per unit of each feature):", "",
              "| QF | " + " | ".join(FEATURES) + " |", "| ---: |" + " ---: |" * len(FEATURES)]
    lines += [f"| {qf} | " + " | ".join(f"{v:.3f}" for v in w) + " |" for qf, w in weights.items()]
    lines += ["", *_gradient_check(photos, fit_set, weights, args.qfs)]
    text = "\n".join(lines) + "\n"
    print(text)
    write_text(ROOT / "benchmarks/results/rate_proxy.md", text)


if __name__ == "__main__":
    main()

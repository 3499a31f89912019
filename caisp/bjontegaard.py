"""Bjontegaard deltas (VCEG-M33) with piecewise cubic Hermite interpolation, as in the current
JVET common-test-conditions spreadsheet and CompressAI: curves are interpolated on log10(rate) with
`PchipInterpolator` and integrated exactly over the interval where both curves are defined."""
from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy.interpolate import PchipInterpolator


def _curve(rate: Sequence[float], psnr: Sequence[float], name: str) -> tuple[np.ndarray, np.ndarray]:
    r = np.asarray(rate, dtype=float).ravel()
    q = np.asarray(psnr, dtype=float).ravel()
    if r.shape != q.shape:
        raise ValueError(f"Bjontegaard: curve {name} has {r.size} rates but {q.size} PSNRs")
    if r.size < 2:
        raise ValueError(f"Bjontegaard: curve {name} needs at least 2 points, got {r.size}")
    if not (np.all(np.isfinite(r)) and np.all(np.isfinite(q))):
        raise ValueError(f"Bjontegaard: curve {name} has non-finite values")
    if np.any(r <= 0):
        raise ValueError(f"Bjontegaard: curve {name} has non-positive rates")
    return np.log10(r), q


def _avg_over_overlap(x_a: np.ndarray, y_a: np.ndarray, x_b: np.ndarray, y_b: np.ndarray,
                      what: str) -> float:
    """Mean of (y_b - y_a) over the common x range, each y interpolated (pchip) on sorted x."""
    fits = []
    for x, y, name in ((x_a, y_a, "a"), (x_b, y_b, "b")):
        order = np.argsort(x)
        x, y = x[order], y[order]
        if np.any(np.diff(x) == 0):
            raise ValueError(f"Bjontegaard: curve {name} repeats a {what} value; points must be distinct")
        fits.append((x, PchipInterpolator(x, y)))
    lo = max(fits[0][0][0], fits[1][0][0])
    hi = min(fits[0][0][-1], fits[1][0][-1])
    if not hi > lo:
        raise ValueError(f"Bjontegaard: the two curves do not overlap in {what} "
                         f"(a: {x_a.min():.4g}..{x_a.max():.4g}, b: {x_b.min():.4g}..{x_b.max():.4g})")
    area_a = fits[0][1].integrate(lo, hi)
    area_b = fits[1][1].integrate(lo, hi)
    return float((area_b - area_a) / (hi - lo))


def bd_psnr(rate_a: Sequence[float], psnr_a: Sequence[float],
            rate_b: Sequence[float], psnr_b: Sequence[float]) -> float:
    """Average PSNR gain (dB) of curve b over curve a at equal rate; positive = b is better."""
    lr_a, q_a = _curve(rate_a, psnr_a, "a")
    lr_b, q_b = _curve(rate_b, psnr_b, "b")
    return _avg_over_overlap(lr_a, q_a, lr_b, q_b, "log-rate")


def bd_rate(rate_a: Sequence[float], psnr_a: Sequence[float],
            rate_b: Sequence[float], psnr_b: Sequence[float]) -> float:
    """Average rate change (%) of curve b against curve a at equal PSNR; negative = b saves bits."""
    lr_a, q_a = _curve(rate_a, psnr_a, "a")
    lr_b, q_b = _curve(rate_b, psnr_b, "b")
    for lr, q, name in ((lr_a, q_a, "a"), (lr_b, q_b, "b")):
        # Rate as a function of PSNR exists only where PSNR rises with rate.
        if np.any(np.diff(q[np.argsort(lr)]) <= 0):
            raise ValueError(f"Bjontegaard: curve {name}'s PSNR does not rise with rate; BD-rate is undefined")
    # Swap axes: log-rate as a function of PSNR, averaged over the common PSNR range.
    d_log = _avg_over_overlap(q_a, lr_a, q_b, lr_b, "PSNR")
    return float((10.0**d_log - 1.0) * 100.0)

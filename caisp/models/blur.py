"""The blur baseline of the simulators: g(y) = y blurred by one Gaussian, its sigma fitted on the
training pairs.

At QF 80-90 most of what JPEG does to a photo is to take away fine detail, so a blur is a strong
stand-in for it: before it learned the codec's block grid, the U-Net CAS-Net was beaten by a 0.6 px
blur by ~0.8 dB. A learned simulator is worth its training only if it beats this (and the identity,
sigma = 0); the simulator gate (caisp.pipeline.cas) compares it with the better of the two. No
network: one number, fitted by `fit_sigma` to minimise the paper's L_cas (L1) over the training
images, so it works for any codec.
"""
from __future__ import annotations

import math
from typing import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from caisp import CaispError
from caisp.models.registry import register

# Candidate sigmas, px: 0 (the identity) to 2 in steps of 0.1, then steps of 0.02 around the best;
# 2 px is enough for QF >= 50 and the other codecs' default sweeps (the fitted values sit at 0.4-0.9).
COARSE = tuple(round(0.1 * i, 1) for i in range(21))
FINE = 0.02


def _kernel(sigma: float) -> list[float]:
    r = max(1, math.ceil(3 * sigma))
    k = [math.exp(-0.5 * (t / sigma) ** 2) for t in range(-r, r + 1)]
    return [v / sum(k) for v in k]


def _blur_axis(x: torch.Tensor, k: list[float], dim: int) -> torch.Tensor:
    """1-D convolution along `dim` (-1 or -2) as a sum of shifted copies: on the CPU a depthwise
    conv2d of a few taps is several times slower, and the fit runs ~30 blurs of every training image."""
    r = len(k) // 2
    n = x.shape[dim]
    pad = (r, r, 0, 0) if dim == -1 else (0, 0, r, r)
    xp = F.pad(x, pad, mode="reflect" if n > r else "replicate")
    out = xp.narrow(dim, 0, n) * k[0]
    for t in range(1, len(k)):
        out.add_(xp.narrow(dim, t, n), alpha=k[t])
    return out


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (B, C, H, W), reflect-padded at the borders (edge-replicated on sides
    shorter than the kernel's radius); sigma 0: x itself."""
    if sigma <= 0:
        return x
    k = _kernel(sigma)
    return _blur_axis(_blur_axis(x, k, -1), k, -2)


@register("blur")
class GaussianBlurCAS(nn.Module):
    """(B, 3, H, W) in [0, 1] -> y blurred by a Gaussian of `sigma` px (the fitted value is kept in
    the checkpoint's config, not in weights)."""

    trainable = False
    fitted = True  # caisp.pipeline.cas calls fit() on the training pairs

    def __init__(self, sigma: float = 0.0, **_: object) -> None:
        super().__init__()
        if isinstance(sigma, bool) or not isinstance(sigma, (int, float)) or not 0 <= sigma <= 10:
            raise CaispError(f"blur: sigma must be a number of pixels in 0..10, got {sigma!r}")
        self.sigma = float(sigma)

    def extra_repr(self) -> str:
        return f"sigma={self.sigma:g}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return gaussian_blur(x, self.sigma)

    def fit(self, pairs: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> dict:
        """Set sigma to the candidate with the least mean L1 to c(y) over `pairs` of (y, c(y)) float
        (3, H, W) images: the best of a 0.1 px grid, refined to 0.02 px around it. Returns {"sigma",
        "l1": {candidate: mean L1}}."""
        images = [(y[None].float(), cy[None].float()) for y, cy in pairs]
        if not images:
            raise CaispError("blur: no training pairs to fit sigma on")
        count = sum(cy.numel() for _, cy in images)
        l1: dict[float, float] = {}

        def score(sigmas) -> None:
            with torch.no_grad():
                for s in sigmas:
                    if s not in l1 and s >= 0:
                        l1[s] = sum(float((gaussian_blur(y, s) - cy).abs().sum()) for y, cy in images) / count

        score(COARSE)
        best = min(l1, key=l1.__getitem__)
        score(round(best + FINE * i, 2) for i in range(-4, 5))
        self.sigma = min(l1, key=lambda s: (l1[s], s))
        return {"sigma": self.sigma, "l1": {f"{s:g}": v for s, v in sorted(l1.items())}}

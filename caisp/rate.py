"""R(x): a differentiable estimate of a baseline JPEG's size, from the quantised DCT coefficients that
the DJS simulator computes (issue 22; the bit-budget idea of Talebi et al., "Better compression with
deep pre-editing", TIP 2021).

libjpeg codes each 8x8 block as its DC difference from the previous block's DC (a Huffman code for its
magnitude category, then that many bits) and its non-zero AC coefficients (a Huffman code for the run
of zeros before each and its category, then its bits), then an end-of-block code. So the bits of a
block are about: the magnitude bits log2(1 + |q|) of every coefficient, a symbol per non-zero AC
coefficient and per block, and the DC difference's bits. `JPEGRate` computes these features from the
unrounded quantised coefficients q = DCT / table (smooth in the image: log2(1 + |q|), and a sigmoid
at |q| = 0.5 for "non-zero"), separately for luma and chroma, and weighs them with per-feature
weights fitted to real libjpeg sizes (`fit`, non-negative least squares). Validated against the real
bytes of photos and ISP outputs by benchmarks/bench_rate_proxy.py.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from caisp import CaispError
from caisp.codecs import JPEG
from caisp.models.djs import _RGB2YCC, _blockwise, dct_matrix, parse_subsampling, quant_tables

FEATURES = ("luma_mag", "luma_nonzero", "luma_dc", "chroma_mag", "chroma_nonzero", "chroma_dc", "blocks", "file")
# Softness of the "non-zero after rounding" indicator, in quantisation steps: sigmoid((|q| - 0.5) / TAU).
TAU = 0.1
_SIG0 = float(torch.sigmoid(torch.tensor(-0.5 / TAU)))


class JPEGRate(nn.Module):
    """(B, 3, H, W) sRGB in [0, 1] -> estimated baseline JPEG bits (B,) at quality `qf`, differentiable.

    `weights` (one per FEATURES entry, bits per unit) come from `fit`; without them `forward` raises,
    `features` still works (it is what `fit` reads)."""

    def __init__(self, qf: int, subsampling: str = "4:2:0", weights: Sequence[float] | None = None) -> None:
        super().__init__()
        self.qf, self.subsampling = int(qf), subsampling
        self.factor = parse_subsampling(subsampling)
        luma, chroma = quant_tables(self.qf)
        self.register_buffer("q_luma", luma.float(), persistent=False)
        self.register_buffer("q_chroma", chroma.float(), persistent=False)
        self.register_buffer("dct", dct_matrix(8), persistent=False)
        self.register_buffer("rgb2ycc", torch.tensor(_RGB2YCC), persistent=False)
        w = torch.full((len(FEATURES),), float("nan")) if weights is None else torch.tensor(weights, dtype=torch.float32)
        if w.shape != (len(FEATURES),):
            raise ValueError(f"JPEGRate: {len(FEATURES)} weights ({', '.join(FEATURES)}), got {tuple(w.shape)}")
        self.register_buffer("weights", w, persistent=False)

    def _plane(self, plane: torch.Tensor, q: torch.Tensor) -> list[torch.Tensor]:
        """(magnitude bits, soft non-zero AC count, DC difference bits) of one plane, summed per image."""
        coef = _blockwise(plane, self.dct.to(plane.dtype), inverse=False)
        b, c, h, w = coef.shape
        blocks = (coef.reshape(b, c, h // 8, 8, w // 8, 8) / q.to(plane.dtype)[:, None, :]).permute(0, 1, 2, 4, 3, 5)
        blocks = blocks.reshape(b, c, h // 8, w // 8, 64)
        ac = blocks[..., 1:].abs()
        mag = torch.log2(1 + ac).sum((1, 2, 3, 4))
        # shifted so that a zero coefficient counts 0, not sigmoid(-0.5 / TAU) = 0.007 (~63 per block)
        nonzero = (torch.sigmoid((ac - 0.5) / TAU) - _SIG0).sum((1, 2, 3, 4))
        # DC is coded as the difference from the previous block in raster order (within a row here:
        # across rows the predictor is the previous row's last block, a small share of the blocks).
        dc = blocks[..., 0]
        dc_bits = torch.log2(1 + (dc[..., 1:] - dc[..., :-1]).abs()).sum((1, 2, 3))
        dc_bits = dc_bits + torch.log2(1 + dc[..., 0].abs()).sum((1, 2))
        return [mag, nonzero, dc_bits]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, len(FEATURES)) float32 features of images x (B, 3, H, W) in [0, 1]."""
        fy, fx = self.factor
        with torch.autocast(x.device.type, enabled=False):
            x = x.float()
            h, w = x.shape[-2:]
            ph, pw = (-h) % (8 * fy), (-w) % (8 * fx)
            if ph or pw:  # libjpeg extends the edges to whole MCUs
                x = F.pad(x, (0, pw, 0, ph), mode="replicate")
            ycc = torch.einsum("ij,bjhw->bihw", self.rgb2ycc, x * 255.0)
            y, c = ycc[:, :1] - 128.0, ycc[:, 1:]
            if fy > 1 or fx > 1:
                c = F.avg_pool2d(c, kernel_size=(fy, fx))
            luma = self._plane(y, self.q_luma)
            chroma = self._plane(c, self.q_chroma)
            blocks = torch.full_like(luma[0], (y.shape[-2] // 8) * (y.shape[-1] // 8)
                                     + 2 * (c.shape[-2] // 8) * (c.shape[-1] // 8))
            return torch.stack(luma + chroma + [blocks, torch.ones_like(blocks)], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not bool(torch.isfinite(self.weights).all()):
            raise RuntimeError("JPEGRate has no fitted weights: fit them with caisp.rate.fit")
        return self.features(x) @ self.weights.to(torch.float32)

    def bpp(self, x: torch.Tensor) -> torch.Tensor:
        """Estimated bits per pixel (B,)."""
        return self(x) / (x.shape[-2] * x.shape[-1])


def fit(features: np.ndarray, bits: np.ndarray) -> np.ndarray:
    """Non-negative least-squares weights (len(FEATURES),) with features @ w ~ bits (the file's
    headers and tables are the `file` feature's weight), weighted by 1/bits, so that every image's
    relative error counts alike, not the big ones'."""
    from scipy.optimize import nnls

    features, bits = np.asarray(features, np.float64), np.asarray(bits, np.float64)
    scale = 1.0 / bits
    w, _ = nnls(features * scale[:, None], bits * scale)
    return w


def save(path, qf: int, subsampling: str, weights: Sequence[float]) -> None:
    """A fitted estimate as JSON (what stage fit_rate writes and `load` reads)."""
    from caisp.io import write_json

    write_json(path, {"qf": int(qf), "subsampling": subsampling, "weights": dict(zip(FEATURES, map(float, weights)))})


def load(path) -> JPEGRate:
    """The estimate `save` wrote; a missing file says which stage makes it."""
    import json
    from pathlib import Path

    path = Path(path)
    if not path.is_file():
        raise CaispError(f"{path}: missing; run the fit_rate stage of its QF first")
    m = json.loads(path.read_text())
    if list(m.get("weights", {})) != list(FEATURES):
        raise CaispError(f"{path}: weights for {list(m.get('weights', {}))}, this estimate has {list(FEATURES)}")
    return JPEGRate(m["qf"], m["subsampling"], list(m["weights"].values()))


def check_jpeg(point) -> None:
    """The estimate models JPEG (DJS's tables): a rate run at another codec's point is refused."""
    if point.codec != JPEG.name:
        raise CaispError(f"the rate estimate models JPEG, not {point.spec.display}: rate runs exist for qfs only")


def lambda_of(lambdas: Sequence[float], text: str) -> float:
    """The value of `lambdas` (rate.lambdas) that `text`, DVC's spelling of it in a stage name, stands for."""
    try:
        lam = float(text)
    except ValueError:
        raise CaispError(f"--lambda-rate: {text!r} is not a number") from None
    if lam not in lambdas:
        raise CaispError(f"--lambda-rate: {text} is not in rate.lambdas {list(lambdas)}")
    return lam

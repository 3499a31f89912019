"""caisp.rate: the differentiable JPEG rate proxy (issue 22)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from caisp.data.codec import encode_jpeg
from caisp.rate import FEATURES, JPEGRate, fit


def _photos() -> list[np.ndarray]:
    from caisp.data.synthetic import load_photos

    return [img[:256, :384] for _, _, img in load_photos(kodak=False)]


def _x(img: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255


def test_features_shape_and_gradient() -> None:
    rate = JPEGRate(90, weights=[1.0] * len(FEATURES))
    x = torch.rand(2, 3, 40, 52, requires_grad=True)  # not whole MCUs: padded like libjpeg
    f = rate.features(x)
    assert f.shape == (2, len(FEATURES)) and bool(torch.isfinite(f).all())
    assert f[0, FEATURES.index("file")] == 1 and f[0, FEATURES.index("blocks")] == 6 * 8 + 2 * 3 * 4  # 48x64 after padding to MCUs
    rate(x).sum().backward()
    assert x.grad is not None and bool(torch.isfinite(x.grad).all()) and x.grad.abs().sum() > 0
    flat = torch.full((1, 3, 64, 64), 0.5)  # a flat image has no AC energy: only DC, blocks, file
    g = rate.features(flat)[0]
    assert g[FEATURES.index("luma_mag")] < 1e-3 and g[FEATURES.index("luma_nonzero")] < 1e-3
    with pytest.raises(RuntimeError, match="fitted"):
        JPEGRate(90)(x)
    with pytest.raises(ValueError, match="weights"):
        JPEGRate(90, weights=[1.0, 2.0])


def test_fit_recovers_weights() -> None:
    rng = np.random.default_rng(0)
    feats = rng.uniform(1, 100, (40, len(FEATURES)))
    w = rng.uniform(0, 3, len(FEATURES))
    assert np.allclose(fit(feats, feats @ w), w, atol=1e-6)


@pytest.mark.parametrize("qf", [80, 90])
def test_predicts_real_jpeg_sizes_of_held_out_photos(qf: int) -> None:
    """Fitted on crops of 5 photos, it orders and sizes crops of 4 others by their real libjpeg files."""
    from scipy.stats import spearmanr

    crops = [[p[i:i + 128, j:j + 128] for i in (0, 128) for j in (0, 128, 256)] for p in _photos()]
    def table(group):
        feats = np.stack([JPEGRate(qf).features(_x(c))[0].numpy() for c in group])
        return feats, np.array([8 * len(encode_jpeg(np.ascontiguousarray(c), qf)) for c in group], float)

    feats, bits = table([c for cs in crops[:5] for c in cs])
    held_feats, held_bits = table([c for cs in crops[5:] for c in cs])
    pred = held_feats @ fit(feats, bits)
    rel = np.abs(pred / held_bits - 1)
    assert rel.mean() < 0.1 and spearmanr(pred, held_bits).statistic > 0.95, (rel, pred, held_bits)
    lo = JPEGRate(qf - 20).features(_x(crops[0][0]))[0]
    hi = JPEGRate(qf).features(_x(crops[0][0]))[0]
    assert hi[FEATURES.index("luma_mag")] > lo[FEATURES.index("luma_mag")]  # a finer table, more bits

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
    return torch.from_numpy(np.array(img)).permute(2, 0, 1)[None].float() / 255  # a writable copy


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


def test_rate_term_in_the_loss_and_its_exact_control() -> None:
    """lambda_rate * R / pixels joins L_total; without it the task is the agnostic control, bit for bit."""
    from caisp import CaispError
    from caisp.losses import CompressionAwareTask

    torch.manual_seed(0)
    net = torch.nn.Conv2d(3, 3, 3, padding=1)
    batch = {"raw": torch.rand(2, 3, 32, 32), "srgb": torch.rand(2, 3, 32, 32)}
    rate = JPEGRate(80, weights=[1.0] * len(FEATURES))
    control = CompressionAwareTask(net, None, lambda_isp=0.1, lambda_comp=0.0)
    aware = CompressionAwareTask(net, None, lambda_isp=0.1, lambda_comp=0.0, rate=rate, lambda_rate=0.01)
    off = CompressionAwareTask(net, None, lambda_isp=0.1, lambda_comp=0.0, rate=rate, lambda_rate=0.0)
    base, logs = control(batch)
    total, logs_r = aware(batch)
    assert "l_rate" not in logs and set(logs_r) == {"l_isp", "l_rate"}
    bpp = rate.bpp(net(batch["raw"]).clamp(0, 1)).mean()
    assert total.item() == pytest.approx(base.item() + 0.01 * bpp.item(), rel=1e-6)
    assert torch.equal(off(batch)[0], base)  # lambda_rate 0: the estimate is not even run
    assert not any(p.requires_grad for p in rate.parameters())
    with pytest.raises(CaispError, match="lambda_rate"):
        CompressionAwareTask(net, None, lambda_comp=0.0, lambda_rate=0.1)
    with pytest.raises(CaispError, match="lambda_rate=-1"):
        CompressionAwareTask(net, None, lambda_comp=0.0, rate=rate, lambda_rate=-1)


def test_descending_the_rate_term_shrinks_the_real_file() -> None:
    """Three small steps against R's gradient (R fitted on the photos' versions, as stage fit_rate fits
    it; each step moves the steepest pixel by 2/255) make every real JPEG smaller: R points where
    libjpeg's bits go."""
    photos = [np.array(img) for img in _photos()]
    versions = [v for img in photos for v in _versions(img)]
    feats = np.stack([JPEGRate(80).features(_x(v))[0].numpy() for v in versions])
    rate = JPEGRate(80, weights=fit(feats, np.array([8 * len(encode_jpeg(v, 80)) for v in versions])))
    for img in photos:
        x = _x(img)
        for _ in range(3):
            x.requires_grad_(True)
            (g,) = torch.autograd.grad(rate.bpp(x.clamp(0, 1)).sum(), x)
            x = (x - 2 / 255 * g / g.abs().max()).detach()
        out = (x.clamp(0, 1) * 255).round().byte()[0].permute(1, 2, 0).numpy()
        assert len(encode_jpeg(out, 80)) < len(encode_jpeg(img, 80))


def _versions(img: np.ndarray):
    from caisp.pipeline.rate_fit import _versions as versions

    return [v for _, v in versions(img)]

"""U-Net ISP-Net / CAS-Net: shapes, parameter counts, attention, residual, channels_last + bf16."""
from __future__ import annotations

import pytest
import torch

from caisp import CaispError
from caisp.models import build, names
from caisp.models.unet import ChannelAttention, UNet


def _conv(ci: int, co: int, k: int = 3) -> int:
    return k * k * ci * co + co


def _block(ci: int, co: int) -> int:
    return _conv(ci, co) + 2 * _conv(co, co)


def _count(b: int, attention: bool, r: int = 8) -> int:
    """Hand formula: 4 encoder blocks, bottleneck at 16b, 4 decoder blocks on (up + skip), 1x1 head."""
    enc = _block(3, b) + _block(b, 2 * b) + _block(2 * b, 4 * b) + _block(4 * b, 8 * b)
    bottleneck = _block(8 * b, 16 * b)
    dec = _block(24 * b, 8 * b) + _block(12 * b, 4 * b) + _block(6 * b, 2 * b) + _block(3 * b, b)
    head = _conv(b, 3, k=1)
    ca = sum(2 * c * max(1, c // r) + max(1, c // r) + c for c in (8 * b, 4 * b, 2 * b, b)) if attention else 0
    return enc + bottleneck + dec + head + ca


def _params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def test_registered() -> None:
    assert {"isp_net", "unet"} <= set(names())
    assert build("isp_net").trainable and build("unet").trainable


@pytest.mark.parametrize(
    "name,base,expected",
    [("isp_net", 32, 11_796_511), ("unet", 32, 11_774_211), ("isp_net", 16, 2_950_609), ("unet", 16, 2_944_899)],
)
def test_parameter_counts(name: str, base: int, expected: int) -> None:
    assert _count(base, attention=name == "isp_net") == expected
    assert _params(build(name, base_width=base)) == expected


def test_attention_only_in_isp_net() -> None:
    isp, cas = build("isp_net", base_width=4), build("unet", base_width=4)
    assert sum(isinstance(m, ChannelAttention) for m in isp.modules()) == 4
    assert not any(isinstance(m, ChannelAttention) for m in cas.modules())


@pytest.mark.parametrize("name", ["isp_net", "unet"])
@pytest.mark.parametrize("hw", [(50, 70), (16, 16), (5, 3), (33, 17)])
def test_any_size(name: str, hw: tuple[int, int]) -> None:
    x = torch.rand(1, 3, *hw)
    with torch.no_grad():
        y = build(name, base_width=4)(x)
    assert y.shape == x.shape and torch.isfinite(y).all()


def test_residual() -> None:
    torch.manual_seed(0)
    x = torch.rand(2, 3, 20, 24)
    cas = build("unet", base_width=4)
    with torch.no_grad():
        assert torch.equal(cas(x), x)  # zero-initialised head: starts as the identity
        torch.nn.init.normal_(cas.head.weight)
        plain = UNet(4, residual=False)
        plain.load_state_dict(cas.state_dict())
        assert torch.allclose(cas(x), plain(x) + x, atol=1e-6)
    assert not build("isp_net", base_width=4).residual
    assert not build("unet", base_width=4, residual=False).residual


def test_cas_kwargs() -> None:
    build("unet", base_width=4, qf=90, subsampling="4:2:0")
    with pytest.raises(CaispError, match="bogus"):
        build("unet", base_width=4, bogus=1)


@pytest.mark.parametrize("name", ["isp_net", "unet"])
def test_channels_last_bf16(name: str) -> None:
    torch.manual_seed(0)
    model = build(name, base_width=4)
    if name == "unet":
        torch.nn.init.normal_(model.head.weight, std=0.1)
    x = torch.rand(2, 3, 36, 44)
    with torch.no_grad():
        ref = model(x)
        model = model.to(memory_format=torch.channels_last)
        xc = x.to(memory_format=torch.channels_last)
        assert torch.allclose(model(xc), ref, atol=1e-5)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = model(xc)
    assert y.shape == x.shape
    assert (y.float() - ref).abs().max() < 0.1
    # Gradients flow through the bf16 path too.
    xc.requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        model(xc).float().mean().backward()
    assert xc.grad is not None and torch.isfinite(xc.grad).all()


def test_isp_net_with_tone_prior_starts_as_libraw_curve() -> None:
    import numpy as np

    from caisp import CaispError
    from caisp.data.synthetic import libraw_curve
    from caisp.models import build
    from caisp.models.unet import libraw_tone

    x = torch.rand(2, 3, 40, 56)
    net = build("isp_net", base_width=4, tone_prior=True)
    torch.testing.assert_close(net(x), libraw_tone(x))
    grid = np.linspace(0, 1, 10001)
    assert np.abs(libraw_tone(torch.from_numpy(grid)).numpy() - libraw_curve(grid)).max() < 1e-6
    net(x).sum().backward()  # the U-Net learns a residual on top of the curve
    assert all(p.grad is not None for p in net.parameters())
    with pytest.raises(CaispError, match="tone_prior"):
        build("isp_net", base_width=4, tone_prior=True, residual=True)

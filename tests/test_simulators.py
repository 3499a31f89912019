"""The compression artifact simulators (CAS variants): DJS, kornia's JPEG, ACN, against Pillow JPEG.

PSNRs are printed (run with -s to see them)."""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data

from caisp import CaispError
from caisp.metrics import psnr
from caisp.models import acn, djs, kornia_jpeg, registry

PIL_SUBSAMPLING = {"4:4:4": 0, "4:2:2": 1, "4:2:0": 2}


def pil_jpeg(x: torch.Tensor, qf: int, subsampling: str = "4:2:0") -> torch.Tensor:
    """Real JPEG (libjpeg through Pillow) of a (1, 3, H, W) uint8-valued image, decoded back."""
    arr = (x[0].permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=qf, subsampling=PIL_SUBSAMPLING[subsampling])
    buf.seek(0)
    out = np.array(Image.open(buf).convert("RGB"))
    return torch.from_numpy(out).permute(2, 0, 1)[None].float() / 255


@pytest.fixture(scope="module")
def images() -> dict[str, torch.Tensor]:
    """Astronaut crops: a 16-aligned 256x256 and an odd 190x250 (H x W); values on the 8-bit grid."""
    a = torch.from_numpy(np.array(data.astronaut())).permute(2, 0, 1)[None].float() / 255
    return {"256x256": a[..., 100:356, 100:356], "190x250": a[..., 100:290, 100:350]}


@pytest.mark.parametrize("qf", [1, 50, 90, 100])
def test_quant_tables_equal_libjpeg(qf: int) -> None:
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (120, 60, 200)).save(buf, format="JPEG", quality=qf, subsampling=2)
    buf.seek(0)
    q = Image.open(buf).quantization  # Pillow reads the DQT zigzag and hands back natural order
    luma, chroma = djs.quant_tables(qf)
    assert luma.dtype == torch.int64 and luma.shape == (8, 8)
    assert luma.flatten().tolist() == list(q[0])
    assert chroma.flatten().tolist() == list(q[1])
    if qf == 50:  # scale 100: the Annex K tables themselves, row-major, proving the order
        assert luma.tolist() == [list(r) for r in djs.LUMA_BASE]
    if qf == 1:
        assert (luma == 255).all() and (chroma == 255).all()
    if qf == 100:
        assert (luma == 1).all() and (chroma == 1).all()


def test_quant_tables_reject_bad_qf() -> None:
    for qf in (0, 101):
        with pytest.raises(CaispError, match="qf"):
            djs.quant_tables(qf)


@pytest.mark.parametrize("qf", [80, 90])
@pytest.mark.parametrize("size", ["256x256", "190x250"])
def test_djs_matches_pillow(images, qf: int, size: str) -> None:
    x = images[size]
    ref = pil_jpeg(x, qf)
    y = djs.DJS(qf=qf)(x)
    assert y.shape == x.shape
    p, p_id = psnr(y, ref).item(), psnr(x, ref).item()
    print(f"\nDJS qf={qf} {size}: PSNR vs Pillow {p:.2f} dB (identity {p_id:.2f} dB)")
    assert p >= 38.0
    assert p > p_id + 5.0  # it simulates the codec, not just passes the image through


def test_djs_bilinear_upsampling_matches_pillow_better(images) -> None:
    x = images["256x256"]
    ref = pil_jpeg(x, 90)
    p = {m: psnr(djs.DJS(qf=90, upsample=m)(x), ref).item() for m in ("bilinear", "nearest")}
    print(f"\nDJS qf=90 chroma upsampling: {p}")
    assert p["bilinear"] > p["nearest"] + 1.0


@pytest.mark.parametrize("subsampling", ["4:4:4", "4:2:2"])
def test_djs_other_subsamplings(images, subsampling: str) -> None:
    x = images["190x250"]
    ref = pil_jpeg(x, 90, subsampling)
    p = psnr(djs.DJS(qf=90, subsampling=subsampling)(x), ref).item()
    print(f"\nDJS qf=90 {subsampling}: PSNR vs Pillow {p:.2f} dB")
    assert p >= 38.0


def test_djs_rejects_bad_subsampling() -> None:
    with pytest.raises(CaispError, match="subsampling"):
        djs.DJS(qf=90, subsampling="4:1:1")


def test_fourier_round_approximates_round() -> None:
    x = torch.linspace(-300, 300, 20001, dtype=torch.float32)
    err = (djs.fourier_round(x, 9) - x.round()).abs()
    away = (x - x.round()).abs() < 0.4  # the series has Gibbs ringing next to the half-integers
    assert err[away].max() < 0.05


def test_djs_gradient(images) -> None:
    x = images["190x250"][..., :64, :72].clone().requires_grad_(True)
    y = djs.DJS(qf=80)(x)
    y.sum().backward()
    g = x.grad
    assert torch.isfinite(g).all() and g.abs().sum() > 0


def test_djs_bf16_autocast(images) -> None:
    x = images["190x250"][..., :64, :80]
    m = djs.DJS(qf=90)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = m(x)
    assert y.dtype == x.dtype and torch.isfinite(y).all()
    assert torch.allclose(y, m(x), atol=1e-6)  # autocast is off inside: identical result
    yb = m(x.bfloat16())
    assert yb.dtype == torch.bfloat16 and psnr(yb.float(), m(x)).item() > 45


def test_djs_clamp_is_straight_through() -> None:
    x = torch.ones(1, 3, 16, 16, requires_grad=True)
    y = djs.DJS(qf=90)(x)
    assert y.max() <= 1.0
    y.sum().backward()
    assert x.grad.abs().sum() > 0  # a saturated white patch still passes gradient


def test_kornia_wrapper(images) -> None:
    x = images["190x250"]
    ref = pil_jpeg(x, 90)
    m = kornia_jpeg.KorniaJPEG(qf=90)
    y = m(x)
    assert y.shape == x.shape and y.min() >= 0 and y.max() <= 1
    p = {size: psnr(m(images[size]), pil_jpeg(images[size], 90)).item() for size in images}
    p80 = psnr(kornia_jpeg.KorniaJPEG(qf=80)(x), pil_jpeg(x, 80)).item()
    print(f"\nkornia qf=90 PSNR vs Pillow {p}, qf=80 190x250 {p80:.2f} dB")
    assert p["190x250"] > psnr(x, ref).item()
    xs = x[..., :37, :53].clone().requires_grad_(True)
    ys = m(xs)
    assert ys.shape == xs.shape
    ys.sum().backward()
    assert torch.isfinite(xs.grad).all() and xs.grad.abs().sum() > 0
    with torch.autocast("cpu", dtype=torch.bfloat16):
        yb = m(x[..., :40, :56])
    assert torch.isfinite(yb).all() and psnr(yb.float(), m(x[..., :40, :56])).item() > 60
    with pytest.raises(CaispError, match="4:2:0"):
        kornia_jpeg.KorniaJPEG(qf=90, subsampling="4:4:4")


def test_acn_shapes_params_gradient() -> None:
    torch.manual_seed(0)
    counts = {b: sum(p.numel() for p in acn.ACN(base_width=b).parameters()) for b in (16, 32)}
    print(f"\nACN parameters: base_width 16 -> {counts[16]:,}, 32 -> {counts[32]:,}")
    assert counts[16] < counts[32] < 5_000_000
    m = acn.ACN(base_width=16, blocks=2)
    for h, w in [(37, 53), (64, 48), (8, 8)]:
        x = torch.rand(2, 3, h, w, requires_grad=True)
        y = m(x)
        assert y.shape == x.shape and y.min() >= 0 and y.max() <= 1
    assert (y - x).abs().mean() < 0.1  # starts near the identity
    y.sum().backward()
    assert x.grad.abs().sum() > 0
    for name, p in m.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    with torch.autocast("cpu", dtype=torch.bfloat16):
        yb = m(torch.rand(1, 3, 40, 24))
    assert yb.shape == (1, 3, 40, 24) and torch.isfinite(yb).all()


@pytest.mark.parametrize("name,cls", [("acn", acn.ACN), ("djs", djs.DJS), ("kornia", kornia_jpeg.KorniaJPEG)])
def test_build_through_registry(name: str, cls: type) -> None:
    m = registry.build(name, qf=90, base_width=16, subsampling="4:2:0")
    assert isinstance(m, cls) and name in registry.names()
    assert m.trainable is (name == "acn")
    if not m.trainable:
        assert list(m.parameters()) == [] and m.state_dict() == {}
    x = torch.rand(1, 3, 24, 40)
    assert m(x).shape == x.shape

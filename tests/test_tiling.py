"""run_tiled: tiled inference matches one-shot inference; tile sizes are validated."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from caisp import CaispError
from caisp.tiling import ramp, run_tiled, tile_origins


def conv_stack(seed: int = 0) -> nn.Module:
    """Fully convolutional, receptive field 2*6*2+1 = 25 px (< overlap), so tiling is exact up to
    blending of identical values."""
    torch.manual_seed(seed)
    layers: list[nn.Module] = [nn.Conv2d(3, 8, 5, padding=2), nn.ReLU()]
    for _ in range(5):
        layers += [nn.Conv2d(8, 8, 5, padding=2), nn.ReLU()]
    layers += [nn.Conv2d(8, 3, 1), nn.Sigmoid()]
    return nn.Sequential(*layers).eval()


def smooth_image(h: int, w: int, seed: int = 0) -> torch.Tensor:
    """A photo-like test image: smooth gradients plus a little texture."""
    g = torch.Generator().manual_seed(seed)
    y = torch.linspace(0, 1, h)[:, None]
    x = torch.linspace(0, 1, w)[None, :]
    ones = torch.ones(h, w)
    base = torch.stack([ones * (x * 0.8 + 0.1), ones * (y * 0.6 + 0.2), (1 - x) * (1 - y) * 0.9])
    return (base + 0.05 * torch.rand(3, h, w, generator=g)).clamp(0, 1)[None]


def test_origins_cover_and_align():
    for length in (100, 128, 129, 300, 470, 1000):
        origins = tile_origins(length, 128, 32)
        assert origins[0] == 0 and all(o % 2 == 0 for o in origins)
        assert all(o % 16 == 0 for o in origins[:-1])
        # consecutive tiles overlap by at least `overlap`; the last tile (one pixel longer at most,
        # since its origin is rounded down to even) reaches the border
        assert all(b - a <= 128 - 32 for a, b in zip(origins, origins[1:]))
        assert length - origins[-1] <= 129


def test_tiles_fitted_to_the_image():
    """Issue 19: `tile` is a maximum; the tiles shrink to the image, never to more of them, and the
    computed pixels never grow (12 MP at 768, overlap 32: 736 x 736, 1.17x the frame's pixels -> 1.07x)."""
    from caisp.tiling import _extent, fit_tile

    assert fit_tile(2848, 4256, 768, 32) == (736, 736)
    assert _extent(4256, 768, 32) == 6 * 768 and _extent(4256, 736, 32) == 6 * 736
    for h, w, tile, overlap in ((2848, 4256, 768, 64), (4000, 6000, 768, 32), (500, 470, 256, 64),
                                (512, 512, 128, 32), (300, 1000, 512, 16), (100, 90, 128, 32)):
        ty, tx = fit_tile(h, w, tile, overlap)
        assert ty <= tile and tx <= tile and ty % 16 == 0 and tx % 16 == 0
        for length, t in ((h, ty), (w, tx)):
            assert len(tile_origins(length, t, overlap)) <= len(tile_origins(length, tile, overlap))
            assert _extent(length, t, overlap) <= _extent(length, tile, overlap)
            origins = tile_origins(length, t, overlap)  # still overlapping by `overlap`, still covering
            assert all(a + t - b >= overlap for a, b in zip(origins, origins[1:]))
    assert fit_tile(100, 90, 128, 32) == (128, 128)  # one tile: nothing to fit


def test_ramp_positive_and_symmetric():
    w = ramp(128, 32, True, True)
    assert w.min() > 0 and w.max() == 1
    assert torch.allclose(w, w.flip(0))
    assert torch.all(ramp(64, 32, False, False) == 1)


@pytest.mark.parametrize("tile,overlap", [(0, 32), (40, 16), (64, 32), (80, 40), (96, -1)])
def test_tile_validation(tile, overlap):
    with pytest.raises(CaispError, match="tile|overlap"):
        run_tiled(lambda t: t, torch.zeros(1, 3, 8, 8), tile, overlap)


def test_single_tile_calls_fn_once():
    calls = []
    img = torch.rand(1, 3, 60, 90)
    out = run_tiled(lambda t: calls.append(t.shape) or t * 0.5, img, 96, 32)
    assert calls == [img.shape] and torch.equal(out, img * 0.5)


def test_identity_exact_and_channels():
    img = torch.rand(1, 3, 200, 333)
    out = run_tiled(lambda t: t.mean(1, keepdim=True), img, 64, 16, out_channels=1)
    assert out.shape == (1, 1, 200, 333)
    assert torch.allclose(out, img.mean(1, keepdim=True), atol=1e-6)


def test_conv_stack_tiled_equals_untiled():
    net = conv_stack()
    img = smooth_image(176, 264)
    with torch.no_grad():
        full = net(img)
    tiled = run_tiled(net, img, 96, 32)
    assert tiled.shape == full.shape
    assert (tiled - full).abs().max().item() < 0.5 / 255


def test_isp_net_tiled_close_to_untiled():
    """The real ISP-Net (random init, base width 4) tiled vs in one go.

    The U-Net is not exactly tile-invariant: four poolings give it a receptive field of ~300 px (far
    beyond the overlap), and channel attention scales channels by the *tile's* global average. With
    the default initialisation both effects are tiny (max ~0.005/255 measured), hence the 0.5/255 bound.
    A briefly trained base-8 ISP-Net measured max 2.4/255 inside the image at tile 256 (5/255 at 128),
    mean 1/255, dominated by the attention statistics; see the develop benchmark notes."""
    from caisp.models import build

    torch.manual_seed(0)
    net = build("isp_net", base_width=4).eval()
    img = smooth_image(160, 224)
    with torch.no_grad():
        full = net(img)
    tiled = run_tiled(net, img, 96, 32)
    assert (tiled - full).abs().max().item() < 0.5 / 255


def train_attentive_isp_net(width: int = 8) -> tuple[nn.Module, torch.Tensor, float]:
    """An ISP-Net (the paper's plain U-Net with channel attention) trained for 200 steps to render a
    photo from its linear, colour-cast version: (net, that input, the last loss). Its attention swings
    with the image; random weights would not do, their attention is near-uniform. Also the `attentive`
    net of benchmarks/bench_develop.py."""
    from caisp.data.synthetic import load_photos
    from caisp.models import build

    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    img = next(p for name, _, p in load_photos(kodak=False) if name == "astronaut")
    y = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255
    x = y ** 2.2 * torch.tensor([0.6, 1.0, 0.8])[:, None, None]
    net = build("isp_net", base_width=width)
    opt = torch.optim.Adam(net.parameters(), 2e-3)
    for _ in range(200):
        i, j = (16 * int(v) for v in torch.randint(0, (512 - 64) // 16, (2,), generator=g))
        loss = (net(x[..., i : i + 64, j : j + 64]) - y[..., i : i + 64, j : j + 64]).abs().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net.eval(), x, loss.item()


@pytest.fixture(scope="module")
def trained_isp_net() -> tuple[nn.Module, torch.Tensor]:
    """A base-8 attentive ISP-Net and its input (~4 s on 2 CPU cores)."""
    net, x, loss = train_attentive_isp_net(8)
    assert loss < 0.2  # it learned something
    return net, x


def test_trained_isp_net_tiled_equals_whole_image(trained_isp_net) -> None:
    """Issue 10: tiles with the whole image's channel-attention statistics give the whole-image
    output within 0.5/255 for a trained net, where per-tile attention is off by several levels."""
    net, x = trained_isp_net
    with torch.no_grad():
        whole = net(x)
    exact = run_tiled(net, x, 256, 64, model=net)
    per_tile = run_tiled(net, x, 256, 64)  # no model: each tile pools its own features
    assert exact.shape == whole.shape
    assert (exact - whole).abs().max().item() < 0.5 / 255
    assert (per_tile - whole).abs().max().item() > 2 / 255  # what the first pass fixes
    assert (exact - whole).abs().mean() < (per_tile - whole).abs().mean() / 50


def test_tiled_attention_pads_like_the_network(trained_isp_net) -> None:
    """Sides that are no multiple of 16 are padded as the network pads them; a tighter tolerance
    converges to the same output; the attention layers are left as they were."""
    net, x = trained_isp_net
    x = x[..., :500, :470]
    with torch.no_grad():
        whole = net(x)
    one = run_tiled(net, x, 256, 64, model=net)
    tight = run_tiled(net, x, 256, 64, model=net, attention_tol=1e-5)
    assert one.shape == whole.shape
    assert (one - whole).abs().max().item() < 0.5 / 255 and (tight - whole).abs().max().item() < 0.5 / 255
    from caisp.models.unet import ChannelAttention

    assert all(m.pool is None for m in net.modules() if isinstance(m, ChannelAttention))


def _tiled_with_exact_means(net, x, tile, overlap):
    """Tiles that use the whole image's attention means exactly (taken from one whole-image pass):
    what `run_tiled` approximates, up to its tolerance."""
    from caisp import tiling
    from caisp.models.unet import pad_to_multiple

    layers = tiling._attention_layers(net)
    p = pad_to_multiple(x, 16)
    pool = tiling._WholeImagePool(None)
    pool.owned, pool.tile_size = (0, p.shape[-2], 0, p.shape[-1]), tuple(p.shape[-2:])
    with torch.no_grad(), tiling._pooling(layers, pool):
        net(p)
    means = {m: (pool.sums[m] / pool.counts[m]).float() for m in layers}
    with torch.no_grad(), tiling._pooling(layers, tiling._WholeImagePool(means)):
        boxes = list(tiling._tiles(*p.shape[-2:], tiling.fit_tile(*p.shape[-2:], tile, overlap), overlap))
        out = tiling._blend(((b, net(p[:, :, b[2]:b[3], b[4]:b[5]])) for b in boxes), p, overlap, None)
    return out[..., :x.shape[-2], :x.shape[-1]]


def test_attention_statistics_gathered_during_the_output_pass(trained_isp_net) -> None:
    """Issue 19: the whole image's attention means are gathered while the tiles are computed, and only
    the tiles whose attention then proves off by more than the tolerance run again: at most about two
    runs a tile on a net whose attention swings (the old statistics pass + output pass was always two),
    one for a net whose attention ignores the image, and the output of tiles with the exact means."""
    from caisp.tiling import spread_order

    order = spread_order(25)
    assert sorted(order) == list(range(25)) and len({i // 5 for i in order[:5]}) >= 4  # prefixes spread
    net, x = trained_isp_net
    with torch.no_grad():
        whole = net(x)
    report: dict = {}
    out = run_tiled(net, x, 256, 64, model=net, report=report)
    assert report["tiles"] == 9 and report["tile_runs"] <= 2 * 9 and report["rounds"] == 1
    assert (out - whole).abs().max().item() < 0.5 / 255
    # Small tiles: seams alone cost ~1.5/255 there, so compare with tiles that use the exact means.
    exact = _tiled_with_exact_means(net, x, 128, 32)
    runs, outs, errors = {}, {}, {}
    for tol in (1.0, 1e-3, 0.0):
        rep: dict = {}
        outs[tol] = run_tiled(net, x, 128, 32, model=net, attention_tol=tol, report=rep)
        runs[tol], errors[tol] = rep["tile_runs"], rep["weight_error"]
    # One round at most: a tighter tolerance reruns more tiles, never more than all of them once.
    assert runs[1.0] == 25 < runs[1e-3] <= runs[0.0] <= 50
    assert errors[0.0] <= errors[1e-3] < 1e-3 < errors[1.0]
    assert (outs[0.0] - exact).abs().max().item() < 0.1 / 255
    assert (outs[1e-3] - exact).abs().max().item() < 0.7 / 255
    assert (outs[1.0] - exact).abs().max().item() > 1 / 255  # running means alone are far off here
    flat, calls = build_flat_attention_net(), []
    flat_report: dict = {}
    with torch.no_grad():
        run_tiled(lambda t: (calls.append(1), flat(t))[1], x, 128, 32, model=flat, report=flat_report)
    assert len(calls) == 25 == flat_report["tile_runs"]  # nothing to correct: one pass
    with pytest.raises(CaispError, match="attention_tol"):
        run_tiled(net, x, 128, 32, model=net, attention_tol=-1.0)


def build_flat_attention_net() -> nn.Module:
    """An ISP-Net whose attention ignores its input (zero first FC): the weights settle at once."""
    from caisp.models import build

    net = build("isp_net", base_width=4).eval()
    for m in net.modules():
        if hasattr(m, "fc"):
            nn.init.zeros_(m.fc[0].weight)
    return net

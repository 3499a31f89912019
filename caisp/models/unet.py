"""The U-Net of Uhm et al. 2021 (Sec. III.C): ISP-Net f (with channel attention) and CAS-Net g.

Layout, as in W-Net's U-Net: four encoder levels of widths base, 2*base, 4*base, 8*base, each a block
of three 3x3 conv + LeakyReLU(0.2) followed by 2x2 max-pooling; a bottleneck block at 16*base on the
1/16 grid; four mirrored decoder levels (2x bilinear up-sampling, concatenation with the encoder
skip, a block of three 3x3 conv + LeakyReLU down to the level's width, optional channel attention at
the block's end); a final 1x1 conv to 3 channels. So the paper's "four levels of encoder and four of
decoder" each have their own resolution, and the four poolings need the bottleneck to end on.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from caisp import CaispError
from caisp.models.registry import register

LEVELS = 4
SLOPE = 0.2
# CAS variants share one params block; those keys mean nothing to the U-Net.
_CAS_IGNORED = frozenset({"qf", "subsampling"})


def conv_block(cin: int, cout: int) -> nn.Sequential:
    """Three 3x3 conv, each followed by LeakyReLU(0.2)."""
    layers: list[nn.Module] = []
    for i in range(3):
        layers += [nn.Conv2d(cin if i == 0 else cout, cout, 3, padding=1), nn.LeakyReLU(SLOPE, inplace=True)]
    return nn.Sequential(*layers)


class ChannelAttention(nn.Module):
    """Squeeze-and-excitation: GAP -> FC(c, c//r) -> LeakyReLU -> FC(c//r, c) -> sigmoid -> x * a.

    FCs are 1x1 convs on the pooled (B, C, 1, 1) map so channels_last inputs need no reshapes; the
    hidden activation is leaky because at small CPU widths c//r can be 1 or 2 units, which a ReLU
    could kill for good.
    """

    def __init__(self, channels: int, reduction: int = 8) -> None:
        super().__init__()
        # Tiled inference (caisp.tiling) swaps the per-input mean for the whole image's: a callable
        # (layer, x) -> (B, C, 1, 1) pooled features, set only for the duration of a tiled pass.
        self.pool: Callable[[ChannelAttention, Tensor], Tensor] | None = None
        hidden = max(1, channels // reduction)
        self.fc = nn.Sequential(
            nn.Conv2d(channels, hidden, 1),
            nn.LeakyReLU(SLOPE, inplace=True),
            nn.Conv2d(hidden, channels, 1),
            nn.Sigmoid(),
        )

    def forward(self, x: Tensor) -> Tensor:
        pooled = F.adaptive_avg_pool2d(x, 1) if self.pool is None else self.pool(self, x).to(x.dtype)
        return x * self.fc(pooled)


def pad_to_multiple(x: Tensor, multiple: int) -> Tensor:
    """Pad bottom/right to a multiple; the top-left origin stays put, so the 8x8 JPEG grid does too."""
    h, w = x.shape[-2:]
    ph, pw = -h % multiple, -w % multiple
    if ph == 0 and pw == 0:
        return x
    # Reflect needs the pad to be smaller than the side; tiny inputs fall back to replicate.
    mode = "reflect" if ph < h and pw < w else "replicate"
    return F.pad(x, (0, pw, 0, ph), mode=mode)


class UNet(nn.Module):
    """(B, in_channels, H, W) -> (B, out_channels, H, W) for any H, W (padded to 16, cropped back).

    `residual=True` adds the input to the output and zero-initialises the last conv, so the network
    starts as the identity (the CAS-Net's output is its input plus small artifacts).
    """

    trainable = True

    def __init__(
        self,
        base_width: int = 32,
        *,
        in_channels: int = 3,
        out_channels: int = 3,
        attention: bool = False,
        reduction: int = 8,
        residual: bool = False,
    ) -> None:
        super().__init__()
        if isinstance(base_width, bool) or not isinstance(base_width, int) or base_width < 1:
            raise CaispError(f"base_width must be a positive integer, got {base_width!r}")
        if residual and in_channels != out_channels:
            raise CaispError("residual=True needs in_channels == out_channels")
        self.residual = residual
        widths = [base_width * 2**i for i in range(LEVELS)]
        self.encoders = nn.ModuleList()
        cin = in_channels
        for w in widths:
            self.encoders.append(conv_block(cin, w))
            cin = w
        self.bottleneck = conv_block(cin, 2 * cin)
        cin = 2 * cin
        self.decoders = nn.ModuleList()
        self.attention = nn.ModuleList()
        for w in reversed(widths):
            self.decoders.append(conv_block(cin + w, w))
            self.attention.append(ChannelAttention(w, reduction) if attention else nn.Identity())
            cin = w
        self.head = nn.Conv2d(base_width, out_channels, 1)
        if residual:
            nn.init.zeros_(self.head.weight)
            nn.init.zeros_(self.head.bias)

    def forward(self, x: Tensor) -> Tensor:
        y = self.body(x)
        return y + x if self.residual else y

    def body(self, x: Tensor) -> Tensor:
        """The U-Net alone, without the residual connection."""
        h, w = x.shape[-2:]
        y = pad_to_multiple(x, 2**LEVELS)
        skips = []
        for enc in self.encoders:
            y = enc(y)
            skips.append(y)
            y = F.max_pool2d(y, 2)
        y = self.bottleneck(y)
        for dec, att, skip in zip(self.decoders, self.attention, reversed(skips)):
            y = F.interpolate(y, scale_factor=2, mode="bilinear", align_corners=False)
            # Under autocast the two may differ in dtype; cat needs one.
            y = att(dec(torch.cat([y.to(skip.dtype), skip], dim=1)))
        return self.head(y)[..., :h, :w]


# LibRaw's default output curve (rawpy gamma=(2.222, 4.5), a BT.709-style curve): the breakpoint in
# linear units and the offset, as caisp.data.synthetic._libraw_curve_params solves them.
_TONE_POWER, _TONE_SLOPE = 1 / 2.222, 4.5
_TONE_BREAK, _TONE_OFFSET = 0.01805015569378791, 0.09925780616013971


def libraw_tone(x: Tensor) -> Tensor:
    """LibRaw's default output curve on linear [0, 1] values (clamped), as a fixed, differentiable op."""
    x = x.float().clamp(0.0, 1.0)
    return torch.where(x < _TONE_BREAK, x * _TONE_SLOPE,
                       (1 + _TONE_OFFSET) * x.clamp(min=_TONE_BREAK) ** _TONE_POWER - _TONE_OFFSET)


@register("isp_net")
class ISPNet(UNet):
    """ISP-Net f: U-Net with channel attention at the end of every decoder block."""

    trainable = True

    def __init__(self, base_width: int = 32, residual: bool = False, reduction: int = 8,
                 tone_prior: bool = False) -> None:
        # tone_prior: f(x) = tone(x) + U-Net(x), the U-Net's last conv zero-initialised, so that the
        # network starts as LibRaw's output curve on its (linear sRGB) input and learns what a fixed
        # pipeline cannot: demosaicing, denoising, gamut. Measured on the default data, a plain U-Net
        # trained from scratch stays ~14 dB below that curve alone after 1000 CPU steps.
        if residual and tone_prior:
            raise CaispError("isp_net: choose residual or tone_prior, not both")
        super().__init__(base_width, attention=True, reduction=reduction, residual=residual or tone_prior)
        self.tone_prior = tone_prior

    def forward(self, x: Tensor) -> Tensor:
        if self.tone_prior:
            return self.body(x) + libraw_tone(x).to(x.dtype)
        return super().forward(x)


class BlockDCT(nn.Module):
    """A fixed, orthonormal change of basis: RGB in [0, 1] -> JFIF YCbCr in [0, 255] (luma shifted by
    -128) -> the 8x8 DCT-II of every block on the image's grid -> (B, 192, H/8, W/8), coefficient
    (channel c, row u, column v) at channel 64c + 8u + v, divided by JPEG's Annex K table entry
    (luma for Y, chroma for Cb and Cr; the same at every QF). `inverse` undoes it exactly.

    Pixels of a natural photo are strongly correlated, so a network that must learn a high-frequency,
    block-aligned change of them (JPEG's) from their values learns along the smallest directions of
    an ill-conditioned problem, and does not in a CPU budget (benchmarks/results/cas_learning.md).
    In this basis the coefficients are nearly decorrelated, each block's phase is its channel, and
    JPEG's quantisation is a function of each coefficient in units of its table entry."""

    def __init__(self) -> None:
        super().__init__()
        from caisp.models.djs import CHROMA_BASE, LUMA_BASE, _RGB2YCC, dct_matrix

        self.register_buffer("dct", dct_matrix(8), persistent=False)
        m = torch.tensor(_RGB2YCC)
        self.register_buffer("rgb2ycc", m, persistent=False)
        self.register_buffer("ycc2rgb", torch.linalg.inv(m), persistent=False)
        luma, chroma = (torch.tensor(t, dtype=torch.float32).reshape(64) for t in (LUMA_BASE, CHROMA_BASE))
        self.register_buffer("scale", torch.cat([luma, chroma, chroma])[None, :, None, None], persistent=False)
        self.register_buffer("shift", torch.tensor([128.0, 0.0, 0.0])[None, :, None, None], persistent=False)

    def _blocks(self, x: Tensor, inverse: bool) -> Tensor:
        b, c, h, w = x.shape
        blocks = x.reshape(b, c, h // 8, 8, w // 8, 8)
        eq = "ij,bchjwk,lk->bchiwl" if not inverse else "ji,bchjwk,kl->bchiwl"
        return torch.einsum(eq, self.dct, blocks, self.dct).reshape(b, c, h, w)

    def forward(self, x: Tensor) -> Tensor:
        ycc = torch.einsum("ij,bjhw->bihw", self.rgb2ycc, x * 255.0) - self.shift
        return F.pixel_unshuffle(self._blocks(ycc, False), 8) / self.scale

    def inverse(self, z: Tensor) -> Tensor:
        ycc = self._blocks(F.pixel_shuffle(z * self.scale, 8), True) + self.shift
        return torch.einsum("ij,bjhw->bihw", self.ycc2rgb, ycc) / 255.0

    # float32 at least, autocast off: bf16 cannot even hold the [0, 255] samples exactly.
    def analyse(self, x: Tensor) -> Tensor:
        with torch.autocast(x.device.type, enabled=False):
            return self(x.to(torch.float64 if x.dtype == torch.float64 else torch.float32))

    def synthesise(self, z: Tensor) -> Tensor:
        with torch.autocast(z.device.type, enabled=False):
            return self.inverse(z)


class CoefficientMLP(nn.Module):
    """A small MLP per channel, the same at every position: each coefficient's own nonlinear map (what
    quantisation is: values below half a step go to 0), `hidden` LeakyReLU units a channel. The output
    layer starts at 0, so the map starts as 0."""

    def __init__(self, channels: int, hidden: int = 16) -> None:
        super().__init__()
        self.a = nn.Parameter(torch.randn(channels, hidden) * 2**0.5)
        self.b = nn.Parameter(torch.zeros(channels, hidden))
        self.w = nn.Parameter(torch.zeros(channels, hidden))
        self.c = nn.Parameter(torch.zeros(channels))

    def forward(self, z: Tensor) -> Tensor:
        h = F.leaky_relu(z[:, :, None] * self.a[None, :, :, None, None] + self.b[None, :, :, None, None], SLOPE)
        return torch.einsum("bkjhw,kj->bkhw", h, self.w) + self.c[None, :, None, None]


PHASE = 16  # the JPEG 4:2:0 MCU: an 8x8 luma block's place in it, and a pixel's place in the block


def block_phase(x: Tensor) -> Tensor:
    """(B, 18, H, W): each pixel's row and column inside its 8x8 block (one-hot, 8 + 8 channels) and
    its block's row and column parity inside the 16x16 MCU (+-0.5), for an image whose top-left pixel
    starts a block (training crops and whole photos do)."""
    b, _, h, w = x.shape
    r, c = torch.arange(h, device=x.device), torch.arange(w, device=x.device)
    rows = torch.cat([F.one_hot(r % 8, 8).T, ((r // 8) % 2)[None] - 0.5]).to(x.dtype)  # (9, h)
    cols = torch.cat([F.one_hot(c % 8, 8).T, ((c // 8) % 2)[None] - 0.5]).to(x.dtype)  # (9, w)
    return torch.cat([rows[:, :, None].expand(9, h, w), cols[:, None, :].expand(9, h, w)])[None].expand(b, 18, h, w)


def kaiming_init(net: nn.Module) -> None:
    """He initialisation for LeakyReLU(0.2) on every conv: PyTorch's default (uniform, gain 1/sqrt(3))
    shrinks the signal ~2.4x per conv + LeakyReLU, so after the 27 layers of the deep path the
    CAS-Net's features, and the gradients that reach its body, vanish (benchmarks/results/
    cas_learning.md: body gradients 1e-8..1e-12 against 1e-2 at the head)."""
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, a=SLOPE, nonlinearity="leaky_relu")
            nn.init.zeros_(m.bias)


@register("unet")
class CASUNet(UNet):
    """CAS-Net g ("U-Net" in Sec. IV): the ISP-Net without attention, residual by default.

    `phase=True` (ours, the pipeline's default) adds `block_phase`'s 18 channels to the input: a
    convolutional U-Net is translation-equivariant, so it could tell where a pixel sits in its 8x8
    block, where JPEG's artifacts are decided, only through its pooling phase; ACN gets the same
    information from its block layout. Inputs must then start on the block grid (tiles on the 16-grid,
    as caisp.tiling cuts them, except a last tile whose side is no multiple of 16).
    `init="kaiming"`: He initialisation (`kaiming_init`); "default": PyTorch's.

    `domain="dct"` (ours, the pipeline's default): the U-Net (widths 2x) and a `CoefficientMLP` work on
    the `BlockDCT` coefficients, residually, and the result goes back to RGB, clamped to [0, 1] with a
    straight-through gradient as a decoder clamps; the input is padded to whole blocks (replicate,
    bottom/right, as JPEG pads) and cropped back. In pixels ("pixel", the paper's) the U-Net stays at
    the identity on the default data (benchmarks/results/cas_learning.md)."""

    trainable = True

    def __init__(self, base_width: int = 32, residual: bool = True, phase: bool = False,
                 init: str = "default", domain: str = "pixel", **kwargs) -> None:
        unknown = sorted(set(kwargs) - _CAS_IGNORED)
        if unknown:
            raise CaispError(f"model 'unet' got unknown argument(s): {', '.join(unknown)}")
        if init not in ("default", "kaiming"):
            raise CaispError(f"model 'unet': init must be 'default' or 'kaiming', got {init!r}")
        if domain not in ("pixel", "dct"):
            raise CaispError(f"model 'unet': domain must be 'pixel' or 'dct', got {domain!r}")
        if domain == "dct" and (phase or not residual):
            raise CaispError("model 'unet': domain 'dct' is residual and knows each block's phase by itself")
        self.phase, self.domain = bool(phase), domain
        channels = 192 if domain == "dct" else 3
        super().__init__(base_width * (2 if domain == "dct" else 1),
                         in_channels=channels + 18 * self.phase, out_channels=channels, attention=False)
        self.residual = residual
        if domain == "dct":
            self.transform = BlockDCT()
            self.coefficients = CoefficientMLP(channels)
        if init == "kaiming":
            kaiming_init(self)
        if residual:  # starts as the identity, whatever the body's initialisation
            nn.init.zeros_(self.head.weight)
            nn.init.zeros_(self.head.bias)

    def forward(self, x: Tensor) -> Tensor:
        if self.domain == "dct":
            from caisp.models.djs import clamp_st

            h, w = x.shape[-2:]
            xp = F.pad(x, (0, -w % 8, 0, -h % 8), mode="replicate") if h % 8 or w % 8 else x
            z = self.transform.analyse(xp)
            r = self.coefficients(z) + self.body(z)  # the network may run under autocast
            return clamp_st(self.transform.synthesise(z + r.to(z.dtype))[..., :h, :w]).to(x.dtype)
        inp = torch.cat([x, block_phase(x)], dim=1) if self.phase else x
        y = self.body(inp)
        return y + x if self.residual else y

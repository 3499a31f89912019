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


@register("unet")
class CASUNet(UNet):
    """CAS-Net g ("U-Net" in Sec. IV): the ISP-Net without attention, residual by default."""

    trainable = True

    def __init__(self, base_width: int = 32, residual: bool = True, **kwargs) -> None:
        unknown = sorted(set(kwargs) - _CAS_IGNORED)
        if unknown:
            raise CaispError(f"model 'unet' got unknown argument(s): {', '.join(unknown)}")
        super().__init__(base_width, attention=False, residual=residual)

"""Kornia's differentiable JPEG (Reich et al., WACV 2024) as a CAS variant.

Wraps `kornia.enhance.jpeg_codec_differentiable`: RGB in [0, 1], shape (*, 3, H, W), quality a
float tensor of shape (1,) (a 0-D scalar is rejected). What it does differently from `djs`:
rounding, the QF -> table scaling floor and the clip are cubic "polynomial" surrogates
(x_round + (x - x_round)^3); chroma is always 4:2:0, subsampled by a Gaussian-antialiased
bilinear resize (not libjpeg's 2x2 box average) and upsampled bilinearly. Kornia
has no 4:2:2 / 4:4:4 mode, so any other `subsampling` is refused rather than silently simulated
as 4:2:0.

Kornia 0.9 pads to multiples of 16 itself; we pad (replicate, bottom/right) before calling it
anyway so that older versions, which required multiples of 16, behave the same. Its final clip
is to [0, 255] although it works in [0, 1], i.e. it does not clip: we clamp to [0, 1] with the
same straight-through clamp as `djs`. Kornia computes in float32 with autocast disabled itself.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from kornia.enhance import jpeg_codec_differentiable
from torch import nn

from caisp import CaispError
from caisp.models.djs import clamp_st, parse_subsampling
from caisp.models.registry import register


@register("kornia")
class KorniaJPEG(nn.Module):
    """(B, 3, H, W) sRGB in [0, 1] -> kornia's differentiable JPEG at quality `qf`, in [0, 1]."""

    trainable = False

    def __init__(self, qf: int = 90, subsampling: str = "4:2:0", **_: object) -> None:
        super().__init__()
        if parse_subsampling(subsampling) != (2, 2):
            raise CaispError(f"CAS 'kornia' simulates 4:2:0 chroma only; got subsampling={subsampling!r}")
        if not 1 <= int(qf) <= 100:
            raise CaispError(f"JPEG quality factor qf={qf} outside 1..100")
        self.qf = int(qf)
        self.register_buffer("quality", torch.tensor([float(qf)]), persistent=False)

    def extra_repr(self) -> str:
        return f"qf={self.qf}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        ph, pw = (-h) % 16, (-w) % 16
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="replicate")
        y = jpeg_codec_differentiable(x, self.quality)
        return clamp_st(y[..., :h, :w])

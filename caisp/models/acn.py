"""ACN: an auxiliary codec network in the spirit of Son et al. (arXiv 2009.14754), as a CAS.

Son et al. train a network to stand in for the JPEG codec by working on 8x8 blocks rearranged
into channels; Uhm et al. (Table 1) compare it with their U-Net CAS. No code was published, so
the architecture below is ours, built on that one idea:

- the image (padded bottom/right by replication to a multiple of 8, so blocks sit on the JPEG
  grid of an uncropped image) is pixel-unshuffled by 8: 3 x 8 x 8 = 192 channels per block, at
  H/8 x W/8;
- two channels give the block's phase in its 16x16 MCU (row, column parity, +-0.5). Ours: with
  4:2:0 chroma one chroma block spans 2 x 2 luma blocks, so the error of a block depends on where
  it sits in its MCU, which translation-invariant convolutions cannot tell otherwise;
- a learned block transform (1x1 conv 194 -> C, LeakyReLU, 1x1 conv C -> C), where JPEG has
  colour conversion + DCT;
- `blocks` residual blocks of two 3x3 convs across neighbouring blocks (what quantisation
  noise, chroma subsampling and blocking share between blocks), LeakyReLU(0.2);
- a learned inverse transform (1x1 convs C -> C -> 192), pixel shuffle back, added to the input:
  the network predicts the coding error only, since a JPEG at QF 80-90 is close to its input.
  The last conv starts at 0.1x its default initialisation, so an untrained ACN is near the
  identity yet every layer gets a gradient from the first step;
- C = 4 * base_width; output clamped to [0, 1] with the straight-through clamp of `djs`.
`qf` and `subsampling` are accepted and ignored: an ACN is trained per QF on JPEG pairs.
Tiled inference must cut tiles on the 16-pixel grid to keep the MCU phase right.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from caisp.models.djs import clamp_st
from caisp.models.registry import register

BLOCK = 8  # the JPEG DCT block


class ResBlock(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(width, width, 3, padding=1), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(width, width, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


@register("acn")
class ACN(nn.Module):
    """Block-channel CAS: (B, 3, H, W) sRGB in [0, 1] -> simulated JPEG in [0, 1]."""

    trainable = True

    def __init__(self, base_width: int = 32, blocks: int = 4, qf: int | None = None,
                 subsampling: str = "4:2:0", domain: str = "pixel", **_: object) -> None:
        super().__init__()
        from caisp import CaispError

        if domain not in ("pixel", "dct"):
            raise CaispError(f"model 'acn': domain must be 'pixel' or 'dct', got {domain!r}")
        self.domain = domain
        if domain == "dct":  # blocks as their DCT coefficients, not their pixels (see caisp.models.unet)
            from caisp.models.unet import BlockDCT, CoefficientMLP

            self.dct = BlockDCT()
            self.coefficients = CoefficientMLP(3 * BLOCK * BLOCK)
        self.qf, self.subsampling = qf, subsampling  # informational only
        c, k = 4 * int(base_width), 3 * BLOCK * BLOCK
        act = lambda: nn.LeakyReLU(0.2, inplace=True)  # noqa: E731
        self.transform = nn.Sequential(nn.Conv2d(k + 2, c, 1), act(), nn.Conv2d(c, c, 1))
        self.body = nn.Sequential(*[ResBlock(c) for _ in range(blocks)])
        self.inverse = nn.Sequential(act(), nn.Conv2d(c, c, 1), act(), nn.Conv2d(c, k, 1))
        with torch.no_grad():
            last = self.inverse[-1]
            last.weight.mul_(0.1)
            last.bias.zero_()

    @staticmethod
    def _phase(x: torch.Tensor) -> torch.Tensor:
        """(B, 2, h, w): each block's row / column parity inside its 16x16 MCU, as +-0.5."""
        b, _, h, w = x.shape
        rows = (torch.arange(h, device=x.device) % 2).to(x.dtype) - 0.5
        cols = (torch.arange(w, device=x.device) % 2).to(x.dtype) - 0.5
        return torch.stack([rows[:, None].expand(h, w), cols[None, :].expand(h, w)]).expand(b, 2, h, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        ph, pw = (-h) % BLOCK, (-w) % BLOCK
        xp = F.pad(x, (0, pw, 0, ph), mode="replicate") if ph or pw else x
        if self.domain == "dct":
            z = self.dct.analyse(xp)
            r = self.coefficients(z) + self.inverse(self.body(self.transform(torch.cat([z, self._phase(z)], dim=1))))
            return clamp_st(self.dct.synthesise(z + r.to(z.dtype))[..., :h, :w]).to(x.dtype)
        z = F.pixel_unshuffle(xp - 0.5, BLOCK)
        z = torch.cat([z, self._phase(z)], dim=1)
        r = self.inverse(self.body(self.transform(z)))
        y = xp + F.pixel_shuffle(r, BLOCK).to(xp.dtype)
        return clamp_st(y[..., :h, :w])

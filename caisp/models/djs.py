"""DJS: the differentiable JPEG simulator of Invertible-ISP (Xing et al., CVPR 2021).

A training-free CAS: JPEG's lossy steps written as tensor operations, with the one
non-differentiable step, rounding of the quantised DCT coefficients, replaced by its truncated
Fourier series. Steps, as libjpeg (hence Pillow) does them:

1. RGB -> YCbCr, JFIF full range (the matrices of libjpeg's jccolor.c / jdcolor.c), in [0, 255];
2. chroma subsampling by box averaging (2x2 for 4:2:0, 2x1 for 4:2:2, none for 4:4:4), as
   libjpeg's default (non-smoothing) downsampler;
3. level shift by 128 and the orthonormal 8x8 DCT-II (JPEG's FDCT is the orthonormal one);
4. quantisation by the IJG tables (JPEG Annex K) scaled by QF with libjpeg's rule
   (`quant_tables`), with round(x) ~ x - sum_k (-1)^(k+1) sin(2 pi k x) / (pi k), k = 1..terms;
5. dequantisation, inverse DCT, chroma upsampling, YCbCr -> RGB, clamp to [0, 1].

Choices of ours:
- Chroma upsampling is bilinear (align_corners=False): that is libjpeg's "fancy" triangle
  upsampler (3/4, 1/4 weights, edges replicated), which Pillow's decoder uses; it matches Pillow
  far better than nearest (46.1 vs 41.2 dB at QF 90, 4:2:0, 256x256 astronaut crop; see
  tests/test_simulators.py).
- The final clamp is straight-through: forward is the exact clamp a decoder applies, backward is
  the identity. A hard clamp would zero the gradient of every saturated pixel and of the ringing
  overshoots next to them; through the ISP's L1 loss the identity gradient still points the right
  way (towards the target), and the ISP's own L_isp term keeps its output in range.
- The series is evaluated on x - round(x) (sin is 1-periodic in x, so the value and the gradient
  are unchanged); this keeps sin's argument small, so float32 loses no phase on large DC terms.
- Inputs are padded (replicate, bottom/right, as libjpeg extends edges) to whole MCUs and cropped
  back. All the arithmetic is float32 with autocast disabled: bf16 cannot even hold the [0, 255]
  samples exactly, let alone the DCT coefficients.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from caisp import CaispError
from caisp.models.registry import register

# JPEG Annex K.1 / K.2 (IJG's std_luminance_quant_tbl, std_chrominance_quant_tbl), natural order.
LUMA_BASE = (
    (16, 11, 10, 16, 24, 40, 51, 61),
    (12, 12, 14, 19, 26, 58, 60, 55),
    (14, 13, 16, 24, 40, 57, 69, 56),
    (14, 17, 22, 29, 51, 87, 80, 62),
    (18, 22, 37, 56, 68, 109, 103, 77),
    (24, 35, 55, 64, 81, 104, 113, 92),
    (49, 64, 78, 87, 103, 121, 120, 101),
    (72, 92, 95, 98, 112, 100, 103, 99),
)
CHROMA_BASE = (
    (17, 18, 24, 47, 99, 99, 99, 99),
    (18, 21, 26, 66, 99, 99, 99, 99),
    (24, 26, 56, 99, 99, 99, 99, 99),
    (47, 66, 99, 99, 99, 99, 99, 99),
    (99, 99, 99, 99, 99, 99, 99, 99),
    (99, 99, 99, 99, 99, 99, 99, 99),
    (99, 99, 99, 99, 99, 99, 99, 99),
    (99, 99, 99, 99, 99, 99, 99, 99),
)

# Chroma subsampling factors (vertical, horizontal) per the usual J:a:b notation.
SUBSAMPLING = {"4:4:4": (1, 1), "4:2:2": (1, 2), "4:2:0": (2, 2)}

# JFIF RGB -> YCbCr (rows Y, Cb, Cr; Cb and Cr centred on 0, i.e. before the +128 offset).
_RGB2YCC = (
    (0.299, 0.587, 0.114),
    (-0.168735892, -0.331264108, 0.5),
    (0.5, -0.418687589, -0.081312411),
)
_YCC2RGB = (
    (1.0, 0.0, 1.402),
    (1.0, -0.344136286, -0.714136286),
    (1.0, 1.772, 0.0),
)


def quant_tables(qf: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(luma, chroma) int64 (8, 8) quantisation tables libjpeg uses at quality `qf` (1..100),
    natural (row-major) order, baseline clamp to 1..255 (jcparam.c: jpeg_quality_scaling +
    jpeg_add_quant_table)."""
    if not 1 <= int(qf) <= 100:
        raise CaispError(f"JPEG quality factor qf={qf} outside 1..100")
    qf = int(qf)
    scale = 5000 // qf if qf < 50 else 200 - 2 * qf
    out = []
    for base in (LUMA_BASE, CHROMA_BASE):
        t = torch.tensor(base, dtype=torch.int64)
        out.append(((t * scale + 50) // 100).clamp(1, 255))
    return out[0], out[1]


def diffjpeg_tables(qf: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(luma, chroma) float (8, 8) tables as DiffJPEG (hence Invertible-ISP and the paper's DJS) builds
    them: the Annex K tables times a real factor (libjpeg's scale / 100, without its integer rounding
    or its clamp to 1..255: at QF 90 a luma step of 16 becomes 3.2, libjpeg's 3), and transposed
    against the standard's natural order (DiffJPEG defines them with `.T` and indexes coefficients
    [row frequency, column frequency], as we do)."""
    if not 1 <= int(qf) <= 99:
        # At QF 100 the factor is 0: DiffJPEG divides by zero.
        raise CaispError(f"paper DJS: quality factor qf={qf} outside 1..99")
    qf = int(qf)
    factor = (5000 / qf if qf < 50 else 200 - 2 * qf) / 100
    return tuple(torch.tensor(base, dtype=torch.float32).T.contiguous() * factor
                 for base in (LUMA_BASE, CHROMA_BASE))  # type: ignore[return-value]


def dct_matrix(n: int = 8) -> torch.Tensor:
    """Orthonormal DCT-II matrix D (n, n): coefficients = D @ block @ D.T."""
    k = torch.arange(n, dtype=torch.float64)[:, None]
    i = torch.arange(n, dtype=torch.float64)[None, :]
    d = torch.cos((2 * i + 1) * k * math.pi / (2 * n)) * math.sqrt(2.0 / n)
    d[0] /= math.sqrt(2.0)
    return d.float()


def fourier_round(x: torch.Tensor, terms: int) -> torch.Tensor:
    """round(x) ~ x - sum_{k=1..terms} (-1)^(k+1) sin(2 pi k x) / (pi k), differentiable."""
    # sin(2 pi k x) has period 1 in x: evaluate on the fractional part to keep float32 exact.
    frac = x - x.detach().round()
    saw = torch.zeros_like(x)
    for k in range(1, terms + 1):
        saw = saw + ((-1) ** (k + 1) / (math.pi * k)) * torch.sin((2 * math.pi * k) * frac)
    return x - saw


class _ClampST(torch.autograd.Function):
    """Clamp to [0, 1] forward, identity backward (straight-through)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        return x.clamp(0.0, 1.0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return grad


def clamp_st(x: torch.Tensor) -> torch.Tensor:
    """Clamp to [0, 1] with a straight-through gradient (shared by the CAS variants)."""
    return _ClampST.apply(x)


def parse_subsampling(subsampling: str) -> tuple[int, int]:
    if subsampling not in SUBSAMPLING:
        raise CaispError(f"chroma subsampling {subsampling!r} not one of {', '.join(SUBSAMPLING)}")
    return SUBSAMPLING[subsampling]


def _blockwise(x: torch.Tensor, d: torch.Tensor, inverse: bool) -> torch.Tensor:
    """Apply the 8x8 DCT (or its inverse) to every aligned block of x (B, C, H, W), H, W % 8 == 0."""
    b, c, h, w = x.shape
    blocks = x.reshape(b, c, h // 8, 8, w // 8, 8)
    # Coefficients Y = D X D^T; inverse X = D^T Y D (D is orthonormal).
    eq = "ij,bchjwk,lk->bchiwl" if not inverse else "ji,bchjwk,kl->bchiwl"
    return torch.einsum(eq, d, blocks, d).reshape(b, c, h, w)


@register("djs")
class DJS(nn.Module):
    """Differentiable JPEG simulator: (B, 3, H, W) sRGB in [0, 1] -> simulated JPEG in [0, 1]."""

    trainable = False

    def __init__(self, qf: int = 90, subsampling: str = "4:2:0", terms: int = 9,
                 upsample: str = "bilinear", tables: str = "libjpeg", **_: object) -> None:
        super().__init__()
        if upsample not in ("bilinear", "nearest"):
            raise CaispError(f"DJS upsample={upsample!r}: expected 'bilinear' or 'nearest'")
        if tables not in ("libjpeg", "diffjpeg"):
            raise CaispError(f"DJS tables={tables!r}: expected 'libjpeg' or 'diffjpeg'")
        self.qf, self.subsampling, self.terms, self.upsample = int(qf), subsampling, int(terms), upsample
        self.tables = tables
        self.factor = parse_subsampling(subsampling)
        luma, chroma = quant_tables(self.qf) if tables == "libjpeg" else diffjpeg_tables(self.qf)
        # Non-persistent: nothing to learn or to checkpoint, but they follow .to(device); the tables
        # stay int64 so that a module-wide .to(dtype) cannot touch them (use autocast, not .to(bf16)).
        self.register_buffer("q_luma", luma, persistent=False)
        self.register_buffer("q_chroma", chroma, persistent=False)
        self.register_buffer("dct", dct_matrix(8), persistent=False)
        self.register_buffer("rgb2ycc", torch.tensor(_RGB2YCC), persistent=False)
        self.register_buffer("ycc2rgb", torch.tensor(_YCC2RGB), persistent=False)

    def extra_repr(self) -> str:
        return (f"qf={self.qf}, subsampling={self.subsampling!r}, terms={self.terms}, "
                f"upsample={self.upsample!r}, tables={self.tables!r}")

    def _code(self, plane: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        """Level-shifted samples -> DCT -> quantise (Fourier rounding) -> dequantise -> IDCT."""
        d = self.dct.to(plane.dtype)
        coef = _blockwise(plane, d, inverse=False)
        h, w = plane.shape[-2:]
        qmap = q.to(plane.dtype).repeat(h // 8, w // 8)  # the table tiled over the blocks
        coef = fourier_round(coef / qmap, self.terms) * qmap
        return _blockwise(coef, d, inverse=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out_dtype = x.dtype
        fy, fx = self.factor
        h, w = x.shape[-2:]
        with torch.autocast(x.device.type, enabled=False):
            # float32 at least (float64 stays float64, e.g. for gradcheck).
            dt = torch.float64 if x.dtype == torch.float64 else torch.float32
            x = x.to(dt)
            ph, pw = (-h) % (8 * fy), (-w) % (8 * fx)
            if ph or pw:
                x = F.pad(x, (0, pw, 0, ph), mode="replicate")
            # [0, 255] YCbCr with the level shift applied (Y - 128; Cb, Cr are centred already).
            ycc = torch.einsum("ij,bjhw->bihw", self.rgb2ycc.to(dt), x * 255.0)
            y = ycc[:, :1] - 128.0
            c = ycc[:, 1:]
            if fy > 1 or fx > 1:
                c = F.avg_pool2d(c, kernel_size=(fy, fx))
            y = self._code(y, self.q_luma)
            c = self._code(c, self.q_chroma)
            if fy > 1 or fx > 1:
                c = F.interpolate(c, scale_factor=(fy, fx), mode=self.upsample,
                                  align_corners=False if self.upsample == "bilinear" else None)
            ycc = torch.cat([y + 128.0, c], dim=1)
            rgb = torch.einsum("ij,bjhw->bihw", self.ycc2rgb.to(dt), ycc) / 255.0
            rgb = clamp_st(rgb[..., :h, :w])
        return rgb.to(out_dtype)


@register("djs_paper")
def djs_paper(qf: int = 90, subsampling: str = "4:2:0", terms: int = 9, **_: object) -> DJS:
    """The paper's DJS, Invertible-ISP's (from DiffJPEG): DiffJPEG's real-valued, transposed tables
    (`diffjpeg_tables`), chroma upsampled by pixel repetition, Fourier-series rounding, no rounding to
    8 bits; 4:2:0 only, as DiffJPEG. Table 1 sets it beside ours (libjpeg's tables and upsampling)."""
    if parse_subsampling(subsampling) != (2, 2):
        raise CaispError(f"CAS 'djs_paper' simulates 4:2:0 chroma only (as DiffJPEG); got subsampling={subsampling!r}")
    return DJS(qf, subsampling, terms, upsample="nearest", tables="diffjpeg")

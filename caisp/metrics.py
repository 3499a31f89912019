"""Image quality metrics on tensors in [0, 1] (or any `data_range`), batched: one value per image."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def psnr(pred: torch.Tensor, target: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """PSNR in dB per image of a (B, C, H, W) batch (or one (C, H, W) image); identical images give inf."""
    if pred.shape != target.shape:
        raise ValueError(f"psnr: shapes differ {tuple(pred.shape)} vs {tuple(target.shape)}")
    if pred.dim() == 3:
        pred, target = pred[None], target[None]
    mse = (pred.double() - target.double()).pow(2).flatten(1).mean(1)
    return 10.0 * torch.log10(data_range**2 / mse)


def _gaussian_1d(size: int, sigma: float, device, dtype) -> torch.Tensor:
    coords = torch.arange(size, device=device, dtype=dtype) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    return g / g.sum()


def _blur(x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Separable 'valid' Gaussian filter per channel: two 1-D passes cost 2k instead of k^2 taps."""
    c, k = x.shape[1], g.numel()
    x = F.conv2d(x, g.view(1, 1, 1, k).expand(c, 1, 1, k), groups=c)
    return F.conv2d(x, g.view(1, 1, k, 1).expand(c, 1, k, 1), groups=c)


def _ssim_map(x, y, blur, data_range: float, win_size: int):
    """The SSIM map of x and y (torch tensors or NumPy arrays, float64) given their window filter."""
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mu_x, mu_y = blur(x), blur(y)
    # skimage uses the unbiased covariance; match it so our numbers compare with the usual tools.
    n = win_size * win_size
    cov = n / (n - 1)
    sxx = (blur(x * x) - mu_x**2) * cov
    syy = (blur(y * y) - mu_y**2) * cov
    sxy = (blur(x * y) - mu_x * mu_y) * cov
    return ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / ((mu_x**2 + mu_y**2 + c1) * (sxx + syy + c2))


def ssim(pred: torch.Tensor, target: torch.Tensor, data_range: float = 1.0,
         win_size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """SSIM (Wang et al. 2004) per image: 11x11 Gaussian window, sigma 1.5, K1=0.01, K2=0.03, valid
    region only, averaged over channels, as skimage's `structural_similarity(gaussian_weights=True)`."""
    if pred.dim() == 3:
        pred, target = pred[None], target[None]
    # float64: the variance terms E[x^2] - mu^2 cancel badly in float32 on smooth regions.
    x, y = pred.double(), target.double()
    g = _gaussian_1d(win_size, sigma, x.device, x.dtype)
    s = _ssim_map(x, y, lambda z: _blur(z, g), data_range, win_size)
    return s.flatten(1).mean(1)


def ssim_hwc(a, b, data_range: float = 255.0, win_size: int = 11, sigma: float = 1.5) -> float:
    """`ssim` of two HxWxC arrays (e.g. uint8 pictures), the same float64 arithmetic with SciPy's
    separable correlation: ~4x faster than torch's float64 convolution on a CPU (which has no fast
    float64 kernels), equal to it within 1e-15."""
    import numpy as np
    from scipy.ndimage import correlate1d

    x, y = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if x.shape != y.shape or x.ndim != 3:
        raise ValueError(f"ssim_hwc: want two HxWxC arrays of one shape, got {x.shape} and {y.shape}")
    g = _gaussian_1d(win_size, sigma, "cpu", torch.float64).numpy()
    h = win_size // 2

    def blur(z):  # 'valid': the rows and columns the whole window covers
        z = correlate1d(z, g, axis=0, mode="constant")[h:-h]
        return correlate1d(z, g, axis=1, mode="constant")[:, h:-h]

    s = _ssim_map(x, y, blur, data_range, win_size)
    return float(s.mean())


def bpp(num_bytes: int, height: int, width: int) -> float:
    """Bits per pixel of a compressed file: 8 * bytes / (H * W)."""
    if height <= 0 or width <= 0:
        raise ValueError(f"bpp: bad image size {height}x{width}")
    return 8.0 * num_bytes / (height * width)


def mse_to_psnr(mse: float, data_range: float = 1.0) -> float:
    return math.inf if mse == 0 else 10 * math.log10(data_range**2 / mse)

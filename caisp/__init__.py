"""caisp: compression-aware deep camera ISP (Uhm et al., IEEE Access 2021).

ISP-Net f maps a bilinear-demosaiced Bayer raw to sRGB; a frozen, differentiable compression
artifacts simulator g (CAS-Net) enters the loss so that the JPEG of f(x) matches the JPEG of y:
L_total = lambda_isp * |f(x) - y|_1 + lambda_comp * |g(f(x)) - g(y)|_1.
"""

__version__ = "0.1.0"


class CaispError(Exception):
    """An error a user can act on: the message names the file or parameter at fault."""

"""A camera's colour matrix as LibRaw applies it, for raws whose matrix rawpy does not expose.

rawpy's `color_matrix` is LibRaw's `rgb_cam` for most cameras, but for some (e.g. the Kodak DC50)
it reads all zeros while LibRaw's sRGB output still goes through a matrix of its own. We recover
that matrix from LibRaw itself: two linear, half-size renders of the same raw, one in camera colour
(`output_color=raw`) and one in sRGB, related pixel by pixel by exactly that 3x3 matrix where nothing
clips. So `caisp develop` renders such a camera with LibRaw's colours instead of raw colour.
"""
from __future__ import annotations

import os

import numpy as np
import rawpy

from caisp.data.raw import open_raw


def fit_libraw_matrix(path: str | os.PathLike, min_pixels: int = 500) -> np.ndarray | None:
    """(3, 3) white-balanced camera RGB -> linear sRGB as LibRaw renders `path`, or None when too
    few unclipped pixels constrain it."""
    kw = dict(half_size=True, no_auto_bright=True, gamma=(1, 1), output_bps=16, use_camera_wb=True,
              user_flip=0, adjust_maximum_thr=0.0)
    with open_raw(path) as raw:
        cam = raw.postprocess(output_color=rawpy.ColorSpace.raw, **kw).reshape(-1, 3) / 65535.0
        srgb = raw.postprocess(output_color=rawpy.ColorSpace.sRGB, **kw).reshape(-1, 3) / 65535.0
    # Only pixels that no clip touched, in either render, follow the linear relation.
    ok = np.all((cam > 0.01) & (cam < 0.9), axis=1) & np.all((srgb > 0.002) & (srgb < 0.98), axis=1)
    if ok.sum() < min_pixels:
        return None
    m, *_ = np.linalg.lstsq(cam[ok], srgb[ok], rcond=None)
    return m.T.astype(np.float32)

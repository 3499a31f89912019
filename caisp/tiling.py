"""Full-resolution inference in bounded memory: overlapping tiles blended with a smooth window."""
from __future__ import annotations

import math
from typing import Callable

import torch

from caisp import CaispError

# Tile origins are multiples of this: even keeps the Bayer phase, 16 gives a U-Net with four
# poolings the same internal padding in every tile.
ALIGN = 16


def validate_tile(tile: int, overlap: int) -> None:
    """Raise CaispError unless `tile` is a multiple of 16 and leaves room for both overlaps."""
    if overlap < 0:
        raise CaispError(f"overlap must be >= 0, got {overlap}")
    if tile % ALIGN or tile < 2 * overlap + ALIGN:
        raise CaispError(f"tile must be a multiple of {ALIGN} and >= 2*overlap+{ALIGN} = "
                         f"{2 * overlap + ALIGN}, got {tile}")


def tile_origins(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets along one axis: a stride of (tile - overlap) rounded down to 16, the last tile
    flush with the border (its origin rounded down to even, so it may be one pixel longer)."""
    if length <= tile:
        return [0]
    stride = max(ALIGN, (tile - overlap) // ALIGN * ALIGN)
    origins = list(range(0, length - tile, stride))
    last = (length - tile) // 2 * 2
    if last > origins[-1]:
        origins.append(last)
    return origins


def ramp(n: int, overlap: int, head: bool, tail: bool) -> torch.Tensor:
    """1-D raised-cosine window of length n: rises over `overlap` pixels at an inner (head/tail) edge,
    1 elsewhere; never 0, so every pixel is covered by positive weight."""
    w = torch.ones(n, dtype=torch.float32)
    k = min(overlap, n // 2)
    if k > 0:
        rise = 0.5 - 0.5 * torch.cos(math.pi * (torch.arange(k, dtype=torch.float32) + 0.5) / k)
        if head:
            w[:k] = rise
        if tail:
            w[n - k:] = rise.flip(0)
    return w


def run_tiled(fn: Callable[[torch.Tensor], torch.Tensor], image: torch.Tensor, tile: int,
              overlap: int = 32, out_channels: int | None = None) -> torch.Tensor:
    """Apply `fn` ((1,C,h,w) -> (1,C',h,w)) to `image` (1,C,H,W) tile by tile and blend the results.

    An image that fits in one tile goes through `fn` once. The output lives on `image`'s device in
    float32; `fn` may run elsewhere (its results are moved back)."""
    validate_tile(tile, overlap)
    if image.dim() != 4 or image.shape[0] != 1:
        raise ValueError(f"run_tiled wants a (1,C,H,W) tensor, got {tuple(image.shape)}")
    _, _, h, w = image.shape
    with torch.no_grad():
        if h <= tile and w <= tile:
            return fn(image).to(image.device, torch.float32)
        ys, xs = tile_origins(h, tile, overlap), tile_origins(w, tile, overlap)
        out: torch.Tensor | None = None
        norm = torch.zeros(1, 1, h, w, dtype=torch.float32, device=image.device)
        for iy, y0 in enumerate(ys):
            y1 = h if iy == len(ys) - 1 else min(h, y0 + tile)
            wy = ramp(y1 - y0, overlap, iy > 0, iy < len(ys) - 1).to(image.device)
            for ix, x0 in enumerate(xs):
                x1 = w if ix == len(xs) - 1 else min(w, x0 + tile)
                wx = ramp(x1 - x0, overlap, ix > 0, ix < len(xs) - 1).to(image.device)
                pred = fn(image[:, :, y0:y1, x0:x1]).to(image.device, torch.float32)
                if out is None:
                    c = out_channels if out_channels is not None else pred.shape[1]
                    out = torch.zeros(1, c, h, w, dtype=torch.float32, device=image.device)
                if pred.shape[1] != out.shape[1] or pred.shape[2:] != (y1 - y0, x1 - x0):
                    raise ValueError(f"run_tiled: fn returned {tuple(pred.shape)} for a "
                                     f"{y1 - y0}x{x1 - x0} tile, expected {out.shape[1]} channels, same size")
                win = wy[:, None] * wx[None, :]
                out[:, :, y0:y1, x0:x1].addcmul_(pred, win)
                norm[:, :, y0:y1, x0:x1].add_(win)
        assert out is not None
        return out.div_(norm)

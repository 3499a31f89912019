"""Full-resolution inference in bounded memory: overlapping tiles blended with a smooth window."""
from __future__ import annotations

import contextlib
import math
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

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


def _cuts(origins: list[int], length: int, tile: int) -> list[int]:
    """Boundaries that split [0, length) among the tiles: tile i owns [cut[i], cut[i+1]), each cut in
    the middle of an overlap, on the 16-grid so that it falls on every feature map's grid."""
    cuts = [0]
    for prev, nxt in zip(origins, origins[1:]):
        cuts.append(max(nxt, (nxt + min(prev + tile, length)) // 2 // ALIGN * ALIGN))
    return cuts + [length]


class _WholeImagePool:
    """Channel-attention means of the whole image, gathered tile by tile.

    While `owned` is set (a statistics pass), each attention layer adds the sum of its features over
    the part of the image the current tile owns (each pixel counted once); `means()` divides by the
    whole feature map's size, which is what a single pass pools. Layers see `fixed` means when given,
    else their tile's own (a first pass)."""

    def __init__(self, fixed: dict[nn.Module, torch.Tensor] | None) -> None:
        self.fixed = fixed
        self.sums: dict[nn.Module, torch.Tensor] = {}
        self.counts: dict[nn.Module, int] = {}
        self.owned: tuple[int, int, int, int] | None = None  # rows, columns of the tile, in its pixels
        self.tile_size: tuple[int, int] = (0, 0)
        self.tiles_used = 0  # by the statistics pass

    def __call__(self, layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if self.owned is not None:
            s = self.tile_size[0] // x.shape[-2]
            if s * x.shape[-2] != self.tile_size[0] or s * x.shape[-1] != self.tile_size[1]:
                raise ValueError(f"tiled attention: a {tuple(x.shape[-2:])} feature map does not "
                                 f"divide the {self.tile_size} tile")
            y0, y1, x0, x1 = (v // s for v in self.owned)
            part = x[..., y0:y1, x0:x1].double().sum((-2, -1), keepdim=True)
            self.sums[layer] = self.sums[layer] + part if layer in self.sums else part
            self.counts[layer] = self.counts.get(layer, 0) + (y1 - y0) * (x1 - x0)
        if self.fixed is not None:
            return self.fixed[layer]
        return F.adaptive_avg_pool2d(x, 1)

    def means(self, layers: list[nn.Module]) -> dict[nn.Module, torch.Tensor]:
        # Over the pixels the gathered tiles own: every pixel of the image once, or of a sample.
        return {layer: (self.sums[layer] / self.counts[layer]).float() for layer in layers}


def _attention_layers(model: nn.Module | None) -> list[nn.Module]:
    if model is None:
        return []
    from caisp.models.unet import ChannelAttention

    return [m for m in model.modules() if isinstance(m, ChannelAttention)]


def run_tiled(fn: Callable[[torch.Tensor], torch.Tensor], image: torch.Tensor, tile: int,
              overlap: int = 32, out_channels: int | None = None, *, model: nn.Module | None = None,
              stats_passes: int = 1, stats_tol: float | None = None) -> torch.Tensor:
    """Apply `fn` ((1,C,h,w) -> (1,C',h,w)) to `image` (1,C,H,W) tile by tile and blend the results.

    An image that fits in one tile goes through `fn` once. The output lives on `image`'s device in
    float32; `fn` may run elsewhere (its results are moved back).

    `model` is the network inside `fn`. If it has channel attention (ISP-Net), a tile alone would pool
    its own features, not the whole image's, and shift every pixel of the tile (~1/255 for trained
    nets). So `stats_passes` passes over the tiles first gather each attention layer's whole-image
    mean (the first pass with per-tile attention, later ones with the previous pass's means), and the
    output pass uses them: the tiles then compute what one pass over the whole image does, up to the
    blending at their seams. The image is padded to a multiple of 16 for it, as the network would.

    `stats_tol`: stop a statistics pass once the attention weights have settled to this tolerance
    (see `_gather`); None: every tile.
    """
    validate_tile(tile, overlap)
    if image.dim() != 4 or image.shape[0] != 1:
        raise ValueError(f"run_tiled wants a (1,C,H,W) tensor, got {tuple(image.shape)}")
    _, _, h, w = image.shape
    with torch.no_grad():
        if h <= tile and w <= tile:
            return fn(image).to(image.device, torch.float32)
        layers = _attention_layers(model)
        if not layers:
            return _blend(fn, image, tile, overlap, out_channels)
        from caisp.models.unet import pad_to_multiple

        padded = pad_to_multiple(image, ALIGN)
        H, W = padded.shape[-2:]
        fixed = None
        for _ in range(stats_passes):
            pool = _WholeImagePool(fixed)
            with _pooling(layers, pool):
                _gather(fn, padded, tile, overlap, pool, layers, stats_tol)
            fixed = pool.means(layers)
        with _pooling(layers, _WholeImagePool(fixed)):
            return _blend(fn, padded, tile, overlap, out_channels)[..., :h, :w]


@contextlib.contextmanager
def _pooling(layers: list[nn.Module], pool: _WholeImagePool) -> Iterator[None]:
    for layer in layers:
        layer.pool = pool
    try:
        yield
    finally:
        for layer in layers:
            layer.pool = None


def _tiles(h: int, w: int, tile: int, overlap: int) -> Iterator[tuple[int, int, int, int, int, int, int, int]]:
    """(iy, ix, y0, y1, x0, x1, ny, nx) of every tile, row by row; the last tile of a row or column
    reaches the border."""
    ys, xs = tile_origins(h, tile, overlap), tile_origins(w, tile, overlap)
    for iy, y0 in enumerate(ys):
        y1 = h if iy == len(ys) - 1 else min(h, y0 + tile)
        for ix, x0 in enumerate(xs):
            x1 = w if ix == len(xs) - 1 else min(w, x0 + tile)
            yield iy, ix, y0, y1, x0, x1, len(ys), len(xs)


def spread_order(n: int) -> list[int]:
    """0..n-1 in a low-discrepancy order (golden-ratio steps through the raster order of the tiles):
    every prefix is spread over the whole image, rows and columns, not a block of it."""
    return sorted(range(n), key=lambda i: (i * 0.6180339887498949) % 1.0)


def _attention_weights(layers: list[nn.Module], means: dict[nn.Module, torch.Tensor]) -> torch.Tensor:
    """Every attention layer's channel weights sigmoid(fc(mean)), concatenated: what the means decide."""
    return torch.cat([layer.fc(means[layer].to(next(layer.fc.parameters()).dtype)).flatten().float()
                      for layer in layers])


def _gather(fn: Callable[[torch.Tensor], torch.Tensor], image: torch.Tensor, tile: int, overlap: int,
            pool: _WholeImagePool, layers: list[nn.Module], stats_tol: float | None = None) -> None:
    """A statistics pass: each tile runs, told the part of the image it owns; outputs are dropped.

    With `stats_tol`, tiles run in a spread order and the pass stops once the attention weights the
    running means give have settled: they moved by less than `stats_tol` (max over layers and
    channels) over each of the last two eighths of the tiles. A net whose attention depends little on
    where it looks stops after a fraction of the image; one whose attention swings goes on to every
    tile (benchmarks/results/stats_sample.md)."""
    _, _, h, w = image.shape
    cy = _cuts(tile_origins(h, tile, overlap), h, tile)
    cx = _cuts(tile_origins(w, tile, overlap), w, tile)
    tiles = list(_tiles(h, w, tile, overlap))
    order = spread_order(len(tiles)) if stats_tol is not None else range(len(tiles))
    step = max(1, len(tiles) // 8)
    previous, settled = None, 0
    for k, i in enumerate(order, 1):
        iy, ix, y0, y1, x0, x1, _, _ = tiles[i]
        pool.owned = (cy[iy] - y0, cy[iy + 1] - y0, cx[ix] - x0, cx[ix + 1] - x0)
        pool.tile_size = (y1 - y0, x1 - x0)
        fn(image[:, :, y0:y1, x0:x1])
        if stats_tol is not None and k % step == 0 and k < len(tiles):
            weights = _attention_weights(layers, pool.means(layers))
            settled = settled + 1 if previous is not None and float((weights - previous).abs().max()) < stats_tol else 0
            previous = weights
            if settled >= 2:
                break
    pool.tiles_used = k




def _blend(fn: Callable[[torch.Tensor], torch.Tensor], image: torch.Tensor, tile: int, overlap: int,
           out_channels: int | None) -> torch.Tensor:
    """One pass over the tiles, blended with raised-cosine windows."""
    _, _, h, w = image.shape
    out: torch.Tensor | None = None
    norm = torch.zeros(1, 1, h, w, dtype=torch.float32, device=image.device)
    for iy, ix, y0, y1, x0, x1, ny, nx in _tiles(h, w, tile, overlap):
        wy = ramp(y1 - y0, overlap, iy > 0, iy < ny - 1).to(image.device)
        wx = ramp(x1 - x0, overlap, ix > 0, ix < nx - 1).to(image.device)
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

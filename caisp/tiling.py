"""Full-resolution inference in bounded memory: overlapping tiles blended with a smooth window."""
from __future__ import annotations

import contextlib
import math
from typing import Callable, Iterable, Iterator

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


def _extent(length: int, tile: int, overlap: int) -> int:
    """Pixels the tiles along one axis cover, overlaps counted as often as they are computed."""
    origins = tile_origins(length, tile, overlap)
    return sum(min(length, o + tile) for o in origins[:-1]) - sum(origins[:-1]) + length - origins[-1]


def fit_tile(h: int, w: int, tile: int, overlap: int) -> tuple[int, int]:
    """(rows, columns) of the tile that covers an h x w image in no more tiles per axis than `tile`
    does, with the fewest computed pixels: `tile` is a maximum, the tiles are sized to the image.
    A 4256x2848 frame at 768, overlap 32, gets 736x736 tiles: the same 6 x 4 tiles, 7 % more
    pixels than the frame instead of 17 %."""
    def best(length: int) -> int:
        n = len(tile_origins(length, tile, overlap))
        fits = [t for t in range(2 * overlap + ALIGN, tile + 1, ALIGN)
                if len(tile_origins(length, t, overlap)) <= n]
        return min(fits, key=lambda t: (_extent(length, t, overlap), -t))

    validate_tile(tile, overlap)
    return best(h), best(w)


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
    """Channel-attention means for tiled inference, tile by tile.

    While `owned` is set, each attention layer adds the sum of its features over the part of the
    image the current tile owns (each pixel of the image counted by one tile) to `sums`. Layers see
    `fixed` means where given (the whole image's, as far as it is known), else their tile's own;
    `used` records what each layer saw, so the caller can tell how far a tile's attention was from
    the whole image's."""

    def __init__(self, fixed: dict[nn.Module, torch.Tensor] | None) -> None:
        self.fixed = fixed
        self.sums: dict[nn.Module, torch.Tensor] = {}
        self.counts: dict[nn.Module, int] = {}
        self.used: dict[nn.Module, torch.Tensor] = {}
        self.owned: tuple[int, int, int, int] | None = None  # rows, columns of the tile, in its pixels
        self.tile_size: tuple[int, int] = (0, 0)

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
        mean = self.fixed[layer] if self.fixed is not None else F.adaptive_avg_pool2d(x, 1)
        self.used[layer] = mean
        return mean


def _attention_layers(model: nn.Module | None) -> list[nn.Module]:
    if model is None:
        return []
    from caisp.models.unet import ChannelAttention

    return [m for m in model.modules() if isinstance(m, ChannelAttention)]


# Default `attention_tol`: a tile is recomputed unless every attention weight it used is within this
# of the whole image's. Weights scale features multiplicatively, so 1e-3 moves an output level by
# well under 0.5/255 (tests/test_tiling.py; benchmarks/results/stats_sample.md).
ATTENTION_TOL = 1e-3
# Rounds of recomputation: one bounds the cost at two runs a tile, what a statistics pass and an
# output pass took before. More rounds converge slowly on a net whose attention swings (one round
# after another reran most tiles of a 12 MP frame, benchmarks/results/develop.md), so the weights'
# remaining distance is reported instead (`report["weight_error"]`).
MAX_ROUNDS = 1


def run_tiled(fn: Callable[[torch.Tensor], torch.Tensor], image: torch.Tensor, tile: int,
              overlap: int = 32, out_channels: int | None = None, *, model: nn.Module | None = None,
              attention_tol: float = ATTENTION_TOL, report: dict | None = None) -> torch.Tensor:
    """Apply `fn` ((1,C,h,w) -> (1,C',h,w)) to `image` (1,C,H,W) tile by tile and blend the results.

    `tile` is the largest tile side: the tiles are sized to the image (`fit_tile`), as few per axis as
    `tile` allows. An image that fits in one tile goes through `fn` once. The output lives on
    `image`'s device in float32; `fn` may run elsewhere (its results are moved back).

    `model` is the network inside `fn`. If it has channel attention (ISP-Net), a tile alone would pool
    its own features, not the whole image's, and shift every pixel of the tile (~1/255 for trained
    nets, 23/255 for some). So the tiles gather each attention layer's whole-image mean as they go
    (`_settle`): each tile uses the means of the tiles before it, and a tile whose attention weights
    then differ from the whole image's by more than `attention_tol` is computed again with the whole
    image's (once: `MAX_ROUNDS`). The output is what one pass over the whole image gives, up to the
    weights' remaining distance and the blending at the seams, at the cost of one pass where the
    attention hardly depends on the image and at most two where it swings (before: always two). The
    image is padded to a multiple of 16 for it, as the network would. `report`, if given, receives
    the tile counts and `weight_error`, the largest distance left between a tile's attention weights
    and the whole image's.
    """
    validate_tile(tile, overlap)
    if image.dim() != 4 or image.shape[0] != 1:
        raise ValueError(f"run_tiled wants a (1,C,H,W) tensor, got {tuple(image.shape)}")
    if not attention_tol >= 0:
        raise CaispError(f"attention_tol must be >= 0, got {attention_tol}")
    _, _, h, w = image.shape
    with torch.no_grad():
        if h <= tile and w <= tile:
            return fn(image).to(image.device, torch.float32)
        layers = _attention_layers(model)
        if not layers:
            tiles = list(_tiles(h, w, fit_tile(h, w, tile, overlap), overlap))
            return _blend(((box, fn(image[:, :, box[2]:box[3], box[4]:box[5]])) for box in tiles),
                          image, overlap, out_channels)
        from caisp.models.unet import pad_to_multiple

        padded = pad_to_multiple(image, ALIGN)
        H, W = padded.shape[-2:]
        size = fit_tile(H, W, tile, overlap)
        tiles = list(_tiles(H, W, size, overlap))
        preds = _settle(fn, padded, size, overlap, tiles, layers, attention_tol, report)
        return _blend(zip(tiles, preds), padded, overlap, out_channels)[..., :h, :w]


@contextlib.contextmanager
def _pooling(layers: list[nn.Module], pool: _WholeImagePool) -> Iterator[None]:
    for layer in layers:
        layer.pool = pool
    try:
        yield
    finally:
        for layer in layers:
            layer.pool = None


Box = tuple[int, int, int, int, int, int, int, int]


def _tiles(h: int, w: int, size: tuple[int, int], overlap: int) -> Iterator[Box]:
    """(iy, ix, y0, y1, x0, x1, ny, nx) of every tile of `size` (rows, columns), row by row; the last
    tile of a row or column reaches the border."""
    ys, xs = tile_origins(h, size[0], overlap), tile_origins(w, size[1], overlap)
    for iy, y0 in enumerate(ys):
        y1 = h if iy == len(ys) - 1 else min(h, y0 + size[0])
        for ix, x0 in enumerate(xs):
            x1 = w if ix == len(xs) - 1 else min(w, x0 + size[1])
            yield iy, ix, y0, y1, x0, x1, len(ys), len(xs)


def spread_order(n: int) -> list[int]:
    """0..n-1 in a low-discrepancy order (golden-ratio steps through the raster order of the tiles):
    every prefix is spread over the whole image, rows and columns, not a block of it."""
    return sorted(range(n), key=lambda i: (i * 0.6180339887498949) % 1.0)


def _attention_weights(layers: list[nn.Module], means: dict[nn.Module, torch.Tensor]) -> torch.Tensor:
    """Every attention layer's channel weights sigmoid(fc(mean)), concatenated: what the means decide."""
    return torch.cat([layer.fc(means[layer].to(next(layer.fc.parameters()).dtype)).flatten().float()
                      for layer in layers])


def _settle(fn: Callable[[torch.Tensor], torch.Tensor], image: torch.Tensor, size: tuple[int, int], overlap: int,
            tiles: list[Box], layers: list[nn.Module], tol: float, report: dict | None) -> list[torch.Tensor]:
    """Every tile's output, computed with attention means within `tol` (in attention weights) of the
    whole image's.

    Tiles run in a spread order, each with the running means of the tiles before it (the first with
    its own), and each tile's share of the whole-image sums is kept. The whole image's means are then
    those sums'; a tile whose weights differ from theirs by more than `tol` runs again with them (and
    its share of the sums is replaced), for MAX_ROUNDS rounds at most. Where the attention hardly
    depends on the image no tile reruns; where it swings, the first tiles do (at most all of them,
    two runs a tile). Returns the outputs in `tiles`' order."""
    _, _, h, w = image.shape
    cy = _cuts(tile_origins(h, size[0], overlap), h, size[0])
    cx = _cuts(tile_origins(w, size[1], overlap), w, size[1])
    n = len(tiles)
    preds: list[torch.Tensor | None] = [None] * n
    shares: list[tuple[dict, dict] | None] = [None] * n
    used: list[torch.Tensor | None] = [None] * n

    def run(i: int, fixed: dict[nn.Module, torch.Tensor] | None) -> None:
        iy, ix, y0, y1, x0, x1, _, _ = tiles[i]
        pool = _WholeImagePool(fixed)
        pool.owned = (cy[iy] - y0, cy[iy + 1] - y0, cx[ix] - x0, cx[ix + 1] - x0)
        pool.tile_size = (y1 - y0, x1 - x0)
        with _pooling(layers, pool):
            preds[i] = fn(image[:, :, y0:y1, x0:x1]).to(image.device, torch.float32)
        shares[i] = (pool.sums, pool.counts)
        used[i] = _attention_weights(layers, pool.used)

    def means() -> dict[nn.Module, torch.Tensor]:
        done = [s for s in shares if s is not None]
        return {layer: (sum(s[layer] for s, _ in done) / sum(c[layer] for _, c in done)).float()
                for layer in layers}

    for k, i in enumerate(spread_order(n)):
        run(i, means() if k else None)
    def errors() -> list[float]:
        target = _attention_weights(layers, means())
        return [float((u - target).abs().max()) for u in used]  # type: ignore[operator]

    runs, rounds = n, 0
    while rounds < MAX_ROUNDS:
        stale = [i for i, e in enumerate(errors()) if e > tol]
        if not stale:
            break
        rounds += 1
        whole = means()
        for i in stale:
            run(i, whole)
        runs += len(stale)
    if report is not None:
        report.update(tiles=n, tile_runs=runs, rounds=rounds, weight_error=max(errors()), tile_size=size)
    return preds  # type: ignore[return-value]


def _blend(preds: Iterable[tuple[Box, torch.Tensor]], image: torch.Tensor, overlap: int,
           out_channels: int | None) -> torch.Tensor:
    """The tiles' outputs ((box, output) in any number) blended with raised-cosine windows."""
    _, _, h, w = image.shape
    out: torch.Tensor | None = None
    norm = torch.zeros(1, 1, h, w, dtype=torch.float32, device=image.device)
    for (iy, ix, y0, y1, x0, x1, ny, nx), pred in preds:
        wy = ramp(y1 - y0, overlap, iy > 0, iy < ny - 1).to(image.device)
        wx = ramp(x1 - x0, overlap, ix > 0, ix < nx - 1).to(image.device)
        pred = pred.to(image.device, torch.float32)
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

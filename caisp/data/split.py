"""Seeded train/val/test split of image stems by source: every image of one source photo (or raw
file) lands in the same subset, so no test photo has a tile or crop in training."""
from __future__ import annotations

import math
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from caisp import CaispError

NAMES = ("train", "val", "test")


def check_ratios(ratios: Sequence[float]) -> tuple[float, float, float]:
    try:
        values = tuple(float(r) for r in ratios)
    except (TypeError, ValueError):
        raise CaispError(f"split.ratios must be three numbers, got {ratios!r}") from None
    if len(values) != 3:
        raise CaispError(f"split.ratios must have three values (train, val, test), got {len(values)}")
    if not all(math.isfinite(r) and r >= 0 for r in values):
        raise CaispError(f"split.ratios must be finite and non-negative, got {list(values)}")
    if abs(sum(values) - 1.0) > 1e-6:
        raise CaispError(f"split.ratios must sum to 1, got {list(values)} (sum {sum(values):.6g})")
    return values  # type: ignore[return-value]


def _counts(n: int, ratios: tuple[float, float, float]) -> list[int]:
    """Largest-remainder rounding, then every split with a positive ratio gets at least one image."""
    exact = [n * r for r in ratios]
    counts = [math.floor(x) for x in exact]
    by_remainder = sorted(range(3), key=lambda i: (-(exact[i] - counts[i]), i))
    for i in by_remainder[: n - sum(counts)]:
        counts[i] += 1
    for i in range(3):
        if ratios[i] > 0 and counts[i] == 0:
            donor = max(range(3), key=lambda j: (counts[j], -j))
            counts[donor] -= 1
            counts[i] += 1
    return counts


def make_split(stems: Iterable[str], ratios: Sequence[float] = (0.8, 0.05, 0.15),
               seed: int = 0, sources: Mapping[str, str] | None = None) -> dict[str, Any]:
    """{"seed", "ratios", "train", "val", "test", "sources"}: the ratios apply to sources (default: each
    stem is its own source), whole sources are assigned; depends only on the set of (stem, source),
    the ratios and the seed. "sources" lists each subset's sources."""
    values = check_ratios(ratios)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise CaispError(f"split.seed must be a non-negative integer, got {seed!r}")
    ordered = sorted(stems)  # order-independent: the permutation acts on the sorted list
    if len(set(ordered)) != len(ordered):
        dups = sorted({s for s in ordered if ordered.count(s) > 1})
        raise CaispError(f"split: duplicate stems {dups}")
    source_of = {s: (sources or {}).get(s, s) for s in ordered}
    groups = sorted(set(source_of.values()))
    n = len(groups)
    if n < 3:
        raise CaispError(f"split: need at least 3 sources (photos or raw files) for train/val/test, got {n}")
    perm = np.random.default_rng(int(seed)).permutation(n)
    shuffled = [groups[i] for i in perm]
    out: dict[str, Any] = {"seed": int(seed), "ratios": list(values), "sources": {}}
    start = 0
    for name, count in zip(NAMES, _counts(n, values)):
        chosen = set(shuffled[start:start + count])
        out["sources"][name] = sorted(chosen)
        out[name] = sorted(s for s in ordered if source_of[s] in chosen)
        start += count
    return out

"""Stage `split`: train/val/test by source photo, seeded."""
from __future__ import annotations

from caisp import io
from caisp.params import Params
from caisp.pipeline import layout


def run_split(p: Params) -> dict:
    from caisp.data.split import make_split

    # Every rendered image takes part: the encode stages encode each one or fail, so the split does not
    # depend on the codecs (adding an operating point never reshuffles train and test).
    images = layout.manifest()["images"]
    stems = [im["stem"] for im in images]
    sources = {im["stem"]: im.get("source", im["stem"]) for im in images}
    split = make_split(stems, ratios=tuple(p.split.ratios), seed=p.seed,
                       sources={s: sources[s] for s in stems})
    io.write_json(layout.SPLIT, split)
    return split

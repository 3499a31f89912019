"""Stage `encode`: the real codec's file of every target at one operating point, with its BPP."""
from __future__ import annotations

import shutil

from caisp import io
from caisp.codecs import Point
from caisp.params import Params
from caisp.pipeline.layout import RENDERED, REPORTS, codec_dir


def run_encode(p: Params, point: Point) -> dict:
    from caisp.data.codec import encode_all

    out = codec_dir(point)
    if out.exists():
        shutil.rmtree(out)
    df = encode_all(RENDERED, out, codec=point.codec, quality=point.quality,
                    settings=p.codec_settings(point.codec), workers=p.encode.workers)
    summary = {"qf": point.quality, "images": int(len(df)), "bpp_mean": float(df["bpp"].mean()),
               "codec": point.codec}
    io.write_json(REPORTS / "data" / f"encode_{point.name}.json", summary)
    return summary

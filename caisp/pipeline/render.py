"""Stage `render`: every raw through LibRaw to an 8-bit sRGB target, with its normalised Bayer mosaic."""
from __future__ import annotations

import json
import shutil

from caisp import io
from caisp.params import Params
from caisp.pipeline.layout import RAW, RENDERED, REPORTS


def run_render(p: Params) -> dict:
    from caisp.data.render import RenderSettings, render_all

    r = p.render
    if RENDERED.exists():
        shutil.rmtree(RENDERED)
    settings = RenderSettings(use_camera_wb=r.use_camera_wb, no_auto_bright=r.no_auto_bright,
                              demosaic=r.demosaic, extra={"adjust_maximum_thr": r.adjust_maximum_thr})
    raw_manifest = RAW / "manifest.json"
    files = json.loads(raw_manifest.read_text())["files"] if raw_manifest.is_file() else []
    sources = {f["name"]: f["source"] for f in files if "source" in f}
    manifest = render_all(RAW, RENDERED, settings=settings, workers=r.workers, on_error=r.on_error,
                          sources=sources)
    io.write_json(REPORTS / "data" / "render.json",
                  {"images": len(manifest["images"]), "skipped": len(manifest["skipped"])})
    return manifest

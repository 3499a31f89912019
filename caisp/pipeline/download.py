"""Stage `download`: the raw files of `data.source` into data/raw."""
from __future__ import annotations

import shutil
from pathlib import Path

from caisp import CaispError
from caisp.params import Params
from caisp.pipeline.layout import RAW


def _outside_raw(path, key: str) -> None:
    """The stage empties data/raw before it rebuilds it: a source inside it would be deleted."""
    raw = RAW.resolve()
    if path is not None and (Path(path).resolve() == raw or raw in Path(path).resolve().parents):
        raise CaispError(f"params: {key}: {path} is inside {RAW}, the download stage's output, which it empties "
                         "before each run; keep your files in another folder")


def run_download(p: Params) -> None:
    from caisp.data import download

    src = p.data.source
    _outside_raw(p.data.folder.path if src == "folder" else None, "data.folder.path")
    _outside_raw(p.data.synthetic.extra_photos if src == "synthetic" else None, "data.synthetic.extra_photos")
    if RAW.exists():
        # A partial earlier FiveK run is resumed, not thrown away; other sources rebuild cleanly.
        if src != "fivek":
            shutil.rmtree(RAW)
    RAW.mkdir(parents=True, exist_ok=True)
    if src == "synthetic":
        from caisp.data.synthetic import synthesize

        s = p.data.synthetic
        entries = synthesize(RAW, cfa=s.cfa, seed=p.seed, noise=s.noise, tile=s.tile,
                             extra_dir=s.extra_photos, bits=s.bits, workers=p.render.workers,
                             kodak=s.kodak, cameras=s.cameras, blur=s.blur, scale=s.scale,
                             noise_scale=s.noise_scale)
        files = download.file_manifest([e["path"] for e in entries])
        for f, e in zip(files, entries):  # the split keeps every tile of a photo in one subset
            f.update(source=e["source"], camera=e["camera"])
        download.write_manifest(RAW, "synthetic", files)
    elif src == "fivek":
        f = p.data.fivek
        files = download.download_fivek(f.list_url, RAW, workers=f.workers, retries=f.retries,
                                        limit=f.limit)
        # Files of an earlier, larger run (a lowered `limit`) must not reach the render stage.
        keep = {e["name"] for e in files} | {"manifest.json"}
        for stale in RAW.iterdir():
            if stale.is_file() and stale.name not in keep and not stale.name.endswith(".part"):
                stale.unlink()
    else:
        download.copy_folder(p.data.folder.path, RAW)

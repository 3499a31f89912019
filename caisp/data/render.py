"""Render raw files into sRGB targets (LibRaw, the paper's settings) plus pixel-aligned mosaics."""
from __future__ import annotations

import dataclasses
import inspect
import multiprocessing
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import rawpy

from caisp import CaispError
from caisp.data.raw import RawError, open_raw, raw_image_from
from caisp.data import store
from caisp.io import write_json
from caisp.progress import Progress

# Forced by the pipeline: targets stay in sensor orientation (see DESIGN.md).
_FIXED = {"user_flip": 0}


@dataclass
class RenderSettings:
    """LibRaw rendering of the targets; defaults are the paper's (camera WB, no auto-brightening)."""

    use_camera_wb: bool = True
    no_auto_bright: bool = True
    output_bps: int = 8
    demosaic: str | None = None  # rawpy.DemosaicAlgorithm name; None = LibRaw's default (AHD)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), **_FIXED}

    def postprocess_kwargs(self) -> dict[str, Any]:
        """rawpy.postprocess keyword arguments; raises CaispError on bad settings."""
        if self.output_bps not in (8, 16):
            raise CaispError(f"render.output_bps must be 8 or 16, got {self.output_bps!r}")
        known = set(inspect.signature(rawpy.Params).parameters)
        for key in self.extra:
            if key not in known:
                raise CaispError(f"render.extra: unknown rawpy.postprocess option {key!r}")
            if key in _FIXED or key in ("use_camera_wb", "no_auto_bright", "output_bps",
                                        "demosaic_algorithm", "half_size"):
                raise CaispError(f"render.extra: {key!r} is set elsewhere or not allowed")
        kw: dict[str, Any] = dict(use_camera_wb=self.use_camera_wb, no_auto_bright=self.no_auto_bright,
                                  output_bps=self.output_bps, **self.extra, **_FIXED)
        if self.demosaic is not None:
            algo = rawpy.DemosaicAlgorithm.__members__.get(str(self.demosaic).upper())
            if algo is None:
                names = ", ".join(rawpy.DemosaicAlgorithm.__members__)
                raise CaispError(f"render.demosaic: unknown algorithm {self.demosaic!r} (one of {names})")
            if not algo.isSupported:
                raise CaispError(f"render.demosaic: {algo.name} is not in this LibRaw build")
            kw["demosaic_algorithm"] = algo
        return kw


def render_one(path: str | os.PathLike, out_dir: str | os.PathLike,
               settings: RenderSettings | None = None) -> dict[str, Any]:
    """Render one raw into the layout of `caisp.data.store` (mosaic, metadata, target); returns its
    manifest entry."""
    settings = settings or RenderSettings()
    kwargs = settings.postprocess_kwargs()
    path, out_dir = Path(path), Path(out_dir)
    with open_raw(path) as raw:  # one LibRaw open serves both the mosaic and the rendering
        img = raw_image_from(raw, path, kwargs.get("adjust_maximum_thr", 0.75))
        visible = raw.raw_image_visible.shape
        h, w = img.mosaic.shape
        # The sensor's own values: a third of the float32 mosaic's bytes, normalised per crop by the
        # dataset with the same arithmetic (store.normalise_raw), so windows come out bit-identical.
        data = np.array(raw.raw_image_visible[:h, :w], dtype=np.uint16)
        colors = raw.raw_colors_visible[:h, :w]
        rgb = raw.postprocess(**kwargs)
    if not np.array_equal(colors, np.tile(colors[:2, :2], (h // 2, w // 2))):
        raise RawError(path, "CFA colours do not repeat every 2x2 pixels (not a Bayer sensor)")
    if rgb.shape[:2] != visible:
        raise RawError(path, f"rendered size {rgb.shape[0]}x{rgb.shape[1]} differs from the raw's "
                             f"{visible[0]}x{visible[1]} (rotated or non-square-pixel sensor)")
    stem = path.stem
    store.write_array(out_dir / "targets" / f"{stem}.npy", rgb[:h, :w])
    store.write_array(out_dir / "mosaics" / f"{stem}.npy", data)
    store.write_meta(out_dir / "meta" / f"{stem}.json", cfa=img.cfa, black=img.black[colors[:2, :2]],
                     white=float(img.white), wb=img.wb, daylight_wb=img.daylight_wb,
                     rgb_cam=img.rgb_cam, flip=img.flip, camera=img.camera)
    # `source` (the photo or raw an image came from, which the split keeps in one subset) defaults to
    # the file itself; render_all overrides it for tiles of one synthetic photo.
    return {"stem": stem, "file": path.name, "source": stem, "camera": img.camera, "height": h, "width": w,
            "cfa": img.cfa, "flip": img.flip}


class _SpawnPool(ProcessPoolExecutor):
    """Process pool whose workers start with OMP_NUM_THREADS=1 (LibRaw's OpenMP would oversubscribe)."""

    def __init__(self, workers: int):
        # spawn, not fork: rawpy's OpenMP can deadlock in forked children (rawpy warns about it).
        super().__init__(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))
        # Spawned children copy os.environ when they start, which happens while tasks are submitted.
        self._saved_omp = os.environ.get("OMP_NUM_THREADS")
        os.environ["OMP_NUM_THREADS"] = "1"

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        super().shutdown(wait=wait, cancel_futures=cancel_futures)
        if self._saved_omp is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = self._saved_omp


def spawn_pool(workers: int) -> ProcessPoolExecutor:
    """A spawn-context process pool with one OpenMP thread per worker (env restored on shutdown)."""
    return _SpawnPool(workers)


def _render_task(path: Path, out_dir: Path, settings: RenderSettings) -> tuple[str, Any]:
    """Worker body: bad files come back as values so one file cannot take the pool down."""
    try:
        return "ok", render_one(path, out_dir, settings)
    except RawError as exc:
        return "error", exc.reason


def list_raw_files(raw_dir: Path) -> list[Path]:
    """Every regular, non-hidden file but the manifest, sorted; duplicate stems are an error."""
    files = sorted(p for p in raw_dir.iterdir()
                   if p.is_file() and not p.name.startswith(".") and p.name != "manifest.json")
    seen: dict[str, Path] = {}
    for p in files:
        if p.stem in seen:
            raise CaispError(f"{raw_dir}: {seen[p.stem].name} and {p.name} share the stem {p.stem!r}; "
                             "rename one, outputs are named by stem")
        seen[p.stem] = p
    return files


def _remove_stale(folder: Path, suffix: str, keep: set[str]) -> None:
    # Outputs of files that were removed or now fail must not linger beside fresh ones.
    if folder.is_dir():
        for p in folder.glob(f"*{suffix}"):
            if p.stem not in keep:
                p.unlink()


def render_all(raw_dir: str | os.PathLike, out_dir: str | os.PathLike, *,
               settings: RenderSettings | None = None, workers: int = 1,
               on_error: Literal["skip", "fail"] = "skip", progress: bool = True,
               sources: dict[str, str] | None = None) -> dict[str, Any]:
    """Render every raw in `raw_dir` into `out_dir`; writes and returns `manifest.json`.
    `sources` maps a raw file name to the source photo it was made from (default: the file's stem)."""
    settings = settings or RenderSettings()
    settings.postprocess_kwargs()  # validate once, before any worker starts
    if on_error not in ("skip", "fail"):
        raise CaispError(f"render.on_error must be 'skip' or 'fail', got {on_error!r}")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise CaispError(f"render.workers must be an integer >= 1, got {workers!r}")
    raw_dir, out_dir = Path(raw_dir), Path(out_dir)
    if not raw_dir.is_dir():
        raise CaispError(f"{raw_dir}: raw folder not found")
    files = list_raw_files(raw_dir)
    if not files:
        raise CaispError(f"{raw_dir}: no raw files")

    images: list[dict[str, Any]] = []
    skipped: list[dict[str, str]] = []
    pool = spawn_pool(min(workers, len(files))) if workers > 1 else None
    try:
        if pool is not None:
            results = pool.map(_render_task, files, [out_dir] * len(files), [settings] * len(files))
        else:
            results = (_render_task(p, out_dir, settings) for p in files)
        with Progress(len(files), "render: {n}/{total} images, {rate:.1f} images/s", desc="render",
                      unit="img", enabled=progress) as bar:
            for path, (status, value) in zip(files, results):  # map keeps file order: deterministic
                if status == "ok":
                    images.append({**value, "source": (sources or {}).get(path.name, value["source"])})
                elif on_error == "fail":
                    raise RawError(path, value)
                else:
                    bar.write(f"skipped {path.name}: {value}", file=sys.stdout)
                    skipped.append({"file": path.name, "reason": value})
                bar.update()
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)

    if not images:
        raise CaispError(f"{raw_dir}: no usable raw files (all {len(files)} skipped)")
    keep = {e["stem"] for e in images}
    for folder, suffix in (("targets", ".npy"), ("mosaics", ".npy"), ("meta", ".json")):
        _remove_stale(out_dir / folder, suffix, keep)
    manifest = {"images": images, "skipped": skipped, "settings": settings.to_dict()}
    write_json(out_dir / "manifest.json", manifest)
    return manifest

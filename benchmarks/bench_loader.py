"""Training-data loader at FiveK scale: 448x448 crops with augmentation from N synthetic 12 MP images
in the layout of `caisp.data.store`, with 0 and 2 DataLoader workers, for N = 12 and N = 48.

Prints, and writes to benchmarks/results/loader.{json,md}: crops/s, the peak RSS of the whole process
tree (main process + workers, sampled every 50 ms), where the time of one crop goes, and the cost of
the former O(image) reads (compressed npz + PNG + JPEG decode) for comparison.

Goal (issue 10): >= 100 crops/s with 2 workers on a 2-core CPU, peak RSS <= 2 GiB, and the same RSS
(+-10 %) for N = 12 and N = 48, i.e. memory does not grow with the data set.

--tasks picks the items: `isp` (raw + sRGB target, the ISP-Net's pretraining and fine-tuning), `cas`
(sRGB + JPEG, the CAS-Net's training), both as the pipeline loads them (only the task's keys, 8-bit
images as uint8 until the device), or `all` (raw + sRGB + JPEG, all float32: every item before the
datasets took a task's keys).

    python benchmarks/bench_loader.py                    # the issue's configuration
    python benchmarks/bench_loader.py --sizes 4 --batches 5 --height 1024 --width 1536   # quick
"""
from __future__ import annotations

import argparse
import io
import json
import os
import platform
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import torch
from torch.utils.data import DataLoader

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from caisp.data import store  # noqa: E402
from caisp.data.bayer import apply_colour_matrix, demosaic_bilinear, normalise_mosaic  # noqa: E402
from caisp.data.dataset import KEYS, RawRGBDataset, _augment  # noqa: E402
from caisp.io import write_text  # noqa: E402

D700 = (2848, 4256)  # FiveK's Nikon D700 frames, H x W
WB = np.array([2.1, 1.0, 1.5], np.float32)
RGB_CAM = np.array([[1.7, -0.5, -0.2], [-0.2, 1.5, -0.3], [0.0, -0.5, 1.5]], np.float32)
TASKS = {"isp": (("raw", "srgb"), True), "cas": (("srgb", "coded"), True), "all": (KEYS, False)}  # keys, uint8


def make_images(root: Path, n: int, height: int, width: int) -> list[str]:
    """n images: a smooth random field (so values look like a photo's, not noise) in every file."""
    stems = []
    rng = np.random.default_rng(0)
    for i in range(n):
        stem = f"img{i:03d}"
        stems.append(stem)
        if (root / "targets" / f"{stem}.npy").is_file():
            continue
        small = rng.integers(0, 256, (height // 32 + 1, width // 32 + 1, 3), dtype=np.uint8)
        target = np.repeat(np.repeat(small, 32, 0), 32, 1)[:height, :width]
        raw = (600 + target[..., 1].astype(np.uint16) * 60).astype(np.uint16)
        store.write_array(root / "mosaics" / f"{stem}.npy", raw)
        store.write_meta(root / "meta" / f"{stem}.json", cfa="RGGB", black=np.full((2, 2), 600.0, np.float32),
                         white=16383.0, wb=WB, daylight_wb=WB, rgb_cam=RGB_CAM, flip=0)
        store.write_array(root / "targets" / f"{stem}.npy", target)
        store.write_array(root / "jpeg" / f"{stem}.npy", target)
    return stems


class PeakRSS:
    """Peaks of the summed RSS of this process and all its descendants, sampled in a thread: `peak`
    (all resident pages) and `peak_anon` (RSS less its file-backed shared pages: what the processes
    own; the memory-mapped data's pages are the OS page cache, one copy for every process)."""

    def __init__(self, every: float = 0.05) -> None:
        self.every, self.peak, self.peak_anon, self._stop = every, 0, 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> tuple[int, int]:
        me = psutil.Process()
        total = anon = 0
        for p in [me, *me.children(recursive=True)]:
            try:
                m = p.memory_info()
            except psutil.Error:  # a worker that just exited
                continue
            total += m.rss
            anon += m.rss - getattr(m, "shared", 0)
        return total, anon

    def _update(self) -> None:
        total, anon = self._sample()
        self.peak, self.peak_anon = max(self.peak, total), max(self.peak_anon, anon)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._update()
            time.sleep(self.every)

    def __enter__(self) -> "PeakRSS":
        self._update()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def run_loader(root: Path, stems: list[str], workers: int, batches: int, patch: int, batch_size: int,
               task: str = "isp") -> dict:
    keys, uint8 = TASKS[task]
    ds = RawRGBDataset(root, stems, coded_dir=root / "jpeg", patch=patch, train=True, keys=keys, uint8=uint8,
                       repeat=max(1, (batches + 2) * batch_size // len(stems) + 1))
    torch.manual_seed(0)
    with PeakRSS() as rss:
        loader = DataLoader(ds, batch_size=batch_size, shuffle=True, num_workers=workers, drop_last=True)
        it = iter(loader)
        next(it)  # workers started, first batch through: not part of the rate
        t0 = time.perf_counter()
        for _ in range(batches):
            batch = next(it)
        dt = time.perf_counter() - t0
        assert all(batch[k].shape == (batch_size, 3, patch, patch) for k in keys)
        del it, loader
    return {"task": task, "images": len(stems), "workers": workers, "crops": batches * batch_size,
            "kib_per_crop": sum(batch[k].nbytes for k in keys) / batch_size / 2**10,
            "crops_per_s": batches * batch_size / dt, "peak_rss_mib": rss.peak / 2**20,
            "peak_anon_mib": rss.peak_anon / 2**20}


def crop_profile(root: Path, stem: str, patch: int, repeats: int = 30) -> dict[str, float]:
    """Milliseconds per step of one crop, in one thread (as in a DataLoader worker)."""
    img = store.RenderedImage(root, stem, root / "jpeg")
    H, W = img.shape
    rng = np.random.default_rng(1)
    times: dict[str, float] = {}

    def timed(name: str, fn):
        t = time.perf_counter()
        out = fn()
        times[name] = times.get(name, 0.0) + (time.perf_counter() - t) * 1e3 / repeats
        return out

    aug = (1, 0, 1)  # a flip and a quarter turn: the dearest augmentation
    for _ in range(repeats):
        y0, x0 = (int(rng.integers(0, (H - patch) // 16)) * 16, int(rng.integers(0, (W - patch) // 16)) * 16)
        m = timed("read mosaic window (uint16, memory map)", lambda: store.read_window(
            img.mosaic_path, y0, x0, patch + 4, patch + 4))
        m = timed("normalise (black, white) to float32", lambda: store.normalise_raw(m, img.meta["black"], 16383.0))
        t = timed("white balance + clip", lambda: normalise_mosaic(m, "RGGB", WB, "camera"))
        t = timed("flip/turn the mosaic window", lambda: torch.from_numpy(
            np.ascontiguousarray(_augment(t.numpy(), aug))))
        rgb = timed("bilinear demosaic", lambda: demosaic_bilinear(t, "GRBG")[:, 2:-2, 2:-2])
        timed("colour matrix (rgb_cam)", lambda: apply_colour_matrix(rgb, torch.from_numpy(RGB_CAM)))
        tgt = timed("read target + JPEG windows (uint8)", lambda: (img.target(y0, x0, patch, patch),
                                                                   img.coded(y0, x0, patch, patch)))
        timed("flip/turn + to float32 CHW (target, JPEG)", lambda: [
            torch.from_numpy(np.ascontiguousarray(_augment(a, aug).transpose(2, 0, 1))).float().div_(255)
            for a in tgt])
    ds = RawRGBDataset(root, [stem], coded_dir=root / "jpeg", patch=patch, train=True)
    t = time.perf_counter()
    for _ in range(repeats):
        ds[0]
    times["whole __getitem__"] = (time.perf_counter() - t) * 1e3 / repeats
    return times


def old_format_cost(height: int, width: int) -> float:
    """Seconds to read one image the way the former, cached-per-process loader did on a cache miss:
    a compressed float32 npz mosaic, a PNG target and a JPEG, each decoded whole."""
    from PIL import Image

    rng = np.random.default_rng(2)
    small = rng.integers(0, 256, (height // 32 + 1, width // 32 + 1, 3), dtype=np.uint8)
    img = np.repeat(np.repeat(small, 32, 0), 32, 1)[:height, :width]
    npz, png, jpg = io.BytesIO(), io.BytesIO(), io.BytesIO()
    np.savez_compressed(npz, mosaic=img[..., 1].astype(np.float32) / 255)
    Image.fromarray(img).save(png, format="PNG", compress_level=1)
    Image.fromarray(img).save(jpg, format="JPEG", quality=90)
    t = time.perf_counter()
    for buf in (npz, png, jpg):
        buf.seek(0)
    np.load(npz)["mosaic"]
    np.asarray(Image.open(png).convert("RGB"))
    np.asarray(Image.open(jpg).convert("RGB"))
    return time.perf_counter() - t


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[12, 48], help="numbers of images (N)")
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    ap.add_argument("--tasks", nargs="+", default=["isp", "cas", "all"], choices=list(TASKS))
    ap.add_argument("--height", type=int, default=D700[0])
    ap.add_argument("--width", type=int, default=D700[1])
    ap.add_argument("--patch", type=int, default=448)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--batches", type=int, default=40, help="timed batches per configuration")
    ap.add_argument("--data", type=Path, default=None, help="folder for the images (default: a temp dir)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)  # as in a DataLoader worker; the main process then only collects

    tmp = None if args.data else tempfile.TemporaryDirectory(prefix="caisp-loader-")
    root = args.data or Path(tmp.name)
    try:
        n_max = max(args.sizes)
        t = time.perf_counter()
        stems = make_images(root, n_max, args.height, args.width)
        print(f"{n_max} images of {args.height}x{args.width} in {root} ({time.perf_counter() - t:.0f} s)")
        rows = []
        for n in args.sizes:
            for w in args.workers:
                for task in args.tasks:
                    r = run_loader(root, stems[:n], w, args.batches, args.patch, args.batch_size, task)
                    rows.append(r)
                    print(f"N={n:3d} workers={w} {task:3s}: {r['crops_per_s']:6.1f} crops/s, "
                          f"peak RSS {r['peak_rss_mib']:.0f} MiB (anonymous {r['peak_anon_mib']:.0f})", flush=True)
        profile = crop_profile(root, stems[0], args.patch)
        old = old_format_cost(args.height, args.width)
    finally:
        if tmp is not None:
            tmp.cleanup()

    # The goal is the ISP's loader (the demosaic makes its crops the dearest of the pipeline's).
    goal_task = "isp" if "isp" in args.tasks else args.tasks[0]
    best = {n: max(r["crops_per_s"] for r in rows
                   if r["images"] == n and r["workers"] == max(args.workers) and r["task"] == goal_task)
            for n in args.sizes}
    rss = {n: max(r["peak_rss_mib"] for r in rows if r["images"] == n) for n in args.sizes}
    lo, hi = min(rss.values()), max(rss.values())
    anon = {n: max(r["peak_anon_mib"] for r in rows if r["images"] == n) for n in args.sizes}
    goals = {f"crops_per_s >= 100 with the most workers ({goal_task})": min(best.values()) >= 100,
             "peak RSS <= 2 GiB": hi <= 2048, "RSS within 10 % across N": hi <= 1.1 * lo,
             "anonymous RSS within 10 % across N": max(anon.values()) <= 1.1 * min(anon.values())}
    result = {"machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine(),
                          "torch": torch.__version__},
              "settings": {"height": args.height, "width": args.width, "patch": args.patch,
                           "batch_size": args.batch_size, "batches": args.batches},
              "runs": rows, "crop_profile_ms": profile, "old_format_s_per_image": old, "goals": goals}
    args.out.mkdir(parents=True, exist_ok=True)
    write_text(args.out / "loader.json", json.dumps(result, indent=2) + "\n")
    md = ["# Loader benchmark (`benchmarks/bench_loader.py`)", "",
          f"{os.cpu_count()} CPUs ({result['machine']['processor']}), torch {torch.__version__}; "
          f"{args.height}x{args.width} images, {args.patch}x{args.patch} crops with flips/rotations, "
          f"batch {args.batch_size}, {args.batches} timed batches after the first.", "",
          "Items: `isp` = raw + sRGB target, `cas` = sRGB + JPEG, as the pipeline's datasets load them (the task's "
          "keys only; 8-bit images stay uint8 until the device); `all` = raw + sRGB + JPEG in float32 (every item "
          "before the datasets took a task's keys).", "",
          "Peak RSS of the process tree (main process + workers), and its anonymous part: RSS less the "
          "file-backed shared pages, i.e. without the memory-mapped data's pages, which are the OS page cache "
          "(one copy for all processes, reclaimable; how many of them are resident depends on which pages the "
          "crops happened to touch, not on what the processes allocate).", "",
          "| images N | workers | items | KiB per crop | crops/s | peak RSS (MiB) | peak anonymous RSS (MiB) |",
          "|---|---|---|---|---|---|---|"]
    md += [f"| {r['images']} | {r['workers']} | {r['task']} | {r['kib_per_crop']:.0f} | {r['crops_per_s']:.1f} | "
           f"{r['peak_rss_mib']:.0f} | {r['peak_anon_mib']:.0f} |" for r in rows]
    md += ["", "Where one crop's time goes (one thread, ms):", "", "| step | ms |", "|---|---|"]
    md += [f"| {k} | {v:.2f} |" for k, v in profile.items()]
    md += ["", f"The former format read a whole image per crop on a cache miss (compressed npz mosaic + PNG + "
           f"JPEG decode): {old:.2f} s per image at this size; its per-process cache held ~"
           f"{args.height * args.width * 10 / 2**20:.0f} MiB per image in every worker.", "",
           "Goals: " + "; ".join(f"{k}: {'met' if v else 'NOT met'}" for k, v in goals.items()) + "."]
    write_text(args.out / "loader.md", "\n".join(md) + "\n")
    print("\n".join(md[-1:]))
    return 0 if all(goals.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())

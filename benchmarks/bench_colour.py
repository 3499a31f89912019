"""Colour of `caisp develop` against LibRaw on real camera raws.

    python benchmarks/bench_colour.py --model models/isp/today/pretrained/seed0.pt [RAW ...] [--tile 512]

Each raw (default: the files in ../shared/raw-samples; non-Bayer sensors are skipped with a note) is
developed with `caisp.develop.develop_raw` and rendered by LibRaw with `use_camera_wb=True,
no_auto_bright=True` and rawpy's defaults otherwise (AHD, sRGB, BT.709 curve, the camera's
orientation). Both are box-downscaled 4x (demosaicing and noise differences are not colour), then
compared: mean CIEDE2000 (skimage `deltaE_ciede2000` of `rgb2lab` of the sRGB images) and the R/G and
B/G ratios of the channel means. Writes benchmarks/results/colour.md and a side-by-side PNG per raw
(ours | LibRaw, the compared 4x-downscaled images) under benchmarks/results/colour/.
Goal: mean CIEDE2000 <= 5 over the cameras, and <= 8 for every camera.
"""
from __future__ import annotations

import argparse
import datetime
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from caisp import CaispError  # noqa: E402
from caisp.io import write_png, write_text  # noqa: E402

SAMPLES = ROOT.parent / "shared" / "raw-samples"
GOAL_MEAN, GOAL_EACH = 5.0, 8.0
SCALE = 4


def default_raws() -> list[Path]:
    from caisp.data.download import RAW_EXTENSIONS

    if not SAMPLES.is_dir():
        raise SystemExit(f"{SAMPLES} is absent: name the raw files to compare")
    return sorted(p for p in SAMPLES.iterdir() if p.suffix[1:].lower() in RAW_EXTENSIONS)


def libraw_render(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """LibRaw's oriented sRGB in [0, 1], and where our (even-cropped) picture lies in it: a boolean
    mask of the oriented frame, True on the pixels develop_raw also produces."""
    from caisp.data.raw import open_raw
    from caisp.develop import apply_flip

    with open_raw(path) as raw:
        rgb = raw.postprocess(use_camera_wb=True, no_auto_bright=True)
        h, w = raw.raw_image_visible.shape
        flip = raw.sizes.flip
    # read_raw drops an odd last row/column in sensor orientation; orient that crop like the image.
    kept = np.zeros((h, w, 1), dtype=bool)
    kept[: h // 2 * 2, : w // 2 * 2] = True
    kept = apply_flip(kept, flip)[..., 0]
    if kept.shape != rgb.shape[:2]:
        raise CaispError(f"{path}: LibRaw rendered {rgb.shape[1]}x{rgb.shape[0]}, not the raw's "
                         f"{kept.shape[1]}x{kept.shape[0]} (non-square pixels?)")
    return rgb.astype(np.float64) / 255.0, kept


def crop_to(img: np.ndarray, mask: np.ndarray) -> np.ndarray:
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    return img[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]


def box_down(img: np.ndarray, k: int = SCALE) -> np.ndarray:
    h, w = img.shape[0] // k * k, img.shape[1] // k * k
    return img[:h, :w].reshape(h // k, k, w // k, k, -1).mean(axis=(1, 3))


def ratios(img: np.ndarray) -> tuple[float, float]:
    """R/G and B/G of the channel means (NaN for a picture without green, e.g. an untrained model's)."""
    r, g, b = img.reshape(-1, 3).mean(0)
    return (float(r / g), float(b / g)) if g > 0 else (float("nan"), float("nan"))


def compare(path: Path, net, config: dict, tile: int, overlap: int, device: str, png_dir: Path) -> dict:
    """One raw: our picture against LibRaw's; the row of the results table."""
    from skimage.color import deltaE_ciede2000, rgb2lab

    from caisp.data.raw import read_raw
    from caisp.develop import develop_raw

    raw = read_raw(path)  # refuses non-Bayer sensors with the reason
    ours = develop_raw(path, net, config, tile=tile, overlap=overlap, device=device).astype(np.float64)
    ref, kept = libraw_render(path)
    ref = crop_to(ref, kept)
    if ref.shape != ours.shape:
        raise CaispError(f"{path}: our picture is {ours.shape[1]}x{ours.shape[0]}, LibRaw's "
                         f"{ref.shape[1]}x{ref.shape[0]}")
    ours, ref = box_down(ours), box_down(ref)
    de = deltaE_ciede2000(rgb2lab(ours), rgb2lab(ref))
    png_dir.mkdir(parents=True, exist_ok=True)
    side = np.concatenate([ours, ref], axis=1)
    write_png(png_dir / f"{path.stem}.png", np.rint(np.clip(side, 0, 1) * 255).astype(np.uint8))
    (rg, bg), (rg_ref, bg_ref) = ratios(ours), ratios(ref)
    return {"name": path.name, "camera": raw.camera or "?", "wb": raw.wb_source,
            "size": f"{ref.shape[1] * SCALE}x{ref.shape[0] * SCALE}", "de_mean": float(de.mean()),
            "de_p95": float(np.percentile(de, 95)), "rg": rg, "bg": bg, "rg_ref": rg_ref,
            "bg_ref": bg_ref, "png": f"{png_dir.name}/{path.stem}.png"}


def table(rows: list[dict], skipped: list[tuple[str, str]]) -> list[str]:
    out = ["| raw | camera | WB | compared at | CIEDE2000 mean | CIEDE2000 p95 | R/G ours / LibRaw | "
           "B/G ours / LibRaw | side by side |",
           "| --- | --- | --- | --- | ---: | ---: | ---: | ---: | --- |"]
    for r in rows:
        out.append(f"| {r['name']} | {r['camera']} | {r['wb']} | {r['size']} / {SCALE} | "
                   f"{r['de_mean']:.2f} | {r['de_p95']:.2f} | {r['rg']:.3f} / {r['rg_ref']:.3f} | "
                   f"{r['bg']:.3f} / {r['bg_ref']:.3f} | [{r['png']}]({r['png']}) |")
    out += [f"| {name} | skipped: {why} | | | | | | | |" for name, why in skipped]
    return out


def verdict(rows: list[dict]) -> str:
    if not rows:
        return "no raw could be compared"
    mean = float(np.mean([r["de_mean"] for r in rows]))
    worst = max(rows, key=lambda r: r["de_mean"])
    ok = mean <= GOAL_MEAN and worst["de_mean"] <= GOAL_EACH
    return (f"mean CIEDE2000 over {len(rows)} camera(s) {mean:.2f} (goal <= {GOAL_MEAN:.0f}), worst "
            f"{worst['de_mean']:.2f} for {worst['name']} (goal <= {GOAL_EACH:.0f}): goal "
            f"{'met' if ok else 'not met'}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("raws", nargs="*", type=Path, help=f"raw files (default: those in {SAMPLES})")
    ap.add_argument("--model", required=True, type=Path, help="caisp ISP-Net checkpoint")
    ap.add_argument("--tile", type=int, default=512)
    ap.add_argument("--overlap", type=int, default=32)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out-dir", type=Path, default=ROOT / "benchmarks" / "results",
                    help="where colour.md and colour/<name>.png go (default benchmarks/results)")
    args = ap.parse_args(argv)

    from caisp.checkpoint import load_model
    from caisp.data.raw import RawError

    net, config = load_model(args.model, device=args.device)
    rows, skipped = [], []
    for path in args.raws or default_raws():
        try:
            rows.append(compare(path, net, config, args.tile, args.overlap, args.device,
                                args.out_dir / "colour"))
        except RawError as e:  # e.g. the Kodak C330 (not a Bayer sensor): a note, not a failure
            skipped.append((path.name, e.reason))
            print(f"skipped {path.name}: {e.reason}", file=sys.stderr)
    lines = table(rows, skipped)
    text = "\n".join([
        "# caisp develop vs LibRaw: colour on real camera raws",
        "",
        f"Written by `benchmarks/bench_colour.py` on {datetime.date.today()} with model "
        f"`{args.model.name}` (input_norm {config.get('input_norm', 'wb')!r}, CFA "
        f"{config.get('cfa', 'RGGB')}). LibRaw: `postprocess(use_camera_wb=True, no_auto_bright=True)`, "
        f"rawpy defaults otherwise. Both pictures box-downscaled {SCALE}x before comparing; CIEDE2000 "
        "of skimage `rgb2lab` (sRGB, D65); R/G and B/G are ratios of the sRGB channel means. "
        "WB: where the white balance came from (`caisp.data.raw.white_balance`: camera, unity, auto, "
        "daylight, generic), the same for both renderings.",
        "",
        *lines,
        "",
        verdict(rows) + ".",
        "",
    ])
    write_text(args.out_dir / "colour.md", text)
    print("\n".join(lines))
    print(verdict(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())

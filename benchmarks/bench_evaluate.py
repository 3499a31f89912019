"""What one evaluation of one ISP on one 12 MP test photo costs on the CPU, apart from the network.

    python benchmarks/bench_evaluate.py [--workers 1 2] [--repeats 3]

`caisp.evaluate.evaluate_isps` scores every ISP output at every quality of the sweep (params-paper:
JPEG QF 80..96, 9 points): a JPEG round trip of the output, PSNR against c(y) and y, SSIM at the
training point; c(y) is encoded once per photo and shared by the models. The network here is a
per-pixel stand-in (a 1x1 convolution), so the time is the scoring alone; the ISP-Net's own pass
runs on the GPU in the paper configuration. Also times each piece once, and PSNR as it was summed
before df3ad6f (whole-image int64 copies), and writes benchmarks/results/evaluate.{json,md} with the
cost of the paper graph's evaluation on FiveK's 73 test photos.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from caisp import evaluate as ev, metrics  # noqa: E402
from caisp.codecs import Point  # noqa: E402
from caisp.io import write_text  # noqa: E402

SIZE = (2848, 4256)  # H, W: Nikon D700
SWEEP = [80, 82, 84, 86, 88, 90, 92, 94, 96]  # params-paper.yaml evaluate.sweep_qfs
# params-paper.yaml's graph: evaluate_controls 1 + 2 x 3 models, evaluate 2 QFs x 4 CAS x 3 seeds,
# evaluate_unfrozen 2 x 2 x 3; FiveK's test split is 15 % of 487 raws.
PAPER_MODELS, PAPER_TEST = 7 + 24 + 12, round(0.15 * 487)


def test_item() -> dict:
    """A natural photo at the D700 size as the evaluation's item: sRGB target y and an input."""
    import skimage.data
    from PIL import Image

    rgb = np.asarray(Image.fromarray(skimage.data.astronaut()).resize(SIZE[::-1], Image.Resampling.LANCZOS))
    y = torch.from_numpy(rgb.transpose(2, 0, 1).copy()).float().div_(255.0)
    return {"stem": "astronaut", "srgb": y, "raw": y.pow(2.2)}  # a linear-looking input


def old_psnr_u8(a: np.ndarray, b: np.ndarray) -> float:
    """psnr_u8 before df3ad6f, for the comparison."""
    d = a.astype(np.int32) - b.astype(np.int32)
    sse = int(np.dot(d.ravel().astype(np.int64), d.ravel().astype(np.int64)))
    return metrics.mse_to_psnr(sse / d.size, 255.0)


def timed(fn, *args) -> tuple[float, object]:
    t = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - t, out


def pieces(item: dict, net: torch.nn.Module, repeats: int) -> dict[str, float]:
    """Seconds of each piece of one (model, photo) evaluation, one thread, best of `repeats`."""
    enc, dec = ev._codec("jpeg", {"subsampling": "4:2:0"})
    target = ev.to_uint8(item["srgb"])

    def best(fn, *a) -> tuple[float, object]:
        runs = [timed(fn, *a) for _ in range(repeats)]
        return min(t for t, _ in runs), runs[0][1]
    out = {}
    out["network (1x1 stand-in) + to uint8"], pred = best(
        lambda: ev.to_uint8(ev.run_model(net, item["raw"], device="cpu", tile=None)))
    out["JPEG encode"], data = best(enc, pred, 90)
    out["JPEG decode"], decoded = best(dec, data)
    out["PSNR (chunked int64, now)"], _ = best(ev.psnr_u8, decoded, target)
    out["PSNR (whole-image int64, before)"], _ = best(old_psnr_u8, decoded, target)
    out["SSIM (float64, CPU)"], _ = best(ev.ssim_u8, decoded, target)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="evaluate.workers (threads)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = ap.parse_args(argv)

    item = test_item()
    torch.manual_seed(0)
    net = torch.nn.Conv2d(3, 3, 1).eval()
    points = [Point("jpeg", q) for q in SWEEP]
    torch.set_num_threads(1)  # the pieces on one thread, as each of evaluate.workers runs them
    parts = pieces(item, net, args.repeats)
    torch.set_num_threads(os.cpu_count() or 1)
    runs = []
    for workers in args.workers:
        for ssim in (True, False):
            best = min(timed(lambda: ev.evaluate_isps({("m", 0): net}, [item], points=points,
                                                      ssim_points=[Point("jpeg", 90)] if ssim else [],
                                                      settings={"jpeg": {"subsampling": "4:2:0"}},
                                                      device="cpu", workers=workers))[0]
                       for _ in range(args.repeats))
            runs.append({"workers": workers, "ssim": ssim, "s_per_model_photo": best})
            print(f"workers={workers} ssim={ssim}: {best:.2f} s per model and photo (c(y) included)", flush=True)
    result = {"machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine(),
                          "torch": torch.__version__}, "size": SIZE, "sweep": SWEEP, "runs": runs,
              "pieces_s": parts, "paper_models": PAPER_MODELS, "paper_test_photos": PAPER_TEST}
    args.out.mkdir(parents=True, exist_ok=True)
    write_text(args.out / "evaluate.json", json.dumps(result, indent=2) + "\n")
    calls = {"PSNR": 2 * len(SWEEP) + 1, "JPEG encode": len(SWEEP), "JPEG decode": len(SWEEP), "SSIM": 1}
    saved = (parts["PSNR (whole-image int64, before)"] - parts["PSNR (chunked int64, now)"]) * calls["PSNR"]
    md = ["# Evaluation cost per ISP and 12 MP photo (`benchmarks/bench_evaluate.py`)", "",
          f"{os.cpu_count()} CPUs ({result['machine']['processor']}), torch {torch.__version__}; one "
          f"{SIZE[1]}x{SIZE[0]} photo (skimage astronaut, upscaled); JPEG sweep QF {SWEEP[0]}..{SWEEP[-1]} "
          f"({len(SWEEP)} points, params-paper.yaml), SSIM at one point; a 1x1-convolution stand-in for the "
          f"ISP, so these are the scoring's costs (the ISP-Net runs on the GPU in the paper configuration). "
          f"Best of {args.repeats}.", "",
          "| evaluate.workers (threads) | SSIM at the training point | s per model and photo |", "|---|---|---|"]
    md += [f"| {r['workers']} | {'yes' if r['ssim'] else 'no'} | {r['s_per_model_photo']:.2f} |" for r in runs]
    md += ["", f"One piece at a time (one thread, s; per model and photo: PSNR x {calls['PSNR']}, "
           f"encode and decode x {len(SWEEP)}, SSIM x 1):", "", "| piece | s |", "|---|---|"]
    md += [f"| {k} | {v:.3f} |" for k, v in parts.items()]
    n, w = PAPER_MODELS * PAPER_TEST, max(args.workers)
    with_ssim, without = (min(r["s_per_model_photo"] for r in runs if r["ssim"] == flag and r["workers"] == w)
                          for flag in (True, False))
    md += ["", f"The former PSNR sums cost {saved:.1f} s more per model and photo on one thread.", "",
           f"params-paper.yaml's graph evaluates {PAPER_MODELS} models on FiveK's {PAPER_TEST} test photos: "
           f"{n} model-photo evaluations. Scoring them with this machine's {w} threads takes "
           f"{n * with_ssim / 3600:.1f} h with SSIM on the CPU, {n * without / 3600:.1f} h without; on a GPU "
           "machine SSIM runs on the device and the round trips spread over `evaluate.workers` threads."]
    write_text(args.out / "evaluate.md", "\n".join(md) + "\n")
    print("\n".join(md[-3:]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""What an encoder alone buys on the agnostic ISP's output at equal PSNR (issue 22's anchors).

    python benchmarks/bench_encoder_anchors.py [--model models/isp/paper/pretrained/seed0.pt] [--regime paper]

Runs the ISP on the default pipeline's test photos (after `dvc repro`), then encodes each output over a
QF sweep with: Pillow (libjpeg-turbo, baseline Huffman tables: the pipeline's encoder), Pillow with
optimised Huffman tables, and mozjpeg 4.0.3 (jpeglib) with trellis quantisation and optimised
Huffman tables on the IJG tables (as the others, `base_quant_tbl_idx=0`), so that only the entropy
coding and the quantisation decisions differ; mozjpeg writes progressive scans through jpeglib (its
default, which jpeglib 1.0.2 does not switch off), part of its saving. The encoders are the pipeline's (`caisp.data.codec`: codecs jpeg, jpegopt, mozjpeg). Scores PSNR(c(f(x)), y) against the real bpp
and reports each encoder's BD-rate against Pillow's, per photo (mean and a 95 % bootstrap interval
over photos) and on the mean curves. Writes benchmarks/results/encoder_anchors.md.
"""
from __future__ import annotations

import argparse
import datetime
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from caisp.io import write_text  # noqa: E402


def _encoder(codec: str):
    """The pipeline's own encoder of `codec` (caisp.data.codec): baseline, or one of JPEG's anchors."""
    from caisp.data.codec import encode

    return lambda img, qf: encode(img, codec, qf, subsampling="4:2:0")


ENCODERS = {"pillow (libjpeg-turbo, baseline)": _encoder("jpeg"),
            "pillow, optimised Huffman": _encoder("jpegopt"),
            "mozjpeg 4.0.3: trellis, optimised Huffman, progressive": _encoder("mozjpeg")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=ROOT / "models/isp/paper/pretrained/seed0.pt")
    ap.add_argument("--regime", default="paper")
    ap.add_argument("--qfs", type=int, nargs="+", default=[60, 70, 80, 85, 90, 95])
    ap.add_argument("--bootstrap", type=int, default=4000)
    args = ap.parse_args()

    import os

    os.chdir(ROOT)
    from caisp.bjontegaard import bd_rate
    from caisp.checkpoint import load_model
    from caisp.data.codec import decode_jpeg
    from caisp.evaluate import isp_outputs, psnr_u8
    from caisp.metrics import bpp
    from caisp.params import load_params
    from caisp.pipeline.evaluation import test_set

    p = load_params(ROOT / "params.yaml").regime(args.regime)
    net = load_model(args.model)[0]
    curves: dict[str, dict[str, tuple[list[float], list[float]]]] = {e: {} for e in ENCODERS}
    for stem, pred, target in isp_outputs(net, test_set(p), device="cpu", tile=p.evaluate.tile,
                                          overlap=p.evaluate.overlap):
        h, w = pred.shape[:2]
        for name, enc in ENCODERS.items():
            rates, psnrs = [], []
            for qf in args.qfs:
                data = enc(pred, qf)
                rates.append(bpp(len(data), h, w))
                psnrs.append(psnr_u8(decode_jpeg(data), target))
            curves[name][stem] = (rates, psnrs)
    base = next(iter(ENCODERS))
    stems = sorted(curves[base])
    rng = np.random.default_rng(0)
    lines = ["# Encoder-side anchors on the agnostic ISP's output", "",
             f"Written by `benchmarks/bench_encoder_anchors.py` on {datetime.date.today()}: ISP "
             f"`{args.model.relative_to(ROOT) if args.model.is_relative_to(ROOT) else args.model}` "
             f"(regime `{args.regime}`) on the {len(stems)} test photos of the default data, QFs "
             f"{', '.join(map(str, args.qfs))}, 4:2:0, PSNR(c(f(x)), y). BD-rate against "
             f"{base}: negative = fewer bytes at equal PSNR; per photo, mean and 95 % bootstrap interval "
             f"over photos ({args.bootstrap} resamples), and on the photos' mean curves.", "",
             "| encoder | bpp at QF 80 (mean) | PSNR at QF 80 (mean) | BD-rate per photo, mean [95 %] | BD-rate of the mean curves |",
             "| --- | ---: | ---: | ---: | ---: |"]
    i80 = args.qfs.index(80) if 80 in args.qfs else len(args.qfs) // 2

    def mean_curve(name):
        return ([float(np.mean([curves[name][s][0][k] for s in stems])) for k in range(len(args.qfs))],
                [float(np.mean([curves[name][s][1][k] for s in stems])) for k in range(len(args.qfs))])
    for name in ENCODERS:
        per = np.array([bd_rate(*curves[base][s], *curves[name][s]) for s in stems], float)
        boot = [np.nanmean(per[rng.integers(0, len(per), len(per))]) for _ in range(args.bootstrap)]
        lo, hi = np.nanpercentile(boot, [2.5, 97.5])
        r, q = mean_curve(name)
        whole = bd_rate(*mean_curve(base), r, q)
        lines.append(f"| {name} | {r[i80]:.3f} | {q[i80]:.2f} | {np.nanmean(per):+.2f} % [{lo:+.2f}, {hi:+.2f}] | "
                     f"{whole:+.2f} % |")
    text = "\n".join(lines) + "\n"
    print(text)
    write_text(ROOT / "benchmarks/results/encoder_anchors.md", text)


if __name__ == "__main__":
    main()

"""What bf16 autocast costs `caisp develop` in accuracy: the trained models' pictures of the test raws
in bf16 against fp32, whole and tiled.

    python benchmarks/bench_develop_precision.py [--models models/isp/today/pretrained/seed0.pt ...]

Needs the default `dvc repro` (its test raws under data/raw and its models). Per model and test raw:
|bf16 - fp32| over the float picture (mean, 99th percentile, max, in 1/255), the share of 8-bit
pixels that change, PSNR between the two 8-bit pictures and between their JPEGs (QF 90, 4:2:0), and
bf16 tiled (tile 256, develop's overlap) against bf16 whole. Speed is bench_develop.py's.
Writes benchmarks/results/develop_precision.md.
"""
from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from caisp.io import write_text  # noqa: E402

MODELS = ["models/isp/today/pretrained/seed0.pt", "models/isp/paper/aware-qf90-djs/seed0.pt"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=MODELS)
    ap.add_argument("--tile", type=int, default=256, help="the tiled run's tile size")
    args = ap.parse_args()

    import torch

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_develop import cpu_description

    from caisp.checkpoint import load_model
    from caisp.data.codec import decode, encode
    from caisp.develop import DEFAULT_OVERLAP, develop_raw, native_bf16
    from caisp.evaluate import psnr_u8

    test = json.loads((ROOT / "data/split.json").read_text())["test"]
    raws = [ROOT / "data/raw" / f"{stem}.dng" for stem in test if (ROOT / "data/raw" / f"{stem}.dng").is_file()]
    if not raws:
        raise SystemExit("no test raws under data/raw: run `dvc repro` first")
    rows = ["| model | raw | mean |Δ| /255 | p99 /255 | max /255 | 8-bit pixels changed | PSNR(bf16, fp32) dB "
            "| the same after JPEG QF 90 dB | bf16 tiled − whole: max /255 |",
            "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    worst, psnrs = 0.0, []
    for model in args.models:
        net, config = load_model(ROOT / model)
        for raw in raws:
            fp32 = develop_raw(raw, net, config, tile=4096, precision="fp32")
            bf16 = develop_raw(raw, net, config, tile=4096, precision="bf16")
            tiled = develop_raw(raw, net, config, tile=args.tile, overlap=DEFAULT_OVERLAP, precision="bf16")
            d = np.abs(bf16 - fp32) * 255
            worst = max(worst, float(d.max()))
            u32, u16 = (np.rint(np.clip(x, 0, 1) * 255).astype(np.uint8) for x in (fp32, bf16))
            j32, j16 = (decode(encode(u, "jpeg", 90, subsampling="4:2:0"), "jpeg") for u in (u32, u16))
            psnrs.append(psnr_u8(j32, j16))
            rows.append(f"| `{model}` | {raw.stem} | {d.mean():.3f} | {np.percentile(d, 99):.2f} | {d.max():.2f} | "
                        f"{100 * np.mean(u32 != u16):.1f} % | {psnr_u8(u32, u16):.1f} | {psnrs[-1]:.1f} | "
                        f"{np.abs(tiled - bf16).max() * 255:.2f} |")
            print(rows[-1], flush=True)
    text = "\n".join([
        "# caisp develop: bf16 autocast against fp32", "",
        f"Written by `benchmarks/bench_develop_precision.py` on {datetime.date.today()}: the default graph's "
        f"test raws ({len(raws)}) developed whole (one pass), tiled at {args.tile} with overlap "
        f"{DEFAULT_OVERLAP}; torch {torch.__version__}, {torch.get_num_threads()} threads, {cpu_description()}; "
        f"native bf16 here: {'yes' if native_bf16(torch.device('cpu')) else 'no (emulated)'}.", "",
        *rows, "",
        f"Largest change of any pixel: {worst:.2f}/255. After JPEG the two pictures are {min(psnrs):.1f}-"
        f"{max(psnrs):.1f} dB apart, far closer than JPEG at QF 90 is to its own input (the report's PSNR(c(y), y)).",
        ""])
    write_text(ROOT / "benchmarks/results/develop_precision.md", text)
    print(text)


if __name__ == "__main__":
    main()

"""How far tiled inference with whole-image channel-attention statistics lands from one whole-image pass.

    python benchmarks/bench_stats_sample.py --model models/isp/today/pretrained/seed0.pt [--tols 1e-2 1e-3 1e-4]

`caisp develop` gathers the whole image's attention means while it computes the tiles and computes
again the tiles whose attention weights then prove off by more than a tolerance
(`caisp.tiling.run_tiled(attention_tol=...)`). This measures, on a 12-megapixel synthetic raw (as
bench_develop.py makes it) and a trained ISP-Net, the largest and the mean absolute difference, in
8-bit levels, between the whole image in one pass and the tiled output: with each tile's own
statistics, and at several tolerances; with the tile runs and the time of each. Writes
benchmarks/results/stats_sample.md.
"""
from __future__ import annotations

import argparse
import datetime
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from caisp.io import write_text  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, required=True, help="a trained ISP-Net checkpoint")
    ap.add_argument("--tols", type=float, nargs="+", default=[1e-2, 1e-3, 1e-4])
    ap.add_argument("--tile", type=int, default=None, help="default: caisp develop's")
    ap.add_argument("--overlap", type=int, default=None, help="default: caisp develop's")
    ap.add_argument("--append", action="store_true", help="add to the results file (several models)")
    args = ap.parse_args()

    import torch

    sys.path.insert(0, str(ROOT / "benchmarks"))
    import bench_develop
    from caisp import develop
    from caisp.checkpoint import load_model
    from caisp.tiling import run_tiled

    tile = args.tile or develop.DEFAULT_TILE
    overlap = args.overlap if args.overlap is not None else develop.DEFAULT_OVERLAP
    net, config = load_model(args.model)
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "d700.dng"
        bench_develop.make_raw(raw)
        x = develop.network_input(raw, config)  # (1, 3, H, W), what the network sees
    net = net.to(memory_format=torch.channels_last).eval()

    def fn(t):
        return net(t.contiguous(memory_format=torch.channels_last))

    with torch.no_grad():
        t0 = time.perf_counter()
        whole = fn(x)
        t_whole = time.perf_counter() - t0
    rows = []
    for tol in [None, *args.tols]:
        t0 = time.perf_counter()
        report: dict = {}
        # None: no model, each tile pools its own features (what the whole-image statistics fix)
        out = run_tiled(fn, x, tile, overlap, out_channels=3, model=None if tol is None else net,
                        attention_tol=0.0 if tol is None else tol, report=report)
        dt = time.perf_counter() - t0
        d = (out - whole).abs() * 255
        runs = f"{report['tile_runs']} / {report['tiles']}" if report else "one pass"
        rows.append((tol, float(d.max()), float(d.mean()), dt, runs))
        print(f"attention_tol={tol}: max {rows[-1][1]:.3f}/255, mean {rows[-1][2]:.4f}/255, {dt:.1f} s, {runs}", flush=True)
    h, w = x.shape[-2:]
    table = ["| statistics from | tolerance | tile runs / tiles | max abs diff (8-bit levels) | mean abs diff | tiled time s |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for tol, mx, mean, dt, runs in rows:
        what = ("each tile's own features" if tol is None
                else "the whole image's, gathered during the pass; off tiles computed again")
        table.append(f"| {what} | {'—' if tol is None else f'{tol:g}'} | {runs} | {mx:.3f} | {mean:.4f} | {dt:.1f} |")
    text = "\n".join([
        "# Tiled attention statistics against one whole-image pass", "",
        f"Written by `benchmarks/bench_stats_sample.py` on {datetime.date.today()}: model `{args.model}` "
        f"(base width {config['kwargs'].get('base_width')}), a {w}x{h} synthetic raw as bench_develop.py makes "
        f"it, tile {tile}, overlap {overlap}, fp32 on {torch.get_num_threads()} CPU threads. The reference "
        f"is the whole image in one pass ({t_whole:.1f} s, no tiles); the bound that tests/test_tiling.py "
        "holds tiled inference to is 0.5 levels.", "", *table, ""])
    out_md = ROOT / "benchmarks" / "results" / "stats_sample.md"
    previous = out_md.read_text() if args.append and out_md.exists() else ""
    write_text(out_md, previous + ("\n" if previous else "") + text)
    print("\n".join(table))


if __name__ == "__main__":
    main()

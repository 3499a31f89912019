"""benchmarks/bench_colour.py runs end to end on a small synthetic DNG with a tiny random ISP-Net."""
from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from caisp.checkpoint import save_model
from caisp.data.synthetic import write_dng
from caisp.models import build

ROOT = Path(__file__).resolve().parents[1]


def bench_module():
    spec = importlib.util.spec_from_file_location("bench_colour", ROOT / "benchmarks" / "bench_colour.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_colour_runs(tmp_path, capsys):
    y, x = np.mgrid[0:66, 98:0:-1].astype(np.float64)  # 66x98: sides not multiples of 4
    rgb = np.stack([60 + 1.5 * x, 80 + y, 200 - x], -1).clip(0, 255).astype(np.uint8)
    raw = write_dng(tmp_path / "synth.dng", rgb, noise=False, orientation=6)
    (tmp_path / "notes.txt").write_text("not a raw\n")
    torch.manual_seed(0)
    config = {"type": "isp_net", "kwargs": {"base_width": 4}, "role": "isp", "input_norm": "camera",
              "cfa": "RGGB", "qf": 90}
    save_model(tmp_path / "tiny.pt", build("isp_net", base_width=4), config)
    out = tmp_path / "results"
    assert bench_module().main([str(raw), str(tmp_path / "notes.txt"), "--model", str(tmp_path / "tiny.pt"),
                                "--tile", "64", "--overlap", "16", "--out-dir", str(out)]) == 0
    text = (out / "colour.md").read_text()
    row = next(line for line in text.splitlines() if line.startswith("| synth.dng"))
    de = float(row.split("|")[5])
    assert 0 < de < 100  # a random network: any colour, but a number
    assert re.search(r"\| notes\.txt \| skipped: not a raw file", text)
    assert "goal not met" in text or "goal met" in text
    side = Image.open(out / "colour" / "synth.png")
    # rotated 90 degrees (orientation 6): 66 wide, 98 high; 4x down: 16x24 each, side by side
    assert side.size == (2 * (66 // 4), 98 // 4)
    assert "synth.dng" in capsys.readouterr().out

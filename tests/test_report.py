"""report.md with Tables 1-3 beside the paper's values, and valid PNG figures."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from caisp import report


def _summary(qf: int, variant: str, frozen: bool, d: float) -> dict:
    """Shaped like the evaluate stage's summary.json (caisp.evaluate.summarize + qf/variant/frozen)."""
    return {"qf": qf, "variant": variant, "frozen": frozen, "train_qf": qf, "aware": "aware",
            "agnostic": "agnostic", "n_images": 3, "qfs": [80, 90],
            "models": {"agnostic": {"psnr": 35.0, "ssim": 0.95, "bpp": 0.5, "psnr_raw": 33.0, "n": 3},
                       "aware": {"psnr": 35.0 + d, "ssim": 0.96, "bpp": 0.51, "psnr_raw": 32.0, "n": 3}},
            "d_psnr": d, "d_bpp": 0.01, "paired": {"n": 3, "improved": 2, "mean": d, "std": 0.3,
                                                   "t": 2.0, "p_ttest": 0.05, "p_wilcoxon": None},
            "bd_psnr": 0.8, "bd_rate": -12.5}


def _inputs() -> dict:
    cas = {"qf80-unet": {"qf": 80, "variant": "unet", "psnr": 41.234, "ssim": 0.97, "psnr_identity": 38.5,
                         "ssim_identity": 0.95},
           "qf90-kornia": {"qf": 90, "variant": "kornia", "psnr": 40.0, "ssim": 0.96}}
    isp = {"aware-qf90-unet": _summary(90, "unet", True, 1.25),
           "aware-unfrozen-qf90-acn": _summary(90, "acn", False, 0.5)}
    ablation = pd.DataFrame([{"qf": 80, "variant": "djs", "lambda_isp": 1.0, "lambda_comp": 0.1,
                              "psnr": 33.333, "bpp": 0.444}])
    rows = []
    for model, off in (("agnostic", 0.0), ("aware", 0.7), ("ground_truth", 3.0)):
        for q in (80, 85, 90):
            rows.append({"model": model, "qf": q, "bpp": 0.3 + 0.04 * (q - 80), "psnr": 34 + 0.2 * (q - 80) + off})
    rd = pd.DataFrame(rows)
    curves = {"cas loss": pd.DataFrame({"step": [0, 1, 2], "value": [1.0, 0.5, 0.2]}),
              "isp psnr": pd.DataFrame({"step": [0, 10], "value": [20.0, 30.0]})}
    rng = np.random.default_rng(0)
    gt = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
    examples = [{"title": "img0", "gt": gt, "agnostic_jpeg": gt // 2, "aware_jpeg": gt,
                 "agnostic_bpp": 0.9, "aware_bpp": 0.95}]
    return dict(cas_tables=cas, isp_summaries=isp, ablation=ablation, rd=rd, curves=curves, examples=examples)


def _valid_png(path) -> None:
    assert path.is_file()
    with Image.open(path) as im:
        im.verify()
        assert im.format == "PNG"


def test_report_has_tables_paper_values_and_figures(tmp_path):
    md = report.write_report(tmp_path, **_inputs())
    assert md == tmp_path / "report.md"
    text = md.read_text()
    for header in ("Table 1", "Table 2", "Table 3", "Figure 5", "Figure 4", "Training curves"):
        assert header in text
    # Paper constants (Tables 1-3) beside ours.
    for paper in ("43.84 / 0.9805", "43.02 / 0.9715", "35.54 / 0.541", "36.74 / 0.567", "37.10 / 0.917",
                  "36.71 / 0.548", "37.37 / 0.915"):
        assert paper in text
    # Our numbers land in the right cells; identity baseline row; kornia has no paper value.
    assert "41.23 / 0.9700" in text and "38.50 / 0.9500" in text
    assert "| 90 | kornia | 40.00 / 0.9600 | n/a |" in text
    assert "| 90 | compression-aware | yes | U-Net | 36.25 / 0.510 | 37.22 / 0.904 |" in text
    assert "| 90 | compression-aware | no | ACN | 35.50 / 0.510 | 37.24 / 0.911 |" in text
    assert "| 90 | compression-agnostic |  |  | 35.00 / 0.500 | 35.88 / 0.900 |" in text
    assert "| 80 | 1 | 0.1 | DJS | 33.33 / 0.444 | 36.60 / 0.549 |" in text
    assert "| 80 | compression-aware | no | DJS | — | n.a. |" in text
    assert "improved on 2/3 images" in text and "BD-rate -12.50 %" in text
    assert "BD-rate" in text and "aware: BD-PSNR +0.700 dB" in text
    for name in ("rd_curve.png", "examples.png", "training_curves.png"):
        _valid_png(tmp_path / "figures" / name)


def test_report_tolerates_missing_pieces(tmp_path):
    md = report.write_report(tmp_path, cas_tables=None, isp_summaries=None, ablation=None,
                             rd=pd.DataFrame(columns=["model", "qf", "bpp", "psnr"]), curves=None, examples=None)
    text = md.read_text()
    assert "43.84 / 0.9805" in text and "36.94 / 0.547" in text  # paper columns still there
    assert "dvc exp run --queue -S lambda_isp=1 -S lambda_comp=1" in text and "dvc exp run --run-all" in text
    assert "No ISP evaluation yet." in text
    assert not (tmp_path / "figures").exists()


def test_report_accepts_qf_keyed_summaries_from_json(tmp_path):
    # Keys as JSON leaves them (strings); labels per report.isp_label.
    s = _summary(80, "x", True, 1.0)
    del s["variant"], s["qf"], s["frozen"]
    s["models"] = {"agnostic": s["models"]["agnostic"], report.isp_label("djs"): s["models"]["aware"]}
    cas = {"80": {"acn": {"psnr": 42.0, "ssim": 0.975}, "identity": {"psnr": 38.0, "ssim": 0.94}}}
    loaded = json.loads(json.dumps({"isp": {"80": s}, "cas": cas}))
    text = report.write_report(tmp_path, cas_tables=loaded["cas"], isp_summaries=loaded["isp"],
                               ablation=None, rd=None, curves=None, examples=None).read_text()
    assert "| 80 | compression-aware | yes | DJS | 36.00 / 0.510 | 36.90 / 0.547 |" in text
    assert "| 80 | ACN | 42.00 / 0.9750 | 43.58 / 0.9777 |" in text
    assert "| 80 | identity (y vs c(y)) | 38.00 / 0.9400 | n/a |" in text


@pytest.mark.parametrize("bad", [pd.DataFrame({"model": ["a"], "qf": [80], "bpp": [0.5], "psnr": [30.0]})])
def test_rd_figure_with_single_points_has_no_bd(tmp_path, bad):
    notes = report.rd_figure(bad, tmp_path / "rd.png")
    assert notes == ""
    _valid_png(tmp_path / "rd.png")

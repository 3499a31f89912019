"""report.md with Tables 1-3 beside the paper's values, and valid PNG figures."""
from __future__ import annotations

import numpy as np
import pandas as pd
from PIL import Image

from caisp import report


def _summary(qf: int, variant: str, frozen: bool, d: float) -> dict:
    """Shaped like the evaluate stage's summary.json (caisp.stats.compare_all + qf/variant/frozen)."""
    from test_stats import _frame

    from caisp import stats

    kind = "aware" if frozen else "aware-unfrozen"
    aware = _frame(kind, [0, 1], gain_after=d, gain_before=d / 4)
    controls = pd.concat([_frame("agnostic", [0, 1], 0.0, 0.0), _frame("identity", [0, 1], 0.05, 0.0),
                          _frame("pretrained", [None], -0.1, 0.0)])
    aware["qf"] = aware.qf + (qf - 85)
    controls["qf"] = controls.qf + (qf - 85)
    return {"qf": qf, "variant": variant, "frozen": frozen, "seeds": [0, 1], "codec": "jpeg",
            **stats.compare_all(aware, controls, aware=kind, qf=qf, n_boot=200)}


def _inputs() -> dict:
    cas = {"qf80-unet": {"qf": 80, "variant": "unet", "codec": "jpeg", "psnr": 41.234, "ssim": 0.97,
                         "psnr_gt": 38.5, "ssim_gt": 0.95,
                         "gate": {"val_margin_db": 2.7, "gate_db": 0.1, "passed": True, "n_val": 2}},
           "qf90-kornia": {"qf": 90, "variant": "kornia", "codec": "jpeg", "psnr": 40.0, "ssim": 0.96},
           "qf90-unet": {"qf": 90, "variant": "unet", "codec": "jpeg", "psnr": 43.0, "ssim": 0.97, "psnr_gt": 43.0,
                         "gate": {"val_margin_db": 0.004, "gate_db": 0.1, "passed": False, "n_val": 2}}}
    isp = {"aware-qf90-unet": _summary(90, "unet", True, 1.25),
           "aware-unfrozen-qf90-acn": _summary(90, "acn", False, 0.5)}
    # the operating-point axis and Table 3: this graph's regime, a recorded λ setting of it and another regime
    entries = [{"source": "this dvc repro", "regime": "paper", "lambda_isp": 0.1, "lambda_comp": 1.0,
                "summaries": isp, "pretrain": {"per_seed": True}},
               {"source": "lambda-1-0.1", "regime": "paper", "lambda_isp": 1.0, "lambda_comp": 0.1,
                "summaries": {"aware-qf80-djs": _summary(80, "djs", True, 0.3)}, "pretrain": {"per_seed": True}},
               {"source": "regime-today", "regime": "today", "lambda_isp": 0.1, "lambda_comp": 1.0,
                "summaries": {"aware-qf90-unet": _summary(90, "unet", True, 0.02)}, "pretrain": {}}]
    measured = report._measured_rows(entries)
    rows = []
    for model, off in (("agnostic", 0.0), ("aware", 0.7), ("ground_truth", 3.0)):
        for q in (80, 85, 90):
            rows.append({"model": model, "qf": q, "bpp": 0.3 + 0.04 * (q - 80), "psnr": 34 + 0.2 * (q - 80) + off})
    rd = pd.DataFrame(rows)
    curves = {"cas loss": pd.DataFrame({"step": [0, 1, 2], "value": [1.0, 0.5, 0.2]}),
              "isp psnr": pd.DataFrame({"step": [0, 10], "value": [20.0, 30.0]})}
    rng = np.random.default_rng(0)
    gt = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
    examples = [{"title": "img0", "gt": gt, "agnostic_coded": gt // 2, "aware_coded": gt,
                 "agnostic_bpp": 0.9, "aware_bpp": 0.95}]
    return dict(cas_tables=cas, isp_summaries=isp, measured=measured, regime="paper", default_lambdas=(0.1, 1.0),
                rd=rd, curves=curves, examples=examples)


def _valid_png(path) -> None:
    assert path.is_file()
    with Image.open(path) as im:
        im.verify()
        assert im.format == "PNG"


def test_report_has_tables_paper_values_and_figures(tmp_path):
    md = report.write_report(tmp_path, **_inputs(), setup="Data: 3 test photos.")
    assert md == tmp_path / "report.md"
    text = md.read_text()
    for header in ("Headline", "Operating point", "Table 1", "Table 2", "Gains against each control",
                   "Per test photo", "Table 3", "Figure 5", "Figure 4", "Training curves", "Data: 3 test photos."):
        assert header in text
    # Paper constants (Tables 1-3) beside ours.
    for paper in ("43.84 / 0.9805", "43.02 / 0.9715", "35.88 / 0.900", "37.24 / 0.911", "37.22 / 0.904",
                  "36.71 / 0.548", "37.37 / 0.915"):
        assert paper in text
    # Our numbers land in the right cells; identity baseline row; kornia has no paper value.
    assert "41.23 / 0.9700" in text and "38.50 / 0.9500" in text
    assert "| 90 | kornia | 40.00 / 0.9600 | — | n/a |" in text
    # The simulator gate: its margin in Table 1, and the headline flags the aware run that used it.
    assert "| 80 | U-Net | 41.23 / 0.9700 | +2.70 dB, passed |" in text
    assert "+0.00 dB, **FAILED** (< 0.10 dB)" in text
    assert text.count("Simulator failed the gate") == 1
    assert "| 90 | compression-aware | yes | U-Net | 35.25 / 0.550 | 0.00 | 37.22 / 0.904 |" in text
    assert "| 90 | pretrained ISP (L_isp only; the paper's baseline) |  |  | 33.90 / 0.550 | — | 35.88 / 0.900 |" in text
    assert "| 90 | 0.550 | 45.00 | fine-tuned control (λ_comp = 0) | 41.50 | 34.00 | 33.00 | 0.550 |  |" in text
    # Table 3 at the paper's regime: the recorded λ = (1, 0.1) run with its gain and interval, the paper's beside
    assert "| 80 | 1 | 0.1 | DJS | 34.30 / 0.550 | +0.30 [+0.30, +0.30] | 36.60 / 0.549 |" in text
    assert "| 90 | 0.1 | 1 | U-Net | 35.25 / 0.550 | +1.25 [+1.25, +1.25] | 37.22 / 0.904 |" in text
    # the axis: both regimes at the default λ (not the λ ablation), the paper's points, the figure
    axis = text.split("## The operating-point axis")[1].split("\n## ")[0]
    assert "| paper | this dvc repro | 90 | U-Net | 33.90 | 0.550 | +1.35 [+1.35, +1.35] | +1.25 [+1.25, +1.25] |" in axis
    assert "| today | regime-today | 90 | U-Net |" in axis and "lambda-1-0.1" not in axis
    assert "| the paper | Uhm et al. Table 2 | 80 | U-Net | 35.54 | 0.541 | +1.40 |" in axis
    _valid_png(tmp_path / "figures" / "operating_axis.png")
    measured = _inputs()["measured"]
    head = report.axis_headline(measured[measured.lambda_comp == 1.0], "paper")
    assert head.startswith("At the paper's operating point (regime `paper`: agnostic ISP PSNR(c(f(x)), c(y)) QF 90: 33.90 dB")
    assert "- QF 90, U-Net: aware − pretrained ISP +1.35 [+1.35, +1.35] dB (paper +1.34 dB)" in head
    # Gains with intervals against every control, the compression-specific part, the per-photo table.
    assert "| 90 | U-Net | yes | agnostic | +1.25 [+1.25, +1.25] | +0.31 [+0.31, +0.31] | +0.94 [+0.94, +0.94] |" in text
    assert "| 90 | ACN | no | pretrained | +0.60 [+0.60, +0.60] |" in text
    assert "| 3/3 | 1.250 | -21.7 % |" in text
    assert "compression-specific (its interval excludes 0)" in text
    assert "— (the curves overlap over" not in text  # 1.25 dB apart, parallel: BD-rate defined
    assert "| QF | CAS | frozen | a | b | c |" in text
    for name in ("rd_curve.png", "examples.png", "training_curves.png"):
        _valid_png(tmp_path / "figures" / name)


def test_report_tolerates_missing_pieces(tmp_path):
    md = report.write_report(tmp_path, cas_tables=None, isp_summaries=None, measured=None,
                             rd=pd.DataFrame(columns=["model", "qf", "bpp", "psnr"]), curves=None, examples=None)
    text = md.read_text()
    assert "43.84 / 0.9805" in text  # paper columns still there
    assert "dvc exp run -n lambda-1-1 -S lambda_isp=1 -S lambda_comp=1" in text
    assert not (tmp_path / "figures").exists()


def test_rd_figure_draws_one_curve_per_model(tmp_path):
    rd = pd.DataFrame({"model": ["a", "a", "ground_truth", "ground_truth"], "qf": [80, 90, 80, 90],
                       "bpp": [0.5, 0.8, 0.6, 0.9], "psnr": [30.0, 31.0, 35.0, 38.0]})
    report.rd_figure(rd, tmp_path / "rd.png")
    _valid_png(tmp_path / "rd.png")


def test_measured_adds_only_what_records_ran_beyond_the_graph(tmp_path, monkeypatch):
    """The graph's own configurations win; a record adds its other runs (Table 2's) and its other
    regimes and λ (the axis, Table 3)."""
    import json

    from caisp.params import from_dict
    from caisp.pipeline.report import HERE, _measured

    monkeypatch.chdir(tmp_path)
    p = from_dict({"qfs": [90], "cas": {"variants": ["unet"], "baselines": []}})

    def put(path, summary):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(summary))

    put(tmp_path / "reports/eval/paper/aware-qf90-unet/summary.json", {"qf": 90, "variant": "unet", "graph": 1})
    put(tmp_path / "reports/eval/paper/aware-qf90-djs/summary.json", {"stale": "not in this graph's matrix"})
    rec = tmp_path / "reports/experiments/table2"
    put(rec / "record.json", {"name": "table2", "lambda_isp": 0.1, "lambda_comp": 1.0, "aware_regimes": ["paper"]})
    put(rec / "eval/paper/aware-qf90-unet/summary.json", {"qf": 90, "variant": "unet", "graph": 0})
    put(rec / "eval/paper/aware-qf90-acn/summary.json", {"qf": 90, "variant": "acn"})
    lam = tmp_path / "reports/experiments/lambda-1-1"
    put(lam / "record.json", {"name": "lambda-1-1", "lambda_isp": 1.0, "lambda_comp": 1.0, "aware_regimes": ["paper"]})
    put(lam / "eval/paper/aware-qf90-unet/summary.json", {"qf": 90, "variant": "unet"})
    entries = {(e["source"], e["lambda_isp"]): e["summaries"] for e in _measured(p)}
    assert entries[(HERE, 0.1)] == {"aware-qf90-unet": {"qf": 90, "variant": "unet", "graph": 1}}
    assert list(entries[("table2", 0.1)]) == ["aware-qf90-acn"]
    assert list(entries[("lambda-1-1", 1.0)]) == ["aware-qf90-unet"]


def _rate_summary(qf: int, lam: float, bd: float) -> dict:
    stat = {"mean": bd, "lo": bd - 1, "hi": bd + 1, "why": None}
    curve = [{"qf": q, "bpp": 0.5 + q / 100, "psnr_y": 30 + q / 10, "ssim_y": 0.9} for q in (50, 80, 95)]
    return {"qf": qf, "lambda_rate": lam, "seeds": [0, 1], "codecs": ["jpeg", "jpegopt", "mozjpeg"], "n_photos": 5,
            "vs_agnostic": {"d_psnr_y": {"mean": -0.1, "lo": -0.2, "hi": 0.0}, "d_bpp_pct": {"mean": -1.0}},
            "bd_rate": {"psnr_y": {"jpeg": stat, "jpegopt": stat, "mozjpeg": {"mean": None, "why": "too little overlap"},
                                   "anchor-jpegopt": stat, "anchor-mozjpeg": {"mean": -10.0, "lo": -11.0, "hi": -9.0},
                                   "both-jpegopt": stat, "both-mozjpeg": stat},
                        "ssim_y": {"jpeg": stat}},
            "proxy": {"rate": {"n": 10, "spearman": 0.99, "mean_abs_err_pct": 3.0, "max_abs_err_pct": 5.0},
                      "agnostic": {"n": 10, "spearman": 0.98, "mean_abs_err_pct": 2.0, "max_abs_err_pct": 4.0}},
            "curves": {"jpeg": {"agnostic": curve, "rate": curve}, "mozjpeg": {"agnostic": curve, "rate": curve}}}


def test_rate_section_tables_headline_and_figure(tmp_path):
    fit = {"qf": 80, "n_train_photos": 26, "n_held_out_photos": 7,
           "train": {"n": 78, "spearman": 0.997, "mean_abs_err_pct": 1.3, "max_abs_err_pct": 3.8, "versions": {"photo": {}}},
           "held_out": {"n": 21, "spearman": 0.994, "mean_abs_err_pct": 2.8, "max_abs_err_pct": 6.0,
                        "versions": {"photo": {}}}}
    runs = {"rate-qf80-0.01": _rate_summary(80, 0.01, 2.5), "rate-qf80-0.001": _rate_summary(80, 0.001, -0.5)}
    today = {"rate-qf80-0.001": _rate_summary(80, 0.001, -3.0)}
    axes = [("paper", runs, "the committed experiment `rate`"), ("today", today, "this dvc repro")]
    text = "\n".join(report.rate_part(tmp_path, {"qf80": fit}, axes))
    for cell in ("| 80 | held-out photos (7) × 1 versions | 21 | 0.994 | 2.8 % | 6.0 % |",
                 "| 80 | regime paper: rate-aware ISP's outputs, λ_rate = 0.001 | 10 | 0.990 | 3.0 % | 5.0 % |",
                 "| 80 | 0.001 | -0.10 [-0.20, +0.00] | -1.00 % | -0.50 % [-1.50, +0.50] |",
                 "— (too little overlap)", "fine-tuned control + mozjpeg | -10.00 % [-11.00, -9.00]",
                 "### Regime `paper`", "Measured by the committed experiment `rate`",
                 "### Regime `today`", "Measured by this dvc repro", "| 80 | 0.001 | -0.10 [-0.20, +0.00] | -1.00 % | -3.00 %"):
        assert cell in text, cell
    assert text.index("λ_rate = 0.001") < text.index("λ_rate = 0.01")  # ordered by value
    assert text.index("### Regime `paper`") < text.index("### Regime `today`")  # in the operating axis's order
    assert (tmp_path / "rate_rd.png").stat().st_size > 0 and (tmp_path / "rate_rd_today.png").stat().st_size > 0
    head = report.rate_headline(axes)
    assert "λ_rate 0.001: -0.50 % [-1.50, +0.50]" in head and "mozjpeg alone on the control -10.00 %" in head
    assert "regime paper (the committed experiment `rate`)" in head and "regime today (this dvc repro)" in head
    assert "What limits the saving: over the whole sweep (QF 50 to 95)" in text and "0.10 dB per % at QF 80" in text
    assert "No rate-aware ISP measured" in "\n".join(report.rate_part(tmp_path, {}, []))


def test_record_keeps_only_the_simulators_its_graph_ran(tmp_path, monkeypatch):
    """A reports/cas folder no stage of the experiment's graph writes (git keeps the metrics of a
    simulator a stage no longer trains; another experiment leaves its own) is not recorded: the
    report would borrow it as this experiment's Table 1 row."""
    import json

    import yaml

    from caisp.experiments import load_records, record
    from caisp.params import from_dict, to_dict

    monkeypatch.chdir(tmp_path)
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(to_dict(from_dict({"qfs": [90], "cas": {"variants": ["unet"], "baselines": ["blur"]}}))))
    for rel in ("eval/paper/aware-qf90-unet", "cas/qf90-unet", "cas/qf90-blur", "cas/qf90-acn", "cas/qf80-unet"):
        (tmp_path / "reports" / rel).mkdir(parents=True)
        (tmp_path / "reports" / rel / "summary.json").write_text(json.dumps({"from": rel}))
    record("lambda-1-1", "dvc exp run ...", root=tmp_path / "reports/experiments", params_path=params)
    (rec,) = load_records(tmp_path / "reports/experiments")
    assert rec["name"] == "lambda-1-1" and sorted(rec["cas"]) == ["qf90-blur", "qf90-unet"]
    assert rec["summaries"] == {"paper": {"aware-qf90-unet": {"from": "eval/paper/aware-qf90-unet"}}}


def test_git_tracks_no_report_that_no_stage_writes():
    """Every file git keeps under reports/ (but the committed experiments and pilots) is an output of
    a stage in dvc.lock: a metric left by a stage the graph no longer has would be read as measured."""
    import subprocess
    from pathlib import Path

    import pytest
    import yaml

    root = Path(__file__).resolve().parents[1]
    listed = subprocess.run(["git", "ls-files", "reports"], cwd=root, capture_output=True, text=True)
    if listed.returncode != 0 or not (root / "dvc.lock").is_file():
        pytest.skip("not a git checkout with a dvc.lock")
    outs = [o["path"].rstrip("/") for s in yaml.safe_load((root / "dvc.lock").read_text())["stages"].values()
            for o in s.get("outs", [])]
    stale = [f for f in listed.stdout.split() if not f.startswith(("reports/experiments/", "reports/pilots/"))
             and not any(f == o or f.startswith(o + "/") for o in outs)]
    assert not stale, f"tracked but written by no stage of dvc.lock: {stale}"

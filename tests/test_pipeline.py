"""End to end through DVC: a fresh clone runs the data stages of dvc.yaml on the offline default."""
import concurrent.futures
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from conftest import ROOT

pytestmark = pytest.mark.slow


def _run(cmd, cwd, env):
    res = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, f"{' '.join(cmd)} failed:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    return res.stdout


@pytest.fixture(scope="module")
def clone(tmp_path_factory) -> tuple[Path, dict]:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs the git checkout")
    dst = tmp_path_factory.mktemp("clone") / "caisp"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(dst)], check=True)
    # The test runs the working tree as it is (CI: the submitted commit), not only what HEAD holds.
    for rel in ("caisp", "stages", "dvc.yaml", "params.yaml"):
        src = ROOT / rel
        if src.is_dir():
            shutil.copytree(src, dst / rel, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, dst / rel)
    params = yaml.safe_load((dst / "params.yaml").read_text())
    params["data"]["synthetic"]["tile"] = 128  # tiles of one photo must stay in one subset
    (dst / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
           "DVC_NO_ANALYTICS": "1"}
    return dst, env


def test_dvc_repro_split_from_a_fresh_clone(clone):
    dst, env = clone
    _run(["dvc", "repro", "encode@80", "encode@90", "split"], dst, env)
    raws = sorted(p.name for p in (dst / "data/raw").glob("*.dng"))
    assert len(raws) >= 9
    manifest = json.loads((dst / "data/rendered/manifest.json").read_text())
    assert len(manifest["images"]) == len(raws) and manifest["skipped"] == []
    for qf in (80, 90):
        metrics = json.loads((dst / f"reports/data/encode_qf{qf}.json").read_text())
        assert 0 < metrics["bpp_mean"] < 24 and metrics["images"] == len(raws)
    split = json.loads((dst / "data/split.json").read_text())
    assert sorted(split["train"] + split["val"] + split["test"]) == sorted(Path(r).stem for r in raws)
    assert all(split[k] for k in ("train", "val", "test"))
    # Split by source: no photo has a tile in two subsets, and the test set has >= 5 whole photos.
    source = {im["stem"]: im["source"] for im in manifest["images"]}
    subsets = {k: {source[s] for s in split[k]} for k in ("train", "val", "test")}
    assert not (subsets["train"] & subsets["test"]) and not (subsets["train"] & subsets["val"])
    assert not (subsets["val"] & subsets["test"])
    assert len(subsets["test"]) >= 5 and subsets["test"] == set(split["sources"]["test"])
    assert source["motorcycle_left_r0c0"] == source["motorcycle_right_r0c0"]  # one stereo scene
    status = _run(["dvc", "status", *[f"{s}" for s in ("download", "render", "encode@80", "encode@90", "split")]], dst, env)
    assert "changed" not in status and "modified" not in status, status
    # The QF 90 JPEGs cost more bits than the QF 80 ones: real files, real bytes.
    bpp = {qf: json.loads((dst / f"reports/data/encode_qf{qf}.json").read_text())["bpp_mean"] for qf in (80, 90)}
    assert bpp[90] > bpp[80]


def _tiny(dst: Path) -> None:
    """Shrink every budget so the whole graph runs in a couple of minutes on two cores."""
    params = yaml.safe_load((dst / "params.yaml").read_text())
    params["model"]["base_width"] = 4
    params["train"]["patch"] = 48
    params["qfs"] = [90]  # one JPEG point: the matrices are exercised by the codec experiment below
    params["cas"].update(variants=["unet", "djs"], unfrozen=["unet"], baselines=["blur"], steps=3, acn_steps=3)
    params["isp"]["steps"] = 4
    # the operating-point axis: the paper's regime (one pretraining per seed) fine-tuned, today's pretrained
    params["regimes"] = {"paper": {"input_norm": "wb", "steps": 3, "pretrain_per_seed": True}, "today": {}}
    params.update(isp_regimes=["paper", "today"], aware_regimes=["paper"])
    params["finetune"]["steps"] = 2
    params["seeds"] = [0, 1]
    params["data"]["synthetic"].update(tile=0, kodak=False)  # 9 photos, 8 sources: every stage, fast
    params["evaluate"]["sweep_qfs"] = [86, 90, 94]
    params["evaluate"]["bootstrap"] = 200
    (dst / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    # dvc.yaml's plots name the default variants; the tiny graph has fewer, which DVC tolerates.


def test_whole_pipeline_report_and_experiment(clone):
    dst, env = clone
    env = {**env, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}
    _tiny(dst)
    _run(["dvc", "repro"], dst, env)
    for seed in (0, 1):  # one pretraining per seed in the paper's regime, one in today's
        assert (dst / f"models/isp/paper/pretrained/seed{seed}.pt").stat().st_size > 0
    assert sorted(p.name for p in (dst / "models/isp/today/pretrained").iterdir()) == ["seed0.pt"]
    assert not (dst / "models/isp/today/control-agnostic").exists()  # today's is not fine-tuned here
    for kind in ("control-agnostic", "control-identity", "aware-qf90-unet", "aware-qf90-djs",
                 "aware-unfrozen-qf90-unet"):
        for seed in (0, 1):
            assert (dst / f"models/isp/paper/{kind}/seed{seed}.pt").stat().st_size > 0
    summary = json.loads((dst / "reports/eval/paper/aware-qf90-unet/summary.json").read_text())
    assert {"pretrained", "agnostic", "identity", "aware"} <= set(summary["models"])
    assert set(summary["vs"]) == {"pretrained", "agnostic", "identity"}
    assert summary["n_photos"] >= 1 and summary["n_seeds"] == 2 and summary["regime"] == "paper"
    d = summary["vs"]["agnostic"]["d_psnr"]
    assert d["lo"] <= d["mean"] <= d["hi"] and d["n_photos"] == summary["n_photos"]
    # each seed pairs with its own pretraining: the pretrained ISP's rows carry seeds 0 and 1
    assert summary["vs"]["pretrained"]["per_seed"].keys() == {"0", "1"}
    rows = pd.read_csv(dst / "reports/eval/paper/controls/per_image.csv")
    assert set(rows[rows.model == "pretrained"].seed) == {0, 1}
    report = (dst / "reports/report.md").read_text()
    for text in ("Table 1", "44.69", "Table 2", "Operating point", "identity-g control", "compression-specific",
                 "Per test photo", "PSNR(c(f(x)), c(y))", "operating-point axis", "At the paper's operating point"):
        assert text in report, text
    assert (dst / "reports/figures/rd_curve.png").stat().st_size > 0
    assert (dst / "reports/figures/operating_axis.png").stat().st_size > 0
    metrics = _run(["dvc", "metrics", "show"], dst, env)
    assert "reports/cas/qf90-unet/summary.json" in metrics and "models.aware.psnr" in metrics
    status = _run(["dvc", "status"], dst, env)
    assert "changed" not in status, status
    # Two chains of experiments on two copies of this graph, at once: each is mostly one core's DVC
    # and Python start-up per stage, and in turn they alone held the suite at 10 minutes.
    twin = dst.parent / "twin"
    shutil.copytree(dst, twin, symlinks=True)
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        chains = [pool.submit(_regime_record_and_lambda_experiments, dst, env),
                  pool.submit(_codec_and_rate_experiments, twin, env)]
        for chain in chains:
            chain.result()


def _regime_record_and_lambda_experiments(dst: Path, env: dict) -> None:
    """On the tiny graph after its `dvc repro`: today's regime by an experiment, recorded and read back;
    then the design card's lambda_comp experiment and `dvc metrics diff`."""
    # The operating-point axis from a committed record (README): today's regime fine-tuned by an
    # experiment, recorded, and read by the default's report beside the graph's own regime.
    default = {name: (dst / name).read_bytes() for name in ("params.yaml", "dvc.lock")}
    out = _run(["dvc", "exp", "run", "-S", "aware_regimes=[today]"], dst, env)
    assert "stages.pretrain_isp" not in out and "--regime today --control agnostic" in out
    assert "--regime paper" not in out  # the paper's regime is not rerun
    caisp = [sys.executable, "-m", "caisp.cli"]
    _run([*caisp, "record", "regime-today", "--command", "dvc exp run -S 'aware_regimes=[today]'"], dst, env)
    rec = json.loads((dst / "reports/experiments/regime-today/record.json").read_text())
    assert rec["aware_regimes"] == ["today"] and rec["n_summaries"] == 3
    assert (dst / "reports/experiments/regime-today/eval/today/aware-qf90-djs/summary.json").is_file()
    for name, data in default.items():  # the clone's committed files are HEAD's, not the tree's under test
        (dst / name).write_bytes(data)
    # the experiment's checkout dropped the paper regime's outputs from the workspace: back from the cache
    _run(["dvc", "checkout"], dst, env)
    _run(["dvc", "repro"], dst, env)  # what the checkout could not restore (uncached reports) reruns
    report = (dst / "reports/report.md").read_text()
    axis = report.split("## The operating-point axis")[1].split("\n## ")[0]
    assert "| today | regime-today | 90 |" in axis and "| paper | this dvc repro | 90 |" in axis
    # The design card's experiment command, verbatim, and the comparison it is for.
    _run(["dvc", "exp", "run", "-S", "lambda_comp=0.1"], dst, env)
    diff = _run(["dvc", "metrics", "diff"], dst, env)
    assert "models.aware.psnr" in diff


def _codec_and_rate_experiments(dst: Path, env: dict) -> None:
    """On the tiny graph after its `dvc repro`: the codec axis, then the rate axis, each one experiment."""
    # The codec axis (README "Other codecs"): one experiment adds other codecs' operating points; the JPEG
    # training stages are not rerun, the split is unchanged, and the report gains a section per codec and
    # the cross-codec table.
    split = (dst / "data/split.json").read_bytes()
    cas = (dst / "models/cas/qf90-unet.pt").read_bytes()
    out = _run(["dvc", "exp", "run", "-S", "codec_points=[webp-80,jpeg2000-37]", "-S", "cas.codec_variants=[unet]"],
               dst, env)
    assert "stages.train_cas --point qf" not in out and "stages.pretrain_isp" not in out
    assert "stages.train_cas --point webp-80" in out  # what the experiment adds does run
    assert (dst / "data/split.json").read_bytes() == split and (dst / "models/cas/qf90-unet.pt").read_bytes() == cas
    for point, ext in (("webp-80", ".webp"), ("jpeg2000-37", ".jp2")):
        assert {p.suffix for p in (dst / "data/codecs" / point).iterdir()} == {ext, ".npy", ".csv"}
        assert (dst / f"models/isp/paper/aware-{point}-unet/seed1.pt").stat().st_size > 0
        s = json.loads((dst / f"reports/eval/paper/aware-{point}-unet/summary.json").read_text())
        assert s["codec"] == point.split("-")[0] and set(s["cross"]) == {"qf90", "webp-80", "jpeg2000-37"}
    rows = pd.read_csv(dst / "reports/eval/paper/controls/per_image.csv")
    assert set(rows.codec) == {"jpeg", "webp", "jpeg2000"}
    report = (dst / "reports/report.md").read_text()
    for text in ("## Other codecs", "### WebP", "### JPEG 2000", "n/a: cannot model WebP", "## Cross-codec",
                 "under WebP 80", "under QF 90"):
        assert text in report, text
    assert (dst / "reports/figures/rd_curve_webp.png").stat().st_size > 0
    # The rate axis (README "Rate-aware ISP"): the size estimate is fitted in every graph; one experiment
    # adds a lambda_rate, fine-tuned from the same pretrained ISPs and scored against the control with
    # every encoder; nothing upstream reruns.
    fit = json.loads((dst / "reports/rate/qf90.json").read_text())
    assert fit["held_out"]["n"] > 0 and fit["train"]["spearman"] > 0.5
    out = _run(["dvc", "exp", "run", "-S", "rate.lambdas=[0.01]"], dst, env)
    assert "stages.finetune_rate --regime paper --point qf90 --lambda-rate 0.01" in out
    assert "stages.pretrain_isp" not in out and "stages.fit_rate" not in out
    for seed in (0, 1):
        assert (dst / f"models/isp/paper/rate-qf90-0.01/seed{seed}.pt").stat().st_size > 0
    s = json.loads((dst / "reports/eval/paper/rate-qf90-0.01/summary.json").read_text())
    assert s["lambda_rate"] == 0.01 and s["codecs"] == ["jpeg", "jpegopt", "mozjpeg"]
    assert set(s["bd_rate"]["ssim_y"]) == {"jpeg"} and set(s["bd_rate"]["psnr_y"]) == {
        "jpeg", "jpegopt", "mozjpeg", "anchor-jpegopt", "anchor-mozjpeg", "both-jpegopt", "both-mozjpeg"}
    anchor = s["bd_rate"]["psnr_y"]["anchor-mozjpeg"]
    assert anchor["mean"] is None or anchor["mean"] < 0  # mozjpeg on the control's pictures: fewer bytes
    assert s["proxy"]["rate"]["n"] >= 2 * s["n_photos"]  # every seed on every test image
    report = (dst / "reports/report.md").read_text()
    for text in ("## Rate-aware ISP", "BD-rate against the fine-tuned control", "Encoder-side anchors",
                 "rate-aware ISP's outputs, λ_rate = 0.01", "| 90 | 0.01 |"):
        assert text in report, text
    assert (dst / "reports/figures/rate_rd.png").stat().st_size > 0

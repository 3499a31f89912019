"""benchmarks/fivek_rehearsal.py's pieces that need no pipeline run: the FiveK mirror (DNGs, list,
HTTP server), the params edit, the stage clock on a canned `dvc repro` log, the dvc.lock disk parser."""
from __future__ import annotations

import hashlib
import importlib.util
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from caisp.data.download import download_fivek, read_url_list

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def reh():
    spec = importlib.util.spec_from_file_location("fivek_rehearsal", ROOT / "benchmarks" / "fivek_rehearsal.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["fivek_rehearsal"] = mod  # the process pool pickles _synth_one by module name
    spec.loader.exec_module(mod)
    return mod


def test_mirror_serves_the_dngs_in_fivek_list_format(reh, tmp_path, monkeypatch):
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    mirror = tmp_path / "mirror"
    files = reh.synthesize(mirror, 3, 64, 48, workers=1)
    assert [f["name"][:6] for f in files] == ["a0001-", "a0002-", "a0003-"]
    assert all(f["name"].endswith(".dng") for f in files)
    server, base = reh.serve(mirror)
    try:
        reh.write_list(mirror / "NIKON_D700.txt", base, files)
        entries = read_url_list(f"{base}/NIKON_D700.txt")
        assert entries == [(f"{base}/{f['name']}", f["sha256"]) for f in files]
        for url, sha in entries:
            with urllib.request.urlopen(url, timeout=10) as resp:
                assert hashlib.sha256(resp.read()).hexdigest() == sha
        # and the pipeline's own client, which checks every sha256
        got = download_fivek(f"{base}/NIKON_D700.txt", tmp_path / "raw", workers=2, retries=0)
        assert [(g["name"], g["sha256"]) for g in got] == [(f["name"], f["sha256"]) for f in files]
    finally:
        server.shutdown()
    import rawpy

    with rawpy.imread(str(mirror / files[0]["name"])) as raw:  # exactly the size asked for
        assert raw.raw_image_visible.shape == (48, 64)


def _flat(d, prefix=""):
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        out.update(_flat(v, key + ".") if isinstance(v, dict) else {key: v})
    return out


def test_params_edit_changes_only_the_allowed_keys(reh, tmp_path):
    src = ROOT / "params-paper.yaml"
    dst = tmp_path / "params.yaml"
    changes = reh.write_params(src, dst, "http://127.0.0.1:1/NIKON_D700.txt", 3, ["seeds=[0]"])
    before = _flat(YAML(typ="safe", pure=True).load(src.read_text()))
    after = _flat(YAML(typ="safe", pure=True).load(dst.read_text()))
    assert set(after) == set(before)
    diff = {k for k in before if before[k] != after[k]}
    assert diff <= {"data.fivek.list_url", *reh.STEP_KEYS, "seeds"}
    assert after["data.fivek.list_url"] == "http://127.0.0.1:1/NIKON_D700.txt"
    assert all(after[k] == 3 for k in reh.STEP_KEYS) and after["seeds"] == [0]
    assert changes["seeds"] == [0]
    assert dst.read_text().count("#") == src.read_text().count("#")  # round trip keeps the comments
    with pytest.raises(SystemExit, match="no section"):
        reh.write_params(src, dst, "http://x/l.txt", 1, ["ispp.steps=3"])


def test_params_may_add_a_leaf_and_typos_are_refused_before_synthesis(reh, tmp_path):
    clone = tmp_path / "clone"
    shutil.copytree(ROOT / "caisp", clone / "caisp", ignore=shutil.ignore_patterns("__pycache__"))
    reh.write_params(ROOT / "params-paper.yaml", clone / "params.yaml", "http://127.0.0.1:1/l.txt", 1,
                     ["train.threads=4"])  # a key the paper file may leave at its default
    assert YAML(typ="safe", pure=True).load((clone / "params.yaml").read_text())["train"]["threads"] == 4
    reh.check_params(clone)
    reh.write_params(ROOT / "params-paper.yaml", clone / "params.yaml", "http://127.0.0.1:1/l.txt", 1,
                     ["isp.stepz=3"])
    with pytest.raises(SystemExit, match="stepz"):
        reh.check_params(clone)


LOG = """\
Running stage 'download':
> python -m stages.download
Generating lock file 'dvc.lock'
Updating lock file 'dvc.lock'

Stage 'render' didn't change, skipping
Running stage 'encode@80':
> python -m stages.encode --qf 80
train: step 1/2, loss 0.1
Updating lock file 'dvc.lock'

Running stage 'train_cas@80-unet':
> python -m stages.train_cas --qf 80 --variant unet
error: something broke
ERROR: failed to reproduce 'train_cas@80-unet': failed to run: python -m stages.train_cas, exited with 1
"""


def test_stage_clock_on_a_canned_dvc_log(reh):
    clock = reh.StageClock(t0=100.0)
    for i, line in enumerate(LOG.splitlines(keepends=True)):
        clock.feed(line, 101.0 + i)  # one second a line
    stages = clock.finish(130.0, rc=1)
    by = {s["name"]: s for s in stages}
    assert [s["name"] for s in stages] == ["download", "render", "encode@80", "train_cas@80-unet"]
    assert by["download"]["start_s"] == 1 and by["download"]["wall_s"] == 6  # until "encode@80" at line 6
    assert by["render"]["status"] == "skipped" and by["render"]["wall_s"] == 0
    assert by["encode@80"]["wall_s"] == 5 and by["encode@80"]["status"] == "ran"
    assert by["train_cas@80-unet"]["status"] == "failed" and by["train_cas@80-unet"]["wall_s"] == 130 - 112
    assert clock.failed == "train_cas@80-unet"
    assert [reh.kind(n) for n in ("train_cas@80-unet", "finetune_control@agnostic", "evaluate_controls",
                                  "encode@90", "finetune_unfrozen@80-acn")] == [
        "train_cas", "finetune*", "evaluate*", "encode", "finetune*"]


def test_matrix_factor_scales_a_reduced_rehearsal_to_the_paper_graph(reh):
    paper, reduced = {"qfs": [80, 90], "seeds": [0, 1, 2]}, {"qfs": [80], "seeds": [0]}
    f = {n: reh.matrix_factor(n, paper, reduced) for n in (
        "download", "encode@80", "train_cas@80-acn", "pretrain_isp", "finetune_control@agnostic",
        "finetune@80-djs", "evaluate_controls", "evaluate_unfrozen@80-unet", "report")}
    assert f == {"download": 1, "encode@80": 2, "train_cas@80-acn": 2, "pretrain_isp": 1,
                 "finetune_control@agnostic": 3, "finetune@80-djs": 6, "evaluate_controls": 3,
                 "evaluate_unfrozen@80-unet": 6, "report": 1}
    assert reh.matrix_factor("finetune@80-djs", paper, paper) == 1


def test_resumed_parts_keep_the_finished_stages_and_follow_them_in_time(reh):
    first = [{"name": "download", "start_s": 0.0, "wall_s": 5.0, "status": "ran"},
             {"name": "render", "start_s": 5.0, "wall_s": 10.0, "status": "ran"},
             {"name": "encode@80", "start_s": 15.0, "wall_s": 3.0, "status": "stopped"}]
    second = [{"name": "download", "start_s": 1.0, "wall_s": 0.0, "status": "skipped"},
              {"name": "render", "start_s": 1.0, "wall_s": 0.0, "status": "skipped"},
              {"name": "encode@80", "start_s": 2.0, "wall_s": 9.0, "status": "ran"},
              {"name": "split", "start_s": 11.0, "wall_s": 1.0, "status": "ran"}]
    merged = reh.merge_parts(first, 18.0, second)
    assert [(s["name"], s["status"], s["start_s"]) for s in merged] == [
        ("download", "ran", 0.0), ("render", "ran", 5.0), ("encode@80", "ran", 20.0), ("split", "ran", 29.0)]


def test_clock_blames_the_running_stage_when_dvc_is_killed(reh):
    clock = reh.StageClock(t0=0.0)
    clock.feed("Running stage 'pretrain_isp':\n", 2.0)
    stages = clock.finish(9.0, rc=-9)
    assert stages == [{"name": "pretrain_isp", "start_s": 2.0, "wall_s": 7.0, "status": "failed"}]


LOCK = """\
schema: '2.0'
stages:
  download:
    cmd: python -m stages.download
    outs:
    - path: data/raw
      hash: md5
      md5: 0123.dir
      size: 3000
      nfiles: 4
  encode@80:
    cmd: python -m stages.encode --qf 80
    deps:
    - path: data/rendered
      size: 999999
    outs:
    - path: data/jpeg/qf80
      size: 100
    - path: reports/data/encode_qf80.json
      size: 20
  split:
    cmd: python -m stages.split
"""


def test_lock_disk_sums_each_stages_outs(reh, tmp_path):
    (tmp_path / "dvc.lock").write_text(LOCK)
    assert reh.lock_disk(tmp_path / "dvc.lock") == {"download": 3000, "encode@80": 120, "split": 0}


@pytest.mark.skipif(shutil.which("git") is None, reason="git missing")
def test_plain_tree_is_copied_without_generated_paths_and_committed(reh, tmp_path):
    src = tmp_path / "src"
    for rel in ("caisp/a.py", "data/raw/x.dng", ".venv/bin/python", ".dvc/config", ".dvc/cache/ab",
                "caisp/__pycache__/a.pyc", "params.yaml"):
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_text("x")
    commit = reh.make_clone(src, tmp_path / "clone")
    tracked = subprocess.run(["git", "-C", str(tmp_path / "clone"), "ls-files"], capture_output=True,
                             text=True, check=True).stdout.split()
    assert sorted(tracked) == [".dvc/config", "caisp/a.py", "params.yaml"]
    assert len(commit) == 40

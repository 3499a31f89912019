"""dvc.yaml's code deps are exactly each stage's import closure (scripts/stage_deps.py), so that DVC
reruns a stage when, and only when, code it runs has changed."""
from __future__ import annotations

import copy
import importlib.util
import sys
from pathlib import Path

import pytest
from ruamel.yaml import YAML

ROOT = Path(__file__).resolve().parents[1]


def _tool():
    spec = importlib.util.spec_from_file_location("stage_deps", ROOT / "scripts" / "stage_deps.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["stage_deps"] = mod
    spec.loader.exec_module(mod)
    return mod


sd = _tool()


def _dvc_yaml() -> dict:
    return YAML(typ="safe", pure=True).load((ROOT / "dvc.yaml").read_text(encoding="utf-8"))


def _deps(doc: dict, stage: str) -> set[str]:
    return set(doc["stages"][stage]["deps"])


def test_dvc_yaml_code_deps_are_the_import_closures() -> None:
    diff = sd.differences(_dvc_yaml())
    assert not diff, f"dvc.yaml disagrees with the imports (run `python scripts/stage_deps.py --write`): {diff}"


@pytest.mark.parametrize("change", ["drop", "add", "folder"])
def test_a_wrong_list_is_caught(change: str) -> None:
    doc = copy.deepcopy(_dvc_yaml())
    deps = doc["stages"]["evaluate"]["deps"]
    if change == "drop":      # the encoder the stage scores with
        deps.remove("caisp/data/codec.py")
    elif change == "add":     # code it never runs
        deps.append("caisp/report.py")
    else:                     # a folder of code stands for all of it, imported or not
        deps.append("caisp/models")
    diff = sd.differences(doc)
    assert "evaluate" in diff
    want = {"drop": ("missing", "caisp/data/codec.py"), "add": ("extra", "caisp/report.py"),
            "folder": ("extra", "caisp/models")}[change]
    assert want[1] in diff["evaluate"][want[0]]


def test_closure_follows_lazy_and_relative_imports_but_not_type_checking(tmp_path: Path) -> None:
    (tmp_path / "stages").mkdir()
    pkg = tmp_path / "caisp" / "sub"
    pkg.mkdir(parents=True)
    (tmp_path / "stages" / "__init__.py").write_text("")
    (tmp_path / "caisp" / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (tmp_path / "stages" / "s.py").write_text("from caisp.sub import a\n")
    (pkg / "a.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from caisp.sub import typed\n"
                              "def f():\n    from . import lazy\n    import numpy\n")
    for name in ("lazy", "typed", "unused"):
        (pkg / f"{name}.py").write_text("")
    got = sd.closure("stages.s", tmp_path)
    assert got == {"stages/__init__.py", "stages/s.py", "caisp/__init__.py", "caisp/sub/__init__.py",
                   "caisp/sub/a.py", "caisp/sub/lazy.py"}


def test_each_family_of_code_reaches_only_its_stages() -> None:
    """What the refactor was for: an edit reruns the stages that run the edited code."""
    doc = _dvc_yaml()
    stages = {name: _deps(doc, name) for name in sd.stages(doc)}
    having = {f: {s for s, d in stages.items() if f in d}
              for f in ("caisp/report.py", "caisp/pipeline/report.py", "caisp/data/codec.py", "caisp/train.py",
                        "caisp/evaluate.py", "caisp/models/unet.py", "caisp/stats.py")}
    assert having["caisp/report.py"] == having["caisp/pipeline/report.py"] == {"report"}
    evaluation = {s for s in stages if s.startswith("evaluate")}
    # The baselines' stages run train_cas's module (a fitted or analytic simulator, scored alike).
    training = {s for s in stages if s.startswith(("train_cas", "baseline_cas", "pretrain", "finetune"))}
    cas = {"train_cas", "train_cas_codec", "baseline_cas", "baseline_cas_codec"}
    assert having["caisp/stats.py"] == evaluation | {"report"}
    # The encoder: the stages that encode or score with it (train_cas scores g through caisp.evaluate,
    # fit_rate fits R to real file sizes), and the report's Figure 4; never a training-only stage.
    assert having["caisp/data/codec.py"] == {"encode", "encode_codec", "fit_rate", "report"} | cas | evaluation
    assert having["caisp/train.py"] == training
    assert having["caisp/evaluate.py"] == {"report"} | cas | evaluation
    # The models run in every stage that trains or applies a network, and in no data stage.
    assert not having["caisp/models/unet.py"] & {"download", "render", "encode", "encode_codec", "split"}

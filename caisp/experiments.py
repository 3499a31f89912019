"""Committed experiment records: what a `dvc exp run` that does not fit the default graph measured,
kept in git under reports/experiments/<name>/ so that a fresh clone's report reads it.

`caisp record NAME` (after `dvc exp run ...` in the workspace) copies the evaluation summaries of the
experiment's fine-tuned regimes, their pretraining metrics, the Table 1 summaries of the simulators
its graph trains or scores, its params.yaml and report.md, and writes record.json (commit, command,
date). The report stage reads every record: the regimes it did not run itself (the operating-point
axis) and other loss weights (Table 3).
"""
from __future__ import annotations

import datetime
import json
import shutil
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any

from caisp import CaispError, io
from caisp.pipeline import layout

if TYPE_CHECKING:
    from caisp.params import Params

ROOT = layout.REPORTS / "experiments"


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def simulators(p: Params) -> list[str]:
    """The reports/cas folders this graph's stages write: the simulators it trains and the baselines
    it scores at each training point. A folder outside them is another graph's (git keeps metrics a
    stage no longer writes), never this experiment's measurement."""
    return [layout.cas_report_dir(pt, v).name for pt in p.points for v in p.variants(pt) + p.baselines(pt)]


def record(name: str, command: str, root: Path = ROOT, params_path: Path = Path("params.yaml")) -> Path:
    """Copy this workspace's results of the fine-tuned regimes into root/name (replacing an older copy)."""
    from caisp.params import load_params, to_dict

    if not name or "/" in name or name.startswith("."):
        raise CaispError(f"record: {name!r} is not a folder name")
    p = load_params(params_path)
    out = root / name
    found = 0
    staging = root / f".{name}.part"
    shutil.rmtree(staging, ignore_errors=True)
    for regime in p.aware_regimes:
        for summary in sorted((layout.REPORTS / "eval" / regime).glob("*/summary.json")):
            io.write_text(staging / "eval" / regime / summary.parent.name / "summary.json", summary.read_text())
            found += 1
        pre = layout.pretrain_report(regime)
        if pre.is_file():
            io.write_text(staging / "isp" / pre.name, pre.read_text())
    if not found:
        shutil.rmtree(staging, ignore_errors=True)
        raise CaispError(f"record: no evaluation summaries under reports/eval/<{', '.join(p.aware_regimes)}>: "
                         "run the experiment first (dvc exp run ...)")
    for sim in simulators(p):  # Table 1's rows, only those this graph trains or scores
        summary = layout.REPORTS / "cas" / sim / "summary.json"
        if summary.is_file():
            io.write_text(staging / "cas" / sim / "summary.json", summary.read_text())
    for src in (params_path, layout.REPORTS / "report.md"):
        if src.is_file():
            io.write_text(staging / src.name, src.read_text())
    meta = {"name": name, "command": command, "commit": _git("rev-parse", "--short", "HEAD"),
            "date": datetime.date.today().isoformat(), "aware_regimes": list(p.aware_regimes),
            "lambda_isp": p.lambda_isp, "lambda_comp": p.lambda_comp,
            "regimes": {r: to_dict(p.regimes[r]) for r in p.aware_regimes}, "n_summaries": found}
    io.write_json(staging / "record.json", meta)
    shutil.rmtree(out, ignore_errors=True)
    staging.rename(out)  # the old record is replaced only by a complete new one
    return out


def load_records(root: Path = ROOT) -> list[dict[str, Any]]:
    """Every record under `root`: its record.json plus `summaries` {regime: {run: summary}},
    `pretrain` {regime: metrics} and `cas` {simulator: Table 1 summary}."""
    out = []
    for meta_path in sorted(root.glob("*/record.json")):
        meta = json.loads(meta_path.read_text())
        folder = meta_path.parent
        meta["summaries"] = {
            d.name: {s.parent.name: json.loads(s.read_text()) for s in sorted(d.glob("*/summary.json"))}
            for d in sorted((folder / "eval").glob("*")) if d.is_dir()}
        meta["pretrain"] = {f.stem: json.loads(f.read_text()) for f in sorted((folder / "isp").glob("*.json"))}
        meta["cas"] = {s.parent.name: json.loads(s.read_text()) for s in sorted((folder / "cas").glob("*/summary.json"))}
        out.append(meta)
    return out

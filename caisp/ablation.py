"""Table 3 (lambda ablation) from DVC experiments: `caisp ablation` reads `dvc exp show --json` and
writes reports/ablation.csv (qf, variant, lambda_isp, lambda_comp, psnr, bpp, exp), which the
`report` stage turns into the table beside the paper's values."""
from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any, Iterator

import pandas as pd

from caisp import CaispError, io
from caisp.codecs import JPEG
from caisp.pipeline.layout import parse_run_name

COLUMNS = ["qf", "variant", "lambda_isp", "lambda_comp", "psnr", "bpp", "exp"]
_EVAL = re.compile(r"reports/eval/([^/]+)/summary\.json$")


def _table3_run(path: str):
    """The frozen aware JPEG run whose summary `path` is (Table 3's rows), else None."""
    m = _EVAL.search(path.replace("\\", "/"))
    if not m:
        return None
    try:
        run = parse_run_name(m.group(1))
    except CaispError:
        return None
    return run if run.kind == "aware" and run.point.codec == JPEG.name else None


def _runs(node: Any) -> Iterator[tuple[str, dict]]:
    """Every (name, data) in dvc exp show's nested JSON: the workspace, commits and experiments."""
    if isinstance(node, list):
        for item in node:
            yield from _runs(item)
    elif isinstance(node, dict):
        executor = node.get("executor") or {}
        if executor.get("state") not in (None, "success"):
            return  # queued, running or failed: its metrics are not (yet) its own
        data = node.get("data")
        if isinstance(data, dict) and "params" in data:
            yield node.get("name") or node.get("rev") or "?", data
        for key in ("experiments", "revs"):
            if node.get(key):
                yield from _runs(node[key])


def collect(exp_show: Any) -> pd.DataFrame:
    """One row per (run, QF, CAS variant) with the aware ISP's real-JPEG PSNR and BPP."""
    rows, seen = [], set()
    for name, data in _runs(exp_show):
        params = ((data.get("params") or {}).get("params.yaml") or {}).get("data") or {}
        if "lambda_isp" not in params or "lambda_comp" not in params:
            continue
        for path, m in (data.get("metrics") or {}).items():
            run = _table3_run(path)
            aware = (((m or {}).get("data") or {}).get("models") or {}).get("aware") if run else None
            if not aware:
                continue
            qf, variant = run.point.quality, run.variant
            key = (qf, variant, float(params["lambda_isp"]), float(params["lambda_comp"]))
            if key in seen:  # the workspace repeats its base commit: keep the first
                continue
            seen.add(key)
            rows.append([*key, aware.get("psnr"), aware.get("bpp"), name])
    return pd.DataFrame(rows, columns=COLUMNS).sort_values(COLUMNS[:4], ignore_index=True)


def write_ablation(out: Path = Path("reports/ablation.csv"), commits: int = 10) -> pd.DataFrame:
    try:
        # Several commits back: experiments stay attached to the commit they were queued from.
        res = subprocess.run(["dvc", "exp", "show", "--json", "-n", str(commits)], capture_output=True,
                             text=True, check=True)
    except (OSError, subprocess.CalledProcessError) as e:
        raise CaispError(f"`dvc exp show --json` failed: {getattr(e, 'stderr', '') or e}") from None
    df = collect(json.loads(res.stdout))
    io.write_text(out, df.to_csv(index=False))
    return df

"""Where every stage reads and writes, and what its runs are called (with the inverse, `parse_run_name`).

Paths are the DVC outputs declared in dvc.yaml. A run is one trained configuration:

- `cas-<point>-<variant>`: CAS-Net (or an analytic simulator) for an operating point;
- `isp-pretrain`: the pretrained, compression-agnostic ISP;
- `control-agnostic`, `control-identity`: the two fine-tuned controls;
- `aware-<point>-<variant>`, `aware-unfrozen-<point>-<variant>`: compression-aware fine-tuning;
- `rate-<point>-<lambda_rate>`: rate-aware fine-tuning for JPEG at `point` (issue 22), with the size
  estimate of `rate_model(point)`.

An operating point's name is `Point.name` (`qf80`, `webp-80`); fine-tuned runs hold one model per
seed (`<run>/seed<s>`), and so does the pretrained ISP (one model, or one per seed: `regimes`). Every
ISP run belongs to a regime of the operating-point axis, the first folder of its paths
(`models/isp/<regime>/...`, `reports/train/<regime>/...`, `reports/eval/<regime>/...`).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple

from caisp import CaispError
from caisp.codecs import Point

RAW = Path("data/raw")
RENDERED = Path("data/rendered")
CODED = Path("data/codecs")
SPLIT = Path("data/split.json")
MODELS = Path("models")
REPORTS = Path("reports")
# Resume states live outside every DVC output: DVC deletes outputs before it reruns a stage.
STATES = Path("checkpoints")

CONTROLS = ("agnostic", "identity")
AWARE_KINDS = ("aware", "aware-unfrozen")
PRETRAINED = "pretrained"
CAS = "cas"
RATE = "rate"


class Run(NamedTuple):
    kind: str                  # cas | pretrained | agnostic | identity | aware | aware-unfrozen | rate
    point: Point | None = None
    variant: str | None = None
    regime: str | None = None  # every run but a CAS's: the ISP regime it belongs to

    @property
    def is_isp(self) -> bool:
        return self.kind != CAS

    @property
    def name(self) -> str:
        if self.kind == PRETRAINED:
            return "isp-pretrain"
        if self.kind in CONTROLS:
            return f"control-{self.kind}"
        if self.kind in (CAS, *AWARE_KINDS, RATE) and self.point is not None and self.variant:
            return f"{self.kind}-{self.point.name}-{self.variant}"
        raise CaispError(f"run {self!r} has no name (kinds: {CAS}, {PRETRAINED}, {', '.join(CONTROLS)}, "
                         f"{', '.join(AWARE_KINDS)}, {RATE}; cas, aware and rate runs need a point and a variant)")


def run_name(kind: str, point: Point | None = None, variant: str | None = None) -> str:
    return Run(kind, point, variant).name


def _regime(run: Run) -> str:
    if not run.regime:
        raise CaispError(f"ISP run {run.name} has no regime (its paths are under models/isp/<regime>)")
    return run.regime


def parse_run_name(name: str) -> Run:
    """The `Run` a folder name stands for: the inverse of `Run.name`."""
    if name == "isp-pretrain":
        return Run(PRETRAINED)
    if name.startswith("control-") and name[len("control-"):] in CONTROLS:
        return Run(name[len("control-"):])
    if name.startswith(RATE + "-"):  # rate-qf80-0.003: the lambda may hold a hyphen (1e-05)
        point, sep, lam = name[len(RATE) + 1:].partition("-")
        if sep and lam:
            return Run(RATE, Point.parse(point, key=f"run {name!r}"), lam)
    for kind in ("aware-unfrozen", "aware", CAS):  # the longer prefix first
        if name.startswith(kind + "-"):
            point, sep, variant = name[len(kind) + 1:].rpartition("-")  # variants have no hyphen
            if sep and variant:
                return Run(kind, Point.parse(point, key=f"run {name!r}"), variant)
    raise CaispError(f"{name!r} is not a run name (e.g. isp-pretrain, control-agnostic, aware-qf80-unet)")


def codec_dir(point: Point) -> Path:
    """The encode stage's files at `point`: data/codecs/qf80, data/codecs/webp-80."""
    return CODED / point.name


def cas_path(point: Point, variant: str) -> Path:
    return MODELS / "cas" / f"{point.name}-{variant}.pt"


def isp_path(run: Run, seed: int | None = None) -> Path:
    """An ISP run's folder, models/isp/<regime>/pretrained or .../<run>, or one seed's file in it."""
    folder = MODELS / "isp" / _regime(run) / ("pretrained" if run.kind == PRETRAINED else run.name)
    return folder if seed is None else folder / f"seed{seed}.pt"


def train_log(run: Run, seed: int | None = None) -> Path:
    """The run's dvclive folder (one per seed for ISP runs)."""
    folder = REPORTS / "train" / (Path(_regime(run)) / run.name if run.is_isp else run.name)
    return folder if seed is None else folder / f"seed{seed}"


def eval_dir(run: Run) -> Path:
    return REPORTS / "eval" / _regime(run) / run.name


def controls_eval(regime: str) -> Path:
    """The evaluation of a regime's pretrained ISP(s) and fine-tuned controls."""
    return REPORTS / "eval" / regime / "controls"


def rate_model(point: Point) -> Path:
    """The fitted weights of the JPEG size estimate R at `point` (stage fit_rate)."""
    return MODELS / "rate" / f"{point.name}.json"


def rate_report(point: Point) -> Path:
    """The estimate's fit and its validation on held-out photos (stage fit_rate)."""
    return REPORTS / "rate" / f"{point.name}.json"


def pretrain_report(regime: str) -> Path:
    return REPORTS / "isp" / f"{regime}.json"


def cas_report_dir(point: Point, variant: str) -> Path:
    return REPORTS / "cas" / f"{point.name}-{variant}"


def manifest() -> dict:
    """The render stage's manifest: every rendered image, its stem, source photo and CFA."""
    return json.loads((RENDERED / "manifest.json").read_text())


def split() -> dict:
    return json.loads(SPLIT.read_text())


def sources() -> dict[str, str]:
    """stem -> source photo (the independent test unit)."""
    return {im["stem"]: im.get("source", im["stem"]) for im in manifest()["images"]}


def aware_runs(p, regime: str) -> list[Run]:
    """Every fine-tuned aware configuration of params `p` in `regime`: what the finetune and evaluate
    matrices of dvc.yaml expand to."""
    out = []
    for pt in p.points:
        out += ([Run("aware", pt, v, regime) for v in p.variants(pt)]
                + [Run("aware-unfrozen", pt, v, regime) for v in p.cas.unfrozen])
    return out

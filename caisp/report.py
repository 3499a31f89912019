"""reports/report.md: Tables 1-3 beside the paper's values, Figures 4-5 and training curves."""
from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from caisp.codecs import CODECS, JPEG, SIMULATORS, Point
from caisp.io import write_bytes, write_text

DASH = "—"
VARIANTS = SIMULATORS
VARIANT_NAMES = {"unet": "U-Net", "acn": "ACN", "djs": "DJS", "kornia": "kornia", "blur": "blur (fitted sigma)",
                 "djs_paper": "DJS, the paper's (Invertible-ISP's)"}
# Table 1's rows: the baselines, the analytic simulators, then the learned ones.
TABLE1_ORDER = ("blur", "djs_paper", "djs", "kornia", "unet", "acn")
AGNOSTIC = "agnostic"

# Facts from Uhm et al. 2021, Tables 1-3 (PSNR, SSIM) / (PSNR, BPP), per codec (it measured JPEG
# only). None = "n.a." in the paper.
PAPER: dict[str, dict[str, Any]] = {JPEG.name: {
    "table1": {  # CAS fidelity, PSNR / SSIM vs real JPEG
        # The paper's DJS is Invertible-ISP's: our djs_paper row.
        80: {"unet": (43.84, 0.9805), "acn": (43.58, 0.9777), "djs_paper": (42.35, 0.9703)},
        90: {"unet": (44.69, 0.9800), "acn": (44.59, 0.9796), "djs_paper": (43.02, 0.9715)},
    },
    "table2": {  # ISP, PSNR / BPP of c(f(x)) vs c(y)
        80: {"agnostic": (35.54, 0.541),
             "unfrozen": {"unet": (36.74, 0.567), "acn": (36.76, 0.545), "djs": None},
             "frozen": {"unet": (36.94, 0.547), "acn": (36.80, 0.548), "djs": (36.90, 0.547)}},
        90: {"agnostic": (35.88, 0.900),
             "unfrozen": {"unet": (37.15, 0.916), "acn": (37.24, 0.911), "djs": None},
             "frozen": {"unet": (37.22, 0.904), "acn": (37.40, 0.916), "djs": (37.10, 0.917)}},
    },
    "table3": {  # (lambda_isp, lambda_comp) -> variant -> PSNR / BPP
        80: {(1.0, 1.0): {"unet": (36.86, 0.546), "acn": (36.80, 0.548), "djs": (36.76, 0.544)},
             (1.0, 0.1): {"unet": (36.71, 0.548), "acn": (36.73, 0.548), "djs": (36.60, 0.549)},
             (0.1, 1.0): {"unet": (36.94, 0.547), "acn": (36.80, 0.548), "djs": (36.90, 0.547)}},
        90: {(1.0, 1.0): {"unet": (37.17, 0.910), "acn": (37.37, 0.915), "djs": (37.09, 0.905)},
             (1.0, 0.1): {"unet": (37.21, 0.912), "acn": (37.24, 0.917), "djs": (37.07, 0.911)},
             (0.1, 1.0): {"unet": (37.22, 0.904), "acn": (37.40, 0.916), "djs": (37.10, 0.917)}},
    },
}}


def _codec(s: Mapping) -> str:
    """The codec of a stage summary."""
    return str(s["codec"])


def _point(s: Mapping) -> str:
    """'QF 80' for JPEG, 'WebP 80' for another codec."""
    return Point(_codec(s), int(s["qf"])).label


def _display(codec: str) -> str:
    return CODECS[codec].display


def _head(codec: str) -> str:
    """A table's column head for the quality: 'QF' for JPEG, 'quality' for the others."""
    return CODECS[codec].quality_head


def _paper_t(table: str, codec: str, qf: int) -> dict:
    """The paper's row, where the paper has one."""
    return PAPER.get(codec, {}).get(table, {}).get(qf, {})


def isp_label(variant: str, frozen: bool = True) -> str:
    """Model label an ISP summary uses for a compression-aware ISP: 'aware_unet', 'aware_unet_unfrozen'."""
    return f"aware_{variant}" if frozen else f"aware_{variant}_unfrozen"


# --- formatting --------------------------------------------------------------------------------

def _num(x: Any, digits: int) -> str:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return DASH
    if math.isinf(v):  # identical images
        return "inf" if v > 0 else "-inf"
    return f"{v:.{digits}f}" if math.isfinite(v) else DASH


def same_lambdas(a: tuple[float, float], b: tuple[float, float]) -> bool:
    """Loss weights (λ_isp, λ_comp) equal up to float noise: they come from YAML, -S and records."""
    return bool(np.allclose(a, b))


def at_lambdas(rows: pd.DataFrame, lambdas: tuple[float, float]) -> pd.DataFrame:
    """The rows of `_measured_rows` measured at loss weights `lambdas` (λ_isp, λ_comp)."""
    if rows is None or rows.empty:
        return rows
    return rows[np.isclose(rows.lambda_isp, lambdas[0]) & np.isclose(rows.lambda_comp, lambdas[1])]


def _finite(x: Any) -> bool:
    try:
        return math.isfinite(float(x))
    except (TypeError, ValueError):
        return False


def _pair(a: Any, b: Any, da: int = 2, db: int = 4) -> str:
    if not (_finite(a) or _finite(b)):
        return DASH
    return f"{_num(a, da)} / {_num(b, db)}"


def _paper(vals: tuple[float, float] | None, db: int, missing: str = "n.a.") -> str:
    return missing if vals is None else f"{vals[0]:.2f} / {vals[1]:.{db}f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


# --- tables ------------------------------------------------------------------------------------

def _cas_cells(cas_tables: Mapping | None, codec: str = JPEG.name) -> dict[int, dict[str, Mapping]]:
    """{qf: {variant: summary}} of `codec` from {name: summary.json of the train_cas stage}."""
    cells: dict[int, dict[str, Mapping]] = {}
    for val in (cas_tables or {}).values():
        if isinstance(val, Mapping) and _codec(val) == codec:
            cells.setdefault(int(val["qf"]), {})[str(val["variant"])] = val
    return cells


def table1(cas_tables: Mapping | None, codec: str = JPEG.name) -> str:
    """cas_tables: {name: summary.json of the train_cas stage (keys codec, qf, variant, psnr, ssim,
    psnr_gt, ssim_gt, gate)}; rows of `codec`, beside the paper's."""
    ours = _cas_cells(cas_tables, codec)
    qfs = sorted(set(ours) | set(PAPER.get(codec, {}).get("table1", {})))
    head = _head(codec)
    rows = []
    for qf in qfs:
        entries = ours.get(qf, {})
        ident = next((e for e in entries.values() if _finite(e.get("psnr_gt"))), None)
        if ident is not None:  # the identity simulator g(y) = y scores PSNR(y, c(y)) = psnr_gt
            ip, iss = ident.get("psnr_gt"), ident.get("ssim_gt")
            rows.append([str(qf), "identity (y vs c(y))", _pair(ip, iss), DASH, "n/a"])
        variants = [v for v in TABLE1_ORDER if v in entries or v in ("unet", "acn", "djs", "djs_paper")]
        for v in variants + [v for v in entries if v not in variants]:
            e = entries.get(v) or {}
            if v not in CODECS[codec].simulators:
                rows.append([str(qf), VARIANT_NAMES[v], f"n/a: cannot model {_display(codec)}", DASH, "n/a"])
                continue
            paper = _paper_t("table1", codec, qf).get(v)
            rows.append([str(qf), VARIANT_NAMES.get(v, v), _pair(e.get("psnr"), e.get("ssim")),
                         _gate_cell(e.get("gate")), _paper(paper, 4, "n/a")])
    return _table([head, "CAS", "ours PSNR / SSIM", "gate: validation margin over the better of identity and blur",
                   "paper PSNR / SSIM"], rows)


def _gate_cell(gate: Mapping | None) -> str:
    if not gate or not _finite(gate.get("val_margin_db")):
        return DASH
    verdict = "passed" if gate.get("passed") else f"**FAILED** (< {_num(gate.get('gate_db'), 2)} dB)"
    over = f" over {gate['reference']}" if gate.get("reference") else ""
    return f"{float(gate['val_margin_db']):+.2f} dB{over}, {verdict}"


def failed_gates(cas_tables: Mapping | None) -> dict[tuple[str, int, str], Mapping]:
    """{(codec, qf, variant): gate} of the simulators that did not beat the better of the identity and the
    blur on validation."""
    codecs = {_codec(v) for v in (cas_tables or {}).values() if isinstance(v, Mapping)}
    return {(c, qf, v): e["gate"] for c in codecs for qf, entries in _cas_cells(cas_tables, c).items()
            for v, e in entries.items() if isinstance(e.get("gate"), Mapping) and not e["gate"].get("passed", True)}


CONTROL_NAMES = {"pretrained": "pretrained ISP (L_isp only; the paper's baseline)",
                 "agnostic": "fine-tuned control (λ_comp = 0)",
                 "identity": "identity-g control (g = identity, same λs)"}


def _ci(stat: Mapping | None, digits: int = 2, unit: str = "") -> str:
    """'+0.12 [−0.03, +0.25]' from a bootstrap_mean dict."""
    if not stat or not _finite(stat.get("mean")):
        return DASH
    m = f"{float(stat['mean']):+.{digits}f}{unit}"
    if _finite(stat.get("lo")) and _finite(stat.get("hi")):
        m += f" [{float(stat['lo']):+.{digits}f}, {float(stat['hi']):+.{digits}f}]"
    return m


def _configs(isp_summaries: Mapping | None, codec: str | None = JPEG.name) -> list[Mapping]:
    """Evaluate-stage summaries (they carry qf, variant, frozen) of `codec` (None: all, JPEG first),
    sorted codec, QF, frozen first, variant."""
    order = {v: i for i, v in enumerate(VARIANTS)}
    corder = {c: i for i, c in enumerate(CODECS)}
    rows = [s for s in (isp_summaries or {}).values() if isinstance(s, Mapping) and "variant" in s
            and (codec is None or _codec(s) == codec)]
    return sorted(rows, key=lambda s: (corder.get(_codec(s), 99), int(s["qf"]), not s.get("frozen", True),
                                       order.get(s["variant"], 99)))


def _aware_key(s: Mapping) -> str:
    return "aware" if s.get("frozen", True) else "aware-unfrozen"


def operating_point(isp_summaries: Mapping | None, codec: str = JPEG.name) -> str:
    """Where our data and ISPs sit, per QF, on the test photos: the paper's agnostic ISP reaches
    35.54 dB at 0.541 bpp (QF 80) and 35.88 dB at 0.900 bpp (QF 90)."""
    rows = []
    seen = set()
    for s in _configs(isp_summaries, codec):
        qf = int(s["qf"])
        if qf in seen:
            continue
        seen.add(qf)
        gt, models = s.get("ground_truth") or {}, s.get("models") or {}
        for kind in ("pretrained", "agnostic", "identity"):
            m = models.get(kind) or {}
            paper = _paper_t("table2", codec, qf).get("agnostic") if kind == "pretrained" else None
            rows.append([str(qf), _num(gt.get("bpp"), 3), _num(gt.get("psnr_gt"), 2), CONTROL_NAMES[kind],
                         _num(m.get("psnr_before"), 2), _num(m.get("psnr"), 2), _num(m.get("psnr_y"), 2),
                         _num(m.get("bpp"), 3), _paper(paper, 3, "")])
    if not rows:
        return DASH
    name = _display(codec)
    return _table([_head(codec), "c(y) BPP", "PSNR(c(y), y)", "ISP",
                   f"PSNR(f(x), y) before {name}", f"PSNR(c(f(x)), c(y)) after {name}", "PSNR(c(f(x)), y)", "BPP of c(f(x))",
                   "paper PSNR / BPP"], rows)


def table2(isp_summaries: Mapping | None, codec: str = JPEG.name) -> str:
    """PSNR(c(f(x)), c(y)) / BPP at the training QF, mean over test photos and seeds (± SD over
    seeds), for the controls and every aware configuration, beside the paper."""
    rows = []
    done_controls = set()
    for s in _configs(isp_summaries, codec):
        qf, v, frozen = int(s["qf"]), s["variant"], bool(s.get("frozen", True))
        models = s.get("models") or {}
        paper = _paper_t("table2", codec, qf)
        if qf not in done_controls:
            done_controls.add(qf)
            for kind in ("pretrained", "agnostic", "identity"):
                m = models.get(kind) or {}
                pv = paper.get("agnostic") if kind == "pretrained" else None
                rows.append([str(qf), CONTROL_NAMES[kind], "", "", _pair(m.get("psnr"), m.get("bpp"), 2, 3),
                             _num(m.get("psnr_seed_sd"), 2), _paper(pv, 3, "n/a")])
        m = models.get(_aware_key(s)) or {}
        pv = paper.get("frozen" if frozen else "unfrozen", {}).get(v)
        known = v in paper.get("frozen", {})
        rows.append([str(qf), "compression-aware", "yes" if frozen else "no", VARIANT_NAMES.get(v, v),
                     _pair(m.get("psnr"), m.get("bpp"), 2, 3), _num(m.get("psnr_seed_sd"), 2),
                     _paper(pv, 3, "n.a." if known else "n/a")])
    if not rows:
        return DASH
    return _table([_head(codec), "ISP", "CAS frozen", "CAS", "PSNR(c(f(x)), c(y)) / BPP",
                   "SD over seeds",
                   "paper PSNR / BPP"], rows)


def gains_table(isp_summaries: Mapping | None, controls: Sequence[str] = ("agnostic", "identity", "pretrained"),
                codec: str = JPEG.name) -> str:
    """Aware − control per configuration: ΔPSNR after and before JPEG, the compression-specific part
    (after − before), ΔBPP at equal QF, photos improved, BD-PSNR and BD-rate (or why not)."""
    rows = []
    for s in _configs(isp_summaries, codec):
        for c in controls:
            d = (s.get("vs") or {}).get(c)
            if not d:
                continue
            bd = d.get("bd") or {}
            rate = _num(bd.get("bd_rate"), 1) + " %" if _finite(bd.get("bd_rate")) else f"— ({bd.get('bd_rate_why') or 'n/a'})"
            rows.append([str(s["qf"]), VARIANT_NAMES.get(s["variant"], s["variant"]),
                         "yes" if s.get("frozen", True) else "no", c, _ci(d.get("d_psnr")), _ci(d.get("d_psnr_before")),
                         _ci(d.get("d_specific")), _ci(d.get("d_bpp_pct"), 2, " %"),
                         f"{d.get('photos_improved', DASH)}/{s.get('n_photos', DASH)}",
                         _num(bd.get("bd_psnr"), 3), rate])
    if not rows:
        return DASH
    name = _display(codec)
    return _table([_head(codec), "CAS", "frozen", "control", f"ΔPSNR after {name} [95 % CI]",
                   f"ΔPSNR before {name}", "compression-specific (after − before)", "ΔBPP at equal quality", "photos improved",
                   "BD-PSNR (dB)", "BD-rate"], rows)


def per_photo_table(isp_summaries: Mapping | None, control: str = "agnostic", codec: str = JPEG.name) -> str:
    """ΔPSNR(c(f(x)), c(y)) per test photo (mean over seeds) against `control`."""
    configs = [s for s in _configs(isp_summaries, codec) if (s.get("vs") or {}).get(control)]
    photos = sorted({p for s in configs for p in s["vs"][control].get("per_photo", {})})
    if not photos:
        return DASH
    rows = []
    for s in configs:
        pp = s["vs"][control]["per_photo"]
        rows.append([str(s["qf"]), VARIANT_NAMES.get(s["variant"], s["variant"]),
                     "yes" if s.get("frozen", True) else "no"]
                    + [_num((pp.get(ph) or {}).get("d_psnr"), 2) for ph in photos])
    return _table([_head(codec), "CAS", "frozen", *photos], rows)


def headline(isp_summaries: Mapping | None, control: str = "agnostic", cas_tables: Mapping | None = None) -> str:
    """The measured gain per QF and CAS (frozen, as the paper's method) against `control`, beside the
    paper's +1.2..1.5 dB, and whether it is compression-specific; simulators that failed the gate
    (`cas_tables`' train_cas summaries) are flagged on their line."""
    failed = failed_gates(cas_tables)
    lines = []
    for s in _configs(isp_summaries, None):
        d = (s.get("vs") or {}).get(control)
        if not s.get("frozen", True) or not d:
            continue
        spec = d.get("d_specific") or {}
        if _finite(spec.get("lo")) and float(spec["lo"]) > 0:
            verdict = "compression-specific (its interval excludes 0)"
        elif _finite(spec.get("hi")) and float(spec["hi"]) < 0:
            verdict = "less after compression than before"
        else:
            verdict = "not shown to be compression-specific (its interval includes 0)"
        bd = d.get("bd") or {}
        rate = (f"BD-rate {_num(bd.get('bd_rate'), 1)} %" if _finite(bd.get("bd_rate"))
                else f"no BD-rate ({bd.get('bd_rate_why') or 'n/a'})")
        lines.append(f"- {_point(s)}, {VARIANT_NAMES.get(s['variant'], s['variant'])}: ΔPSNR(c(f(x)), c(y)) "
                     f"{_ci(d.get('d_psnr'))} dB at ΔBPP {_ci(d.get('d_bpp_pct'), 2, ' %')} (equal quality); "
                     f"before compression {_ci(d.get('d_psnr_before'))} dB; compression-specific {_ci(spec)} dB: "
                     f"{verdict}; over the quality sweep, PSNR(c(f(x)), y): BD-PSNR {_num(bd.get('bd_psnr'), 3)} dB, "
                     f"{rate}." + _gate_flag(failed.get((_codec(s), int(s["qf"]), str(s["variant"])))))
    if not lines:
        return DASH
    op = []
    for s in _configs(isp_summaries, None):
        if any(f"- {_point(s)}:" in line for line in op):
            continue
        gt, pre = s.get("ground_truth") or {}, (s.get("models") or {}).get("pretrained") or {}
        paper = _paper_t("table2", _codec(s), int(s["qf"])).get("agnostic")
        op.append(f"- {_point(s)}: ground-truth {_display(_codec(s))} {_num(gt.get('bpp'), 3)} bpp, PSNR(c(y), y) "
                  f"{_num(gt.get('psnr_gt'), 2)} dB; pretrained ISP PSNR(f(x), y) {_num(pre.get('psnr_before'), 2)} dB "
                  f"before compression, PSNR(c(f(x)), c(y)) {_num(pre.get('psnr'), 2)} dB after it"
                  + (f" (paper: {paper[0]:.2f} dB at {paper[1]:.3f} bpp)." if paper else "."))
    lines += ["", "Operating point on the test photos:", ""] + op
    any_s = _configs(isp_summaries, None)[0]
    head = (f"Aware − {CONTROL_NAMES[control]}, mean over {any_s.get('n_photos')} unseen test photos × "
            f"{any_s.get('n_seeds')} seeds with 95 % bootstrap intervals (paper: +1.2 to +1.5 dB, e.g. "
            f"+1.40 dB for the U-Net CAS at QF 80):")
    return "\n".join([head, ""] + lines)


def cross_codec_table(isp_summaries: Mapping | None, control: str = "agnostic") -> str:
    """Rows: each aware configuration (trained for operating point A); columns: every training point B;
    cell: ΔPSNR(c(f(x)), c(y)) at B against the fine-tuned control at B [95 % CI], and ΔBPP. The
    diagonal (A = B) is the configuration's own result, in bold."""
    configs = [s for s in _configs(isp_summaries, None) if s.get("cross")]
    if not configs:
        return DASH
    cols: dict[str, str] = {}
    for s in configs:
        for name, cell in s["cross"].items():
            cols.setdefault(name, _point(cell))
    rows = []
    for s in configs:
        own = _point(s)
        cells = []
        for name, label in cols.items():
            d = s["cross"].get(name) or {}
            text = _ci(d.get("d_psnr"))
            bpp = (d.get("d_bpp_pct") or {}).get("mean")
            if _finite(bpp):
                text += f", {float(bpp):+.1f} % bpp"
            cells.append(f"**{text}**" if label == own else text)
        rows.append([own, VARIANT_NAMES.get(s["variant"], s["variant"]), "yes" if s.get("frozen", True) else "no",
                     *cells])
    return _table(["trained for", "CAS", "frozen", *[f"under {label}" for label in cols.values()]], rows)


def _gate_flag(gate: Mapping | None) -> str:
    if gate is None:
        return ""
    return (f" **Simulator failed the gate:** g beats the identity by {float(gate['val_margin_db']):+.2f} dB on "
            f"the validation photos (cas.gate_db = {_num(gate.get('gate_db'), 2)}), so this run is in effect "
            f"the identity-g control.")


def _measured_rows(entries: Sequence[Mapping]) -> pd.DataFrame:
    """One row per (source, regime, λ, QF, CAS) of frozen aware JPEG runs, from `entries` (each: source,
    regime, lambda_isp, lambda_comp, summaries {run: evaluate summary}, pretrain {metrics}): the agnostic
    ISP's operating point and the aware gains against the pretrained ISP and the fine-tuned control."""
    rows = []
    for e in entries:
        for s in _configs(e.get("summaries"), JPEG.name):
            if not s.get("frozen", True):
                continue
            models, vs = s.get("models") or {}, s.get("vs") or {}
            row = {"source": e["source"], "regime": e["regime"], "lambda_isp": float(e["lambda_isp"]),
                   "lambda_comp": float(e["lambda_comp"]), "qf": int(s["qf"]), "variant": s["variant"],
                   "n_photos": s.get("n_photos"), "n_seeds": s.get("n_seeds"),
                   "pretrain_per_seed": bool((e.get("pretrain") or {}).get("per_seed", False))}
            for kind, pre in (("pretrained", "pre"), ("agnostic", "ctrl"), ("aware", "aware")):
                m = models.get(kind) or {}
                row[f"{pre}_psnr"], row[f"{pre}_psnr_before"], row[f"{pre}_bpp"] = (
                    m.get("psnr"), m.get("psnr_before"), m.get("bpp"))
            for kind, pre in (("pretrained", "d_pre"), ("agnostic", "d_ctrl"), ("identity", "d_id")):
                d = vs.get(kind) or {}
                for stat, key in (("d_psnr", ""), ("d_specific", "_spec"), ("d_bpp_pct", "_bpp")):
                    b = d.get(stat) or {}
                    for part in ("mean", "lo", "hi"):
                        row[f"{pre}{key}_{part}"] = b.get(part)
            rows.append(row)
    return pd.DataFrame(rows)


def _ci_row(row: Mapping, pre: str, digits: int = 2) -> str:
    return _ci({"mean": row.get(f"{pre}_mean"), "lo": row.get(f"{pre}_lo"), "hi": row.get(f"{pre}_hi")}, digits)


# The paper's agnostic ISP and its aware − agnostic gain per QF and CAS (Table 2, frozen CAS).
def paper_gains() -> list[dict]:
    out = []
    for qf, t in PAPER[JPEG.name]["table2"].items():
        for v, pv in t["frozen"].items():
            if pv is not None:
                out.append({"qf": qf, "variant": v, "agnostic": t["agnostic"][0], "gain": pv[0] - t["agnostic"][0]})
    return out


def axis_table(rows: pd.DataFrame) -> str:
    """The operating-point axis: per regime, QF and CAS, the agnostic ISP's PSNR(c(f(x)), c(y)) and
    the aware gain against the pretrained ISP (the paper's comparison) and against the fine-tuned
    control, with the compression-specific part of the latter."""
    if rows is None or rows.empty:
        return DASH
    out = []
    for _, r in rows.sort_values(["pre_psnr", "qf", "variant"]).iterrows():
        out.append([r.regime, r.source, str(r.qf), VARIANT_NAMES.get(r.variant, r.variant),
                    _num(r.pre_psnr, 2), _num(r.pre_bpp, 3), _ci_row(r, "d_pre"), _ci_row(r, "d_ctrl"),
                    _ci_row(r, "d_ctrl_spec"), _ci_row(r, "d_id"),
                    f"{r.n_photos} × {r.n_seeds}" + (" (own pretraining each)" if r.pretrain_per_seed else "")])
    for g in paper_gains():
        out.append(["the paper", "Uhm et al. Table 2", str(g["qf"]), VARIANT_NAMES[g["variant"]],
                    f"{g['agnostic']:.2f}", _num(PAPER[JPEG.name]["table2"][g["qf"]]["agnostic"][1], 3),
                    f"{g['gain']:+.2f}", "not run", "not run", "not run", "73 photos × 1"])
    return _table(["regime", "measured by", "QF", "CAS", "agnostic ISP PSNR(c(f(x)), c(y))", "its BPP",
                   "aware − pretrained ISP [95 % CI]", "aware − fine-tuned control", "of which compression-specific",
                   "aware − identity-g control", "test photos × seeds"], out)


def axis_figure(rows: pd.DataFrame, path: Path) -> None:
    """Aware − pretrained ISP and aware − fine-tuned control against the agnostic ISP's PSNR, per CAS
    and QF, with 95 % intervals; the paper's points on the first panel."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    markers = {"unet": "o", "acn": "s", "djs": "^", "kornia": "D"}
    colours = {80: "tab:blue", 90: "tab:orange"}
    xs = [float(x) for x in rows.pre_psnr if _finite(x)] + [g["agnostic"] for g in paper_gains()]
    unit = 0.008 * max(max(xs) - min(xs), 1.0) if xs else 0.0  # side by side: QFs, then simulators
    slot = {v: i - 1.5 for i, v in enumerate(markers)}
    for ax, pre, title in ((axes[0], "d_pre", "aware − pretrained ISP (the paper's comparison)"),
                           (axes[1], "d_ctrl", "aware − fine-tuned control (λ_comp = 0, same steps)")):
        for _, r in rows.iterrows():
            y, lo, hi = (float(r[f"{pre}_{k}"]) if _finite(r[f"{pre}_{k}"]) else np.nan for k in ("mean", "lo", "hi"))
            x = float(r.pre_psnr) + unit * ((2.5 if r.qf == 90 else -2.5) + slot.get(r.variant, 0))
            ax.errorbar([x], [y], yerr=[[y - lo], [hi - y]], fmt=markers.get(r.variant, "x"),
                        color=colours.get(int(r.qf), "k"), ms=6, capsize=3,
                        label=f"QF {r.qf}, {VARIANT_NAMES.get(r.variant, r.variant)}")
        if pre == "d_pre":
            for g in paper_gains():
                ax.plot([g["agnostic"]], [g["gain"]], markers.get(g["variant"], "x"), mfc="none",
                        color=colours.get(g["qf"], "k"), ms=9, mew=1.5,
                        label=f"paper QF {g['qf']}, {VARIANT_NAMES[g['variant']]}")
        ax.axhline(0, color="k", lw=0.8)
        ax.set_xlabel("agnostic (pretrained) ISP: PSNR(c(f(x)), c(y)) [dB] on the test photos")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("ΔPSNR(c(f(x)), c(y)) [dB]")
    handles, labels = axes[0].get_legend_handles_labels()
    uniq = dict(zip(labels, handles))
    axes[0].legend(uniq.values(), uniq.keys(), fontsize=6, ncol=2)
    _save(fig, path)


def axis_headline(rows: pd.DataFrame, regime: str) -> str:
    """At regime `regime`'s operating point: does the paper's gain against the pretrained ISP appear,
    and how much of it remains against the fine-tuned control."""
    at = rows[rows.regime == regime] if rows is not None and not rows.empty else pd.DataFrame()
    if at.empty:
        return DASH
    ops = ", ".join(f"QF {qf}: {_num(g.pre_psnr.iloc[0], 2)} dB at {_num(g.pre_bpp.iloc[0], 3)} bpp"
                    for qf, g in at.groupby("qf"))
    r0 = at.iloc[0]
    where = "the paper's operating point" if regime == "paper" else f"regime `{regime}`'s operating point"
    lines = [f"At {where} (regime `{regime}`: agnostic ISP PSNR(c(f(x)), c(y)) {ops}; "
             f"paper: 35.54 dB at 0.541 bpp at QF 80, 35.88 dB at 0.900 bpp at QF 90), mean over "
             f"{r0.n_photos} test photos × {r0.n_seeds} seeds"
             + (", each seed with its own pretraining" if r0.pretrain_per_seed else "") + ", 95 % intervals:", ""]
    paper = {(g["qf"], g["variant"]): g["gain"] for g in paper_gains()}
    for _, r in at.sort_values(["qf", "variant"]).iterrows():
        pg = paper.get((int(r.qf), r.variant))
        lines.append(f"- QF {r.qf}, {VARIANT_NAMES.get(r.variant, r.variant)}: aware − pretrained ISP "
                     f"{_ci_row(r, 'd_pre')} dB" + (f" (paper {pg:+.2f} dB)" if pg is not None else "")
                     + f"; aware − fine-tuned control {_ci_row(r, 'd_ctrl')} dB, of which compression-specific "
                     f"{_ci_row(r, 'd_ctrl_spec')} dB; ΔBPP against the control {_ci_row(r, 'd_ctrl_bpp')} %.")
    return "\n".join(lines)


def table3(rows: pd.DataFrame | None, regime: str | None = None) -> str:
    """Table 3 (λ ablation) at `regime`: the frozen aware ISP's PSNR(c(f(x)), c(y)) / BPP per (λ_isp,
    λ_comp), its gain against the fine-tuned control with a 95 % interval, beside the paper's."""
    at = pd.DataFrame() if rows is None or rows.empty else rows[rows.regime == regime] if regime else rows
    out = []
    known = set()
    for qf in sorted(PAPER[JPEG.name]["table3"]):
        for (li, lc), paper in PAPER[JPEG.name]["table3"][qf].items():
            for v in ("unet", "acn", "djs"):
                known.add((qf, li, lc, v))
                sel = at_lambdas(at, (li, lc))
                sel = sel[(sel.qf == qf) & (sel.variant == v)] if len(sel) else sel
                r = sel.iloc[0] if len(sel) else {}
                out.append([str(qf), f"{li:g}", f"{lc:g}", VARIANT_NAMES[v],
                            _pair(r.get("aware_psnr"), r.get("aware_bpp"), 2, 3) if len(sel) else DASH,
                            _ci_row(r, "d_ctrl") if len(sel) else DASH, _paper(paper[v], 3)])
    for _, r in at.iterrows():  # our settings the paper did not run
        if (int(r.qf), float(r.lambda_isp), float(r.lambda_comp), r.variant) not in known:
            out.append([str(r.qf), f"{r.lambda_isp:g}", f"{r.lambda_comp:g}", VARIANT_NAMES.get(r.variant, r.variant),
                        _pair(r.aware_psnr, r.aware_bpp, 2, 3), _ci_row(r, "d_ctrl"), "n/a"])
    text = _table(["QF", "λ_isp", "λ_comp", "CAS", "ours PSNR / BPP", "ours − fine-tuned control [95 % CI]",
                   "paper PSNR / BPP"], out)
    if at.empty or len(at.groupby(["lambda_isp", "lambda_comp"])) < 2:
        text += ("\n\nOnly the default λ is measured so far; the others are the documented experiments "
                 "(README \"Table 3\"), e.g. `dvc exp run -n lambda-1-1 -S lambda_isp=1 -S lambda_comp=1` then "
                 "`caisp record lambda-1-1 --command ...`.")
    return text


# --- figures -----------------------------------------------------------------------------------

def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    _plt().close(fig)
    write_bytes(path, buf.getvalue())


def rd_figure(rd: pd.DataFrame, path: Path, title: str = "Rate-distortion over the JPEG QF sweep",
              codec: str = "JPEG") -> None:
    """Figure 5: mean BPP vs PSNR(c(f(x)), y) per model over the QF sweep (BD values are in the gains
    table, computed where they are defined)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 4.8))
    for model, g in rd.groupby("model", sort=True):
        g = g.dropna(subset=["bpp", "psnr"]).sort_values("bpp")
        style = "k--" if model == "ground_truth" else "-"
        ax.plot(g.bpp, g.psnr, style, marker="o", ms=3, label=str(model))
    ax.set_xlabel(f"bits per pixel (real {codec} file bytes)")
    ax.set_ylabel("PSNR(c(f(x)), y) [dB]  (ground truth: PSNR(c(y), y))")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    if len(rd):
        ax.legend(fontsize=7)
    _save(fig, path)


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


def examples_figure(examples: Sequence[Mapping], path: Path, amplify: float = 8.0) -> None:
    """Figure 4: per example GT | agnostic JPEG | aware JPEG, and amplified |x - gt| below each."""
    plt = _plt()
    n = len(examples)
    fig, axes = plt.subplots(2 * n, 3, figsize=(9, 6 * n), squeeze=False)
    for i, ex in enumerate(examples):
        gt = np.asarray(ex["gt"])
        panels = [("GT sRGB", gt, None, None)]
        for name in ("agnostic", "aware"):
            img = np.asarray(ex[f"{name}_coded"])
            p = ex.get(f"{name}_psnr", _psnr(img, gt))
            panels.append((name, img, p, ex.get(f"{name}_bpp")))
        for j, (name, img, p, b) in enumerate(panels):
            top, bottom = axes[2 * i, j], axes[2 * i + 1, j]
            title = name if p is None else f"{name}: {_num(p, 2)} dB / {_num(b, 3)} bpp"
            top.imshow(img)
            top.set_title(f"{ex.get('title', '')}\n{title}" if j == 0 else title, fontsize=8)
            err = np.abs(img.astype(np.float32) - gt.astype(np.float32)).mean(-1)
            bottom.imshow(np.clip(err * amplify, 0, 255), cmap="inferno", vmin=0, vmax=255)
            bottom.set_title(f"|x − gt| × {amplify:g}", fontsize=8)
            for ax in (top, bottom):
                ax.axis("off")
    _save(fig, path)


def cas_curves_figure(curves: Mapping[int, Mapping[str, pd.DataFrame]], refs: Mapping[int, Mapping[str, float]],
                      path: Path, codec: str = JPEG.name) -> None:
    """Validation PSNR(g(y), c(y)) against training steps of each learned simulator, one panel per
    quality, with the untrained simulators' values on the same photos as horizontal lines."""
    plt = _plt()
    qfs = sorted(set(curves) | set(refs))
    fig, axes = plt.subplots(1, len(qfs), figsize=(5 * len(qfs), 3.4), squeeze=False)
    styles = {"identity": ":", "blur": "--", "djs": "-.", "djs_paper": (0, (1, 3)), "kornia": (0, (5, 2, 1, 2))}
    for ax, qf in zip(axes[0], qfs):
        for v, frame in curves.get(qf, {}).items():
            if frame is not None and {"step", "psnr"} <= set(frame.columns) and len(frame):
                ax.plot(frame["step"], frame["psnr"], marker=".", label=VARIANT_NAMES.get(v, v))
        for name, value in refs.get(qf, {}).items():
            if _finite(value):
                ax.axhline(float(value), color="grey", lw=1, ls=styles.get(name, "-"),
                           label=f"{VARIANT_NAMES.get(name, name)} {float(value):.2f}")
        ax.set_title(f"{_head(codec)} {qf}", fontsize=9)
        ax.set_xlabel("training step")
        ax.set_ylabel("validation PSNR(g(y), c(y)) dB")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    _save(fig, path)


def curves_figure(curves: Mapping[str, pd.DataFrame], path: Path) -> None:
    plt = _plt()
    n = len(curves)
    fig, axes = plt.subplots(1, n, figsize=(4 * n, 3), squeeze=False)
    for ax, (name, frame) in zip(axes[0], curves.items()):
        if frame is not None and {"step", "value"} <= set(frame.columns) and len(frame):
            ax.plot(frame["step"], frame["value"])
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    _save(fig, path)


# --- the report --------------------------------------------------------------------------------

def _codec_sections(fig_dir: Path, cas_tables: Mapping | None, isp_summaries: Mapping | None,
                    codec_rd: Mapping[str, pd.DataFrame]) -> list[str]:
    """Tables 1 and 2, the gains and the RD figure per codec besides JPEG, then the cross-codec table."""
    if not codec_rd:
        return []
    parts = ["## Other codecs", "",
             "The same pipeline with the codec as an axis: CAS-Net and ACN trained per (codec, quality) with "
             "L_cas against the real codec, ISPs fine-tuned with the same controls, seeds and statistics, and "
             "evaluated with the real encoder; BPP from the file bytes. DJS and kornia model JPEG only (its 8x8 "
             "DCT and quantisation tables), so they have no row for the other codecs. There is no paper value: "
             "the paper measured JPEG only.", ""]
    for codec, rd in codec_rd.items():
        name = _display(codec)
        parts += [f"### {name}", "", f"Table 1 ({name}): PSNR / SSIM of g(y) vs the real {name} c(y)", "",
                  table1(cas_tables, codec), "", f"Table 2 ({name}): PSNR(c(f(x)), c(y)) / BPP at the training quality",
                  "", table2(isp_summaries, codec), "", f"Gains against each control ({name})", "",
                  gains_table(isp_summaries, codec=codec), "", "Operating point (test photos)", "",
                  operating_point(isp_summaries, codec), ""]
        if rd is not None and len(rd):
            rd_figure(rd, fig_dir / f"rd_curve_{codec}.png", title=f"Rate-distortion over the {name} quality sweep",
                      codec=name)
            parts += [f"![RD curve {name}](figures/rd_curve_{codec}.png)", ""]
    parts += ["## Cross-codec: an ISP tuned for one codec, compressed by another", "",
              "ΔPSNR(c(f(x)), c(y)) of each aware ISP against the fine-tuned control (λ_comp = 0, same seeds and "
              "crops), both compressed by the column's codec and quality; 95 % bootstrap intervals over test "
              "photos and seeds, and the mean ΔBPP. Bold: the point the ISP was tuned for. Awareness transfers "
              "where an off-diagonal interval excludes 0 on the positive side; it overfits where only the "
              "diagonal does.", "", cross_codec_table(isp_summaries), ""]
    return parts


def _cas_curves_part(fig_dir: Path, cas_curves: tuple[Mapping, Mapping] | None) -> list[str]:
    if not cas_curves or not (cas_curves[0] or cas_curves[1]):
        return []
    cas_curves_figure(*cas_curves, fig_dir / "cas_curves.png")
    return ["Learning curves of the simulators: the training loop's validation PSNR(g(y), c(y)) (unrounded) "
            "against steps, on the validation photos of the gate; lines: the identity, the fitted blur and the "
            "analytic simulators on the same photos (8-bit).", "", "![CAS learning curves](figures/cas_curves.png)", ""]


def interval_note(rows: pd.DataFrame | None, regime: str, n_sources: int | None) -> str:
    """How wide the headline regime's intervals are with its test photos, and what testing every source
    photo once (a cross-validation by source) would make them, at 1/sqrt(photos)."""
    at = rows[rows.regime == regime] if rows is not None and not rows.empty else pd.DataFrame()
    if at.empty or not n_sources:
        return ""
    half = ((at.d_ctrl_hi.astype(float) - at.d_ctrl_lo.astype(float)) / 2).mean()
    n = int(at.n_photos.iloc[0])
    folds = math.ceil(n_sources / n)
    return (f"Interval width: with {n} test photos, the 95 % intervals of aware − fine-tuned control in regime "
            f"`{regime}` are ±{half:.3f} dB on average, and a bootstrap over so few photos is anti-conservative. "
            f"Testing every one of the {n_sources} source photos once (a {folds}-fold cross-validation by source, "
            f"{folds}x the fine-tuning and evaluation cost, which the 30-minute default cannot hold) would narrow "
            f"them by about sqrt({n}/{n_sources}) = {math.sqrt(n / n_sources):.2f}x, to about ±"
            f"{half * math.sqrt(n / n_sources):.3f} dB.")


def _axis_part(fig_dir: Path, measured: pd.DataFrame | None, default_lambdas: tuple[float, float] | None,
               regime: str | None = None, n_sources: int | None = None) -> list[str]:
    """The operating-point axis: every regime measured at the default λ, by this graph or a committed
    experiment (reports/experiments), as a table and a figure."""
    rows = measured
    if default_lambdas is not None:
        rows = at_lambdas(rows, default_lambdas)
    parts = ["## The operating-point axis: the paper's claim where the paper made it", "",
             "Each regime is an ISP with the whole comparison (pretrained ISP, both fine-tuned controls, the aware "
             "ISP per simulator and QF, every seed), ordered by how good its compression-agnostic ISP is. "
             "'measured by': this `dvc repro`, or the committed experiment of that name under "
             "reports/experiments (its provenance is in its record.json). Intervals: 95 % bootstrap over test "
             "photos and seeds (paired); where each seed has its own pretraining they also cover the pretraining.",
             "", axis_table(rows), ""]
    if rows is not None and not rows.empty:
        axis_figure(rows, fig_dir / "operating_axis.png")
        parts += ["![operating-point axis](figures/operating_axis.png)", "",
                  "Open markers: the paper's aware − agnostic gains (Table 2) at its agnostic ISP's PSNR; the "
                  "paper ran no fine-tuned control.", ""]
    note = interval_note(rows, regime, n_sources) if regime else ""
    if note:
        parts += [note, ""]
    return parts


def write_report(out_dir: Path, *, cas_tables: Mapping | None = None, isp_summaries: Mapping | None = None,
                 measured: pd.DataFrame | None = None, regime: str | None = None,
                 default_lambdas: tuple[float, float] | None = None, n_sources: int | None = None,
                 rd: pd.DataFrame | None = None,
                 curves: Mapping[str, pd.DataFrame] | None = None,
                 examples: Sequence[Mapping] | None = None, setup: str = "",
                 codec_rd: Mapping[str, pd.DataFrame] | None = None, headline_text: str | None = None,
                 cas_curves: tuple[Mapping, Mapping] | None = None,
                 rate: tuple[Mapping, Sequence[tuple[str, Mapping, str]]] | None = None) -> Path:
    """Write out_dir/report.md and its PNGs under out_dir/figures; missing pieces show as '—'.
    `isp_summaries` are the headline regime's (`regime`); `measured` (`_measured_rows` of every regime
    and λ measured, here or in committed experiments) gives the operating-point axis and Table 3.
    `codec_rd` ({codec: RD curves}) adds a section per codec besides JPEG and the cross-codec table;
    `headline_text` is `headline(isp_summaries, cas_tables=cas_tables)` when the caller has it;
    `cas_curves` ((curves, refs) of `cas_curves_figure`) adds the simulators' learning curves; `rate`
    ((estimate fits, [(regime, rate summaries, who measured them)]) of `rate_part`) the rate axis."""
    if headline_text is None:
        headline_text = headline(isp_summaries, cas_tables=cas_tables)
    out_dir = Path(out_dir)
    fig_dir = out_dir / "figures"
    parts = ["# caisp report: compression-aware ISP (Uhm et al. 2021) reproduction", "",
             "Ours are measured with real JPEG (Pillow) on whole test photos that share no source photo with "
             "training; paper values are from its Tables 1-3. Every PSNR is labelled: c = real JPEG at the "
             "QF, f(x) = ISP output, y = LibRaw's rendering. '—' = not run here; 'n.a.'/'n/a' = no paper value.",
             "", setup, "",
             "## Headline", "", headline_text, "",
             *_axis_part(fig_dir, measured, default_lambdas, regime, n_sources),
             f"## Operating point of regime `{regime}` (test photos)", "", operating_point(isp_summaries), "",
             f"Every table below is regime `{regime}`'s (the paper's operating point) unless it says otherwise.", "",
             "## Table 1: compression artifacts simulation (PSNR / SSIM of g(y) vs real JPEG c(y))", "",
             table1(cas_tables), "",
             *_cas_curves_part(fig_dir, cas_curves),
             "## Table 2: ISP learning (PSNR(c(f(x)), c(y)) / BPP at the training QF)", "", table2(isp_summaries), "",
             "## Gains against each control, at the training QF", "",
             "Paired by test photo and seed (the pretrained ISP pairs with every seed); 95 % intervals from a "
             "bootstrap over photos and seeds, not corrected for the number of comparisons. ΔBPP is relative "
             "at equal QF. BD-PSNR / BD-rate over the QF sweep use PSNR(c(f(x)), y) against BPP "
             "(mean curves); BD-rate is given only where both curves rise with rate and overlap enough.", "",
             gains_table(isp_summaries), "",
             "### Per test photo: ΔPSNR(c(f(x)), c(y)) against the fine-tuned control (mean over seeds)", "",
             per_photo_table(isp_summaries), "",
             f"## Table 3: λ ablation (PSNR(c(f(x)), c(y)) / BPP, CAS frozen, regime `{regime}`)", "",
             table3(measured, regime), ""]
    if rd is not None and len(rd):
        rd_figure(rd, fig_dir / "rd_curve.png")
        parts += ["## Figure 5: rate-distortion over QFs", "", "![RD curve](figures/rd_curve.png)", ""]
    else:
        parts += ["## Figure 5: rate-distortion over QFs", "", DASH, ""]
    if examples:
        examples_figure(examples, fig_dir / "examples.png")
        parts += ["## Figure 4: fine-tuned control vs aware ISP after JPEG (seed 0)", "",
                  "![examples](figures/examples.png)", "",
                  "PSNR(c(f(x)), y) / BPP under each crop are for the whole photo; error maps amplified.", ""]
    if rate is not None:
        parts += rate_part(fig_dir, *rate)
    parts += _codec_sections(fig_dir, cas_tables, isp_summaries, codec_rd or {})
    if curves:
        curves_figure(curves, fig_dir / "training_curves.png")
        parts += ["## Training curves", "", "![curves](figures/training_curves.png)", ""]
    path = out_dir / "report.md"
    write_text(path, "\n".join(parts))
    return path


# --- the rate axis (issue 22) --------------------------------------------------------------------

def _fit_cells(f: Mapping | None) -> list[str]:
    f = f or {}
    def pct(x: Any) -> str:
        return f"{float(x):.1f} %" if _finite(x) else DASH

    return [str(f.get("n", DASH)), _num(f.get("spearman"), 3), pct(f.get("mean_abs_err_pct")),
            pct(f.get("max_abs_err_pct"))]


def rate_proxy_table(fits: Mapping[str, Mapping], axes: Sequence[tuple[str, Mapping, str]] = ()) -> str:
    """R against the real baseline JPEG bits: the fit on the training photos, the held-out photos
    (each also blurred and sharpened), and the ISP outputs of the rate axis in each regime of `axes`
    ((regime, rate summaries, who measured them); test photos, every seed)."""
    rows = []
    for name, f in sorted(fits.items(), key=lambda kv: kv[1].get("qf", 0)):
        qf = f.get("qf")
        rows.append([str(qf), f"training photos ({f.get('n_train_photos')}) × {len(f['train'].get('versions', {}))} "
                     "versions (fitted on)", *_fit_cells(f.get("train"))])
        rows.append([str(qf), f"held-out photos ({f.get('n_held_out_photos')}) × "
                     f"{len(f['held_out'].get('versions', {}))} versions", *_fit_cells(f.get("held_out"))])
    for regime, summaries, _ in axes:
        controls = set()
        for s in _rate_runs(summaries)[0]:
            proxy = s.get("proxy") or {}
            if s["qf"] not in controls:  # the control's outputs once per QF, before its rate runs
                controls.add(s["qf"])
                rows.append([str(s["qf"]), f"regime {regime}: fine-tuned control's outputs",
                             *_fit_cells(proxy.get("agnostic"))])
            rows.append([str(s["qf"]), f"regime {regime}: rate-aware ISP's outputs, λ_rate = {s['lambda_rate']:g}",
                         *_fit_cells(proxy.get("rate"))])
    if not rows:
        return DASH
    return _table(["QF", "files", "n", "Spearman ρ", "mean |error|", "max |error|"], rows)


def _bd(stat: Mapping | None) -> str:
    if not stat or not _finite(stat.get("mean")):
        why = (stat or {}).get("why")
        return f"{DASH} ({why})" if why else DASH
    return _ci(stat, 2, " %")


def _rate_runs(rate_summaries: Mapping[str, Mapping]) -> tuple[list[Mapping], list[str]]:
    """The rate runs ordered by QF and lambda_rate, and the anchor encoders they were scored with."""
    ordered = sorted(rate_summaries.values(), key=lambda s: (s["qf"], s["lambda_rate"]))
    return ordered, [c for c in ordered[0]["codecs"] if c != JPEG.name]


def rate_table(rate_summaries: Mapping[str, Mapping]) -> str:
    """Per QF and lambda_rate, against the agnostic fine-tuned control (which differs in R alone):
    ΔPSNR(c(f(x)), y) and ΔBPP at the training QF, and BD-rate over the QF sweep at equal PSNR and
    SSIM, with the baseline encoder and with each anchor (the ISP's saving on top of the encoder's)."""
    if not rate_summaries:
        return DASH
    ordered, anchors = _rate_runs(rate_summaries)
    rows = []
    for s in ordered:
        vs, bd = s.get("vs_agnostic") or {}, s.get("bd_rate") or {}
        psnr, ssim = bd.get("psnr_y") or {}, bd.get("ssim_y") or {}
        rows.append([str(s["qf"]), f"{s['lambda_rate']:g}", _ci(vs.get("d_psnr_y")), _ci(vs.get("d_bpp_pct"), 2, " %"),
                     _bd(psnr.get(JPEG.name)), _bd(ssim.get(JPEG.name)),
                     *[_bd(psnr.get(c)) for c in anchors], f"{s.get('n_photos')} × {len(s.get('seeds', []))}"])
    return _table(["QF", "λ_rate", "ΔPSNR(c(f(x)), y) at the QF", "ΔBPP at the QF", "BD-rate (PSNR), libjpeg-turbo",
                   "BD-rate (SSIM), libjpeg-turbo",
                   *[f"BD-rate (PSNR), both with {CODECS[c].display}" for c in anchors], "test photos × seeds"], rows)


def rate_anchor_table(rate_summaries: Mapping[str, Mapping]) -> str:
    """What each encoder buys on the control's pictures (BD-rate against the baseline encoder), and the
    rate-aware ISP with that encoder against the control with the baseline encoder (both savings)."""
    if not rate_summaries:
        return DASH
    ordered, anchors = _rate_runs(rate_summaries)
    rows, seen = [], set()
    for s in ordered:
        bd = s.get("bd_rate") or {}
        psnr, ssim = bd.get("psnr_y") or {}, bd.get("ssim_y") or {}
        for c in anchors:
            if (s["qf"], c) not in seen:  # the control's own saving: one row per QF and encoder
                seen.add((s["qf"], c))
                rows.append([str(s["qf"]), f"fine-tuned control + {CODECS[c].display}", _bd(psnr.get(f"anchor-{c}")),
                             _bd(ssim.get(f"anchor-{c}"))])
        for c in anchors:
            rows.append([str(s["qf"]), f"rate-aware ISP (λ_rate = {s['lambda_rate']:g}) + {CODECS[c].display}",
                         _bd(psnr.get(f"both-{c}")), _bd(ssim.get(f"both-{c}"))])
    return _table(["training QF", "against fine-tuned control + libjpeg-turbo (baseline)", "BD-rate (PSNR(c(f(x)), y))",
                   "BD-rate (SSIM(c(f(x)), y))"], rows)


def rate_figure(rate_summaries: Mapping[str, Mapping], path: Path) -> None:
    """Mean PSNR(c(f(x)), y) against real BPP over the QF sweep, per training QF: the control and every
    lambda_rate, with the baseline encoder (solid) and mozjpeg (dashed)."""
    plt = _plt()
    qfs = sorted({s["qf"] for s in rate_summaries.values()})
    fig, axes = plt.subplots(1, len(qfs), figsize=(6.0 * len(qfs), 4.6), squeeze=False)
    for ax, qf in zip(axes[0], qfs):
        runs = sorted((s for s in rate_summaries.values() if s["qf"] == qf), key=lambda s: s["lambda_rate"])
        cmap = plt.get_cmap("viridis")
        for codec, style in ((JPEG.name, "-"), ("mozjpeg", "--")):
            for i, s in enumerate([None, *runs]):
                src = runs[0] if s is None else s
                pts = (src.get("curves") or {}).get(codec, {}).get("agnostic" if s is None else "rate")
                if not pts:
                    continue
                label = ("fine-tuned control" if s is None else f"λ_rate {s['lambda_rate']:g}") + f", {CODECS[codec].display}"
                color = "k" if s is None else cmap(0.15 + 0.7 * (i - 1) / max(1, len(runs) - 1))
                ax.plot([p["bpp"] for p in pts], [p["psnr_y"] for p in pts], style, color=color, marker="o", ms=3,
                        label=label)
        ax.set_xlabel("bits per pixel (real file bytes)")
        ax.set_ylabel("PSNR(c(f(x)), y) [dB]")
        ax.set_title(f"rate-aware ISPs trained at QF {qf} (sweep QF {', '.join(str(p['qf']) for p in pts)})"
                     if runs else f"QF {qf}", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    _save(fig, path)


def rate_headline(axes: Sequence[tuple[str, Mapping, str]]) -> str:
    """Per regime of `axes` ((regime, rate summaries, who measured them)) and training QF: the BD-rate
    of each lambda_rate against the fine-tuned control (PSNR) with its interval, and mozjpeg's own saving."""
    regimes = []
    for regime, summaries, source in axes:
        out = []
        for qf in sorted({s["qf"] for s in summaries.values()}):
            runs = [s for s in summaries.values() if s["qf"] == qf]
            cells = ", ".join(f"λ_rate {s['lambda_rate']:g}: {_bd(((s.get('bd_rate') or {}).get('psnr_y') or {}).get(JPEG.name))}"
                              for s in sorted(runs, key=lambda s: s["lambda_rate"]))
            anchor = ((runs[0].get("bd_rate") or {}).get("psnr_y") or {}).get("anchor-mozjpeg")
            out.append(f"QF {qf}: {cells}; mozjpeg alone on the control {_bd(anchor)}")
        regimes.append(f"regime {regime} ({source}): " + "; ".join(out))
    if not regimes:
        return ""
    return ("**Rate-aware ISP** (BD-rate against the fine-tuned control at equal PSNR(c(f(x)), y), libjpeg-turbo, "
            "95 % CI): " + ". ".join(regimes) + ".")


def rate_part(fig_dir: Path, fits: Mapping[str, Mapping], axes: Sequence[tuple[str, Mapping, str]]) -> list[str]:
    """The report's rate section: the estimate's validation, then per regime of `axes` ((regime, rate
    summaries, who measured them), in the operating axis's order) the BD-rate table, the anchors, the
    figure and what limits the saving."""
    parts = ["## Rate-aware ISP: the same picture in fewer bytes", "",
             "L_total = λ_isp · L_isp + λ_rate · R(f(x)) / pixels, R the differentiable estimate of the baseline "
             "JPEG's bits (caisp/rate.py: magnitude bits, soft non-zero counts and DC differences of DJS's "
             "unrounded quantised DCT coefficients, weights fitted per QF by non-negative least squares on the "
             "training photos). Each λ_rate fine-tunes the pretrained ISP like the agnostic control "
             "(λ_comp = 0, same seeds, crops and steps), so it differs from that control in R alone.", "",
             "### The size estimate against real JPEG bytes", "", rate_proxy_table(fits, axes), ""]
    if not axes:  # `axes` holds only regimes with rate runs (pipeline.report._rate_axis)
        return parts + ["No rate-aware ISP measured (`rate.lambdas` is empty here and no committed experiment "
                        "has one): README \"Rate-aware ISP\".", ""]
    parts += ["BD-rate: negative = fewer bytes at equal quality, over the sweep of QFs; 95 % intervals from a "
              "bootstrap over test photos and seeds (both curves averaged over the same draw).", ""]
    for i, (regime, summaries, source) in enumerate(axes):
        # the first regime's figure keeps the name that earlier reports and the README link
        name = "rate_rd.png" if i == 0 else f"rate_rd_{regime}.png"
        parts += [f"### Regime `{regime}`: BD-rate against the fine-tuned control", "", f"Measured by {source}.", "",
                  rate_table(summaries), "",
                  f"Encoder-side anchors in regime `{regime}`, and whether the ISP's saving adds to theirs:", "",
                  rate_anchor_table(summaries), ""]
        rate_figure(summaries, fig_dir / name)
        parts += [f"![rate-distortion of the rate-aware ISPs, regime {regime}](figures/{name})", ""]
        limit = rate_limit_text(summaries)
        if limit:
            parts += [limit, ""]
    return parts


# Below this span of the control's PSNR(c(f(x)), y) over the whole QF sweep the ISP's own error, not
# the encoder, sets the picture after JPEG: the paper's regime spans 1.3 dB over QF 50-95, today's 5.1.
ISP_BOUND_SPAN_DB = 2.0


def rate_limit_text(rate_summaries: Mapping[str, Mapping]) -> str:
    """What bounds a saving at equal PSNR(c(f(x)), y): how little the control's PSNR moves over the
    whole QF sweep (its own error before JPEG dominates), against what each rate run gives up per
    per cent of bits at its QF."""
    first = _rate_runs(rate_summaries)[0][0]
    pts = ((first.get("curves") or {}).get(JPEG.name) or {}).get("agnostic") or []
    if len(pts) < 2:
        return ""
    lo, hi = pts[0], pts[-1]
    slope = (hi["psnr_y"] - lo["psnr_y"]) / (100 * math.log(hi["bpp"] / lo["bpp"]))  # dB per % of bits
    trades = []
    for s in _rate_runs(rate_summaries)[0]:
        vs = s.get("vs_agnostic") or {}
        dp, db = (vs.get("d_psnr_y") or {}).get("mean"), (vs.get("d_bpp_pct") or {}).get("mean")
        if _finite(dp) and _finite(db) and db < 0:
            trades.append(f"{dp / db:.2f} dB per % at QF {s['qf']}, λ_rate {s['lambda_rate']:g}")
    return (f"What limits the saving: over the whole sweep (QF {lo['qf']} to {hi['qf']}) the control's "
            f"PSNR(c(f(x)), y) moves from {lo['psnr_y']:.2f} to {hi['psnr_y']:.2f} dB while its rate grows "
            f"{hi['bpp'] / lo['bpp']:.1f}x, i.e. the encoder trades about {slope:.4f} dB per % of bits"
            + (": the ISP's own error before JPEG bounds the picture after it" if hi["psnr_y"] - lo["psnr_y"] < ISP_BOUND_SPAN_DB else "")
            + ". A rate-aware ISP that gives up PSNR to "
            "save bits must do so more cheaply than that to gain in BD-rate; the runs gave up "
            + ("; ".join(trades) if trades else "—") + " (mean ΔPSNR / ΔBPP at the training QF).")

"""reports/report.md: Tables 1-3 beside the paper's values, Figures 4-5 and training curves."""
from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from caisp.bjontegaard import bd_psnr, bd_rate
from caisp.io import write_bytes, write_text

DASH = "—"
VARIANTS = ("unet", "acn", "djs", "kornia")
VARIANT_NAMES = {"unet": "U-Net", "acn": "ACN", "djs": "DJS", "kornia": "kornia"}
AGNOSTIC = "agnostic"

# Facts from Uhm et al. 2021, Tables 1-3 (PSNR, SSIM) / (PSNR, BPP). None = "n.a." in the paper.
PAPER: dict[str, Any] = {
    "table1": {  # CAS fidelity, PSNR / SSIM vs real JPEG
        80: {"unet": (43.84, 0.9805), "acn": (43.58, 0.9777), "djs": (42.35, 0.9703)},
        90: {"unet": (44.69, 0.9800), "acn": (44.59, 0.9796), "djs": (43.02, 0.9715)},
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
}


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

def _cas_cells(cas_tables: Mapping | None) -> dict[int, dict[str, Mapping]]:
    """{qf: {variant: summary}} from either that nesting or a flat {name: summary with qf, variant}."""
    cells: dict[int, dict[str, Mapping]] = {}
    for key, val in (cas_tables or {}).items():
        if isinstance(val, Mapping) and "variant" in val and "qf" in val:
            cells.setdefault(int(val["qf"]), {})[str(val["variant"])] = val
        elif isinstance(val, Mapping):
            cells.setdefault(int(key), {}).update({str(k): v for k, v in val.items() if isinstance(v, Mapping)})
    return cells


def table1(cas_tables: Mapping | None) -> str:
    """cas_tables: {qf: {variant: {"psnr", "ssim", optional "psnr_identity", "ssim_identity"}}}, or
    {name: summary.json of the train_cas stage (keys qf, variant, psnr, ssim, ...)}."""
    ours = _cas_cells(cas_tables)
    qfs = sorted(set(ours) | set(PAPER["table1"]))
    rows = []
    for qf in qfs:
        entries = ours.get(qf, {})
        ident = entries.get("identity") or next(
            (e for e in entries.values() if _finite(e.get("psnr_identity"))), None)
        if ident is not None:
            ip = ident.get("psnr_identity", ident.get("psnr"))
            iss = ident.get("ssim_identity", ident.get("ssim"))
            rows.append([str(qf), "identity (y vs c(y))", _pair(ip, iss), "n/a"])
        variants = list(VARIANTS) + [v for v in entries if v not in VARIANTS and v != "identity"]
        for v in variants:
            e = entries.get(v) or {}
            paper = PAPER["table1"].get(qf, {}).get(v)
            rows.append([str(qf), VARIANT_NAMES.get(v, v), _pair(e.get("psnr"), e.get("ssim")),
                         _paper(paper, 4, "n/a")])
    return _table(["QF", "CAS", "ours PSNR / SSIM", "paper PSNR / SSIM"], rows)


def _isp_cells(isp_summaries: Mapping | None) -> dict[int, dict[Any, Mapping]]:
    """{qf: {"agnostic" | (frozen: bool, variant): model means}} from either the evaluate stage's
    summaries ({name: summary with qf, variant, frozen; models "agnostic" and "aware"}) or
    {qf: summary whose models are labelled "agnostic" and `isp_label(variant, frozen)`}."""
    cells: dict[int, dict[Any, Mapping]] = {}
    for key, s in (isp_summaries or {}).items():
        if not isinstance(s, Mapping):
            continue
        models = s.get("models") or {}
        if "variant" in s:
            cell = cells.setdefault(int(s.get("qf", s.get("train_qf", key))), {})
            ag, aw = models.get(s.get("agnostic", AGNOSTIC)), models.get(s.get("aware", "aware"))
            if aw:
                cell[(bool(s.get("frozen", True)), str(s["variant"]))] = aw
        else:
            cell = cells.setdefault(int(s.get("train_qf", key)), {})
            ag = models.get(AGNOSTIC)
            extra = {k[len("aware_"):].removesuffix("_unfrozen") for k in models if k.startswith("aware_")}
            for v in set(VARIANTS) | extra:
                for frozen in (True, False):
                    if models.get(isp_label(v, frozen)):
                        cell[(frozen, v)] = models[isp_label(v, frozen)]
        if ag and AGNOSTIC not in cell:
            cell[AGNOSTIC] = ag
    return cells


def table2(isp_summaries: Mapping | None) -> str:
    """PSNR / BPP at the training QF: agnostic, then aware per CAS variant, CAS frozen or not."""
    ours = _isp_cells(isp_summaries)
    rows = []
    for qf in sorted(set(ours) | set(PAPER["table2"])):
        cell = ours.get(qf, {})
        paper = PAPER["table2"].get(qf, {})
        ag = cell.get(AGNOSTIC) or {}
        rows.append([str(qf), "compression-agnostic", "", "", _pair(ag.get("psnr"), ag.get("bpp"), 2, 3),
                     _paper(paper.get("agnostic"), 3)])
        variants = list(VARIANTS) + sorted({k[1] for k in cell if isinstance(k, tuple)} - set(VARIANTS))
        for frozen in (False, True):
            for v in variants:
                m = cell.get((frozen, v)) or {}
                pv = paper.get("frozen" if frozen else "unfrozen", {}).get(v)
                known = v in PAPER["table2"].get(qf, {}).get("frozen", {})
                rows.append([str(qf), "compression-aware", "yes" if frozen else "no", VARIANT_NAMES.get(v, v),
                             _pair(m.get("psnr"), m.get("bpp"), 2, 3), _paper(pv, 3, "n.a." if known else "n/a")])
    return _table(["QF", "method", "CAS frozen", "CAS", "ours PSNR / BPP", "paper PSNR / BPP"], rows)


def table3(ablation: pd.DataFrame | None) -> str:
    """ablation: columns qf, variant, lambda_isp, lambda_comp, psnr, bpp (one row per run)."""
    rows = []
    have = ablation is not None and not ablation.empty
    for qf in sorted(PAPER["table3"]):
        for (li, lc), paper in PAPER["table3"][qf].items():
            for v in ("unet", "acn", "djs"):
                ours = DASH
                if have:
                    sel = ablation[(ablation.qf.astype(int) == qf) & (ablation.variant == v)
                                   & np.isclose(ablation.lambda_isp.astype(float), li)
                                   & np.isclose(ablation.lambda_comp.astype(float), lc)]
                    if len(sel):
                        ours = _pair(sel.psnr.mean(), sel.bpp.mean(), 2, 3)
                rows.append([str(qf), f"{li:g}", f"{lc:g}", VARIANT_NAMES[v], ours, _paper(paper[v], 3)])
    if have:  # our settings the paper did not run
        known = {(qf, li, lc, v) for qf, t in PAPER["table3"].items() for (li, lc), d in t.items() for v in d}
        for (qf, v, li, lc), g in ablation.groupby(["qf", "variant", "lambda_isp", "lambda_comp"]):
            if (int(qf), float(li), float(lc), v) not in known:
                rows.append([str(int(qf)), f"{float(li):g}", f"{float(lc):g}", VARIANT_NAMES.get(v, v),
                             _pair(g.psnr.mean(), g.bpp.mean(), 2, 3), "n/a"])
    text = _table(["QF", "λ_isp", "λ_comp", "CAS", "ours PSNR / BPP", "paper PSNR / BPP"], rows)
    if not have:
        text += ("\n\nOur columns are empty: no ablation runs yet. Queue and run them with DVC experiments, e.g.\n\n"
                 "```\n"
                 "dvc exp run --queue -S lambda_isp=1 -S lambda_comp=1\n"
                 "dvc exp run --queue -S lambda_isp=1 -S lambda_comp=0.1\n"
                 "dvc exp run --queue -S lambda_isp=0.1 -S lambda_comp=1\n"
                 "dvc exp run --run-all\n"
                 "```\n\nthen collect `dvc exp show --csv` into the ablation frame.")
    return text


def _isp_stats(isp_summaries: Mapping | None) -> str:
    lines = []
    for key, s in (isp_summaries or {}).items():
        if not isinstance(s, Mapping):
            continue
        p = s.get("paired") or {}
        name = (f"QF {s.get('qf', s.get('train_qf', key))}, {s['variant']}, "
                f"CAS {'frozen' if s.get('frozen', True) else 'not frozen'}") if "variant" in s else f"QF {key}"
        lines.append(
            f"- {name}: {s.get('aware', 'aware')} − {s.get('agnostic', AGNOSTIC)}: "
            f"ΔPSNR {_num(s.get('d_psnr'), 2)} dB, ΔBPP {_num(s.get('d_bpp'), 4)}, "
            f"improved on {p.get('improved', DASH)}/{p.get('n', DASH)} images "
            f"(mean {_num(p.get('mean'), 2)} ± {_num(p.get('std'), 2)} dB, paired t p = {_num(p.get('p_ttest'), 4)}, "
            f"Wilcoxon p = {_num(p.get('p_wilcoxon'), 4)}); over QFs {s.get('qfs', DASH)}: "
            f"BD-PSNR {_num(s.get('bd_psnr'), 3)} dB, BD-rate {_num(s.get('bd_rate'), 2)} %.")
    return "\n".join(lines) if lines else "No ISP evaluation yet."


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


def rd_figure(rd: pd.DataFrame, path: Path, reference: str = AGNOSTIC) -> str:
    """Figure 5: mean BPP vs PSNR per model over the QF sweep; BD vs `reference` in the legend."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4.5))
    ref = rd[rd.model == reference].dropna(subset=["bpp", "psnr"])
    notes = []
    for model, g in rd.groupby("model", sort=True):
        g = g.dropna(subset=["bpp", "psnr"]).sort_values("bpp")
        label = str(model)
        if model not in (reference, "ground_truth") and len(ref) >= 2 and len(g) >= 2:
            try:
                dp, dr = bd_psnr(ref.bpp, ref.psnr, g.bpp, g.psnr), bd_rate(ref.bpp, ref.psnr, g.bpp, g.psnr)
                label += f" (BD-PSNR {dp:+.2f} dB, BD-rate {dr:+.1f} %)"
                notes.append(f"{model}: BD-PSNR {dp:+.3f} dB, BD-rate {dr:+.2f} % vs {reference}")
            except ValueError as e:
                notes.append(f"{model}: no BD vs {reference} ({e})")
        style = "k--" if model == "ground_truth" else "-"
        ax.plot(g.bpp, g.psnr, style, marker="o", ms=3, label=label)
    ax.set_xlabel("bits per pixel")
    ax.set_ylabel("PSNR of c(f(x)) vs uncompressed y [dB]")
    ax.set_title("Rate-distortion over the JPEG QF sweep")
    ax.grid(alpha=0.3)
    if len(rd):
        ax.legend(fontsize=7)
    _save(fig, path)
    return "\n".join(f"- {n}" for n in notes)


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
            img = np.asarray(ex[f"{name}_jpeg"])
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

def write_report(out_dir: Path, *, cas_tables: Mapping | None = None, isp_summaries: Mapping | None = None,
                 ablation: pd.DataFrame | None = None, rd: pd.DataFrame | None = None,
                 curves: Mapping[str, pd.DataFrame] | None = None,
                 examples: Sequence[Mapping] | None = None) -> Path:
    """Write out_dir/report.md and its PNGs under out_dir/figures; missing pieces show as '—'."""
    out_dir = Path(out_dir)
    fig_dir = out_dir / "figures"
    parts = ["# caisp report: compression-aware ISP (Uhm et al. 2021) reproduction", "",
             "Ours are measured with real JPEG (Pillow) on our test split; paper values are from its "
             "Tables 1-3. '—' = not run here; 'n.a.'/'n/a' = no paper value.", "",
             "## Table 1: compression artifacts simulation (PSNR / SSIM vs real JPEG)", "", table1(cas_tables), "",
             "## Table 2: ISP learning (PSNR / BPP of c(f(x)) vs c(y))", "", table2(isp_summaries), "",
             "Paired statistics at the training QF:", "", _isp_stats(isp_summaries), "",
             "## Table 3: λ ablation (PSNR / BPP, CAS frozen)", "", table3(ablation), ""]
    if rd is not None and len(rd):
        notes = rd_figure(rd, fig_dir / "rd_curve.png")
        parts += ["## Figure 5: rate-distortion over QFs", "", "![RD curve](figures/rd_curve.png)", "", notes, ""]
    else:
        parts += ["## Figure 5: rate-distortion over QFs", "", DASH, ""]
    if examples:
        examples_figure(examples, fig_dir / "examples.png")
        parts += ["## Figure 4: agnostic vs aware ISP after JPEG", "",
                  "![examples](figures/examples.png)", "",
                  "PSNR / BPP under each crop are for the whole image; error maps amplified.", ""]
    if curves:
        curves_figure(curves, fig_dir / "training_curves.png")
        parts += ["## Training curves", "", "![curves](figures/training_curves.png)", ""]
    path = out_dir / "report.md"
    write_text(path, "\n".join(parts))
    return path

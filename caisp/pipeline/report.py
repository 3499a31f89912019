"""Stage `report`: reports/report.md, the paper's Tables 1-3 and Figures 4-5 re-made from this run,
and the README's measured headline."""
from __future__ import annotations

import json
from pathlib import Path

from caisp import io
from caisp.codecs import JPEG, SIMULATORS, Point
from caisp.params import Params
from caisp.pipeline import layout
from caisp.pipeline.evaluation import at_codec, read_rows, test_set
from caisp.pipeline.layout import Run


def _read_summaries(folder: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in sorted(folder.glob("*/summary.json"))}


def _figure4_examples(p: Params, regime: str, point: Point, variant: str, n: int = 2) -> list[dict]:
    """Run the fine-tuned control and the aware ISP (first seed each) on the first test photos."""
    from caisp.checkpoint import load_model
    from caisp.evaluate import isp_outputs, make_example
    from caisp.device import resolve_device, set_determinism

    # On the training device: the FiveK rehearsal's report ran these 12 MP photos on the CPU for minutes.
    set_determinism(p.train.threads, p.train.deterministic)
    device = resolve_device(p.train.device)
    test = test_set(p.regime(regime), layout.split()["test"][:n])
    seed = p.seeds[0]
    outs = {}
    for label, run in (("agnostic", Run("agnostic", regime=regime)), ("aware", Run("aware", point, variant, regime))):
        net = load_model(layout.isp_path(run, seed))[0]
        outs[label] = list(isp_outputs(net, test, device=device, tile=p.evaluate.tile, overlap=p.evaluate.overlap))
    return [make_example(f"{stem} ({point.label}, CAS {variant})", gt, pred_ag, aware[1], point=point,
                         settings=p.codec_settings(point.codec), crop=128)
            for (stem, pred_ag, gt), aware in zip(outs["agnostic"], outs["aware"])]


def _rd_curves(p: Params, regime: str, point: Point):
    """Figure 5's curves at `point`: mean (BPP, PSNR(c(f(x)), y)) over photos and seeds per model, over
    the sweep of its codec, for the controls and the frozen aware ISPs trained at `point`."""
    import pandas as pd

    from caisp.stats import rd_points

    frames = [read_rows(layout.controls_eval(regime) / "per_image.csv")]
    for v in p.variants(point):
        df = read_rows(layout.eval_dir(Run("aware", point, v, regime)) / "per_image.csv")
        frames.append(df.assign(model=f"aware ({v})"))
    return rd_points(at_codec(pd.concat(frames, ignore_index=True), point.codec))


def _setup_text(p: Params, regime: str) -> str:
    split = layout.split()
    src = split.get("sources", {})
    return (f"Data: {len(split['train'])} training, {len(split['val'])} validation and {len(split['test'])} test "
            f"images from {len(src.get('train', []))}/{len(src.get('val', []))}/{len(src.get('test', []))} "
            f"source photos; test photos: {', '.join(src.get('test', split['test']))}. Fine-tuning seeds: "
            f"{', '.join(map(str, p.seeds))}; headline regime `{regime}`: ISP input "
            f"{p.regime(regime).model.input_norm}, tone prior {p.regime(regime).model.tone_prior}, "
            f"{p.regime(regime).isp.steps} pretraining steps; "
            f"source: {p.data.source}.")


HEADLINE_START, HEADLINE_END = "<!-- headline:start (written by dvc repro) -->", "<!-- headline:end -->"


def _update_readme_headline(text: str, readme: Path = Path("README.md")) -> None:
    """The README's measured headline comes from this run, between its markers (never typed in)."""
    if not readme.is_file():
        return
    body = readme.read_text()
    if HEADLINE_START not in body or HEADLINE_END not in body:
        return
    head, rest = body.split(HEADLINE_START, 1)
    _, tail = rest.split(HEADLINE_END, 1)
    new = f"{head}{HEADLINE_START}\n{text}\n{HEADLINE_END}{tail}"
    if new != body:
        io.write_text(readme, new)


def _curves(regime: str, point: Point, variant: str) -> dict:
    """Validation PSNR curves: `regime`'s pretrained ISP (seed 0), JPEG's simulators, and seed 0 of its
    aware ISP of (point, variant) (Figure 5's)."""
    import pandas as pd

    curves = {}
    root = layout.REPORTS / "train"
    for tsv in sorted(root.glob("**/plots/metrics/val/psnr.tsv")):
        parts = tsv.parents[3].relative_to(root).parts
        if len(parts) == 1:  # a CAS run: reports/train/<run>
            run, seed = layout.parse_run_name(parts[0]), None
        elif len(parts) == 3 and parts[0] == regime:  # an ISP run: reports/train/<regime>/<run>/seed<s>
            run, seed = layout.parse_run_name(parts[1]), parts[2]
        else:
            continue
        if ((run.kind == layout.CAS and run.point.codec == JPEG.name)
                or (seed == "seed0" and (run.kind == layout.PRETRAINED or (
                    run.kind in layout.AWARE_KINDS and (run.point, run.variant) == (point, variant))))):
            curves[f"{tsv.parents[3].relative_to(root).as_posix()}: val PSNR"] = (
                pd.read_csv(tsv, sep="\t").rename(columns={"psnr": "value"}))
    return curves


def _cas_curves(p: Params, cas_tables: dict) -> tuple[dict, dict]:
    """JPEG's learned simulators' validation curves {qf: {variant: (step, psnr)}} and, on the same
    photos, the values of the identity, the blur and the analytic simulators {qf: {name: dB}}."""
    import pandas as pd

    curves: dict = {}
    refs: dict = {}
    for pt in (q for q in p.points if q.codec == JPEG.name):
        for v in p.variants(pt) + p.baselines(pt):
            s = cas_tables.get(layout.cas_report_dir(pt, v).name) or {}
            gate = s.get("gate") or {}
            tsv = layout.train_log(layout.Run(layout.CAS, pt, v)) / "plots" / "metrics" / "val" / "psnr.tsv"
            if tsv.is_file():
                curves.setdefault(pt.quality, {})[v] = pd.read_csv(tsv, sep="\t")
            elif "val_psnr" in gate and v != "blur":
                refs.setdefault(pt.quality, {})[v] = gate["val_psnr"]
            if "val_identity" in gate:
                refs.setdefault(pt.quality, {}).update(identity=gate["val_identity"], blur=gate["val_blur"])
    return curves, refs


HERE = "this dvc repro"


def _measured(p: Params, records: list[dict] | None = None) -> list[dict]:
    """Every regime measured: this graph's fine-tuned regimes (only this run's configurations: an
    earlier experiment's folders stay on disk when their stages leave dvc.yaml's matrices) and those of
    the committed experiments (caisp.experiments), as `caisp.report._measured_rows` entries."""
    from caisp.experiments import load_records

    entries = []
    for regime in p.aware_regimes:
        names = {r.name for r in layout.aware_runs(p, regime)}
        summaries = {k: v for k, v in _read_summaries(layout.REPORTS / "eval" / regime).items() if k in names}
        pre = layout.pretrain_report(regime)
        entries.append({"source": HERE, "regime": regime, "lambda_isp": p.lambda_isp,
                        "lambda_comp": p.lambda_comp, "summaries": summaries,
                        "pretrain": json.loads(pre.read_text()) if pre.is_file() else {}})
    seen = {(e["regime"], e["lambda_isp"], e["lambda_comp"], run) for e in entries for run in e["summaries"]}
    for rec in load_records() if records is None else records:
        for regime, summaries in rec["summaries"].items():
            key = (regime, float(rec["lambda_isp"]), float(rec["lambda_comp"]))
            # a configuration this graph (or an earlier record) measured itself wins over a copy
            new = {run: s for run, s in summaries.items() if (*key, run) not in seen}
            seen |= {(*key, run) for run in new}
            if new:
                entries.append({"source": rec["name"], "regime": regime, "lambda_isp": key[1],
                                "lambda_comp": key[2], "summaries": new,
                                "pretrain": rec["pretrain"].get(regime, {})})
    return entries


def _rate_axis(p: Params, records: list[dict]) -> tuple[dict, list[tuple[str, dict, str]]]:
    """(estimate fits {point: fit}, [(regime, its rate-axis summaries {run: summary}, who measured them)])
    for every regime of the operating axis that has rate runs: this graph's where it has some
    (`rate.lambdas`), else the first committed experiment's."""
    fits = {f.stem: json.loads(f.read_text()) for pt in p.points if (f := layout.rate_report(pt)).is_file()}
    axes = []
    for regime in p.regimes:
        # this graph's runs only (an earlier experiment's folders stay on disk), matched by value: the
        # folder names spell each lambda as DVC does
        here = {k: v for k, v in _read_summaries(layout.REPORTS / "eval" / regime).items()
                if k.startswith(layout.RATE + "-") and v.get("lambda_rate") in p.rate.lambdas
                and v.get("qf") in p.qfs} if regime in p.aware_regimes else {}
        if here:
            axes.append((regime, here, HERE))
            continue
        for rec in records:
            found = {k: v for k, v in rec["summaries"].get(regime, {}).items() if k.startswith(layout.RATE + "-")}
            if found:
                axes.append((regime, found, f"the committed experiment `{rec['name']}`"))
                break
    return fits, axes


def headline_regime(p: Params) -> str:
    """The regime the headline and the paper's tables are about: the paper's, where this graph runs it."""
    return "paper" if "paper" in p.aware_regimes else p.aware_regimes[0]


def run_report(p: Params) -> Path:
    """reports/report.md: the operating-point axis, then the paper's Tables 1-3 and Figures 4-5 at
    the headline regime, with every control, seeds and intervals, a section per other codec and the
    cross-codec table; the README's headline block."""
    from caisp.experiments import load_records, simulators
    from caisp.report import (_measured_rows, at_lambdas, axis_headline, headline, rate_headline, same_lambdas,
                              write_report)

    regime = headline_regime(p)
    point = Point(JPEG.name, max(p.qfs))  # the paper's Figure 5 shows the ISPs trained at QF 90
    variant = "unet" if "unet" in p.cas.variants else p.cas.variants[0]
    rd = _rd_curves(p, regime, point)
    io.write_text(layout.REPORTS / "rd_curves.csv", rd.to_csv(index=False))
    codec_rd = {}
    for codec in dict.fromkeys(pt.codec for pt in p.points if pt.codec != JPEG.name):
        top = max(q.quality for q in p.points if q.codec == codec)  # its highest training quality
        codec_rd[codec] = _rd_curves(p, regime, Point(codec, top))
    records = load_records()  # read once: the axis, Table 3 and Table 1's borrowed rows
    entries = _measured(p, records)
    measured = _measured_rows(entries)
    # The headline regime's configurations at this graph's λ: its own, then those only a committed
    # experiment ran (e.g. Table 2's ACN and unfrozen rows), named in the setup line.
    summaries, borrowed = {}, {}
    lambdas = (p.lambda_isp, p.lambda_comp)
    for e in entries:
        if e["regime"] == regime and same_lambdas((e["lambda_isp"], e["lambda_comp"]), lambdas):
            summaries.update(e["summaries"])
            if e["source"] != HERE:
                borrowed.update({run: e["source"] for run in e["summaries"]})
    ran = set(simulators(p))  # stale folders of another graph's simulators stay on disk
    cas_tables = {k: v for k, v in _read_summaries(layout.REPORTS / "cas").items() if k in ran}
    # Table 1's simulators this graph does not run (e.g. ACN, trained in the Table 2 experiment), at its
    # points; a record at this graph's λ first (a simulator's training does not depend on λ, but that
    # record's fine-tuned rows are the ones beside it in Table 2)
    names = {layout.cas_report_dir(pt, v).name for pt in p.points for v in SIMULATORS}
    for rec in sorted(records, key=lambda r: not same_lambdas((r["lambda_isp"], r["lambda_comp"]), lambdas)):
        for name, table in rec.get("cas", {}).items():
            if name in names and name not in cas_tables:
                cas_tables[name] = table
                borrowed[f"Table 1 {name}"] = rec["name"]
    head = (axis_headline(at_lambdas(measured, lambdas), regime)
            + "\n\nPer configuration of regime `" + regime + "`:\n\n" + headline(summaries, cas_tables=cas_tables))
    rate = _rate_axis(p, records)
    if rate[1]:
        head += "\n\n" + rate_headline(rate[1])
    setup = _setup_text(p, regime)
    if borrowed:
        setup += (" Configurations measured by committed experiments (reports/experiments), same regime and λ: "
                  + ", ".join(f"{run} ({src})" for run, src in sorted(borrowed.items())) + ".")
    path = write_report(layout.REPORTS, cas_tables=cas_tables, isp_summaries=summaries, headline_text=head,
                        measured=measured, regime=regime, default_lambdas=lambdas,
                        n_sources=sum(len(v) for v in layout.split().get("sources", {}).values()) or None,
                        rd=rd, curves=_curves(regime, point, variant),
                        examples=_figure4_examples(p, regime, point, variant), setup=setup, codec_rd=codec_rd,
                        cas_curves=_cas_curves(p, cas_tables), rate=rate)
    _update_readme_headline(head + "\n\n" + setup)
    return path

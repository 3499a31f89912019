"""`caisp` console entry point: `caisp develop` (raw -> JPEG with a trained ISP-Net) and
`caisp params` (validate params.yaml), `caisp record` (keep a `dvc exp run`'s results in git, for the
report's operating-point axis and Table 3)."""
from __future__ import annotations

import argparse
import sys

from caisp import CaispError, __version__


def _params(args: argparse.Namespace) -> int:
    from caisp.params import load_params, to_dict
    import yaml

    p = load_params(args.path)
    print(yaml.safe_dump(to_dict(p), sort_keys=False) if args.show else f"{args.path}: valid")
    return 0


def _record(args: argparse.Namespace) -> int:
    from caisp.experiments import record

    out = record(args.name, args.command_line)
    print(f"recorded the experiment's results in {out}; commit it, restore the default "
          "(git checkout params.yaml dvc.lock && dvc checkout), then `dvc repro report` reads it")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from caisp.develop import add_develop_parser

    ap = argparse.ArgumentParser(prog="caisp", description=__doc__)
    ap.add_argument("--version", action="version", version=f"caisp {__version__}")
    sub = ap.add_subparsers(dest="command", required=True)
    add_develop_parser(sub)
    pp = sub.add_parser("params", help="validate params.yaml (and print it with --show)")
    pp.add_argument("path", nargs="?", default="params.yaml")
    pp.add_argument("--show", action="store_true", help="print every parameter with its value")
    pp.set_defaults(func=_params)
    rec = sub.add_parser("record", help="after `dvc exp run`, copy its evaluation summaries, params and "
                         "report into reports/experiments/NAME (committed; the report reads them)")
    rec.add_argument("name", help="the record's folder name, e.g. regime-today or lambda-1-1")
    rec.add_argument("--command", dest="command_line", required=True,
                     help="the dvc exp run command that produced it (kept as provenance)")
    rec.set_defaults(func=_record)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except CaispError as e:
        print(f"caisp: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C: outputs are written atomically, so nothing half-written remains
        print(f"caisp {args.command}: interrupted; files already written are complete, none is half-written",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

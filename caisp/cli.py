"""`caisp` console entry point: `caisp develop` (raw -> JPEG with a trained ISP-Net) and
`caisp params` (validate params.yaml), `caisp ablation` (Table 3 from DVC experiments)."""
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


def _ablation(args: argparse.Namespace) -> int:
    from caisp.ablation import write_ablation

    df = write_ablation()
    print(df.to_string(index=False) if len(df) else "no experiment has evaluation metrics yet")
    print("wrote reports/ablation.csv; `dvc repro report` puts it into reports/report.md")
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
    ab = sub.add_parser("ablation", help="collect the lambda ablation (Table 3) from `dvc exp show` "
                        "into reports/ablation.csv")
    ab.set_defaults(func=_ablation)
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

"""The shared command line of every stage: read and validate params.yaml, call caisp, report errors
as one line naming the file or key (no traceback for a user's mistake)."""
from __future__ import annotations

import argparse
import sys
import time
from typing import Callable

from caisp import CaispError
from caisp.params import load_params


def main(fn: Callable, *, matrix: tuple[str, ...] = ()) -> None:
    ap = argparse.ArgumentParser(description=fn.__doc__)
    ap.add_argument("--params", default="params.yaml")
    if "qf" in matrix:
        ap.add_argument("--qf", type=int, required=True)
    if "variant" in matrix:
        ap.add_argument("--variant", required=True)
    if "frozen" in matrix:
        ap.add_argument("--unfrozen", action="store_true", help="update the CAS during fine-tuning")
    args = ap.parse_args()
    kwargs = {k: getattr(args, k) for k in ("qf", "variant") if k in matrix}
    if "frozen" in matrix:
        kwargs["frozen"] = not args.unfrozen
    t0 = time.time()
    try:
        params = load_params(args.params)
        fn(params, **kwargs)
    except CaispError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    print(f"{fn.__name__} {kwargs or ''} done in {time.time() - t0:.1f} s", file=sys.stderr)

"""The shared command line of every stage: read and validate params.yaml, call caisp, report errors
as one line naming the file or key (no traceback for a user's mistake)."""
from __future__ import annotations

import argparse
import sys
import time
from typing import Callable

from caisp import CaispError
from caisp.params import load_params


def main(fn: Callable, *, matrix: tuple[str, ...] = (), alternate: Callable | None = None) -> None:
    ap = argparse.ArgumentParser(description=fn.__doc__)
    ap.add_argument("--params", default="params.yaml")
    # A stage that can also run a control needs --qf/--variant only for its aware runs.
    needed = not ({"control", "controls"} & set(matrix))
    if "qf" in matrix:  # the operating point: --qf N (JPEG, the paper's) or --point <codec>-<quality>
        where = ap.add_mutually_exclusive_group(required=needed)
        where.add_argument("--qf", type=int, help="JPEG quality factor")
        where.add_argument("--point", help="another codec's operating point, e.g. webp-80")
    if "variant" in matrix:
        ap.add_argument("--variant", required=needed)
    if "frozen" in matrix:
        ap.add_argument("--unfrozen", action="store_true", help="update the CAS during fine-tuning")
    if "control" in matrix:
        ap.add_argument("--control", default=None, help="fine-tune a control instead (agnostic | identity)")
    if "controls" in matrix:
        ap.add_argument("--controls", action="store_true", help="evaluate the controls instead")
    args = ap.parse_args()
    kwargs = {k: getattr(args, k) for k in ("variant",) if k in matrix}
    if "qf" in matrix:
        kwargs["point"] = args.qf if args.point is None else args.point
    if "frozen" in matrix:
        kwargs["frozen"] = not args.unfrozen
    if getattr(args, "control", None):
        kwargs = {"control": args.control}
    if getattr(args, "controls", False):
        fn, kwargs = alternate, {}
    t0 = time.time()
    try:
        params = load_params(args.params)
        if {"point", "variant"} & set(kwargs) and None in (kwargs.get("point", 0), kwargs.get("variant", "")):
            raise CaispError("give --qf (or --point) and --variant (or --control / --controls)")
        if isinstance(kwargs.get("point"), str):
            from caisp.data.codec import Point

            kwargs["point"] = Point.parse(kwargs["point"], key="--point")
        fn(params, **kwargs)
    except CaispError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    print(f"{fn.__name__} {kwargs or ''} done in {time.time() - t0:.1f} s", file=sys.stderr)

"""The shared command line of every stage: read and validate params.yaml, call the stage's function,
report errors as one line naming the file or key (no traceback for a user's mistake).

Each stage says which matrix arguments it takes: `point` (an operating point by name: qf80, webp-80),
`variant` (a CAS variant), `unfrozen` (update g while fine-tuning), `control` (a control's name),
`regime` (an ISP regime of the operating-point axis, a key of `regimes`), `lambda_rate` (a value of
`rate.lambdas`).
"""
from __future__ import annotations

import argparse
import sys
import time
from typing import Callable

from caisp import CaispError
from caisp.params import load_params

_ARGS = {
    "point": dict(required=True, help="operating point: qf80 (JPEG at QF 80, the paper's codec) or "
                                      "<codec>-<quality>, e.g. webp-80"),
    "variant": dict(required=True, help="CAS variant (unet, acn, djs, kornia)"),
    "control": dict(required=True, help="the control to fine-tune: agnostic | identity"),
    "regime": dict(required=True, help="ISP regime (a key of params.yaml's regimes, e.g. paper, today)"),
    "lambda_rate": dict(required=True, help="the rate term's weight, one of rate.lambdas as DVC spells it"),
}


def main(fn: Callable, *, args: tuple[str, ...] = ()) -> None:
    ap = argparse.ArgumentParser(description=fn.__doc__)
    ap.add_argument("--params", default="params.yaml")
    for name in args:
        if name == "unfrozen":
            ap.add_argument("--unfrozen", action="store_true", help="update the CAS during fine-tuning")
        else:
            ap.add_argument(f"--{name.replace('_', '-')}", dest=name, **_ARGS[name])
    ns = ap.parse_args()
    t0 = time.time()
    kwargs: dict = {}
    try:
        params = load_params(ns.params)
        for name in args:
            if name == "point":
                from caisp.codecs import Point

                kwargs["point"] = Point.parse(ns.point, key="--point")
            elif name == "unfrozen":
                kwargs["frozen"] = not ns.unfrozen
            elif name == "regime":
                params.regime(ns.regime)  # one line naming the regimes if it is not one
                kwargs["regime"] = ns.regime
            else:
                kwargs[name] = getattr(ns, name)
        fn(params, **kwargs)
    except CaispError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    print(f"{fn.__name__} {kwargs or ''} done in {time.time() - t0:.1f} s", file=sys.stderr)

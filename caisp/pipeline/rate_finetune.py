"""Stage `finetune_rate` (issue 22): the pretrained ISP fine-tuned with lambda_isp * L_isp +
lambda_rate * R(f(x)) / pixels, like the agnostic control (lambda_comp = 0: the same pretrained start,
seeds, crops and steps), so that it differs from that control in R alone."""
from __future__ import annotations

from caisp.codecs import Point
from caisp.params import Params
from caisp.pipeline import layout
from caisp.pipeline.layout import Run


def run_finetune_rate(p: Params, regime: str, point: Point, lambda_rate: str) -> dict:
    """Fine-tune the pretrained ISP of `regime` once per seed with lambda_isp * L_isp + lambda_rate * R/pixels."""
    from caisp import rate as r
    from caisp.pipeline.isp import finetune, no_cas

    r.check_jpeg(point)
    lam = r.lambda_of(p.rate.lambdas, lambda_rate)
    rate = r.load(layout.rate_model(point))
    return finetune(p, Run(layout.RATE, point, lambda_rate, regime), "none", 0.0, True, no_cas,
                    rate=rate, lambda_rate=lam)

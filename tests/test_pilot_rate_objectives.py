"""scripts/pilot_rate_objectives.py: its "after" objective is the distortion after the simulator, with
no term on f(x) itself, plus the rate term; and its gradient reaches the ISP through the simulator."""
from __future__ import annotations

import torch
from torch import nn

from caisp.losses import l1
from caisp.models.djs import DJS
from caisp.rate import FEATURES, JPEGRate
from conftest import load_script


def _pilot():
    return load_script("pilot_rate_objectives")


def test_after_objective_is_the_distortion_after_the_simulator_plus_the_rate():
    pilot = _pilot()
    torch.manual_seed(0)
    isp = nn.Conv2d(3, 3, 3, padding=1)
    batch = {"raw": torch.rand(2, 3, 32, 32), "srgb": torch.rand(2, 3, 32, 32)}
    g, rate = DJS(qf=80), JPEGRate(80, weights=[1.0] * len(FEATURES))
    task = pilot.DistortionAfterTask(isp, g, lambda_isp=0.0, lambda_comp=0.1, rate=rate, lambda_rate=0.003)
    loss, logs = task(batch)
    out = isp(batch["raw"])
    after = l1(g(out), batch["srgb"])
    assert torch.allclose(logs["l_after"], after)
    assert torch.allclose(loss, 0.1 * after + 0.003 * rate.bpp(out.clamp(0, 1)).mean())
    assert "l_isp" not in logs  # nothing compares f(x) itself with y
    loss.backward()
    assert isp.weight.grad is not None and float(isp.weight.grad.abs().sum()) > 0
    # without R: the distortion after the simulator alone
    loss0, logs0 = pilot.DistortionAfterTask(isp, g, lambda_isp=0.0, lambda_comp=0.1)(batch)
    assert "l_rate" not in logs0 and torch.allclose(loss0, 0.1 * logs0["l_after"])

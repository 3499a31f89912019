"""The paper's objectives (Sec. III-B) as training tasks for `caisp.train.fit`.

A task is an `nn.Module` holding the networks of one training phase:

- `forward(batch) -> (loss, logs)`: the scalar to minimise and its separate terms (detached 0-d
  tensors, so that the loop syncs with the device once per step, not once per term);
- `predict(batch, tile) -> (pred, target)`: what validation PSNR compares (tiled above `tile`);
- `net`: the network being trained, i.e. what the stage saves with `caisp.checkpoint.save_model`.

Batches are the dicts of `caisp.data.dataset.RawRGBDataset`: `raw` x (bilinear-demosaiced Bayer),
`srgb` y, `coded` c(y) (the real codec's output, decoded), all (B, 3, H, W) in [0, 1].
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from caisp import CaispError

Batch = dict[str, object]
Logs = dict[str, Tensor]


def l1(pred: Tensor, target: Tensor) -> Tensor:
    """Mean absolute error in float32: under bf16 autocast the network outputs are bf16, whose
    8-bit mantissa would swallow the small differences a well-trained network leaves."""
    return F.l1_loss(pred.float(), target.float())


def _get(batch: Batch, key: str, task: str) -> Tensor:
    if key not in batch:
        hint = " (give the dataset a coded_dir)" if key == "coded" else ""
        raise CaispError(f"{task} needs batch key {key!r}, the batch has {sorted(batch)}{hint}")
    return batch[key]  # type: ignore[return-value]


class Task(nn.Module):
    """Base class: subclasses set `self.net`, the batch keys `src` (the net's input) and `dst` (what
    validation compares its output with), and implement `forward`. Those two are all a task reads
    (`batch_keys`), so the pipeline's datasets load nothing else."""

    net: nn.Module
    src = dst = ""

    @classmethod
    def batch_keys(cls) -> tuple[str, str]:
        return cls.src, cls.dst

    def forward(self, batch: Batch) -> tuple[Tensor, Logs]:  # pragma: no cover - interface
        raise NotImplementedError

    def predict(self, batch: Batch, tile: int | None = None, overlap: int = 64) -> tuple[Tensor, Tensor]:
        """(net(batch[src]), batch[dst]). Images larger than `tile` run tile by tile (caisp.tiling,
        with whole-image attention statistics), so that validating 12 MP images takes bounded memory."""
        name = type(self).__name__
        x = _get(batch, self.src, name)
        if tile is not None and max(x.shape[-2:]) > tile:
            from caisp.tiling import run_tiled

            pred = torch.cat([run_tiled(self.net, x[i : i + 1], tile, overlap, model=self.net)
                              for i in range(x.shape[0])])
        else:
            pred = self.net(x)
        return pred, _get(batch, self.dst, name)


class _L1Task(Task):
    """|net(batch[src]) - batch[dst]|_1, logged under `term`."""

    src = dst = term = ""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, batch: Batch) -> tuple[Tensor, Logs]:
        loss = l1(*self.predict(batch))
        return loss, {self.term: loss.detach()}


class CasTask(_L1Task):
    """CAS-Net pretraining, Eq. (1): L_cas = |g(y) - c(y)|_1, c the real (Pillow) JPEG."""

    src, dst, term = "srgb", "coded", "l_cas"


class IspTask(_L1Task):
    """Compression-agnostic ISP-Net training, Eq. (2): L_isp = |f(x) - y|_1."""

    src, dst, term = "raw", "srgb", "l_isp"


class CompressionAwareTask(Task):
    """Compression-aware fine-tuning, Eqs. (3)-(4):
    L_total = lambda_isp * |f(x) - y|_1 + lambda_comp * |g(f(x)) - g(y)|_1.

    With `freeze_cas` (the paper's method) g's parameters never change: they do not require grad,
    and g stays in eval mode whatever mode the task is put in, so batch-norm statistics and dropout
    are those of the pretrained simulator. `freeze_cas=False` is the Table 2 ablation in which g is
    updated together with f. `lambda_comp == 0` is the agnostic fine-tuning control: g is never
    run, so the loss, gradients and updates are exactly those of lambda_isp * L_isp.

    `rate` (a fitted `caisp.rate.JPEGRate`) with `lambda_rate > 0` adds the rate term of issue 22,
    lambda_rate * R(f(x)) / pixels: the estimated bits per pixel of f(x)'s JPEG, the batch's mean.
    """

    src, dst = "raw", "srgb"

    _name = "CompressionAwareTask"

    def __init__(self, isp: nn.Module, cas: nn.Module | None, lambda_isp: float = 0.1,
                 lambda_comp: float = 1.0, freeze_cas: bool = True, rate: nn.Module | None = None,
                 lambda_rate: float = 0.0) -> None:
        super().__init__()
        if lambda_isp < 0 or lambda_comp < 0 or lambda_rate < 0:
            raise CaispError(f"loss weights must be >= 0, got lambda_isp={lambda_isp}, "
                             f"lambda_comp={lambda_comp}, lambda_rate={lambda_rate}")
        if rate is None and lambda_rate != 0:
            raise CaispError("the rate term needs a size estimate: rate is None but lambda_rate != 0")
        # A parameter-free estimate with buffers only: it moves with the task, nothing of it trains.
        self.rate = rate.requires_grad_(False) if rate is not None and lambda_rate != 0 else None
        self.lambda_rate = float(lambda_rate)
        if cas is None and lambda_comp != 0:
            raise CaispError("L_comp needs a compression simulator: cas is None but lambda_comp != 0")
        # The agnostic control (lambda_comp = 0) needs no simulator at all.
        cas = cas if cas is not None else nn.Identity()
        self.net = isp
        self.cas = cas
        self.lambda_isp = float(lambda_isp)
        self.lambda_comp = float(lambda_comp)
        # An unused CAS must not be "trainable": it would get no gradient (DDP with
        # find_unused_parameters=False refuses that) and the control would no longer be exact.
        self.freeze_cas = bool(freeze_cas) or self.lambda_comp == 0
        if self.freeze_cas:
            cas.requires_grad_(False)  # a no-op for parameter-free simulators (DJS, kornia)
            cas.eval()

    def train(self, mode: bool = True) -> "CompressionAwareTask":
        super().train(mode)
        if self.freeze_cas:
            self.cas.eval()  # a frozen simulator is used as pretrained, never in training mode
        return self

    def forward(self, batch: Batch) -> tuple[Tensor, Logs]:
        x, y = _get(batch, "raw", self._name), _get(batch, "srgb", self._name)
        out = self.net(x)
        l_isp = l1(out, y)
        logs: Logs = {"l_isp": l_isp.detach()}
        loss = self.lambda_isp * l_isp
        if self.rate is not None:
            l_rate = self.rate.bpp(out.clamp(0, 1)).mean()  # the encoder sees the 8-bit, clipped picture
            logs["l_rate"] = l_rate.detach()
            loss = loss + self.lambda_rate * l_rate
        if self.lambda_comp == 0:
            return loss, logs
        # g(y) is a target: with a frozen g it carries no gradient, so skip building its graph.
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze_cas):
            g_y = self.cas(y)
        l_comp = l1(self.cas(out), g_y)
        logs["l_comp"] = l_comp.detach()
        return loss + self.lambda_comp * l_comp, logs

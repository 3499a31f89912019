"""Training tasks, the training loop (resume, DDP, dvclive) and model checkpoints, on tiny
stand-in networks and synthetic tensors (no dependency on the real models or data)."""
from __future__ import annotations

import copy
import json
import math
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import Dataset

from caisp import CaispError
from caisp.checkpoint import load_checkpoint, load_model, save_model
from caisp.losses import CasTask, CompressionAwareTask, IspTask
from caisp.train import TrainConfig, fit, resolve_device

ROOT = Path(__file__).resolve().parents[1]

# A fixed colour transform: the "ISP" the stand-in networks can learn exactly with a 1x1 conv.
COLOR = torch.tensor([[0.8, 0.1, 0.1], [0.2, 0.6, 0.2], [0.05, 0.15, 0.8]])


class SynthSet(Dataset):
    """Dict samples like RawRGBDataset's: raw (3,8,8), srgb = COLOR @ raw, jpeg = a coarser srgb.
    With `augment`, a random flip drawn from the global torch RNG (as a dataset's crops would be)."""

    def __init__(self, n: int, seed: int = 0, augment: bool = False) -> None:
        g = torch.Generator().manual_seed(seed)
        self.raw = torch.rand(n, 3, 8, 8, generator=g)
        self.augment = augment

    def __len__(self) -> int:
        return len(self.raw)

    def __getitem__(self, i: int) -> dict:
        raw = self.raw[i]
        if self.augment and torch.rand(()) < 0.5:
            raw = raw.flip(-1)
        srgb = torch.einsum("ij,jhw->ihw", COLOR, raw)
        return {"raw": raw, "srgb": srgb, "coded": (srgb * 8).round() / 8, "stem": f"img{i}"}


class Pix(nn.Module):
    """A 1x1-conv "ISP", optionally with dropout so that training consumes the global RNG."""

    def __init__(self, dropout: float = 0.0) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 1)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.drop(x))


class NormCas(nn.Module):
    """A CAS with batch norm and dropout: in training mode it would change its running statistics
    and give random outputs, so unchanged buffers prove it stayed in eval mode."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.bn = nn.BatchNorm2d(3)
        self.drop = nn.Dropout(0.5)
        self.modes: list[bool] = []  # self.training at each call

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.modes.append(self.training)
        return self.drop(self.bn(self.conv(x)))


class RoundCas(nn.Module):
    """A parameter-free differentiable "JPEG" (straight-through rounding), like DJS/kornia."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = x * 16
        return (q + (q.round() - q).detach()) / 16


class RecordingIsp(IspTask):
    """IspTask that records the sample indices of every training batch it is given."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__(net)
        self.seen: list[list[int]] = []

    def forward(self, batch: dict) -> tuple[torch.Tensor, dict]:
        self.seen.append([int(stem[3:]) for stem in batch["stem"]])
        return super().forward(batch)


class ExplodingCas(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise AssertionError("the CAS must not run when lambda_comp == 0")


def cfg(tmp_path: Path | None = None, **kw) -> TrainConfig:
    base = dict(steps=4, batch_size=2, lr=1e-2, device="cpu", progress=False, ckpt_every=100)
    base.update(kw)
    return TrainConfig(**base)


def snapshot(m: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in m.state_dict().items()}


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ----------------------------------------------------------------------------- losses + loop

def test_loss_decreases_and_dvclive_logs(tmp_path: Path) -> None:
    torch.manual_seed(0)
    task = IspTask(Pix())
    losses: list[float] = []
    live = tmp_path / "live"
    # 16 samples / batch 4 = 4 steps per epoch: validation at steps 4, 8, ..., 40 -> 10 points.
    res = fit(task, SynthSet(16), SynthSet(4, seed=1),
              cfg(steps=40, batch_size=4, lr=0.05, log_dir=live),
              on_step=lambda s, logs: losses.append(logs["loss"]))
    assert res["step"] == 40 and res["start_step"] == 0
    assert sum(losses[-5:]) < 0.3 * sum(losses[:5])
    assert res["val_psnr"] > 15  # about 10 dB after the first epoch
    summary = json.loads((live / "metrics.json").read_text())
    assert summary["step"] == 40 and summary["val"]["psnr"] == pytest.approx(res["val_psnr"])
    rows = (live / "plots" / "metrics" / "val" / "psnr.tsv").read_text().splitlines()
    assert [int(r.split("\t")[0]) for r in rows[1:]] == list(range(4, 41, 4))
    for name in ("train/loss.tsv", "train/l_isp.tsv", "lr.tsv"):
        assert (live / "plots" / "metrics" / name).is_file()
    assert not (live / "dvc.yaml").exists()


def test_progress_in_a_log_is_one_plain_line_every_10s(monkeypatch, capsys) -> None:
    """stderr not a terminal (DVC, CI): no carriage-return bar, a line every 10 s and at the end."""
    import caisp.progress
    from test_progress import FakeClock

    monkeypatch.setattr(caisp.progress, "time", FakeClock(3.0))  # one call per step: 3 s a step
    torch.manual_seed(0)
    fit(IspTask(Pix()), SynthSet(8), None, cfg(steps=10, batch_size=2, progress=True))
    err = capsys.readouterr().err
    assert "\r" not in err
    lines = err.strip().splitlines()
    assert [line.split(",")[0] for line in lines] == [
        "train: step 4/10", "train: step 8/10", "train: step 10/10"]
    for line in lines:
        assert re.fullmatch(r"train: step \d+/10, loss [0-9.e+-]+, [0-9.]+ images/s", line), line
    assert lines[0].endswith(", 0.7 images/s")  # 2 images per 3 s


def test_progress_on_a_terminal_is_the_tqdm_bar(monkeypatch, capsys) -> None:
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    fit(IspTask(Pix()), SynthSet(8), None, cfg(steps=3, batch_size=2, progress=True))
    err = capsys.readouterr().err
    assert "\r" in err and "3/3" in err and "train: step" not in err


def test_cas_task_targets_the_jpeg() -> None:
    torch.manual_seed(0)
    task = CasTask(Pix())
    batch = {k: torch.stack([SynthSet(2)[i][k] for i in range(2)]) for k in ("raw", "srgb", "coded")}
    loss, logs = task(batch)
    assert set(logs) == {"l_cas"} and loss.requires_grad
    pred, target = task.predict(batch)
    assert torch.equal(target, batch["coded"]) and pred.shape == target.shape
    with pytest.raises(CaispError, match="coded"):
        task({"srgb": batch["srgb"]})


def test_frozen_cas_never_changes_while_isp_trains() -> None:
    torch.manual_seed(0)
    isp, cas = Pix(), NormCas()
    task = CompressionAwareTask(isp, cas, lambda_isp=0.1, lambda_comp=1.0)
    cas_before, isp_before = snapshot(cas), snapshot(isp)
    assert all(not p.requires_grad for p in cas.parameters())
    task.train()
    assert task.training and isp.training and not cas.training
    res = fit(task, SynthSet(8), SynthSet(2), cfg(steps=4))
    assert same(snapshot(cas), cas_before)  # weights and BN running statistics, bit for bit
    assert not same(snapshot(isp), isp_before)
    assert cas.modes and not any(cas.modes)  # every call, training steps included, in eval mode
    assert all(not p.requires_grad for p in cas.parameters())
    assert math.isfinite(res["val_psnr"])
    loss, logs = task({k: v[None] for k, v in SynthSet(1)[0].items() if k != "stem"})
    assert set(logs) == {"l_isp", "l_comp"}
    assert loss.item() == pytest.approx(0.1 * logs["l_isp"].item() + logs["l_comp"].item(), rel=1e-6)


def test_unfrozen_cas_is_trained_too() -> None:
    torch.manual_seed(0)
    isp, cas = Pix(), NormCas()
    task = CompressionAwareTask(isp, cas, lambda_isp=0.1, lambda_comp=1.0, freeze_cas=False)
    conv_before = cas.conv.weight.detach().clone()
    task.train()
    assert cas.training
    fit(task, SynthSet(8), None, cfg(steps=3))
    assert not torch.equal(cas.conv.weight, conv_before)


def test_parameter_free_cas_can_be_frozen() -> None:
    torch.manual_seed(0)
    isp = Pix()
    before = snapshot(isp)
    task = CompressionAwareTask(isp, RoundCas(), lambda_isp=0.1, lambda_comp=1.0, freeze_cas=True)
    res = fit(task, SynthSet(8), SynthSet(2), cfg(steps=3))
    assert res["step"] == 3 and not same(snapshot(isp), before)


def test_lambda_comp_zero_is_the_agnostic_control() -> None:
    torch.manual_seed(0)
    a = Pix()
    b = copy.deepcopy(a)
    logged: list[dict] = []
    control = CompressionAwareTask(a, ExplodingCas(), lambda_isp=1.0, lambda_comp=0.0, freeze_cas=False)
    fit(control, SynthSet(8), SynthSet(2), cfg(steps=4), on_step=lambda s, logs: logged.append(logs))
    fit(IspTask(b), SynthSet(8), SynthSet(2), cfg(steps=4))
    assert same(snapshot(a), snapshot(b))  # the CAS never ran, and the updates are L_isp's
    assert set(logged[0]) == {"loss", "l_isp"}


class Interrupt(Exception):
    pass


def _resume_run(tmp_path: Path, stop_at: int | None) -> tuple[Pix, list[int], dict]:
    torch.manual_seed(0)
    net = Pix(dropout=0.2)  # dropout + augmentation: the resumed run must restore the RNG
    seen: list[int] = []

    def on_step(step: int, logs: dict) -> None:
        seen.append(step)
        if step == stop_at:
            raise Interrupt

    # 10 samples / batch 2 = 5 steps per epoch: the interruption at 6 is part-way into epoch 2.
    c = cfg(steps=10, ckpt_every=3, state_path=tmp_path / "state.pt", log_dir=tmp_path / "live")
    data = SynthSet(10, augment=True)
    try:
        res = fit(IspTask(net), data, SynthSet(2, seed=1), c, on_step=on_step)
    except Interrupt:
        res = {}
    return net, seen, res


@pytest.mark.parametrize("legacy_state", [False, True])
def test_resume_continues_exactly(tmp_path: Path, legacy_state: bool) -> None:
    ref, _, ref_res = _resume_run(tmp_path / "ref", None)
    _, seen, _ = _resume_run(tmp_path / "run", stop_at=7)  # killed after step 7; state from 6
    assert seen == list(range(1, 8))
    if legacy_state:  # a state from before log_n: the count of summed steps sat in log_sums as "n"
        state = torch.load(tmp_path / "run" / "state.pt", weights_only=True)
        state["log_sums"]["n"] = state.pop("log_n")
        assert state["log_sums"]["n"] == 1
        torch.save(state, tmp_path / "run" / "state.pt")
    net, seen, res = _resume_run(tmp_path / "run", None)
    assert res["start_step"] == 6 and seen == list(range(7, 11)) and res["step"] == 10
    assert same(snapshot(net), snapshot(ref))
    assert res["val_psnr"] == ref_res["val_psnr"]
    assert (tmp_path / "run" / "state.pt").is_file()  # left for the stage to delete
    # dvclive history continues without duplicates: validations at 5 and 10 (epoch ends).
    rows = (tmp_path / "run" / "live" / "plots" / "metrics" / "val" / "psnr.tsv").read_text().splitlines()
    assert [int(r.split("\t")[0]) for r in rows[1:]] == [5, 10]
    # ... and its train loss at 10 averages steps 6..10, as the uninterrupted run's (not 7..10).
    loss = [(d / "live" / "plots" / "metrics" / "train" / "loss.tsv").read_text() for d in (tmp_path / "ref", tmp_path / "run")]
    assert loss[0] == loss[1]
    # A finished state is not trained again.
    net2, seen2, res2 = _resume_run(tmp_path / "run", None)
    assert seen2 == [] and res2["start_step"] == 10 and res2["val_psnr"] == res["val_psnr"]


def test_corrupt_state_file_is_reported(tmp_path: Path) -> None:
    state = tmp_path / "state.pt"
    state.write_bytes(b"not a checkpoint")
    with pytest.raises(CaispError, match="state.pt.*delete it"):
        fit(IspTask(Pix()), SynthSet(4), None, cfg(steps=2, state_path=state))


class NanAtStep3(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = Pix()
        self.calls = 0

    def forward(self, batch: dict) -> tuple[torch.Tensor, dict]:
        self.calls += 1
        loss = (self.net(batch["raw"]) - batch["srgb"]).abs().mean()
        return loss * (math.nan if self.calls == 3 else 1.0), {}

    def predict(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        return self.net(batch["raw"]), batch["srgb"]


def test_non_finite_loss_names_the_step() -> None:
    task = NanAtStep3()
    with pytest.raises(CaispError, match="loss became nan at step 3"):
        fit(task, SynthSet(8), None, cfg(steps=5))
    assert all(torch.isfinite(p).all() for p in task.parameters())  # the update was not applied


def test_config_and_device_errors() -> None:
    with pytest.raises(CaispError, match="lr_decay"):
        cfg(lr_decay="step")
    with pytest.raises(CaispError, match="batch_size"):
        fit(IspTask(Pix()), SynthSet(3), None, cfg(batch_size=4))
    assert resolve_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        with pytest.raises(CaispError, match="CUDA"):
            resolve_device("cuda")


# ----------------------------------------------------------------------------- checkpoints

def test_checkpoint_round_trip(tmp_path: Path) -> None:
    net = Pix()
    config = {"type": "pix", "kwargs": {}, "qf": 90, "input_norm": "wb"}
    save_model(tmp_path / "m.pt", net, config)
    state, got = load_checkpoint(tmp_path / "m.pt")
    assert got == config and same(state, snapshot(net))
    assert not list(tmp_path.glob("*.part"))


class Payload:
    """Any class: weights_only loading must refuse to build it."""

    def __init__(self) -> None:
        self.x = 1


@pytest.mark.parametrize("kind", ["missing", "random", "pickle", "format", "version", "no_state"])
def test_bad_checkpoints_raise(tmp_path: Path, kind: str) -> None:
    path = tmp_path / f"{kind}.pt"
    good = {"format": "caisp", "version": 1, "config": {"type": "pix"}, "state_dict": {}}
    if kind == "random":
        path.write_bytes(torch.randint(0, 256, (512,), dtype=torch.uint8).numpy().tobytes())
    elif kind == "pickle":
        torch.save({**good, "config": Payload()}, path)
    elif kind == "format":
        torch.save({**good, "format": "something-else"}, path)
    elif kind == "version":
        torch.save({**good, "version": 2}, path)
    elif kind == "no_state":
        torch.save({k: v for k, v in good.items() if k != "state_dict"}, path)
    with pytest.raises(CaispError) as err:
        load_checkpoint(path)
    assert str(path) in str(err.value)
    assert len(str(err.value)) < 400  # one readable line, not torch's page of advice
    if kind == "pickle":
        assert "refused: not a caisp checkpoint (it would run code)" in str(err.value)


def test_save_rejects_non_json_config(tmp_path: Path) -> None:
    with pytest.raises(CaispError, match="JSON"):
        save_model(tmp_path / "m.pt", Pix(), {"type": "pix", "path": Path("x")})


def test_load_model_with_real_registry(tmp_path: Path) -> None:
    pytest.importorskip("caisp.models.unet")
    from caisp.models import build

    for name in ("isp_net", "unet"):
        net = build(name, base_width=4)
        save_model(tmp_path / f"{name}.pt", net, {"type": name, "kwargs": {"base_width": 4}})
        loaded, config = load_model(tmp_path / f"{name}.pt")
        assert not loaded.training and config["type"] == name
        assert same(snapshot(loaded), snapshot(net))
    save_model(tmp_path / "bad.pt", net, {"type": "unet", "kwargs": {"base_width": 8}})
    with pytest.raises(CaispError, match="bad.pt"):
        load_model(tmp_path / "bad.pt")


# ----------------------------------------------------------------------------- DDP

WORKER = """
import os, sys
from pathlib import Path
import torch
torch.set_num_threads(1)
from test_train import NormCas, Pix, SynthSet, cfg
from caisp.losses import CompressionAwareTask
from caisp.train import fit, is_main

rank, out = int(os.environ["RANK"]), Path(sys.argv[1])
torch.manual_seed(100 + rank)  # different initial weights: DDP must start from rank 0's
isp, cas = Pix(), NormCas()
task = CompressionAwareTask(isp, cas, lambda_isp=0.1, lambda_comp=1.0)
steps = []
res = fit(task, SynthSet(16), SynthSet(3, seed=1),
          cfg(steps=4, batch_size=2, ckpt_every=2, val_every=2,
              log_dir=out / f"live{rank}", state_path=out / f"state{rank}.pt"),
          on_step=lambda s, logs: steps.append(s))
torch.save({"isp": isp.state_dict(), "cas": cas.state_dict(), "steps": steps,
            "res": res, "main": is_main()}, out / f"result{rank}.pt")
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_two_cpu_processes(tmp_path: Path) -> None:
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()),
           "WORLD_SIZE": "2", "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")]),
           "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    procs = [subprocess.Popen([sys.executable, str(script), str(tmp_path)],
                              env={**env, "RANK": str(r), "LOCAL_RANK": str(r)},
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
             for r in range(2)]
    outs = []
    try:
        for p in procs:
            outs.append(p.communicate(timeout=180)[0].decode(errors="replace"))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert all(p.returncode == 0 for p in procs), "\n---\n".join(outs)
    r0, r1 = (torch.load(tmp_path / f"result{r}.pt", weights_only=True) for r in range(2))
    assert r0["steps"] == r1["steps"] == [1, 2, 3, 4]
    assert r0["main"] and not r1["main"]
    assert same(r0["isp"], r1["isp"]) and same(r0["cas"], r1["cas"])
    assert r0["res"]["val_psnr"] == r1["res"]["val_psnr"]  # all-reduced over both shards
    assert (tmp_path / "state0.pt").is_file() and not (tmp_path / "state1.pt").exists()
    assert (tmp_path / "live0" / "metrics.json").is_file() and not (tmp_path / "live1").exists()


TORCHRUN_WORKER = """
import os, sys
from pathlib import Path
import torch
torch.set_num_threads(1)
from test_train import Interrupt, Pix, RecordingIsp, SynthSet, cfg
from caisp import CaispError
from caisp.train import fit, setup_distributed

# One process group for all the fits below (fit leaves a group it did not create in place).
assert setup_distributed("gloo")
rank, out = int(os.environ["RANK"]), Path(sys.argv[1])
data = SynthSet(14, augment=True)  # 7 samples a rank: 3 steps of 2, one left over, per epoch

def run(state, stop_at=None):
    torch.manual_seed(100 + rank)  # different initial weights: DDP must start from rank 0's
    task = RecordingIsp(Pix(dropout=0.2))
    def on_step(step, logs):
        if step == stop_at:
            raise Interrupt
    # state at step 4: part-way into the second epoch, so the resume skips 2 samples a rank
    c = cfg(steps=7, batch_size=4, ckpt_every=4, state_path=out / state)
    try:
        fit(task, data, None, c, on_step=on_step)
    except Interrupt:
        pass
    return task

full = run("full.pt")
run("run.pt", stop_at=5)
resumed = run("run.pt")  # from the interrupted run's state
try:
    fit(RecordingIsp(Pix()), data, None, cfg(steps=1, batch_size=3))
    error = ""
except CaispError as e:
    error = str(e)
torch.save({"seen": full.seen, "weights": full.state_dict(), "resumed_seen": resumed.seen,
            "resumed_weights": resumed.state_dict(), "error": error}, out / f"result{rank}.pt")
"""


def test_torchrun_splits_the_global_batch(tmp_path: Path) -> None:
    """batch_size is the global batch: under torchrun each rank loads batch_size / 2 samples, the
    ranks' samples of a step are disjoint and together those of a one-process run; resume is exact."""
    script = tmp_path / "worker.py"
    script.write_text(TORCHRUN_WORKER)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")]),
           "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_addr", "127.0.0.1", "--master_port", str(_free_port()), str(script), str(tmp_path)]
    proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=180)
    assert proc.returncode == 0, proc.stdout.decode(errors="replace")
    r0, r1 = (torch.load(tmp_path / f"result{r}.pt", weights_only=True) for r in range(2))

    # The same run in one process: the reference global batches.
    single = RecordingIsp(Pix())
    fit(single, SynthSet(14), None, cfg(steps=7, batch_size=4))
    assert all(len(b) == 4 for b in single.seen) and len(single.seen) == 7

    for r in (r0, r1):
        assert len(r["seen"]) == 7 and all(len(b) == 2 for b in r["seen"])
    for a, b, ref in zip(r0["seen"], r1["seen"], single.seen):
        assert not set(a) & set(b)
        assert sorted(a + b) == sorted(ref)
    assert sum(len(b) for r in (r0, r1) for b in r["seen"]) == 7 * 4
    assert same(r0["weights"], r1["weights"])

    # Resumed at step 4 of 7 (interrupted after 5): the batches and weights of the full run.
    for r in (r0, r1):
        assert r["resumed_seen"] == r["seen"][4:]
        assert same(r["resumed_weights"], r["weights"])
    for r in (r0, r1):
        assert "batch_size 3 is the global batch and must be divisible by the 2 processes" in r["error"]


def test_indivisible_batch_size_is_an_error(monkeypatch) -> None:
    import caisp.train

    monkeypatch.setattr(caisp.train, "get_world_size", lambda: 3)
    with pytest.raises(CaispError, match="batch_size 4 is the global batch and must be divisible "
                                         "by the 3 processes of torchrun"):
        fit(IspTask(Pix()), SynthSet(8), None, cfg(batch_size=4))


def test_same_inputs_give_bit_identical_models() -> None:
    """Same params, seed and thread count: the same weights, byte for byte, for a real ISP-Net with a
    frozen CAS-Net in the loss (the path of every fine-tuning stage); another seed differs."""
    from caisp import models

    def run(seed: int) -> dict[str, torch.Tensor]:
        torch.manual_seed(0)
        isp = models.build("isp_net", base_width=4, tone_prior=True)
        cas = models.build("unet", base_width=4)
        task = CompressionAwareTask(isp, cas, lambda_isp=0.1, lambda_comp=1.0)
        fit(task, SynthSet(8, augment=True), SynthSet(2, seed=1),
            cfg(steps=3, seed=seed, threads=2, deterministic=True, lr=1e-3))
        return snapshot(isp)

    a, b, c = run(5), run(5), run(6)
    assert same(a, b)
    assert not same(a, c)


def test_determinism_flags_without_loading_inductor() -> None:
    """set_determinism sets torch's deterministic-algorithms flags (warn only), and in a fresh process
    it does so without importing torch._inductor (2-4 s per stage here)."""
    code = ("import sys, torch\n"
            "from caisp.device import set_determinism\n"
            "set_determinism(2, True)\n"
            "assert torch.are_deterministic_algorithms_enabled()\n"
            "assert torch.is_deterministic_algorithms_warn_only_enabled()\n"
            "assert 'torch._inductor' not in sys.modules, 'inductor imported'\n"
            "set_determinism(None, False)\n"
            "assert not torch.are_deterministic_algorithms_enabled()\n")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[1])


def test_saving_the_same_model_twice_gives_the_same_bytes(tmp_path: Path) -> None:
    """DVC hashes checkpoints: an unchanged model must not look changed (the temporary file's name
    once leaked into torch's archive)."""
    net = Pix()
    config = {"type": "pix", "kwargs": {}}
    save_model(tmp_path / "a.pt", net, config)
    save_model(tmp_path / "b.pt", net, config)
    assert (tmp_path / "a.pt").read_bytes() == (tmp_path / "b.pt").read_bytes()


def test_resume_states_of_runs_with_other_params_go_once_a_run_completes(tmp_path, monkeypatch) -> None:
    """A stage rerun with other params starts fresh (its state key differs) and, once it completes,
    removes the states that the interrupted runs with the old params left behind."""
    from caisp.params import Params
    from caisp.pipeline import fitting

    monkeypatch.chdir(tmp_path)
    states = tmp_path / "checkpoints"
    states.mkdir()
    stale = states / "aware-qf90-djs_seed0-0123456789ab.pt"
    other_run = states / "aware-qf90-acn_seed0-0123456789ab.pt"
    stale.write_bytes(b"old")
    other_run.write_bytes(b"keep")
    seen = {}

    def fake_fit(task, train, val, cfg):
        seen["state"] = cfg.state_path
        return {"step": cfg.steps}

    monkeypatch.setattr("caisp.train.fit", fake_fit)
    fitting.fit(None, None, None, log_dir=Path("reports/train/aware-qf90-djs/seed0"), steps=3, batch_size=2,
                lr=1e-3, grad_clip=None, seed=0, p=Params(), fingerprint=["new params"])
    assert seen["state"].parent.resolve() == states.resolve() and seen["state"].name != stale.name
    assert not stale.exists() and other_run.exists()


@pytest.mark.parametrize("n_train, batch, workers, crops, expected", [
    (26, 8, 0, None, 2),      # the offline default: at least 64 crops per epoch
    (19, 64, 0, None, 4),     # the 24-raw rehearsal without workers: one global batch per epoch
    (19, 64, 8, None, 54),    # ... with 8 workers: two batches per worker, so all of them build batches
    (390, 64, 0, None, 1),    # FiveK without workers: the paper's epoch
    (390, 64, 8, None, 3),
    (19, 64, 8, 5, 5),        # set by hand: taken as given
])
def test_crops_per_image_keeps_every_loader_worker_busy(monkeypatch, n_train, batch, workers, crops, expected) -> None:
    from caisp.data import dataset
    from caisp.params import from_dict
    from caisp.pipeline import fitting, layout

    seen = {}

    class Fake:
        def __init__(self, root, names, *, patch, train, repeat=1, **kw):
            if train:
                seen["repeat"] = repeat

    monkeypatch.setattr(dataset, "RawRGBDataset", Fake)
    monkeypatch.setattr(layout, "split", lambda: {"train": [f"s{i}" for i in range(n_train)], "val": ["v"]})
    p = from_dict({"train": {"num_workers": workers, "crops_per_image": crops}})
    fitting.datasets(p, None, batch, ("raw", "srgb"))
    assert seen["repeat"] == expected
    if crops is None and workers:  # the epoch, in global batches, gives each worker two to build
        assert n_train * expected // batch >= 2 * workers


# ----------------------------------------------------------------------------- seed runs at once

def _seed_run(p, seed: int, scale: float, *, label: str = "") -> dict:
    """A stand-in run of `fitting.run_seeds`: what process and thread count it ran with, and a
    seeded result (module level, so that spawned processes can unpickle it)."""
    if seed == 13:
        raise CaispError("run 13 cannot train")
    torch.manual_seed(seed)
    return {"pid": os.getpid(), "threads": torch.get_num_threads(), "label": label,
            "value": float(torch.rand(()) * scale), "p_threads": p.train.threads}


def test_seed_runs_train_at_once_with_a_thread_count_fixed_by_the_params() -> None:
    """On the CPU a stage's seeds train in min(parallel_runs, seeds) spawned processes of
    threads // processes threads each; parallel_runs 1 trains them in turn here, at `threads`."""
    from caisp.params import from_dict
    from caisp.pipeline.fitting import run_layout, run_seeds

    p = from_dict({"train": {"device": "cpu", "threads": 2, "parallel_runs": 3}})
    assert run_layout(p, 3) == (3, 1) and run_layout(p, 2) == (2, 1) and run_layout(p, 1) == (1, 2)
    out = run_seeds(_seed_run, p, [0, 1, 2], 10.0)
    assert list(out) == [0, 1, 2]
    assert len({r["pid"] for r in out.values()} | {os.getpid()}) == 4  # three processes, none of them this one
    assert all(r["threads"] == r["p_threads"] == 1 for r in out.values())
    assert [r["label"] for r in out.values()] == ["seed 0", "seed 1", "seed 2"]
    seq = run_seeds(_seed_run, from_dict({"train": {"device": "cpu", "threads": 1, "parallel_runs": 1}}),
                    [0, 1, 2], 10.0)
    assert all(r["pid"] == os.getpid() and r["label"] == "" for r in seq.values())
    assert [r["value"] for r in seq.values()] == [r["value"] for r in out.values()]  # same seed, same run
    with pytest.raises(CaispError, match="run 13 cannot train"):  # one line, the run's own error
        run_seeds(_seed_run, p, [0, 13], 1.0)


def test_what_fine_tuning_sends_to_its_run_processes_pickles(tmp_path: Path) -> None:
    """Fine-tuning's seeds may train in spawned processes: its simulator factories, run names and the
    rate estimate must pickle (a lambda would not)."""
    import functools
    import pickle

    from caisp.codecs import Point
    from caisp.pipeline.isp import load_cas, no_cas
    from caisp.pipeline.layout import Run
    from caisp.rate import FEATURES, JPEGRate

    rate = JPEGRate(80, weights=[1.0] * len(FEATURES))
    for obj in (no_cas, functools.partial(load_cas, tmp_path / "g.pt"), nn.Identity,
                Run("aware", Point("jpeg", 80), "djs", "paper"), rate):
        pickle.loads(pickle.dumps(obj))
    back = pickle.loads(pickle.dumps(rate))
    assert torch.equal(back.weights, rate.weights) and torch.equal(back.q_luma, rate.q_luma)

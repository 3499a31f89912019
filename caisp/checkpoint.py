"""Model checkpoints: `{"format": "caisp", "version": 1, "config": {...}, "state_dict": {...}}`.

`config` is a plain JSON-able dict: `type` and `kwargs` rebuild the network through the model
registry; stages add what a user of the model needs (qf, cas variant, input_norm, cfa, ...).
Files are read with `torch.load(weights_only=True)` only, so a checkpoint cannot run code.
"""
from __future__ import annotations

import io
import json
import os
import pickle
import re
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from caisp import CaispError
from caisp.io import write_bytes

FORMAT = "caisp"
VERSION = 1


def unwrap(net: nn.Module) -> nn.Module:
    """The bare module inside DistributedDataParallel / DataParallel / torch.compile wrappers."""
    while True:
        if isinstance(net, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            net = net.module
        elif hasattr(net, "_orig_mod"):  # torch.compile's OptimizedModule
            net = net._orig_mod
        else:
            return net


def save_model(path: str | os.PathLike, net: nn.Module, config: dict[str, Any]) -> None:
    """Write `net`'s weights (on CPU, contiguous) and its `config` to `path`, atomically."""
    try:
        config = json.loads(json.dumps(config))  # a deep copy that proves it is plain JSON
    except (TypeError, ValueError) as e:
        raise CaispError(f"{path}: model config is not JSON-serialisable ({e})") from e
    if "type" not in config:
        raise CaispError(f"{path}: model config needs a 'type' (the registry name), got {sorted(config)}")
    # contiguous(): a channels_last training run must not leave odd strides in the file.
    state = {k: v.detach().cpu().contiguous() for k, v in unwrap(net).state_dict().items()}
    # Serialised in memory, not into the temporary file: torch.save names the archive's root folder
    # after the file it writes, so the random temporary name made every save's bytes differ, and
    # DVC reran everything downstream of an unchanged model.
    buf = io.BytesIO()
    torch.save({"format": FORMAT, "version": VERSION, "config": config, "state_dict": state}, buf)
    write_bytes(path, buf.getvalue())


def _load_reason(e: Exception) -> str:
    """A one-line reason for a failed torch.load (its weights_only message is a page long)."""
    if isinstance(e, pickle.UnpicklingError) and "weights only load failed" in str(e).lower():
        # A pickle that builds objects (or any pickle but torch's own tensor format): the full
        # unpickler would run code to load it, so safe loading stopped before anything ran.
        m = re.search(r"(?:Unsupported global: GLOBAL|unsupported GLOBAL) ([\w.]+)", str(e))
        return "refused: not a caisp checkpoint (it would run code)" + (f": {m.group(1)}" if m else "")
    if isinstance(e, OSError):
        return f"cannot read it ({e.strerror or e})"
    # Random bytes, text, an empty or cut-off file: torch's own messages say little more.
    return f"not a PyTorch file, or truncated ({type(e).__name__})"


def _check_weights(path: Path, state: dict[str, torch.Tensor]) -> None:
    """A diverged run saves NaN/inf weights; they would develop black pictures, so refuse them."""
    for key, t in state.items():
        if (t.is_floating_point() or t.is_complex()) and not bool(torch.isfinite(t).all()):
            raise CaispError(f"{path}: refused: non-finite weights (NaN or inf) in {key!r}; "
                             "the training run that wrote it diverged")


def _check_config(path: Path, config: dict[str, Any]) -> None:
    """The keys a user of the model relies on (develop, evaluate), where present: one line naming the
    file and the key."""
    from caisp.data.bayer import CFA_PATTERNS, INPUT_NORMS

    cfa = config.get("cfa", "RGGB")
    if not isinstance(cfa, str) or cfa.upper() not in CFA_PATTERNS:
        raise CaispError(f"{path}: config cfa={cfa!r} is not a Bayer pattern "
                         f"({', '.join(CFA_PATTERNS)})")
    qf = config.get("qf")
    if qf is not None and (isinstance(qf, bool) or not isinstance(qf, int) or not 1 <= qf <= 100):
        raise CaispError(f"{path}: config qf={qf!r} must be an integer in 1..100 or null")
    if "input_norm" in config and config["input_norm"] not in INPUT_NORMS:
        raise CaispError(f"{path}: config input_norm={config['input_norm']!r} must be one of "
                         f"{', '.join(INPUT_NORMS)}")


def load_checkpoint(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a caisp checkpoint: `(state_dict, config)`, tensors on CPU. Raises CaispError naming
    the file and the reason when it is missing, not a PyTorch file, unsafe, or not ours."""
    path = Path(path)
    if path.is_dir():
        seeds = sorted(p.name for p in path.glob("*.pt"))[:3]
        hint = f" (it holds {', '.join(seeds)}{', ...' if len(seeds) == 3 else ''})" if seeds else ""
        raise CaispError(f"{path}: a folder, not a checkpoint file; name one .pt file in it{hint}")
    if not path.is_file():
        raise CaispError(f"{path}: no such checkpoint file")
    try:
        with warnings.catch_warnings():  # e.g. "Detected pickle protocol 4": the error says it all
            warnings.simplefilter("ignore")
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types here; all mean "not a checkpoint we can read"
        reason = _load_reason(e)
        prefix = "" if reason.startswith("refused") else "cannot load checkpoint: "
        raise CaispError(f"{path}: {prefix}{reason}") from e
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        what = f"format {obj.get('format')!r}" if isinstance(obj, dict) else type(obj).__name__
        raise CaispError(f"{path}: not a caisp model checkpoint ({what}; expected format {FORMAT!r})")
    version = obj.get("version")
    if not isinstance(version, int) or version < 1:
        raise CaispError(f"{path}: bad checkpoint version {version!r}")
    if version > VERSION:
        raise CaispError(f"{path}: checkpoint version {version} is newer than this caisp "
                         f"(reads up to {VERSION}); upgrade caisp")
    config, state = obj.get("config"), obj.get("state_dict")
    if not isinstance(config, dict):
        raise CaispError(f"{path}: checkpoint has no 'config' dict")
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CaispError(f"{path}: checkpoint has no 'state_dict' of tensors")
    _check_weights(path, state)
    _check_config(path, config)
    return state, config


def _check_shapes(path: Path, kind: str, kwargs: dict, probe: nn.Module, state: dict[str, torch.Tensor]) -> None:
    want = {k: tuple(v.shape) for k, v in probe.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in state.items()}
    if want == got:
        return
    missing, unexpected = sorted(set(want) - set(got)), sorted(set(got) - set(want))
    differ = [k for k in want if k in got and want[k] != got[k]]
    why = (f"{differ[0]} is {got[differ[0]]} in the file, {want[differ[0]]} for the config" if differ else
           f"missing {missing[:2]}" if missing else f"unexpected {unexpected[:2]}")
    raise CaispError(f"{path}: weights do not fit model {kind!r} {kwargs} ({why}); refused before building it")


def load_model(path: str | os.PathLike,
               device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the network a checkpoint describes, load its weights (strict), eval mode."""
    from caisp.models import build  # late: the registry imports every model module

    state, config = load_checkpoint(path)
    if "type" not in config:
        raise CaispError(f"{path}: checkpoint config has no model 'type'")
    kwargs = config.get("kwargs") or {}
    if not isinstance(kwargs, dict):
        raise CaispError(f"{path}: checkpoint config 'kwargs' is not a dict")
    try:
        # First without memory (the meta device has shapes, no storage): a config is only text, and
        # one whose shapes disagree with the weights (a base_width of 2000 in a 1.5 KB file) must not
        # build a network of gigabytes before it fails.
        try:
            with torch.device("meta"):
                probe = build(config["type"], **kwargs)
        except (CaispError, TypeError):
            raise
        except Exception:  # noqa: BLE001 - a constructor that computes with its tensors: load_state_dict checks
            probe = None
        if probe is not None:
            _check_shapes(path, config["type"], kwargs, probe, state)
            del probe
        net = build(config["type"], **kwargs)
    except CaispError as e:
        raise CaispError(f"{path}: {e}" if not str(e).startswith(str(path)) else str(e)) from e
    except TypeError as e:
        raise CaispError(f"{path}: cannot build model {config['type']!r} with {kwargs}: {e}") from e
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0]
        raise CaispError(f"{path}: weights do not fit model {config['type']!r} {kwargs} ({first})") from e
    return net.to(device).eval(), config

"""Where the networks run and how reproducibly: device names and deterministic settings, shared by
training, evaluation and `caisp develop` (kept apart from the training loop, so that evaluation does not
depend on its code)."""
from __future__ import annotations

import os
import sys

import torch

from caisp import CaispError


def resolve_device(name: str = "auto") -> torch.device:
    """"auto" -> this process's CUDA device when there is one, else CPU; "cuda" -> cuda:LOCAL_RANK."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(name)
    except RuntimeError as e:
        raise CaispError(f"unknown device {name!r} ({e})") from e
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise CaispError(f"device {name!r} requested but CUDA is not available")
        if dev.index is None:
            dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return dev


def set_determinism(threads: int | None, deterministic: bool) -> None:
    """Fix torch's CPU thread count and ask for deterministic kernels (cuDNN/cuBLAS included)."""
    if threads is not None:
        torch.set_num_threads(int(threads))
    if deterministic:
        # cuBLAS needs a fixed workspace to be deterministic; it must be set before its first use.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
    _use_deterministic_algorithms(deterministic)


def _use_deterministic_algorithms(mode: bool) -> None:
    """torch.use_deterministic_algorithms(mode, warn_only=True) without its import of torch._inductor,
    which costs 2-4 s per process on a 2-core CPU, in every stage: eager kernels read only the C-level
    flag. Inductor's own copy of it is set too where inductor is already loaded (caisp never compiles)."""
    if "torch._inductor.config" in sys.modules or not hasattr(torch._C, "_set_deterministic_algorithms"):
        torch.use_deterministic_algorithms(mode, warn_only=True)
    else:
        torch._C._set_deterministic_algorithms(mode, warn_only=True)

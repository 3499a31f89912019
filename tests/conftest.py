"""Shared fixtures. `../shared` (beside the repository) holds real camera raws; tests skip without it."""
from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
RAW_SAMPLES = SHARED / "raw-samples"

# Two cores here: keep intra-op threads bounded so pytest-xdist workers do not oversubscribe.
torch.set_num_threads(1)


@pytest.fixture
def raw_samples() -> Path:
    if not RAW_SAMPLES.is_dir():
        pytest.skip("../shared/raw-samples is absent")
    return RAW_SAMPLES


@pytest.fixture
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.skip("../shared is absent")
    return SHARED


def load_script(name: str) -> ModuleType:
    """A module of scripts/ (not a package), loaded from its file, e.g. load_script("pilot_cas_seeds")."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module

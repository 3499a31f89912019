"""Shared fixtures. `../shared` (beside the repository) holds real camera raws; tests skip without it."""
from __future__ import annotations

from pathlib import Path

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

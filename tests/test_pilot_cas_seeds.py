"""scripts/pilot_cas_seeds.py: its pooled interval resamples the simulator seeds too (a spread between
simulators alone widens it), and its scratch folder links the graph's data and pretrained ISPs
without touching them."""
from __future__ import annotations

import numpy as np
from conftest import load_script


def _pilot():
    return load_script("pilot_cas_seeds")


def test_bootstrap3_resamples_each_axis():
    boot = _pilot().bootstrap3
    flat = boot(np.full((3, 3, 5), -0.02), n_boot=200, seed=0)
    assert np.allclose([flat["lo"], flat["hi"], flat["mean"]], -0.02)
    # the same photos and seeds under each simulator; only the simulators differ
    sims = np.array([-0.05, -0.02, 0.01])[:, None, None] + np.zeros((3, 3, 5))
    out = boot(sims, n_boot=500, seed=0)
    assert out["lo"] < -0.03 and out["hi"] > -0.01 and out["n_sims"] == 3 and out["n_photos"] == 5
    # photos alone differ: the simulator axis adds nothing
    photos = np.linspace(-0.1, 0.1, 5)[None, None, :] + np.zeros((3, 3, 5))
    assert boot(photos, n_boot=500, seed=0)["hi"] > 0.02


def test_scratch_links_the_graph_and_writes_only_its_own(tmp_path, monkeypatch):
    pilot = _pilot()
    root = tmp_path / "repo"
    (root / "data").mkdir(parents=True)
    (root / "models/isp/paper/pretrained").mkdir(parents=True)
    (root / "models/isp/paper/pretrained/seed0.pt").write_bytes(b"x")
    monkeypatch.setattr(pilot, "ROOT", root)
    work = pilot._scratch(tmp_path / "work" / "cas-seed1", "paper")
    assert (work / "data").resolve() == (root / "data").resolve()
    assert (work / "models/isp/paper/pretrained/seed0.pt").read_bytes() == b"x"
    (work / "stale").write_text("from an older run")
    again = pilot._scratch(work, "paper")  # fresh each time: no older resume state is taken up
    assert not (again / "stale").exists() and (root / "models/isp/paper/pretrained/seed0.pt").exists()

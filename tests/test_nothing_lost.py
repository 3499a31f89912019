"""Issue 19: nothing a user has is lost under any input. Each test failed on the code before its fix."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from caisp import CaispError
from caisp.checkpoint import load_model, save_model
from caisp.data.synthetic import write_dng
from test_develop import IDENTITY, colour_image, identity_net, run_cli

ROOT = Path(__file__).resolve().parents[1]


# --- 1. the download stage never deletes the user's raws ----------------------------------------------

@pytest.mark.parametrize("key", ["folder", "extra_photos"])
def test_sources_inside_data_raw_are_refused_and_survive(tmp_path, monkeypatch, key):
    from caisp.params import from_dict, load_params
    from caisp.pipeline.download import run_download

    monkeypatch.chdir(tmp_path)
    mine = tmp_path / "data" / "raw"
    mine.mkdir(parents=True)
    (mine / "IMG_0001.dng").write_bytes(b"the user's only copy")
    raw = ({"source": "folder", "folder": {"path": "data/raw"}} if key == "folder"
           else {"source": "synthetic", "synthetic": {"extra_photos": "data/raw"}})
    (tmp_path / "params.yaml").write_text(__import__("json").dumps({"data": raw}))
    name = "data.folder.path" if key == "folder" else "data.synthetic.extra_photos"
    with pytest.raises(CaispError, match=f"{name}.*inside data/raw"):
        load_params(tmp_path / "params.yaml")
    # And the stage refuses by itself, before it empties the folder (params that passed elsewhere).
    other = tmp_path / "photos"
    other.mkdir()
    p = from_dict({"data": {**raw, **({"folder": {"path": str(other)}} if key == "folder"
                                      else {"synthetic": {"extra_photos": str(other)}})}})
    if key == "folder":
        p.data.folder.path = mine
    else:
        p.data.synthetic.extra_photos = mine
    with pytest.raises(CaispError, match="inside data/raw"):
        run_download(p)
    assert (mine / "IMG_0001.dng").read_bytes() == b"the user's only copy"


# --- 2. two develops racing for one output name: exactly one wins ---------------------------------

def test_concurrent_develops_never_both_write_one_name(tmp_path):
    ckpt = tmp_path / "isp.pt"
    save_model(ckpt, identity_net(), IDENTITY)
    srcs = []
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
        srcs.append(write_dng(tmp_path / d / "x.dng", colour_image(), seed=len(d) + ord(d), noise=False))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for attempt in range(4):  # a race: repeat, each round must hold
        out = tmp_path / f"out{attempt}"
        out.mkdir()
        procs = [subprocess.Popen([sys.executable, "-m", "caisp.cli", "develop", str(s), "-o", str(out),
                                   "--model", str(ckpt), "--tile", "64", "--overlap", "16"],
                                  env=env, stderr=subprocess.PIPE, text=True) for s in srcs]
        codes = [p.wait(120) for p in procs]
        errs = [p.stderr.read() for p in procs]
        assert sorted(codes) == [0, 1], (codes, errs)  # one wrote x.jpg, the other was refused
        assert any("already exists" in e for e in errs)
        assert [p.name for p in out.iterdir()] == ["x.jpg"]


def test_no_clobber_write_refuses_a_file_that_appeared_meanwhile(tmp_path):
    from caisp.develop import save_output

    dst = tmp_path / "x.jpg"
    dst.write_bytes(b"someone else's")
    with pytest.raises(CaispError, match="already exists"):
        save_output(np.zeros((16, 16, 3), np.float32), dst, overwrite=False)
    assert dst.read_bytes() == b"someone else's" and sorted(os.listdir(tmp_path)) == ["x.jpg"]


def test_leftovers_of_a_killed_writer_are_reaped_and_live_ones_kept(tmp_path):
    from caisp.develop import save_output

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    stale = tmp_path / f".x.jpg.{dead}.abc123.part"
    live = tmp_path / f".x.jpg.{os.getppid()}.def456.part"  # our parent is alive
    stale.write_bytes(b"half")
    live.write_bytes(b"in progress")
    save_output(np.zeros((16, 16, 3), np.float32), tmp_path / "x.jpg")
    assert not stale.exists() and live.exists() and (tmp_path / "x.jpg").is_file()


# --- 5. a checkpoint's config is checked against its weights before anything is built --------------

def test_config_that_disagrees_with_the_weights_builds_nothing(tmp_path, monkeypatch):
    import caisp.models

    path = tmp_path / "isp.pt"
    save_model(path, identity_net(), {**IDENTITY, "kwargs": {**IDENTITY["kwargs"], "base_width": 2000}})
    built = []
    real = caisp.models.build

    def counting(name, **kw):
        import torch

        built.append(torch.empty(0).device.type)  # the device new tensors land on: meta for the probe
        return real(name, **kw)

    monkeypatch.setattr(caisp.models, "build", counting)
    with pytest.raises(CaispError, match="base_width.*refused before building"):
        load_model(path)
    assert built == ["meta"]


# --- 7. odd-sized raws keep their full size ---------------------------------------------------------

def test_odd_sized_raw_develops_to_its_full_size(tmp_path):
    from caisp.develop import develop_raw

    img = np.random.default_rng(0).integers(30, 220, (77, 101, 3), dtype=np.uint8)
    path = write_dng(tmp_path / "odd.dng", img, noise=False, seed=1, even=False)
    out = develop_raw(path, identity_net(), IDENTITY, tile=64, overlap=16)
    assert out.shape == (77, 101, 3)
    assert np.array_equal(out[-1], out[-2]) and np.array_equal(out[:, -1], out[:, -2])  # replicated edge


# --- 8. clear messages -------------------------------------------------------------------------------

def test_tiny_dng_is_too_small_not_unknown(tmp_path, capfd, monkeypatch):
    from caisp.data import synthetic

    monkeypatch.setattr(synthetic, "LIBRAW_MIN_SIZE", 8)  # the synthesiser refuses what LibRaw would
    path = write_dng(tmp_path / "tiny.dng", colour_image(16, 16), noise=False, seed=0)
    ckpt = tmp_path / "isp.pt"
    save_model(ckpt, identity_net(), IDENTITY)
    assert run_cli([str(path), "-o", str(tmp_path / "out"), "--model", str(ckpt)]) == 1
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "too small for LibRaw (16x16" in err[0], err


def test_model_folder_is_named_as_a_folder(tmp_path, capfd):
    run = tmp_path / "aware-qf90-djs"
    save_model(run / "seed0.pt", identity_net(), IDENTITY)
    src = write_dng(tmp_path / "x.dng", colour_image(), noise=False, seed=0)
    assert run_cli([str(src), "-o", str(tmp_path / "out"), "--model", str(run)]) == 2
    err = capfd.readouterr().err
    assert "a folder, not a checkpoint file" in err and "seed0.pt" in err


def _sigint_default() -> None:
    # A shell without job control starts background commands with SIGINT ignored, and an ignored
    # signal stays ignored across exec, so Python would install no KeyboardInterrupt handler: the
    # develop under test would never see the Ctrl-C (the suite run as `bash scripts/test &` did
    # exactly that). A terminal's Ctrl-C reaches a foreground process with the default disposition.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_during_develop_is_one_line_and_leaves_no_part(tmp_path):
    ckpt = tmp_path / "isp.pt"
    save_model(ckpt, identity_net(), IDENTITY)
    srcs = [write_dng(tmp_path / f"x{i}.dng", colour_image(256, 384), noise=False, seed=i) for i in range(40)]
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "caisp.cli", "develop", *map(str, srcs), "-o", str(out),
                             "--model", str(ckpt), "--tile", "64", "--overlap", "16"],
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, stderr=subprocess.PIPE, text=True,
                            preexec_fn=_sigint_default)
    deadline = time.monotonic() + 120
    while not (out.is_dir() and any(out.glob("*.jpg"))) and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    err = proc.communicate(timeout=60)[1]
    assert proc.returncode == 130, err
    assert 0 < len(list(out.glob("*.jpg"))) < len(srcs)  # the signal came while work remained
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("caisp develop: interrupted")
    assert not list(out.glob(".*.part"))

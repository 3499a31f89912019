"""caisp.data.raw / caisp.data.render on real camera raws and on broken files."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from caisp import CaispError
from caisp.data import store
from caisp.data.raw import RawError, read_raw
from caisp.data.render import RenderSettings, render_all, render_one

CANON = "canon550d_magiclantern_colorchart.dng"
DC50 = "kodak_dc50_RAW_KODAK_DC50.KDC"
C330 = "kodak_c330_RAW_KODAK_C330_FORMAT_NONE_YRGB.raw"


@pytest.fixture
def bad_files(tmp_path: Path, raw_samples: Path) -> dict[str, Path]:
    """A text file, an empty file and the first 30% of the Canon DNG."""
    d = tmp_path / "bad"
    d.mkdir()
    (d / "notes.txt").write_text("not a raw file\n")
    (d / "empty.dng").write_bytes(b"")
    data = (raw_samples / CANON).read_bytes()
    (d / "truncated.dng").write_bytes(data[: int(0.3 * len(data))])
    return {p.stem: p for p in d.iterdir()}


def test_read_canon(raw_samples: Path) -> None:
    img = read_raw(raw_samples / CANON)
    assert img.cfa == "RGGB"
    assert img.mosaic.dtype == np.float32 and img.mosaic.ndim == 2
    assert img.mosaic.shape[0] % 2 == 0 and img.mosaic.shape[1] % 2 == 0
    assert 0.0 <= img.mosaic.min() and img.mosaic.max() <= 1.0
    assert img.wb_valid and img.wb[1] == 1.0 and img.wb.shape == (3,)
    assert img.daylight_wb[1] == 1.0
    assert img.black.shape == (4,) and np.all(img.black == 2056)
    assert img.white == 15000 and img.bits == 14
    assert "EOS" in img.camera


def test_read_dc50_grbg_without_wb(raw_samples: Path) -> None:
    img = read_raw(raw_samples / DC50)
    assert img.cfa == "GRBG"
    assert img.mosaic.shape == (512, 768)
    assert not img.wb_valid
    assert np.all(np.isfinite(img.wb)) and img.wb[1] == 1.0


def test_non_bayer_refused(raw_samples: Path) -> None:
    with pytest.raises(RawError, match="Bayer") as info:
        read_raw(raw_samples / C330)
    assert C330 in str(info.value)


@pytest.mark.parametrize("name", ["notes", "empty", "truncated"])
def test_bad_files_raise_naming_file(bad_files: dict[str, Path], name: str) -> None:
    path = bad_files[name]
    with pytest.raises(RawError) as info:
        read_raw(path)
    assert path.name in str(info.value)
    assert info.value.reason  # the reason is kept apart for manifests
    if name == "empty":
        assert "empty" in info.value.reason
    if name == "truncated":
        assert "truncated" in info.value.reason


def test_render_one_outputs_align(tmp_path: Path, raw_samples: Path) -> None:
    entry = render_one(raw_samples / DC50, tmp_path)
    stem = Path(DC50).stem
    target = np.load(tmp_path / "targets" / f"{stem}.npy")
    data = np.load(tmp_path / "mosaics" / f"{stem}.npy")
    meta = store.read_meta(tmp_path / "meta" / f"{stem}.json")
    assert set(meta) >= {"cfa", "wb", "daylight_wb", "rgb_cam", "flip", "black", "white", "camera"}
    assert data.dtype == np.uint16 and target.dtype == np.uint8 and target.shape == (*data.shape, 3)
    assert meta["cfa"] == "GRBG" and meta["flip"] == 0 and meta["black"].shape == (2, 2)
    # The stored sensor values, normalised per window, give LibRaw-side read_raw's mosaic bit for bit.
    img = read_raw(raw_samples / DC50)
    assert np.array_equal(store.RenderedImage(tmp_path, stem).mosaic(), img.mosaic)
    assert np.array_equal(meta["wb"], img.wb) and np.array_equal(meta["rgb_cam"], img.rgb_cam)
    assert entry == {"stem": stem, "file": DC50, "source": stem, "camera": entry["camera"], "height": 512,
                     "width": 768, "cfa": "GRBG", "flip": 0}


def test_render_settings_validated() -> None:
    with pytest.raises(CaispError, match="render.demosaic"):
        RenderSettings(demosaic="nonsense").postprocess_kwargs()
    with pytest.raises(CaispError, match="user_flip"):
        RenderSettings(extra={"user_flip": 5}).postprocess_kwargs()
    with pytest.raises(CaispError, match="render.extra"):
        RenderSettings(extra={"no_such_option": 1}).postprocess_kwargs()
    kw = RenderSettings(demosaic="linear", extra={"bright": 1.0}).postprocess_kwargs()
    assert kw["user_flip"] == 0 and kw["bright"] == 1.0


@pytest.fixture
def mixed_dir(tmp_path: Path, raw_samples: Path, bad_files: dict[str, Path]) -> Path:
    d = tmp_path / "raw"
    d.mkdir()
    for name in (CANON, DC50, C330):
        shutil.copy(raw_samples / name, d / name)
    for p in bad_files.values():
        shutil.copy(p, d / p.name)
    (d / "manifest.json").write_text("{}")  # the download manifest is not a raw
    (d / ".hidden").write_text("x")
    return d


def test_render_all_skips_bad(tmp_path: Path, mixed_dir: Path, capsys) -> None:
    out = tmp_path / "rendered"
    (out / "targets").mkdir(parents=True)
    (out / "targets" / "stale.npy").write_bytes(b"old")
    manifest = render_all(mixed_dir, out, workers=2, progress=False)
    assert [e["stem"] for e in manifest["images"]] == [Path(CANON).stem, Path(DC50).stem]
    skipped = {s["file"]: s["reason"] for s in manifest["skipped"]}
    assert set(skipped) == {C330, "empty.dng", "notes.txt", "truncated.dng"}
    assert "Bayer" in skipped[C330]
    printed = capsys.readouterr().out
    assert printed.count("skipped ") == 4 and "skipped truncated.dng: " in printed
    assert json.loads((out / "manifest.json").read_text()) == manifest
    assert manifest["settings"]["user_flip"] == 0 and manifest["settings"]["use_camera_wb"] is True
    assert sorted(p.name for p in (out / "targets").iterdir()) == [
        f"{Path(CANON).stem}.npy", f"{Path(DC50).stem}.npy"]
    canon = next(e for e in manifest["images"] if e["file"] == CANON)
    assert np.load(out / "targets" / f"{canon['stem']}.npy").shape == (canon["height"], canon["width"], 3)


def test_render_all_fail_names_file(tmp_path: Path, raw_samples: Path, bad_files) -> None:
    d = tmp_path / "raw2"
    d.mkdir()
    shutil.copy(raw_samples / DC50, d / DC50)
    shutil.copy(bad_files["truncated"], d / "truncated.dng")
    with pytest.raises(RawError, match="truncated.dng"):
        render_all(d, tmp_path / "out", on_error="fail", progress=False)


def test_render_all_nothing_usable(tmp_path: Path, bad_files: dict[str, Path]) -> None:
    with pytest.raises(CaispError, match="no usable"):
        render_all(bad_files["empty"].parent, tmp_path / "out", progress=False)


def test_render_all_duplicate_stems(tmp_path: Path) -> None:
    d = tmp_path / "dup"
    d.mkdir()
    (d / "a.dng").write_bytes(b"x")
    (d / "a.nef").write_bytes(b"x")
    with pytest.raises(CaispError, match=r"a\.dng.*a\.nef"):
        render_all(d, tmp_path / "out", progress=False)


def test_render_synthetic_dng(tmp_path: Path) -> None:
    """A rotated synthetic DNG renders back to its input in sensor orientation, flip recorded."""
    synthetic = pytest.importorskip("caisp.data.synthetic")
    y, x = np.mgrid[0:64, 0:96]
    rgb = np.stack([x * 2.5, y * 3.5, 200 - x - y], -1).clip(0, 255).astype(np.uint8)
    path = tmp_path / "raw" / "synth.dng"
    path.parent.mkdir()
    synthetic.write_dng(path, rgb, cfa="GRBG", seed=0, noise=False, orientation=6)
    img = read_raw(path)
    assert img.cfa == "GRBG" and img.mosaic.shape == (64, 96) and img.flip == 6 and img.wb_valid
    # adjust_maximum_thr=0: LibRaw's white-level guess is the one step write_dng cannot invert.
    entry = render_one(path, tmp_path / "out", RenderSettings(extra={"adjust_maximum_thr": 0.0}))
    assert (entry["height"], entry["width"], entry["flip"]) == (64, 96, 6)
    target = np.load(tmp_path / "out" / "targets" / "synth.npy").astype(int)
    err = np.abs(target - rgb)[4:-4, 4:-4]  # borders: demosaicking has no neighbours there
    assert err.mean() < 1.0 and err.max() <= 8

"""The codec axis: every encoder's round trip and BPP from its bytes, quality ranges, missing plugins,
operating points, and the DVC matrix the codec points expand to."""
from __future__ import annotations

import builtins
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from caisp import CaispError
from caisp.data import codec, store
from caisp.codecs import CODECS, Point
from caisp.params import from_dict
from conftest import ROOT

OTHERS = [c for c in CODECS if c != "jpeg"]
# A high and a low quality on each codec's own scale.
HIGH_LOW = {"jpeg": (95, 20), "webp": (95, 20), "avif": (90, 20), "jpeg2000": (45, 25), "heic": (90, 20),
            "jpegopt": (95, 20), "mozjpeg": (95, 20)}


def _photo(h: int = 64, w: int = 96, seed: int = 0) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([x * 255 / w, y * 255 / h, 128 + 100 * np.sin(x / 7.0) * np.cos(y / 5.0)], -1)
    return np.clip(base + np.random.default_rng(seed).normal(0, 4, base.shape), 0, 255).astype(np.uint8)


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    return 10 * np.log10(255**2 / np.mean((a.astype(float) - b) ** 2))


@pytest.mark.parametrize("name", list(CODECS))
def test_round_trip_is_the_real_format_and_deterministic(name: str) -> None:
    img = _photo()
    high, low = HIGH_LOW[name]
    data = codec.encode(img, name, high)
    with Image.open(io.BytesIO(data)) as im:  # a real file of that format, not a re-labelled one
        assert im.format == CODECS[name].pillow_format and im.size == (96, 64)
    dec, nbytes = codec.roundtrip(img, name, high)
    assert dec.dtype == np.uint8 and dec.shape == img.shape and nbytes == len(data)
    assert _psnr(dec, img) > 30
    assert codec.encode(img, name, high) == data  # same bytes every time: BPP is a function of the input
    small = codec.roundtrip(img, name, low)
    assert small[1] < nbytes and _psnr(small[0], img) < _psnr(dec, img)
    with pytest.raises(CaispError, match="decode"):
        codec.decode(b"not an image at all", name)


@pytest.mark.parametrize("name", OTHERS)
def test_encode_all_bpp_from_the_file_bytes(tmp_path: Path, name: str) -> None:
    rendered = tmp_path / "rendered"
    for i, (h, w) in enumerate([(48, 80), (64, 96)]):
        store.write_array(rendered / "targets" / f"im{i}.npy", _photo(h, w, seed=i))
    out = tmp_path / name
    # With the settings the pipeline passes (params' codec_settings): each is checked before any work.
    df = codec.encode_all(rendered, out, codec=name, quality=HIGH_LOW[name][1], workers=2,
                          settings=from_dict({}).codec_settings(name))
    ext = CODECS[name].ext
    assert sorted(p.name for p in out.iterdir()) == sorted(["bpp.csv", f"im0{ext}", "im0.npy", f"im1{ext}", "im1.npy"])
    for row in df.itertuples():
        data = (out / f"{row.stem}{ext}").read_bytes()
        assert row.bytes == len(data) and row.bpp == pytest.approx(8 * len(data) / (row.height * row.width))
        assert np.array_equal(np.load(out / f"{row.stem}.npy"), codec.decode(data, name))  # what crops read
    pd.testing.assert_frame_equal(pd.read_csv(out / "bpp.csv"), df, check_dtype=False)


def test_settings_reach_the_encoder() -> None:
    img = _photo(96, 128)
    assert codec.encode(img, "avif", 80, subsampling="4:4:4") != codec.encode(img, "avif", 80, subsampling="4:2:0")
    assert codec.encode(img, "webp", 80, method=0) != codec.encode(img, "webp", 80, method=6)
    with pytest.raises(CaispError, match="unknown setting"):
        codec.encode(img, "webp", 80, speed=3)


@pytest.mark.parametrize("name", list(CODECS))
def test_quality_range(name: str) -> None:
    lo, hi = CODECS[name].quality
    for bad in (lo - 1, hi + 1, 50.5, True, "60"):
        with pytest.raises(CaispError, match=rf"{lo}\.\.{hi}"):
            codec.encode(_photo(), name, bad)


def test_params_name_the_key_of_a_bad_point_or_quality() -> None:
    for raw, key in [({"codec_points": ["webp-0"]}, r"codec_points\[0\]"),
                     ({"codec_points": ["avif-60", "jpeg2000-90"]}, r"codec_points\[1\]"),
                     ({"codec_points": ["png-80"]}, r"codec_points\[0\].*unknown codec 'png'"),
                     ({"codec_points": ["webp80"]}, r"codec_points\[0\]"),
                     ({"codec_points": ["jpeg-80"]}, r"codec_points\[0\].*qfs"),
                     ({"codec_points": ["webp-80", "webp-80"]}, "repeats"),
                     ({"codecs": {"avif": {"sweep": [50, 101]}}}, r"codecs\.avif\.sweep\[1\]"),
                     ({"codecs": {"heic": {"preset": "warp"}}}, r"codecs\.heic\.preset"),
                     ({"cas": {"codec_variants": ["unet", "djs"]}}, r"cas\.codec_variants.*JPEG only"),
                     ({"codec_points": ["webp-80"], "cas": {"codec_variants": ["acn"]}}, r"cas\.unfrozen")]:
        with pytest.raises(CaispError, match=key):
            from_dict(raw)


def test_points_names_and_sweeps() -> None:
    p = from_dict({"codec_points": ["webp-80", "jpeg2000-37"], "codecs": {"webp": {"sweep": [70, 90]}}})
    assert [pt.name for pt in p.points] == ["qf80", "qf90", "webp-80", "jpeg2000-37"]
    assert Point.parse("qf90") == Point("jpeg", 90) and Point("jpeg2000", 37).label == "JPEG 2000 37"
    assert p.sweep("webp") == [70, 80, 90]  # the training point joins its codec's sweep
    assert {pt.codec for pt in p.eval_points} == {"jpeg", "webp", "jpeg2000"}  # heic has no point: not swept
    assert p.codec_settings("avif") == {"speed": 6, "subsampling": "4:2:0"}
    assert p.codec_settings("jpeg") == {"subsampling": "4:2:0"}


@pytest.mark.parametrize("name,module,message", [
    ("heic", "pillow_heif", "pillow-heif.*codec_points"),
    ("mozjpeg", "jpeglib", "codec mozjpeg needs the jpeglib package.*pip install jpeglib"),
])
def test_missing_package_says_what_to_install(monkeypatch, name: str, module: str, message: str) -> None:
    real = builtins.__import__

    def missing(what, *args, **kwargs):
        if what == module:
            raise ImportError(f"No module named {module!r}")
        return real(what, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", missing)
    with pytest.raises(CaispError, match=message):
        codec.encode(_photo(), name, 50)


def test_jpeg_anchors_code_the_same_picture_in_fewer_bytes() -> None:
    """jpegopt and mozjpeg are JPEG at JPEG's quality scale: same tables, about the same picture, fewer bytes."""
    img = np.asarray(Image.fromarray(_photo(128, 192)).resize((384, 256)))
    base, base_n = codec.roundtrip(img, "jpeg", 85)
    opt, opt_n = codec.roundtrip(img, "jpegopt", 85)
    moz, moz_n = codec.roundtrip(img, "mozjpeg", 85)
    assert np.array_equal(opt, base) and opt_n < base_n  # Huffman tables only: identical pixels
    assert moz_n < base_n and abs(_psnr(moz, img) - _psnr(base, img)) < 1.0
    assert codec.encode(img, "mozjpeg", 85, subsampling="4:4:4") != codec.encode(img, "mozjpeg", 85)
    with pytest.raises(CaispError, match="unknown setting"):
        codec.encode(img, "mozjpeg", 85, trellis=False)
    p = from_dict({})
    assert p.sweep("mozjpeg") == p.sweep("jpeg") and p.codec_settings("mozjpeg") == {"subsampling": "4:2:0"}


def test_pillow_without_a_codec_names_it(monkeypatch) -> None:
    from PIL import features

    monkeypatch.setattr(features, "check", lambda name: name != "avif")
    with pytest.raises(CaispError, match="codec avif.*without avif"):
        codec.encode(_photo(), "avif", 60)


def _stages(tmp_path: Path, params: dict) -> list[str]:
    shutil.copy(ROOT / "dvc.yaml", tmp_path / "dvc.yaml")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    dvc = [sys.executable, "-m", "dvc"]
    if not (tmp_path / ".dvc").exists():
        subprocess.run([*dvc, "init", "--no-scm", "-q"], cwd=tmp_path, check=True)
    out = subprocess.run([*dvc, "stage", "list", "--name-only"], cwd=tmp_path, check=True, capture_output=True,
                         text=True).stdout
    return out.split()


def test_matrix_expansion(tmp_path: Path) -> None:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["cas"]["unfrozen"] = ["unet"]  # the Table 2 experiment's: its codec stages expand too
    default = _stages(tmp_path, params)
    assert not [s for s in default if "codec" in s]  # the default stays JPEG-only
    assert {"encode@80", "train_cas@90-djs", "evaluate@paper-80-unet", "pretrain_isp@today",
            "evaluate_controls@paper"} <= set(default)
    assert not [s for s in default if "today" in s and not s.startswith("pretrain_isp")]  # today: pretrained only
    params["codec_points"] = ["webp-80", "avif-60"]
    names = set(_stages(tmp_path, params))
    assert set(default) < names
    for point in ("webp-80", "avif-60"):
        assert {f"encode_codec@{point}", f"train_cas_codec@{point}-unet", f"train_cas_codec@{point}-acn",
                f"finetune_codec@paper-{point}-acn", f"finetune_unfrozen_codec@paper-{point}-unet",
                f"evaluate_codec@paper-{point}-unet", f"evaluate_unfrozen_codec@paper-{point}-unet"} <= names
        assert not [n for n in names if point in n and ("djs" in n or "kornia" in n)]
        assert f"baseline_cas_codec@{point}-blur" in names
    assert len(names) - len(default) == 2 * (1 + 2 + 1 + 2 + 1 + 2 + 1)  # encode, cas, blur, finetune..
    # The regime axis: a second fine-tuned regime doubles every fine-tuning and evaluation stage, not the CAS.
    params["aware_regimes"] = ["paper", "today"]
    both = set(_stages(tmp_path, params))
    assert {n.replace("@paper-", "@today-") for n in names if "@paper-" in n} <= both
    assert {"evaluate_controls@today", "finetune_control@today-agnostic"} <= both
    assert len(both) - len(names) == len([n for n in names if "@paper" in n and not n.startswith("pretrain_isp")])
    # The rate axis (issue 22): the estimate is fitted in every graph, its fine-tunings only with lambdas.
    assert {"fit_rate@80", "fit_rate@90"} <= set(default) and not [s for s in default if "_rate@paper" in s]
    params["rate"]["lambdas"] = [0.003, 0.01]
    rated = set(_stages(tmp_path, params))
    added = {f"{stage}@{r}-{qf}-{lam}" for stage in ("finetune_rate", "evaluate_rate") for r in ("paper", "today")
             for qf in (80, 90) for lam in ("0.003", "0.01")}
    assert rated - both == added
    # Every stage reads what its item names: the codec stages' commands carry the point.
    lock = json.dumps(yaml.safe_load((ROOT / "dvc.yaml").read_text()))
    assert "--point ${item.point}" in lock and "data/codecs/${item.point}" in lock

"""caisp.data.codec (Pillow JPEG, bpp) and caisp.data.split."""
from __future__ import annotations

import json
import random
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from caisp import CaispError
from caisp.data import store
from caisp.data.codec import SUBSAMPLING, decode_jpeg, encode_all, encode_jpeg, jpeg_roundtrip
from caisp.data.split import make_split
from caisp.metrics import bpp


def _photo(h: int = 64, w: int = 96, seed: int = 0) -> np.ndarray:
    """Smooth colour ramps plus mild noise: compresses like a photo, not like white noise."""
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([x * 255 / w, y * 255 / h, 128 + 100 * np.sin(x / 7.0) * np.cos(y / 5.0)], -1)
    noise = np.random.default_rng(seed).normal(0, 4, base.shape)
    return np.clip(base + noise, 0, 255).astype(np.uint8)


# --- codec -------------------------------------------------------------------------------------

def test_bpp_arithmetic(tmp_path: Path) -> None:
    data = encode_jpeg(_photo(), 75)
    (tmp_path / "a.jpg").write_bytes(data)
    assert (tmp_path / "a.jpg").stat().st_size == len(data)
    assert bpp(1000, 40, 50) == pytest.approx(4.0)  # 8000 bits over 2000 pixels
    assert bpp(len(data), 64, 96) == pytest.approx(8 * len(data) / (64 * 96))


@pytest.mark.parametrize("qf", [0, 101, -5, 50.5, True, "75"])
def test_qf_validated(qf) -> None:
    with pytest.raises(CaispError, match=re.escape(repr(qf))):
        encode_jpeg(_photo(), qf)


def test_subsampling_validated_and_changes_size() -> None:
    img = _photo()
    with pytest.raises(CaispError, match="4:1:1"):
        encode_jpeg(img, 75, "4:1:1")
    sizes = {s: len(encode_jpeg(img, 90, s)) for s in SUBSAMPLING}
    assert sizes["4:4:4"] > sizes["4:2:2"] > sizes["4:2:0"]


def test_image_validated() -> None:
    with pytest.raises(CaispError, match="uint8"):
        encode_jpeg(_photo().astype(np.float32), 75)
    with pytest.raises(CaispError, match="HxWx3"):
        encode_jpeg(_photo()[..., 0], 75)


def test_roundtrip_quality_and_stability() -> None:
    img = _photo()
    dec, nbytes = jpeg_roundtrip(img, 90, "4:4:4")
    assert dec.dtype == np.uint8 and dec.shape == img.shape
    mse = np.mean((dec.astype(np.float64) - img) ** 2)
    assert 10 * np.log10(255**2 / mse) > 30
    assert encode_jpeg(img, 90, "4:4:4") == encode_jpeg(img, 90, "4:4:4")  # no randomness
    low = jpeg_roundtrip(img, 10)[1]
    assert low < nbytes  # lower quality, fewer bytes
    with pytest.raises(CaispError, match="decode"):
        decode_jpeg(b"not a jpeg")


def test_encode_all(tmp_path: Path) -> None:
    rendered = tmp_path / "rendered"
    (rendered / "targets").mkdir(parents=True)
    shapes = {"b": (48, 80), "a": (64, 96), "stale": (32, 32)}
    for i, (stem, (h, w)) in enumerate(shapes.items()):
        store.write_array(rendered / "targets" / f"{stem}.npy", _photo(h, w, seed=i))
    # The manifest decides which targets count: "stale" is left over from an earlier run.
    (rendered / "manifest.json").write_text(json.dumps({"images": [{"stem": "a"}, {"stem": "b"}]}))
    out = tmp_path / "jpeg" / "qf50"
    out.mkdir(parents=True)
    (out / "old.jpg").write_bytes(b"old")
    (out / "old.npy").write_bytes(b"old")
    df = encode_all(rendered, out, codec="jpeg", quality=50, settings={"subsampling": "4:2:0"})
    assert list(df.columns) == ["stem", "height", "width", "bytes", "bpp"]
    assert list(df["stem"]) == ["a", "b"]
    assert sorted(p.name for p in out.iterdir()) == ["a.jpg", "a.npy", "b.jpg", "b.npy", "bpp.csv"]
    csv = pd.read_csv(out / "bpp.csv")
    pd.testing.assert_frame_equal(csv, df, check_dtype=False)
    for row in csv.itertuples():
        data = (out / f"{row.stem}.jpg").read_bytes()
        assert row.bytes == len(data)
        assert (row.height, row.width) == shapes[row.stem]
        assert row.bpp == pytest.approx(8 * len(data) / (row.height * row.width))
        assert data == encode_jpeg(_photo(row.height, row.width, seed=list(shapes).index(row.stem)), 50)
        assert np.array_equal(np.load(out / f"{row.stem}.npy"), decode_jpeg(data))  # what crops read
    with pytest.raises(CaispError, match="quality"):
        encode_all(rendered, out, codec="jpeg", quality=0)


# --- split -------------------------------------------------------------------------------------

STEMS = [f"img{i:03d}" for i in range(100)]


def test_split_deterministic_and_order_independent() -> None:
    a = make_split(STEMS, seed=3)
    shuffled = STEMS[:]
    random.Random(1).shuffle(shuffled)
    assert make_split(shuffled, seed=3) == a
    assert make_split(STEMS, seed=4) != a
    assert a["seed"] == 3 and a["ratios"] == [0.8, 0.05, 0.15]
    json.dumps(a)  # split.json-ready


def test_split_partition_and_proportions() -> None:
    s = make_split(STEMS)
    assert (len(s["train"]), len(s["val"]), len(s["test"])) == (80, 5, 15)
    joined = s["train"] + s["val"] + s["test"]
    assert sorted(joined) == STEMS and len(set(joined)) == 100


@pytest.mark.parametrize("n", range(3, 13))
def test_split_small_sets_non_empty(n: int) -> None:
    s = make_split([f"s{i}" for i in range(n)], seed=n)
    sizes = [len(s[k]) for k in ("train", "val", "test")]
    assert sum(sizes) == n and min(sizes) >= 1
    assert sizes[0] == max(sizes)


def test_split_zero_ratio_stays_empty() -> None:
    s = make_split(STEMS[:10], ratios=(0.5, 0.5, 0.0))
    assert len(s["test"]) == 0 and len(s["train"]) == len(s["val"]) == 5


@pytest.mark.parametrize("ratios", [(0.8, 0.2), (0.8, 0.1, 0.05, 0.05), (0.9, 0.2, -0.1),
                                    (0.8, 0.05, 0.1), (float("nan"), 0.5, 0.5),
                                    (float("inf"), 0.0, 0.0), ("a", "b", "c")])
def test_split_ratios_validated(ratios) -> None:
    with pytest.raises(CaispError, match=r"split\.ratios"):
        make_split(STEMS, ratios=ratios)


def test_split_too_few_or_duplicates() -> None:
    with pytest.raises(CaispError, match="at least 3"):
        make_split(["a", "b"])
    with pytest.raises(CaispError, match="duplicate"):
        make_split(["a", "b", "c", "a"])
    with pytest.raises(CaispError, match=r"split\.seed"):
        make_split(STEMS, seed=-1)


def test_encode_all_parallel_matches_serial(tmp_path: Path) -> None:
    rendered = tmp_path / "rendered"
    (rendered / "targets").mkdir(parents=True)
    for i in range(3):
        store.write_array(rendered / "targets" / f"im{i}.npy", _photo(32, 48, seed=i))
    serial = encode_all(rendered, tmp_path / "s", codec="jpeg", quality=80, settings={"subsampling": "4:4:4"})
    parallel = encode_all(rendered, tmp_path / "p", codec="jpeg", quality=80, settings={"subsampling": "4:4:4"}, workers=2)
    pd.testing.assert_frame_equal(serial, parallel)
    for i in range(3):
        assert (tmp_path / "s" / f"im{i}.jpg").read_bytes() == (tmp_path / "p" / f"im{i}.jpg").read_bytes()


def test_split_keeps_every_source_in_one_subset() -> None:
    stems = [f"photo{i}_r{r}c{c}" for i in range(20) for r in range(2) for c in range(3)]
    sources = {s: s.split("_")[0] for s in stems}
    sources["photo19_r0c0"] = "photo0"  # e.g. the other view of a stereo pair
    split = make_split(stems, ratios=(0.8, 0.05, 0.15), seed=3, sources=sources)
    owner = {}
    for name in ("train", "val", "test"):
        for stem in split[name]:
            assert owner.setdefault(sources[stem], name) == name, f"{sources[stem]} in two subsets"
        assert set(split["sources"][name]) == {sources[s] for s in split[name]}
    assert sorted(split["train"] + split["val"] + split["test"]) == sorted(stems)
    # Ratios apply to the 20 sources, not to the 120 tiles.
    assert [len(split["sources"][k]) for k in ("train", "val", "test")] == [16, 1, 3]
    assert split == make_split(list(reversed(stems)), ratios=(0.8, 0.05, 0.15), seed=3, sources=sources)
    with pytest.raises(CaispError, match="3 sources"):
        make_split(stems[:6], sources={s: "one" for s in stems[:6]})

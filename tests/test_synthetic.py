"""Synthetic camera: DNGs that LibRaw (rawpy) renders back to the source photo."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rawpy
import skimage.data
from PIL import Image

from caisp import CaispError
from caisp.data import synthetic as S

RENDER = dict(use_camera_wb=True, no_auto_bright=True)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / mse))


def pattern(raw: rawpy.RawPy) -> str:
    desc = raw.color_desc.decode()
    return "".join(desc[c] for c in raw.raw_colors_visible[:2, :2].ravel())


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return skimage.data.astronaut()[:256, :256]  # holds white suit: the sensor clips somewhere


@pytest.mark.parametrize("cfa", ["RGGB", "BGGR", "GRBG", "GBRG"])
def test_round_trip_every_cfa(tmp_path: Path, astronaut: np.ndarray, cfa: str) -> None:
    path = S.write_dng(tmp_path / "a.dng", astronaut, cfa=cfa, noise=False, seed=1)
    with rawpy.imread(str(path)) as raw:
        assert pattern(raw) == cfa
        out = raw.postprocess(**RENDER)
    assert out.shape == astronaut.shape
    assert psnr(out, astronaut) >= 30


def test_flat_patches_are_exact(tmp_path: Path) -> None:
    # Every grey level and a set of in-gamut colours as 8x8 flat patches: demosaicing cannot blur
    # them, so curve, colour matrix and white balance must invert LibRaw's to the last bit.
    grey = np.repeat(np.arange(256, dtype=np.uint8)[:, None], 3, axis=1)
    colours = np.random.default_rng(1).integers(40, 216, (256, 3), dtype=np.uint8)
    swatches = np.concatenate([grey, colours]).reshape(32, 16, 3)
    img = np.repeat(np.repeat(swatches, 8, axis=0), 8, axis=1)
    path = S.write_dng(tmp_path / "flat.dng", img, noise=False, seed=7)
    with rawpy.imread(str(path)) as raw:
        out = raw.postprocess(**RENDER)
    centres = out[3::8, 3::8].reshape(-1, 3).astype(int)
    assert np.array_equal(centres[:256], grey)
    assert np.abs(centres[256:] - colours).max() <= 1


def test_tile_without_highlight_round_trips_without_adjust_maximum(tmp_path: Path) -> None:
    img = skimage.data.chelsea()[:128, :128]  # no clipped highlight in this crop
    path = S.write_dng(tmp_path / "c.dng", img, noise=False)
    with rawpy.imread(str(path)) as raw:
        out = raw.postprocess(adjust_maximum_thr=0, **RENDER)
    assert psnr(out, img) >= 30


def test_tags_seen_by_libraw(tmp_path: Path, astronaut: np.ndarray) -> None:
    img = astronaut[:64, :96]
    for orientation, flip in [(1, 0), (3, 3), (6, 6), (8, 5)]:
        path = S.write_dng(tmp_path / f"o{orientation}.dng", img, seed=4, orientation=orientation)
        with rawpy.imread(str(path)) as raw:
            assert raw.sizes.flip == flip
            assert raw.black_level_per_channel == [600] * 4
            assert raw.white_level == 2**14 - 1
            assert raw.camera_whitebalance[:3] == pytest.approx(S.draw_wb_gains(4), rel=1e-5)
    r, g, b = S.draw_wb_gains(4)
    assert 1.7 <= r <= 2.4 and g == 1 and 1.3 <= b <= 1.9
    path = S.write_dng(tmp_path / "b10", img, bits=10, black_level=64, wb_gains=(3.0, 1.5, 2.25))
    with rawpy.imread(str(path)) as raw:
        assert (raw.white_level, raw.black_level_per_channel[0]) == (1023, 64)
        assert raw.camera_whitebalance[:3] == pytest.approx([2.0, 1.0, 1.5], rel=1e-5)
    path = S.write_dng(tmp_path / "bad_wb.dng", img, as_shot_neutral=(1, 1, 1))
    with rawpy.imread(str(path)) as raw:
        assert raw.camera_whitebalance[:3] == [1.0, 1.0, 1.0]


def test_path_is_kept_and_sides_made_even(tmp_path: Path) -> None:
    img = np.full((41, 57, 3), 100, np.uint8)
    path = S.write_dng(tmp_path / "no_suffix", img)  # pidng would append ".dng" to a name it writes
    assert path == tmp_path / "no_suffix" and sorted(p.name for p in tmp_path.iterdir()) == ["no_suffix"]
    with rawpy.imread(str(path)) as raw:
        assert raw.raw_image_visible.shape == (40, 56)


def test_determinism(tmp_path: Path, astronaut: np.ndarray) -> None:
    def mosaic(name: str, **kw) -> np.ndarray:
        with rawpy.imread(str(S.write_dng(tmp_path / name, astronaut[:64, :64], **kw))) as raw:
            return raw.raw_image_visible.copy()

    a, b, c = mosaic("a.dng", seed=3), mosaic("b.dng", seed=3), mosaic("c.dng", seed=4)
    assert a.tobytes() == b.tobytes()
    assert (tmp_path / "a.dng").read_bytes() == (tmp_path / "b.dng").read_bytes()
    assert not np.array_equal(a, c)
    # With the same gains, the seed changes only the noise; without noise it changes nothing.
    wb = (2.0, 1.0, 1.5)
    assert not np.array_equal(mosaic("d.dng", seed=3, wb_gains=wb), mosaic("e.dng", seed=4, wb_gains=wb))
    assert np.array_equal(mosaic("f.dng", seed=3, wb_gains=wb, noise=False),
                          mosaic("g.dng", seed=4, wb_gains=wb, noise=False))
    assert S.image_seed(0, "astronaut") == 3182611174135261014  # not Python's salted str hash
    assert S.image_seed(0, "astronaut") != S.image_seed(1, "astronaut")


def test_photos_sources_and_tiling() -> None:
    whole = S.load_photos(kodak=False)
    assert [n for n, _, _ in whole] == list(S.SKIMAGE_PHOTOS)
    assert all(im.dtype == np.uint8 and im.ndim == 3 and im.shape[2] == 3 for _, _, im in whole)
    source = {n: src for n, src, _ in whole}
    # The stereo pair shows one scene: one source, so the split never separates it.
    assert source["motorcycle_left"] == source["motorcycle_right"] != source["chelsea"] == "chelsea"
    tiles = S.load_photos(tile=192, kodak=False)
    expected = sum((im.shape[0] // 192) * (im.shape[1] // 192) for _, _, im in whole)
    assert len(tiles) == expected == 103
    assert all(im.shape == (192, 192, 3) for _, _, im in tiles)
    by_name = {n: src for n, src, _ in tiles}
    assert by_name["hubble_deep_field_r3c4"] == "hubble_deep_field"  # a tile keeps its photo
    assert [n for n, _, _ in S.load_photos(tile=5000, kodak=False)] == list(S.SKIMAGE_PHOTOS)


def test_vendored_kodak_photos_are_checked() -> None:
    kodak = S.kodak_photos()
    assert len(kodak) == 24 and kodak[0][0] == "kodim01"
    assert {im.shape for _, im in kodak} == {(512, 768, 3), (768, 512, 3)}
    names = [n for n, _, _ in S.load_photos()]
    assert len(names) == 33 and len(set(names)) == 33


def test_damaged_kodak_photo_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    fake = tmp_path / "kodak24"
    shutil.copytree(S.KODAK_DIR, fake)
    (fake / "kodim07.png").write_bytes(b"damaged")
    monkeypatch.setattr(S, "KODAK_DIR", fake)
    with pytest.raises(CaispError, match="kodim07.png"):
        S.kodak_photos()


def test_camera_draw_is_seeded_and_uses_the_list() -> None:
    cams = list(S.CAMERAS)
    drawn = [S.draw_camera(S.image_seed(0, f"p{i}"), cams) for i in range(60)]
    assert set(drawn) == set(cams)  # several cameras, so no single colour matrix to learn
    assert drawn == [S.draw_camera(S.image_seed(0, f"p{i}"), cams) for i in range(60)]
    assert S.draw_camera(123, ["Pentax K-5"]) == "Pentax K-5"
    with pytest.raises(CaispError, match="unknown camera"):
        S.draw_camera(1, ["Canon EOS 550D"])


def test_dng_carries_the_camera_matrix_libraw_renders_with(tmp_path: Path, astronaut: np.ndarray) -> None:
    from caisp.data.raw import read_raw

    for cam in ("Nikon D700", "Olympus E-M5"):
        path = S.write_dng(tmp_path / f"{cam[:5]}.dng", astronaut[:64, :64], camera=cam, noise=False)
        raw = read_raw(path)
        # LibRaw's rgb_cam is the inverse of the row-normalised cam_rgb the synthetic camera used.
        np.testing.assert_allclose(raw.rgb_cam, np.linalg.inv(S.camera_from_srgb(S.xyz_to_cam(cam))), atol=2e-3)
        assert raw.colour_valid and cam in raw.camera


def test_lens_blur_lowers_detail_and_bpp(tmp_path: Path) -> None:
    from caisp.data.codec import encode_jpeg
    from caisp.data.render import render_one

    img = S.kodak_photos()[12][1][:256, :256]
    sizes = {}
    for blur in (0.0, 2.0):
        path = S.write_dng(tmp_path / f"b{blur}.dng", img, blur=blur, noise=False)
        entry = render_one(path, tmp_path / f"r{blur}")
        y = np.load(tmp_path / f"r{blur}" / "targets" / f"{entry['stem']}.npy")
        sizes[blur] = len(encode_jpeg(y, 80, "4:2:0"))
    assert sizes[2.0] < 0.8 * sizes[0.0]
    with pytest.raises(CaispError, match="blur"):
        S.write_dng(tmp_path / "x.dng", img, blur=-1)
    with pytest.raises(CaispError, match="scale"):
        S.write_dng(tmp_path / "x.dng", img, scale=0)
    up = S.write_dng(tmp_path / "up.dng", img[:64, :64], scale=2.0, noise=False)
    import rawpy

    with rawpy.imread(str(up)) as raw:
        assert raw.raw_image_visible.shape == (128, 128)


def test_extra_dir_and_synthesize(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    photos = tmp_path / "mine"
    photos.mkdir()
    Image.fromarray(np.full((50, 70, 3), 90, np.uint8)).save(photos / "beach.JPG")
    Image.fromarray(np.zeros((30, 30), np.uint8)).save(photos / "grey.png")
    (photos / "notes.txt").write_text("not a photo")
    loaded = {n: im for n, _, im in S.load_photos(photos, kodak=False)}
    assert loaded["beach"].shape == (50, 70, 3) and loaded["grey"].shape == (30, 30, 3)

    # Only the user's photos (and one small scikit-image one) keep synthesize fast here.
    monkeypatch.setattr(S, "SKIMAGE_PHOTOS", ("chelsea",))
    out = S.synthesize(tmp_path / "raw", extra_dir=photos, tile=32, seed=5, kodak=False,
                       cameras=list(S.CAMERAS))
    names = [e["name"] for e in out]
    assert names == sorted(names) and "beach_r0c1.dng" in names and "grey.dng" in names
    assert len(out) == 9 * 14 + 2 + 1
    assert {e["source"] for e in out} == {"chelsea", "beach", "grey"}
    assert len({e["camera"] for e in out if e["source"] == "chelsea"}) == 1  # one camera per photo
    assert not [p for p in (tmp_path / "raw").iterdir() if p.suffix != ".dng"]
    again = S.synthesize(tmp_path / "raw2", extra_dir=photos, tile=32, seed=5, workers=2, kodak=False,
                         cameras=list(S.CAMERAS))
    assert [e["path"].read_bytes() for e in again] == [e["path"].read_bytes() for e in out]


def test_bad_arguments(tmp_path: Path) -> None:
    img = np.zeros((32, 32, 3), np.uint8)
    for kw, word in [({"cfa": "RGBX"}, "cfa"), ({"bits": 9}, "bits"), ({"bits": 17}, "bits"),
                     ({"orientation": 2}, "orientation"), ({"wb_gains": (1, 0, 1)}, "wb_gains"),
                     ({"seed": -1}, "seed")]:
        with pytest.raises(CaispError, match=word):
            S.write_dng(tmp_path / "x.dng", img, **kw)
    with pytest.raises(CaispError, match="uint8"):
        S.write_dng(tmp_path / "x.dng", img.astype(np.float32))
    with pytest.raises(CaispError, match="22"):
        S.write_dng(tmp_path / "x.dng", img[:20])
    with pytest.raises(CaispError, match="tile"):
        S.load_photos(tile=-1)
    with pytest.raises(CaispError, match="cfa"):
        S.synthesize(tmp_path, cfa="rggb")
    with pytest.raises(CaispError, match="does not exist"):
        S.load_photos(tmp_path / "missing")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CaispError, match="no image"):
        S.load_photos(empty)
    (empty / "broken.png").write_bytes(b"not a png")
    with pytest.raises(CaispError, match="broken.png"):
        S.load_photos(empty)
    (empty / "broken.png").unlink()
    Image.fromarray(img).save(empty / "twin.png")
    Image.fromarray(img).save(empty / "twin.jpg")
    with pytest.raises(CaispError, match="twin"):
        S.load_photos(empty)
    with pytest.raises(CaispError, match="workers"):
        S.synthesize(tmp_path, workers=0)
    with pytest.raises(CaispError, match="black_level"):
        S.write_dng(tmp_path / "x.dng", img, bits=10, black_level=600)
    assert not list(tmp_path.glob("*.part")) and not list(tmp_path.glob(".*"))

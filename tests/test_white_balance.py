"""caisp.data.raw.white_balance: the WB that LibRaw's `postprocess(use_camera_wb=True)` applies, for
every kind of as-shot WB a file can carry (LibRaw 0.22 as bundled with rawpy).

Two checks per case: rendering with our multipliers as `user_wb` gives LibRaw's own rendering
(bit-exact where the gains are LibRaw's), and our WB applied to the mosaic has the colour balance
(channel-mean ratios) of LibRaw's linear raw-colour rendering.
"""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import rawpy

from caisp.data.bayer import apply_wb, cfa_masks
from caisp.data.raw import GENERIC_WB, WB_SOURCES, open_raw, read_raw, white_balance
from caisp.data.synthetic import write_dng

CANON = "canon550d_magiclantern_colorchart.dng"
DC50 = "kodak_dc50_RAW_KODAK_DC50.KDC"
LINEAR = dict(no_auto_bright=True, gamma=(1, 1), output_color=rawpy.ColorSpace.raw, output_bps=16)


def scene(h: int = 96, w: int = 128) -> np.ndarray:
    """Smooth colour ramps plus a clipped white patch: the auto WB must skip the saturated blocks."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    y, x = y / (h - 1), x / (w - 1)
    rgb = np.stack([40 + 150 * x, 60 + 90 * x * y, 50 + 140 * y], -1)
    rgb[8:40, 8:40] = 255
    return np.rint(rgb).astype(np.uint8)


def render(path: Path, **kw) -> np.ndarray:
    with rawpy.imread(str(path)) as raw:
        return raw.postprocess(**LINEAR, **kw).astype(np.float64)


def render_with(path: Path, wb: np.ndarray) -> np.ndarray:
    return render(path, user_wb=[float(wb[0]), 1.0, float(wb[2]), 1.0])


def balance(rgb: np.ndarray) -> np.ndarray:
    """R/G and B/G of the channel means of an (H, W, 3) image."""
    m = rgb.reshape(-1, 3).mean(0)
    return np.array([m[0] / m[1], m[2] / m[1]])


def mosaic_balance(path: Path, wb: np.ndarray) -> np.ndarray:
    """R/G and B/G of the channel means of our WB-applied (and clipped, as LibRaw clips) mosaic."""
    img = read_raw(path)
    m = apply_wb(img.mosaic, img.cfa, wb, clip=True).numpy()
    masks = cfa_masks(img.cfa, *m.shape).numpy()
    means = [(m * masks[c]).sum() / masks[c].sum() for c in range(3)]
    return np.array([means[0] / means[1], means[2] / means[1]])


def reported_wb(path: Path) -> list[float]:
    with rawpy.imread(str(path)) as raw:
        return [float(v) for v in raw.camera_whitebalance]


def with_camera_wb(path: Path, camera_wb, daylight=None) -> SimpleNamespace:
    """The rawpy attributes white_balance reads, from a real file, with a WB no DNG tag can carry
    (LibRaw's DNG parser turns every bad AsShotNeutral into 0 or 1, see the tests below)."""
    with open_raw(path) as raw:
        return SimpleNamespace(
            camera_whitebalance=list(camera_wb), raw_image_visible=raw.raw_image_visible.copy(),
            raw_colors_visible=raw.raw_colors_visible.copy(),
            black_level_per_channel=list(raw.black_level_per_channel), white_level=raw.white_level,
            daylight_whitebalance=list(raw.daylight_whitebalance) if daylight is None else daylight)


@pytest.fixture
def dng(tmp_path):
    def make(name: str, **kw) -> Path:
        return write_dng(tmp_path / f"{name}.dng", scene(), noise=True, seed=5, **kw)
    return make


def test_camera_wb_used_as_is(dng):
    path = dng("camera")
    img = read_raw(path)
    cam = reported_wb(path)
    assert img.wb_source == "camera" and img.wb_valid
    np.testing.assert_allclose(img.wb, [cam[0] / cam[1], 1.0, cam[2] / cam[1]], rtol=1e-6)
    reference = render(path, use_camera_wb=True)
    np.testing.assert_array_equal(render_with(path, img.wb), reference)
    np.testing.assert_allclose(mosaic_balance(path, img.wb), balance(reference), rtol=0.02)


@pytest.mark.parametrize("neutral", [(1, 1, 1), (1, 0, 1)])
def test_unity_camera_wb_is_applied_as_unity(dng, neutral):
    """LibRaw reports (1, 1, 1) for a unity AsShotNeutral and for a zero green one, and renders
    them with unity gains (not daylight)."""
    path = dng("unity", as_shot_neutral=neutral)
    assert reported_wb(path)[:3] == [1.0, 1.0, 1.0]
    img = read_raw(path)
    assert img.wb_source == "unity" and not img.wb_valid
    np.testing.assert_array_equal(img.wb, np.ones(3, np.float32))
    reference = render(path, use_camera_wb=True)
    np.testing.assert_array_equal(render_with(path, img.wb), reference)
    assert not np.allclose(balance(reference), balance(render(path)), rtol=0.05)  # daylight differs
    np.testing.assert_allclose(mosaic_balance(path, img.wb), balance(reference), rtol=0.02)


@pytest.mark.parametrize("neutral", [(0, 0, 0), (1, 1, 0), (1, 1, 1e6)])
def test_missing_camera_wb_renders_as_auto_wb(dng, neutral):
    """A zero or absurd AsShotNeutral: LibRaw reports cam_mul[0] = 0 and its camera-WB rendering is
    exactly its auto-WB rendering, whose balance we compute."""
    path = dng("auto", as_shot_neutral=neutral)
    assert reported_wb(path)[0] == 0.0
    reference = render(path, use_camera_wb=True)
    np.testing.assert_array_equal(reference, render(path, use_auto_wb=True))
    img = read_raw(path)
    assert img.wb_source == "auto" and not img.wb_valid
    # LibRaw also balances the two greens apart (a 3-gain WB cannot): within 0.5%, not bit-exact.
    np.testing.assert_allclose(balance(render_with(path, img.wb)), balance(reference), rtol=0.005)
    np.testing.assert_allclose(mosaic_balance(path, img.wb), balance(reference), rtol=0.02)


def test_auto_wb_skips_saturated_blocks(dng):
    path = dng("auto", as_shot_neutral=(0, 0, 0))
    raw = with_camera_wb(path, [0, 1, 0, 0])
    wb, _ = white_balance(raw)
    raw.white_level = 1 << 20  # nothing near saturation any more: the white patch now counts
    wb_all, _ = white_balance(raw)
    assert not np.allclose(wb, wb_all, rtol=0.01)


def test_minus_one_means_auto(dng):
    """dcraw's cam_mul[0] = -1 (set by some camera parsers, not reachable through a DNG tag)."""
    path = dng("auto", as_shot_neutral=(0, 0, 0))
    wb, source = white_balance(with_camera_wb(path, [-1.0, 1.0, 1.0, 0.0]))
    assert source == "auto"
    np.testing.assert_allclose(wb, read_raw(path).wb, rtol=1e-6)


@pytest.mark.parametrize("camera_wb", [[float("nan"), 1, 1, 0], [2.0, 1.0, 0.0, 0.0],
                                       [float("inf"), 1, 1.5, 0]])
def test_unusable_camera_wb_falls_back_to_daylight(dng, camera_wb):
    """A non-finite or zero-blue WB (not reachable through a DNG tag): LibRaw keeps its daylight
    multipliers, i.e. renders as with use_camera_wb=False."""
    path = dng("camera")
    wb, source = white_balance(with_camera_wb(path, camera_wb))
    assert source == "daylight"
    with rawpy.imread(str(path)) as raw:
        day = np.array(raw.daylight_whitebalance[:3])
    np.testing.assert_allclose(wb, day / day[1], rtol=1e-6)
    np.testing.assert_array_equal(render_with(path, wb), render(path))


def test_generic_when_daylight_unusable_too(dng):
    path = dng("camera")
    wb, source = white_balance(with_camera_wb(path, [float("nan"), 1, 1, 0], daylight=[0, 0, 0, 0]))
    assert source == "generic" and source in WB_SOURCES
    np.testing.assert_array_equal(wb, GENERIC_WB)


@pytest.mark.parametrize("name,source", [(CANON, "camera"), (DC50, "unity")])
def test_real_samples_match_libraw(raw_samples, name, source):
    path = raw_samples / name
    img = read_raw(path)
    assert img.wb_source == source
    if name == DC50:
        assert reported_wb(path) == [1.0, 1.0, 1.0, 1.0]
    reference = render(path, use_camera_wb=True)
    np.testing.assert_array_equal(render_with(path, img.wb), reference)
    np.testing.assert_allclose(mosaic_balance(path, img.wb), balance(reference), rtol=0.02)

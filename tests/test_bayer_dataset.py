"""Bilinear demosaicing, WB, CFA shifts, and RawRGBDataset crops/augmentation on a fake rendered dir."""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from caisp import CaispError
from caisp.data.bayer import CFA_PATTERNS, apply_wb, cfa_masks, demosaic_bilinear, to_pattern
from caisp.data import store
from caisp.data.dataset import RawRGBDataset


def _mosaic(rgb: torch.Tensor, cfa: str) -> torch.Tensor:
    """(3, H, W) -> (H, W): sample each site's colour."""
    return (rgb * cfa_masks(cfa, *rgb.shape[-2:], dtype=rgb.dtype)).sum(0)


@pytest.mark.parametrize("cfa", CFA_PATTERNS)
def test_masks(cfa: str) -> None:
    m = cfa_masks(cfa, 4, 6)
    assert m.shape == (3, 4, 6) and torch.equal(m.sum(0), torch.ones(4, 6))
    assert "RGB"[int(m[:, 0, 0].argmax())] == cfa[0] and "RGB"[int(m[:, 1, 1].argmax())] == cfa[3]
    assert m[1].sum() == 12  # half the sites are green


@pytest.mark.parametrize("cfa", CFA_PATTERNS)
def test_constant_colour_exact(cfa: str) -> None:
    colour = torch.tensor([0.7, 0.3, 0.55], dtype=torch.float64)
    rgb = colour[:, None, None].expand(3, 10, 12)
    out = demosaic_bilinear(_mosaic(rgb, cfa), cfa)
    assert out.dtype == torch.float64 and torch.equal(out, rgb)


@pytest.mark.parametrize("cfa", CFA_PATTERNS)
def test_ramp_interior_and_samples(cfa: str) -> None:
    h, w = 8, 14
    x = torch.arange(w, dtype=torch.float32).expand(h, w)
    rgb = torch.stack([x, 2 * x + 1, 3 * x + 5])
    mosaic = _mosaic(rgb, cfa)
    out = demosaic_bilinear(mosaic.numpy(), cfa)  # numpy input accepted
    assert torch.equal(out[:, 1:-1, 1:-1], rgb[:, 1:-1, 1:-1])
    masks = cfa_masks(cfa, h, w).bool()
    assert torch.equal(out[masks], mosaic.expand(3, h, w)[masks])
    # Batched (B, 1, H, W) gives the same result per image.
    batch = torch.stack([mosaic, mosaic.flip(-1)])[:, None]
    assert torch.equal(demosaic_bilinear(batch, cfa)[0], out)


def test_samples_kept_random() -> None:
    g = torch.Generator().manual_seed(0)
    mosaic = torch.rand(1, 1, 12, 10, generator=g)
    out = demosaic_bilinear(mosaic, "GRBG")
    masks = cfa_masks("GRBG", 12, 10).bool()
    assert torch.equal((out[0] * masks).sum(0), mosaic[0, 0])
    assert 0 <= out.min() and out.max() <= 1


def test_apply_wb() -> None:
    mosaic = np.full((4, 4), 0.5, dtype=np.float32)
    out = apply_wb(mosaic, "RGGB", [2.5, 1.0, 1.5])
    assert out[0, 0] == 1.25 and out[0, 1] == 0.5 and out[1, 0] == 0.5 and out[1, 1] == 0.75
    assert apply_wb(mosaic, "RGGB", [2.5, 1.0, 1.5], clip=True).max() == 1.0
    with pytest.raises(CaispError):
        apply_wb(mosaic, "RGGB", [1.0, 1.0])


@pytest.mark.parametrize("src", CFA_PATTERNS)
@pytest.mark.parametrize("dst", CFA_PATTERNS)
def test_to_pattern(src: str, dst: str) -> None:
    h, w = 6, 8
    labels = torch.tensor([float("RGB".index(c)) for c in src]).view(2, 2).repeat(h // 2, w // 2)
    out, (dy, dx) = to_pattern(labels.numpy(), src, dst)
    assert "".join("RGB"[int(v)] for v in out[:2, :2].flatten()) == dst
    assert out.shape == (h - 2 * dy, w - 2 * dx)
    assert torch.equal(out, labels[dy : dy + out.shape[0], dx : dx + out.shape[1]])


def test_unknown_pattern() -> None:
    with pytest.raises(CaispError, match="XGGB"):
        to_pattern(torch.zeros(4, 4), "XGGB", "RGGB")
    with pytest.raises(CaispError, match="rgbw"):
        demosaic_bilinear(torch.zeros(4, 4), "rgbw")


# ---------------------------------------------------------------- dataset

H, W = 70, 90
WB = np.array([2.0, 1.0, 1.5], dtype=np.float32)


def _target() -> np.ndarray:
    """Coordinate-encoding sRGB: R = row, G = column, B constant; linear, so bilinear is near exact."""
    yy, xx = np.mgrid[:H, :W]
    return np.stack([yy, xx, np.full_like(yy, 200)], -1).astype(np.uint8)


BLACK, WHITE = 512.0, 16383.0


def write_rendered(root: Path, stem: str, mosaic: np.ndarray, cfa: str, target: np.ndarray,
                   rgb_cam: np.ndarray | None = None, jpeg: np.ndarray | None = None) -> None:
    """One image in the layout of caisp.data.store: `mosaic` in [0, 1] stored as 14-bit sensor values."""
    data = np.round(BLACK + np.asarray(mosaic, np.float64) * (WHITE - BLACK)).astype(np.uint16)
    store.write_array(root / "mosaics" / f"{stem}.npy", data)
    store.write_meta(root / "meta" / f"{stem}.json", cfa=cfa, black=np.full((2, 2), BLACK, np.float32),
                     white=WHITE, wb=WB, daylight_wb=WB,
                     rgb_cam=np.eye(3, dtype=np.float32) if rgb_cam is None else rgb_cam, flip=0)
    store.write_array(root / "targets" / f"{stem}.npy", target)
    if jpeg is not None:
        store.write_array(root / "jpeg" / f"{stem}.npy", jpeg)


@pytest.fixture
def rendered(tmp_path: Path) -> Path:
    target = _target()
    for stem, cfa in (("a", "RGGB"), ("b", "GBRG")):
        # Mosaic = target / WB: input_norm="wb" gives back the target's values.
        mosaic = _mosaic(torch.from_numpy(target / 255.0 / WB).permute(2, 0, 1), cfa)
        buf = io.BytesIO()
        Image.fromarray(target).save(buf, format="JPEG", quality=95, subsampling=0)
        write_rendered(tmp_path, stem, mosaic.numpy(), cfa, target, jpeg=np.asarray(Image.open(buf)))
    return tmp_path


def _full_mosaic(rendered: Path, stem: str) -> np.ndarray:
    return store.RenderedImage(rendered, stem).mosaic()


def _origin(srgb: torch.Tensor) -> tuple[int, int]:
    """Top-left (row, column) of the crop in the full image, whatever the flip/rotation."""
    return round(srgb[0].min().item() * 255), round(srgb[1].min().item() * 255)


def test_train_crops(rendered: Path) -> None:
    torch.manual_seed(0)
    ds = RawRGBDataset(rendered, ["a", "b"], coded_dir=rendered / "jpeg", patch=32, train=True, repeat=3)
    assert len(ds) == 6 and [ds[i]["stem"] for i in range(6)] == ["a", "b"] * 3
    origins, orientations = set(), set()
    for i in range(40):
        item = ds[i % len(ds)]
        assert set(item) == {"raw", "srgb", "coded", "stem"}
        for key in ("raw", "srgb", "coded"):
            t = item[key]
            assert t.shape == (3, 32, 32) and t.dtype == torch.float32 and 0 <= t.min() and t.max() <= 1
        y0, x0 = _origin(item["srgb"])
        assert y0 % 16 == 0 and x0 % 16 == 0 and y0 + 32 <= H and x0 + 32 <= W
        origins.add((y0, x0))
        # Where the crop's top-left corner went tells the flip/rotation.
        s = item["srgb"]
        orientations.add(tuple(int(v) for v in torch.nonzero((s[0] == s[0].min()) & (s[1] == s[1].min()))[0]))
        # Same transform everywhere: raw (bilinear of a linear image) and jpeg match srgb closely.
        assert (item["raw"] - s).abs().max() <= 1.02 / 255  # 1 level off only at image borders
        assert (item["coded"] - s).abs().max() <= 8 / 255
    assert len(origins) > 4 and len(orientations) == 4


def test_val_centre_crop_and_window_demosaic(rendered: Path) -> None:
    ds = RawRGBDataset(rendered, ["a", "b"], patch=32, train=False)
    a, again = ds[0], ds[0]
    assert "coded" not in a and all(torch.equal(a[k], again[k]) for k in ("raw", "srgb"))
    assert _origin(a["srgb"]) == (16, 16)  # ((70 - 32) // 2) // 16 * 16, ((90 - 32) // 2) // 16 * 16
    assert a["srgb"][0, 0, 0] * 255 == 16 and a["srgb"][1, 0, 0] * 255 == 16  # not flipped
    full = demosaic_bilinear(apply_wb(_full_mosaic(rendered, "a"), "RGGB", WB, clip=True), "RGGB")
    assert torch.equal(a["raw"], full[:, 16:48, 16:48])


def test_whole_image_and_small(rendered: Path) -> None:
    whole = RawRGBDataset(rendered, ["b"], coded_dir=rendered / "jpeg", train=True)[0]
    assert whole["raw"].shape == whole["srgb"].shape == whole["coded"].shape == (3, 64, 80)
    assert _origin(whole["srgb"]) == (0, 0) and whole["srgb"][1, 0, 79] * 255 == 79
    big = RawRGBDataset(rendered, ["a"], patch=128, train=True)[0]
    assert big["raw"].shape == (3, 64, 64)  # largest multiple of 16 that fits


def test_input_norm_camera_applies_the_colour_matrix(rendered: Path) -> None:
    m = np.array([[1.6, -0.4, -0.2], [-0.2, 1.5, -0.3], [0.0, -0.5, 1.5]], np.float32)
    meta = json.loads((rendered / "meta" / "a.json").read_text())
    (rendered / "meta" / "a.json").write_text(json.dumps({**meta, "rgb_cam": m.tolist()}))
    wb = RawRGBDataset(rendered, ["a"], patch=32, train=False, input_norm="wb")[0]["raw"]
    cam = RawRGBDataset(rendered, ["a"], patch=32, train=False, input_norm="camera")[0]["raw"]
    expected = torch.einsum("ij,jhw->ihw", torch.from_numpy(m), wb).clamp(0, 1)
    torch.testing.assert_close(cam, expected)


def test_input_norm_none(rendered: Path) -> None:
    item = RawRGBDataset(rendered, ["a"], patch=16, train=False, input_norm="none")[0]
    full = demosaic_bilinear(_full_mosaic(rendered, "a"), "RGGB")
    y0, x0 = _origin(item["srgb"])
    assert torch.equal(item["raw"], full[:, y0 : y0 + 16, x0 : x0 + 16])


def test_items_read_their_files_each_time(rendered: Path) -> None:
    """Nothing is cached per process (RSS must not grow with the data set): a file that goes away
    after the dataset was built is reported by name at the next read."""
    ds = RawRGBDataset(rendered, ["b"], patch=16, train=False)
    ds[0]
    (rendered / "targets" / "b.npy").unlink()
    with pytest.raises(CaispError, match="b.npy"):
        ds[0]


def test_window_equals_the_whole_image_normalised(rendered: Path) -> None:
    """Per-window normalisation of the 14-bit values equals normalising the whole image at once
    (the arithmetic of caisp.data.raw.raw_image_from)."""
    img = store.RenderedImage(rendered, "b")
    full = img.mosaic()
    assert full.dtype == np.float32 and 0 <= full.min() and full.max() <= 1
    assert np.array_equal(img.mosaic(16, 32, 20, 30), full[16:36, 32:62])
    with pytest.raises(ValueError, match="even"):
        img.mosaic(1, 0, 4, 4)


@pytest.mark.parametrize(
    "kwargs,match",
    [({"patch": 0}, "patch"), ({"patch": 20}, "patch"), ({"patch": -16}, "patch"), ({"patch": True}, "patch"),
     ({"input_norm": "gray"}, "input_norm"), ({"repeat": 0}, "repeat"), ({"keys": ["raw", "rgb"]}, "rgb"),
     ({"keys": ["srgb", "coded"]}, "coded_dir")],
)
def test_bad_arguments(rendered: Path, kwargs: dict, match: str) -> None:
    with pytest.raises(CaispError, match=match):
        RawRGBDataset(rendered, ["a"], **kwargs)


def test_bad_files(rendered: Path) -> None:
    with pytest.raises(CaispError, match="missing"):
        RawRGBDataset(rendered, ["nope"])
    store.write_array(rendered / "targets" / "a.npy", _target()[:, :88])
    with pytest.raises(CaispError, match="'a'"):
        RawRGBDataset(rendered, ["a"])[0]
    meta = json.loads((rendered / "meta" / "b.json").read_text())
    (rendered / "meta" / "b.json").write_text(json.dumps({**meta, "cfa": "RGBW"}))
    with pytest.raises(CaispError, match="RGBW"):
        RawRGBDataset(rendered, ["b"])[0]
    (rendered / "mosaics" / "b.npy").write_bytes(b"not numpy")
    with pytest.raises(CaispError, match="b.npy"):
        RawRGBDataset(rendered, ["b"])[0]
    with pytest.raises(IndexError):
        RawRGBDataset(rendered, ["b"])[1]


@pytest.mark.parametrize("norm", ["camera", "none"])
def test_augmenting_the_mosaic_equals_augmenting_the_demosaic(rendered: Path, norm: str) -> None:
    """The loader flips/turns the one-channel mosaic window (with its CFA pattern) before demosaicing;
    that must equal flipping/turning the demosaiced crop, at the image border and inside it."""
    from caisp.data.dataset import NO_AUGMENT, _raw_window

    img = store.RenderedImage(rendered, "b")
    for y0, x0, h, w in ((0, 0, 32, 48), (16, 32, 48, 32), (22, 42, 48, 48)):
        plain = _raw_window(img, y0, x0, h, w, norm, NO_AUGMENT)
        for flip_v in (0, 1):
            for flip_h in (0, 1):
                for rot in range(4):
                    expected = plain.flip(-2) if flip_v else plain
                    expected = expected.flip(-1) if flip_h else expected
                    expected = torch.rot90(expected, rot, dims=(-2, -1))
                    got = _raw_window(img, y0, x0, h, w, norm, (flip_v, flip_h, rot))
                    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)


def test_keys_and_uint8_give_the_same_crops_with_less(rendered: Path) -> None:
    """A CAS task's dataset (srgb and jpeg only, 8-bit) yields exactly the default's crops of those
    keys: skipping the demosaic draws no random numbers, and the float conversion is the loader's."""
    from caisp.data.dataset import to_float
    from caisp.train import _to_device

    full = RawRGBDataset(rendered, ["a", "b"], coded_dir=rendered / "jpeg", patch=32, train=True, repeat=3)
    lean = RawRGBDataset(rendered, ["a", "b"], coded_dir=rendered / "jpeg", patch=32, train=True, repeat=3,
                         keys=("srgb", "coded"), uint8=True)
    assert full.keys == ("raw", "srgb", "coded")
    for i in range(len(full)):
        torch.manual_seed(i)
        a = full[i]
        torch.manual_seed(i)
        b = lean[i]
        assert set(b) == {"srgb", "coded", "stem"} and b["stem"] == a["stem"]
        for key in ("srgb", "coded"):
            assert b[key].dtype == torch.uint8 and b[key].shape == a[key].shape
            assert torch.equal(to_float(b[key].clone()), a[key])
    moved = _to_device({"srgb": lean[0]["srgb"][None], "stem": ["a"]}, torch.device("cpu"), channels_last=False)
    assert moved["srgb"].dtype == torch.float32 and moved["srgb"].max() <= 1
    isp = RawRGBDataset(rendered, ["a"], patch=32, train=False, keys=("raw", "srgb"))[0]
    assert set(isp) == {"raw", "srgb", "stem"} and isp["srgb"].dtype == torch.float32

"""Real-JPEG evaluation arithmetic, Bjontegaard deltas and summaries (Pillow stand-in codec)."""
from __future__ import annotations

import io
import math

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torch import nn

from caisp import evaluate as ev
from caisp import stats
from caisp.bjontegaard import bd_psnr, bd_rate
from caisp.codecs import Point


def _pil_encode(img: np.ndarray, qf: int, subsampling: str = "4:2:0") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=qf, subsampling=subsampling)
    return buf.getvalue()


def _pil_decode(data: bytes) -> np.ndarray:
    return np.array(Image.open(io.BytesIO(data)).convert("RGB"))


@pytest.fixture(autouse=True)
def pillow_codec(monkeypatch):
    """Independent of caisp.data.codec (written elsewhere): plain Pillow with the same settings."""
    def codec(name: str, settings: dict | None = None):
        sub = (settings or {}).get("subsampling", "4:2:0")
        return (lambda img, q: _pil_encode(img, q, sub)), _pil_decode

    monkeypatch.setattr(ev, "_codec", codec)


def _image(h: int = 48, w: int = 64, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    # Smooth content plus mild texture, kept inside [10, 240] so +offset never clips.
    yy, xx = np.mgrid[0:h, 0:w]
    base = 120 + 60 * np.sin(xx / 7.0)[..., None] * np.cos(yy / 5.0)[..., None] * np.array([1.0, 0.7, 0.4])
    return np.clip(base + rng.normal(0, 8, (h, w, 3)), 10, 240).astype(np.uint8)


# --- evaluate_pair ---------------------------------------------------------------------------------

def test_psnr_before_of_a_constant_offset_is_analytic():
    y = _image()
    r = ev.evaluate_pair(y + 3, y, point=Point("jpeg", 90))
    assert r["psnr_before"] == pytest.approx(10 * math.log10(255**2 / 9), abs=1e-9)


@pytest.mark.parametrize("shape", [(7, 5, 3), (300, 311, 3), (1, 1 << 18, 1)])
def test_psnr_u8_sums_exactly_across_its_chunks(shape):
    rng = np.random.default_rng(1)
    a = rng.integers(0, 256, shape, dtype=np.uint8)
    b = rng.integers(0, 256, shape, dtype=np.uint8)
    sse = ((a.astype(np.float64) - b) ** 2).sum()
    assert ev.psnr_u8(a, b) == pytest.approx(10 * math.log10(255.0**2 / (sse / a.size)), abs=1e-12)
    assert ev.psnr_u8(a, a) == math.inf
    assert ev.psnr_u8(a[:, ::-1], b[:, ::-1]) == pytest.approx(ev.psnr_u8(a, b), abs=1e-12)  # a strided view


def test_bpp_counts_file_bytes_of_an_independent_encode():
    y = _image()
    pred = np.clip(y.astype(int) + 5, 0, 255).astype(np.uint8)
    r = ev.evaluate_pair(pred, y, point=Point("jpeg", 85), settings={"subsampling": "4:2:0"})
    h, w = y.shape[:2]
    assert r["bpp"] == 8 * len(_pil_encode(pred, 85, "4:2:0")) / (h * w)
    assert r["bpp_gt"] == 8 * len(_pil_encode(y, 85, "4:2:0")) / (h * w)
    ref = 10 * math.log10(255**2 / np.mean((_pil_decode(_pil_encode(pred, 85)).astype(float)
                                             - _pil_decode(_pil_encode(y, 85))) ** 2))
    assert r["psnr"] == pytest.approx(ref, abs=1e-9)
    assert 0 < r["ssim"] < 1


def test_identical_prediction_matches_the_ground_truth_path():
    y = _image()
    r = ev.evaluate_pair(y.copy(), y, point=Point("jpeg", 90))
    assert math.isinf(r["psnr"]) and math.isinf(r["psnr_before"])
    assert r["bpp"] == r["bpp_gt"]
    assert r["ssim"] == pytest.approx(1.0)
    gt_psnr = 10 * math.log10(255**2 / np.mean((_pil_decode(_pil_encode(y, 90)).astype(float) - y) ** 2))
    assert r["psnr_gt"] == pytest.approx(gt_psnr, abs=1e-9)


def test_given_ground_truth_bytes_replace_re_encoding():
    y = _image()
    data = _pil_encode(y, 60)  # deliberately another QF, so re-encoding would differ
    r = ev.evaluate_pair(y.copy(), y, point=Point("jpeg", 90), target_bytes=data)
    assert r["bpp_gt"] == 8 * len(data) / (y.shape[0] * y.shape[1])
    assert r["bpp"] != r["bpp_gt"] and math.isfinite(r["psnr"])


def test_evaluate_pair_rejects_mismatched_inputs():
    y = _image()
    with pytest.raises(ValueError, match="uint8"):
        ev.evaluate_pair(y.astype(np.float32), y, point=Point("jpeg", 90))
    with pytest.raises(ValueError):
        ev.evaluate_pair(y[:32], y, point=Point("jpeg", 90))


def test_real_codec_agrees_with_the_formula(monkeypatch):
    codec = pytest.importorskip("caisp.data.codec")
    monkeypatch.setattr(ev, "_codec", lambda name, settings=None: codec.encoder(name, settings))
    y = _image()
    pred = np.clip(y.astype(int) - 4, 0, 255).astype(np.uint8)
    r = ev.evaluate_pair(pred, y, point=Point("jpeg", 90), settings={"subsampling": "4:2:0"})
    assert r["bpp"] == 8 * len(codec.encode_jpeg(pred, 90, subsampling="4:2:0")) / (y.shape[0] * y.shape[1])


# --- Bjontegaard -----------------------------------------------------------------------------------

RATES = [0.35, 0.45, 0.55, 0.7, 0.9, 1.2]
PSNRS = [33.1, 34.0, 34.8, 35.6, 36.5, 37.6]


def test_bd_of_a_curve_against_itself_is_zero():
    assert abs(bd_rate(RATES, PSNRS, RATES, PSNRS)) < 1e-9
    assert abs(bd_psnr(RATES, PSNRS, RATES, PSNRS)) < 1e-9


def test_bd_rate_of_scaled_rates_is_minus_ten_percent():
    assert bd_rate(RATES, PSNRS, [0.9 * r for r in RATES], PSNRS) == pytest.approx(-10.0, abs=1e-6)
    # Order of points does not matter.
    assert bd_rate(RATES[::-1], PSNRS[::-1], [0.9 * r for r in RATES], PSNRS) == pytest.approx(-10.0, abs=1e-6)


def test_bd_psnr_of_a_shifted_curve_is_the_shift():
    assert bd_psnr(RATES, PSNRS, RATES, [p + 0.5 for p in PSNRS]) == pytest.approx(0.5, abs=1e-9)
    assert bd_psnr(RATES, [p + 0.5 for p in PSNRS], RATES, PSNRS) == pytest.approx(-0.5, abs=1e-9)


def test_bd_validates_inputs():
    with pytest.raises(ValueError, match="at least 2"):
        bd_rate([0.5], [30.0], RATES, PSNRS)
    with pytest.raises(ValueError, match="do not overlap"):
        bd_psnr([0.1, 0.2], [30, 31], [1.0, 2.0], [40, 41])
    with pytest.raises(ValueError, match="do not overlap"):
        bd_rate([0.1, 0.2], [30, 31], [0.1, 0.2], [40, 41])
    with pytest.raises(ValueError, match="distinct"):
        bd_psnr([0.5, 0.5, 0.6], [30, 31, 32], RATES, PSNRS)
    with pytest.raises(ValueError, match="non-positive"):
        bd_rate([0.0, 0.5], [30, 31], RATES, PSNRS)


# --- summaries -------------------------------------------------------------------------------------

def _fake_frame() -> pd.DataFrame:
    rows = []
    qfs = [80, 85, 90]
    for i, stem in enumerate(["a", "b", "c", "d"]):
        for q in qfs:
            base = 30 + (q - 80) * 0.2 + i
            bpp = 0.3 + (q - 80) * 0.05
            gt = dict(bpp_gt=bpp * 1.1, psnr_gt=40 + (q - 80) * 0.3)
            # aware beats agnostic on a, b, c by 1 dB and loses on d by 0.5 dB at every QF.
            d = -0.5 if stem == "d" else 1.0
            rows.append(dict(model="agnostic", stem=stem, qf=q, psnr=base, ssim=0.9, bpp=bpp, psnr_y=base - 2,
                             psnr_before=33.0, **gt))
            rows.append(dict(model="aware", stem=stem, qf=q, psnr=base + d, ssim=0.92, bpp=bpp,
                             psnr_y=base + d - 2, psnr_before=32.5, **gt))
    return pd.DataFrame(rows)


def test_rd_points_has_a_ground_truth_curve():
    rd = stats.rd_points(_fake_frame())
    assert set(rd.model) == {"agnostic", "aware", "ground_truth"}
    gt = rd[rd.model == "ground_truth"].set_index("qf")
    assert gt.loc[90, "psnr"] == pytest.approx(43.0)
    assert len(rd[rd.model == "aware"]) == 3
    # The models' curves are PSNR against the uncompressed y, the axis the ground-truth curve uses.
    ag = rd[rd.model == "agnostic"].set_index("qf")
    assert ag.loc[85, "psnr"] == pytest.approx(30 + 5 * 0.2 + 1.5 - 2)


# --- model-level evaluation ------------------------------------------------------------------------

class _Counting(nn.Module):
    def __init__(self, noise: float = 0.0):
        super().__init__()
        self.noise, self.calls = noise, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        g = torch.Generator().manual_seed(0)
        return x + self.noise * torch.randn(x.shape, generator=g)


def _dataset(n: int = 2, h: int = 40, w: int = 56) -> list[dict]:
    items = []
    for i in range(n):
        srgb = torch.from_numpy(_image(h, w, seed=i)).permute(2, 0, 1).float() / 255
        jpeg = torch.from_numpy(_pil_decode(_pil_encode(_image(h, w, seed=i), 90))).permute(2, 0, 1).float() / 255
        # raw == srgb, so the identity "ISP" is perfect.
        items.append({"raw": srgb.clone(), "srgb": srgb, "coded": jpeg, "stem": f"img{i}"})
    return items


def test_evaluate_isps_ranks_a_noisy_isp_below_identity():
    ident, noisy = _Counting(0.0), _Counting(0.05)
    jpeg = [Point("jpeg", q) for q in (84, 88, 90)]
    df = ev.evaluate_isps({("agnostic", None): noisy, ("aware", 0): ident}, _dataset(), points=jpeg,
                          ssim_points=[Point("jpeg", 90)], settings={"jpeg": {"subsampling": "4:2:0"}},
                          device="cpu", tile=512, overlap=16)
    assert list(df.columns) == ev.ISP_COLUMNS
    assert df[df.qf == 90].ssim.notna().all() and df[df.qf != 90].ssim.isna().all()
    assert len(df) == 2 * 2 * 3  # models x images x points
    assert df[df.model == "agnostic"].seed.isna().all() and str(df.seed.dtype) == "Int64"  # no seed: empty
    assert ident.calls == 2 and noisy.calls == 2  # inference once per image, QFs swept on the output
    m = df.groupby("model").psnr.apply(lambda s: s.replace(np.inf, 1e9).mean())
    assert m["aware"] > m["agnostic"]
    assert np.isinf(df[df.model == "aware"].psnr).all()
    assert (df[df.model == "aware"].bpp == df[df.model == "aware"].bpp_gt).all()
    seeded = ev.evaluate_isps({("aware", 3): ident}, _dataset(1), points=[Point("jpeg", 80), Point("jpeg", 90)],
                              ssim_points=[Point("jpeg", 80), Point("jpeg", 90)])
    assert set(seeded.seed) == {3} and seeded[seeded.qf == 80].ssim.notna().all()


def test_isp_outputs_pads_odd_sizes_and_returns_uint8():
    ds = _dataset(1, h=38, w=50)  # not a multiple of 16
    out = list(ev.isp_outputs(_Counting(), ds, device="cpu", tile=1024, overlap=16))
    stem, pred, target = out[0]
    assert stem == "img0" and pred.dtype == np.uint8 and pred.shape == (38, 50, 3)
    assert np.array_equal(pred, target)


def test_evaluate_cas_identity_baseline():
    ds = _dataset(2)
    only = ev.evaluate_cas(None, ds, device="cpu")
    assert "psnr" not in only and len(only) == 2
    df = ev.evaluate_cas(_Counting(), ds, device="cpu")
    # The identity "CAS" equals the identity baseline.
    assert np.allclose(df.psnr, df.psnr_gt) and np.allclose(df.ssim, df.ssim_gt)
    s = ev.summarize_cas(only)
    assert s["psnr"] is None and s["n"] == 2 and s["psnr_gt"] > 25


def test_make_example_crops_where_aware_helps():
    gt = _image(64, 64)
    bad = gt.copy()
    bad[32:, 32:] = np.clip(bad[32:, 32:].astype(int) + 40, 0, 255).astype(np.uint8)
    ex = ev.make_example("t", gt, bad, gt.copy(), point=Point("jpeg", 90), crop=32)
    assert ex["gt"].shape == (32, 32, 3) and ex["crop"][:2] == (32, 32)
    assert ex["aware_psnr"] > ex["agnostic_psnr"] and ex["aware_bpp"] > 0


def test_cpu_ssim_is_the_float64_torch_ssim_and_skimages():
    """metrics.ssim_hwc (SciPy, what ssim_u8 uses on a CPU) equals the torch float64 SSIM and skimage's."""
    from skimage.metrics import structural_similarity

    from caisp import metrics

    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    b = np.clip(a.astype(int) + rng.integers(-20, 21, a.shape), 0, 255).astype(np.uint8)
    t = [torch.from_numpy(x).permute(2, 0, 1)[None].double() for x in (a, b)]
    ref = float(metrics.ssim(*t, data_range=255.0)[0])
    assert metrics.ssim_hwc(a, b) == pytest.approx(ref, abs=1e-12) == ev.ssim_u8(a, b)
    sk = structural_similarity(a, b, channel_axis=2, gaussian_weights=True, sigma=1.5, use_sample_covariance=True,
                               data_range=255)
    assert ref == pytest.approx(sk, abs=1e-6)

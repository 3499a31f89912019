"""Paired differences, the two-way bootstrap, the compression-specific gain and the BD rules."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from caisp import stats


def test_bootstrap_of_a_constant_difference_is_that_constant():
    r = stats.bootstrap_mean(np.full((3, 5), 0.25), n_boot=500)
    assert r["mean"] == pytest.approx(0.25) and r["lo"] == pytest.approx(0.25) and r["hi"] == pytest.approx(0.25)
    assert (r["n_seeds"], r["n_photos"]) == (3, 5)


def test_bootstrap_interval_covers_the_mean_and_shrinks_with_more_photos():
    rng = np.random.default_rng(0)
    small = stats.bootstrap_mean(0.1 + rng.normal(0, 1, (3, 5)), n_boot=2000, seed=1)
    large = stats.bootstrap_mean(0.1 + rng.normal(0, 1, (3, 200)), n_boot=2000, seed=1)
    for r in (small, large):
        assert r["lo"] < r["mean"] < r["hi"]
    assert large["hi"] - large["lo"] < (small["hi"] - small["lo"]) / 3
    # Deterministic for a seed.
    assert stats.bootstrap_mean(np.arange(6.0).reshape(2, 3), seed=4) == stats.bootstrap_mean(
        np.arange(6.0).reshape(2, 3), seed=4)


def test_bootstrap_matches_explicit_resampling():
    d = np.random.default_rng(2).normal(size=(3, 4))
    rng = np.random.default_rng(9)
    means = [d[np.ix_(rng.integers(0, 3, 3), rng.integers(0, 4, 4))].mean() for _ in range(4000)]
    r = stats.bootstrap_mean(d, n_boot=4000, seed=9)
    assert r["lo"] == pytest.approx(np.quantile(means, 0.025), abs=0.05)
    assert r["hi"] == pytest.approx(np.quantile(means, 0.975), abs=0.05)


def _frame(model: str, seeds, gain_after: float, gain_before: float, noise: float = 0.0) -> pd.DataFrame:
    rows = []
    rng = np.random.default_rng(len(model))
    for seed in seeds:
        for i, (stem, source) in enumerate([("a", "a"), ("b", "b"), ("c1", "c"), ("c2", "c")]):
            for q in (80, 85, 90):
                base = 30 + i + 0.5 * (q - 80)
                e = noise * rng.normal()
                rows.append(dict(model=model, seed=seed, stem=stem, source=source, qf=q,
                                 psnr=base + gain_after + e, psnr_before=40 + i + gain_before, ssim=0.9,
                                 bpp=0.3 + 0.05 * (q - 80), psnr_y=base - 1 + gain_after + e,
                                 bpp_gt=0.3 + 0.05 * (q - 80), psnr_gt=45.0))
    return pd.DataFrame(rows)


def test_compare_all_pairs_seeds_and_isolates_the_compression_specific_gain():
    aware = _frame("aware", [0, 1, 2], gain_after=0.4, gain_before=0.1)
    controls = pd.concat([_frame("agnostic", [0, 1, 2], 0.0, 0.0), _frame("identity", [0, 1, 2], 0.0, 0.0),
                          _frame("pretrained", [None], -0.2, 0.0)])
    s = stats.compare_all(aware, controls, aware="aware", qf=85, n_boot=300)
    json.dumps(s, allow_nan=False)
    assert (s["n_photos"], s["n_images"], s["n_seeds"]) == (3, 4, 3)  # c1, c2: one source photo
    assert set(s["vs"]) == {"agnostic", "identity", "pretrained"}
    ag = s["vs"]["agnostic"]
    assert ag["d_psnr"]["mean"] == pytest.approx(0.4) and ag["d_psnr_before"]["mean"] == pytest.approx(0.1)
    assert ag["d_specific"]["mean"] == pytest.approx(0.3)
    assert ag["photos_improved"] == 3 and set(ag["per_photo"]) == {"a", "b", "c"}
    assert s["vs"]["pretrained"]["d_psnr"]["mean"] == pytest.approx(0.6)
    assert ag["d_bpp_pct"]["mean"] == pytest.approx(0.0)
    # BD over the QF sweep: parallel curves 0.4 dB apart overlapping by far more than 0.5 dB.
    assert ag["bd"]["bd_psnr"] == pytest.approx(0.4, abs=1e-6) and ag["bd"]["bd_rate"] < 0
    assert s["models"]["aware"]["psnr_seed_sd"] == pytest.approx(0.0)


def test_bd_rate_is_withheld_with_a_reason():
    ref = pd.DataFrame({"bpp": [0.3, 0.5, 0.7], "psnr": [30.0, 30.1, 30.2]})
    flat = stats.bd_checked(ref, ref.assign(psnr=ref.psnr + 0.6), min_overlap=0.5)
    assert flat["bd_rate"] is None and "overlap" in flat["bd_rate_why"] and flat["bd_psnr"] == pytest.approx(0.6)
    falling = stats.bd_checked(ref, ref.assign(psnr=[30.2, 30.1, 30.0]), min_overlap=0.0)
    assert falling["bd_rate"] is None and "does not rise" in falling["bd_rate_why"]
    steep = pd.DataFrame({"bpp": [0.3, 0.5, 0.7], "psnr": [30.0, 33.0, 35.0]})
    ok = stats.bd_checked(steep, steep.assign(bpp=steep.bpp * 0.9), min_overlap=0.5)
    assert ok["bd_rate"] == pytest.approx(-10.0) and ok["bd_rate_why"] is None


def _rd(model: str, seeds, rate_scale: float, noise: float = 0.0) -> pd.DataFrame:
    """Curves of PSNR rising with log-rate; `rate_scale` multiplies every rate (0.9: 10 % fewer bits)."""
    rng = np.random.default_rng(7)
    rows = []
    for seed in seeds:
        for i, source in enumerate("abcde"):
            for q in (80, 85, 90, 95):
                bpp = (0.5 + 0.1 * i) * 1.5 ** ((q - 80) / 5)
                rows.append(dict(model=model, seed=seed, stem=source, source=source, qf=q,
                                 bpp=rate_scale * bpp * (1 + noise * rng.normal()),
                                 psnr_y=30 + 8 * np.log10(bpp) + i, ssim_y=0.9 + 0.02 * np.log10(bpp)))
    return pd.DataFrame(rows)


def test_bd_bootstrap_recovers_a_rate_saving_with_an_interval():
    ref, test = _rd("agnostic", [0, 1, 2], 1.0), _rd("rate", [0, 1, 2], 0.9)
    for metric in ("psnr_y", "ssim_y"):
        s = stats.bd_bootstrap(test, ref, metric, n_boot=200)
        json.dumps(s, allow_nan=False)
        assert s["mean"] == pytest.approx(-10.0, abs=1e-6) and s["lo"] == pytest.approx(-10.0, abs=1e-6)
        assert (s["n_seeds"], s["n_photos"], s["n_undefined"]) == (3, 5, 0)
    noisy = stats.bd_bootstrap(_rd("rate", [0, 1, 2], 0.9, noise=0.05), ref, n_boot=300)
    assert noisy["lo"] < noisy["mean"] < noisy["hi"] and noisy["hi"] - noisy["lo"] > 0.5
    same = stats.bd_bootstrap(ref, ref, n_boot=50)
    assert same["mean"] == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(ValueError, match="do not pair"):
        stats.bd_bootstrap(_rd("rate", [0, 1], 0.9), ref, n_boot=10)
    # a curve that does not rise with rate gets no BD-rate, and says why
    flat = ref.assign(psnr_y=30.0)
    assert stats.bd_bootstrap(flat, ref, n_boot=10)["mean"] is None
    assert "rise" in stats.bd_bootstrap(flat, ref, n_boot=10)["why"]

"""Paired comparisons: the interval is the difference's, the verdict reads it, MDD = 2.80 SE."""

import numpy as np
import pytest
from sklearn.metrics import matthews_corrcoef

from roadwork.evaluate import compare
from roadwork.evaluate.metrics import mcc_at, prior_sample_weights


def noisy(y, accuracy, rng):
    return np.where(rng.uniform(size=y.size) < accuracy, y, 1 - y)


def test_identical_predictions_give_zero_and_no_verdict():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    a = noisy(y, 0.8, rng)
    same = compare.mcc_difference(y, a, a, n_boot=100)
    assert same["difference"] == same["ci95_low"] == same["ci95_high"] == 0.0
    assert same["verdict"] == compare.TIE


def test_difference_point_interval_verdict_and_determinism():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 2000)
    a, b = noisy(y, 0.7, rng), noisy(y, 0.9, rng)
    result = compare.mcc_difference(y, a, b, n_boot=400, seed=3)
    assert result["difference"] == pytest.approx(matthews_corrcoef(y, b) - matthews_corrcoef(y, a), abs=1e-12)
    assert result["ci95_low"] < result["difference"] < result["ci95_high"]
    assert result["verdict"] == compare.BETTER
    assert compare.mcc_difference(y, b, a, n_boot=400, seed=3)["verdict"] == compare.WORSE
    assert result == compare.mcc_difference(y, a, b, n_boot=400, seed=3)


def test_a_small_difference_on_few_images_is_not_distinguishable():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 200)
    a = noisy(y, 0.80, rng)
    b = a.copy()
    fixed, broken = np.flatnonzero(b != y)[:6], np.flatnonzero(b == y)[:4]
    b[fixed] = y[fixed]  # b fixes 6 of a's mistakes and makes 4 new ones: +1 point of accuracy
    b[broken] = 1 - y[broken]
    assert compare.mcc_difference(y, a, b, n_boot=500)["verdict"] == compare.TIE


def test_pairing_narrows_the_interval():
    """Two models that share most mistakes: the paired interval is far narrower than the
    unpaired one (the sum of both models' own bootstrap variances)."""
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 1000)
    a = noisy(y, 0.8, rng)
    b = a.copy()
    b[np.flatnonzero(b != y)[:20]] = y[np.flatnonzero(b != y)[:20]]
    paired = compare.mcc_difference(y, a, b, n_boot=500, seed=0)
    single = compare.mcc_difference(y, np.zeros_like(y), a, n_boot=500, seed=0)  # MCC(a) - 0: SE of MCC(a)
    assert paired["standard_error"] < 0.5 * np.sqrt(2) * single["standard_error"]
    assert paired["verdict"] == compare.BETTER


def test_weights_move_with_the_images():
    rng = np.random.default_rng(4)
    y = (rng.uniform(size=800) < 0.2).astype(int)
    a, b = noisy(y, 0.8, rng), noisy(y, 0.85, rng)
    w = prior_sample_weights(y, 0.5)
    result = compare.mcc_difference(y, a, b, weights=w, n_boot=200)
    assert result["difference"] == pytest.approx(mcc_at(b, y, 0.5, w) - mcc_at(a, y, 0.5, w), abs=1e-12)


def test_lower_is_better_flips_the_verdict():
    assert compare.verdict(-0.3, -0.1, higher_is_better=False) == compare.BETTER
    assert compare.verdict(0.1, 0.3, higher_is_better=False) == compare.WORSE
    assert compare.verdict(-0.1, 0.3) == compare.TIE
    assert compare.verdict(float("nan"), 0.3) == compare.TIE


def test_unequal_inputs_are_refused():
    with pytest.raises(ValueError, match="equal"):
        compare.mcc_difference([0, 1, 1], [0, 1], [1, 1, 1])


def test_minimum_detectable_difference():
    assert compare.minimum_detectable_difference(0.05) == pytest.approx(2.8016 * 0.05, abs=1e-4)
    assert compare.minimum_detectable_difference(0.05, power=0.5) == pytest.approx(1.96 * 0.05, abs=1e-3)

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


# ------------------------------------------------------------------------------ reward over draws
def reward_of(y, decisions, w):
    """The validators' expected reward of one set of decisions, as the protocol reports it."""
    from roadwork.evaluate.metrics import expected_reward

    return expected_reward(mcc_at(decisions, y, 0.5, w), np.sum(w * (decisions == y)) / np.sum(w))


def test_reward_difference_is_the_mean_over_draws_of_the_protocols_reward():
    rng = np.random.default_rng(5)
    y = (rng.uniform(size=400) < 0.25).astype(int)
    w = prior_sample_weights(y, 0.5)
    reference = np.stack([noisy(y, 0.7, rng) for _ in range(3)])  # 3 draws x 400 images
    candidate = np.stack([noisy(y, 0.85, rng) for _ in range(3)])
    result = compare.reward_difference(y, reference, candidate, weights=w, n_boot=300, seed=1)
    expected = np.mean([reward_of(y, candidate[d], w) - reward_of(y, reference[d], w) for d in range(3)])
    assert result["difference"] == pytest.approx(expected, abs=1e-12)
    assert result["ci95_low"] < result["difference"] < result["ci95_high"] and result["verdict"] == compare.BETTER
    assert result["n"] == 400
    assert compare.reward_difference(y, candidate, reference, weights=w, n_boot=300, seed=1)["verdict"] == compare.WORSE
    same = compare.reward_difference(y, reference, reference, weights=w, n_boot=300)
    assert (same["difference"], same["ci95_low"], same["ci95_high"], same["verdict"]) == (0.0, 0.0, 0.0, compare.TIE)

    # pooled decisions (the protocol's mix): each draw's reward is over all of an image's decisions
    pooled_ref, pooled_cand = np.stack([reference, candidate], axis=1), np.stack([candidate, candidate], axis=1)
    mix = compare.reward_difference(y, pooled_ref, pooled_cand, weights=w, n_boot=50)
    y2, w2 = np.tile(y, 2), prior_sample_weights(np.tile(y, 2), 0.5)
    expected = np.mean(
        [reward_of(y2, pooled_cand[d].ravel(), w2) - reward_of(y2, pooled_ref[d].ravel(), w2) for d in range(3)]
    )
    assert mix["difference"] == pytest.approx(expected, abs=1e-12)


def test_reward_difference_resamples_images_with_all_their_draws():
    """The resampling unit is the image: repeating every draw changes neither the images resampled
    nor any statistic (had draws been resampled separately, n and the interval would change)."""
    rng = np.random.default_rng(6)
    y = rng.integers(0, 2, 300)
    reference = np.stack([noisy(y, 0.75, rng) for _ in range(2)])
    candidate = np.stack([noisy(y, 0.8, rng) for _ in range(2)])
    once = compare.reward_difference(y, reference, candidate, n_boot=200, seed=2)
    twice = compare.reward_difference(y, np.tile(reference, (2, 1)), np.tile(candidate, (2, 1)), n_boot=200, seed=2)
    assert once["n"] == twice["n"] == 300
    for key in ("difference", "ci95_low", "ci95_high", "standard_error"):
        assert twice[key] == pytest.approx(once[key], abs=1e-12), key
    with pytest.raises(ValueError, match="draws"):
        compare.reward_difference(y, reference, candidate[:, :10])


def test_summary_and_standard_error_of_one_mcc():
    rng = np.random.default_rng(7)
    y = rng.integers(0, 2, 500)
    a = noisy(y, 0.8, rng)
    result = compare.mcc_difference(y, np.zeros_like(a), a, n_boot=300, seed=0)
    assert compare.summary(result) == {k: result[k] for k in ("difference", "ci95_low", "ci95_high", "verdict", "n")}
    se = compare.mcc_standard_error(y, a, n_boot=1000, seed=0)
    resamples = [rng.integers(0, y.size, y.size) for _ in range(1000)]  # a plain bootstrap loop, sklearn's MCC
    plain = np.std([matthews_corrcoef(y[i], a[i]) for i in resamples], ddof=1)
    assert se == pytest.approx(plain, rel=0.1)

import numpy as np
import pytest
from scipy.special import expit
from sklearn.metrics import brier_score_loss, log_loss

from roadwork.evaluate.calibration import (
    LogisticMap,
    apply_temperature,
    brier,
    calibration_report,
    compare_maps,
    cross_validated_nll,
    ece,
    ece_rows,
    ece_variants,
    fit_map,
    fit_temperature,
    fit_temperature_bias,
    nll,
    nll_from_logits,
    paired_ece_difference,
    reliability_curve,
)
from roadwork.evaluate.metrics import prior_sample_weights


def _overconfident(seed=0, n=20000, scale=3.0):
    rng = np.random.default_rng(seed)
    z_true = rng.normal(scale=1.5, size=n)
    y = (rng.random(n) < expit(z_true)).astype(int)
    return y, scale * z_true


@pytest.mark.parametrize("seed", [0, 1])
def test_temperature_fixes_overconfident_model(seed):
    y, logits = _overconfident(seed)
    t = fit_temperature(logits, y)
    assert t == pytest.approx(3.0, abs=0.25)
    before = ece(y, expit(logits))
    after = ece(y, apply_temperature(logits, t))
    assert before > 0.05
    assert after < 0.02
    assert after < before / 3
    # NLL improves too
    assert nll_from_logits(y, logits / t) < nll_from_logits(y, logits)


def test_underconfident_model_gets_t_below_one():
    y, logits = _overconfident(2, scale=0.5)
    assert fit_temperature(logits, y) == pytest.approx(0.5, abs=0.05)


def test_temperature_does_not_change_decisions():
    y, logits = _overconfident(3, n=5000)
    t = fit_temperature(logits, y)
    p = apply_temperature(logits, t)
    np.testing.assert_array_equal(p > 0.5, logits > 0)
    rep = calibration_report(y, logits, LogisticMap.from_temperature(t, 0.0))
    assert rep["before"]["accuracy_at_0.5"] == rep["after"]["accuracy_at_0.5"]


def test_fit_temperature_degenerate_inputs():
    assert fit_temperature([1.0, 2.0], [1, 1]) == 1.0
    assert fit_temperature([0.0, 0.0], [0, 1]) == 1.0
    assert fit_temperature([], []) == 1.0


# labels [0,1,1,0,1], probs [0.1,0.4,0.8,0.9,0.95], 4 equal-width bins (lo, hi]:
# positive:  (0,.25]: p .1, y 0 -> |0-.1|*1/5 = .02 ; (.25,.5]: p .4, y 1 -> .6*1/5 = .12
#            (.75,1]: p .8,.9,.95 mean .88333, y mean .66667 -> .21667*3/5 = .13   => .27
# top-label: conf max(p,1-p) = .9,.6,.8,.9,.95; pred p>.5 = 0,0,1,1,1; correct 1,0,1,0,1
#            (.5,.75]: conf .6, acc 0 -> .6*1/5 = .12
#            (.75,1]: conf .9,.8,.9,.95 mean .8875, acc .75 -> .1375*4/5 = .11  => .23
HAND_Y = np.array([0, 1, 1, 0, 1])
HAND_P = np.array([0.1, 0.4, 0.8, 0.9, 0.95])


def test_ece_hand_computed_positive():
    assert ece(HAND_Y, HAND_P, n_bins=4, definition="positive") == pytest.approx(0.27)


def test_ece_hand_computed_top_label():
    assert ece(HAND_Y, HAND_P, n_bins=4, definition="top_label") == pytest.approx(0.23)


def test_ece_bin_edges_are_right_closed():
    # p = 0.5 belongs to (0.25, 0.5], p = 0 to the first bin
    rows = reliability_curve([1, 0], [0.5, 0.0], n_bins=4)
    assert [(r["bin"], r["count"]) for r in rows] == [(0, 1), (1, 1)]


def test_ece_quantile_one_bin_is_global_gap():
    y, logits = _overconfident(4, n=1000)
    p = expit(logits)
    assert ece(y, p, n_bins=1, strategy="quantile") == pytest.approx(abs(y.mean() - p.mean()))


def test_equal_mass_bins_have_equal_weight():
    rng = np.random.default_rng(0)
    p = rng.beta(0.5, 0.5, size=150)
    y = (rng.random(150) < p).astype(int)
    rows = reliability_curve(y, p, n_bins=15, strategy="quantile")
    assert len(rows) == 15
    assert {r["count"] for r in rows} == {10}
    assert [r["weight"] for r in rows] == pytest.approx([1 / 15] * 15)
    # bins ordered and non-overlapping
    for a, b in zip(rows, rows[1:]):
        assert a["bin_upper"] <= b["bin_lower"]
    # 147 examples: 9.8 per bin; the example under a cut is shared (counted in both bins), except
    # at the cuts 49 and 98, which fall between two examples: 12 shared examples
    rows = reliability_curve(y[:147], p[:147], n_bins=15, strategy="quantile")
    assert [r["weight"] for r in rows] == pytest.approx([1 / 15] * 15)
    assert {r["count"] for r in rows} <= {10, 11} and sum(r["count"] for r in rows) == 147 + 12
    for a, b in zip(rows, rows[1:]):
        assert a["bin_upper"] <= b["bin_lower"]  # a shared example is the upper bound of one, lower of the next


def test_reliability_curve_uniform_rows():
    rows = reliability_curve(HAND_Y, HAND_P, n_bins=4)
    assert [r["bin"] for r in rows] == [0, 1, 3]
    r3 = rows[-1]
    assert r3["count"] == 3 and r3["weight"] == pytest.approx(3 / 5)
    assert r3["confidence"] == pytest.approx((0.8 + 0.9 + 0.95) / 3)
    assert r3["accuracy"] == pytest.approx(2 / 3)
    assert r3["bin_lower"] == 0.75 and r3["bin_upper"] == 1.0


def test_nll_and_brier_match_sklearn():
    y, logits = _overconfident(5, n=2000)
    p = expit(logits)
    assert nll(y, p) == pytest.approx(log_loss(y, p), rel=1e-6)
    assert nll_from_logits(y, logits) == pytest.approx(log_loss(y, p), rel=1e-6)
    assert brier(y, p) == pytest.approx(brier_score_loss(y, p))


def test_ece_variants_are_the_four_eces():
    y, logits = _overconfident(4, n=500)
    p = expit(logits)
    variants = ece_variants(y, p, n_bins=10)
    assert variants == {
        "ece_positive_uniform": ece(y, p, 10, "uniform", "positive"),
        "ece_positive_quantile": ece(y, p, 10, "quantile", "positive"),
        "ece_top_label_uniform": ece(y, p, 10, "uniform", "top_label"),
        "ece_top_label_quantile": ece(y, p, 10, "quantile", "top_label"),
    }
    assert list(variants) == [
        "ece_positive_uniform",
        "ece_positive_quantile",
        "ece_top_label_uniform",
        "ece_top_label_quantile",
    ]  # the reports' key order


def test_calibration_report_structure():
    y, logits = _overconfident(6, n=3000)
    t = fit_temperature(logits, y)
    rep = calibration_report(y, logits, LogisticMap.from_temperature(t, 0.0))
    assert rep["n"] == 3000 and rep["map"] == {"kind": "temperature", "scale": 1 / t, "bias": 0.0}
    assert rep["weighted"] is False
    for part in ("before", "after"):
        for k in (
            "nll",
            "brier",
            "ece_positive_uniform",
            "ece_positive_quantile",
            "ece_top_label_uniform",
            "ece_top_label_quantile",
            "reliability",
        ):
            assert k in rep[part]
    assert rep["before"]["nll"] == pytest.approx(nll_from_logits(y, logits))  # before = the network's sigmoid(z)
    assert rep["after"]["ece_positive_uniform"] < rep["before"]["ece_positive_uniform"]
    assert rep["after"]["nll"] < rep["before"]["nll"]
    assert rep["after"]["brier"] < rep["before"]["brier"]
    import json

    json.dumps(rep)  # serialisable for DVC metrics/plots


def test_invalid_arguments():
    with pytest.raises(ValueError):
        ece([0, 1], [0.2, 0.7], strategy="nope")
    with pytest.raises(ValueError):
        ece([0, 1], [0.2, 0.7], definition="nope")
    with pytest.raises(ValueError):
        ece([0, 2], [0.2, 0.7])


# ------------------------------------------------------------------------------ weights, priors, maps
def _balanced_world(seed, n=20000, positive_rate=0.2, temperature=2.0, crossing=1.0, separation=1.5):
    """Logits calibrated under a 50/50 prior by sigmoid((z - crossing) / temperature), sampled with
    ``positive_rate`` positives: z - crossing | y ~ N(+-m, s^2) with 2 m / s^2 = 1 / temperature is
    exactly that posterior when the classes are equally likely."""
    rng = np.random.default_rng(seed)
    s2 = 2 * separation * temperature
    y = (np.arange(n) < positive_rate * n).astype(int)
    z = crossing + rng.normal(np.where(y == 1, separation, -separation), np.sqrt(s2))
    return z, y


@pytest.mark.parametrize("seed", [0, 1])
def test_weighted_temperature_recovers_t_calibrated_under_the_50_50_prior(seed):
    z, y = _balanced_world(seed)
    w = prior_sample_weights(y, 0.5)
    assert fit_temperature(z, y, offset=1.0, sample_weight=w) == pytest.approx(2.0, rel=0.05)
    # the free map finds the same crossing only when weighted: at the sample's 20% prior the
    # probability 0.5 sits T * log(0.8 / 0.2) further up (the prior's log-odds shift)
    weighted = fit_map("temperature_bias", z, y, threshold=1.0, sample_weight=w)
    raw = fit_map("temperature_bias", z, y, threshold=1.0)
    assert weighted.temperature == pytest.approx(2.0, rel=0.05)
    assert weighted.crossing_logit == pytest.approx(1.0, abs=0.15)
    assert raw.crossing_logit == pytest.approx(1.0 + 2.0 * np.log(4.0), abs=0.3)
    # weights 0.5 / 0.2 and 0.5 / 0.8 are what the weighted NLL uses, not a resampled set
    assert nll_from_logits(y, z, w) == pytest.approx(
        0.5 * nll_from_logits(y[y == 1], z[y == 1]) + 0.5 * nll_from_logits(y[y == 0], z[y == 0])
    )


def test_temperature_map_crosses_one_half_at_the_threshold():
    z, y = _balanced_world(2, n=3000, crossing=0.7)
    for t in (-1.3, 0.0, 0.7, 2.4):
        mapping = fit_map("temperature", z, y, threshold=t, sample_weight=prior_sample_weights(y, 0.5))
        assert mapping.crossing_logit == pytest.approx(t, abs=1e-12)
        assert mapping.probs(np.array([t]))[0] == pytest.approx(0.5, abs=1e-12)
        grid = t + np.array([-1e-6, 1e-6])
        assert mapping.probs(grid)[0] < 0.5 < mapping.probs(grid)[1]
        np.testing.assert_array_equal(mapping.decisions(z), z > t)
        np.testing.assert_allclose(mapping.probs(z), apply_temperature(z, mapping.temperature, offset=t))


def test_fit_temperature_bias_matches_sklearn_logistic_regression():
    from sklearn.linear_model import LogisticRegression

    z, y = _balanced_world(3, n=4000)
    w = prior_sample_weights(y, 0.5)
    a, b = fit_temperature_bias(z, y, sample_weight=w)
    reference = LogisticRegression(C=np.inf, tol=1e-10, max_iter=1000).fit(z[:, None], y, sample_weight=w)
    assert (a, b) == pytest.approx((reference.coef_[0, 0], reference.intercept_[0]), rel=1e-4)
    assert fit_temperature_bias([1.0, 2.0], [1, 1]) == (1.0, 0.0)


def _map_choice(seed: int, crossing: float):
    """Data calibrated under 50/50 that cross 0.5 at ``crossing``; both maps compared with the
    threshold at 1.0. Returns (logits, labels, weights, compare_maps result)."""
    z, y = _balanced_world(seed, n=1000, crossing=crossing)
    w = prior_sample_weights(y, 0.5)
    return z, y, w, compare_maps(z, y, threshold=1.0, sample_weight=w, folds=5, seed=0)


@pytest.mark.parametrize("seed", range(5))
def test_cross_validation_prefers_temperature_when_the_crossing_is_the_threshold(seed):
    z, y, w, choice = _map_choice(seed, crossing=1.0)
    assert choice["better"] == "temperature"
    assert choice["nll_cv"]["temperature"] == pytest.approx(
        cross_validated_nll("temperature", z, y, threshold=1.0, sample_weight=w)
    )
    assert choice["nll_cv_difference"] == pytest.approx(
        choice["nll_cv"]["temperature_bias"] - choice["nll_cv"]["temperature"]
    )


@pytest.mark.parametrize("seed", range(5))
def test_cross_validation_prefers_temperature_bias_when_the_data_cross_elsewhere(seed):
    # calibrated crossing at 2.5, the threshold at 1.0: no temperature puts 0.5 at 2.5
    z, y, w, choice = _map_choice(seed, crossing=2.5)
    assert choice["better"] == "temperature_bias"
    assert choice["nll_cv_difference"] < -choice["standard_error"] < 0
    # in-sample, the nested map can never be better
    maps = {kind: fit_map(kind, z, y, threshold=1.0, sample_weight=w) for kind in ("temperature", "temperature_bias")}
    in_sample = {kind: nll_from_logits(y, m.logits(z), w) for kind, m in maps.items()}
    assert in_sample["temperature_bias"] <= in_sample["temperature"]


def test_cross_validation_needs_two_examples_of_each_class():
    choice = compare_maps([0.1, 0.5, 2.0, -1.0], [0, 0, 0, 1], threshold=0.0)
    assert choice == {
        "nll_cv": {"temperature": None, "temperature_bias": None},
        "nll_cv_difference": None,
        "standard_error": None,
        "better": "temperature",
    }


# ------------------------------------------------------------------------------ weighted ECE
def test_weighted_ece_equals_ece_of_the_duplicated_data():
    rng = np.random.default_rng(7)
    p = rng.random(60)
    y = (rng.random(60) < p**2).astype(int)
    copies = rng.integers(1, 6, size=60)
    for strategy in ("uniform", "quantile"):
        for definition in ("positive", "top_label"):
            weighted = ece(y, p, 15, strategy, definition, sample_weight=copies)
            duplicated = ece(np.repeat(y, copies), np.repeat(p, copies), 15, strategy, definition)
            assert weighted == pytest.approx(duplicated, rel=1e-12, abs=1e-15), (strategy, definition)
            assert weighted != pytest.approx(ece(y, p, 15, strategy, definition))  # the weights matter
        curve = reliability_curve(y, p, 15, strategy, sample_weight=copies)
        reference = reliability_curve(np.repeat(y, copies), np.repeat(p, copies), 15, strategy)
        for mine, theirs in zip(curve, reference, strict=True):
            for key in ("bin", "confidence", "accuracy", "weight", "bin_lower", "bin_upper"):
                assert mine[key] == pytest.approx(theirs[key]), key


def test_ece_under_a_prior_is_the_mean_of_the_class_conditional_figures():
    # one bin: ECE = |weighted positive rate - weighted mean p| = |0.5 - mean of the class means|
    y = np.array([1, 0, 0, 0, 0])
    p = np.array([0.9, 0.1, 0.2, 0.3, 0.4])
    w = prior_sample_weights(y, 0.5)
    assert ece(y, p, n_bins=1, sample_weight=w) == pytest.approx(abs(0.5 - (0.9 + 0.25) / 2))
    assert ece(y, p, n_bins=1) == pytest.approx(abs(0.2 - p.mean()))


def test_ece_rows_is_ece_per_row():
    y, logits = _overconfident(8, n=400)
    p = expit(logits)
    rows = np.stack([p, np.clip(p * 0.8 + 0.1, 0, 1)])
    labels = np.stack([y, y])
    for definition in ("positive", "top_label"):
        got = ece_rows(labels, rows, n_bins=15, definition=definition)
        assert got == pytest.approx([ece(y, r, 15, "uniform", definition) for r in rows], rel=1e-12)
        at_prior = ece_rows(labels, rows, n_bins=15, definition=definition, target_prior=0.5)
        w = prior_sample_weights(y, 0.5)
        assert at_prior == pytest.approx([ece(y, r, 15, "uniform", definition, w) for r in rows], rel=1e-12)


def test_paired_ece_difference_finds_the_calibrated_side_better():
    z, y = _balanced_world(4, n=2000)
    raw = expit(3 * (z - 1.0))  # over-confident by 3
    calibrated = apply_temperature(z, 2.0, offset=1.0)  # the true map under the 50/50 prior
    w = prior_sample_weights(y, 0.5)
    result = paired_ece_difference(y, raw, calibrated, target_prior=0.5, n_boot=300, seed=0)
    assert result["difference"] == pytest.approx(ece(y, calibrated, sample_weight=w) - ece(y, raw, sample_weight=w))
    assert result["ci95_low"] <= result["difference"] <= result["ci95_high"] < 0
    assert result["verdict"] == "better" and result["higher_is_better"] is False
    same = paired_ece_difference(y, calibrated, calibrated, target_prior=0.5, n_boot=100)
    assert same["difference"] == same["ci95_low"] == same["ci95_high"] == 0.0
    assert same["verdict"] == "not distinguishable"


def test_ece_floor_is_the_ece_of_a_calibrated_probability_on_that_many_images():
    from roadwork.evaluate.calibration import ece_floor

    rng = np.random.default_rng(0)
    p = rng.beta(1, 2, 2000)
    # labels truly drawn from p: their ECE scatters around the floor
    observed = [ece((rng.random(p.size) < p).astype(int), p, 15) for _ in range(40)]
    floor = ece_floor(p, raw_prior=float(p.mean()), target_prior=None, n_sim=200, seed=1)
    assert floor["mean"] == pytest.approx(np.mean(observed), rel=0.2)
    assert np.mean(np.array(observed) <= floor["p95"]) >= 0.85
    # more images, lower floor (about 1 / sqrt(n))
    assert ece_floor(p[:500], float(p[:500].mean()), None)["mean"] > 1.5 * floor["mean"]
    # under a prior: probabilities calibrated for 50/50, sample at 25% positives
    p50 = rng.beta(2, 2, 4000)
    odds = p50 / (1 - p50) * (0.25 / 0.75)
    weighted = []
    for _ in range(20):
        y = (rng.random(p50.size) < odds / (1 + odds)).astype(int)
        weighted.append(ece(y, p50, 15, "uniform", "positive", prior_sample_weights(y, 0.5)))
    shifted = ece_floor(p50, float(np.mean(odds / (1 + odds))), 0.5, n_sim=100)
    assert shifted["mean"] == pytest.approx(np.mean(weighted), rel=0.2)
    # ignoring the prior shift would call these calibrated probabilities badly off
    assert ece(y, p50, 15) > 3 * shifted["p95"]

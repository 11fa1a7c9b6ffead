import numpy as np
import pytest
from scipy.special import expit
from sklearn.metrics import brier_score_loss, log_loss

from roadwork.evaluate.calibration import (
    apply_temperature,
    brier,
    calibration_report,
    ece,
    ece_variants,
    fit_temperature,
    nll,
    nll_from_logits,
    reliability_curve,
)


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
    rep = calibration_report(y, logits, t)
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


def test_equal_mass_bins_have_equal_counts():
    rng = np.random.default_rng(0)
    p = rng.beta(0.5, 0.5, size=150)
    y = (rng.random(150) < p).astype(int)
    rows = reliability_curve(y, p, n_bins=15, strategy="quantile")
    assert len(rows) == 15
    assert {r["count"] for r in rows} == {10}
    # bins ordered and non-overlapping
    for a, b in zip(rows, rows[1:]):
        assert a["bin_upper"] <= b["bin_lower"]
    rows = reliability_curve(y[:147], p[:147], n_bins=15, strategy="quantile")
    counts = [r["count"] for r in rows]
    assert max(counts) - min(counts) <= 1 and sum(counts) == 147


def test_reliability_curve_uniform_rows():
    rows = reliability_curve(HAND_Y, HAND_P, n_bins=4)
    assert [r["bin"] for r in rows] == [0, 1, 3]
    r3 = rows[-1]
    assert r3["count"] == 3
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
    assert list(variants) == ["ece_positive_uniform", "ece_positive_quantile",
                              "ece_top_label_uniform", "ece_top_label_quantile"]  # the reports' key order


def test_calibration_report_structure():
    y, logits = _overconfident(6, n=3000)
    t = fit_temperature(logits, y)
    rep = calibration_report(y, logits, t)
    assert rep["n"] == 3000 and rep["temperature"] == t
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
    assert rep["before"]["temperature"] == 1.0
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

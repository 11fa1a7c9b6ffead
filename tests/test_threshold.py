import numpy as np
import pytest
from sklearn.metrics import matthews_corrcoef

from roadwork.evaluate.metrics import prior_weights
from roadwork.evaluate.threshold import (
    best_threshold,
    mcc_at_all_thresholds,
    operating_thresholds,
)


def _brute(scores, labels, sample_weight=None):
    """MCC by sklearn at +inf and at every distinct score, rule score >= t."""
    ths = np.r_[np.inf, np.unique(scores)[::-1]]
    out = []
    for t in ths:
        pred = (scores >= t).astype(int)
        out.append(matthews_corrcoef(labels, pred, sample_weight=sample_weight))
    return ths, np.array(out)


def _data(seed, n=300, decimals=1):
    rng = np.random.default_rng(seed)
    labels = (rng.random(n) < 0.3).astype(int)
    scores = np.round(rng.normal(size=n) + 1.2 * labels, decimals)  # many ties
    return scores, labels, rng


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("weighted", [False, True])
def test_matches_sklearn_bruteforce(seed, weighted):
    scores, labels, rng = _data(seed)
    w = rng.uniform(0.1, 3.0, size=labels.size) if weighted else None
    th, mcc, tp, fp, tn, fn = mcc_at_all_thresholds(scores, labels, sample_weight=w)
    bth, bmcc = _brute(scores, labels, w)
    np.testing.assert_array_equal(th, bth)
    np.testing.assert_allclose(mcc, bmcc, atol=1e-10)
    # counts consistent with brute force at a few points
    ww = np.ones(labels.size) if w is None else w
    for k in (0, 1, len(th) // 2, len(th) - 1):
        pred = scores >= th[k]
        assert tp[k] == pytest.approx(ww[pred & (labels == 1)].sum())
        assert fp[k] == pytest.approx(ww[pred & (labels == 0)].sum())
        assert tn[k] == pytest.approx(ww[~pred & (labels == 0)].sum())
        assert fn[k] == pytest.approx(ww[~pred & (labels == 1)].sum())


@pytest.mark.parametrize("seed", range(4))
def test_operating_thresholds_reproduce_predictions_with_strict_rule(seed):
    scores, labels, _ = _data(seed, n=200, decimals=2)
    th, mcc, *_ = mcc_at_all_thresholds(scores, labels)
    op = operating_thresholds(th)
    assert op.shape == th.shape
    for k in range(len(th)):
        np.testing.assert_array_equal(scores > op[k], scores >= th[k])
        assert matthews_corrcoef(labels, (scores > op[k]).astype(int)) == pytest.approx(mcc[k], abs=1e-12)


def test_operating_thresholds_adjacent_floats():
    a = 0.3
    b = np.nextafter(a, -np.inf)
    scores = np.array([a, b, b, a])
    th, *_ = mcc_at_all_thresholds(scores, [1, 0, 0, 1])
    op = operating_thresholds(th)
    for k in range(len(th)):
        np.testing.assert_array_equal(scores > op[k], scores >= th[k])


def test_edge_all_one_class():
    for lab in (0, 1):
        scores = np.array([0.1, 0.5, 0.5, 0.9])
        th, mcc, tp, fp, tn, fn = mcc_at_all_thresholds(scores, np.full(4, lab))
        assert np.all(mcc == 0)
        assert len(th) == 4  # inf + 3 distinct
        res = best_threshold(scores, np.full(4, lab))
        assert res["raw"]["mcc"] == 0
        assert res["reweighted"] is None


def test_edge_all_equal_scores():
    labels = np.array([0, 1, 1, 0, 1])
    th, mcc, tp, fp, tn, fn = mcc_at_all_thresholds(np.full(5, 0.7), labels)
    np.testing.assert_array_equal(th, [np.inf, 0.7])
    np.testing.assert_array_equal(mcc, [0.0, 0.0])
    np.testing.assert_array_equal(tp, [0, 3])
    np.testing.assert_array_equal(fp, [0, 2])
    op = operating_thresholds(th)
    assert op[0] > 0.7 and op[1] < 0.7


def test_edge_n1():
    th, mcc, tp, fp, tn, fn = mcc_at_all_thresholds([0.3], [1])
    np.testing.assert_array_equal(th, [np.inf, 0.3])
    np.testing.assert_array_equal(mcc, [0.0, 0.0])
    np.testing.assert_array_equal(tp, [0, 1])
    np.testing.assert_array_equal(fn, [1, 0])
    res = best_threshold([0.3], [1])
    assert res["n"] == 1 and res["raw"]["mcc"] == 0.0


def test_perfect_separation():
    scores = np.array([-2.0, -1.0, 1.0, 3.0])
    labels = np.array([0, 0, 1, 1])
    res = best_threshold(scores, labels)
    assert res["raw"]["mcc"] == 1.0
    assert res["raw"]["threshold"] == 0.0  # midpoint of -1 and 1
    assert res["raw"]["threshold_ge"] == 1.0
    assert res["raw"]["mcc_at_default"] == 1.0


def test_input_validation():
    with pytest.raises(ValueError, match=r"labels must be 0/1, got values \[0 2\]"):
        mcc_at_all_thresholds([0.1, 0.2], [0, 2])
    with pytest.raises(ValueError, match="NaN or inf"):
        mcc_at_all_thresholds([0.1, np.nan], [0, 1])
    with pytest.raises(ValueError, match="differ in shape"):
        mcc_at_all_thresholds([0.1, 0.2], [0, 1, 1])
    with pytest.raises(ValueError, match="empty"):
        mcc_at_all_thresholds([], [])
    with pytest.raises(ValueError, match="sample_weight"):
        mcc_at_all_thresholds([0.1, 0.2], [0, 1], sample_weight=[1.0, 2.0, 3.0])


def test_reweighted_threshold_matches_balanced_bruteforce():
    rng = np.random.default_rng(7)
    n = 2000
    labels = (rng.random(n) < 0.2).astype(int)  # 4:1 imbalance
    scores = np.round(rng.normal(size=n) + 1.5 * labels, 2)
    res = best_threshold(scores, labels, target_prior=0.5)
    w_pos, w_neg = prior_weights(labels, 0.5)
    assert w_pos == pytest.approx(0.5 / labels.mean())
    w = np.where(labels == 1, w_pos, w_neg)
    # the reweighted MCC equals sklearn's weighted MCC at the returned operating threshold
    t = res["reweighted"]["threshold"]
    assert res["reweighted"]["mcc"] == pytest.approx(
        matthews_corrcoef(labels, (scores > t).astype(int), sample_weight=w), abs=1e-12
    )
    # and nothing on a grid of strict thresholds beats it
    grid = np.unique(scores)
    best_grid = max(matthews_corrcoef(labels, (scores > g).astype(int), sample_weight=w) for g in grid[::7])
    assert res["reweighted"]["mcc"] >= best_grid - 1e-12
    # default threshold MCC consistent with sklearn
    assert res["raw"]["mcc_at_default"] == pytest.approx(matthews_corrcoef(labels, (scores > 0).astype(int)), abs=1e-12)


def test_reweighting_equals_replicated_balanced_set():
    # 100 positives, 400 negatives: weights 0.5/0.2 = 2.5 and 0.5/0.8 = 0.625 (ratio 4),
    # so the weighted MCC must equal the plain MCC with every positive repeated 4 times.
    rng = np.random.default_rng(11)
    labels = np.r_[np.ones(100, int), np.zeros(400, int)]
    scores = np.round(rng.normal(size=500) + labels, 1)
    res = best_threshold(scores, labels, target_prior=0.5)
    rep_scores = np.r_[np.repeat(scores[:100], 4), scores[100:]]
    rep_labels = np.r_[np.ones(400, int), np.zeros(400, int)]
    th, mcc_rep, *_ = mcc_at_all_thresholds(rep_scores, rep_labels)
    assert res["reweighted"]["mcc"] == pytest.approx(mcc_rep.max(), abs=1e-12)
    _, bmcc = _brute(rep_scores, rep_labels)
    assert res["reweighted"]["mcc"] == pytest.approx(bmcc.max(), abs=1e-12)
    assert res["reweighted"]["weight_pos"] == pytest.approx(2.5)
    assert res["reweighted"]["weight_neg"] == pytest.approx(0.625)


def test_curve_downsampled_keeps_optimum():
    rng = np.random.default_rng(3)
    n = 10000
    labels = (rng.random(n) < 0.3).astype(int)
    scores = rng.normal(size=n) + labels
    res = best_threshold(scores, labels, max_plot_points=500)
    curve = res["curve"]
    assert len(curve) <= 502
    ths = [r["threshold"] for r in curve]
    assert all(a > b for a, b in zip(ths, ths[1:]))
    assert max(r["mcc"] for r in curve) == pytest.approx(res["raw"]["mcc"])
    assert max(r["mcc_reweighted"] for r in curve) == pytest.approx(res["reweighted"]["mcc"])
    assert res["raw"]["threshold"] in ths and res["reweighted"]["threshold"] in ths


def test_target_prior_none():
    scores, labels, _ = _data(0)
    res = best_threshold(scores, labels, target_prior=None)
    assert res["reweighted"] is None
    assert "mcc_reweighted" not in res["curve"][0]

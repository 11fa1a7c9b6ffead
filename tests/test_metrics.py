from collections import deque

import numpy as np
import pytest
from scipy.stats import binom
from sklearn.metrics import accuracy_score, matthews_corrcoef, precision_score, recall_score, roc_auc_score

from roadwork.evaluate.metrics import (
    binary_metrics,
    bootstrap_ci,
    check_binary_labels,
    confusion_at,
    expected_reward,
    mcc_at,
    mcc_from_counts,
    prior_sample_weights,
    prior_weights,
    simulated_reward,
)


def _data(seed=0, n=500):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.3).astype(int)
    logits = rng.normal(size=n) + 1.5 * y
    probs = 1 / (1 + np.exp(-logits))
    return y, probs, logits


# --- the one definition of labels, confusion counts, MCC and prior weights ---------------


def test_check_binary_labels():
    np.testing.assert_array_equal(check_binary_labels([[1, 0], [0, 1]]), [True, False, False, True])
    np.testing.assert_array_equal(check_binary_labels([0.0, 1.0, True]), [False, True, True])
    assert check_binary_labels([]).dtype == bool
    with pytest.raises(ValueError, match=r"labels must be 0/1, got values \[0 1 2\]"):
        check_binary_labels([0, 1, 2, 1])
    with pytest.raises(ValueError, match="val_test labels must be 0/1"):
        check_binary_labels([0, np.nan], "val_test labels")


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("weighted", [False, True])
def test_confusion_and_mcc_at_match_sklearn(seed, weighted):
    rng = np.random.default_rng(seed)
    y = (rng.random(400) < 0.25).astype(int)
    z = np.round(rng.normal(size=400) + 1.2 * y, 1)  # ties on the threshold
    w = rng.uniform(0.1, 3.0, size=y.size) if weighted else None
    for t in (-0.5, 0.0, 0.3, 1.0):
        pred = z > t  # strict: a score equal to the threshold is negative
        ww = np.ones(y.size) if w is None else w
        c = confusion_at(z, y, t, sample_weight=w)
        assert c == (
            ww[pred & (y == 1)].sum(),
            ww[pred & (y == 0)].sum(),
            ww[~pred & (y == 0)].sum(),
            ww[~pred & (y == 1)].sum(),
        )
        assert all(type(v) is (float if weighted else int) for v in c)
        assert mcc_at(z, y, t, sample_weight=w) == float(mcc_from_counts(*c))
        assert mcc_at(z, y, t, sample_weight=w) == pytest.approx(
            matthews_corrcoef(y, pred.astype(int), sample_weight=w), abs=1e-12
        )


def test_mcc_at_edges():
    # denominator 0 (one predicted class or one true class): 0, like sklearn
    assert mcc_at([0.1, 0.9], [0, 1], 2.0) == 0.0 == matthews_corrcoef([0, 1], [0, 0])
    assert mcc_at([0.1, 0.9], [1, 1], 0.5) == 0.0
    assert confusion_at([], [], 0.0) == (0, 0, 0, 0) and mcc_at([], [], 0.0) == 0.0
    # exactly at the threshold is negative (the validators' np.round(0.5) == 0); NaN is never above
    assert confusion_at([0.5, 0.5, np.nan], [1, 0, 1], 0.5) == (0, 0, 1, 2)
    assert mcc_at([2.0, -1.0], [1, 0], 0.0) == 1.0 and mcc_at([2.0, -1.0], [0, 1], 0.0) == -1.0
    with pytest.raises(ValueError, match="differ in shape"):
        confusion_at([0.1, 0.2], [0, 1, 1], 0.0)
    with pytest.raises(ValueError, match="labels must be 0/1"):
        mcc_at([0.1, 0.2], [0, 2], 0.0)
    with pytest.raises(ValueError, match="sample_weight"):
        confusion_at([0.1, 0.2], [0, 1], 0.0, sample_weight=[1.0])
    with pytest.raises(ValueError, match="non-negative"):
        confusion_at([0.1, 0.2], [0, 1], 0.0, sample_weight=[1.0, -1.0])


def test_mcc_from_counts_is_within_an_ulp_of_sklearn():
    # every confusion matrix of a val_select-sized split (85 positives, 364 negatives)
    tp, fp = np.meshgrid(np.arange(86), np.arange(365), indexing="ij")
    ours = mcc_from_counts(tp, fp, 364 - fp, 85 - tp)
    for i, j in [(0, 0), (85, 364), (40, 100), (85, 0), (3, 361), (60, 17)]:
        pred = np.r_[np.ones(i), np.zeros(85 - i), np.ones(j), np.zeros(364 - j)]
        y = np.r_[np.ones(85), np.zeros(364)]
        assert abs(ours[i, j] - matthews_corrcoef(y, pred)) <= 2.3e-16
    assert np.all(np.abs(ours) <= 1.0)


def test_prior_weights():
    labels = np.r_[np.ones(100, int), np.zeros(400, int)]
    assert prior_weights(labels, 0.5) == (2.5, 0.625)
    w = prior_sample_weights(labels, 0.3)
    np.testing.assert_array_equal(w, np.where(labels == 1, *prior_weights(labels, 0.3)))
    assert w[labels == 1].sum() == pytest.approx(0.3 * labels.size)
    assert w.sum() == pytest.approx(labels.size)
    with pytest.raises(ValueError, match="both classes"):
        prior_weights([1, 1, 1], 0.5)
    with pytest.raises(ValueError, match="target_prior"):
        prior_weights([0, 1], 1.0)
    with pytest.raises(ValueError, match="labels must be 0/1"):
        prior_sample_weights([0, 3], 0.5)


def test_every_place_uses_the_same_mcc():
    """The training loop, the threshold sweep, explora's comparison and the metrics give
    bit-identical MCCs."""
    from roadwork.evaluate.threshold import best_threshold
    from roadwork.train.supervised import binary_scores

    y, _, z = _data(6, n=449)
    point = mcc_at(z, y, 0.0)
    assert binary_metrics(y, z, 0.0)["mcc"] == point
    assert binary_scores(z, y)["mcc"] == point
    res = best_threshold(z, y, 0.5)
    assert res["raw"]["mcc_at_default"] == point
    # the sweep's MCC at its chosen operating threshold is the point MCC there
    assert res["raw"]["mcc"] == mcc_at(z, y, res["raw"]["threshold"])
    # weighted: the sweep's counts are running sums, so equal up to rounding
    w = prior_sample_weights(y, 0.5)
    assert res["reweighted"]["mcc"] == pytest.approx(
        mcc_at(z, y, res["reweighted"]["threshold"], sample_weight=w), abs=1e-12
    )


def test_binary_metrics_matches_sklearn():
    y, p, _ = _data()
    m = binary_metrics(y, p, 0.5)
    pred = (p > 0.5).astype(int)
    assert m["mcc"] == pytest.approx(matthews_corrcoef(y, pred), abs=1e-12)
    assert m["accuracy"] == pytest.approx(accuracy_score(y, pred))
    assert m["auc"] == pytest.approx(roc_auc_score(y, p))
    assert m["precision"] == pytest.approx(precision_score(y, pred))
    assert m["recall"] == pytest.approx(recall_score(y, pred))
    assert m["tp"] + m["fp"] + m["tn"] + m["fn"] == len(y)
    assert m["tp"] == int(((pred == 1) & (y == 1)).sum())


def test_binary_metrics_strict_threshold_and_logits():
    # exactly 0.5 is "not roadwork", like np.round
    m = binary_metrics([1, 0], [0.5, 0.5], 0.5)
    assert m["tp"] == 0 and m["fn"] == 1 and m["tn"] == 1
    y, p, z = _data(1)
    a = binary_metrics(y, p, 0.5)
    b = binary_metrics(y, z, 0.0)
    for k in ("mcc", "accuracy", "tp", "fp", "tn", "fn"):
        assert a[k] == pytest.approx(b[k])


def test_binary_metrics_single_class():
    m = binary_metrics([1, 1, 1], [0.9, 0.2, 0.7], 0.5)
    assert m["auc"] is None
    assert m["mcc"] == 0.0
    assert m["accuracy"] == pytest.approx(2 / 3)
    m = binary_metrics([0, 0], [0.1, 0.2], 0.5)
    assert m["precision"] == 0.0 and m["recall"] == 0.0


def test_bootstrap_fast_path_equals_generic_path():
    y, p, _ = _data(2, n=400)
    pred = (p > 0.5).astype(int)
    fast = bootstrap_ci(y, pred, "mcc", n_boot=300, seed=5)
    slow = bootstrap_ci(y, pred, lambda a, b: matthews_corrcoef(a, b), n_boot=300, seed=5)
    assert fast == pytest.approx(slow, abs=1e-12)
    fast = bootstrap_ci(y, p, "accuracy", n_boot=300, seed=5, threshold=0.5)
    slow = bootstrap_ci(y, pred, accuracy_score, n_boot=300, seed=5)
    assert fast == pytest.approx(slow, abs=1e-12)


def test_bootstrap_ci_properties():
    y, p, _ = _data(3, n=2000)
    pred = (p > 0.5).astype(int)
    point, lo, hi = bootstrap_ci(y, pred, "mcc", n_boot=1000, seed=0)
    assert point == pytest.approx(matthews_corrcoef(y, pred))
    assert lo < point < hi
    # reproducible
    assert bootstrap_ci(y, pred, "mcc", n_boot=1000, seed=0) == (point, lo, hi)
    # narrower with more data (4x data -> about half the width)
    y2, p2, _ = _data(4, n=8000)
    _, lo2, hi2 = bootstrap_ci(y2, (p2 > 0.5).astype(int), "mcc", n_boot=1000, seed=0)
    assert (hi2 - lo2) < 0.75 * (hi - lo)
    # normal-theory sanity check for accuracy: width ~ 2*1.96*sqrt(a(1-a)/n)
    a, lo, hi = bootstrap_ci(y, pred, "accuracy", n_boot=2000, seed=1)
    expect = 2 * 1.96 * np.sqrt(a * (1 - a) / len(y))
    assert (hi - lo) == pytest.approx(expect, rel=0.15)


def test_bootstrap_auc_drops_single_class_resamples():
    y = np.array([0] * 9 + [1])
    p = np.linspace(0, 1, 10)
    point, lo, hi = bootstrap_ci(y, p, roc_auc_score, n_boot=200, seed=0)
    assert point == 1.0
    assert np.isfinite(lo) and np.isfinite(hi)


def test_expected_reward():
    assert expected_reward(1.0, 1.0) == pytest.approx(1.0)
    assert expected_reward(-0.5, 0.5) == pytest.approx(0.25**3)
    assert expected_reward(0.6, 0.8) == pytest.approx(0.7**3)


def _reference_stream_rewards(labels, probs):
    """Direct transcription of the validators' tracker: deque(100), np.round, sklearn."""
    hist_p, hist_y = deque(maxlen=100), deque(maxlen=100)
    out = []
    for yy, pp in zip(labels, probs):
        hist_p.append(pp)
        hist_y.append(yy)

        def metrics(window):
            preds = list(hist_p)[-window:]
            labs = np.array(list(hist_y)[-window:])
            pr = np.round(np.array(preds))
            acc = accuracy_score(labs, pr)
            mcc = max(0, matthews_corrcoef(labs, pr)) if len(np.unique(labs)) > 1 else 0.0
            return mcc, acc

        mcc100, _ = metrics(100)
        _, acc10 = metrics(10)
        out.append((0.5 * mcc100 + 0.5 * acc10) ** 3)
    return np.array(out)


@pytest.mark.parametrize("balanced", [True, False])
def test_simulated_reward_matches_reference_tracker(balanced):
    y, p, _ = _data(5, n=300)
    p = p.copy()
    p[:5] = 0.5  # exercise np.round(0.5) == 0
    mean, per_q = simulated_reward(y, p, seed=3, balanced=balanced, warmup=0, return_per_query=True)
    # rebuild the same stream
    rng = np.random.default_rng(3)
    n = len(y)
    if balanced:
        pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
        q = rng.random(n) < 0.5
        pp = pos[rng.integers(0, pos.size, n)]
        nn = neg[rng.integers(0, neg.size, n)]
        idx = np.where(q, pp, nn)
        assert 0.4 < q.mean() < 0.6
    else:
        idx = rng.permutation(n)
    ref = _reference_stream_rewards(y[idx], p[idx])
    np.testing.assert_allclose(per_q, ref, atol=1e-12)
    assert mean == pytest.approx(ref.mean())


def test_simulated_reward_extremes():
    y = np.array([0, 1] * 200)
    assert simulated_reward(y, y.astype(float), seed=0) == pytest.approx(1.0)
    # constant answer: MCC 0; accuracy over the last 10 of a balanced stream is
    # Binomial(10, 0.5)/10, so the mean reward is E[(0.5 * X / 10) ** 3]
    r = simulated_reward(y, np.zeros(len(y)), seed=0, n_queries=20000)
    k = np.arange(11)
    expect = float(np.sum(binom.pmf(k, 10, 0.5) * (0.5 * k / 10) ** 3))
    assert r == pytest.approx(expect, rel=0.05)
    with pytest.raises(ValueError):
        simulated_reward(y, np.full(len(y), 1.5))

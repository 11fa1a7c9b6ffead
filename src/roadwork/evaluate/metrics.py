"""Binary classification metrics, bootstrap confidence intervals and the validators' reward.

The one home of the definitions the rest of the project uses: label checking
(:func:`check_binary_labels`), confusion counts and MCC at a threshold with optional sample
weights (:func:`confusion_at`, :func:`mcc_at`, :func:`mcc_from_counts`) and re-weighting to
a class prior (:func:`prior_weights`, :func:`prior_sample_weights`). ``threshold`` (the
MCC sweep over every threshold) builds on them.

Decision rule everywhere: predict roadwork iff ``score > threshold`` (strict), like the
validators' ``np.round(p)`` at 0.5, where p == 0.5 is "not roadwork". MCC is 0 where its
denominator is 0 (scikit-learn's convention).
"""

from __future__ import annotations

import warnings
from typing import Callable, NamedTuple

import numpy as np
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import roc_auc_score

__all__ = [
    "check_binary_labels",
    "check_sample_weight",
    "Confusion",
    "confusion_at",
    "mcc_at",
    "mcc_from_counts",
    "prior_weights",
    "prior_sample_weights",
    "binary_metrics",
    "bootstrap_ci",
    "expected_reward",
    "simulated_reward",
    "REWARD_EXPONENT",
    "MCC_WINDOW",
    "ACC_WINDOW",
]

REWARD_EXPONENT = 3  # natix/validator/reward.py: REWARD_CURVE_EXPONENT
MCC_WINDOW = 100  # MCC over the last 100 predictions
ACC_WINDOW = 10  # accuracy over the last 10 predictions


# --- labels, confusion counts, MCC ------------------------------------------------------


def check_binary_labels(labels, what: str = "labels") -> np.ndarray:
    """``labels`` flattened to a boolean array (True = roadwork); a ValueError naming ``what``
    and the offending values unless every value is 0 or 1 (booleans and 0.0/1.0 pass)."""
    y = np.asarray(labels).ravel()
    values = np.unique(y)
    if not np.all(np.isin(values, (0, 1))):
        raise ValueError(f"{what} must be 0/1, got values {values[:10]}")
    return y.astype(bool)


def check_sample_weight(sample_weight, n: int) -> np.ndarray:
    """``sample_weight`` flattened to float64; a ValueError unless it holds ``n`` finite,
    non-negative values."""
    w = np.asarray(sample_weight, dtype=np.float64).ravel()
    if w.shape != (n,):
        raise ValueError(f"sample_weight has shape {w.shape}, the scores ({n},)")
    if np.any(w < 0) or not np.all(np.isfinite(w)):
        raise ValueError("sample_weight must be finite and non-negative")
    return w


def mcc_from_counts(tp, fp, tn, fn) -> np.ndarray:
    """Vectorised MCC from (possibly weighted) confusion counts; 0 where undefined.

    The project's one MCC formula (sklearn's convention: 0 when the denominator is 0). It can
    differ from sklearn's ``matthews_corrcoef`` in the last bit (different operation order).
    """
    tp, fp, tn, fn = (np.asarray(a, dtype=np.float64) for a in (tp, fp, tn, fn))
    num = tp * tn - fp * fn
    # product of the four margins; computed as a product of two square roots to keep
    # the intermediate range small (1e6 samples -> margins up to 1e6 each).
    den = np.sqrt((tp + fp) * (tp + fn)) * np.sqrt((tn + fp) * (tn + fn))
    out = np.zeros(np.broadcast(num, den).shape, dtype=np.float64)
    np.divide(num, den, out=out, where=den > 0)
    # guard against |mcc| creeping over 1 by rounding
    return np.clip(out, -1.0, 1.0)


class Confusion(NamedTuple):
    """Confusion counts (ints, or float sums of sample weights when weighted)."""

    tp: int | float
    fp: int | float
    tn: int | float
    fn: int | float


def confusion_at(scores, labels, threshold: float, sample_weight=None) -> Confusion:
    """(tp, fp, tn, fn) of the deployed rule "predict roadwork iff ``score > threshold``".

    ``scores`` are logits (threshold 0.0) or probabilities (threshold 0.5), or hard 0/1
    predictions with threshold 0.5. A NaN score is never above the threshold (negative).
    With ``sample_weight`` each count is the sum of the weights of its examples (floats).
    """
    y = check_binary_labels(labels)
    s = np.asarray(scores, dtype=np.float64).ravel()
    if s.shape != y.shape:
        raise ValueError(f"scores {s.shape} and labels {y.shape} differ in shape")
    pred = s > threshold
    masks = (pred & y, pred & ~y, ~pred & ~y, ~pred & y)
    if sample_weight is None:
        return Confusion(*(int(np.sum(m)) for m in masks))
    w = check_sample_weight(sample_weight, s.size)
    return Confusion(*(float(np.sum(w[m])) for m in masks))


def mcc_at(scores, labels, threshold: float, sample_weight=None) -> float:
    """MCC of "predict roadwork iff ``score > threshold``" (see :func:`confusion_at`)."""
    return float(mcc_from_counts(*confusion_at(scores, labels, threshold, sample_weight)))


def prior_weights(labels, target_prior: float) -> tuple[float, float]:
    """Class weights (w_pos, w_neg) that make the weighted positive rate equal ``target_prior``.

    w_pos = target_prior / p, w_neg = (1 - target_prior) / (1 - p), p the observed positive
    rate; each class's weights then sum to its target share of n (the total stays n). The
    weighted MCC/accuracy are the values expected on a stream with positive rate
    ``target_prior`` (the validators draw labels 50/50).
    """
    y = check_binary_labels(labels)
    p = float(y.mean()) if y.size else 0.0
    if not 0.0 < p < 1.0:
        raise ValueError(
            f"re-weighting to a class prior needs both classes in the labels (got {int(y.sum())} positives of {y.size})"
        )
    if not 0.0 < target_prior < 1.0:
        raise ValueError(f"target_prior must be in (0, 1), got {target_prior}")
    return target_prior / p, (1.0 - target_prior) / (1.0 - p)


def prior_sample_weights(labels, target_prior: float) -> np.ndarray:
    """:func:`prior_weights` per example: w_pos for positives, w_neg for negatives."""
    y = check_binary_labels(labels)
    w_pos, w_neg = prior_weights(y, target_prior)
    return np.where(y, w_pos, w_neg)


def _paired(labels, values, name: str, dtype=None) -> tuple[np.ndarray, np.ndarray]:
    """Boolean labels and the flattened ``values`` (``name`` in the shape error)."""
    y = check_binary_labels(labels)
    x = np.asarray(values, dtype=dtype).ravel()
    if x.shape != y.shape:
        raise ValueError(f"labels {y.shape} and {name} {x.shape} differ in shape")
    return y, x


def binary_metrics(labels, probs, threshold: float = 0.5) -> dict:
    """MCC, accuracy, AUC, confusion counts, precision and recall at ``probs > threshold``.

    ``probs`` may be probabilities (threshold 0.5) or logits (threshold 0.0). AUC is
    ``None`` when the labels hold a single class (undefined). Precision/recall are 0 when
    their denominator is 0 (sklearn's ``zero_division=0``). JSON-serialisable values.
    """
    y, s = _paired(labels, probs, "probs", np.float64)
    tp, fp, tn, fn = confusion_at(s, y, threshold)
    n = y.size
    auc = float(roc_auc_score(y, s)) if 0 < y.sum() < n else None
    return {
        "n": int(n),
        "n_pos": int(y.sum()),
        "threshold": float(threshold),
        "mcc": float(mcc_from_counts(tp, fp, tn, fn)),
        "accuracy": (tp + tn) / n if n else 0.0,
        "auc": auc,
        "precision": tp / (tp + fp) if tp + fp else 0.0,
        "recall": tp / (tp + fn) if tp + fn else 0.0,
        "tp": tp,
        "fp": fp,
        "tn": tn,
        "fn": fn,
    }


# --- bootstrap -----------------------------------------------------------------------


def _counts_from_codes(codes_idx: np.ndarray) -> np.ndarray:
    """codes_idx: (B, n) values in 0..3 = 2*label + pred -> (B, 4) counts [tn, fp, fn, tp]."""
    b = codes_idx.shape[0]
    flat = (np.arange(b)[:, None] * 4 + codes_idx).ravel()
    return np.bincount(flat, minlength=4 * b).reshape(b, 4)


def _fast_metric(name: str):
    def mcc(c):
        tn, fp, fn, tp = c.T
        return mcc_from_counts(tp, fp, tn, fn)

    def accuracy(c):
        tn, fp, fn, tp = c.T
        return (tp + tn) / c.sum(axis=1)

    return {"mcc": mcc, "accuracy": accuracy}[name]


def bootstrap_ci(
    labels,
    preds_or_probs,
    metric_fn: Callable | str,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
    *,
    threshold: float = 0.5,
    chunk: int | None = None,
) -> tuple[float, float, float]:
    """Percentile bootstrap: returns ``(point, low, high)`` for a (1 - alpha) interval.

    ``metric_fn(labels, preds_or_probs) -> float`` is evaluated on the full data (point)
    and on ``n_boot`` resamples with replacement (same indices for labels and predictions).
    Resamples where the metric is NaN (e.g. AUC on a single-class resample) are dropped.

    ``metric_fn`` may also be the string ``"mcc"`` or ``"accuracy"``: then predictions are
    ``preds_or_probs > threshold`` (pass hard 0/1 predictions with the default 0.5) and the
    resamples are computed fully vectorised from confusion counts (fast for large n).
    """
    y, x = _paired(labels, preds_or_probs, "predictions")
    n = y.size
    if n == 0:
        raise ValueError("empty input")
    rng = np.random.default_rng(seed)
    if chunk is None:
        chunk = max(1, min(n_boot, 4_000_000 // max(n, 1)))

    if isinstance(metric_fn, str):
        fast = _fast_metric(metric_fn)
        codes = (2 * y.astype(np.int64) + (x > threshold).astype(np.int64)).astype(np.int64)
        point = float(fast(np.bincount(codes, minlength=4)[None, :])[0])
        stats = []
        for start in range(0, n_boot, chunk):
            b = min(chunk, n_boot - start)
            idx = rng.integers(0, n, size=(b, n))
            stats.append(fast(_counts_from_codes(codes[idx])))
        stats = np.concatenate(stats)
    else:
        yi = y.astype(int)
        point = float(metric_fn(yi, x))
        stats = np.empty(n_boot)
        with warnings.catch_warnings():
            # e.g. roc_auc_score on a single-class resample: warns and returns NaN
            warnings.simplefilter("ignore", UndefinedMetricWarning)
            for start in range(0, n_boot, chunk):
                b = min(chunk, n_boot - start)
                idx = rng.integers(0, n, size=(b, n))
                for j in range(b):
                    try:
                        stats[start + j] = metric_fn(yi[idx[j]], x[idx[j]])
                    except ValueError:  # older sklearn raises instead
                        stats[start + j] = np.nan
    stats = stats[np.isfinite(stats)]
    if stats.size == 0:
        return point, float("nan"), float("nan")
    low, high = np.quantile(stats, [alpha / 2, 1 - alpha / 2])
    return point, float(low), float(high)


# --- validators' reward ----------------------------------------------------------------


def expected_reward(mcc: float, accuracy: float) -> float:
    """Validators' per-query reward ``(0.5 * max(mcc, 0) + 0.5 * accuracy) ** 3``.

    (natix/validator/reward.py; the validators compute MCC over the miner's last 100
    predictions and accuracy over the last 10 — see :func:`simulated_reward`.) Plugging in
    whole-set MCC and accuracy gives an optimistic proxy: E[f(X)] != f(E[X]).
    """
    return float((0.5 * max(float(mcc), 0.0) + 0.5 * float(accuracy)) ** REWARD_EXPONENT)


def _window_sum(a: np.ndarray, w: int) -> np.ndarray:
    """Sum of a[max(0, i-w+1) : i+1] for each i (the current query included)."""
    c = np.r_[np.zeros((1,) + a.shape[1:], a.dtype), np.cumsum(a, axis=0)]
    i = np.arange(1, a.shape[0] + 1)
    return c[i] - c[np.maximum(i - w, 0)]


def simulated_reward(
    labels,
    preds,
    seed: int = 0,
    *,
    n_queries: int | None = None,
    balanced: bool = True,
    warmup: int = MCC_WINDOW,
    return_per_query: bool = False,
):
    """Replay a query stream and average the validators' per-query reward.

    ``preds`` are the miner's answers for each example: probabilities in [0, 1] (rounded
    with ``np.round`` like the validators: 0.5 -> 0) or hard 0/1 predictions.

    Stream: with ``balanced=True`` (validators' protocol) each query draws its label
    uniformly from {0, 1} and then an example of that label uniformly (with replacement);
    with ``balanced=False`` the examples are replayed once in a random order. ``n_queries``
    defaults to the number of examples.

    Per query (natix/validator/miner_performance_tracker.py + reward.py): the answer is
    appended to the history first; MCC over the last 100 answers, clipped at 0, and 0
    unless the window's labels contain both classes (sklearn also gives 0 when the
    predictions hold one class); accuracy over the last 10; windows shorter at the start
    of the stream. reward = (0.5*MCC + 0.5*acc) ** 3. The mean excludes the first
    ``warmup`` queries (steady state; the validators' history starts empty for a new
    hotkey). Returns the mean (and the per-query rewards if ``return_per_query``).
    """
    y, p = _paired(labels, preds, "preds", np.float64)
    if np.any((p < 0) | (p > 1)):
        raise ValueError("preds must lie in [0, 1] (the validators give 0 reward otherwise)")
    hard = np.round(p).astype(bool)
    rng = np.random.default_rng(seed)
    n = y.size
    if n_queries is None:
        n_queries = n
    if balanced:
        pos_idx = np.flatnonzero(y)
        neg_idx = np.flatnonzero(~y)
        if pos_idx.size == 0 or neg_idx.size == 0:
            raise ValueError("balanced replay needs both classes")
        q_lab = rng.random(n_queries) < 0.5
        pick_pos = pos_idx[rng.integers(0, pos_idx.size, n_queries)]
        pick_neg = neg_idx[rng.integers(0, neg_idx.size, n_queries)]
        idx = np.where(q_lab, pick_pos, pick_neg)
    else:
        idx = rng.permutation(n)[:n_queries]
    ys = y[idx]
    ps = hard[idx]
    onehot = np.zeros((idx.size, 4), dtype=np.int64)  # [tn, fp, fn, tp]
    onehot[np.arange(idx.size), 2 * ys.astype(int) + ps.astype(int)] = 1
    c100 = _window_sum(onehot, MCC_WINDOW)
    tn, fp, fn, tp = c100.T
    both_labels = (tp + fn > 0) & (tn + fp > 0)
    mcc = np.where(both_labels, np.maximum(mcc_from_counts(tp, fp, tn, fn), 0.0), 0.0)
    c10 = _window_sum(onehot, ACC_WINDOW)
    acc = (c10[:, 0] + c10[:, 3]) / c10.sum(axis=1)
    rewards = (0.5 * mcc + 0.5 * acc) ** REWARD_EXPONENT
    tail = rewards[warmup:] if rewards.size > warmup else rewards
    mean = float(tail.mean())
    return (mean, rewards) if return_per_query else mean

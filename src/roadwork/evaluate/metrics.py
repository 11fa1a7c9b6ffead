"""Binary classification metrics, bootstrap confidence intervals and the validators' reward.

Decision rule everywhere: predict roadwork iff ``score > threshold`` (strict), like the
validators' ``np.round(p)`` at 0.5, where p == 0.5 is "not roadwork".
"""

from __future__ import annotations

import warnings
from typing import Callable

import numpy as np
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import roc_auc_score

from roadwork.evaluate.threshold import mcc_from_counts

__all__ = [
    "confusion_counts",
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


def _as_labels(labels) -> np.ndarray:
    y = np.asarray(labels).ravel()
    if y.size and not np.all(np.isin(y, (0, 1))):
        raise ValueError("labels must be 0/1")
    return y.astype(bool)


def confusion_counts(labels, preds) -> tuple[int, int, int, int]:
    """(tp, fp, tn, fn) for boolean/0-1 predictions."""
    y = _as_labels(labels)
    p = np.asarray(preds).ravel().astype(bool)
    tp = int(np.sum(p & y))
    fp = int(np.sum(p & ~y))
    tn = int(np.sum(~p & ~y))
    fn = int(np.sum(~p & y))
    return tp, fp, tn, fn


def binary_metrics(labels, probs, threshold: float = 0.5) -> dict:
    """MCC, accuracy, AUC, confusion counts, precision and recall at ``probs > threshold``.

    ``probs`` may be probabilities (threshold 0.5) or logits (threshold 0.0). AUC is
    ``None`` when the labels hold a single class (undefined). Precision/recall are 0 when
    their denominator is 0 (sklearn's ``zero_division=0``). JSON-serialisable values.
    """
    y = _as_labels(labels)
    s = np.asarray(probs, dtype=np.float64).ravel()
    if s.shape != y.shape:
        raise ValueError("labels and probs differ in shape")
    pred = s > threshold
    tp, fp, tn, fn = confusion_counts(y, pred)
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
    y = _as_labels(labels)
    x = np.asarray(preds_or_probs).ravel()
    n = y.size
    if x.shape != y.shape:
        raise ValueError("labels and predictions differ in shape")
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
    y = _as_labels(labels)
    p = np.asarray(preds, dtype=np.float64).ravel()
    if p.shape != y.shape:
        raise ValueError("labels and preds differ in shape")
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

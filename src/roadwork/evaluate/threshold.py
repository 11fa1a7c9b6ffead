"""Exact MCC at every threshold, and the MCC-optimal decision threshold.

Conventions
-----------
* Scores are whatever the model emits per image (logits by default; probabilities work
  the same way). Labels are 0/1 (1 = roadwork).
* The *sweep* uses the rule "predict 1 iff score >= t" at each candidate ``t`` (every
  distinct score), exactly like scikit-learn's ``_binary_clf_curve`` / ``roc_curve``.
* The *deployed* rule is strict: "predict 1 iff score > threshold" (the validators call
  ``np.round(p)``, so p == 0.5 is "not roadwork"). For a candidate ``t_k`` (the k-th
  distinct score, descending) any operating threshold in ``[t_{k+1}, t_k)`` gives the
  same predictions under ``>`` as ``>= t_k``; :func:`operating_thresholds` returns the
  midpoint ``(t_k + t_{k+1}) / 2`` so that ``score > threshold`` reproduces exactly the
  predictions of the sweep, with a margin of half a gap on each side (robust to float32
  rounding when the threshold is folded into an exported head as a logit shift).
  Extremes: the "predict all negative" point (``t = +inf``) gets ``t_max + g/2`` and the
  "predict all positive" point (lowest distinct score) gets ``t_min - g/2`` where ``g`` is
  the gap to the neighbouring distinct score (1.0 when there is only one distinct score).
* MCC is 0 where its denominator is 0 (scikit-learn's convention).
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np

from roadwork.evaluate.logits import split_logits
from roadwork.evaluate.metrics import (
    check_binary_labels,
    check_sample_weight,
    mcc_at,
    mcc_from_counts,
    prior_sample_weights,
    prior_weights,
)

__all__ = [
    "ThresholdCurve",
    "mcc_at_all_thresholds",
    "operating_thresholds",
    "best_threshold",
    "choose_threshold",
    "downsample_curve",
]


class ThresholdCurve(NamedTuple):
    """Result of :func:`mcc_at_all_thresholds` (unpacks as a 6-tuple)."""

    thresholds: np.ndarray  # candidate t, "predict 1 iff score >= t"; [0] is +inf
    mcc: np.ndarray
    tp: np.ndarray
    fp: np.ndarray
    tn: np.ndarray
    fn: np.ndarray


def _validate(scores, labels, sample_weight=None):
    scores = np.asarray(scores, dtype=np.float64).ravel()
    labels = check_binary_labels(labels)
    if scores.shape != labels.shape:
        raise ValueError(f"scores {scores.shape} and labels {labels.shape} differ in shape")
    if scores.size == 0:
        raise ValueError("empty input")
    if not np.all(np.isfinite(scores)):
        raise ValueError("scores contain NaN or inf")
    w = None if sample_weight is None else check_sample_weight(sample_weight, scores.size)
    return scores, labels, w


def mcc_at_all_thresholds(scores, labels, sample_weight=None) -> ThresholdCurve:
    """Exact (weighted) MCC at every distinct score, in one sorted pass.

    Returns ``(thresholds, mcc, tp, fp, tn, fn)`` as a :class:`ThresholdCurve`, ordered by
    decreasing threshold. Element 0 is the "predict all negative" point
    (``thresholds[0] = +inf``); element k >= 1 is the rule "predict 1 iff score >= t_k"
    for the k-th largest distinct score ``t_k``. The last element therefore predicts
    everything positive. Counts are weighted sums when ``sample_weight`` is given.
    Use :func:`operating_thresholds` to convert to the strict ``score > threshold`` rule.
    """
    scores, labels, w = _validate(scores, labels, sample_weight)
    order = np.argsort(-scores, kind="mergesort")
    s = scores[order]
    y = labels[order]
    if w is None:
        pos = y.astype(np.float64)
        neg = 1.0 - pos
    else:
        ws = w[order]
        pos = np.where(y, ws, 0.0)
        neg = np.where(y, 0.0, ws)
    # last index of each tie group
    last = np.flatnonzero(np.diff(s) != 0)
    last = np.r_[last, s.size - 1]
    tps = np.cumsum(pos)[last]
    fps = np.cumsum(neg)[last]
    P = tps[-1]
    N = fps[-1]
    tp = np.r_[0.0, tps]
    fp = np.r_[0.0, fps]
    fn = np.maximum(P - tp, 0.0)
    tn = np.maximum(N - fp, 0.0)
    thresholds = np.r_[np.inf, s[last]]
    return ThresholdCurve(thresholds, mcc_from_counts(tp, fp, tn, fn), tp, fp, tn, fn)


def operating_thresholds(thresholds) -> np.ndarray:
    """Map sweep thresholds (rule ``>= t``, with leading ``+inf``) to strict-rule ones.

    ``score > operating_thresholds(th)[k]`` gives the same predictions as
    ``score >= th[k]`` on the scores the sweep was computed from (see module docstring).
    """
    th = np.asarray(thresholds, dtype=np.float64)
    if th.size == 0 or not np.isposinf(th[0]):
        raise ValueError("expects the output of mcc_at_all_thresholds (first element +inf)")
    d = th[1:]  # distinct scores, strictly decreasing
    if d.size == 1:
        gap = 1.0
        return np.array([d[0] + gap / 2, d[0] - gap / 2])
    mids = d[:-1] / 2.0 + d[1:] / 2.0
    # adjacent floats: the midpoint may round up onto the upper score; the lower score
    # itself is then a valid strict threshold (any value in [t_{k+1}, t_k) works)
    mids = np.where(mids < d[:-1], mids, d[1:])
    top = d[0] + (d[0] - d[1]) / 2.0
    bottom = d[-1] - (d[-2] - d[-1]) / 2.0
    # a half-gap of one ulp rounds back onto the score: step one ulp out instead
    if not top > d[0]:
        top = np.nextafter(d[0], np.inf)
    if not bottom < d[-1]:
        bottom = np.nextafter(d[-1], -np.inf)
    return np.r_[top, mids, bottom]


def downsample_curve(n_points: int, keep, max_points: int = 2000) -> np.ndarray:
    """Indices into a curve of ``n_points`` points: at most ``max_points`` evenly spaced
    (by rank) indices plus every index in ``keep`` (e.g. the optima), sorted, unique."""
    keep = np.atleast_1d(np.asarray(keep, dtype=np.int64))
    if n_points <= max_points:
        return np.arange(n_points)
    budget = max(max_points - keep.size, 2)
    idx = np.unique(np.round(np.linspace(0, n_points - 1, budget)).astype(np.int64))
    return np.unique(np.r_[idx, keep])


def _summarise(curve: ThresholdCurve, op: np.ndarray, scores, labels, w, default_threshold):
    k = int(np.argmax(curve.mcc))  # first maximum = highest threshold among ties
    return {
        "threshold": float(op[k]),
        "threshold_ge": float(curve.thresholds[k]),
        "mcc": float(curve.mcc[k]),
        "tp": float(curve.tp[k]),
        "fp": float(curve.fp[k]),
        "tn": float(curve.tn[k]),
        "fn": float(curve.fn[k]),
        "mcc_at_default": mcc_at(scores, labels, default_threshold, w),
        "index": k,
    }


def best_threshold(
    scores,
    labels,
    target_prior: float | None = 0.5,
    *,
    default_threshold: float = 0.0,
    max_plot_points: int = 2000,
) -> dict:
    """MCC-optimal operating threshold, for the observed prior and for ``target_prior``.

    ``scores`` are logits by default; ``default_threshold`` is the deployed cut-off in the
    same space (0.0 for logits = probability 0.5; pass 0.5 for probabilities). The
    returned ``threshold`` values are operating thresholds for the strict rule
    ``score > threshold`` (see module docstring); ``threshold_ge`` is the corresponding
    sweep threshold for the ``>=`` rule. Among tied optima the highest threshold is taken.

    The "reweighted" result weights positives by ``target_prior / p`` and negatives by
    ``(1 - target_prior) / (1 - p)`` (p = observed positive rate), i.e. it is the threshold
    that maximises the MCC expected on a stream with positive rate ``target_prior`` (the
    validators draw labels 50/50). It is ``None`` when ``target_prior`` is None or when the
    labels hold a single class (no re-weighting is possible).

    ``curve`` is a list of rows ``{"threshold", "mcc", "mcc_reweighted"}`` (threshold =
    operating threshold, descending) downsampled to about ``max_plot_points`` rows by rank,
    always keeping both optima; it is meant for a DVC plot.
    """
    s, y, _ = _validate(scores, labels)
    n = int(s.size)
    n_pos = int(y.sum())
    p = n_pos / n
    raw_curve = mcc_at_all_thresholds(s, y)
    op = operating_thresholds(raw_curve.thresholds)
    raw = _summarise(raw_curve, op, s, y, None, default_threshold)

    rw = None
    rw_curve = None
    if target_prior is not None and 0 < n_pos < n:
        w_pos, w_neg = prior_weights(y, target_prior)
        w = prior_sample_weights(y, target_prior)
        rw_curve = mcc_at_all_thresholds(s, y, sample_weight=w)
        rw = _summarise(rw_curve, op, s, y, w, default_threshold)
        rw.update(target_prior=float(target_prior), weight_pos=w_pos, weight_neg=w_neg)

    keep = [raw["index"]] + ([rw["index"]] if rw is not None else [])
    idx = downsample_curve(op.size, keep, max_plot_points)
    rows = []
    for i in idx:
        row = {"threshold": float(op[i]), "mcc": float(raw_curve.mcc[i])}
        if rw_curve is not None:
            row["mcc_reweighted"] = float(rw_curve.mcc[i])
        rows.append(row)

    return {
        "n": n,
        "n_pos": n_pos,
        "positive_rate": p,
        "default_threshold": float(default_threshold),
        "raw": raw,
        "reweighted": rw,
        "curve": rows,
    }


def choose_threshold(logits_csv: Path, target_prior: float) -> dict:
    """Exact MCC-optimal logit threshold on val_select, re-weighted to `target_prior`. Only
    val_select is read: val_test is evaluated once, by the export (its figure at this threshold
    is the model card's ``val_test_saved_logits``)."""
    logits, labels = split_logits(logits_csv, "val_select")
    result = best_threshold(logits, labels, target_prior)
    chosen = result["reweighted"] or result["raw"]
    report = {
        "space": "logit",
        "target_prior": target_prior,
        "threshold": chosen["threshold"],
        "val_select": {
            "n": result["n"],
            "positive_rate": round(result["positive_rate"], 6),
            "raw_prior": {
                "threshold": result["raw"]["threshold"],
                "mcc_at_optimum": result["raw"]["mcc"],
                "mcc_at_0.5": result["raw"]["mcc_at_default"],
            },
        },
    }
    if result["reweighted"] is not None:
        rw = result["reweighted"]
        report["val_select"]["target_prior"] = {
            "threshold": rw["threshold"],
            "mcc_at_optimum": rw["mcc"],
            "mcc_at_0.5": rw["mcc_at_default"],
        }
    return report | {"_curve": result["curve"]}

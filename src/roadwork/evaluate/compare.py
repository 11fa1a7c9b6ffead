"""Comparisons that say whether a difference is real: a paired bootstrap interval of the
difference on the same images, and a plain verdict.

Every comparison the pipeline reports (phase 4 vs phase 1, multi-view vs single view, model vs
colour baseline, calibrated vs raw ECE, protocol levels) goes through :func:`paired_difference`:
the images are resampled with replacement *once per resample for both sides* (scipy's
``bootstrap(..., paired=True)``), so what the two sides share (the same hard images) cancels and
the interval is the one of the difference itself. The statistics: :func:`mcc_difference` (MCC of
0/1 decisions, optionally class-weighted) and :func:`reward_difference` (the validators' expected
reward over augmentation draws, the draws of an image kept together). The verdict reads the 95%
interval:

* ``better``: the whole interval is on the good side of 0 (above 0 when higher is better);
* ``worse``: the whole interval is on the bad side;
* ``not distinguishable``: the interval contains 0; the data cannot tell the two apart.

:func:`minimum_detectable_difference` turns a standard error into the smallest true difference a
two-sided 5% test detects with 80% power, (z_0.975 + z_0.8) * SE = 2.80 * SE. :func:`summary` is
the part of a result the metrics files carry (scalar leaves, one column each in `dvc exp show`).
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from scipy import stats

from roadwork.evaluate.metrics import check_binary_labels, expected_reward, mcc_from_counts

BETTER, WORSE, TIE = "better", "worse", "not distinguishable"
VERDICTS = (BETTER, WORSE, TIE)
METHOD = "paired percentile bootstrap over images (scipy.stats.bootstrap, paired=True)"
SUMMARY_KEYS = ("difference", "ci95_low", "ci95_high", "verdict", "n")


def verdict(low: float, high: float, higher_is_better: bool = True) -> str:
    """``better`` / ``worse`` / ``not distinguishable`` from a (candidate - reference) interval."""
    if not (np.isfinite(low) and np.isfinite(high)):
        return TIE
    if low > 0:
        return BETTER if higher_is_better else WORSE
    if high < 0:
        return WORSE if higher_is_better else BETTER
    return TIE


def paired_difference(
    statistic: Callable[..., np.ndarray],
    data,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    higher_is_better: bool = True,
    batch: int | None = None,
) -> dict:
    """``statistic(*data, axis=-1)`` (vectorised: candidate minus reference, one value per row of
    resampled images) on all images, and its paired 95% percentile bootstrap interval.

    ``data``: arrays of one value per image (labels, both sides' predictions, weights, ...), all
    the same length; each resample draws the same images for every array. Returns a JSON-ready
    dict: ``difference``, ``ci95_low``, ``ci95_high``, ``verdict``, ``higher_is_better``, ``n``,
    ``n_boot``, ``seed``, ``method``."""
    arrays = tuple(np.asarray(a) for a in data)
    n = arrays[0].shape[-1] if arrays else 0
    if n == 0 or any(a.shape != arrays[0].shape for a in arrays):
        raise ValueError(f"paired comparison needs equal, non-empty arrays, got shapes {[a.shape for a in arrays]}")
    point = float(statistic(*(a[None, :] for a in arrays), axis=-1)[0])
    if batch is None:
        batch = max(1, min(n_boot, 2_000_000 // n))
    result = stats.bootstrap(
        arrays,
        statistic,
        n_resamples=n_boot,
        batch=batch,
        vectorized=True,
        paired=True,
        axis=-1,
        confidence_level=0.95,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    low, high = float(result.confidence_interval.low), float(result.confidence_interval.high)
    if not np.isfinite(low) or not np.isfinite(high):  # every resample gave the same value
        low = high = point
    return {
        "difference": point,
        "ci95_low": low,
        "ci95_high": high,
        "verdict": verdict(low, high, higher_is_better),
        "higher_is_better": bool(higher_is_better),
        "n": int(n),
        "n_boot": int(n_boot),
        "seed": int(seed),
        "standard_error": float(result.standard_error),
        "method": METHOD,
    }


def _weighted_mcc(y, pred, w, axis=-1):
    y, pred = y.astype(bool), pred.astype(bool)
    return mcc_from_counts(
        (w * (y & pred)).sum(axis),
        (w * (~y & pred)).sum(axis),
        (w * (~y & ~pred)).sum(axis),
        (w * (y & ~pred)).sum(axis),
    )


def _mcc_difference(y, reference, candidate, w, axis=-1):
    return _weighted_mcc(y, candidate, w, axis) - _weighted_mcc(y, reference, w, axis)


def mcc_difference(labels, reference, candidate, *, weights=None, n_boot: int = 1000, seed: int = 0) -> dict:
    """MCC(candidate) - MCC(reference) on the same images with its paired bootstrap interval and
    verdict. ``reference`` / ``candidate``: 0/1 decisions per image; ``weights``: per-image
    weights carried with each resampled image (e.g. :func:`~roadwork.evaluate.metrics.prior_sample_weights`
    for the validators' 50/50 stream)."""
    y = np.asarray(labels).astype(bool).ravel()
    a, b = np.asarray(reference).astype(bool).ravel(), np.asarray(candidate).astype(bool).ravel()
    if not (y.shape == a.shape == b.shape) or y.size == 0:
        raise ValueError(f"labels {y.shape}, reference {a.shape} and candidate {b.shape} must be equal, non-empty")
    w = np.ones(y.size) if weights is None else np.asarray(weights, dtype=np.float64).ravel()
    return paired_difference(_mcc_difference, (y, a, b, w), n_boot=n_boot, seed=seed)


def mcc_standard_error(labels, decisions, *, weights=None, n_boot: int = 1000, seed: int = 0) -> float:
    """Bootstrap standard error of one model's (weighted) MCC over the images: its difference from
    a constant answer, whose MCC is 0 on every resample."""
    decisions = np.asarray(decisions).astype(bool)
    return mcc_difference(labels, np.zeros_like(decisions), decisions, weights=weights, n_boot=n_boot, seed=seed)[
        "standard_error"
    ]


_reward = np.vectorize(expected_reward, otypes=[np.float64])


def _as_draws(decisions, n: int, what: str) -> np.ndarray:
    """0/1 decisions as a (draws, pooled, n) boolean array."""
    d = np.asarray(decisions).astype(bool)
    if d.ndim == 1:
        d = d[None, None]
    elif d.ndim == 2:
        d = d[:, None]
    if d.ndim != 3 or d.shape[-1] != n:
        raise ValueError(
            f"{what}: decisions of shape (n,), (draws, n) or (draws, pooled, n) with n = {n} "
            f"images expected, got {np.shape(decisions)}"
        )
    return d


def _mean_reward(y, pred, w):
    """Mean over draws of the expected reward of each draw. ``y``, ``w``: (resamples, n);
    ``pred``: (draws, pooled, resamples, n); every pooled decision of an image counts with its weight."""
    pos, neg = w * y, w * ~y
    pooled = pred.shape[1]
    tp, fp = (pred * pos).sum(axis=(1, 3)), (pred * neg).sum(axis=(1, 3))
    fn, tn = pooled * pos.sum(-1) - tp, pooled * neg.sum(-1) - fp
    accuracy = (tp + tn) / (tp + fp + tn + fn)
    return _reward(mcc_from_counts(tp, fp, tn, fn), accuracy).mean(0)


def reward_difference(labels, reference, candidate, *, weights=None, n_boot: int = 1000, seed: int = 0) -> dict:
    """The validators' expected reward (:func:`~roadwork.evaluate.metrics.expected_reward` of the
    weighted MCC and accuracy) of ``candidate`` minus ``reference`` on the same images, with its
    paired bootstrap interval and verdict.

    ``reference`` / ``candidate``: 0/1 decisions of shape (n,), (draws, n) or (draws, pooled, n):
    every image's decision in each augmentation draw (``pooled``: several decisions per image that
    form one set, e.g. the four protocol levels of the mix). A side's reward is the mean over draws
    of each draw's reward, as :func:`roadwork.evaluate.protocol.protocol_over_draws` reports it; a
    resample draws images, and an image brings all its draws and pooled decisions with it.
    ``weights``: per-image weights (e.g. the 50/50 class weights), carried with each image."""
    y = check_binary_labels(labels)
    a, b = _as_draws(reference, y.size, "reference"), _as_draws(candidate, y.size, "candidate")
    if a.shape != b.shape:
        raise ValueError(f"reference {a.shape} and candidate {b.shape} decisions differ in shape")
    w = np.ones(y.size) if weights is None else np.asarray(weights, dtype=np.float64).ravel()
    if w.shape != y.shape:
        raise ValueError(f"weights {w.shape} and labels {y.shape} differ in shape")

    def statistic(index, axis=-1):  # index: (resamples, n) image indices
        yi, wi = y[index], w[index]
        return _mean_reward(yi, b[..., index], wi) - _mean_reward(yi, a[..., index], wi)

    return paired_difference(
        statistic, (np.arange(y.size),), n_boot=n_boot, seed=seed, batch=max(1, min(n_boot, 2_000_000 // a.size))
    )


def reward_interval(labels, decisions, *, weights=None, n_boot: int = 1000, seed: int = 0) -> dict:
    """The validators' expected reward of one side's decisions (shapes as in
    :func:`reward_difference`: an image's draws and pooled decisions stay together) with its 95%
    percentile bootstrap interval over images: ``reward``, ``ci95_low``, ``ci95_high``, ``n_boot``."""
    y = check_binary_labels(labels)
    d = _as_draws(decisions, y.size, "decisions")
    w = np.ones(y.size) if weights is None else np.asarray(weights, dtype=np.float64).ravel()

    def statistic(index, axis=-1):
        return _mean_reward(y[index], d[..., index], w[index])

    result = paired_difference(
        statistic, (np.arange(y.size),), n_boot=n_boot, seed=seed, batch=max(1, min(n_boot, 2_000_000 // d.size))
    )
    return {
        "reward": result["difference"],
        "ci95_low": result["ci95_low"],
        "ci95_high": result["ci95_high"],
        "n_boot": int(n_boot),
    }


def summary(result: dict) -> dict:
    """``difference``, ``ci95_low``, ``ci95_high``, ``verdict``, ``n`` of a comparison."""
    return {key: result[key] for key in SUMMARY_KEYS}


def minimum_detectable_difference(standard_error: float, power: float = 0.8, alpha: float = 0.05) -> float:
    """Smallest true difference a two-sided ``alpha`` test detects with probability ``power``
    when the estimate's standard error is ``standard_error``: (z_{1-alpha/2} + z_power) * SE."""
    return float((stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power)) * standard_error)


__all__ = [
    "BETTER",
    "WORSE",
    "TIE",
    "VERDICTS",
    "SUMMARY_KEYS",
    "verdict",
    "paired_difference",
    "mcc_difference",
    "mcc_standard_error",
    "reward_difference",
    "reward_interval",
    "summary",
    "minimum_detectable_difference",
]

"""Calibration maps and calibration metrics for a one-logit binary classifier, with sample
weights (e.g. :func:`~roadwork.evaluate.metrics.prior_sample_weights`, which re-weight a split to
the validators' 50/50 prior).

Maps (:class:`LogisticMap`, probability = sigmoid(scale * z + bias)), fitted by weighted NLL:

* ``"temperature"``: sigmoid((z - t) / T) with the offset t fixed (the tuned decision threshold,
  a logit) and T > 0 fitted (:func:`fit_temperature`, Guo et al. 2017, arXiv 1706.04599, with an
  offset). It crosses 0.5 exactly at z = t, so rounding it at 0.5 is the tuned decision.
* ``"temperature_bias"``: sigmoid(a * z + b) with both free (Platt scaling,
  :func:`fit_temperature_bias`); it crosses 0.5 at z* = -b / a, wherever the NLL puts it.

``"temperature"`` is nested in ``"temperature_bias"`` (a = 1/T, b = -t/T), so the in-sample NLL
of the second is never higher; :func:`compare_maps` compares them fairly (stratified k-fold,
held-out weighted NLL, one-standard-error rule).

ECE definitions (say which one a reported number is):

* ``definition="positive"`` — positive-class calibration, as torchmetrics'
  ``BinaryCalibrationError`` (n_bins=15, norm "l1"): confidence = p (probability of
  roadwork), "accuracy" = the label; ECE = sum_b (W_b / W) |mean_w(label_b) - mean_w(p_b)|.
  This is what a reliability diagram of a binary model normally shows.
* ``definition="top_label"`` — Guo et al.'s definition: confidence = max(p, 1 - p),
  accuracy = 1[prediction == label] with prediction = p > 0.5 (strict, as the validators'
  ``np.round``); confidences lie in [0.5, 1], so with equal-width bins over [0, 1] only the
  upper half of the bins is used.

Weights: each bin's confidence and accuracy are weighted means over its examples, and each bin
counts with its share of the total weight (W_b / W). Without weights every example weighs 1.
An integer weight k gives the same ECE as k copies of the example.

Binning: ``strategy="uniform"`` uses ``n_bins`` equal-width bins over [0, 1], each bin
``(lo, hi]`` with 0 put in the first bin (Guo et al.'s reference implementation).
``strategy="quantile"`` uses equal-mass bins: the examples sorted by confidence are laid end to
end, each as long as its weight, and cut into ``n_bins`` pieces of equal total weight; an
example across a cut is shared between the two bins in proportion (so every bin holds exactly
1/n_bins of the weight). Equal-width ECE is biased upward for small n; report n and the
equal-mass value too.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import numpy as np
from scipy.optimize import minimize, minimize_scalar
from scipy.special import expit
from sklearn.model_selection import StratifiedKFold

from roadwork.evaluate.compare import paired_difference
from roadwork.evaluate.metrics import check_binary_labels, check_sample_weight, prior_sample_weights

__all__ = [
    "MAP_KINDS",
    "IDENTITY",
    "LogisticMap",
    "fit_temperature",
    "fit_temperature_bias",
    "fit_map",
    "held_out_losses",
    "cross_validated_nll",
    "compare_maps",
    "apply_temperature",
    "nll",
    "nll_from_logits",
    "brier",
    "ece",
    "ece_rows",
    "ece_variants",
    "ece_floor",
    "paired_ece_difference",
    "reliability_curve",
    "calibration_report",
]

_EPS = 1e-12
MAP_KINDS = ("temperature", "temperature_bias")


def _labels(labels) -> np.ndarray:
    return check_binary_labels(labels).astype(np.float64)


def _weights(sample_weight, n: int) -> np.ndarray:
    return np.ones(n) if sample_weight is None else check_sample_weight(sample_weight, n)


def _weighted_mean(values: np.ndarray, w: np.ndarray) -> float:
    total = w.sum()
    return float(np.dot(w, values) / total) if total > 0 else 0.0


def nll_from_logits(labels, logits, sample_weight=None) -> float:
    """(Weighted) mean binary cross-entropy from logits (numerically stable)."""
    y = _labels(labels)
    z = np.asarray(logits, dtype=np.float64).ravel()
    return _weighted_mean(np.logaddexp(0.0, z) - y * z, _weights(sample_weight, y.size))


def nll(labels, probs, eps: float = _EPS, sample_weight=None) -> float:
    """(Weighted) mean binary cross-entropy from probabilities (clipped to [eps, 1 - eps])."""
    y = _labels(labels)
    p = np.clip(np.asarray(probs, dtype=np.float64).ravel(), eps, 1 - eps)
    return _weighted_mean(-(y * np.log(p) + (1 - y) * np.log1p(-p)), _weights(sample_weight, y.size))


def brier(labels, probs, sample_weight=None) -> float:
    """(Weighted) mean squared error between the probability of roadwork and the label."""
    y = _labels(labels)
    p = np.asarray(probs, dtype=np.float64).ravel()
    return _weighted_mean((p - y) ** 2, _weights(sample_weight, y.size))


def apply_temperature(logits, temperature: float, offset: float = 0.0) -> np.ndarray:
    """Calibrated probabilities sigmoid((logit - offset) / T)."""
    return expit((np.asarray(logits, dtype=np.float64) - float(offset)) / float(temperature))


# ------------------------------------------------------------------------------ maps
@dataclass(frozen=True)
class LogisticMap:
    """probability = sigmoid(scale * logit + bias); ``kind`` names how it was fitted."""

    kind: str
    scale: float
    bias: float

    @classmethod
    def from_temperature(cls, temperature: float, offset: float, kind: str = "temperature") -> "LogisticMap":
        """sigmoid((z - offset) / temperature)."""
        return cls(kind, 1.0 / float(temperature), -float(offset) / float(temperature))

    def logits(self, logits) -> np.ndarray:
        return self.scale * np.asarray(logits, dtype=np.float64) + self.bias

    def probs(self, logits) -> np.ndarray:
        return expit(self.logits(logits))

    def decisions(self, logits) -> np.ndarray:
        """The validators' decision on this map's probability: p > 0.5 (``np.round``)."""
        return self.logits(logits) > 0

    @property
    def temperature(self) -> float | None:
        return 1.0 / self.scale if self.scale > 0 else None

    @property
    def crossing_logit(self) -> float | None:
        """The raw logit z* where the probability is 0.5 (None unless scale > 0)."""
        return -self.bias / self.scale if self.scale > 0 else None


def _degenerate(z: np.ndarray, y: np.ndarray, w: np.ndarray) -> bool:
    """No finite, well-defined optimum: empty, one class (among weighted examples), no logit spread."""
    kept = w > 0
    return z.size == 0 or not kept.any() or y[kept].min() == y[kept].max() or not np.any(z[kept])


def _fit_inputs(logits, labels, sample_weight):
    z = np.asarray(logits, dtype=np.float64).ravel()
    y = _labels(labels)
    if z.shape != y.shape:
        raise ValueError(f"logits {z.shape} and labels {y.shape} differ in shape")
    return z, y, _weights(sample_weight, y.size)


def fit_temperature(
    logits, labels, *, offset: float = 0.0, sample_weight=None, bounds: tuple[float, float] = (1e-2, 1e2)
) -> float:
    """Fit T > 0 minimising the (weighted) NLL of sigmoid((logit - offset) / T) (bounded Brent
    search on log T).

    Returns 1.0 for degenerate inputs (empty, single class or every logit equal to ``offset``)
    where the optimum is at a boundary or undefined.
    """
    z, y, w = _fit_inputs(logits, labels, sample_weight)
    z = z - float(offset)
    if _degenerate(z, y, w):
        return 1.0

    def f(log_t):
        return nll_from_logits(y, z * np.exp(-log_t), w)

    res = minimize_scalar(f, bounds=(np.log(bounds[0]), np.log(bounds[1])), method="bounded", options={"xatol": 1e-8})
    return float(np.exp(res.x))


def fit_temperature_bias(logits, labels, *, sample_weight=None) -> tuple[float, float]:
    """(a, b) minimising the (weighted) NLL of sigmoid(a * logit + b) (convex; BFGS with the
    analytic gradient). Returns (1.0, 0.0), the identity, for degenerate inputs."""
    z, y, w = _fit_inputs(logits, labels, sample_weight)
    if _degenerate(z, y, w):
        return 1.0, 0.0
    w = w / w.sum()

    def f(params):
        a, b = params
        s = a * z + b
        loss = float(np.dot(w, np.logaddexp(0.0, s) - y * s))
        residual = w * (expit(s) - y)
        return loss, np.array([np.dot(residual, z), residual.sum()])

    res = minimize(f, np.array([1.0, 0.0]), jac=True, method="BFGS", options={"gtol": 1e-10})
    return float(res.x[0]), float(res.x[1])


def fit_map(kind: str, logits, labels, *, threshold: float, sample_weight=None) -> LogisticMap:
    """The ``kind`` map (see the module docstring) fitted on these logits; ``threshold`` is the
    fixed offset t of ``"temperature"``."""
    if kind == "temperature":
        t = fit_temperature(logits, labels, offset=threshold, sample_weight=sample_weight)
        return LogisticMap.from_temperature(t, threshold)
    if kind == "temperature_bias":
        return LogisticMap(kind, *fit_temperature_bias(logits, labels, sample_weight=sample_weight))
    raise ValueError(f"calibration map kind must be one of {MAP_KINDS}, got {kind!r}")


def held_out_losses(
    kind: str, logits, labels, *, threshold: float, sample_weight=None, folds: int = 5, seed: int = 0
) -> np.ndarray | None:
    """Per-example held-out NLL of the ``kind`` map: stratified ``folds``-fold split (shuffled with
    ``seed``), the map fitted (weighted) on the other folds and scored on each example's own fold.
    The number of folds is capped at the smaller class's count; None when that is below 2."""
    z, y, w = _fit_inputs(logits, labels, sample_weight)
    n_splits = min(int(folds), int(y.sum()), int(y.size - y.sum()))
    if n_splits < 2:
        return None
    losses = np.empty(y.size)
    for train, held_out in StratifiedKFold(n_splits, shuffle=True, random_state=seed).split(z, y):
        fitted = fit_map(kind, z[train], y[train], threshold=threshold, sample_weight=w[train])
        s = fitted.logits(z[held_out])
        losses[held_out] = np.logaddexp(0.0, s) - y[held_out] * s
    return losses


def cross_validated_nll(
    kind: str, logits, labels, *, threshold: float, sample_weight=None, folds: int = 5, seed: int = 0
) -> float | None:
    """Weighted mean of :func:`held_out_losses` (sum of weight x loss over the sum of weights)."""
    losses = held_out_losses(
        kind, logits, labels, threshold=threshold, sample_weight=sample_weight, folds=folds, seed=seed
    )
    return None if losses is None else _weighted_mean(losses, _weights(sample_weight, losses.size))


def compare_maps(logits, labels, *, threshold: float, sample_weight=None, folds: int = 5, seed: int = 0) -> dict:
    """Which map describes the data better, by held-out weighted NLL on the same folds.

    ``temperature`` is nested in ``temperature_bias``, so ``temperature_bias`` is the better one
    only when its cross-validated NLL is lower by more than one standard error of the paired
    per-example difference (the one-standard-error rule: the simpler model unless the data say
    otherwise). Returns ``nll_cv`` per kind, ``nll_cv_difference`` (temperature_bias minus
    temperature), its ``standard_error`` and ``better`` (a kind); the differences are None and
    ``better`` is ``temperature`` when a class has fewer than 2 examples."""
    kwargs = {"threshold": threshold, "sample_weight": sample_weight, "folds": folds, "seed": seed}
    losses = {kind: held_out_losses(kind, logits, labels, **kwargs) for kind in MAP_KINDS}
    if losses["temperature"] is None:
        return {
            "nll_cv": dict.fromkeys(MAP_KINDS),
            "nll_cv_difference": None,
            "standard_error": None,
            "better": "temperature",
        }
    w = _weights(sample_weight, losses["temperature"].size)
    share = w / w.sum()
    d = losses["temperature_bias"] - losses["temperature"]
    mean = float(np.dot(share, d))
    se = float(np.sqrt(np.sum(share**2 * (d - mean) ** 2)))
    return {
        "nll_cv": {kind: _weighted_mean(loss, w) for kind, loss in losses.items()},
        "nll_cv_difference": mean,
        "standard_error": se,
        "better": "temperature_bias" if mean < -se else "temperature",
    }


# ------------------------------------------------------------------------------ ECE
def _confidence_accuracy(y: np.ndarray, p: np.ndarray, definition: str):
    """Elementwise over any shape: (confidence, accuracy) of the ECE ``definition``."""
    if definition == "positive":
        return p, y.astype(np.float64)
    if definition == "top_label":
        pred = p > 0.5
        return np.where(pred, p, 1.0 - p), (pred == (y == 1)).astype(np.float64)
    raise ValueError(f"definition must be 'positive' or 'top_label', got {definition!r}")


def _uniform_sums(conf: np.ndarray, acc: np.ndarray, w: np.ndarray, n_bins: int):
    """Per equal-width bin, over the last axis (leading axes are independent rows): number of
    examples, sum of weights, of weight x confidence and of weight x accuracy; each (..., n_bins)."""
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    # bin b holds (edges[b], edges[b+1]]; 0 goes to bin 0
    ids = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, n_bins - 1)
    lead = conf.shape[:-1]
    rows = int(np.prod(lead))
    flat = (np.arange(rows)[:, None] * n_bins + ids.reshape(rows, -1)).ravel()
    w = np.broadcast_to(w, conf.shape)

    def total(values=None):
        weights = None if values is None else values.reshape(-1)
        return np.bincount(flat, weights=weights, minlength=rows * n_bins).reshape(*lead, n_bins)

    return total(), total(w), total(w * conf), total(w * acc)


def _quantile_shares(conf: np.ndarray, w: np.ndarray, n_bins: int) -> np.ndarray:
    """(n, n_bins): the weight each example puts in each equal-mass bin (see the module docstring)."""
    order = np.argsort(conf, kind="mergesort")
    end = np.cumsum(w[order])
    start = end - w[order]
    edges = end[-1] * np.arange(n_bins + 1) / n_bins if end.size else np.zeros(n_bins + 1)
    shares_sorted = np.clip(
        np.minimum(end[:, None], edges[None, 1:]) - np.maximum(start[:, None], edges[None, :-1]), 0.0, None
    )
    shares = np.empty_like(shares_sorted)
    shares[order] = shares_sorted
    return shares


@dataclass(frozen=True)
class _Bins:
    count: np.ndarray  # examples in the bin (quantile: with a share of their weight in it)
    weight: np.ndarray  # sum of weights
    conf: np.ndarray  # sum of weight x confidence
    acc: np.ndarray  # sum of weight x accuracy
    lower: np.ndarray
    upper: np.ndarray


def _binned(labels, probs, n_bins, strategy, definition, sample_weight) -> _Bins:
    y = _labels(labels)
    p = np.asarray(probs, dtype=np.float64).ravel()
    if p.shape != y.shape:
        raise ValueError(f"labels {y.shape} and probs {p.shape} differ in shape")
    w = _weights(sample_weight, y.size)
    conf, acc = _confidence_accuracy(y, p, definition)
    if strategy == "uniform":
        edges = np.linspace(0.0, 1.0, n_bins + 1)
        return _Bins(*_uniform_sums(conf, acc, w, n_bins), edges[:-1], edges[1:])
    if strategy == "quantile":
        shares = _quantile_shares(conf, w, n_bins)
        inside = shares > 0
        lower = np.array([conf[m].min() if m.any() else np.nan for m in inside.T])
        upper = np.array([conf[m].max() if m.any() else np.nan for m in inside.T])
        return _Bins(inside.sum(axis=0), shares.sum(axis=0), conf @ shares, acc @ shares, lower, upper)
    raise ValueError(f"strategy must be 'uniform' or 'quantile', got {strategy!r}")


def ece(
    labels, probs, n_bins: int = 15, strategy: str = "uniform", definition: str = "positive", sample_weight=None
) -> float:
    """Expected calibration error (L1), weighted by ``sample_weight`` if given; see the module
    docstring for the definitions and the binning."""
    bins = _binned(labels, probs, n_bins, strategy, definition, sample_weight)
    total = bins.weight.sum()
    return float(np.sum(np.abs(bins.acc - bins.conf)) / total) if total > 0 else 0.0


def ece_floor(
    probs, raw_prior: float, target_prior: float | None, n_bins: int = 15, n_sim: int = 200, seed: int = 0
) -> dict:
    """The ECE (positive class, equal-width bins) that a *perfectly calibrated* probability shows on
    a sample of this size: labels are drawn from ``probs`` themselves (moved from the
    ``target_prior`` stream they are calibrated for to the sample's ``raw_prior`` by Bayes' rule on
    the odds), re-weighted to ``target_prior`` as the real labels are, ``n_sim`` times. An ECE
    within this floor is what estimation noise alone produces. ``None`` target prior: no shift, no
    weights. Returns ``{"mean", "p95", "n_sim"}``."""
    p = np.clip(np.asarray(probs, dtype=np.float64).ravel(), 1e-12, 1 - 1e-12)
    odds = p / (1 - p)
    if target_prior is not None:
        odds = odds * (raw_prior / (1 - raw_prior)) / (target_prior / (1 - target_prior))
    p_sample = odds / (1 + odds)
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(n_sim):
        y = (rng.random(p.size) < p_sample).astype(int)
        if not 0 < y.sum() < y.size:
            continue
        w = None if target_prior is None else prior_sample_weights(y, target_prior)
        values.append(ece(y, p, n_bins, "uniform", "positive", w))
    values = np.asarray(values)
    return {"mean": float(values.mean()), "p95": float(np.quantile(values, 0.95)), "n_sim": int(values.size)}


def _row_prior_weights(y: np.ndarray, target_prior: float) -> np.ndarray:
    """Per row (last axis): weights re-weighting that row's labels to ``target_prior`` (ones for a
    row holding a single class)."""
    rate = y.mean(axis=-1, keepdims=True)
    both = (rate > 0) & (rate < 1)
    safe = np.where(both, rate, 0.5)
    return np.where(both, np.where(y, target_prior / safe, (1 - target_prior) / (1 - safe)), 1.0)


def ece_rows(
    labels,
    probs,
    *,
    n_bins: int = 15,
    definition: str = "positive",
    sample_weight=None,
    target_prior: float | None = None,
) -> np.ndarray:
    """Equal-width-bin ECE of every row (last axis = examples; e.g. bootstrap resamples), weighted
    by ``sample_weight`` or, with ``target_prior``, by each row's own re-weighting to that prior
    (each resample then has exactly the target class mix). One row gives :func:`ece`."""
    y = np.asarray(labels).astype(bool)
    p = np.asarray(probs, dtype=np.float64)
    if target_prior is not None:
        w = _row_prior_weights(y, float(target_prior))
    else:
        w = np.ones(p.shape) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    conf, acc = _confidence_accuracy(y, p, definition)
    _, weight, s_conf, s_acc = _uniform_sums(conf, acc, w, n_bins)
    total = weight.sum(axis=-1)
    gap = np.abs(s_acc - s_conf).sum(axis=-1)
    return np.divide(gap, total, out=np.zeros_like(gap), where=total > 0)


def _ece_difference(y, reference, candidate, axis=-1, *, n_bins, definition, target_prior):
    rows = partial(ece_rows, n_bins=n_bins, definition=definition, target_prior=target_prior)
    return rows(y, candidate) - rows(y, reference)


def paired_ece_difference(
    labels,
    reference,
    candidate,
    *,
    n_bins: int = 15,
    definition: str = "positive",
    target_prior: float | None = None,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict:
    """ECE(candidate) - ECE(reference) (equal-width bins) of two probabilities for the same images,
    with its paired bootstrap interval and verdict (:func:`roadwork.evaluate.compare.paired_difference`;
    lower ECE is better). With ``target_prior`` every resample is re-weighted to that prior."""
    y = check_binary_labels(labels)
    a = np.asarray(reference, dtype=np.float64).ravel()
    b = np.asarray(candidate, dtype=np.float64).ravel()
    if not (y.shape == a.shape == b.shape):
        raise ValueError(f"labels {y.shape}, reference {a.shape} and candidate {b.shape} differ in shape")
    statistic = partial(_ece_difference, n_bins=n_bins, definition=definition, target_prior=target_prior)
    return paired_difference(statistic, (y, a, b), n_boot=n_boot, seed=seed, higher_is_better=False)


def ece_variants(labels, probs, n_bins: int = 15, sample_weight=None) -> dict[str, float]:
    """ECE under both definitions and both binnings, keys ``ece_{positive,top_label}_{uniform,quantile}``
    (the four numbers the reports give; see the module docstring)."""
    return {
        f"ece_{definition}_{strategy}": ece(labels, probs, n_bins, strategy, definition, sample_weight)
        for definition in ("positive", "top_label")
        for strategy in ("uniform", "quantile")
    }


def reliability_curve(
    labels, probs, n_bins: int = 15, strategy: str = "uniform", definition: str = "positive", sample_weight=None
) -> list[dict]:
    """Rows ``{bin, bin_lower, bin_upper, confidence, accuracy, count, weight}`` for non-empty bins.

    ``confidence`` is the (weighted) mean confidence in the bin, ``accuracy`` the mean label
    (``definition="positive"``) or mean correctness (``"top_label"``), ``weight`` the bin's share of
    the total weight (the shares sum to 1; ECE = sum of weight x |accuracy - confidence|),
    ``count`` its number of examples. For quantile bins, the bounds are the smallest and largest
    confidence in the bin. Meant for a DVC plot.
    """
    bins = _binned(labels, probs, n_bins, strategy, definition, sample_weight)
    total = bins.weight.sum()
    rows = []
    for b in range(n_bins):
        if bins.weight[b] <= 0:
            continue
        weight = bins.weight[b]
        rows.append(
            {
                "bin": b,
                "bin_lower": float(bins.lower[b]),
                "bin_upper": float(bins.upper[b]),
                "confidence": float(bins.conf[b] / weight),
                "accuracy": float(bins.acc[b] / weight),
                "count": int(bins.count[b]),
                "weight": float(weight / total),
            }
        )
    return rows


def _summary(y, z, mapping: LogisticMap, n_bins, w) -> dict:
    p = mapping.probs(z)
    out = {
        "nll": nll_from_logits(y, mapping.logits(z), w),
        "brier": brier(y, p, w),
        "accuracy_at_0.5": _weighted_mean(((p > 0.5) == (y == 1)).astype(np.float64), w),
        "mean_prob": _weighted_mean(p, w),
    }
    out.update(ece_variants(y, p, n_bins, w))
    out["reliability"] = reliability_curve(y, p, n_bins, "uniform", "positive", w)
    return out


IDENTITY = LogisticMap("identity", 1.0, 0.0)


def calibration_report(labels, logits, mapping: LogisticMap, n_bins: int = 15, sample_weight=None) -> dict:
    """Calibration metrics of the network's own probability sigmoid(z) (``before``) and of
    ``mapping`` (``after``), weighted by ``sample_weight`` if given.

    Keys: ``n``, ``n_pos``, ``n_bins``, ``weighted``, ``map`` (kind, scale, bias), ``before``,
    ``after``; each of ``before``/``after`` holds (weighted) nll, brier, accuracy at probability
    0.5, mean probability, ``ece_{positive,top_label}_{uniform,quantile}`` and a positive-class
    equal-width ``reliability`` curve (list of rows).
    """
    y = _labels(labels)
    z = np.asarray(logits, dtype=np.float64).ravel()
    if z.shape != y.shape:
        raise ValueError(f"logits {z.shape} and labels {y.shape} differ in shape")
    w = _weights(sample_weight, y.size)
    return {
        "n": int(y.size),
        "n_pos": int(y.sum()),
        "n_bins": int(n_bins),
        "weighted": sample_weight is not None,
        "map": {"kind": mapping.kind, "scale": mapping.scale, "bias": mapping.bias},
        "before": _summary(y, z, IDENTITY, n_bins, w),
        "after": _summary(y, z, mapping, n_bins, w),
    }

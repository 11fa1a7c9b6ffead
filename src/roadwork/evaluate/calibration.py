"""Temperature scaling and calibration metrics for a one-logit binary classifier.

probability = sigmoid(logit / T). Temperature scaling (Guo et al. 2017, arXiv 1706.04599)
fits the single scalar T > 0 by minimising the NLL on a held-out split; it does not change
the sign of any logit, so decisions at logit 0 (probability 0.5) and accuracy are unchanged.

ECE definitions (say which one a reported number is):

* ``definition="positive"`` — positive-class calibration, as torchmetrics'
  ``BinaryCalibrationError`` (n_bins=15, norm "l1"): confidence = p (probability of
  roadwork), "accuracy" = the label; ECE = sum_b (n_b / n) |mean(label_b) - mean(p_b)|.
  This is what a reliability diagram of a binary model normally shows.
* ``definition="top_label"`` — Guo et al.'s definition: confidence = max(p, 1 - p),
  accuracy = 1[prediction == label] with prediction = p > 0.5 (strict, as the validators'
  ``np.round``); confidences lie in [0.5, 1], so with equal-width bins over [0, 1] only the
  upper half of the bins is used.

Binning: ``strategy="uniform"`` uses ``n_bins`` equal-width bins over [0, 1], each bin
``(lo, hi]`` with 0 put in the first bin (Guo et al.'s reference implementation).
``strategy="quantile"`` uses equal-mass bins: the examples sorted by confidence are split
into ``n_bins`` groups whose sizes differ by at most one (ties may straddle a bin edge).
Equal-width ECE is biased upward for small n; report n and the equal-mass value too.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import expit

from roadwork.evaluate.metrics import check_binary_labels

__all__ = [
    "fit_temperature",
    "apply_temperature",
    "nll",
    "nll_from_logits",
    "brier",
    "ece",
    "ece_variants",
    "reliability_curve",
    "calibration_report",
]

_EPS = 1e-12


def _labels(labels) -> np.ndarray:
    return check_binary_labels(labels).astype(np.float64)


def nll_from_logits(labels, logits) -> float:
    """Mean binary cross-entropy from logits (numerically stable)."""
    y = _labels(labels)
    z = np.asarray(logits, dtype=np.float64).ravel()
    return float(np.mean(np.logaddexp(0.0, z) - y * z))


def nll(labels, probs, eps: float = _EPS) -> float:
    """Mean binary cross-entropy from probabilities (clipped to [eps, 1 - eps])."""
    y = _labels(labels)
    p = np.clip(np.asarray(probs, dtype=np.float64).ravel(), eps, 1 - eps)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log1p(-p)))


def brier(labels, probs) -> float:
    """Mean squared error between the probability of roadwork and the label."""
    y = _labels(labels)
    p = np.asarray(probs, dtype=np.float64).ravel()
    return float(np.mean((p - y) ** 2))


def apply_temperature(logits, temperature: float) -> np.ndarray:
    """Calibrated probabilities sigmoid(logit / T)."""
    return expit(np.asarray(logits, dtype=np.float64) / float(temperature))


def fit_temperature(logits, labels, bounds: tuple[float, float] = (1e-2, 1e2)) -> float:
    """Fit T > 0 minimising the NLL of sigmoid(logit / T) (bounded Brent search on log T).

    Returns 1.0 for degenerate inputs (empty, single class or all-zero logits) where the
    optimum is at a boundary or undefined.
    """
    z = np.asarray(logits, dtype=np.float64).ravel()
    y = _labels(labels)
    if z.shape != y.shape:
        raise ValueError("logits and labels differ in shape")
    if z.size == 0 or y.min() == y.max() or not np.any(z):
        return 1.0
    lo, hi = np.log(bounds[0]), np.log(bounds[1])

    def f(log_t):
        return nll_from_logits(y, z * np.exp(-log_t))

    res = minimize_scalar(f, bounds=(lo, hi), method="bounded", options={"xatol": 1e-8})
    return float(np.exp(res.x))


def _confidence_accuracy(labels, probs, definition: str):
    y = _labels(labels)
    p = np.asarray(probs, dtype=np.float64).ravel()
    if p.shape != y.shape:
        raise ValueError("labels and probs differ in shape")
    if definition == "positive":
        return p, y
    if definition == "top_label":
        pred = p > 0.5
        conf = np.where(pred, p, 1.0 - p)
        return conf, (pred == (y == 1)).astype(np.float64)
    raise ValueError(f"definition must be 'positive' or 'top_label', got {definition!r}")


def _bin_ids(conf: np.ndarray, n_bins: int, strategy: str) -> np.ndarray:
    if strategy == "uniform":
        edges = np.linspace(0.0, 1.0, n_bins + 1)
        # bin b holds (edges[b], edges[b+1]]; 0 goes to bin 0
        ids = np.searchsorted(edges, conf, side="left") - 1
        return np.clip(ids, 0, n_bins - 1)
    if strategy == "quantile":
        order = np.argsort(conf, kind="mergesort")
        ids = np.empty(conf.size, dtype=np.int64)
        for b, chunk in enumerate(np.array_split(order, n_bins)):
            ids[chunk] = b
        return ids
    raise ValueError(f"strategy must be 'uniform' or 'quantile', got {strategy!r}")


def _binned(labels, probs, n_bins, strategy, definition):
    conf, acc = _confidence_accuracy(labels, probs, definition)
    ids = _bin_ids(conf, n_bins, strategy)
    count = np.bincount(ids, minlength=n_bins)
    s_conf = np.bincount(ids, weights=conf, minlength=n_bins)
    s_acc = np.bincount(ids, weights=acc, minlength=n_bins)
    if strategy == "uniform":
        edges = np.linspace(0.0, 1.0, n_bins + 1)
        lo, hi = edges[:-1], edges[1:]
    else:
        lo = np.full(n_bins, np.nan)
        hi = np.full(n_bins, np.nan)
        for b in range(n_bins):
            m = ids == b
            if m.any():
                lo[b], hi[b] = conf[m].min(), conf[m].max()
    return count, s_conf, s_acc, lo, hi


def ece(
    labels,
    probs,
    n_bins: int = 15,
    strategy: str = "uniform",
    definition: str = "positive",
) -> float:
    """Expected calibration error (L1); see the module docstring for the definitions."""
    count, s_conf, s_acc, _, _ = _binned(labels, probs, n_bins, strategy, definition)
    n = count.sum()
    if n == 0:
        return 0.0
    return float(np.sum(np.abs(s_acc - s_conf)) / n)


def ece_variants(labels, probs, n_bins: int = 15) -> dict[str, float]:
    """ECE under both definitions and both binnings, keys ``ece_{positive,top_label}_{uniform,quantile}``
    (the four numbers the reports give; see the module docstring)."""
    return {f"ece_{definition}_{strategy}": ece(labels, probs, n_bins, strategy, definition)
            for definition in ("positive", "top_label") for strategy in ("uniform", "quantile")}


def reliability_curve(
    labels,
    probs,
    n_bins: int = 15,
    strategy: str = "uniform",
    definition: str = "positive",
) -> list[dict]:
    """Rows ``{bin, bin_lower, bin_upper, confidence, accuracy, count}`` for non-empty bins.

    ``confidence`` is the mean confidence in the bin, ``accuracy`` the mean label
    (``definition="positive"``) or mean correctness (``"top_label"``). For quantile bins,
    the bounds are the smallest and largest confidence in the bin. Meant for a DVC plot.
    """
    count, s_conf, s_acc, lo, hi = _binned(labels, probs, n_bins, strategy, definition)
    rows = []
    for b in range(n_bins):
        if count[b] == 0:
            continue
        rows.append(
            {
                "bin": b,
                "bin_lower": float(lo[b]),
                "bin_upper": float(hi[b]),
                "confidence": float(s_conf[b] / count[b]),
                "accuracy": float(s_acc[b] / count[b]),
                "count": int(count[b]),
            }
        )
    return rows


def _summary(labels, logits, temperature, n_bins):
    y = _labels(labels)
    z = np.asarray(logits, dtype=np.float64).ravel()
    p = apply_temperature(z, temperature)
    out = {
        "temperature": float(temperature),
        "nll": nll_from_logits(y, z / temperature),
        "brier": brier(y, p),
        "accuracy_at_0.5": float(np.mean((p > 0.5) == (y == 1))) if y.size else 0.0,
        "mean_prob": float(p.mean()) if y.size else 0.0,
    }
    out.update(ece_variants(y, p, n_bins))
    out["reliability"] = reliability_curve(y, p, n_bins, "uniform", "positive")
    return out


def calibration_report(labels, logits, temperature: float, n_bins: int = 15) -> dict:
    """All calibration metrics before (T = 1) and after (T = ``temperature``) scaling.

    Keys: ``n``, ``n_pos``, ``n_bins``, ``temperature``, ``before``, ``after``; each of
    ``before``/``after`` holds nll, brier, accuracy at probability 0.5, mean probability,
    ``ece_{positive,top_label}_{uniform,quantile}`` and a positive-class equal-width
    ``reliability`` curve (list of rows).
    """
    y = _labels(labels)
    return {
        "n": int(y.size),
        "n_pos": int(y.sum()),
        "n_bins": int(n_bins),
        "temperature": float(temperature),
        "before": _summary(y, logits, 1.0, n_bins),
        "after": _summary(y, logits, temperature, n_bins),
    }

"""Figures per kind of image: real photos, the validators' i2i and t2i challenges, and their mix.

The validators score a stream that is ``1 - fake_prob`` real photos and ``fake_prob`` synthetic
images, ``i2i_share`` of those image-to-image (natix/validator/forward.py:145-152; 50% real, 25%
i2i, 25% t2i by default), each label drawn with ``target_prior``. :func:`mix_weights` weights the
examples so that each kind carries its share of the total weight whatever the counts, and within
a kind each label its prior: the mix's figure is the stream's, not the pooled files'.

Intervals: a stratified bootstrap (images resampled within each kind, so every resample keeps the
mix's shares), 95% percentile intervals.

Figures on the tiny backend's images (the embedded default) exercise the code, they measure
nothing: callers label them with :func:`label`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from roadwork.evaluate.compare import _weighted_mcc
from roadwork.evaluate.metrics import prior_sample_weights
from roadwork.io import read_csv

KINDS = ("real", "i2i", "t2i")
SYNTHETIC_LOGITS = "logits_synthetic.csv"  # next to logits.csv in a trained model directory (models.model_dir)
NOT_A_MEASUREMENT = "random weights: not a measurement (the tiny backend draws noise; a code-path check)"


def kind_shares(fake_prob: float, i2i_share: float) -> dict[str, float]:
    """The validators' stream: the share of each kind."""
    return {"real": 1.0 - fake_prob, "i2i": fake_prob * i2i_share, "t2i": fake_prob * (1.0 - i2i_share)}


def mix_weights(kinds, labels, shares: dict[str, float], target_prior: float | None = 0.5) -> np.ndarray:
    """Per-example weights summing to 1: kind k's examples together weigh ``shares[k]``, and within a kind the
    labels are re-weighted to ``target_prior`` (None: as found). A kind with a positive share must be present."""
    kinds, labels = np.asarray(kinds), np.asarray(labels).astype(int)
    weights = np.zeros(len(labels))
    total = sum(shares.values())
    for kind, share in shares.items():
        mask = kinds == kind
        if share > 0 and not mask.any():
            raise ValueError(f"the mix needs {kind} images (share {share:g}) but there are none")
        if not mask.any():
            continue
        w = np.ones(mask.sum()) if target_prior is None else prior_sample_weights(labels[mask], target_prior)
        weights[mask] = share / total * w / w.sum()
    return weights


def _stratified_boot(kinds: np.ndarray, base: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    """(n_boot, n) weights: each kind's images resampled with replacement, its total weight kept."""
    rng = np.random.default_rng(seed)
    out = np.zeros((n_boot, len(kinds)))
    for kind in np.unique(kinds):
        idx = np.flatnonzero(kinds == kind)
        counts = rng.multinomial(len(idx), np.full(len(idx), 1.0 / len(idx)), size=n_boot)
        w = counts * base[idx]
        sums = w.sum(axis=1, keepdims=True)
        out[:, idx] = np.divide(w, sums, out=np.zeros_like(w), where=sums > 0) * base[idx].sum()
    return out


def _figure(statistic: Callable, y, values, kinds, weights, n_boot: int, seed: int) -> dict:
    value = float(statistic(y, values, weights[None, :])[0])
    boots = np.asarray(statistic(y, values, _stratified_boot(kinds, weights, n_boot, seed)), dtype=float)
    low, high = np.nanpercentile(boots, [2.5, 97.5]) if np.isfinite(boots).any() else (np.nan, np.nan)
    return {"value": round(value, 6), "interval": [round(float(low), 6), round(float(high), 6)], "n": int(len(y))}


def report(
    statistic: Callable,
    y,
    values,
    kinds,
    shares: dict[str, float],
    target_prior: float | None,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict:
    """``statistic(y, values, w)`` (w: (B, n) weights, one row per resample; returns B figures) per kind and for
    the mix, each {value, interval, n}; a kind without images is absent, the mix only when every kind it needs
    is there."""
    y, values, kinds = np.asarray(y).astype(int), np.asarray(values), np.asarray(kinds)
    out = {}
    for kind in KINDS:
        mask = kinds == kind
        if mask.any():
            w = mix_weights(kinds[mask], y[mask], {kind: 1.0}, target_prior)
            out[kind] = _figure(statistic, y[mask], values[mask], kinds[mask], w, n_boot, seed)
    try:
        w = mix_weights(kinds, y, shares, target_prior)
    except ValueError as error:
        out["mix"] = {"missing": str(error)}
        return out
    keep = w > 0
    out["mix"] = _figure(statistic, y[keep], values[keep], kinds[keep], w[keep], n_boot, seed) | {
        "shares": {k: round(v, 6) for k, v in shares.items()}
    }
    return out


def mcc_statistic(threshold: float) -> Callable:
    """Weighted MCC of the decisions ``logit >= threshold``."""
    return lambda y, z, w: _weighted_mcc(y, (z >= threshold), w, axis=-1)


def ece_statistic(probability: Callable, n_bins: int) -> Callable:
    """Weighted positive-class ECE (equal-width bins) of ``probability(logits)``."""
    from roadwork.evaluate.calibration import ece

    def statistic(y, z, w):
        p = probability(z)
        return np.array([ece(y, p, n_bins, sample_weight=row) for row in np.atleast_2d(w)])

    return statistic


def read_kinds(model_dir: Path, split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(logits, labels, kinds) of ``split``: logits.csv (real) and, when the model directory has it,
    logits_synthetic.csv (i2i, t2i)."""
    rows = [r | {"kind": "real"} for r in read_csv(Path(model_dir) / "logits.csv") if r["split"] == split]
    synthetic = Path(model_dir) / SYNTHETIC_LOGITS
    if synthetic.is_file():
        rows += [r for r in read_csv(synthetic) if r["split"] == split]
    return (
        np.array([float(r["logit"]) for r in rows]),
        np.array([int(r["label"]) for r in rows]),
        np.array([r["kind"] for r in rows]),
    )


def label(figures: dict, backend: str | None) -> dict:
    """The report with the synthetic images' backend, and the note when it is the tiny one."""
    out = {"synthetic_backend": backend, **figures}
    if backend == "tiny":
        out["note"] = NOT_A_MEASUREMENT
    return out


def protocol_by_kind(
    runs: dict[str, dict], labels: dict[str, np.ndarray], shares: dict[str, float], n_boot: int = 1000, seed: int = 0
) -> dict:
    """The validators' protocol per kind and for the mix: ``runs[kind]`` is
    :func:`roadwork.evaluate.protocol.protocol_over_draws`'s result on that kind's images (``_probs`` kept),
    ``labels[kind]`` their labels. Each kind: its reward with the interval over images; the mix: the expected
    reward of all kinds' decisions (every draw, the four levels pooled), each image weighted by
    :func:`mix_weights` (labels 50/50 within a kind, as the protocol scores), with its bootstrap interval."""
    from roadwork.evaluate.compare import reward_interval

    out = {
        kind: {
            "reward": run["reward"],
            "ci95_low": run["reward_ci95_low"],
            "ci95_high": run["reward_ci95_high"],
            "n_images": run["n_images"],
        }
        for kind, run in runs.items()
    }
    kinds = list(runs)
    try:
        weights = mix_weights(
            np.concatenate([[k] * len(labels[k]) for k in kinds]),
            np.concatenate([labels[k] for k in kinds]),
            shares,
            0.5,
        )
    except ValueError as error:
        return out | {"mix": {"missing": str(error)}}
    decisions = np.concatenate(
        [np.stack([runs[k]["_probs"][level] for level in runs[k]["_probs"]], axis=1) > 0.5 for k in kinds], axis=-1
    )  # (draws, levels, images of every kind)
    y = np.concatenate([labels[k] for k in kinds])
    keep = weights > 0
    mix = reward_interval(y[keep], decisions[..., keep], weights=weights[keep], n_boot=n_boot, seed=seed)
    return out | {
        "mix": {
            **{k: mix[k] for k in ("reward", "ci95_low", "ci95_high")},
            "n_images": int(keep.sum()),
            "shares": {k: round(v, 6) for k, v in shares.items()},
        }
    }

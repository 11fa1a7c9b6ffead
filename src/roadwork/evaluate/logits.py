"""A trained model's saved logits (``logits.csv`` of a model directory, :mod:`roadwork.models.model_dir`:
one row per image with its split, id, label and logit): one split's logits and labels, two models'
logits paired by image, and the scores of the network's own decision (logit 0)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from roadwork.evaluate.metrics import mcc_at
from roadwork.io import read_csv


def split_logits(logits_csv: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(logits, labels) of the images of ``split``, in file order."""
    rows = [r for r in read_csv(logits_csv) if r["split"] == split]
    if not rows:
        raise ValueError(f"{logits_csv}: no rows for split {split!r}")
    return np.array([float(r["logit"]) for r in rows]), np.array([int(r["label"]) for r in rows])


def paired_split_logits(
    reference_csv: Path, candidate_csv: Path, split: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(labels, reference logits, candidate logits) of two models on the same images of `split`,
    aligned by id; refuses two files whose `split` holds other images or other labels."""
    reference, candidate = (
        {r["id"]: r for r in read_csv(path) if r["split"] == split} for path in (reference_csv, candidate_csv)
    )
    if not reference or set(reference) != set(candidate):
        raise ValueError(
            f"{reference_csv} and {candidate_csv} do not hold the same {split} images "
            f"({len(reference)} and {len(candidate)} ids, {len(set(reference) ^ set(candidate))} "
            "in only one): they come from different splits; rerun the stage that wrote the older one"
        )
    ids = sorted(reference)
    labels = np.array([int(reference[i]["label"]) for i in ids])
    if not np.array_equal(labels, [int(candidate[i]["label"]) for i in ids]):
        raise ValueError(f"{reference_csv} and {candidate_csv} give some {split} images different labels")
    return (
        labels,
        np.array([float(reference[i]["logit"]) for i in ids]),
        np.array([float(candidate[i]["logit"]) for i in ids]),
    )


def split_scores(logits_csv: Path, split: str) -> dict:
    """MCC and accuracy of ``split`` at logit 0 (probability 0.5), AUC (None with one class) and n, rounded to 6
    decimals."""
    logits, labels = split_logits(logits_csv, split)
    predictions = (logits > 0).astype(int)
    auc = float(roc_auc_score(labels, logits)) if len(np.unique(labels)) == 2 else None
    return {
        "mcc": round(mcc_at(logits, labels, 0.0), 6),
        "accuracy": round(float((predictions == labels).mean()), 6),
        "auc": None if auc is None else round(auc, 6),
        "n": int(len(labels)),
    }

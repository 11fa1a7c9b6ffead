"""The threshold stage's work for one model's logits.csv (shared by phase 1 and phase 4)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from roadwork.evaluate import per_kind
from roadwork.evaluate.threshold import best_threshold
from roadwork.io import format_csv, read_csv, write_json, write_text


def split_logits(logits_csv: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
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


def by_kind(
    model_dir: Path, split: str, threshold: float, target_prior: float, shares: dict[str, float], backend: str | None
) -> dict:
    """MCC at ``threshold`` of ``split``'s real, i2i and t2i images and of the validators' mix (``shares``), each
    with its interval (:mod:`roadwork.evaluate.per_kind`), labelled with the synthetic images' backend."""
    logits, labels, kinds = per_kind.read_kinds(model_dir, split)
    return per_kind.label(
        {"mcc": per_kind.report(per_kind.mcc_statistic(threshold), labels, logits, kinds, shares, target_prior)},
        backend,
    )


def write_threshold_outputs(
    logits_csv: Path,
    target_prior: float,
    metrics_json: Path,
    curve_csv: Path,
    shares: dict[str, float] | None = None,
    backend: str | None = None,
) -> dict:
    """The decision (fitted on real val_select images only) and its report; with ``shares`` (the validators'
    mix) and a logits_synthetic.csv next to ``logits_csv``, also ``val_select_by_kind``."""
    report = choose_threshold(logits_csv, target_prior)
    curve = report.pop("_curve")
    if shares is not None and (logits_csv.parent / per_kind.SYNTHETIC_LOGITS).is_file():
        report["val_select_by_kind"] = by_kind(
            logits_csv.parent, "val_select", report["threshold"], target_prior, shares, backend
        )
    columns = ["threshold", "mcc"] + (["mcc_reweighted"] if "mcc_reweighted" in curve[0] else [])
    write_text(curve_csv, format_csv(curve, columns))
    write_json(metrics_json, report)
    return report

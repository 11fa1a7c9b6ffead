"""The threshold stage's work for one model's logits.csv (shared by phase 1 and phase 4)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from roadwork.evaluate.threshold import best_threshold
from roadwork.io import format_csv, read_csv, write_json, write_text


def split_logits(logits_csv: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    rows = [r for r in read_csv(logits_csv) if r["split"] == split]
    if not rows:
        raise ValueError(f"{logits_csv}: no rows for split {split!r}")
    return np.array([float(r["logit"]) for r in rows]), np.array([int(r["label"]) for r in rows])


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
            "n": result["n"], "positive_rate": round(result["positive_rate"], 6),
            "raw_prior": {"threshold": result["raw"]["threshold"], "mcc_at_optimum": result["raw"]["mcc"],
                          "mcc_at_0.5": result["raw"]["mcc_at_default"]},
        },
    }
    if result["reweighted"] is not None:
        rw = result["reweighted"]
        report["val_select"]["target_prior"] = {"threshold": rw["threshold"], "mcc_at_optimum": rw["mcc"],
                                                "mcc_at_0.5": rw["mcc_at_default"]}
    return report | {"_curve": result["curve"]}


def write_threshold_outputs(logits_csv: Path, target_prior: float, metrics_json: Path, curve_csv: Path) -> dict:
    report = choose_threshold(logits_csv, target_prior)
    curve = report.pop("_curve")
    columns = ["threshold", "mcc"] + (["mcc_reweighted"] if "mcc_reweighted" in curve[0] else [])
    write_text(curve_csv, format_csv(curve, columns))
    write_json(metrics_json, report)
    return report

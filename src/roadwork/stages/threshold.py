"""threshold@<model>: exact MCC-optimal decision threshold of a trained model (phase1 | phase4)
on val_select, re-weighted to threshold.target_prior. The decision is a data output (read by
calibrate); the report (with val_select's MCC per kind: real, i2i, t2i and the validators' mix) and the
MCC-vs-threshold curve are metrics and plots."""

import sys
import time
from pathlib import Path

from roadwork.evaluate import per_kind
from roadwork.evaluate.threshold import choose_threshold
from roadwork.io import format_csv, write_json, write_text
from roadwork.stages.common import MODELS, finish_printed, params, threshold_curve, threshold_json, threshold_metrics

DECISION_KEYS = ("space", "target_prior", "threshold")


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


def main() -> None:
    started = time.monotonic()
    model = sys.argv[1] if len(sys.argv) == 2 else None
    if model not in MODELS:
        sys.exit(f"usage: python -m roadwork.stages.threshold {{{'|'.join(MODELS)}}} (got {sys.argv[1:]})")
    config = params()
    shares = per_kind.kind_shares(config.synthesize.fake_prob, config.synthesize.i2i_share)
    report = write_threshold_outputs(
        MODELS[model] / "logits.csv",
        config.threshold.target_prior,
        threshold_metrics(model),
        threshold_curve(model),
        shares,
        config.synthesize.backend,
    )
    write_json(threshold_json(model), {key: report[key] for key in DECISION_KEYS})
    finish_printed(f"threshold@{model}", report, started)


if __name__ == "__main__":
    main()

"""threshold@<model>: exact MCC-optimal decision threshold of a trained model (phase1 | phase4)
on val_select, re-weighted to threshold.target_prior. The decision is a data output (read by
calibrate); the report (with val_select's MCC per kind: real, i2i, t2i and the validators' mix) and the
MCC-vs-threshold curve are metrics and plots."""

import sys
import time

from roadwork.evaluate.per_kind import kind_shares
from roadwork.evaluate.threshold_report import write_threshold_outputs
from roadwork.io import write_json
from roadwork.stages.common import MODELS, finish_printed, params, threshold_curve, threshold_json, threshold_metrics

DECISION_KEYS = ("space", "target_prior", "threshold")


def main() -> None:
    started = time.monotonic()
    model = sys.argv[1] if len(sys.argv) == 2 else None
    if model not in MODELS:
        sys.exit(f"usage: python -m roadwork.stages.threshold {{{'|'.join(MODELS)}}} (got {sys.argv[1:]})")
    config = params()
    shares = kind_shares(config.synthesize.fake_prob, config.synthesize.i2i_share)
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

"""threshold: exact MCC-optimal decision threshold for phase 1 on val_select."""

import time

from roadwork.evaluate.threshold_report import write_threshold_outputs
from roadwork.stages.common import METRICS, PHASE1, PLOTS, finish_printed, params


def main() -> None:
    started = time.monotonic()
    report = write_threshold_outputs(PHASE1 / "logits.csv", params().threshold.target_prior,
                                     METRICS / "threshold.json", PLOTS / "threshold_phase1.csv")
    finish_printed("threshold", report, started)


if __name__ == "__main__":
    main()

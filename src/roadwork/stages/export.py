"""export: build the miner bundle (data/bundle) from the calibrated model and evaluate it on
val_test, with every comparison's paired interval and verdict (roadwork.export.evaluate)."""

import sys
import time

from roadwork.export.evaluate import ExportError, export, headline
from roadwork.stages.calibrate import candidates
from roadwork.stages.common import (
    BUNDLE,
    CALIBRATION_JSON,
    DVC_LOCK,
    RAW,
    SPLIT,
    SYNTHETIC,
    finish,
    finish_printed,
    open_live,
    params,
)


def main() -> None:
    started = time.monotonic()
    config = params()
    if not CALIBRATION_JSON.exists():
        sys.exit(f"export failed: {CALIBRATION_JSON} not found: run the calibrate stage first (dvc repro calibrate)")
    live = open_live("export")
    try:
        metrics = export(
            config, BUNDLE, CALIBRATION_JSON, RAW, SPLIT, DVC_LOCK, candidates(), live=live, synthetic_dir=SYNTHETIC
        )
    except ExportError as error:
        sys.exit(f"export failed: {error}")
    live.end()
    finish("export", metrics, started)  # writes metrics/export.json
    finish_printed("export", headline(metrics), started)


if __name__ == "__main__":
    main()

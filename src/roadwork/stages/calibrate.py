"""calibrate: choose the model to ship (phase 1 or phase 4) and fit the probability it ships,
sigmoid((z - t) / T) with t its tuned threshold, on its val_calib logits under the threshold
decision's target prior; report calibration at both priors (roadwork.evaluate.calibrate)."""

import sys
import time
from pathlib import Path

from roadwork.evaluate.calibrate import CalibrationError, Candidate, calibrate, write_outputs
from roadwork.evaluate.per_kind import kind_shares
from roadwork.stages.common import CALIBRATE, MODELS, RELIABILITY_CSV, finish, params, threshold_json

PRODUCED_BY = {"phase1": "train_phase1 and threshold@phase1", "phase4": "explora and threshold@phase4"}


def candidates(root: Path = Path(".")) -> dict[str, Candidate]:
    """The trained models in pipeline order (ties in the choice go to the earlier one)."""
    return {
        name: Candidate(name, root / path, root / threshold_json(name), PRODUCED_BY[name])
        for name, path in MODELS.items()
    }


def main() -> None:
    started = time.monotonic()
    try:
        config = params()
        shares = kind_shares(config.synthesize.fake_prob, config.synthesize.i2i_share)
        calibration, metrics, rows = calibrate(config.calibrate, candidates(), shares, config.synthesize.backend)
    except CalibrationError as error:
        sys.exit(f"calibrate failed: {error}")
    write_outputs(calibration, rows, CALIBRATE, RELIABILITY_CSV)
    finish("calibrate", metrics, started)


if __name__ == "__main__":
    main()

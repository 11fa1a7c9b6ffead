"""train_phase1: fine-tune the backbone + head on the train split; save weights and logits."""

import sys
import time

from roadwork.models.classifier import build_model
from roadwork.stages.common import PHASE1, RAW, RUNS, SPLITS_CSV, SYNTHETIC, finish, open_live, params
from roadwork.train.distributed import init_distributed, relaunch_under_torchrun, seed_everything, shutdown
from roadwork.train.fit import fit, run_key
from roadwork.train.supervised import TrainingDataError


def main() -> None:
    started = time.monotonic()
    config = params()
    relaunch_under_torchrun("roadwork.stages.train_phase1", config.train.processes)
    dist = init_distributed()
    seed_everything(config.train.seed)  # the same initial weights on every rank and every run
    model = build_model(config.model)
    mixed = [SYNTHETIC / "manifest.csv"] if config.train.synthetic_share > 0 else []
    run_dir = RUNS / "phase1" / run_key(config, SPLITS_CSV, *mixed)
    live = open_live("phase1") if dist.is_main else None
    try:
        metrics = fit(config, model, RAW, SPLITS_CSV, PHASE1, run_dir, dist, live, synthetic_dir=SYNTHETIC)
    except TrainingDataError as error:
        sys.exit(f"train_phase1 failed: {error}")
    if dist.is_main:
        live.end()
        finish("phase1", metrics, started)
    shutdown()


if __name__ == "__main__":
    main()

"""explora: phase 4. ExPLoRA self-supervised pre-training, then supervised fine-tuning, and the
phase-1 vs phase-4 comparison on val_select (roadwork.train.phase4)."""

import shutil
import sys
import time

from roadwork.stages.common import EXPLORA, PHASE1, PHASE4, RAW, RUNS, SPLITS_CSV, SYNTHETIC, finish, open_live, params
from roadwork.train.distributed import init_distributed, relaunch_under_torchrun, shutdown
from roadwork.train.phase4 import explora_metrics, finetune, pretrained_backbone, save_backbone
from roadwork.train.supervised import TrainingDataError


def main() -> None:
    started = time.monotonic()
    config = params()
    needed = [PHASE1 / "logits.csv"] + ([PHASE1 / "model.safetensors"] if config.explora.init == "phase1" else [])
    if not all(path.exists() for path in needed):
        sys.exit(f"{PHASE1} is incomplete: run the train_phase1 stage first (dvc repro train_phase1)")
    relaunch_under_torchrun("roadwork.stages.explora", config.train.processes)
    dist = init_distributed()

    live = open_live("explora") if dist.is_main else None
    weights, summary, weights_path = pretrained_backbone(config, RAW, SPLITS_CSV, PHASE1, RUNS, dist, live)
    if dist.is_main:
        live.end()
        save_backbone(config, weights, summary, EXPLORA)

    live = open_live("phase4") if dist.is_main else None
    try:
        finetuned = finetune(
            config, weights, weights_path, RAW, SPLITS_CSV, PHASE4, RUNS, dist, live, synthetic_dir=SYNTHETIC
        )
    except TrainingDataError as error:
        sys.exit(f"explora failed: {error}")
    if dist.is_main:
        live.end()
        metrics = explora_metrics(summary, finetuned, PHASE1 / "logits.csv", PHASE4 / "logits.csv", EXPLORA)
        shutil.rmtree(weights_path.parent, ignore_errors=True)  # the whole stage succeeded
        finish("explora", metrics, started)
    shutdown()


if __name__ == "__main__":
    main()

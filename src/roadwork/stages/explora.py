"""explora: phase 4. ExPLoRA self-supervised pre-training, then supervised fine-tuning
(:mod:`roadwork.train.adaptation`), the adapted backbone saved (data/explora), and the phase-1 vs
phase-4 comparison on val_select (with the paired bootstrap interval and verdict of the MCC difference)."""

import shutil
import sys
import time
from pathlib import Path

from safetensors.torch import save_file

from roadwork.config import Params
from roadwork.evaluate.compare import mcc_difference
from roadwork.evaluate.compare import summary as difference_summary
from roadwork.evaluate.logits import paired_split_logits, split_scores
from roadwork.io import atomic_path, dumps_json, sha256_file
from roadwork.stages.common import EXPLORA, PHASE1, PHASE4, RAW, RUNS, SPLITS_CSV, SYNTHETIC, finish, open_live, params
from roadwork.train.adaptation import finetune, pretrained_backbone
from roadwork.train.distributed import init_distributed, relaunch_under_torchrun, shutdown
from roadwork.train.supervised import TrainingDataError

BACKBONE_FILE = "backbone.safetensors"


def save_backbone(config: Params, weights: dict, summary: dict, out_dir: Path) -> None:
    """`out_dir`/backbone.safetensors (+ backbone.json): the adapted backbone, LoRA merged, a stock
    timm state dict."""
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        save_file(weights, tmp / BACKBONE_FILE)
        (tmp / "backbone.json").write_text(
            dumps_json(
                {
                    "backbone": config.model.backbone,
                    "overrides": dict(config.model.overrides),
                    "pooling": config.model.pooling,
                    "img_size": config.model.img_size,
                    "source": summary["exported"],
                    "init": summary["init"],
                    "load": "timm.create_model(backbone, num_classes=0, global_pool=pooling, img_size=img_size, **overrides)"
                    ".load_state_dict(load_file('backbone.safetensors'))",
                }
            )
        )


def compare(phase1_logits: Path, phase4_logits: Path) -> dict:
    """val_select MCC, accuracy (at logit 0, i.e. probability 0.5) and AUC of both phases, and
    ``phase4_vs_phase1``: the MCC difference with its paired bootstrap 95% interval over the same
    images and verdict (:func:`roadwork.evaluate.compare.mcc_difference`, its default 1000
    resamples and seed 0: a training report's figure, not worth a parameter that re-runs phase 4)."""
    one, four = split_scores(phase1_logits, "val_select"), split_scores(phase4_logits, "val_select")
    delta = {
        k: None if one[k] is None or four[k] is None else round(four[k] - one[k], 6) for k in ("mcc", "accuracy", "auc")
    }
    labels, phase1_z, phase4_z = paired_split_logits(phase1_logits, phase4_logits, "val_select")
    interval = difference_summary(mcc_difference(labels, phase1_z > 0, phase4_z > 0))
    interval = {k: round(v, 6) if isinstance(v, float) else v for k, v in interval.items()}
    return {"phase1": one, "phase4": four, "phase4_minus_phase1": delta, "phase4_vs_phase1": interval}


def explora_metrics(
    summary: dict, finetuned: dict, phase1_logits: Path, phase4_logits: Path, backbone_dir: Path
) -> dict:
    return {
        "val_select": compare(phase1_logits, phase4_logits),
        "ssl": {k: v for k, v in summary.items() if k != "history"},
        "finetune": finetuned,
        "backbone_sha256": sha256_file(backbone_dir / BACKBONE_FILE),
    }


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

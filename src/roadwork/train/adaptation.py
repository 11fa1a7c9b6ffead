"""Domain adaptation of the backbone (ExPLoRA, phase 4; paths come from the caller): self-supervised
pre-training of the backbone on unlabeled train-split images (+ explora.extra_unlabeled), then supervised
fine-tuning of the adapted backbone with the phase-1 trainer (:func:`roadwork.train.fit.fit`).

Resume: the pre-training checkpoints every epoch under ``<runs>/explora/<key>/`` and keeps its
finished backbone there until the caller has finished the whole stage (it then removes that
folder), so a rerun after a kill during fine-tuning does not pre-train again; fine-tuning resumes
through the phase-1 trainer (``<runs>/phase4/<key>/``).
"""

from __future__ import annotations

import hashlib
import logging
import math
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from roadwork.config import Params
from roadwork.io import atomic_path, dumps_json, read_json, write_text
from roadwork.models.adapters import add_qv_adapters
from roadwork.models.classifier import build_model, data_config
from roadwork.models.model_dir import WEIGHTS, backbone_weights
from roadwork.train.data import ImageCache, ImageDataset
from roadwork.train.distributed import seed_everything
from roadwork.train.fit import fit, run_key
from roadwork.train.multicrop import MultiCropTransform
from roadwork.train.ssl import log_row, pretrain, unlabeled_examples
from roadwork.train.student_teacher import ExploraSSL

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------ pre-training
def initial_classifier(config: Params, phase1_dir: Path):
    """Phase 1's starting point (model.backbone/overrides/pretrained), or phase 1's fine-tuned
    backbone (the model directory `phase1_dir`) when explora.init is phase1."""
    seed_everything(config.train.seed)
    classifier = build_model(config.model)
    if config.explora.init == "phase1":
        classifier.backbone.load_state_dict(backbone_weights(phase1_dir))
    return classifier


def pretrained_backbone(
    config: Params, raw_dir: Path, splits_csv: Path, phase1_dir: Path, runs: Path, dist, live
) -> tuple[dict, dict, Path]:
    """(adapted backbone state dict, SSL summary, the run's saved weights file). Reuses a finished
    pre-training of the same run key under `runs`/explora."""
    cfg = config.explora
    examples, counts = unlabeled_examples(
        raw_dir, splits_csv, cfg.extra_unlabeled, config.dedup.max_hamming, config.data.max_pixels
    )
    images = hashlib.sha256("\n".join(f"{e.id} {e.sha256}" for e in examples).encode()).hexdigest()
    inputs = [splits_csv] + ([phase1_dir / WEIGHTS] if cfg.init == "phase1" else [])
    run_dir = runs / "explora" / run_key(config, *inputs, extra={"explora": cfg.model_dump(), "images": images})
    weights_path, summary_path = run_dir / "backbone.safetensors", run_dir / "summary.json"
    if weights_path.exists() and summary_path.exists():
        summary = read_json(summary_path)
        if dist.is_main:
            log.info("self-supervised pre-training already finished in %s: reusing it", run_dir)
            for row in summary["history"]:
                log_row(live, row)
        return load_file(weights_path), summary, weights_path

    classifier = initial_classifier(config, phase1_dir)
    cfg_data = data_config(classifier)
    ssl = ExploraSSL(classifier.backbone, cfg)
    if dist.is_main:
        log.info("ExPLoRA: %d unlabeled images %s; parameters %s", len(examples), counts, ssl.trainable_counts())
    cache = ImageCache(max(cfg.global_crop_size, config.model.img_size))
    dataset = ImageDataset(
        examples, cache, MultiCropTransform(cfg, cfg_data["mean"], cfg_data["std"]), seed=config.train.seed
    )
    state = pretrain(ssl, dataset, config.train, run_dir, dist, live)
    backbone = ssl.adapted_backbone()
    weights = {k: v.detach().cpu().contiguous() for k, v in backbone.state_dict().items()}
    final = state.history[-1]
    summary = {
        "exported": "teacher backbone (EMA), LoRA merged",
        "init": cfg.init,
        "epochs": state.epoch,
        "steps": state.step,
        "images": counts,
        "parameters": ssl.trainable_counts(),
        "final_loss": final["loss"],
        "final": {k: v for k, v in final.items() if k not in ("epoch", "lr", "teacher_momentum", "teacher_temp")},
        "teacher_entropy_max": math.log(cfg.head_prototypes),  # uniform teacher output (one collapse mode)
        "embedding_std_isotropic": 1 / math.sqrt(backbone.num_features),  # spread of random unit vectors
        "history": state.history,
    }
    if dist.is_main:
        with atomic_path(weights_path) as tmp:
            save_file(weights, tmp)
        write_text(summary_path, dumps_json(summary))
    if dist.world_size > 1:
        torch.distributed.barrier()
    return weights, summary, weights_path


# ------------------------------------------------------------------------------ fine-tuning
def finetune_params(config: Params) -> Params:
    """The params fit() trains phase 4 with. An adapter (lora/dora/doran) is parameter-efficient
    fine-tuning: the backbone's own weights are frozen (model.freeze -> frozen) and features are
    never cached (the adapters change them); with adapter none, model.freeze applies as in phase 1."""
    if config.explora.adapter == "none":
        return config
    model = config.model.model_copy(update={"freeze": "frozen"})
    train = config.train.model_copy(update={"feature_cache": False})
    return config.model_copy(update={"model": model, "train": train})


def finetune_model(config: Params, weights: dict):
    """Classifier with the adapted backbone (+ q/v adapters when asked), and the model.json extras
    that let roadwork.models.model_dir.load_trained rebuild it. The backbone takes the tensors of
    `weights` as its parameters (``assign=True``, no copy): the caller's dict stays referenced
    during fine-tuning, and a copy is 3.4 GB more at ViT-H/16+ (the rehearsal ran out of memory)."""
    seed_everything(config.train.seed)  # the same head initialisation as phase 1
    model = build_model(config.model, pretrained="none")
    model.backbone.load_state_dict(weights, assign=True)
    extra = {"explora": {"init": config.explora.init, "adapter": config.explora.adapter}}
    if config.explora.adapter != "none":
        adapter = {"kind": config.explora.adapter, "rank": config.explora.adapter_rank}
        add_qv_adapters(model.backbone, **adapter)
        extra["adapter"] = adapter
    return model, extra


def finetune(
    config: Params,
    weights: dict,
    weights_path: Path,
    raw_dir: Path,
    splits_csv: Path,
    out_dir: Path,
    runs: Path,
    dist,
    live,
    synthetic_dir: Path | None = None,
) -> dict:
    """Supervised fine-tuning of the adapted backbone into `out_dir` (as phase 1's model dir, with the
    synthetic children of ``synthetic_dir`` as fit() takes them); returns the fine-tuning summary for
    metrics/explora.json."""
    ft_config = finetune_params(config)
    model, extra = finetune_model(config, weights)
    mixed = [Path(synthetic_dir) / "manifest.csv"] if config.train.synthetic_share > 0 else []
    run_dir = runs / "phase4" / run_key(ft_config, splits_csv, weights_path, *mixed, extra=extra)
    result = fit(
        ft_config,
        model,
        raw_dir,
        splits_csv,
        out_dir,
        run_dir,
        dist,
        live,
        description_extra=extra,
        synthetic_dir=synthetic_dir,
    )
    return {"adapter": config.explora.adapter, "backbone_freeze": ft_config.model.freeze, **result}

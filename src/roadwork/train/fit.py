"""Supervised training of a classifier (phase 1, and phase 4 on the adapted backbone): data, training, and the
trained model directory
(:mod:`roadwork.models.model_dir`) they save: weights, model.json and the logits of val_select,
val_calib and val_test computed from exactly those weights.

With the synthesize stage's output (``synthetic_dir``), ``train.synthetic_share`` of the training set
is drawn (seeded) from the synthetic children of train sources, and the synthetic children of the
evaluation splits get logits too (``logits_synthetic.csv``, with their kind).
"""

from __future__ import annotations

import hashlib
import logging
import shutil
from pathlib import Path

import numpy as np

from roadwork.config import Params
from roadwork.data.examples import Example, load_split
from roadwork.io import dumps_json
from roadwork.models.backbone import apply_freeze_policy
from roadwork.models.classifier import RoadworkClassifier, data_config
from roadwork.models.model_dir import model_description, save_model_dir
from roadwork.synthesize.plan import derive_seed
from roadwork.train.augment import eval_transform, train_transform
from roadwork.train.data import ImageCache, ImageDataset
from roadwork.train.distributed import Dist
from roadwork.train.supervised import (
    TrainingDataError,
    TrainState,
    binary_scores,
    eval_loader,
    extract_features,
    predict_logits,
    train,
)

EVAL_SPLITS = ("val_select", "val_calib", "val_test")
SYNTHETIC_KINDS = ("i2i", "t2i")

log = logging.getLogger(__name__)


def mix_in(real: list[Example], synthetic: list[Example], share: float, seed: int) -> list[Example]:
    """``real`` plus a seeded choice of ``synthetic`` making up ``share`` of the result (fewer when there
    are not enough: all of them). share 0 returns ``real`` itself."""
    if share <= 0:
        return real
    wanted = min(len(synthetic), round(share / (1 - share) * len(real)))
    chosen = sorted(synthetic, key=lambda e: (derive_seed(seed, e.id, "mix_in"), e.id))[:wanted]
    return real + sorted(chosen, key=lambda e: e.id)


def has_synthetic(synthetic_dir: Path | None) -> bool:
    return synthetic_dir is not None and (Path(synthetic_dir) / "manifest.csv").is_file()


def run_key(params: Params, *inputs: Path, extra: dict | None = None) -> str:
    """Identifies a training run: its params and the content of its inputs (for resume)."""
    digest = hashlib.sha256(
        dumps_json(
            {"model": params.model.model_dump(), "train": params.train.model_dump(), "extra": extra or {}}
        ).encode()
    )
    for path in inputs:
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def fit(
    params: Params,
    model: RoadworkClassifier,
    raw_dir: Path,
    splits_csv: Path,
    out_dir: Path,
    run_dir: Path,
    dist: Dist,
    live=None,
    description_extra: dict | None = None,
    synthetic_dir: Path | None = None,
) -> dict:
    """Train, then write model.safetensors, model.json and logits.csv into `out_dir` (rank 0); with
    ``synthetic_dir`` (data/synthetic) also logits_synthetic.csv, and train.synthetic_share mixes its
    train children in."""
    cfg = data_config(model)
    mean, std = cfg["mean"], cfg["std"]
    train_params, img_size = params.train, params.model.img_size
    cache = ImageCache(img_size)
    examples = {name: load_split(raw_dir, splits_csv, name) for name in ("train", *EVAL_SPLITS)}
    synthetic = has_synthetic(synthetic_dir)
    if train_params.synthetic_share > 0:
        if not synthetic:
            raise TrainingDataError(
                f"train.synthetic_share is {train_params.synthetic_share} but "
                f"{synthetic_dir}/manifest.csv does not exist: run the synthesize stage"
            )
        children = load_split(raw_dir, splits_csv, "train", SYNTHETIC_KINDS, synthetic_dir)
        examples["train"] = mix_in(examples["train"], children, train_params.synthetic_share, train_params.seed)
    evaluate_tf = eval_transform(img_size, mean, std)
    counts = apply_freeze_policy(model.backbone, params.model.freeze, params.model.freeze_last_n)
    if dist.is_main:
        log.info("backbone parameters: %s", counts)

    if train_params.feature_cache:
        # Frozen backbone: features once, then epochs over the head alone (no image augmentation).
        batch = max(1, train_params.batch_size // dist.world_size)
        train_set, val_set = (
            extract_features(
                model,
                ImageDataset(examples[split], cache, evaluate_tf),
                batch,
                dist,
                train_params.precision,
                train_params.num_workers,
            )
            for split in ("train", "val_select")
        )
        state = train(model, train_set, val_set, train_params, run_dir, dist, live, forward_name="head")
    else:
        train_set = ImageDataset(
            examples["train"], cache, train_transform(train_params.augment, img_size, mean, std), seed=train_params.seed
        )
        val_set = ImageDataset(examples["val_select"], cache, evaluate_tf)
        state = train(model, train_set, val_set, train_params, run_dir, dist, live)

    rows = []
    model.eval()
    for split in EVAL_SPLITS:
        dataset = ImageDataset(examples[split], cache, evaluate_tf)
        loader = eval_loader(
            dataset, max(1, train_params.batch_size // dist.world_size), dist, train_params.num_workers
        )
        logits = predict_logits(model, loader, dist, train_params.precision, len(dataset))
        rows += [
            {"split": split, "id": e.id, "label": e.label, "logit": float(v)} for e, v in zip(dataset.examples, logits)
        ]
    synthetic_rows = None
    if synthetic:
        synthetic_rows = []
        for split in EVAL_SPLITS:
            dataset = ImageDataset(
                load_split(raw_dir, splits_csv, split, SYNTHETIC_KINDS, synthetic_dir), cache, evaluate_tf
            )
            if not len(dataset):
                continue
            loader = eval_loader(
                dataset, max(1, train_params.batch_size // dist.world_size), dist, train_params.num_workers
            )
            logits = predict_logits(model, loader, dist, train_params.precision, len(dataset))
            synthetic_rows += [
                {"split": split, "id": e.id, "kind": e.kind, "label": e.label, "logit": float(v)}
                for e, v in zip(dataset.examples, logits)
            ]
    if not dist.is_main:
        return {}
    description = model_description(params.model, model, best_epoch=state.best_epoch, **(description_extra or {}))
    save_model_dir(out_dir, model, description, rows, synthetic_rows)
    shutil.rmtree(run_dir, ignore_errors=True)  # finished: the resume checkpoint is no longer needed
    metrics = summarise(state, rows, counts)
    if train_params.synthetic_share > 0:
        metrics["synthetic_train_images"] = sum(e.kind != "real" for e in examples["train"])
    return metrics


def summarise(state: TrainState, rows: list[dict], counts) -> dict:
    metrics = {
        "best_epoch": state.best_epoch,
        "epochs_run": state.epoch,
        "trainable_parameters": int(counts.trainable),
        "total_parameters": int(counts.total),
    }
    for split in EVAL_SPLITS:
        labels = np.array([r["label"] for r in rows if r["split"] == split])
        logits = np.array([r["logit"] for r in rows if r["split"] == split])
        metrics[split] = {k: round(v, 6) for k, v in binary_scores(logits, labels).items()} | {"n": int(len(labels))}
    return metrics

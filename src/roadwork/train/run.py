"""Shared by the phase-1 and phase-4 stages: data, model, training and the outputs they save.

A trained model directory holds `model.safetensors` (the best checkpoint's weights), `model.json`
(everything needed to rebuild the module and its preprocessing) and `logits.csv` (split, id,
label, logit) for val_select, val_calib and val_test, computed from exactly those weights.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
from safetensors.torch import load_file, save_file

from roadwork.config import ModelParams, Params
from roadwork.io import atomic_path, dumps_json, format_csv
from roadwork.models.backbone import apply_freeze_policy
from roadwork.models.classifier import RoadworkClassifier, build_classifier, data_config
from roadwork.train.augment import eval_transform, train_transform
from roadwork.train.data import ImageCache, ImageDataset, load_split
from roadwork.train.distributed import Dist
from roadwork.train.supervised import TrainState, eval_loader, extract_features, predict_logits, train

EVAL_SPLITS = ("val_select", "val_calib", "val_test")
LOGIT_COLUMNS = ["split", "id", "label", "logit"]


def head_kwargs(model: ModelParams) -> dict:
    if model.head_type == "linear":
        return {"dropout": model.head.dropout}
    return model.head.model_dump()


def build_model(model: ModelParams, pretrained: str | None = None) -> RoadworkClassifier:
    return build_classifier(
        model.backbone,
        pretrained=model.pretrained if pretrained is None else pretrained,
        overrides=dict(model.overrides),
        pooling=model.pooling,
        img_size=model.img_size,
        head_type=model.head_type,
        head_kwargs=head_kwargs(model),
    )


def model_description(model: ModelParams, classifier: RoadworkClassifier, **extra) -> dict:
    """What `load_trained` needs to rebuild the module, and the evaluation preprocessing."""
    cfg = data_config(classifier)
    return {
        "backbone": model.backbone,
        "overrides": dict(model.overrides),
        "pooling": model.pooling,
        "img_size": model.img_size,
        "head_type": model.head_type,
        "head_kwargs": head_kwargs(model),
        "mean": list(cfg["mean"]),
        "std": list(cfg["std"]),
        "interpolation": "bicubic",
        **extra,
    }


def load_trained(model_dir: Path) -> tuple[RoadworkClassifier, dict]:
    """Rebuild a saved classifier (no network: weights come from the directory)."""
    description = json.loads((model_dir / "model.json").read_text())
    model = build_classifier(
        description["backbone"], pretrained=None, overrides=description["overrides"],
        pooling=description["pooling"], img_size=description["img_size"],
        head_type=description["head_type"], head_kwargs=description["head_kwargs"],
    )
    adapter = description.get("adapter")
    if adapter:  # phase-4 fine-tuning may carry unmerged adapters
        from roadwork.models.adapters import add_qv_adapters

        add_qv_adapters(model.backbone, **adapter)
    model.load_state_dict(load_file(model_dir / "model.safetensors"))
    return model.eval(), description


def run_key(params: Params, *inputs: Path, extra: dict | None = None) -> str:
    """Identifies a training run: its params and the content of its inputs (for resume)."""
    digest = hashlib.sha256(dumps_json({"model": params.model.model_dump(), "train": params.train.model_dump(),
                                        "extra": extra or {}}).encode())
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
) -> dict:
    """Train, then write model.safetensors, model.json and logits.csv into `out_dir` (rank 0)."""
    cfg = data_config(model)
    mean, std = cfg["mean"], cfg["std"]
    train_params, img_size = params.train, params.model.img_size
    cache = ImageCache(img_size)
    examples = {name: load_split(raw_dir, splits_csv, name) for name in ("train", *EVAL_SPLITS)}
    evaluate_tf = eval_transform(img_size, mean, std)
    counts = apply_freeze_policy(model.backbone, params.model.freeze, params.model.freeze_last_n)
    if dist.is_main:
        print(f"backbone parameters: {counts}")

    if train_params.feature_cache:
        # Frozen backbone: features once, then epochs over the head alone (no image augmentation).
        batch = max(1, train_params.batch_size // dist.world_size)
        train_set = extract_features(model, ImageDataset(examples["train"], cache, evaluate_tf), batch, dist,
                                     train_params.precision, train_params.num_workers)
        val_set = extract_features(model, ImageDataset(examples["val_select"], cache, evaluate_tf), batch, dist,
                                   train_params.precision, train_params.num_workers)
        state = train(model, train_set, val_set, train_params, run_dir, dist, live, forward_name="head")
    else:
        train_set = ImageDataset(examples["train"], cache, train_transform(train_params.augment, img_size, mean, std),
                                 seed=train_params.seed)
        val_set = ImageDataset(examples["val_select"], cache, evaluate_tf)
        state = train(model, train_set, val_set, train_params, run_dir, dist, live)

    rows = []
    model.eval()
    for split in EVAL_SPLITS:
        dataset = ImageDataset(examples[split], cache, evaluate_tf)
        loader = eval_loader(dataset, max(1, train_params.batch_size // dist.world_size), dist, train_params.num_workers)
        logits = predict_logits(model, loader, dist, train_params.precision, len(dataset))
        rows += [{"split": split, "id": e.id, "label": e.label, "logit": float(v)} for e, v in zip(dataset.examples, logits)]
    if not dist.is_main:
        return {}
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, tmp / "model.safetensors")
        description = model_description(params.model, model, best_epoch=state.best_epoch, **(description_extra or {}))
        (tmp / "model.json").write_text(dumps_json(description))
        (tmp / "logits.csv").write_text(format_csv(rows, LOGIT_COLUMNS))
    shutil.rmtree(run_dir, ignore_errors=True)  # finished: the resume checkpoint is no longer needed
    return summarise(state, rows, counts)


def summarise(state: TrainState, rows: list[dict], counts) -> dict:
    from roadwork.train.supervised import binary_scores

    metrics = {"best_epoch": state.best_epoch, "epochs_run": state.epoch,
               "trainable_parameters": int(counts.trainable), "total_parameters": int(counts.total)}
    for split in EVAL_SPLITS:
        labels = np.array([r["label"] for r in rows if r["split"] == split])
        logits = np.array([r["logit"] for r in rows if r["split"] == split])
        metrics[split] = {k: round(v, 6) for k, v in binary_scores(logits, labels).items()} | {"n": int(len(labels))}
    return metrics


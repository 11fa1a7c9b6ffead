"""The supervised training loop (phase 1, and phase 4's fine-tuning), readable top to bottom.

AdamW + cosine schedule with warmup (timm factories), gradient accumulation and clipping, mixed
precision, DDP, early stopping on val_select MCC, an atomic checkpoint every epoch (model,
optimizer, scheduler, scaler, RNG, history) from which a killed run resumes to bit-identical
weights on the CPU, and the best weights kept apart so that everything downstream (logits,
threshold, temperature, export) comes from exactly the weights that are saved.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch.utils.data import DataLoader, TensorDataset
from tqdm import tqdm

from roadwork.config import TrainParams
from roadwork.evaluate.metrics import mcc_at
from roadwork.io import atomic_path
from roadwork.train.augment import build_mixup, soft_targets
from roadwork.train.data import EpochSampler
from roadwork.train.distributed import Dist, all_gather_cat
from roadwork.train.loop import (
    Checkpoint,
    Optimization,
    autocast,
    barrier,
    decay_groups,
    log_row,
    micro_batches,
    seed_epoch,
    wrap_ddp,
)

log = logging.getLogger(__name__)


class TrainingDataError(ValueError):
    """The data cannot train (e.g. fewer train images than one batch); the message says what to change."""


@dataclass
class TrainState:
    epoch: int = 0  # next epoch to run
    step: int = 0  # optimizer updates so far
    best_mcc: float = -math.inf
    best_epoch: int = -1
    bad_epochs: int = 0
    history: list[dict] = field(default_factory=list)


def param_groups(model: torch.nn.Module, params: TrainParams) -> list[dict]:
    """AdamW groups: backbone vs head learning rates, each split by the weight-decay rule."""
    groups = []
    for part, lr in (("backbone", params.backbone_lr), ("head", params.lr)):
        groups += decay_groups(getattr(model, part).named_parameters(), params.weight_decay, lr=lr, name=part)
    return [g for g in groups if g["lr"] > 0]


@torch.no_grad()
def predict_logits(forward: Callable, loader: DataLoader, dist: Dist, precision: str, n: int) -> np.ndarray:
    """Logits for a loader in dataset order (sharded across ranks, gathered on all)."""
    chunks = []
    for inputs, _ in loader:
        with autocast(precision, dist.device):
            chunks.append(forward(inputs.to(dist.device)).float().cpu().reshape(len(inputs), -1).squeeze(-1))
    local = torch.cat(chunks) if chunks else torch.empty(0)
    return all_gather_cat(local, dist.world_size).numpy()[:n] if dist.world_size > 1 else local.numpy()


def eval_loader(dataset, batch_size: int, dist: Dist, num_workers: int) -> DataLoader:
    """Rank r gets a contiguous block (the last padded by repeating the final item), so that
    concatenating the ranks' outputs and trimming to len(dataset) gives dataset order."""
    if dist.world_size > 1:
        n, per_rank = len(dataset), math.ceil(len(dataset) / dist.world_size)
        indices = [min(i, n - 1) for i in range(dist.rank * per_rank, (dist.rank + 1) * per_rank)]
        dataset = torch.utils.data.Subset(dataset, indices)
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)


def train_loader(train_set, sampler: EpochSampler, micro_batch: int, num_workers: int) -> DataLoader:
    # Items are seeded per (epoch, index), so workers can persist across epochs.
    return DataLoader(
        train_set,
        batch_size=micro_batch,
        sampler=sampler,
        drop_last=True,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
    )


def binary_scores(logits: np.ndarray, labels: np.ndarray) -> dict:
    predictions = (logits > 0).astype(int)
    return {
        "mcc": mcc_at(logits, labels, 0.0),
        "accuracy": float((predictions == labels).mean()),
        "loss": float(F.binary_cross_entropy_with_logits(torch.from_numpy(logits), torch.from_numpy(labels).float())),
    }


def train(
    model: torch.nn.Module,
    train_set,
    val_set,
    params: TrainParams,
    run_dir: Path,
    dist: Dist,
    live=None,
    forward_name: str | None = None,
) -> TrainState:
    """Train `model` (a module with `backbone` and `head`) in place; leave the best weights loaded.

    `forward_name="head"` trains on pre-computed features (train_set/val_set then yield
    feature vectors): the feature-cache mode for a frozen backbone.
    """
    best_path = run_dir / "best.safetensors"
    model.to(dist.device)
    micro_batch = params.batch_size // (dist.world_size * params.grad_accum_steps)
    sampler = EpochSampler(train_set.labels, params.seed, params.balanced_sampler, dist.rank, dist.world_size)
    loader = train_loader(train_set, sampler, micro_batch, params.num_workers)
    updates_per_epoch = len(loader) // params.grad_accum_steps
    if updates_per_epoch == 0:
        raise TrainingDataError(
            f"the train split has {len(train_set)} images, fewer than one optimizer update of train.batch_size="
            f"{params.batch_size} (train.processes={dist.world_size}, train.grad_accum_steps="
            f"{params.grad_accum_steps}): lower train.batch_size, or add data"
        )
    optimization = Optimization(
        param_groups(model, params),
        lr=params.lr,
        min_lr=params.min_lr,
        weight_decay=params.weight_decay,
        epochs=params.epochs,
        warmup_epochs=params.warmup_epochs,
        updates_per_epoch=updates_per_epoch,
        grad_accum_steps=params.grad_accum_steps,
        clip_grad=params.clip_grad,
        precision=params.precision,
        device=dist.device,
    )
    mixup = build_mixup(params.augment, params.label_smoothing) if forward_name is None else None

    checkpoint = Checkpoint(run_dir)
    state = TrainState()
    saved = checkpoint.load(optimization)
    if saved is not None:
        model.load_state_dict(saved["model"])
        state = TrainState(**saved["state"])
        if dist.is_main:
            log.info("resuming from %s at epoch %d", checkpoint.path, state.epoch)
            for row in state.history:  # a re-run starts a fresh dvclive folder: replay the log
                log_row(live, row, metric_name)

    core = getattr(model, forward_name) if forward_name else model
    wrapped = wrap_ddp(core, dist)
    val_labels = val_set.labels
    val_loader = eval_loader(val_set, micro_batch, dist, params.num_workers)

    while state.epoch < params.epochs and state.bad_epochs < params.early_stopping_patience:
        epoch = state.epoch
        seed_epoch(params.seed, epoch, dist)  # augmentation, dropout, noise: a function of the epoch
        sampler.set_epoch(epoch)
        model.train()
        losses = []
        progress = tqdm(
            total=updates_per_epoch, desc=f"epoch {epoch + 1}/{params.epochs}", disable=not dist.is_main, leave=False
        )
        for update in micro_batches(loader, updates_per_epoch, params.grad_accum_steps):
            optimization.zero_grad()
            for index, (inputs, labels) in enumerate(update):
                inputs, labels = inputs.to(dist.device), labels.to(dist.device)
                if mixup is not None:
                    inputs, targets = mixup(inputs, labels)
                    targets = targets[:, 1]
                else:
                    targets = soft_targets(labels, params.label_smoothing)
                with optimization.sync(wrapped, index):
                    with autocast(params.precision, dist.device):
                        logits = wrapped(inputs).reshape(len(inputs))  # a bare head gives (B, 1)
                    loss = F.binary_cross_entropy_with_logits(logits.float(), targets)
                    optimization.backward(loss)
                losses.append(loss.item())
            state.step += 1
            optimization.step(core.parameters(), state.step)
            progress.update()
            progress.set_postfix(loss=f"{losses[-1]:.4f}")
        progress.close()

        model.eval()
        val_logits = predict_logits(core, val_loader, dist, params.precision, len(val_set))
        scores = binary_scores(val_logits, val_labels)
        row = {
            "epoch": epoch + 1,
            "train_loss": float(np.mean(losses)) if losses else float("nan"),
            "lr": optimization.lr,
            **{f"val_select_{k}": v for k, v in scores.items()},
        }
        state.history.append(row)
        state.epoch = epoch + 1
        if scores["mcc"] > state.best_mcc:
            state.best_mcc, state.best_epoch, state.bad_epochs = scores["mcc"], epoch + 1, 0
            if dist.is_main:
                with atomic_path(best_path) as tmp:
                    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, tmp)
        else:
            state.bad_epochs += 1
        if dist.is_main:
            log_row(live, row, metric_name)
            log.info(
                "epoch %d: loss %.4f  val_select mcc %.4f  acc %.4f%s",
                epoch + 1,
                row["train_loss"],
                scores["mcc"],
                scores["accuracy"],
                "  *best*" if state.best_epoch == epoch + 1 else "",
            )
            checkpoint.save(model.state_dict(), optimization, state.__dict__)
        barrier(dist)

    model.load_state_dict(load_file(best_path, device=str(dist.device)))
    return state


def metric_name(key: str) -> str:
    """dvclive names of the epoch row's keys: train/loss, lr, val_select/<metric>."""
    return key.replace("val_select_", "val_select/").replace("train_loss", "train/loss")


@torch.no_grad()
def extract_features(model, dataset, batch_size: int, dist: Dist, precision: str, num_workers: int) -> TensorDataset:
    """Backbone features of a dataset (eval transform), for head-only training on a frozen backbone."""
    model.to(dist.device).eval()
    loader = eval_loader(dataset, batch_size, dist, num_workers)
    features = predict_logits(model.features, loader, dist, precision, len(dataset))
    return LabelledTensors(torch.from_numpy(features), dataset.labels)


class LabelledTensors(TensorDataset):
    def __init__(self, features: torch.Tensor, labels: np.ndarray):
        super().__init__(features, torch.from_numpy(np.asarray(labels)))
        self.labels = np.asarray(labels)

    def __getitem__(self, item):
        return super().__getitem__(item[0] if isinstance(item, tuple) else item)

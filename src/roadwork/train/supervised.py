"""The supervised training loop (phase 1, and phase 4's fine-tuning), readable top to bottom.

AdamW + cosine schedule with warmup (timm factories), gradient accumulation and clipping, mixed
precision, DDP, early stopping on val_select MCC, an atomic checkpoint every epoch (model,
optimizer, scheduler, scaler, RNG, history) from which a killed run resumes to bit-identical
weights on the CPU, and the best weights kept apart so that everything downstream (logits,
threshold, temperature, export) comes from exactly the weights that are saved.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, TensorDataset
from tqdm import tqdm

from roadwork.config import TrainParams
from roadwork.evaluate.metrics import mcc_at
from roadwork.io import atomic_path
from roadwork.train.augment import build_mixup, soft_targets
from roadwork.train.data import EpochSampler
from roadwork.train.distributed import Dist, all_gather_cat, rng_state, seed_everything, set_rng_state

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def autocast(precision: str, device: torch.device):
    """The autocast context for a precision setting; fp32 is a no-op."""
    dtype = PRECISIONS[precision]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


@dataclass
class TrainState:
    epoch: int = 0  # next epoch to run
    step: int = 0  # optimizer updates so far
    best_mcc: float = -math.inf
    best_epoch: int = -1
    bad_epochs: int = 0
    history: list[dict] = field(default_factory=list)


def param_groups(model: torch.nn.Module, params: TrainParams) -> list[dict]:
    """AdamW groups: backbone vs head learning rates; no weight decay on norms, biases, tokens."""
    groups = []
    for part, lr in (("backbone", params.backbone_lr), ("head", params.lr)):
        decay, no_decay = [], []
        for name, param in getattr(model, part).named_parameters():
            if not param.requires_grad:
                continue
            (no_decay if param.ndim <= 1 or name.endswith(("cls_token", "reg_token")) else decay).append(param)
        groups += [
            {"params": decay, "lr": lr, "weight_decay": params.weight_decay, "name": f"{part}_decay"},
            {"params": no_decay, "lr": lr, "weight_decay": 0.0, "name": f"{part}_no_decay"},
        ]
    return [g for g in groups if g["params"] and g["lr"] > 0]


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
    return DataLoader(train_set, batch_size=micro_batch, sampler=sampler, drop_last=True,
                      num_workers=num_workers, persistent_workers=num_workers > 0)


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
    run_dir.mkdir(parents=True, exist_ok=True)
    checkpoint_path, best_path = run_dir / "checkpoint.pt", run_dir / "best.safetensors"
    model.to(dist.device)
    optimizer = create_optimizer_v2(param_groups(model, params), opt="adamw", lr=params.lr, weight_decay=params.weight_decay)
    micro_batch = params.batch_size // (dist.world_size * params.grad_accum_steps)
    sampler = EpochSampler(train_set.labels, params.seed, params.balanced_sampler, dist.rank, dist.world_size)
    loader = train_loader(train_set, sampler, micro_batch, params.num_workers)
    updates_per_epoch = max(1, len(loader) // params.grad_accum_steps)
    scheduler, _ = create_scheduler_v2(
        optimizer, sched="cosine", num_epochs=params.epochs, warmup_epochs=params.warmup_epochs,
        warmup_lr=params.min_lr, min_lr=params.min_lr, step_on_epochs=False, updates_per_epoch=updates_per_epoch,
    )
    scaler = torch.amp.GradScaler(dist.device.type, enabled=params.precision == "fp16")
    mixup = build_mixup(params.augment, params.label_smoothing) if forward_name is None else None

    state = TrainState()
    if checkpoint_path.exists():
        saved = torch.load(checkpoint_path, map_location="cpu", weights_only=True)
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        scaler.load_state_dict(saved["scaler"])
        set_rng_state(saved["rng"])
        state = TrainState(**saved["state"])
        if dist.is_main:
            print(f"resuming from {checkpoint_path} at epoch {state.epoch}")
            for row in state.history:  # a re-run starts a fresh dvclive folder: replay the log
                _log(live, row)

    core = getattr(model, forward_name) if forward_name else model
    wrapped = DistributedDataParallel(core) if dist.world_size > 1 else core
    val_labels = val_set.labels
    val_loader = eval_loader(val_set, micro_batch, dist, params.num_workers)

    while state.epoch < params.epochs and state.bad_epochs < params.early_stopping_patience:
        epoch = state.epoch
        seed_everything(params.seed, epoch, dist.rank)  # augmentation, dropout, noise: a function of the epoch
        sampler.set_epoch(epoch)
        model.train()
        losses = []
        progress = tqdm(loader, desc=f"epoch {epoch + 1}/{params.epochs}", disable=not dist.is_main, leave=False)
        for index, (inputs, labels) in enumerate(progress):
            if index >= updates_per_epoch * params.grad_accum_steps:
                break  # a partial accumulation would leak gradients into the next epoch
            inputs, labels = inputs.to(dist.device), labels.to(dist.device)
            if mixup is not None:
                inputs, targets = mixup(inputs, labels)
                targets = targets[:, 1]
            else:
                targets = soft_targets(labels, params.label_smoothing)
            last_micro = (index + 1) % params.grad_accum_steps == 0
            sync = contextlib.nullcontext() if last_micro or dist.world_size == 1 else wrapped.no_sync()
            with sync:
                with autocast(params.precision, dist.device):
                    logits = wrapped(inputs).reshape(len(inputs))  # a bare head gives (B, 1)
                loss = F.binary_cross_entropy_with_logits(logits.float(), targets)
                scaler.scale(loss / params.grad_accum_steps).backward()
            losses.append(loss.item())
            if last_micro:
                if params.clip_grad is not None:
                    scaler.unscale_(optimizer)
                    torch.nn.utils.clip_grad_norm_(core.parameters(), params.clip_grad)
                scaler.step(optimizer)
                scaler.update()
                optimizer.zero_grad(set_to_none=True)
                state.step += 1
                scheduler.step_update(num_updates=state.step)
            progress.set_postfix(loss=f"{losses[-1]:.4f}")
        scheduler.step(epoch + 1)

        model.eval()
        val_logits = predict_logits(core, val_loader, dist, params.precision, len(val_set))
        scores = binary_scores(val_logits, val_labels)
        row = {"epoch": epoch + 1, "train_loss": float(np.mean(losses)) if losses else float("nan"),
               "lr": optimizer.param_groups[-1]["lr"], **{f"val_select_{k}": v for k, v in scores.items()}}
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
            _log(live, row)
            print(f"epoch {epoch + 1}: loss {row['train_loss']:.4f}  val_select mcc {scores['mcc']:.4f}"
                  f"  acc {scores['accuracy']:.4f}{'  *best*' if state.best_epoch == epoch + 1 else ''}")
            with atomic_path(checkpoint_path) as tmp:
                torch.save({
                    "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
                    "rng": rng_state(), "state": state.__dict__,
                }, tmp)
        if dist.world_size > 1:
            torch.distributed.barrier()

    model.load_state_dict(load_file(best_path, device=str(dist.device)))
    return state


def _log(live, row: dict) -> None:
    if live is None:
        return
    for key, value in row.items():
        if key != "epoch":
            live.log_metric(key.replace("val_select_", "val_select/").replace("train_loss", "train/loss"), value)
    live.next_step()


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

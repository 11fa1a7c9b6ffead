"""The training-loop machinery every loop here shares, so that each loop (``supervised.train``,
``ssl.pretrain``) reads top to bottom as its objective.

* mixed precision: :func:`autocast` (bf16/fp16 autocast; fp32 a no-op) and the fp16 GradScaler;
* parameter groups: one weight-decay rule (:func:`decay_groups`: none on norms, biases,
  LayerScale, tokens);
* :class:`Optimization`: timm's AdamW and per-update cosine schedule with warm-up
  (``create_optimizer_v2`` / ``create_scheduler_v2``), gradient accumulation (DDP ``no_sync``
  on all but the last micro-batch), clipping, and the update itself;
* :func:`micro_batches`: an epoch as optimizer updates of ``grad_accum_steps`` micro-batches,
  drawn lazily (the loader's per-item seeding must interleave with the loss's random draws
  exactly as a plain loop over the loader does);
* :class:`Checkpoint`: an atomic per-epoch checkpoint (model, optimizer, scheduler, scaler, every
  RNG, the loop's state) and its resume; with per-epoch seeding (:func:`seed_epoch`) a resumed
  CPU run is bit-identical to an uninterrupted one;
* :func:`log_row`: one dvclive step per epoch (replayed from the history on resume).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Callable, Iterable, Iterator

import torch
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from roadwork.io import atomic_path
from roadwork.train.distributed import Dist, rng_state, seed_everything, set_rng_state

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
NO_DECAY_SUFFIXES = ("cls_token", "reg_token", "mask_token")


# ------------------------------------------------------------------------------ precision, seeds, DDP
def autocast(precision: str, device: torch.device):
    """The autocast context for a precision setting; fp32 is a no-op."""
    dtype = PRECISIONS[precision]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def seed_epoch(seed: int, epoch: int, dist: Dist) -> None:
    """Every RNG a function of (seed, epoch, rank): what makes a resumed epoch replay exactly."""
    seed_everything(seed, epoch, dist.rank)


def wrap_ddp(module: nn.Module, dist: Dist) -> nn.Module:
    """``module`` in DistributedDataParallel when there are several processes, else itself."""
    return DistributedDataParallel(module) if dist.world_size > 1 else module


# ------------------------------------------------------------------------------ optimisation
def decay_groups(named_parameters: Iterable[tuple[str, nn.Parameter]], weight_decay: float, **extra) -> list[dict]:
    """[decay, no_decay] AdamW groups of the trainable parameters (empty groups dropped): no weight
    decay on norms, biases and LayerScale (ndim <= 1) nor on tokens (cls/register/mask).
    ``extra`` (e.g. ``lr``, ``name``) goes into both groups; a ``name`` gets ``_decay``/``_no_decay``."""
    decay, no_decay = [], []
    for name, param in named_parameters:
        if param.requires_grad:
            (no_decay if param.ndim <= 1 or name.endswith(NO_DECAY_SUFFIXES) else decay).append(param)
    name = extra.pop("name", None)
    groups = [
        {"params": decay, **extra, "weight_decay": weight_decay},
        {"params": no_decay, **extra, "weight_decay": 0.0},
    ]
    if name is not None:
        groups[0]["name"], groups[1]["name"] = f"{name}_decay", f"{name}_no_decay"
    return [g for g in groups if g["params"]]


class Optimization:
    """AdamW (timm) over ``groups``, the learning rate set per update by timm's cosine scheduler:
    linear warm-up from ``min_lr`` over ``warmup_epochs``, cosine to ``min_lr`` at ``epochs``. With
    ``warmup_prefix`` the cosine starts after the warm-up, at ``lr`` (DINO's schedule); without it
    (timm's default, phase 1's) the cosine spans all epochs and the warm-up ramps towards it. A
    GradScaler for fp16; accumulation over ``grad_accum_steps`` micro-batches; clipping."""

    def __init__(
        self,
        groups: list[dict],
        *,
        lr: float,
        min_lr: float,
        weight_decay: float,
        epochs: int,
        warmup_epochs: int,
        updates_per_epoch: int,
        grad_accum_steps: int,
        clip_grad: float | None,
        precision: str,
        device: torch.device,
        warmup_prefix: bool = False,
    ):
        if warmup_prefix and warmup_epochs >= epochs:
            raise ValueError(f"warmup_epochs ({warmup_epochs}) must be smaller than epochs ({epochs})")
        self.optimizer = create_optimizer_v2(groups, opt="adamw", lr=lr, weight_decay=weight_decay)
        self.scheduler, _ = create_scheduler_v2(
            self.optimizer,
            sched="cosine",
            num_epochs=epochs - warmup_epochs if warmup_prefix else epochs,
            warmup_epochs=warmup_epochs,
            warmup_prefix=warmup_prefix,
            warmup_lr=min_lr,
            min_lr=min_lr,
            step_on_epochs=False,
            updates_per_epoch=updates_per_epoch,
        )
        self.scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
        self.grad_accum_steps, self.clip_grad = grad_accum_steps, clip_grad

    @property
    def lr(self) -> float:
        """The learning rate of the next update (of the last group)."""
        return self.optimizer.param_groups[-1]["lr"]

    def sync(self, wrapped: nn.Module, index: int):
        """Context for micro-batch ``index`` of an update: DDP's ``no_sync`` except on the last."""
        if index == self.grad_accum_steps - 1 or not isinstance(wrapped, DistributedDataParallel):
            return contextlib.nullcontext()
        return wrapped.no_sync()

    def backward(self, loss: torch.Tensor) -> None:
        """Accumulate the gradient of one micro-batch's mean loss (scaled for the update's mean)."""
        self.scaler.scale(loss / self.grad_accum_steps).backward()

    def step(self, parameters: Iterable[nn.Parameter], updates_done: int) -> None:
        """Clip, update, and set the learning rate for the update after ``updates_done`` updates.
        Gradients stay in place (zeroed at the start of the next update by :meth:`zero_grad`)."""
        if self.clip_grad is not None:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_([p for p in parameters if p.grad is not None], self.clip_grad)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step_update(num_updates=updates_done)

    def zero_grad(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)

    def state_dict(self) -> dict:
        return {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])


def micro_batches(loader: Iterable, updates: int, grad_accum_steps: int) -> Iterator[Iterator]:
    """An epoch as ``updates`` optimizer updates, each an iterator over its ``grad_accum_steps``
    micro-batches, drawn lazily from one pass over ``loader``; batches after the last full update
    are never drawn (a partial accumulation would leak gradients into the next epoch)."""
    batches = iter(loader)
    for _ in range(updates):
        yield (next(batches) for _ in range(grad_accum_steps))


# ------------------------------------------------------------------------------ checkpoint, logging
class Checkpoint:
    """``run_dir/checkpoint.pt``, written atomically by rank 0 after every epoch and read back on
    resume: the model's state (whatever the loop saves), the optimisation state, every RNG and the
    loop's own state (a dict: epoch, step, history, ...). Only tensors and plain types, so it loads
    with ``torch.load(weights_only=True)``."""

    def __init__(self, run_dir: Path):
        run_dir.mkdir(parents=True, exist_ok=True)
        self.path = run_dir / "checkpoint.pt"

    def load(self, optimization: Optimization) -> dict | None:
        """None for a fresh run; else restore the optimisation state and the RNGs and return
        ``{"model": ..., "state": ...}`` for the loop to restore."""
        if not self.path.exists():
            return None
        saved = torch.load(self.path, map_location="cpu", weights_only=True)
        optimization.load_state_dict(saved)
        set_rng_state(saved["rng"])
        return saved

    def save(self, model_state: dict, optimization: Optimization, state: dict) -> None:
        """Called by rank 0 only (every rank holds the same state)."""
        with atomic_path(self.path) as tmp:
            torch.save({"model": model_state, **optimization.state_dict(), "rng": rng_state(), "state": state}, tmp)


def log_row(live, row: dict, name: Callable[[str], str]) -> None:
    """One epoch's row (minus ``epoch``) as one dvclive step, each key logged as ``name(key)``."""
    if live is None:
        return
    for key, value in row.items():
        if key != "epoch":
            live.log_metric(name(key), value)
    live.next_step()


def barrier(dist: Dist) -> None:
    if dist.world_size > 1:
        torch.distributed.barrier()

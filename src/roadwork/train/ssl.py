"""ExPLoRA: extended self-supervised pre-training of the backbone (DINO family), the loop read top
to bottom.

Khanna et al. (arXiv 2406.10973): continue the source model's self-supervised objective on
unlabeled target-domain images, training only the last ``unfrozen_blocks`` blocks, LoRA on q and v
of every other block and all normalisation layers. The pieces live in their own modules:

* :mod:`roadwork.train.multicrop`: the views (2 global + N local crops) and iBOT's patch masks;
* :mod:`roadwork.models.dino_head`: DINO's projection head;
* :mod:`roadwork.train.dino_loss`: the DINO, iBOT and KoLeo losses;
* :mod:`roadwork.train.student_teacher`: the student, its EMA teacher and one micro-batch's losses;
* :mod:`roadwork.train.loop`: what this loop shares with the supervised one (AMP, DDP,
  optimizer and learning-rate schedule, atomic checkpoint and resume, dvclive).

This module: which images are used (:func:`unlabeled_examples`), the teacher's schedules
(momentum: cosine from ``teacher_momentum`` to 1 over all updates; temperature: optional linear
warm-up), one optimizer update (:class:`SSLTrainer`: the prototype layer is not updated during the
first ``freeze_last_layer_epochs`` epochs, as DINOv2's ``cancel_last_layer_gradients``, and the
teacher follows the student after every update) and the epochs (:func:`pretrain`). The optimizer
is timm's AdamW with timm's per-update cosine schedule, as phase 1's, in DINO's form: linear warm-up
from ``min_lr`` to ``lr``, then cosine from ``lr`` to ``min_lr`` at the end (``warmup_prefix``); no
weight decay on norms, biases, LayerScale and tokens.
Training supports mixed precision, gradient accumulation, activation checkpointing, DDP (the
student is wrapped; the teacher is updated identically on every rank) and resume from an atomic
per-epoch checkpoint; per-epoch seeding makes a resumed CPU run bit-identical to an uninterrupted one.

Unlabeled images are the train split plus an optional folder; val_select, val_calib and val_test
images are never loaded (extra images that are exact, pixel or pHash near-duplicates of an
evaluation image are excluded).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch
from torch.utils.data import DataLoader

from roadwork.config import ExploraParams, TrainParams
from roadwork.data.examples import Example, load_split
from roadwork.data.images import IMAGE_SUFFIXES
from roadwork.io import read_csv, sha256_bytes
from roadwork.train.data import EpochSampler
from roadwork.train.distributed import Dist
from roadwork.train.loop import (
    Checkpoint,
    Optimization,
    barrier,
    decay_groups,
    micro_batches,
    seed_epoch,
    wrap_ddp,
)
from roadwork.train.loop import (
    log_row as log_metrics,
)
from roadwork.train.student_teacher import ExploraSSL

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------ unlabeled images
def unlabeled_examples(
    raw_dir: Path,
    splits_csv: Path,
    extra_dir: str | Path = "",
    max_hamming: int = 10,
    max_pixels: int = 89_478_485,
) -> tuple[list[Example], dict]:
    """The SSL images: the train split, then the decodable images of ``extra_dir`` (recursive,
    sorted) that are not copies of a train image and not exact/pixel/pHash (<= ``max_hamming``
    bits) duplicates of any val_select, val_calib or val_test image. Returns (examples, counts)."""
    train = load_split(raw_dir, splits_csv, "train")
    counts = {
        "train": len(train),
        "extra": 0,
        "extra_excluded_eval_duplicates": 0,
        "extra_undecodable": 0,
        "extra_duplicates": 0,
    }
    if not extra_dir:
        return train, counts
    from roadwork.data.decode import QuarantineError, decode_image
    from roadwork.data.phash import phash64

    extra_dir = Path(extra_dir)
    if not extra_dir.is_dir():
        raise FileNotFoundError(f"explora.extra_unlabeled: {extra_dir} is not a folder")
    manifest = {row["id"]: row for row in read_csv(raw_dir / "manifest.csv")}
    held_out = [manifest[row["id"]] for row in read_csv(splits_csv) if row["split"] != "train"]
    held_hashes = {row[key] for row in held_out for key in ("sha256", "file_sha256", "pixel_sha256")}
    held_phash = np.array([int(row["phash"], 16) for row in held_out], dtype=np.uint64)
    seen = {e.sha256 for e in train}
    examples = list(train)
    for path in sorted(p for p in extra_dir.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES):
        data = path.read_bytes()
        sha = sha256_bytes(data)
        try:
            decoded = decode_image(data, max_pixels)
        except QuarantineError:
            counts["extra_undecodable"] += 1
            continue
        near = (
            held_phash.size
            and int(np.bitwise_count(held_phash ^ np.uint64(phash64(decoded.image))).min()) <= max_hamming
        )
        if sha in held_hashes or decoded.pixel_sha256 in held_hashes or near:
            counts["extra_excluded_eval_duplicates"] += 1
            continue
        if sha in seen:
            counts["extra_duplicates"] += 1
            continue
        seen.add(sha)
        examples.append(Example(f"extra:{path.relative_to(extra_dir).as_posix()}", sha, -1, path))
        counts["extra"] += 1
    return examples, counts


# ----------------------------------------------------------------------------------- schedules
def cosine(step: float, total: float, start: float, end: float) -> float:
    """start at step 0, end at step >= total, cosine in between."""
    progress = min(max(step / total, 0.0), 1.0) if total > 0 else 1.0
    return end + (start - end) * (1 + math.cos(math.pi * progress)) / 2


def teacher_momentum(step: int, total_steps: int, m0: float) -> float:
    """DINO's teacher EMA momentum: cosine from m0 (step 0) to 1 (step total_steps)."""
    return cosine(step, total_steps, m0, 1.0)


def teacher_temperature(epoch: float, cfg: ExploraParams) -> float:
    """Linear warm-up from ``teacher_temp_warmup`` to ``teacher_temp`` over the warm-up epochs."""
    if epoch >= cfg.teacher_temp_warmup_epochs:
        return cfg.teacher_temp
    return (
        cfg.teacher_temp_warmup + (cfg.teacher_temp - cfg.teacher_temp_warmup) * epoch / cfg.teacher_temp_warmup_epochs
    )


# ------------------------------------------------------------------------------------- trainer
class SSLTrainer:
    """Optimization and schedules around an :class:`ExploraSSL`; :meth:`step` = one update."""

    def __init__(self, ssl: ExploraSSL, precision: str, dist: Dist, updates_per_epoch: int):
        cfg = ssl.cfg
        self.ssl, self.cfg, self.precision, self.dist = ssl, cfg, precision, dist
        self.updates_per_epoch = updates_per_epoch
        self.total_steps = cfg.epochs * updates_per_epoch
        self.freeze_last_layer_steps = cfg.freeze_last_layer_epochs * updates_per_epoch
        if cfg.warmup_epochs >= cfg.epochs:
            raise ValueError(
                f"explora.warmup_epochs ({cfg.warmup_epochs}) must be smaller than explora.epochs ({cfg.epochs})"
            )
        ssl.to(dist.device)
        self.student = wrap_ddp(ssl.student, dist)
        self.optimization = Optimization(
            decay_groups(ssl.student.named_parameters(), cfg.weight_decay),
            lr=cfg.lr,
            min_lr=cfg.min_lr,
            weight_decay=cfg.weight_decay,
            epochs=cfg.epochs,
            warmup_epochs=cfg.warmup_epochs,
            updates_per_epoch=updates_per_epoch,
            grad_accum_steps=cfg.grad_accum_steps,
            clip_grad=cfg.clip_grad,
            precision=precision,
            device=dist.device,
            warmup_prefix=True,
        )

    def schedule(self, step: int) -> dict:
        """The values update ``step`` uses (the learning rate: as the scheduler set it after ``step`` updates)."""
        return {
            "lr": self.optimization.lr,
            "teacher_momentum": teacher_momentum(step, self.total_steps, self.cfg.teacher_momentum),
            "teacher_temp": teacher_temperature(step / self.updates_per_epoch, self.cfg),
        }

    def step(self, micro_batches: Iterable[list[torch.Tensor]], step: int) -> dict:
        """One optimizer update (index ``step``, 0-based) from ``grad_accum_steps`` micro-batches of
        views; then the teacher's EMA update. Gradients are left in place for inspection."""
        ssl, accum = self.ssl, self.cfg.grad_accum_steps
        schedule = self.schedule(step)
        self.optimization.zero_grad()
        ssl.student.train()
        stats: dict[str, float] = {}
        for index, views in enumerate(micro_batches):
            with self.optimization.sync(self.student, index):
                result = ssl.losses(self.student, views, schedule["teacher_temp"], self.dist, self.precision)
                self.optimization.backward(result["loss"])
            for key, value in result.items():
                stats[key] = stats.get(key, 0.0) + float(value.detach()) / accum
        if step < self.freeze_last_layer_steps:  # DINOv2's cancel_last_layer_gradients
            for p in ssl.student.head.last_layer.parameters():
                p.grad = None
        self.optimization.step(ssl.student.parameters(), step + 1)
        ssl.update_teacher(schedule["teacher_momentum"])
        return stats | schedule


@dataclass
class SSLState:
    epoch: int = 0  # next epoch to run
    step: int = 0  # optimizer updates so far
    history: list[dict] = field(default_factory=list)


METRIC_NAMES = {
    "teacher_entropy": "collapse/teacher_entropy",
    "teacher_batch_entropy": "collapse/teacher_batch_entropy",
    "embedding_std": "collapse/embedding_std",
    "lr": "schedule/lr",
    "teacher_momentum": "schedule/teacher_momentum",
    "teacher_temp": "schedule/teacher_temp",
}


def metric_name(key: str) -> str:
    """dvclive names: ssl/<loss>, collapse/<monitor>, schedule/<value>."""
    return METRIC_NAMES.get(key, f"ssl/{key}")


def log_row(live, row: dict) -> None:
    """One SSL epoch row as one dvclive step."""
    log_metrics(live, row, metric_name)


def pretrain(
    ssl: ExploraSSL,
    dataset,
    train: TrainParams,
    run_dir: Path,
    dist: Dist,
    live=None,
    on_epoch_end: Callable[[SSLState], None] | None = None,
) -> SSLState:
    """Self-supervised training of ``ssl`` in place over ``dataset`` (items: (views, _)).

    ``train`` supplies precision, seed and num_workers. An atomic checkpoint is written to
    ``run_dir/checkpoint.pt`` after every epoch (rank 0) and resumed from when present.
    ``on_epoch_end`` is called after each epoch's checkpoint (tests use it to interrupt a run)."""
    cfg = ssl.cfg
    if cfg.batch_size % (dist.world_size * cfg.grad_accum_steps):
        raise ValueError(
            f"explora.batch_size ({cfg.batch_size}) must be divisible by train.processes x "
            f"explora.grad_accum_steps ({dist.world_size} x {cfg.grad_accum_steps})"
        )
    micro_batch = cfg.batch_size // (dist.world_size * cfg.grad_accum_steps)
    sampler = EpochSampler(np.zeros(len(dataset), dtype=int), train.seed, False, dist.rank, dist.world_size)
    loader = DataLoader(
        dataset,
        batch_size=micro_batch,
        sampler=sampler,
        drop_last=True,
        num_workers=train.num_workers,
        persistent_workers=False,
    )
    updates_per_epoch = len(loader) // cfg.grad_accum_steps
    if updates_per_epoch == 0:
        raise ValueError(f"{len(dataset)} unlabeled images give no full batch of explora.batch_size={cfg.batch_size}")
    trainer = SSLTrainer(ssl, train.precision, dist, updates_per_epoch)

    checkpoint = Checkpoint(run_dir)
    state = SSLState()
    saved = checkpoint.load(trainer.optimization)
    if saved is not None:
        ssl.load_resumable_state(saved["model"])
        state = SSLState(**saved["state"])
        if dist.is_main:
            log.info("resuming self-supervised training from %s at epoch %d", checkpoint.path, state.epoch)
            for row in state.history:
                log_row(live, row)

    while state.epoch < cfg.epochs:
        epoch = state.epoch
        seed_epoch(train.seed, epoch, dist)  # crops, masks: a function of the epoch
        sampler.set_epoch(epoch)
        sums: dict[str, float] = {}
        for update in micro_batches(loader, updates_per_epoch, cfg.grad_accum_steps):
            stats = trainer.step((views for views, _ in update), state.step)
            state.step += 1
            for key, value in stats.items():
                sums[key] = sums.get(key, 0.0) + value / updates_per_epoch
        if dist.world_size > 1:  # epoch means over ranks
            keys = sorted(sums)
            values = torch.tensor([sums[k] for k in keys], dtype=torch.float64, device=dist.device)
            torch.distributed.all_reduce(values)
            sums = dict(zip(keys, (values / dist.world_size).tolist()))
        state.history.append({"epoch": epoch + 1, **sums})
        state.epoch = epoch + 1
        if dist.is_main:
            log_row(live, state.history[-1])
            log.info(
                "ssl epoch %d/%d: loss %.4f  teacher entropy %.3f  embedding std %.4f",
                epoch + 1,
                cfg.epochs,
                sums["loss"],
                sums["teacher_entropy"],
                sums["embedding_std"],
            )
            checkpoint.save(ssl.resumable_state(), trainer.optimization, state.__dict__)
        barrier(dist)
        if on_epoch_end is not None:
            on_epoch_end(state)
    return state

"""ExPLoRA: extended self-supervised pre-training of the backbone (DINO family), read top to bottom.

Khanna et al. (arXiv 2406.10973): continue the source model's self-supervised objective on
unlabeled target-domain images, training only the last ``unfrozen_blocks`` blocks, LoRA on q and v
of every other block and all normalisation layers (:func:`roadwork.models.adapters.explora_trainable`).
The objective follows DINO / DINOv2 (facebookresearch/dinov2 ``dinov2/loss``, ``dinov2/layers/dino_head.py``,
``dinov2/train/ssl_meta_arch.py``):

* views: 2 global crops and N local crops per image (sizes and scales from params; DINO's
  photometric recipe: flip, colour jitter, grayscale, Gaussian blur, solarisation);
* student = backbone + DINO head (MLP -> bottleneck -> L2 normalisation -> weight-normalised
  prototype layer with its norm fixed to 1); teacher = exponential moving average of the student's
  *trainable* parameters; its frozen parameters are the student's own tensors (shared, never copied),
  and it gets no gradients;
* DINO loss: cross-entropy between the centred, sharpened teacher softmax of each global view and
  the student softmax of every *other* view, averaged over the 2 + 2N pairs; the centre is an EMA
  of the teacher's batch mean (``center_momentum``); teacher temperature warm-up optional;
* teacher momentum: cosine from ``teacher_momentum`` (m0) to 1 over all updates;
* the prototype layer is not updated during the first ``freeze_last_layer_epochs`` epochs
  (its gradients are dropped, as DINOv2's ``cancel_last_layer_gradients``);
* options: iBOT masked-patch loss (shared head, own centre, masked patches replaced by a learned
  mask token in the student only; random patch masking with DINOv2's per-image ratio spread) and
  the KoLeo regulariser on the student's global CLS embeddings.

The CLS token (after the final norm) is the image embedding, as in DINO. Training supports mixed
precision, gradient accumulation, activation checkpointing, DDP (the student is wrapped; the
teacher is updated identically on every rank) and resume from an atomic per-epoch checkpoint that
holds only what changes (trainable student and teacher tensors, head, centres, optimizer, scaler,
RNG, history): frozen weights are rebuilt from the same start, and per-epoch seeding makes a resumed
CPU run bit-identical to an uninterrupted one.

Unlabeled images are the train split plus an optional folder; val_select, val_calib and val_test
images are never loaded (extra images that are exact, pixel or pHash near-duplicates of an
evaluation image are excluded).
"""

from __future__ import annotations

import contextlib
import copy
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import ImageFilter
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from torchvision import transforms

from roadwork.config import ExploraParams, TrainParams
from roadwork.data.images import IMAGE_SUFFIXES
from roadwork.io import atomic_path, read_csv, sha256_bytes
from roadwork.models.adapters import explora_trainable, merge_adapters
from roadwork.train.data import EpochSampler, Example, load_split
from roadwork.train.distributed import Dist, rng_state, seed_everything, set_rng_state
from roadwork.train.supervised import autocast


# ------------------------------------------------------------------------------ unlabeled images
def unlabeled_examples(
    raw_dir: Path, splits_csv: Path, extra_dir: str | Path = "", max_hamming: int = 10, max_pixels: int = 89_478_485,
) -> tuple[list[Example], dict]:
    """The SSL images: the train split, then the decodable images of ``extra_dir`` (recursive,
    sorted) that are not copies of a train image and not exact/pixel/pHash (<= ``max_hamming``
    bits) duplicates of any val_select, val_calib or val_test image. Returns (examples, counts)."""
    train = load_split(raw_dir, splits_csv, "train")
    counts = {"train": len(train), "extra": 0, "extra_excluded_eval_duplicates": 0, "extra_undecodable": 0,
              "extra_duplicates": 0}
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
        near = held_phash.size and int(np.bitwise_count(held_phash ^ np.uint64(phash64(decoded.image))).min()) <= max_hamming
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


# ----------------------------------------------------------------------------------- multi-crop
class RandomGaussianBlur:
    """PIL Gaussian blur with probability p, radius uniform in [0.1, 2.0] (DINO's, for 224 px
    crops) scaled to the crop size; randomness from torch's RNG (follows the per-epoch seeding)."""

    def __init__(self, p: float, size: int):
        self.p, self.scale = p, size / 224

    def __call__(self, image):
        if torch.rand(()).item() >= self.p:
            return image
        radius = (0.1 + 1.9 * torch.rand(()).item()) * self.scale
        return image.filter(ImageFilter.GaussianBlur(radius))


class MultiCropTransform:
    """PIL image -> [global_1, global_2, local_1 .. local_N] normalised tensors (DINO's recipe)."""

    def __init__(self, cfg: ExploraParams, mean, std):
        bicubic = transforms.InterpolationMode.BICUBIC
        jitter = [
            transforms.RandomHorizontalFlip(p=0.5),
            transforms.RandomApply([transforms.ColorJitter(0.4, 0.4, 0.2, 0.1)], p=0.8),
            transforms.RandomGrayscale(p=0.2),
        ]
        normalize = [transforms.ToTensor(), transforms.Normalize(mean, std)]
        g, l = cfg.global_crop_size, cfg.local_crop_size
        global_crop = transforms.RandomResizedCrop(g, scale=tuple(cfg.global_crop_scale), interpolation=bicubic)
        self.global_1 = transforms.Compose([global_crop, *jitter, RandomGaussianBlur(1.0, g), *normalize])
        self.global_2 = transforms.Compose([global_crop, *jitter, RandomGaussianBlur(0.1, g),
                                            transforms.RandomSolarize(128, p=0.2), *normalize])
        self.local = transforms.Compose([
            transforms.RandomResizedCrop(l, scale=tuple(cfg.local_crop_scale), interpolation=bicubic),
            *jitter, RandomGaussianBlur(0.5, l), *normalize])
        self.local_number = cfg.local_crops_number

    def __call__(self, image) -> list[torch.Tensor]:
        return [self.global_1(image), self.global_2(image), *(self.local(image) for _ in range(self.local_number))]


def make_masks(n_images: int, n_patches: int, ratio: tuple[float, float], probability: float) -> torch.Tensor:
    """iBOT masks (n_images, n_patches), bool: int(n_images * probability) images are masked, their
    ratios spread over ``ratio`` (DINOv2's collate), masked patches drawn at random; shuffled."""
    masks = torch.zeros(n_images, n_patches, dtype=torch.bool)
    n_masked = int(n_images * probability)
    bounds = torch.linspace(ratio[0], ratio[1], n_masked + 1)
    for i in range(n_masked):
        share = float(bounds[i] + (bounds[i + 1] - bounds[i]) * torch.rand(()))
        masks[i, torch.randperm(n_patches)[: max(1, round(share * n_patches))]] = True
    return masks[torch.randperm(n_images)]


# ---------------------------------------------------------------------------------------- head
class PrototypeLayer(nn.Module):
    """DINO's weight-normalised last layer (no bias) with the norm g fixed to 1 (``norm_last_layer``):
    each prototype (a row of the weight) is L2-normalised in the forward."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_dim, in_dim))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))  # nn.Linear's default init

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, F.normalize(self.weight, dim=1))


class DINOHead(nn.Module):
    """MLP (``nlayers`` Linear, GELU between) -> bottleneck -> L2 normalisation -> prototypes."""

    def __init__(self, in_dim: int, out_dim: int, hidden_dim: int, bottleneck_dim: int, nlayers: int = 3):
        super().__init__()
        if nlayers == 1:
            self.mlp = nn.Linear(in_dim, bottleneck_dim)
        else:
            layers = [nn.Linear(in_dim, hidden_dim), nn.GELU()]
            for _ in range(nlayers - 2):
                layers += [nn.Linear(hidden_dim, hidden_dim), nn.GELU()]
            self.mlp = nn.Sequential(*layers, nn.Linear(hidden_dim, bottleneck_dim))
        for m in self.mlp.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        self.last_layer = PrototypeLayer(bottleneck_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.mlp(x)
        x = F.normalize(x, dim=-1, p=2, eps=1e-6 if x.dtype == torch.float16 else 1e-12)
        return self.last_layer(x)


# -------------------------------------------------------------------------------------- losses
def teacher_softmax(teacher_logits: torch.Tensor, center: torch.Tensor, temperature: float) -> torch.Tensor:
    """Centering and sharpening: softmax((t - center) / temperature)."""
    return F.softmax((teacher_logits.float() - center) / temperature, dim=-1)


def updated_center(center: torch.Tensor, teacher_logits: torch.Tensor, momentum: float, world_size: int = 1) -> torch.Tensor:
    """center * m + batch_mean * (1 - m), the batch mean taken over all ranks."""
    batch_sum = teacher_logits.float().sum(dim=0, keepdim=True)
    if world_size > 1:
        torch.distributed.all_reduce(batch_sum)
    return center * momentum + batch_sum / (len(teacher_logits) * world_size) * (1 - momentum)


def dino_loss(student_logits: list[torch.Tensor], teacher_probs: list[torch.Tensor], student_temp: float) -> torch.Tensor:
    """Mean over (student view v, teacher view t != v) of -sum(p_t * log_softmax(s_v / student_temp)),
    each term averaged over the batch. Student views: globals first (same order as the teacher's)."""
    total, terms = 0.0, 0
    for v, logits in enumerate(student_logits):
        log_p = F.log_softmax(logits.float() / student_temp, dim=-1)
        for t, probs in enumerate(teacher_probs):
            if t != v:
                total = total - (probs * log_p).sum(dim=-1).mean()
                terms += 1
    return total / terms


def ibot_loss(student_patch_logits: torch.Tensor, teacher_patch_probs: torch.Tensor, masks: torch.Tensor,
              student_temp: float) -> torch.Tensor:
    """iBOT (DINOv2 ``forward_masked``): per masked patch cross-entropy, averaged within each image,
    summed over images, divided by the number of global views (unmasked views count as 0).
    Patch rows are the masked patches in ``masks[masks]`` order."""
    ce = -(teacher_patch_probs * F.log_softmax(student_patch_logits.float() / student_temp, dim=-1)).sum(dim=-1)
    weight = (1 / masks.sum(dim=-1).clamp(min=1.0)).unsqueeze(-1).expand_as(masks)[masks]
    return (ce * weight).sum() / masks.shape[0]


def koleo_loss(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Kozachenko-Leonenko entropy estimator (Sablayrolles et al. 2018), as DINOv2's KoLeoLoss:
    -mean_i log(||x_i - x_nn(i)|| + eps) over L2-normalised rows, nn = nearest other row."""
    x = F.normalize(x.float(), p=2, dim=-1, eps=eps)
    with torch.no_grad():
        dots = x @ x.t()
        dots.fill_diagonal_(-2.0)  # never one's own neighbour
        nearest = dots.argmax(dim=1)
    distances = F.pairwise_distance(x, x[nearest], p=2, eps=eps)
    return -torch.log(distances + eps).mean()


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
    return cfg.teacher_temp_warmup + (cfg.teacher_temp - cfg.teacher_temp_warmup) * epoch / cfg.teacher_temp_warmup_epochs


def learning_rate(step: int, updates_per_epoch: int, cfg: ExploraParams) -> float:
    """Linear warm-up to ``lr`` over ``warmup_epochs``, then cosine to ``min_lr`` at the last update."""
    warmup, total = cfg.warmup_epochs * updates_per_epoch, cfg.epochs * updates_per_epoch
    if step < warmup:
        return cfg.lr * (step + 1) / warmup
    return cosine(step - warmup, max(1, total - warmup - 1), cfg.lr, cfg.min_lr)


# -------------------------------------------------------------------------------------- models
def encode(backbone: nn.Module, images: torch.Tensor, masks: torch.Tensor | None = None,
           mask_token: torch.Tensor | None = None) -> torch.Tensor:
    """All output tokens (B, prefix + patches, C) after the final norm (timm's ``forward_features``),
    with the patches where ``masks`` (B, patches) is True replaced by ``mask_token`` before the blocks."""
    if masks is None:
        return backbone.forward_features(images)

    def replace(module, args, output):  # patch_embed output: (B, H, W, C) (dynamic size) or (B, N, C)
        where = masks.reshape(output.shape[:-1]).unsqueeze(-1)
        return torch.where(where, mask_token.reshape(-1).to(output.dtype), output)

    handle = backbone.patch_embed.register_forward_hook(replace)
    try:
        return backbone.forward_features(images)
    finally:
        handle.remove()


class Student(nn.Module):
    """Backbone + DINO head (+ the iBOT mask token); one forward for all of a step's views (DDP)."""

    def __init__(self, backbone: nn.Module, head: DINOHead, mask_token: bool):
        super().__init__()
        self.backbone, self.head = backbone, head
        self.mask_token = nn.Parameter(torch.zeros(1, backbone.num_features)) if mask_token else None

    def forward(self, global_crops, local_crops=None, masks=None) -> dict:
        tokens = encode(self.backbone, global_crops, masks, self.mask_token)
        cls = tokens[:, 0]
        out = {"cls": cls, "global": self.head(cls)}
        if local_crops is not None:
            out["local"] = self.head(encode(self.backbone, local_crops)[:, 0])
        if masks is not None:
            out["patches"] = self.head(tokens[:, self.backbone.num_prefix_tokens:][masks])
        return out


def share_frozen_copy(module: nn.Module) -> nn.Module:
    """A deep copy whose frozen parameters are the original's own Parameter objects (no memory)."""
    memo = {id(p): p for p in module.parameters() if not p.requires_grad}
    return copy.deepcopy(module, memo)


class ExploraSSL(nn.Module):
    """Student (ExPLoRA-trainable backbone + DINO head) and its EMA teacher, with the centres."""

    def __init__(self, backbone: nn.Module, cfg: ExploraParams):
        super().__init__()
        self.cfg = cfg
        explora_trainable(backbone, cfg.unfrozen_blocks, cfg.lora_rank)
        backbone.set_grad_checkpointing(cfg.grad_checkpointing)
        head = DINOHead(backbone.num_features, cfg.head_prototypes, cfg.head_hidden_dim, cfg.head_bottleneck_dim,
                        cfg.head_layers)
        self.student = Student(backbone, head, mask_token=cfg.ibot_weight > 0)
        self.teacher = nn.ModuleDict({"backbone": share_frozen_copy(backbone), "head": copy.deepcopy(head)})
        self.teacher["backbone"].set_grad_checkpointing(False)
        self.teacher.requires_grad_(False)  # shared frozen tensors were frozen already
        self.teacher.eval()
        trainable = {f"{part}.{name}" for part in ("backbone", "head")
                     for name, p in getattr(self.student, part).named_parameters() if p.requires_grad}
        self.ema_names = sorted(trainable)  # student names == teacher names
        self.register_buffer("center", torch.zeros(1, cfg.head_prototypes))
        self.register_buffer("patch_center", torch.zeros(1, cfg.head_prototypes))

    # -- bookkeeping ----------------------------------------------------------------------------
    def trainable_counts(self) -> dict:
        backbone = list(self.student.backbone.parameters())
        return {
            "backbone_trainable": sum(p.numel() for p in backbone if p.requires_grad),
            "backbone_total": sum(p.numel() for p in backbone),
            "head": sum(p.numel() for p in self.student.head.parameters()),
            "mask_token": 0 if self.student.mask_token is None else self.student.mask_token.numel(),
        }

    def ema_pairs(self) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        student = dict(self.student.named_parameters())
        teacher = dict(self.teacher.named_parameters(remove_duplicate=False))
        return [student[n] for n in self.ema_names], [teacher[n] for n in self.ema_names]

    @torch.no_grad()
    def update_teacher(self, momentum: float) -> None:
        """teacher <- momentum * teacher + (1 - momentum) * student, trainable parameters only."""
        student, teacher = self.ema_pairs()
        torch._foreach_mul_(teacher, momentum)
        torch._foreach_add_(teacher, student, alpha=1 - momentum)

    def resumable_state(self) -> dict:
        """What changes during training (frozen weights are rebuilt from the same start)."""
        student = {n: p.detach().clone() for n, p in self.student.named_parameters() if p.requires_grad}
        _, teacher = self.ema_pairs()
        return {"student": student, "teacher": {n: t.detach().clone() for n, t in zip(self.ema_names, teacher)},
                "center": self.center.clone(), "patch_center": self.patch_center.clone()}

    @torch.no_grad()
    def load_resumable_state(self, state: dict) -> None:
        student = dict(self.student.named_parameters())
        teacher = dict(self.teacher.named_parameters(remove_duplicate=False))
        expected = {n for n, p in student.items() if p.requires_grad}
        if set(state["student"]) != expected or set(state["teacher"]) != set(self.ema_names):
            raise ValueError("SSL checkpoint does not match the model (different params?)")
        for name, value in state["student"].items():
            student[name].copy_(value)
        for name, value in state["teacher"].items():
            teacher[name].copy_(value)
        self.center.copy_(state["center"])
        self.patch_center.copy_(state["patch_center"])

    def adapted_backbone(self) -> nn.Module:
        """The teacher's backbone (as DINO/DINOv2 evaluate the teacher) with LoRA merged: a stock
        timm module whose state dict loads strictly into ``timm.create_model(name, num_classes=0)``."""
        backbone = copy.deepcopy(self.teacher["backbone"])
        merge_adapters(backbone)
        backbone.set_grad_checkpointing(False)
        return backbone.requires_grad_(False).eval()

    # -- one micro-batch ------------------------------------------------------------------------
    def losses(self, student: nn.Module, views: list[torch.Tensor], teacher_temp: float, dist: Dist,
               precision: str) -> dict:
        """Forward teacher and student on one micro-batch of views; update the centres (after using
        them, as DINO); return the loss terms and the collapse monitors. ``student`` is
        ``self.student`` or its DDP wrapper."""
        cfg, device = self.cfg, dist.device
        n_views = len(views)
        global_crops = torch.cat(views[:2]).to(device, non_blocking=True)
        local_crops = torch.cat(views[2:]).to(device, non_blocking=True) if n_views > 2 else None
        masks = None
        if cfg.ibot_weight > 0:
            grid = global_crops.shape[-1] // self.student.backbone.patch_embed.patch_size[0]
            masks = make_masks(len(global_crops), grid * grid, cfg.ibot_mask_ratio, cfg.ibot_mask_probability).to(device)
        with autocast(precision, device):
            with torch.no_grad():
                tokens = self.teacher["backbone"].forward_features(global_crops)
                teacher_cls = self.teacher["head"](tokens[:, 0]).float()
                teacher_patches = None
                if masks is not None:
                    prefix = self.teacher["backbone"].num_prefix_tokens
                    teacher_patches = self.teacher["head"](tokens[:, prefix:][masks]).float()
            out = student(global_crops, local_crops, masks)

        teacher_probs = teacher_softmax(teacher_cls, self.center, teacher_temp)
        with torch.no_grad():
            self.center.copy_(updated_center(self.center, teacher_cls, cfg.center_momentum, dist.world_size))
        student_logits = list(out["global"].chunk(2)) + (list(out["local"].chunk(n_views - 2)) if n_views > 2 else [])
        result = {"dino_loss": dino_loss(student_logits, list(teacher_probs.chunk(2)), cfg.student_temp)}
        loss = result["dino_loss"]
        if masks is not None:
            patch_probs = teacher_softmax(teacher_patches, self.patch_center, teacher_temp)
            if len(teacher_patches):
                with torch.no_grad():  # DINOv2: EMA of the mean over the masked patches (of all ranks)
                    self.patch_center.copy_(updated_center(
                        self.patch_center, teacher_patches.mean(0, keepdim=True), cfg.center_momentum, dist.world_size))
            result["ibot_loss"] = ibot_loss(out["patches"], patch_probs, masks, cfg.student_temp)
            loss = loss + cfg.ibot_weight * result["ibot_loss"]
        if cfg.koleo_weight > 0:  # per global view: never between the two views of one image
            result["koleo_loss"] = sum(koleo_loss(part) for part in out["cls"].chunk(2))
            loss = loss + cfg.koleo_weight * result["koleo_loss"]
        result["loss"] = loss
        with torch.no_grad():
            result["teacher_entropy"] = torch.special.entr(teacher_probs).sum(-1).mean()
            result["teacher_batch_entropy"] = torch.special.entr(teacher_probs.mean(0)).sum()
            result["embedding_std"] = F.normalize(out["cls"].detach().float(), dim=-1).std(dim=0).mean()
        return result


# ------------------------------------------------------------------------------------- trainer
def param_groups(module: nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups: no weight decay on norms, biases, LayerScale, tokens (ndim <= 1 or tokens)."""
    decay, no_decay = [], []
    for name, p in module.named_parameters():
        if p.requires_grad:
            no = p.ndim <= 1 or name.endswith(("cls_token", "reg_token", "mask_token"))
            (no_decay if no else decay).append(p)
    return [g for g in ({"params": decay, "weight_decay": weight_decay},
                        {"params": no_decay, "weight_decay": 0.0}) if g["params"]]


class SSLTrainer:
    """Optimizer, scaler and schedules around an :class:`ExploraSSL`; :meth:`step` = one update."""

    def __init__(self, ssl: ExploraSSL, precision: str, dist: Dist, updates_per_epoch: int):
        cfg = ssl.cfg
        self.ssl, self.cfg, self.precision, self.dist = ssl, cfg, precision, dist
        self.updates_per_epoch = updates_per_epoch
        self.total_steps = cfg.epochs * updates_per_epoch
        self.freeze_last_layer_steps = cfg.freeze_last_layer_epochs * updates_per_epoch
        ssl.to(dist.device)
        self.student = DistributedDataParallel(ssl.student) if dist.world_size > 1 else ssl.student
        self.optimizer = torch.optim.AdamW(param_groups(ssl.student, cfg.weight_decay), lr=cfg.lr)
        self.scaler = torch.amp.GradScaler(dist.device.type, enabled=precision == "fp16")

    def schedule(self, step: int) -> dict:
        return {"lr": learning_rate(step, self.updates_per_epoch, self.cfg),
                "teacher_momentum": teacher_momentum(step, self.total_steps, self.cfg.teacher_momentum),
                "teacher_temp": teacher_temperature(step / self.updates_per_epoch, self.cfg)}

    def step(self, micro_batches: list[list[torch.Tensor]], step: int) -> dict:
        """One optimizer update (index ``step``, 0-based) from ``grad_accum_steps`` micro-batches of
        views; then the teacher's EMA update. Gradients are left in place for inspection."""
        ssl, cfg = self.ssl, self.cfg
        schedule = self.schedule(step)
        for group in self.optimizer.param_groups:
            group["lr"] = schedule["lr"]
        self.optimizer.zero_grad(set_to_none=True)
        ssl.student.train()
        stats: dict[str, float] = {}
        for index, views in enumerate(micro_batches):
            last = index == len(micro_batches) - 1
            sync = contextlib.nullcontext() if last or self.dist.world_size == 1 else self.student.no_sync()
            with sync:
                result = ssl.losses(self.student, views, schedule["teacher_temp"], self.dist, self.precision)
                self.scaler.scale(result["loss"] / len(micro_batches)).backward()
            for key, value in result.items():
                stats[key] = stats.get(key, 0.0) + float(value.detach()) / len(micro_batches)
        if step < self.freeze_last_layer_steps:  # DINOv2's cancel_last_layer_gradients
            for p in ssl.student.head.last_layer.parameters():
                p.grad = None
        if cfg.clip_grad is not None:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_([p for p in ssl.student.parameters() if p.grad is not None], cfg.clip_grad)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        ssl.update_teacher(schedule["teacher_momentum"])
        return stats | schedule


@dataclass
class SSLState:
    epoch: int = 0  # next epoch to run
    step: int = 0  # optimizer updates so far
    history: list[dict] = field(default_factory=list)


def log_row(live, row: dict) -> None:
    if live is None:
        return
    for key, value in row.items():
        if key != "epoch":
            live.log_metric(LOG_NAMES.get(key, f"ssl/{key}"), value)
    live.next_step()


LOG_NAMES = {"teacher_entropy": "collapse/teacher_entropy", "teacher_batch_entropy": "collapse/teacher_batch_entropy",
             "embedding_std": "collapse/embedding_std", "lr": "schedule/lr",
             "teacher_momentum": "schedule/teacher_momentum", "teacher_temp": "schedule/teacher_temp"}


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
        raise ValueError(f"explora.batch_size ({cfg.batch_size}) must be divisible by train.processes x "
                         f"explora.grad_accum_steps ({dist.world_size} x {cfg.grad_accum_steps})")
    micro_batch = cfg.batch_size // (dist.world_size * cfg.grad_accum_steps)
    sampler = EpochSampler(np.zeros(len(dataset), dtype=int), train.seed, False, dist.rank, dist.world_size)
    loader = DataLoader(dataset, batch_size=micro_batch, sampler=sampler, drop_last=True,
                        num_workers=train.num_workers, persistent_workers=False)
    updates_per_epoch = len(loader) // cfg.grad_accum_steps
    if updates_per_epoch == 0:
        raise ValueError(f"{len(dataset)} unlabeled images give no full batch of explora.batch_size={cfg.batch_size}")
    trainer = SSLTrainer(ssl, train.precision, dist, updates_per_epoch)
    run_dir.mkdir(parents=True, exist_ok=True)
    checkpoint_path = run_dir / "checkpoint.pt"

    state = SSLState()
    if checkpoint_path.exists():
        saved = torch.load(checkpoint_path, map_location="cpu", weights_only=True)
        ssl.load_resumable_state(saved["model"])
        trainer.optimizer.load_state_dict(saved["optimizer"])
        trainer.scaler.load_state_dict(saved["scaler"])
        set_rng_state(saved["rng"])
        state = SSLState(**saved["state"])
        if dist.is_main:
            print(f"resuming self-supervised training from {checkpoint_path} at epoch {state.epoch}")
            for row in state.history:
                log_row(live, row)

    while state.epoch < cfg.epochs:
        epoch = state.epoch
        seed_everything(train.seed, epoch, dist.rank)  # crops, masks: a function of the epoch
        sampler.set_epoch(epoch)
        batches = iter(loader)
        sums: dict[str, float] = {}
        for _ in range(updates_per_epoch):
            micro_batches = [next(batches)[0] for _ in range(cfg.grad_accum_steps)]
            stats = trainer.step(micro_batches, state.step)
            state.step += 1
            for key, value in stats.items():
                sums[key] = sums.get(key, 0.0) + value / updates_per_epoch
        del batches
        if dist.world_size > 1:  # epoch means over ranks
            keys = sorted(sums)
            values = torch.tensor([sums[k] for k in keys], dtype=torch.float64, device=dist.device)
            torch.distributed.all_reduce(values)
            sums = dict(zip(keys, (values / dist.world_size).tolist()))
        state.history.append({"epoch": epoch + 1, **sums})
        state.epoch = epoch + 1
        if dist.is_main:
            log_row(live, state.history[-1])
            print(f"ssl epoch {epoch + 1}/{cfg.epochs}: loss {sums['loss']:.4f}  teacher entropy "
                  f"{sums['teacher_entropy']:.3f}  embedding std {sums['embedding_std']:.4f}", flush=True)
            with atomic_path(checkpoint_path) as tmp:
                torch.save({"model": ssl.resumable_state(), "optimizer": trainer.optimizer.state_dict(),
                            "scaler": trainer.scaler.state_dict(), "rng": rng_state(), "state": state.__dict__}, tmp)
        if dist.world_size > 1:
            torch.distributed.barrier()
        if on_epoch_end is not None:
            on_epoch_end(state)
    return state

"""ExPLoRA's student and its EMA teacher (the DINO / DINOv2 meta-architecture,
facebookresearch/dinov2 ``dinov2/train/ssl_meta_arch.py``), and one micro-batch's losses.

* student = backbone made ExPLoRA-trainable (:func:`roadwork.models.adapters.explora_trainable`:
  the last ``unfrozen_blocks`` blocks, LoRA on q and v of the others, every norm) + DINO head
  (+ the iBOT mask token); one forward for all of a step's views (DDP);
* teacher = exponential moving average of the student's *trainable* parameters; its frozen
  parameters are the student's own tensors (shared, never copied), and it gets no gradients;
* the centres of the teacher's outputs (DINO's, and iBOT's for patches) are buffers here.

The CLS token (after the final norm) is the image embedding, as in DINO. What changes during
training (:meth:`ExploraSSL.resumable_state`) is all a checkpoint needs: frozen weights are rebuilt
from the same start.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from roadwork.config import ExploraParams
from roadwork.models.adapters import explora_trainable, merge_adapters
from roadwork.models.dino_head import DINOHead
from roadwork.train.dino_loss import dino_loss, ibot_loss, koleo_loss, teacher_softmax, updated_center
from roadwork.train.distributed import Dist
from roadwork.train.loop import autocast
from roadwork.train.multicrop import make_masks


def encode(
    backbone: nn.Module, images: torch.Tensor, masks: torch.Tensor | None = None, mask_token: torch.Tensor | None = None
) -> torch.Tensor:
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
            out["patches"] = self.head(tokens[:, self.backbone.num_prefix_tokens :][masks])
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
        head = DINOHead(
            backbone.num_features, cfg.head_prototypes, cfg.head_hidden_dim, cfg.head_bottleneck_dim, cfg.head_layers
        )
        self.student = Student(backbone, head, mask_token=cfg.ibot_weight > 0)
        self.teacher = nn.ModuleDict({"backbone": share_frozen_copy(backbone), "head": copy.deepcopy(head)})
        self.teacher["backbone"].set_grad_checkpointing(False)
        self.teacher.requires_grad_(False)  # shared frozen tensors were frozen already
        self.teacher.eval()
        trainable = {
            f"{part}.{name}"
            for part in ("backbone", "head")
            for name, p in getattr(self.student, part).named_parameters()
            if p.requires_grad
        }
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
        return {
            "student": student,
            "teacher": {n: t.detach().clone() for n, t in zip(self.ema_names, teacher)},
            "center": self.center.clone(),
            "patch_center": self.patch_center.clone(),
        }

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
    def losses(
        self, student: nn.Module, views: list[torch.Tensor], teacher_temp: float, dist: Dist, precision: str
    ) -> dict:
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
            masks = make_masks(len(global_crops), grid * grid, cfg.ibot_mask_ratio, cfg.ibot_mask_probability).to(
                device
            )
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
                    self.patch_center.copy_(
                        updated_center(
                            self.patch_center,
                            teacher_patches.mean(0, keepdim=True),
                            cfg.center_momentum,
                            dist.world_size,
                        )
                    )
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

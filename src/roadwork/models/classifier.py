"""Backbone + head = the roadwork classifier (one logit per image, see ``heads``)."""
from __future__ import annotations

import timm.data
import torch
from torch import nn

from .backbone import create_backbone
from .heads import build_head


class RoadworkClassifier(nn.Module):
    """``forward(images) -> (B,)`` roadwork logits; ``sigmoid`` gives the roadwork probability."""

    def __init__(self, backbone: nn.Module, head: nn.Module):
        super().__init__()
        num_classes = getattr(head, "num_classes", 1)
        if num_classes != 1:
            raise ValueError(f"the roadwork classifier uses a single logit; head has num_classes={num_classes}")
        self.backbone = backbone
        self.head = head

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Pooled backbone features, (B, backbone.num_features)."""
        return self.backbone(images)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images)).squeeze(-1)


def build_classifier(
    backbone_name: str,
    pretrained: str | None = None,
    overrides: dict | None = None,
    pooling: str = "token",
    img_size: int = 224,
    head_type: str = "linear",
    head_kwargs: dict | None = None,
) -> RoadworkClassifier:
    backbone = create_backbone(backbone_name, pretrained, overrides, pooling, img_size)
    head = build_head(head_type, backbone.num_features, **dict(head_kwargs or {}))
    return RoadworkClassifier(backbone, head)


def data_config(model: nn.Module) -> dict:
    """timm's preprocessing config (mean, std, interpolation, crop_pct, crop_mode, input_size) for a
    classifier or backbone. ``input_size`` is the size the backbone was built for (``img_size``),
    not the pretrained default (256 for DINOv3), which timm would otherwise report."""
    backbone = model.backbone if isinstance(model, RoadworkClassifier) else model
    args = {}
    patch_embed = getattr(backbone, "patch_embed", None)
    if patch_embed is not None and getattr(patch_embed, "img_size", None) is not None:
        args["input_size"] = (getattr(backbone, "in_chans", 3), *patch_embed.img_size)
    return timm.data.resolve_data_config(args, model=backbone)

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


# build_classifier's arguments that define the architecture (as model.json records them)
ARCHITECTURE = ("backbone", "overrides", "pooling", "img_size", "head_type", "head_kwargs")


def build_classifier(
    backbone: str,
    pretrained: str | None = None,
    overrides: dict | None = None,
    pooling: str = "token",
    img_size: int = 224,
    head_type: str = "linear",
    head_kwargs: dict | None = None,
) -> RoadworkClassifier:
    """The one way to build the classifier: a DINOv3 backbone (``create_backbone``) and a head
    (``build_head``) on its pooled features."""
    module = create_backbone(backbone, pretrained, overrides, pooling, img_size)
    head = build_head(head_type, module.num_features, **dict(head_kwargs or {}))
    return RoadworkClassifier(module, head)


def architecture(model) -> dict:
    """The :data:`ARCHITECTURE` of a ``model`` params section (``roadwork.config.ModelParams``)."""
    head_kwargs = {"dropout": model.head.dropout} if model.head_type == "linear" else model.head.model_dump()
    return {
        "backbone": model.backbone,
        "overrides": dict(model.overrides),
        "pooling": model.pooling,
        "img_size": model.img_size,
        "head_type": model.head_type,
        "head_kwargs": head_kwargs,
    }


def build_model(model, pretrained: str | None = None) -> RoadworkClassifier:
    """The classifier a ``model`` params section describes, with ``model.pretrained`` weights
    unless ``pretrained`` overrides them."""
    return build_classifier(**architecture(model), pretrained=model.pretrained if pretrained is None else pretrained)


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

"""Train/eval transforms from params, built with timm and torchvision.

- `standard`: timm's RandomResizedCrop + flip + auto-augment + Gaussian blur, plus a rotation
  and a colour jitter (brightness, contrast, saturation) that we add ourselves: timm silently
  drops colour jitter whenever auto-augment is on, which is exactly how a configured
  augmentation ends up doing nothing.
- `validator`: the NATIX validators' augmentation levels 0-3 (224x224, as scoring sees them),
  then resized to the model's input size.
- `mix`: each image, each time it is drawn, goes through `standard` or `validator` with equal odds.
- `none`: the evaluation transform.
Mixup/cutmix act on batches (timm's `Mixup`), see `build_mixup`.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from timm.data import Mixup
from timm.data.transforms_factory import transforms_imagenet_train
from torchvision import transforms

from roadwork.config import AugmentParams


def eval_transform(img_size: int, mean, std) -> Callable:
    return transforms.Compose(
        [
            transforms.Resize(img_size, interpolation=transforms.InterpolationMode.BICUBIC),
            transforms.CenterCrop(img_size),
            transforms.ToTensor(),
            transforms.Normalize(mean, std),
        ]
    )


def train_transform(params: AugmentParams, img_size: int, mean, std) -> Callable:
    if params.mode == "none":
        return eval_transform(img_size, mean, std)
    validator = transforms.Compose([ValidatorLevels(params.validator_levels), eval_transform(img_size, mean, std)])
    if params.mode == "validator":
        return validator
    standard = standard_transform(params, img_size, mean, std)
    return EitherOf(standard, validator) if params.mode == "mix" else standard


def standard_transform(params: AugmentParams, img_size: int, mean, std) -> Callable:
    primary, secondary, final = transforms_imagenet_train(
        img_size,
        scale=tuple(params.scale),
        ratio=(3 / 4, 4 / 3),
        hflip=params.hflip,
        color_jitter=(params.brightness, params.contrast, params.color_jitter),
        force_color_jitter=True,
        gaussian_blur_prob=params.gaussian_blur_prob,
        auto_augment=params.auto_augment,
        interpolation="bicubic",
        mean=mean,
        std=std,
        separate=True,
    )
    rotation = [transforms.RandomRotation(params.rotation_degrees)] if params.rotation_degrees > 0 else []
    return transforms.Compose([*primary.transforms, *rotation, *secondary.transforms, *final.transforms])


class EitherOf:
    """One of two transforms with equal odds, drawn from torch's RNG (so it follows the per-epoch
    and loader-worker seeding like the transforms themselves)."""

    def __init__(self, first: Callable, second: Callable):
        self.first, self.second = first, second

    def __call__(self, image):
        return self.first(image) if torch.rand(()) < 0.5 else self.second(image)


class ValidatorLevels:
    """The validators' challenge augmentation (a level drawn from `levels`, then their JPEG
    round trip), with its randomness drawn from torch's RNG so that it follows the per-epoch
    seeding (and DataLoader worker seeding) like every other augmentation."""

    def __init__(self, levels):
        from roadwork.evaluate.validator_aug import ValidatorAugment

        self.augment = ValidatorAugment(levels=tuple(levels))

    def __call__(self, image):
        self.augment.set_rng(np.random.default_rng(int(torch.randint(0, 2**62, ()).item())))
        return self.augment(image)


def build_mixup(params: AugmentParams, label_smoothing: float) -> Mixup | None:
    """timm's batch mixup/cutmix over two classes; the caller keeps column 1 (roadwork) as target."""
    if params.mode == "none" or (params.mixup_alpha == 0 and params.cutmix_alpha == 0) or params.mix_prob == 0:
        return None
    return Mixup(
        mixup_alpha=params.mixup_alpha,
        cutmix_alpha=params.cutmix_alpha,
        prob=params.mix_prob,
        label_smoothing=label_smoothing,
        num_classes=2,
    )


def soft_targets(labels: torch.Tensor, label_smoothing: float) -> torch.Tensor:
    """Binary targets with label smoothing towards 0.5 (same convention as timm's Mixup)."""
    labels = labels.float()
    return labels * (1 - label_smoothing) + 0.5 * label_smoothing

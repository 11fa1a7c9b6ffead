"""DINO's multi-crop views and iBOT's patch masks: what the self-supervised objective sees.

* :class:`MultiCropTransform`: 2 global crops and N local crops per image, sizes and scales from
  ``explora`` params, with DINO's photometric recipe (flip, colour jitter, grayscale, Gaussian
  blur, solarisation on the second global view);
* :func:`make_masks`: random patch masks for the global views, with DINOv2's per-image ratio spread.

Randomness comes from torch's RNG (and torchvision's, which draws from it), so it follows the
loop's seeding.
"""

from __future__ import annotations

import torch
from PIL import ImageFilter
from torchvision import transforms

from roadwork.config import ExploraParams


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
        g, local = cfg.global_crop_size, cfg.local_crop_size
        global_crop = transforms.RandomResizedCrop(g, scale=tuple(cfg.global_crop_scale), interpolation=bicubic)
        self.global_1 = transforms.Compose([global_crop, *jitter, RandomGaussianBlur(1.0, g), *normalize])
        self.global_2 = transforms.Compose(
            [global_crop, *jitter, RandomGaussianBlur(0.1, g), transforms.RandomSolarize(128, p=0.2), *normalize]
        )
        self.local = transforms.Compose(
            [
                transforms.RandomResizedCrop(local, scale=tuple(cfg.local_crop_scale), interpolation=bicubic),
                *jitter,
                RandomGaussianBlur(0.5, local),
                *normalize,
            ]
        )
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

"""Datasets, the decoded-image cache, augmentations and samplers for training and evaluation.

Images are decoded and resized once per (content hash, size) into an on-disk cache of uint8
arrays, so epochs never re-decode full-size JPEGs. The cache lives outside DVC's outputs
(`.cache/images` by default, `ROADWORK_CACHE` to move it); entries are written atomically and
keyed by content, so a stale entry is impossible and deleting the folder is always safe.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from PIL import Image
from torch.utils.data import Dataset, Sampler

from roadwork.data.decode import load_rgb
from roadwork.data.examples import Example
from roadwork.train.distributed import seed_host_rngs


def cache_root() -> Path:
    return Path(os.environ.get("ROADWORK_CACHE", ".cache")) / "images"


class ImageCache:
    """Decoded RGB arrays keyed by (sha256, short side). Decodes JPEGs in draft mode."""

    def __init__(self, short_side: int, root: Path | None = None):
        self.short_side = short_side
        self.root = (root or cache_root()) / str(short_side)

    def path(self, sha256: str) -> Path:
        return self.root / sha256[:2] / f"{sha256}.npy"

    def get(self, example: Example) -> Image.Image:
        path = self.path(example.sha256)
        try:
            return Image.fromarray(np.load(path, allow_pickle=False))
        except (FileNotFoundError, ValueError, EOFError):
            pass
        image = load_rgb(example.path, max_side=self.short_side)
        scale = self.short_side / min(image.size)
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        image = image.resize(size, Image.BICUBIC, reducing_gap=None)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as handle:
            np.save(handle, np.asarray(image), allow_pickle=False)
        os.replace(tmp, path)
        return image


class ImageDataset(Dataset):
    """Items are `index` (evaluation) or `(index, epoch)` from `EpochSampler` (training): then
    the augmentation RNG is seeded from (seed, epoch, index), so an item's augmentation is the
    same whichever worker loads it, how many workers there are, and whether the run resumed."""

    def __init__(self, examples: Sequence[Example], cache: ImageCache, transform: Callable, seed: int = 0):
        self.examples = list(examples)
        self.cache = cache
        self.transform = transform
        self.seed = seed

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, item):
        index, epoch = item if isinstance(item, tuple) else (item, None)
        example = self.examples[index]
        image = self.cache.get(example)
        if epoch is not None:
            seed_host_rngs(self.seed, epoch, index)
        return self.transform(image), example.label

    @property
    def labels(self) -> np.ndarray:
        return np.array([e.label for e in self.examples])


class EpochSampler(Sampler[int]):
    """Deterministic per-epoch order, sharded across DDP ranks, optionally class-balanced.

    The permutation is a pure function of (seed, epoch), so a resumed run replays exactly the
    same batches. Balanced mode draws with replacement, each class with total weight 1/2.
    Yields `(index, epoch)` so the dataset can seed each item's augmentation.
    """

    def __init__(self, labels: np.ndarray, seed: int, balanced: bool, rank: int = 0, world_size: int = 1):
        self.labels = np.asarray(labels)
        self.seed, self.balanced = seed, balanced
        self.rank, self.world_size = rank, world_size
        self.epoch = 0
        self.per_rank = math.ceil(len(self.labels) / world_size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.per_rank

    def __iter__(self):
        rng = np.random.default_rng([self.seed, self.epoch])
        total = self.per_rank * self.world_size
        if self.balanced:
            counts = np.bincount(self.labels, minlength=2).astype(float)
            weights = 0.5 / counts[self.labels]
            order = rng.choice(len(self.labels), size=total, replace=True, p=weights / weights.sum())
        else:
            order = rng.permutation(len(self.labels))
            order = np.concatenate([order, order[: total - len(order)]])  # pad so every rank gets equal work
        return iter([(index, self.epoch) for index in order[self.rank :: self.world_size].tolist()])

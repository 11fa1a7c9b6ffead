"""A tiny on-disk dataset (data/raw + data/split) and params for training tests."""

import io
from pathlib import Path

import numpy as np
import yaml
from PIL import Image, ImageDraw

from kit.repo import merge
from roadwork.config import parse_params
from roadwork.data.ingest import ingest
from roadwork.io import format_csv, read_csv

TINY_MODEL = {
    "backbone": "vit_small_patch16_dinov3",
    "overrides": {"embed_dim": 32, "depth": 2, "num_heads": 2},
    "img_size": 32,
    "pooling": "token",
}
TINY_TRAIN = {
    "epochs": 3,
    "batch_size": 16,
    "lr": 3e-3,
    "backbone_lr": 1e-3,
    "warmup_epochs": 1,
    "num_workers": 0,
    "early_stopping_patience": 5,
    "balanced_sampler": False,
    "augment": {"mode": "none", "mixup_alpha": 0.0, "cutmix_alpha": 0.0},
}


def shape_image(rng: np.random.Generator, label: int, size: int = 40) -> bytes:
    """Label 1: an orange triangle; label 0: an orange circle. Colour alone cannot decide."""
    background = tuple(int(v) for v in rng.integers(0, 120, 3))
    image = Image.new("RGB", (size, size), background)
    draw = ImageDraw.Draw(image)
    cx, cy = (int(v) for v in rng.integers(12, size - 12, 2))
    r = int(rng.integers(7, 11))
    colour = (255, int(rng.integers(100, 180)), 0)
    if label:
        draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=colour)
    else:
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=colour)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=92)
    return buffer.getvalue()


def make_dataset(root: Path, n: int = 96, seed: int = 0) -> None:
    """root/data/raw (via the real ingest code) and root/data/split/splits.csv (round-robin)."""
    rng = np.random.default_rng(seed)
    source = root / "source"
    for name in ("none", "roadwork"):
        (source / name).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        label = i % 2
        (source / ("roadwork" if label else "none") / f"{i:04d}.jpg").write_bytes(shape_image(rng, label))
    ingest(parse_params({"data": {"source": "local", "local": {"path": str(source)}}}).data, root / "data" / "raw")
    rows = read_csv(root / "data" / "raw" / "manifest.csv")
    names = ["train", "train", "train", "train", "val_select", "val_calib", "val_test", "train"]
    splits = [
        {"id": r["id"], "sha256": r["sha256"], "label": r["label"], "cluster": r["id"], "split": names[i % len(names)]}
        for i, r in enumerate(rows)
    ]
    (root / "data" / "split").mkdir(parents=True, exist_ok=True)
    (root / "data" / "split" / "splits.csv").write_text(
        format_csv(splits, ["id", "sha256", "label", "cluster", "split"])
    )


def write_params(root: Path, model: dict | None = None, train: dict | None = None, **sections) -> dict:
    raw = {"model": {**TINY_MODEL, **(model or {})}, "train": merge(TINY_TRAIN, train or {}), **sections}
    parse_params(raw)  # fail early in the test, not in the subprocess
    (root / "params.yaml").write_text(yaml.safe_dump(raw))
    return raw

"""Why the embedded default is the ViT it is: candidate randomly initialised models, one loop.

Every candidate trains on the pipeline's own train split (data/split) with the same loop
(AdamW, warmup + cosine, class-balanced batches, random-resized crop + flip, seed 0) for the
same number of image passes, and is scored on val_select and val_test at logit 0 beside the
others, measured in the same run:

- `vit_token_p16`: the first default (CLS pooling, patch 16, 128 wide, 4 deep);
- `vit_max_p8`: the current default (max pooling over patches, patch 8, 64 wide, 3 deep);
- `cnn`: a 146k-parameter CNN, a reference for what the data allows at this size, not a
  candidate (it is not a DINOv3 architecture).

    python benchmarks/default_model.py            # after `dvc repro split`; about 10 min on 2 cores
    python benchmarks/default_model.py --epochs 10 --models vit_max_p8
"""

import argparse
import time
from pathlib import Path

import numpy as np
import timm
import torch
import torch.nn.functional as F
from PIL import Image
from sklearn.metrics import matthews_corrcoef, roc_auc_score
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torch import nn
from torchvision.transforms import v2

from roadwork.data.decode import load_rgb
from roadwork.data.examples import load_split

MEAN = torch.tensor(IMAGENET_DEFAULT_MEAN).view(1, 3, 1, 1)  # what timm's DINOv3 configs use
STD = torch.tensor(IMAGENET_DEFAULT_STD).view(1, 3, 1, 1)
VIT = "vit_small_patch16_dinov3"
CANDIDATES = {
    "vit_token_p16": dict(pool="token", lr=1e-3, overrides=dict(embed_dim=128, depth=4, num_heads=2, init_values=1.0)),
    "vit_max_p8": dict(
        pool="max", lr=1e-3, overrides=dict(embed_dim=64, depth=3, num_heads=2, init_values=1.0, patch_size=8)
    ),
    "cnn": dict(lr=1e-3),
}


def small_cnn() -> nn.Module:
    def block(cin, cout):
        return nn.Sequential(
            nn.Conv2d(cin, cout, 3, padding=1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(),
            nn.Conv2d(cout, cout, 3, padding=1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )

    return nn.Sequential(
        block(3, 16),
        block(16, 32),
        block(32, 64),
        block(64, 64),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(64, 1),
    )


def build(name: str, img_size: int) -> nn.Module:
    if name == "cnn":
        return small_cnn()
    spec = CANDIDATES[name]
    return timm.create_model(
        VIT, pretrained=False, num_classes=1, global_pool=spec["pool"], img_size=img_size, **spec["overrides"]
    )


def load(split: str, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    examples = load_split(Path("data/raw"), Path("data/split/splits.csv"), split)
    images = [np.asarray(load_rgb(e.path).resize((size, size), Image.BICUBIC)) for e in examples]
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2), torch.tensor([e.label for e in examples])


def normalise(x: torch.Tensor) -> torch.Tensor:
    return (x.float() / 255 - MEAN) / STD


def scores(model: nn.Module, x: torch.Tensor, img_size: int) -> np.ndarray:
    model.eval()
    with torch.no_grad():
        out = [
            model(
                normalise(
                    F.interpolate(
                        x[i : i + 256].float(), size=(img_size, img_size), mode="bicubic", antialias=True
                    ).clamp(0, 255)
                )
            ).squeeze(-1)
            for i in range(0, len(x), 256)
        ]
    model.train()
    return torch.cat(out).numpy()


def train_and_score(name: str, data: dict, args) -> dict:
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    model = build(name, args.img_size)
    x_train, y_train = data["train"]
    steps_per_epoch = len(y_train) // args.batch
    total, warmup = steps_per_epoch * args.epochs, steps_per_epoch * 2
    optimizer = torch.optim.AdamW(model.parameters(), lr=CANDIDATES[name]["lr"], weight_decay=0.05)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: (s + 1) / warmup if s < warmup else 0.5 * (1 + np.cos(np.pi * (s - warmup) / (total - warmup))),
    )
    weights = 0.5 / np.bincount(y_train.numpy())[y_train.numpy()]
    augment = v2.Compose(
        [v2.RandomResizedCrop(args.img_size, scale=(0.5, 1.0), antialias=True), v2.RandomHorizontalFlip()]
    )
    start = time.perf_counter()
    for _ in range(args.epochs):
        order = rng.choice(len(y_train), size=steps_per_epoch * args.batch, p=weights / weights.sum())
        for step in range(steps_per_epoch):
            batch = order[step * args.batch : (step + 1) * args.batch]
            x = normalise(torch.stack([augment(x_train[i]) for i in batch]))
            loss = F.binary_cross_entropy_with_logits(model(x).squeeze(-1), y_train[batch].float())
            optimizer.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
    seconds = time.perf_counter() - start
    row = {"params": sum(p.numel() for p in model.parameters()), "train_s": seconds}
    for split in ("val_select", "val_test"):
        x, y = data[split]
        s = scores(model, x, args.img_size)
        row[split] = (matthews_corrcoef(y, s > 0), roc_auc_score(y, s))
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--img-size", type=int, default=64)
    parser.add_argument("--native", type=int, default=96, help="images are first resized to this square size")
    parser.add_argument("--models", nargs="+", default=list(CANDIDATES), choices=list(CANDIDATES))
    args = parser.parse_args()
    data = {split: load(split, args.native) for split in ("train", "val_select", "val_test")}
    print(
        f"train {len(data['train'][1])} images ({int(data['train'][1].sum())} roadwork), "
        f"{args.epochs} epochs of batch {args.batch} at {args.img_size} px"
    )
    print(f"{'model':<15}{'params':>9}{'train s':>9}  {'val_select MCC / AUC':>21}  {'val_test MCC / AUC':>19}")
    for name in args.models:
        row = train_and_score(name, data, args)
        (sm, sa), (tm, ta) = row["val_select"], row["val_test"]
        print(
            f"{name:<15}{row['params']:>9,}{row['train_s']:>9.0f}  {sm:>11.3f} / {sa:.3f}  {tm:>9.3f} / {ta:.3f}",
            flush=True,
        )


if __name__ == "__main__":
    main()

"""Steady-state training step time with the real loader vs the same steps on in-memory tensors.

The real loader reads the decoded-image cache (content hash + size), applies the configured
augmentation and collates, in `train.num_workers` worker processes; the baseline feeds batches
that already sit in memory. Both run the same model/optimizer steps in the same process.

    python benchmarks/bench_loader.py [--images 512] [--steps 20] [--params params.yaml]
"""

import argparse
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from roadwork.config import load_params
from roadwork.data.examples import load_split
from roadwork.data.ingest import ingest
from roadwork.io import format_csv, read_csv
from roadwork.models.classifier import build_model, data_config
from roadwork.train.augment import train_transform
from roadwork.train.data import EpochSampler, ImageCache, ImageDataset
from roadwork.train.distributed import seed_everything
from roadwork.train.supervised import train_loader


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args()
    params = load_params(args.params)
    data = params.data.model_copy(update={"synthetic": params.data.synthetic.model_copy(update={"count": args.images})})
    seed_everything(0)
    model = build_model(params.model)
    cfg = data_config(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    batch = params.train.batch_size

    def step(inputs, labels):
        loss = F.binary_cross_entropy_with_logits(model(inputs), labels.float())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ingest(data, tmp / "raw")
        rows = read_csv(tmp / "raw" / "manifest.csv")
        (tmp / "splits.csv").write_text(
            format_csv(
                [
                    {"id": r["id"], "sha256": r["sha256"], "label": r["label"], "cluster": r["id"], "split": "train"}
                    for r in rows
                ],
                ["id", "sha256", "label", "cluster", "split"],
            )
        )
        examples = load_split(tmp / "raw", tmp / "splits.csv", "train")
        transform = train_transform(params.train.augment, params.model.img_size, cfg["mean"], cfg["std"])
        dataset = ImageDataset(examples, ImageCache(params.model.img_size, tmp / "cache"), transform)
        sampler = EpochSampler(dataset.labels, 0, False)
        loader = train_loader(dataset, sampler, batch, params.train.num_workers)
        for _ in loader:  # epoch 0 fills the decoded-image cache (once per content hash and size)
            pass

        batches, timed = [], 0.0
        sampler.set_epoch(1)
        iterator = iter(loader)
        next(iterator)  # steady state: workers up
        start = time.perf_counter()
        for _ in range(args.steps):
            try:
                inputs, labels = next(iterator)
            except StopIteration:
                sampler.set_epoch(sampler.epoch + 1)
                iterator = iter(loader)
                inputs, labels = next(iterator)
            batches.append((inputs, labels))
            step(inputs, labels)
        timed = time.perf_counter() - start

        start = time.perf_counter()
        for inputs, labels in batches:
            step(inputs, labels)
        in_memory = time.perf_counter() - start
    print(
        f"model {params.model.backbone} {dict(params.model.overrides)} at {params.model.img_size}px, "
        f"batch {batch}, augment {params.train.augment.mode}, workers {params.train.num_workers}"
    )
    print(f"real loader : {timed / args.steps * 1000:8.1f} ms/step")
    print(f"in memory   : {in_memory / args.steps * 1000:8.1f} ms/step")
    print(f"ratio real/in-memory: {timed / in_memory:.3f}x")


if __name__ == "__main__":
    main()

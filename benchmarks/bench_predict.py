"""Benchmark: the Predictor against a plain timm forward pass of the same model, same run.

    python benchmarks/bench_predict.py [--bundle data/bundle] [--images 48] [--batch 16]
                                       [--size 320x240] [--repeats 9] [--device cpu] [--threads 1]

Without ``--bundle`` (or when it does not exist) a bundle is built in a temp dir from a
randomly initialised model of the embedded default's size (vit_small_patch16_dinov3 with
embed_dim 192, depth 4, 3 heads, at 96 px).

Measured in ``--repeats`` interleaved rounds (images per second, medians; ratios are the
median of the per-round ratios, so that machine load hits both sides alike). On the CPU both wall
time and this process's CPU time are reported: on a shared, loaded machine wall-time ratios swing
widely and the CPU-time ratio is the stable comparison.

* end to end, single view: ``Predictor.predict(pil_images)`` against the plain loop
  ``torch.stack([transform(im) ...])`` -> ``model(x)`` -> softmax, with the same timm eval
  transform (the one the miner's image processor builds); the ratio should be >= 0.9;
* forward only: ``Predictor.view_probabilities(x)`` against ``model(x).softmax(-1)`` on the same
  preprocessed batch;
* multi-view: images per second with the whole image + grid x grid tiles, and the cost of one
  view relative to a single-view image (1.0 = a tile costs as much as a whole image).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch
from PIL import Image

DEFAULT_MODEL = {
    "backbone": "vit_small_patch16_dinov3",
    "overrides": {"embed_dim": 192, "depth": 4, "num_heads": 3},
    "img_size": 96,
}


def build_temp_bundle(root: Path) -> Path:
    from safetensors.torch import save_file

    from roadwork.config import parse_params
    from roadwork.export.bundle import build_bundle
    from roadwork.models.classifier import build_model
    from roadwork.models.model_dir import model_description

    torch.manual_seed(0)
    params = parse_params({"model": DEFAULT_MODEL}).model
    classifier = build_model(params)
    model_dir = root / "model"
    model_dir.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in classifier.state_dict().items()}, model_dir / "model.safetensors")
    (model_dir / "model.json").write_text(json.dumps(model_description(params, classifier, best_epoch=0)))
    build_bundle(
        model_dir,
        1.0,
        0.0,
        root / "bundle",
        model_name="bench",
        version="0",
        submitted_by="",
        metrics={},
        provenance={},
        onnx=False,
        check_transformers=False,
    )
    return root / "bundle"


def images(n: int, width: int, height: int, seed: int = 0) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [
        Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)).resize((width, height), Image.BICUBIC)
        for _ in range(n)
    ]


def rate(fn, n_items: int) -> tuple[float, float]:
    """Items per second of wall time and per second of this process's CPU time (all threads;
    on a shared, loaded machine the CPU-time rate is the stable one)."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return n_items / (time.perf_counter() - wall), n_items / (time.process_time() - cpu)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", default="data/bundle", help="bundle to use if it exists (else a temp one)")
    ap.add_argument("--images", type=int, default=48)
    ap.add_argument("--batch", type=int, default=16, help="images per forward pass")
    ap.add_argument("--size", default="320x240", help="input image size WxH")
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--grid", type=int, default=2)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch CPU threads (0 = torch's default); 1 gives "
        "stable CPU-time numbers on a loaded machine (no spinning worker threads)",
    )
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    from roadwork.export.bundle import bundle_transform, load_bundle_model
    from roadwork.predict import Predictor

    with tempfile.TemporaryDirectory() as scratch:
        bundle = Path(args.bundle)
        if not (bundle / "config.json").exists():
            bundle = build_temp_bundle(Path(scratch))
        width, height = (int(v) for v in args.size.lower().split("x"))
        pics = images(args.images, width, height)
        device = torch.device(args.device)
        predictor = Predictor(bundle, multiview_grid=args.grid, device=device)
        plain_model = load_bundle_model(bundle).to(device).eval()  # a separate copy: nothing shared
        transform = bundle_transform(bundle)
        batches = [pics[i : i + args.batch] for i in range(0, len(pics), args.batch)]
        x = torch.stack([transform(im) for im in batches[0]])

        def sync():
            if device.type == "cuda":
                torch.cuda.synchronize()

        def plain_end_to_end():
            with torch.inference_mode():
                for batch in batches:
                    t = torch.stack([transform(im) for im in batch]).to(device)
                    torch.softmax(plain_model(t).float(), -1)[:, 1].cpu()
            sync()

        def ours_end_to_end():
            for batch in batches:
                predictor.predict(batch)
            sync()

        def plain_forward():
            with torch.inference_mode():
                torch.softmax(plain_model(x.to(device)).float(), -1)[:, 1].cpu()
            sync()

        def ours_forward():
            predictor.view_probabilities(x)
            sync()

        def ours_multiview():
            for batch in batches:
                predictor.predict(batch, multiview=True)
            sync()

        for fn in (plain_end_to_end, ours_end_to_end, ours_multiview):  # warm-up
            fn()
        names = ("plain", "ours", "plain_fwd", "ours_fwd", "multi")
        rates = {clock: {name: [] for name in names} for clock in ("wall", "cpu")}
        for _ in range(args.repeats):  # interleaved pairs, so that load changes hit both sides alike
            for name, fn, n_items in (
                ("plain", plain_end_to_end, len(pics)),
                ("ours", ours_end_to_end, len(pics)),
                ("plain_fwd", plain_forward, len(x)),
                ("ours_fwd", ours_forward, len(x)),
                ("multi", ours_multiview, len(pics)),
            ):
                wall, cpu = rate(fn, n_items)
                rates["wall"][name].append(wall)
                rates["cpu"][name].append(cpu)

        views = predictor.views_per_image
        where = "(temp, default-size model)" if bundle.parent == Path(scratch) else str(bundle)
        print(f"device {device}, torch threads {torch.get_num_threads()}, bundle {where}")
        print(
            f"model input {tuple(predictor.data_config['input_size'][1:])}, {len(pics)} images of {width}x{height}, "
            f"batch {args.batch}, {args.repeats} interleaved repeats; rates are medians, ratios the median "
            f"(and range) of the per-repeat ratios"
        )
        clocks = ("wall", "cpu") if device.type == "cpu" else ("wall",)
        for clock in clocks:
            r = rates[clock]
            med = {k: statistics.median(v) for k, v in r.items()}

            def ratio(a, b, r=r):
                values = [p / q for p, q in zip(r[a], r[b])]
                return f"{statistics.median(values):.3f} ({min(values):.2f}-{max(values):.2f})"

            unit = "img/s" if clock == "wall" else "img/CPU-s"
            print(f"[{clock} clock]")
            print(
                f"  single view, end to end: plain timm {med['plain']:.1f} {unit}, Predictor {med['ours']:.1f} {unit}"
                f" -> Predictor/plain {ratio('ours', 'plain')}  (aim >= 0.9)"
            )
            print(
                f"  forward only:            plain timm {med['plain_fwd']:.1f} {unit}, Predictor "
                f"{med['ours_fwd']:.1f} {unit} -> Predictor/plain {ratio('ours_fwd', 'plain_fwd')}"
            )
            per_view = statistics.median(o / (m * views) for o, m in zip(r["ours"], r["multi"]))
            print(
                f"  multi-view ({views} views = whole + {args.grid}x{args.grid} tiles): {med['multi']:.1f} {unit}"
                f" -> multi/single {ratio('multi', 'ours')}; cost per view {per_view:.3f}x a single-view image"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())

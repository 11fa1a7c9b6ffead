"""Per-query latency of the miner detector (roadwork.miner.detector) on the CPU against the
validators' 9 s deadline, for the default model (params.yaml) and the real preset's ViT-H/16+
(vit_huge_plus_patch16_dinov3 at 224, random weights: timing only), at 1 view and at the configured
views (params.yaml predict.*), beside a plain timm forward of one image in the same run; then CPU
variants (threads, bf16 autocast, dynamic int8 Linear) with the largest change of the roadwork
probability against fp32 on validator-like queries.

    PYTHONPATH=src python benchmarks/bench_detector.py [--skip-huge] [--repeats 3]
    PYTHONPATH=src python benchmarks/bench_detector.py --bundle data/bundle   # a trained bundle: val_test

With ``--bundle`` (after ``dvc repro``), the CPU variants (fp32 at torch's default threads and at
1 thread, bf16 autocast, dynamic int8 Linear layers, ONNX Runtime on the bundle's model.onnx) answer
every val_test image at the validators' 224 x 224, single view, and each is reported with its
seconds per query, its val_test MCC and accuracy, the decisions it changes against fp32, and the
paired bootstrap 95% interval of its MCC change against fp32 (the same images resampled for both).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import timm
import torch

from roadwork.config import load_params
from roadwork.export.bundle import _write_hf_layout
from roadwork.miner.detector import RoadworkTimmDetector
from roadwork.miner.latency import measure_latency, query_image

IMAGENET = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "interpolation": "bicubic"}


def random_bundle(out: Path, backbone: str, img_size: int, overrides: dict, pooling: str) -> Path:
    torch.manual_seed(0)
    global_pool = {"token": "token", "avg": "avg", "max": "max"}.get(pooling, "token")
    model = timm.create_model(
        backbone, pretrained=False, num_classes=2, img_size=img_size, global_pool=global_pool, **overrides
    ).eval()
    out.mkdir(parents=True)
    _write_hf_layout(model, {"img_size": img_size, **IMAGENET}, out)
    return out


def variants(bundle: Path, repeats: int) -> dict:
    """Single-view latency and max |p - p_fp32| over 16 validator-like queries per CPU variant."""
    images = [query_image(seed) for seed in range(16)]
    base = RoadworkTimmDetector(config_name=None, bundle=str(bundle), views="single")
    reference = np.array([base(im) for im in images])
    out = {}

    def timed(fn):
        fn(images[0])
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn(images[0])
            times.append(time.perf_counter() - start)
        return float(np.median(times))

    def row(fn):
        probs = np.array([fn(im) for im in images])
        return {
            "s": timed(fn),
            "max_abs_dp": float(np.abs(probs - reference).max()),
            "decisions_changed": int(((probs > 0.5) != (reference > 0.5)).sum()),
        }

    threads = torch.get_num_threads()
    out[f"fp32, {threads} threads"] = row(base)
    torch.set_num_threads(1)
    out["fp32, 1 thread"] = row(base)
    torch.set_num_threads(threads)

    def bf16(im):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return base(im)

    out["bf16 autocast"] = row(bf16)
    int8 = RoadworkTimmDetector(config_name=None, bundle=str(bundle), views="single")
    int8.model = torch.ao.quantization.quantize_dynamic(int8.model, {torch.nn.Linear}, dtype=torch.qint8)
    out["dynamic int8 (Linear)"] = row(int8)
    return out


def onnx_runtime(bundle: Path, detector: RoadworkTimmDetector):
    """A query function answering from the bundle's model.onnx with onnxruntime (the detector's
    preprocessing; the same folded head, so the same 0.5 cut-off)."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(bundle / "model.onnx"), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name

    def answer(image):
        pixels = detector.preprocess(image).numpy()
        logits = session.run(None, {name: pixels})[0]
        return float(torch.softmax(torch.from_numpy(logits).float(), dim=-1)[0, 1])

    return answer


def val_test_variants(bundle: Path, raw: Path, splits_csv: Path, repeats: int, n_boot: int = 1000) -> dict:
    """Each CPU variant on every val_test image at 224 px, single view: latency, MCC, accuracy,
    decisions changed against fp32 and the paired bootstrap interval of the MCC change."""
    from roadwork.data.examples import load_split
    from roadwork.evaluate.compare import mcc_difference
    from roadwork.evaluate.metrics import mcc_at
    from roadwork.evaluate.protocol import validator_resize
    from roadwork.predict import load_image

    examples = load_split(raw, splits_csv, "val_test")
    labels = np.array([e.label for e in examples])
    images = [validator_resize(load_image(e.path)) for e in examples]
    base = RoadworkTimmDetector(config_name=None, bundle=str(bundle), views="single")
    threads = torch.get_num_threads()
    int8 = RoadworkTimmDetector(config_name=None, bundle=str(bundle), views="single")
    int8.model = torch.ao.quantization.quantize_dynamic(int8.model, {torch.nn.Linear}, dtype=torch.qint8)

    def with_threads(n, fn):
        def run(image):
            torch.set_num_threads(n)
            try:
                return fn(image)
            finally:
                torch.set_num_threads(threads)

        return run

    def bf16(image):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return base(image)

    candidates = {
        f"fp32, {threads} threads": base,
        "fp32, 1 thread": with_threads(1, base),
        "bf16 autocast": bf16,
        "dynamic int8 (Linear)": int8,
    }
    if (bundle / "model.onnx").is_file():
        candidates["ONNX Runtime (model.onnx)"] = onnx_runtime(bundle, base)
    reference = None
    out = {"n": int(labels.size), "positives": int(labels.sum()), "variants": {}}
    for name, fn in candidates.items():
        probs = np.array([fn(image) for image in images])
        seconds = np.median([_time(fn, images[0]) for _ in range(repeats)])
        if reference is None:
            reference = probs
        change = mcc_difference(labels, reference > 0.5, probs > 0.5, n_boot=n_boot)
        out["variants"][name] = {
            "s_per_query": float(seconds),
            "mcc": mcc_at(probs, labels, 0.5),
            "accuracy": float(np.mean((probs > 0.5) == labels)),
            "decisions_changed": int(((probs > 0.5) != (reference > 0.5)).sum()),
            "max_abs_dp": float(np.abs(probs - reference).max()),
            "mcc_change_vs_fp32": change,
        }
        print(name, json.dumps(out["variants"][name]), flush=True)
    return out


def _time(fn, image) -> float:
    start = time.perf_counter()
    fn(image)
    return time.perf_counter() - start


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-huge", action="store_true")
    parser.add_argument("--bundle", type=Path, help="a trained bundle (data/bundle): the variants on val_test")
    parser.add_argument("--raw", type=Path, default=Path("data/raw"))
    parser.add_argument("--splits", type=Path, default=Path("data/split/splits.csv"))
    args = parser.parse_args(argv)
    if args.bundle:
        report = val_test_variants(args.bundle, args.raw, args.splits, args.repeats)
        print(json.dumps(report, indent=1))
        return 0
    params = load_params(Path("params.yaml"))
    predict = params.predict
    settings = dict(
        grid=predict.multiview_grid,
        overlap=predict.multiview_overlap,
        topk=predict.multiview_topk,
        flip_tta=predict.flip_tta,
    )
    models = {
        "default": (params.model.backbone, params.model.img_size, dict(params.model.overrides), params.model.pooling)
    }
    if not args.skip_huge:
        models["ViT-H/16+ (real preset)"] = ("vit_huge_plus_patch16_dinov3", 224, {}, "token")
    report = {
        "torch": torch.__version__,
        "timm": timm.__version__,
        "cpu_threads": torch.get_num_threads(),
        "predict": settings,
        "models": {},
    }
    with tempfile.TemporaryDirectory() as scratch:
        for name, (backbone, size, overrides, pooling) in models.items():
            bundle = random_bundle(
                Path(scratch) / name.split()[0].replace("/", "_"), backbone, size, overrides, pooling
            )
            repeats = args.repeats if name == "default" else 1
            entry = {
                "backbone": backbone,
                "img_size": size,
                "latency": measure_latency(bundle, **settings, repeats=repeats),
            }
            if name == "default":
                entry["cpu_variants_single_view"] = variants(bundle, args.repeats)
            report["models"][name] = entry
            print(json.dumps({name: entry}, indent=1), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

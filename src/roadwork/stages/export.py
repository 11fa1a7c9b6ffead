"""export: build the miner bundle (data/bundle) from the calibrated model, and nothing else.

1. calibration.json says which model (phase 1 or 4), its temperature T and its threshold t; the
   weights must be the ones whose logits were calibrated (sha256 checked).
2. ``build_bundle`` (``roadwork.export.bundle``) folds T and t into a 2-class head (the "Roadwork"
   probability is sigmoid((z - t) / T), > 0.5 iff z > t) and writes config.json,
   model.safetensors, model_card.json, manifest.json (+ model.onnx, its parity checked), with the
   provenance (``roadwork.export.provenance``: every params section that shaped the model).
3. The views decision (``roadwork.miner.decision``), on **val_select** only: the multi-view
   threshold fitted there, and multi-view shipped only when its cross-fitted paired MCC
   difference with the single view lies above 0; written as the bundle's inference.json.

The whole bundle is written atomically (a failed or killed run leaves data/bundle as it was).
val_test is not read here: the evaluate stage reports the bundle on it. metrics/export.json holds
the build's facts: the bundle's record, its checks (reload, transformers, ONNX parity), file sizes,
the views decision on val_select and the timings.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

from roadwork.config import Params
from roadwork.io import atomic_path, read_json, sha256_file
from roadwork.stages.common import BUNDLE, CALIBRATION_JSON, DVC_LOCK, RAW, SPLIT, finish, finish_printed, params

BATCH = 32


class ExportError(Exception):
    """The inputs cannot make a bundle (e.g. weights that are not the calibrated ones)."""


def bundle_record(calibration: dict, manifest: dict, views: str) -> dict:
    """What a report says about the bundle: the model, its folded T and t, its weights' hash, its views."""
    return {
        "model": calibration["model"],
        "temperature": calibration["temperature"],
        "threshold_logit": calibration["threshold_logit"],
        "threshold_probability": calibration["threshold_probability"],
        "model_sha256": manifest["model_sha256"],
        "onnx": manifest.get("onnx") is not None,
        "views": views,
    }


def rounded(obj, digits: int = 6):
    if isinstance(obj, float):
        return round(obj, digits)
    if isinstance(obj, dict):
        return {k: rounded(v, digits) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [rounded(v, digits) for v in obj]
    return obj


def card_metrics(calibration: dict) -> dict:
    """What the model card records (known before the bundle exists): the choice on val_select and
    the calibration. No val_test figure: the evaluate stage reports those."""
    score = calibration["selection"]["scores"][calibration["model"]]
    return rounded(
        {
            "model": calibration["model"],
            "temperature": calibration["temperature"],
            "val_select": {"mcc": score["mcc"], "mcc_prior_0.5": score["mcc_target_prior"], "n": score["n"]},
        }
    )


def score_views(predictor, examples, *, full_size: bool = True, progress: bool = True, desc: str = "") -> dict:
    """The scores of a split, per image, in one decoding pass, by ``predictor`` (the bundle's
    :class:`~roadwork.predict.Predictor` with ``params.predict``'s views and no multi-view threshold):
    ``shipped``, the single view at full size (the pipeline's preprocessing; with ``full_size``) and,
    on the validators' 224 x 224 version, ``v224_single`` (the single view, as the miner answers it)
    and ``v224_multi`` (the multi-view top-k mean, flip TTA if ``predict.flip_tta``, before its own
    threshold is folded in)."""
    from tqdm import tqdm

    from roadwork.evaluate.protocol import validator_resize
    from roadwork.predict import load_image

    n = len(examples)
    keys = ("shipped", "v224_single", "v224_multi") if full_size else ("v224_single", "v224_multi")
    out = {key: np.zeros(n) for key in keys}
    for start in tqdm(range(0, n, BATCH), desc=desc or None, unit="batch", disable=not progress):
        chunk = slice(start, min(n, start + BATCH))
        originals = [load_image(e.path) for e in examples[chunk]]
        small = [validator_resize(image) for image in originals]
        if full_size:
            out["shipped"][chunk] = predictor.predict(originals)
        out["v224_single"][chunk] = predictor.predict(small)
        out["v224_multi"][chunk] = predictor.predict(small, multiview=True)
    return out


def bundle_sizes(bundle_dir: Path) -> dict:
    return {p.name: p.stat().st_size for p in sorted(Path(bundle_dir).iterdir()) if p.is_file()}


def export(
    config: Params,
    bundle_dir: Path,
    calibration_json: Path,
    raw_dir: Path,
    split_dir: Path,
    lock_path: Path,
    device=None,
    progress: bool = True,
) -> dict:
    """Build the bundle in ``bundle_dir`` (atomically) and return the content of metrics/export.json.
    ``split_dir`` holds splits.csv (val_select: the views decision); ``lock_path`` is dvc.lock
    (provenance)."""
    import torch

    from roadwork.data.examples import load_split
    from roadwork.export.bundle import build_bundle
    from roadwork.export.provenance import provenance
    from roadwork.miner.decision import inference_config, multiview_decision, write_inference_config
    from roadwork.predict import Predictor

    started = time.monotonic()
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    calibration = read_json(calibration_json)
    model_dir = Path(calibration["model_dir"])
    if sha256_file(model_dir / "model.safetensors") != calibration["model_sha256"]:
        raise ExportError(
            f"{model_dir / 'model.safetensors'} is not the model that was calibrated "
            f"({calibration_json} records another sha256): run `dvc repro calibrate` first"
        )
    settings, views = config.export, config.predict
    select = load_split(raw_dir, split_dir / "splits.csv", "val_select")
    if not select:
        raise ExportError(f"{split_dir / 'splits.csv'}: val_select is empty; the views decision needs it")
    timings = {}
    with atomic_path(bundle_dir) as tmp:
        manifest = build_bundle(
            model_dir,
            calibration["temperature"],
            calibration["threshold_logit"],
            tmp,
            model_name=settings.model_name,
            version=settings.version,
            submitted_by=settings.submitted_by,
            metrics=card_metrics(calibration),
            provenance=provenance(config, calibration, raw_dir, split_dir, lock_path),
            onnx=settings.onnx,
        )
        timings["build_s"] = time.monotonic() - started

        # multi-view earns its place on val_select: its own threshold, and a cross-fitted paired
        # comparison, both on the validators' 224 x 224 inputs; inference.json tells the detector
        predictor = Predictor.from_params(tmp, views, device=device)
        scores = score_views(predictor, select, full_size=False, progress=progress, desc="val_select")
        try:
            decision = multiview_decision(
                [e.label for e in select],
                scores["v224_single"],
                scores["v224_multi"],
                target_prior=config.threshold.target_prior,
                n_boot=settings.bootstrap,
                seed=settings.protocol_seed,
            )
        except ValueError as error:
            raise ExportError(f"{split_dir / 'splits.csv'}: {error}") from error
        manifest = write_inference_config(
            tmp,
            inference_config(
                decision,
                grid=views.multiview_grid,
                overlap=views.multiview_overlap,
                topk=views.multiview_topk,
                flip_tta=views.flip_tta,
            ),
        )
        sizes = bundle_sizes(tmp)
        timings["decision_s"] = time.monotonic() - started - timings["build_s"]
    return rounded(
        {
            "bundle": bundle_record(calibration, manifest, "multi" if decision["use_multiview"] else "single"),
            "checks": manifest["checks"],
            "onnx": manifest.get("onnx"),
            "sizes_bytes": {**sizes, "total": sum(sizes.values())},
            "multiview": {"settings": views.model_dump(), **decision},
            "timings_s": timings,
        }
    )


def headline(metrics: dict) -> dict:
    """The lines of metrics/export.json a person reads first (the stage's summary)."""
    decision = metrics["multiview"]
    difference = decision["val_select"][f"mcc_prior_{decision['val_select']['target_prior']}_difference"]
    return {
        "bundle": f"{metrics['bundle']['model']}, T={metrics['bundle']['temperature']}, "
        f"views {metrics['bundle']['views']}, model_sha256 {metrics['bundle']['model_sha256'][:12]}",
        "checks": metrics["checks"],
        "size MB": round(metrics["sizes_bytes"]["total"] / 1e6, 1),
        "multiview.use_multiview (val_select, cross-fitted)": decision["use_multiview"],
        "multiview - single view, 50/50 MCC on val_select [95% CI]": f"{difference['difference']} "
        f"[{difference['ci95_low']}, {difference['ci95_high']}] {difference['verdict']}",
    }


def main() -> None:
    started = time.monotonic()
    config = params()
    if not CALIBRATION_JSON.exists():
        sys.exit(f"export failed: {CALIBRATION_JSON} not found: run the calibrate stage first (dvc repro calibrate)")
    try:
        metrics = export(config, BUNDLE, CALIBRATION_JSON, RAW, SPLIT, DVC_LOCK)
    except ExportError as error:
        sys.exit(f"export failed: {error}")
    finish("export", metrics, started)  # writes metrics/export.json
    finish_printed("export", headline(metrics), started)


if __name__ == "__main__":
    main()

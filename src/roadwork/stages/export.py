"""export: build the miner bundle (data/bundle) from the calibrated model, then evaluate it on
val_test, the only place (with reports) where val_test is read.

1. data/calibrate/calibration.json says which model (phase 1 or 4), its temperature T and its
   threshold t; the weights must be the ones whose logits were calibrated (sha256 checked).
2. ``build_bundle`` folds T and t into a 2-class head (the "Roadwork" probability is
   sigmoid((z - t) / T), > 0.5 iff z > t) and writes config.json, model.safetensors,
   model_card.json, manifest.json (+ model.onnx).
3. val_test, through the bundle:
   * the shipped output (our Predictor, single view, = the pipeline's preprocessing) at full
     size: MCC, accuracy, AUC, ECE, confusion matrix, bootstrap 95% intervals (MCC, accuracy);
     ROC / precision-recall / confusion-matrix plots (dvclive, dvclive/export);
   * single view vs multi-view (params.predict) at full size and at the validators' 224 x 224;
   * the validators' protocol through the stock miner's transformers pipeline
     (``roadwork.evaluate.protocol``): levels 0-3, class-balanced, seeded; the mix's expected
     reward is the headline ``protocol.reward`` of metrics/export.json.

Provenance recorded in the manifest: the DVC md5 of data/split (whose splits.csv pins every
image by sha256) and of the shipped model directory, *computed* here with DVC's own hashing
(``dvc_data``; the value dvc.lock records for the same content, so it is right whether or not the
stage runs under DVC), plus the values and md5 of the params sections that shaped the model;
data/raw's md5 is copied from dvc.lock when the lock has it.
"""

from __future__ import annotations

import hashlib
import sys
import time
from pathlib import Path

import numpy as np
import yaml

from roadwork.config import Params
from roadwork.io import dumps_json, read_csv, read_json, sha256_file, write_json
from roadwork.stages.common import DATA, METRICS, RAW, SPLIT, SPLITS_CSV, finish_printed, open_live, params

BUNDLE = DATA / "bundle"
CALIBRATION_JSON = DATA / "calibrate" / "calibration.json"
DVC_LOCK = Path("dvc.lock")
MODEL_SECTIONS = ("data", "dedup", "split", "model", "train", "threshold", "calibrate")
BATCH = 32


# ---------------------------------------------------------------------------------- provenance
def dvc_md5(path: Path) -> str:
    """The md5 DVC records for ``path`` in dvc.lock, computed with DVC's own hashing (dvc_data):
    md5 of a file's bytes; for a directory, md5 of the sorted JSON list of its entries + ".dir"."""
    import tempfile

    from dvc_data.hashfile.build import build
    from dvc_data.hashfile.db import HashFileDB
    from dvc_objects.fs.local import LocalFileSystem

    fs = LocalFileSystem()
    with tempfile.TemporaryDirectory() as scratch:
        _, _, obj = build(HashFileDB(fs, scratch), str(path), fs, "md5")
    return obj.hash_info.value


def _lock_md5(lock: dict, path: str) -> str | None:
    for stage in (lock.get("stages") or {}).values():
        for out in stage.get("outs") or []:
            if out.get("path") == path:
                return out.get("md5")
    return None


def provenance(config: Params, calibration: dict, lock_path: Path = DVC_LOCK) -> dict:
    lock = yaml.safe_load(lock_path.read_text()) if lock_path.exists() else {}
    model_dir = calibration["model_dir"]
    sections = [*MODEL_SECTIONS, *(("explora",) if calibration["model"] == "phase4" else ())]
    values = {name: getattr(config, name).model_dump(mode="json") for name in sections}
    out = {
        "hash": "dvc md5, computed with DVC's hashing (dvc_data); equals dvc.lock's value for the same content",
        SPLIT.as_posix(): dvc_md5(SPLIT),
        model_dir: dvc_md5(Path(model_dir)),
        "params": values,
        "params_md5": {name: hashlib.md5(dumps_json(v).encode()).hexdigest() for name, v in values.items()},
        "calibration": {k: calibration[k] for k in ("model", "temperature", "threshold_logit",
                                                    "threshold_probability", "model_sha256", "logits_sha256")},
    }
    raw = _lock_md5(lock, RAW.as_posix())
    if raw:
        out["data/raw (dvc.lock)"] = raw
    for path in (SPLIT.as_posix(), model_dir):
        recorded = _lock_md5(lock, path)
        if recorded is not None and recorded != out[path]:
            out.setdefault("differs_from_dvc_lock", []).append(path)
    return out


# ---------------------------------------------------------------------------------- helpers
def rounded(obj, digits: int = 6):
    if isinstance(obj, float):
        return round(obj, digits)
    if isinstance(obj, dict):
        return {k: rounded(v, digits) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [rounded(v, digits) for v in obj]
    return obj


def card_metrics(calibration: dict) -> dict:
    """What is known before the bundle exists (model card): selection and calibration, plus the
    val_test result of the saved logits at the folded threshold."""
    from roadwork.evaluate.metrics import binary_metrics
    from roadwork.evaluate.threshold_report import split_logits

    model_dir = Path(calibration["model_dir"])
    logits, labels = split_logits(model_dir / "logits.csv", "val_test")
    test = binary_metrics(labels, logits, calibration["threshold_logit"])
    score = calibration["selection"]["scores"][calibration["model"]]
    return rounded({
        "model": calibration["model"],
        "temperature": calibration["temperature"],
        "val_select": {"mcc": score["mcc"], "mcc_prior_0.5": score["mcc_target_prior"], "n": score["n"]},
        "val_test_saved_logits": {k: test[k] for k in ("mcc", "accuracy", "auc", "n", "n_pos")},
    })


def _summary(labels: np.ndarray, probs: np.ndarray) -> dict:
    from roadwork.evaluate.metrics import binary_metrics
    from roadwork.evaluate.protocol import balanced_metrics

    plain = binary_metrics(labels, probs, 0.5)
    out = {"mcc": plain["mcc"], "accuracy": plain["accuracy"]}
    if 0 < labels.sum() < labels.size:
        balanced = balanced_metrics(labels, probs)
        out.update({"mcc_prior_0.5": balanced["mcc"], "accuracy_prior_0.5": balanced["accuracy"]})
    return out


def score_val_test(bundle_dir: Path, config: Params, examples, device=None, progress: bool = True) -> dict:
    """Shipped probabilities (single view, full size) and single vs multi-view at full size and
    at the validators' 224 x 224, in one decoding pass over val_test."""
    from tqdm import tqdm

    from roadwork.evaluate.protocol import validator_resize
    from roadwork.predict import Predictor, load_image

    shipped = Predictor(bundle_dir, device=device)  # what the pipeline computes: single view, no TTA
    views = Predictor.from_params(bundle_dir, config.predict, device=device, model=shipped.model)
    n = len(examples)
    out = {key: np.zeros(n) for key in ("shipped", "full_single", "full_multi", "v224_single", "v224_multi")}
    for start in tqdm(range(0, n, BATCH), desc="val_test", unit="batch", disable=not progress):
        chunk = slice(start, min(n, start + BATCH))
        originals = [load_image(e.path) for e in examples[chunk]]
        small = [validator_resize(image) for image in originals]
        out["shipped"][chunk] = shipped.predict(originals)
        out["full_single"][chunk] = (views.predict(originals) if views.flip_tta else out["shipped"][chunk])
        out["full_multi"][chunk] = views.predict(originals, multiview=True)
        out["v224_single"][chunk] = views.predict(small)
        out["v224_multi"][chunk] = views.predict(small, multiview=True)
    return out


def multiview_report(labels: np.ndarray, scores: dict, config: Params) -> dict:
    report = {"settings": config.predict.model_dump()}
    for size, prefix in (("full_size", "full"), ("validator_224", "v224")):
        single = _summary(labels, scores[f"{prefix}_single"])
        multi = _summary(labels, scores[f"{prefix}_multi"])
        report[size] = {"single": single, "multi": multi, "mcc_gain": multi["mcc"] - single["mcc"],
                        "helps": bool(multi["mcc"] > single["mcc"])}
    return report


# ---------------------------------------------------------------------------------- the stage
def export(config: Params, bundle_dir: Path = BUNDLE, calibration_json: Path = CALIBRATION_JSON,
           live=None, device=None, progress: bool = True) -> dict:
    from roadwork.evaluate.protocol import evaluate_scores, load_pipeline, pipeline_scores, run_protocol
    from roadwork.export.bundle import build_bundle
    from roadwork.predict import load_image
    from roadwork.train.data import load_split

    import torch

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    calibration = read_json(calibration_json)
    model_dir = Path(calibration["model_dir"])
    if sha256_file(model_dir / "model.safetensors") != calibration["model_sha256"]:
        raise SystemExit(f"export failed: {model_dir / 'model.safetensors'} is not the model that was calibrated "
                         f"({calibration_json} records another sha256): run `dvc repro calibrate` first")
    settings = config.export
    manifest = build_bundle(model_dir, calibration["temperature"], calibration["threshold_logit"], bundle_dir,
                            model_name=settings.model_name, version=settings.version,
                            submitted_by=settings.submitted_by, metrics=card_metrics(calibration),
                            provenance=provenance(config, calibration), onnx=settings.onnx)

    examples = load_split(RAW, SPLITS_CSV, "val_test")
    labels = np.array([e.label for e in examples])
    scores = score_val_test(bundle_dir, config, examples, device=device, progress=progress)
    shipped = scores["shipped"]
    val_test = evaluate_scores(labels, shipped, n_boot=settings.bootstrap, seed=settings.protocol_seed,
                               n_bins=config.calibrate.n_bins)
    saved = {r["id"]: float(r["logit"]) for r in read_csv(model_dir / "logits.csv") if r["split"] == "val_test"}
    expected = np.array([saved[e.id] > calibration["threshold_logit"] for e in examples])
    val_test["agreement_with_saved_logits"] = float(np.mean((shipped > 0.5) == expected))

    if live is not None:
        live.log_sklearn_plot("roc", labels, shipped, name="roc", drop_intermediate=True)
        live.log_sklearn_plot("precision_recall", labels, shipped, name="precision_recall", drop_intermediate=True)
        live.log_sklearn_plot("confusion_matrix", labels, (shipped > 0.5).astype(int), name="confusion_matrix")

    pipe = load_pipeline(bundle_dir, device=device)
    protocol = run_protocol(lambda i: load_image(examples[i].path), labels,
                            lambda images: pipeline_scores(pipe, images, BATCH), settings.protocol_seed,
                            chunk=BATCH, progress=progress)
    protocol.pop("_probs")
    return rounded({
        "protocol": protocol,
        "val_test": val_test,
        "multiview": multiview_report(labels, scores, config),
        "bundle": {"model": calibration["model"], "temperature": calibration["temperature"],
                   "threshold_logit": calibration["threshold_logit"],
                   "threshold_probability": calibration["threshold_probability"],
                   "model_sha256": manifest["model_sha256"], "onnx": manifest.get("onnx") is not None},
    })


def main() -> None:
    started = time.monotonic()
    config = params()
    if not CALIBRATION_JSON.exists():
        sys.exit(f"export failed: {CALIBRATION_JSON} not found: run the calibrate stage first (dvc repro calibrate)")
    live = open_live("export")
    metrics = export(config, live=live)
    live.end()
    write_json(METRICS / "export.json", metrics)
    shown = {"protocol.reward": metrics["protocol"]["reward"],
             "protocol.reward_simulated": metrics["protocol"]["reward_simulated"],
             "protocol.levels": {k: {m: v[m] for m in ("mcc", "accuracy", "reward")}
                                 for k, v in metrics["protocol"]["levels"].items()},
             **{f"val_test.{m} [95% CI]": (f"{metrics['val_test'][m]} [{metrics['val_test'][m + '_ci95_low']}, "
                                           f"{metrics['val_test'][m + '_ci95_high']}]") for m in ("mcc", "accuracy")},
             "val_test.auc": metrics["val_test"]["auc"],
             "val_test.ece_positive_uniform": metrics["val_test"]["ece_positive_uniform"],
             "multiview.full_size.helps": metrics["multiview"]["full_size"]["helps"],
             "multiview.validator_224.helps": metrics["multiview"]["validator_224"]["helps"]}
    finish_printed("export", shown, started)


if __name__ == "__main__":
    main()

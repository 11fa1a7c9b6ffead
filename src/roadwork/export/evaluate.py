"""The export stage's logic (paths come from the caller): build the miner bundle from the
calibrated model, then evaluate it on val_test, the only place (with reports) where val_test is
read.

1. calibration.json says which model (phase 1 or 4), its temperature T and its threshold t; the
   weights must be the ones whose logits were calibrated (sha256 checked).
2. ``build_bundle`` folds T and t into a 2-class head (the "Roadwork" probability is
   sigmoid((z - t) / T), > 0.5 iff z > t) and writes config.json, model.safetensors,
   model_card.json, manifest.json (+ model.onnx).
3. val_test, through the bundle:
   * the shipped output (our Predictor, single view, = the pipeline's preprocessing) at full
     size: MCC, accuracy, AUC, ECE, confusion matrix, bootstrap 95% intervals (MCC, accuracy);
     ROC / precision-recall / confusion-matrix plots (dvclive);
   * single view vs multi-view (params.predict) at full size and at the validators' 224 x 224;
   * the validators' protocol through the stock miner's transformers pipeline
     (``roadwork.evaluate.protocol``): levels 0-3, class-balanced, ``export.protocol_draws``
     seeded augmentation draws; the mix's expected reward, averaged over the draws with its 95%
     interval, is the headline ``protocol.reward`` of metrics/export.json.

Provenance (``roadwork.export.provenance``) is recorded in the manifest.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from roadwork.config import Params
from roadwork.export.provenance import provenance
from roadwork.io import read_csv, read_json, sha256_file

BATCH = 32


class ExportError(Exception):
    """The inputs cannot make a bundle (e.g. weights that are not the calibrated ones)."""


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
def export(config: Params, bundle_dir: Path, calibration_json: Path, raw_dir: Path, split_dir: Path,
           lock_path: Path, live=None, device=None, progress: bool = True) -> dict:
    """Build the bundle in `bundle_dir` and return metrics/export.json's content. `split_dir` holds
    splits.csv; `lock_path` is dvc.lock (provenance)."""
    from roadwork.evaluate.protocol import evaluate_scores, load_pipeline, pipeline_scores, protocol_over_draws
    from roadwork.export.bundle import build_bundle
    from roadwork.predict import load_image
    from roadwork.data.examples import load_split

    import torch

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    calibration = read_json(calibration_json)
    model_dir = Path(calibration["model_dir"])
    if sha256_file(model_dir / "model.safetensors") != calibration["model_sha256"]:
        raise ExportError(f"{model_dir / 'model.safetensors'} is not the model that was calibrated "
                          f"({calibration_json} records another sha256): run `dvc repro calibrate` first")
    settings = config.export
    manifest = build_bundle(model_dir, calibration["temperature"], calibration["threshold_logit"], bundle_dir,
                            model_name=settings.model_name, version=settings.version,
                            submitted_by=settings.submitted_by, metrics=card_metrics(calibration),
                            provenance=provenance(config, calibration, raw_dir, split_dir, lock_path),
                            onnx=settings.onnx)

    examples = load_split(raw_dir, split_dir / "splits.csv", "val_test")
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
    protocol = protocol_over_draws(lambda i: load_image(examples[i].path), labels,
                                   lambda images: pipeline_scores(pipe, images, BATCH), settings.protocol_seed,
                                   settings.protocol_draws, chunk=BATCH, progress=progress)
    return rounded({
        "protocol": protocol,
        "val_test": val_test,
        "multiview": multiview_report(labels, scores, config),
        "bundle": {"model": calibration["model"], "temperature": calibration["temperature"],
                   "threshold_logit": calibration["threshold_logit"],
                   "threshold_probability": calibration["threshold_probability"],
                   "model_sha256": manifest["model_sha256"], "onnx": manifest.get("onnx") is not None},
    })


def headline(metrics: dict) -> dict:
    """The lines of metrics/export.json a person reads first (the stage's summary)."""
    val_test = metrics["val_test"]
    protocol = metrics["protocol"]
    return {f"protocol.reward [95% CI over {protocol['draws']} draws]":
            f"{protocol['reward']} [{protocol['reward_ci95_low']}, {protocol['reward_ci95_high']}]",
            "protocol.reward_simulated": metrics["protocol"]["reward_simulated"],
            "protocol.levels": {k: {m: v[m] for m in ("mcc", "accuracy", "reward")}
                                for k, v in metrics["protocol"]["levels"].items()},
            **{f"val_test.{m} [95% CI]": f"{val_test[m]} [{val_test[m + '_ci95_low']}, {val_test[m + '_ci95_high']}]"
               for m in ("mcc", "accuracy")},
            "val_test.auc": val_test["auc"],
            "val_test.ece_positive_uniform": val_test["ece_positive_uniform"],
            "multiview.full_size.helps": metrics["multiview"]["full_size"]["helps"],
            "multiview.validator_224.helps": metrics["multiview"]["validator_224"]["helps"]}

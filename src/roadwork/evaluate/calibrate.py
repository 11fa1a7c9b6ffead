"""Choose the model to ship, fit temperature scaling on its val_calib logits, and re-express its
decision threshold in the calibrated probability space (the calibrate stage's logic; paths come
from the caller).

Inputs are the saved logits only (``<model dir>/logits.csv``, computed from exactly the saved
weights) and each model's threshold decision (the threshold stage's data output); the model is
never run here.

* Model choice (``calibrate.model``): ``phase1``, ``phase4`` or ``best``. ``best`` compares
  phase 4 with phase 1 on the same val_select images, each at its own chosen threshold, by the
  MCC the thresholds were chosen for (re-weighted to the decisions' ``target_prior``, the
  validators' 50/50, when they have one, else the raw MCC), with a paired bootstrap of the
  difference (:func:`compare_models`, ``calibrate.bootstrap`` resamples, ``calibrate.seed``).
  Phase 4 is shipped only when the verdict is ``better`` (the whole 95% interval above 0); a
  difference the data cannot tell from 0, or a worse one, ships phase 1, the simpler model. The
  comparison is recorded beside the scores (``selection.phase4_vs_phase1``).
* Temperature T: NLL fit on the chosen model's **val_calib** logits only
  (:func:`roadwork.evaluate.calibration.fit_temperature`); val_select chose the threshold,
  val_test is only reported.
* The threshold t (a logit, from val_select) becomes p* = sigmoid(t / T) in the calibrated
  space; the export folds both into the head so that the shipped probability is
  sigmoid((z - t) / T) and the validators' 0.5 cut-off is the tuned one.

Outputs (written by :func:`write_outputs`): calibration.json (what the export needs) and the
reliability-diagram rows (before and after, val_calib and val_test).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from roadwork.config import CalibrateParams
from roadwork.evaluate.calibration import calibration_report, fit_temperature
from roadwork.evaluate.compare import BETTER, mcc_difference, summary
from roadwork.evaluate.metrics import confusion_at, mcc_from_counts, prior_sample_weights, prior_weights
from roadwork.evaluate.threshold_report import paired_split_logits, split_logits
from roadwork.io import atomic_path, dumps_json, read_json, sha256_file, write_csv

REPORT_SPLITS = ("val_calib", "val_test")
SERIES = tuple(f"{split}_{when}" for split in REPORT_SPLITS for when in ("before", "after"))
RELIABILITY_COLUMNS = ["split", "calibration", "bin", "bin_lower", "bin_upper", "count", "confidence", "accuracy",
                       *SERIES, "perfect"]
ECE_DEFINITIONS = {
    "ece_positive_uniform": "positive-class ECE (torchmetrics BinaryCalibrationError, l1): confidence = P(roadwork), "
                            "accuracy = label; n_bins equal-width bins over [0, 1]",
    "ece_positive_quantile": "positive-class ECE with n_bins equal-mass bins",
    "ece_top_label_uniform": "top-label ECE (Guo et al. 2017): confidence = max(p, 1 - p), accuracy = "
                             "1[(p > 0.5) == label]; n_bins equal-width bins over [0, 1]",
    "ece_top_label_quantile": "top-label ECE with n_bins equal-mass bins",
}


class CalibrationError(Exception):
    """The requested model cannot be calibrated (missing inputs); the message says what to do."""


@dataclass(frozen=True)
class Candidate:
    name: str
    model_dir: Path
    threshold_json: Path  # the threshold stage's decision for this model
    produced_by: str  # the dvc stages that write the inputs, for error messages

    @property
    def logits_csv(self) -> Path:
        return self.model_dir / "logits.csv"

    def missing(self) -> list[Path]:
        needed = (self.logits_csv, self.model_dir / "model.safetensors", self.model_dir / "model.json",
                  self.threshold_json)
        return [path for path in needed if not path.exists()]


def threshold_decision(candidate: Candidate) -> dict:
    """The threshold stage's decision for a model: ``threshold`` (a logit) and ``target_prior``."""
    report = read_json(candidate.threshold_json)
    if "threshold" not in report:
        raise CalibrationError(f"{candidate.threshold_json}: no 'threshold' key (expected a threshold decision)")
    return report


def selection_score(candidate: Candidate) -> dict:
    """val_select MCC of a model at its own chosen (logit) threshold, raw and at the target prior."""
    report = threshold_decision(candidate)
    threshold = float(report["threshold"])
    logits, labels = split_logits(candidate.logits_csv, "val_select")
    counts = confusion_at(logits, labels, threshold)
    score = {"threshold_logit": threshold, "n": int(labels.size), "mcc": float(mcc_from_counts(*counts))}
    target_prior = report.get("target_prior")
    score["target_prior"] = target_prior
    if target_prior is not None and 0 < labels.sum() < labels.size:
        w_pos, w_neg = prior_weights(labels, float(target_prior))
        score["mcc_target_prior"] = float(mcc_from_counts(counts.tp * w_pos, counts.fp * w_neg, counts.tn * w_neg,
                                                          counts.fn * w_pos))
    else:
        score["mcc_target_prior"] = None
    score["selection_mcc"] = score["mcc_target_prior"] if score["mcc_target_prior"] is not None else score["mcc"]
    return score


def compare_models(reference: Candidate, candidate: Candidate, split: str, *, n_boot: int, seed: int,
                   target_prior: float | None = None) -> dict:
    """MCC(candidate) - MCC(reference) on the same images of ``split``, each model deciding at its
    own chosen threshold from its saved logits, with the paired bootstrap 95% interval and verdict
    (:func:`roadwork.evaluate.compare.mcc_difference`). Both classes are weighted to
    ``target_prior`` (default: the threshold decisions' own, which must agree); the raw MCC when
    there is none. The result adds ``target_prior`` and both thresholds."""
    decisions = {c.name: threshold_decision(c) for c in (reference, candidate)}
    if target_prior is None:
        priors = {name: d.get("target_prior") for name, d in decisions.items()}
        if len(set(priors.values())) > 1:
            raise CalibrationError(f"{reference.threshold_json} and {candidate.threshold_json} were chosen for "
                                   f"different target priors {priors}: rerun the threshold stages (dvc repro)")
        target_prior = priors[reference.name]
    try:
        labels, reference_z, candidate_z = paired_split_logits(reference.logits_csv, candidate.logits_csv, split)
    except ValueError as error:
        raise CalibrationError(str(error)) from error
    both_classes = 0 < labels.sum() < labels.size
    weights = prior_sample_weights(labels, float(target_prior)) if target_prior is not None and both_classes else None
    thresholds = {name: float(d["threshold"]) for name, d in decisions.items()}
    result = mcc_difference(labels, reference_z > thresholds[reference.name], candidate_z > thresholds[candidate.name],
                            weights=weights, n_boot=n_boot, seed=seed)
    return {**result, "target_prior": target_prior if weights is not None else None,
            "threshold_logits": thresholds, "split": split}


def choose_model(choice: str, candidates: dict[str, Candidate], *, n_boot: int = 1000,
                 seed: int = 0) -> tuple[Candidate, dict[str, dict]]:
    """The candidate to ship, and the selection scores of every available candidate plus, for
    ``best``, each later candidate's comparison with the first (``<later>_vs_<first>``: the
    :data:`~roadwork.evaluate.compare.SUMMARY_KEYS` of :func:`compare_models` on val_select)."""
    if choice != "best":
        candidate = candidates[choice]
        missing = candidate.missing()
        if missing:
            raise CalibrationError(
                f"calibrate.model is {choice!r} but {', '.join(p.as_posix() for p in missing)} "
                f"{'does' if len(missing) == 1 else 'do'} not exist: run the {candidate.produced_by} stage(s) first "
                f"(dvc repro), or set calibrate.model to 'best' to use whichever model exists")
        return candidate, {choice: selection_score(candidate)}
    available = [c for c in candidates.values() if not c.missing()]
    if not available:
        wanted = "; ".join(f"{c.name}: {', '.join(p.as_posix() for p in c.missing())}" for c in candidates.values())
        raise CalibrationError(f"calibrate.model is 'best' but no trained model is complete ({wanted} missing): "
                               "run the training and threshold stages first (dvc repro)")
    scores = {c.name: selection_score(c) for c in available}
    # candidates are ordered phase1, phase4: a later model replaces the first (the simpler one)
    # only when it is distinguishably better; among several such, the largest difference wins
    first, best, best_difference = available[0], available[0], 0.0
    for candidate in available[1:]:
        comparison = summary(compare_models(first, candidate, "val_select", n_boot=n_boot, seed=seed))
        scores[f"{candidate.name}_vs_{first.name}"] = comparison
        if comparison["verdict"] == BETTER and comparison["difference"] > best_difference:
            best, best_difference = candidate, comparison["difference"]
    return best, scores


def reliability_rows(split: str, report: dict) -> list[dict]:
    """Long-format rows for the reliability diagram of one split, before and after scaling.

    Each series (``<split>_<before|after>``) has its own y column, NaN on the other series' rows,
    so that a DVC plot with ``x: confidence`` draws one coloured series per column; ``perfect``
    (= confidence) draws the diagonal."""
    rows = []
    for when in ("before", "after"):
        for row in report[when]["reliability"]:
            out = {"split": split, "calibration": when, **row}
            for series in SERIES:
                out[series] = row["accuracy"] if series == f"{split}_{when}" else float("nan")
            out["perfect"] = row["confidence"]
            rows.append(out)
    return rows


def _summary(report: dict) -> dict:
    out = {"n": report["n"], "n_pos": report["n_pos"]}
    for when in ("before", "after"):
        out[when] = {k: round(v, 6) for k, v in report[when].items() if k not in ("reliability", "temperature")}
    return out


def calibrate(settings: CalibrateParams, candidates: dict[str, Candidate]) -> tuple[dict, dict, list[dict]]:
    """(calibration.json content, metrics, reliability rows) for the chosen model."""
    chosen, scores = choose_model(settings.model, candidates, n_boot=settings.bootstrap, seed=settings.seed)
    logits, labels = split_logits(chosen.logits_csv, "val_calib")
    temperature = fit_temperature(logits, labels)
    threshold = scores[chosen.name]["threshold_logit"]
    threshold_probability = float(1.0 / (1.0 + np.exp(-threshold / temperature)))

    reports, rows = {}, []
    for split in REPORT_SPLITS:
        split_z, split_y = (logits, labels) if split == "val_calib" else split_logits(chosen.logits_csv, split)
        reports[split] = calibration_report(split_y, split_z, temperature, settings.n_bins)
        rows += reliability_rows(split, reports[split])

    calibration = {
        "model": chosen.name,
        "model_dir": chosen.model_dir.as_posix(),
        "model_sha256": sha256_file(chosen.model_dir / "model.safetensors"),
        "logits_sha256": sha256_file(chosen.logits_csv),
        "temperature": temperature,
        "threshold_logit": threshold,
        "threshold_probability": threshold_probability,
        "fitted_on": {"temperature": "val_calib", "threshold": "val_select"},
        "n_val_calib": int(labels.size),
        "selection": {"rule": settings.model, "scores": scores},
        "ece_definitions": ECE_DEFINITIONS,
        "n_bins": settings.n_bins,
    }
    metrics = {
        "model": chosen.name,
        "temperature": round(temperature, 6),
        "threshold_logit": round(threshold, 6),
        "threshold_probability": round(threshold_probability, 6),
        "selection": {name: {k: (round(v, 6) if isinstance(v, float) else v) for k, v in s.items()}
                      for name, s in scores.items()},
        **{split: _summary(report) for split, report in reports.items()},
    }
    return calibration, metrics, rows


def write_outputs(calibration: dict, rows: list[dict], out_dir: Path, reliability_csv: Path) -> None:
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        (tmp / "calibration.json").write_text(dumps_json(calibration))
    write_csv(reliability_csv, rows, RELIABILITY_COLUMNS)

"""calibrate: choose the model to ship (phase 1 or phase 4), fit the probability it ships on its val_calib
logits under the threshold decision's target prior, and report calibration and decision figures at both
priors.

Inputs are the saved logits only (``<model dir>/logits.csv``, computed from exactly the saved weights) and
each model's threshold decision (the threshold stage's data output); the model is never run here.

* Model choice (``calibrate.model``): ``phase1``, ``phase4`` or ``best`` (:mod:`roadwork.evaluate.model_choice`:
  phase 4 is shipped only when distinguishably better than phase 1 on val_select, ``calibrate.bootstrap``
  resamples, ``calibrate.seed``). The comparison is recorded beside the scores (``selection.phase4_vs_phase1``).
* Calibration map, fitted on the chosen model's **val_calib** logits only, every image weighted so that the
  classes have the decision's ``target_prior`` (``threshold.target_prior``, the validators' 50/50 stream;
  :func:`~roadwork.evaluate.metrics.prior_sample_weights`): ``temperature`` or ``temperature_bias``, by the
  rule of :mod:`roadwork.evaluate.map_choice` (the shipped probability crosses 0.5 exactly at the bundle's
  decision); ``conflict`` reports what each choice costs the other. Only val_calib and val_select decide.
* val_test is only reported: ECE before (the network's sigmoid(z)) and after (the shipped map) at the raw prior
  and re-weighted to the target prior, and the paired bootstrap of ECE(shipped) - ECE(raw) at both priors
  (:func:`~roadwork.evaluate.calibration.paired_ece_difference`). The headline figure is the positive-class ECE
  with ``calibrate.n_bins`` equal-width bins on val_test under the target prior, aimed below :data:`ECE_AIM`.

Outputs (written by :func:`write_outputs`): calibration.json (what the export needs: T and t, which the export
folds into the head as sigmoid((z - t) / T)) and the reliability-diagram rows (before and after, val_calib and
val_test, raw and target prior).
"""

import sys
import time
from pathlib import Path

import numpy as np

from roadwork.config import CalibrateParams
from roadwork.evaluate import per_kind
from roadwork.evaluate.calibration import IDENTITY, calibration_report, ece_floor, paired_ece_difference
from roadwork.evaluate.logits import split_logits
from roadwork.evaluate.map_choice import BOOT_SEED, N_BOOT, choose_map, conflict_report, fit_maps
from roadwork.evaluate.metrics import prior_sample_weights
from roadwork.evaluate.model_choice import CalibrationError, Candidate, choose_model
from roadwork.io import atomic_path, dumps_json, read_json, sha256_file, write_csv
from roadwork.stages.common import CALIBRATE, MODELS, RELIABILITY_CSV, finish, params, threshold_json

REPORT_SPLITS = ("val_calib", "val_test")
PRIORS = ("raw", "target")  # the split's own class mix; re-weighted to the decision's target_prior
SERIES = tuple(f"{split}_{prior}_{when}" for prior in PRIORS for split in REPORT_SPLITS for when in ("before", "after"))
RELIABILITY_COLUMNS = [
    "split",
    "prior",
    "calibration",
    "bin",
    "bin_lower",
    "bin_upper",
    "count",
    "weight",
    "confidence",
    "accuracy",
    *SERIES,
    "perfect",
]
ECE_DEFINITIONS = {
    "ece_positive_uniform": "positive-class ECE (torchmetrics BinaryCalibrationError, l1): confidence = P(roadwork), "
    "accuracy = label; n_bins equal-width bins over [0, 1] (the headline definition)",
    "ece_positive_quantile": "positive-class ECE with n_bins equal-mass bins",
    "ece_top_label_uniform": "top-label ECE (Guo et al. 2017): confidence = max(p, 1 - p), accuracy = "
    "1[(p > 0.5) == label]; n_bins equal-width bins over [0, 1]",
    "ece_top_label_quantile": "top-label ECE with n_bins equal-mass bins",
    "weights": "under a prior, each image weighs target_prior / p (roadwork) or (1 - target_prior) / (1 - p) (none), "
    "p the split's positive rate; bins take weighted means and their share of the weight",
}

HEADLINE = "ece_positive_uniform"
ECE_AIM = 0.03  # the seed's aim for the headline ECE on val_test under the target prior


def _decision(candidate: Candidate) -> tuple[float, float]:
    """(threshold logit t, target prior) of the candidate's threshold decision."""
    decision = read_json(candidate.threshold_json)
    missing = [key for key in ("threshold", "target_prior") if decision.get(key) is None]
    if missing:
        raise CalibrationError(
            f"{candidate.threshold_json}: no {' or '.join(map(repr, missing))} (expected the "
            f"threshold stage's decision with threshold.target_prior): run `dvc repro` for "
            f"{candidate.produced_by}"
        )
    return float(decision["threshold"]), float(decision["target_prior"])


def _prior_label(target_prior: float) -> str:
    return f"prior_{target_prior:g}"


def _rounded(tree):
    if isinstance(tree, dict):
        return {k: _rounded(v) for k, v in tree.items()}
    if isinstance(tree, float):
        return round(tree, 6)
    return tree


def reliability_rows(split: str, prior: str, report: dict) -> list[dict]:
    """Long-format rows for the reliability diagram of one split at one prior (``raw`` or
    ``target``), before and after calibration.

    Each series (``<split>_<prior>_<before|after>``) has its own y column, NaN on the other series'
    rows, so that a DVC plot with ``x: confidence`` draws one coloured series per column;
    ``perfect`` (= confidence) draws the diagonal."""
    rows = []
    for when in ("before", "after"):
        own = f"{split}_{prior}_{when}"
        for row in report[when]["reliability"]:
            out = {"split": split, "prior": prior, "calibration": when, **row}
            for series in SERIES:
                out[series] = row["accuracy"] if series == own else float("nan")
            out["perfect"] = row["confidence"]
            rows.append(out)
    return rows


def _summary(report: dict) -> dict:
    return {when: {k: v for k, v in report[when].items() if k != "reliability"} for when in ("before", "after")}


def _weights(data: dict, split: str, target_prior: float, source: Path) -> np.ndarray:
    try:
        return prior_sample_weights(data[split][1], target_prior)
    except ValueError as error:
        raise CalibrationError(f"{source}: {split}: {error}") from error


def calibrate(
    settings: CalibrateParams,
    candidates: dict[str, Candidate],
    shares: dict[str, float] | None = None,
    backend: str | None = None,
) -> tuple[dict, dict, list[dict]]:
    """(calibration.json content, metrics, reliability rows) for the chosen model. Fitted on real images only;
    with ``shares`` (the validators' mix) and the chosen model's logits_synthetic.csv, the metrics also hold
    ``val_test_by_kind``: ECE of the shipped probability and MCC at its decision for real, i2i, t2i and the mix."""
    chosen, scores = choose_model(settings.model, candidates, n_boot=settings.bootstrap, seed=settings.seed)
    threshold, target_prior = _decision(chosen)
    prior = _prior_label(target_prior)
    data = {split: split_logits(chosen.logits_csv, split) for split in ("val_select", *REPORT_SPLITS)}
    weights = {split: _weights(data, split, target_prior, chosen.logits_csv) for split in data}

    logits, labels = data["val_calib"]
    maps, calibration_map = fit_maps(logits, labels, threshold=threshold, sample_weight=weights["val_calib"])
    conflict = {
        "present": calibration_map["better_cv"] != "temperature",
        **conflict_report(maps, data, weights, threshold=threshold, n_bins=settings.n_bins),
    }
    kind, why = choose_map(calibration_map["better_cv"], conflict)
    calibration_map.update(shipped=kind, why=why)
    shipped = maps[kind]
    decision = threshold if kind == "temperature" else shipped.crossing_logit  # where the shipped map crosses 0.5

    reports, rows = {}, []
    for split in REPORT_SPLITS:
        z, y = data[split]
        reports[split] = {"n": int(y.size), "n_pos": int(y.sum())}
        for label, row_prior, w in (("raw_prior", "raw", None), (prior, "target", weights[split])):
            report = calibration_report(y, z, shipped, settings.n_bins, sample_weight=w)
            reports[split][label] = _summary(report)
            rows += reliability_rows(split, row_prior, report)

    z, y = data["val_test"]
    paired = {}
    for label, at_prior in (("raw_prior", None), (prior, target_prior)):
        result = paired_ece_difference(
            y,
            IDENTITY.probs(z),
            shipped.probs(z),
            n_bins=settings.n_bins,
            target_prior=at_prior,
            n_boot=N_BOOT,
            seed=BOOT_SEED,
        )
        paired[label] = {k: result[k] for k in ("difference", "ci95_low", "ci95_high", "verdict", "n", "n_boot")}
    headline = reports["val_test"][prior]["after"][HEADLINE]
    floor = ece_floor(shipped.probs(z), float(y.mean()), target_prior, settings.n_bins, seed=BOOT_SEED)

    temperature = shipped.temperature
    threshold_probability = float(shipped.probs(decision))  # 0.5: the shipped map crosses 0.5 at its decision
    calibration = {
        "model": chosen.name,
        "model_dir": chosen.model_dir.as_posix(),
        "model_sha256": sha256_file(chosen.model_dir / "model.safetensors"),
        "logits_sha256": sha256_file(chosen.logits_csv),
        "temperature": temperature,
        "threshold_logit": decision,
        "threshold_probability": threshold_probability,
        "tuned_threshold_logit": threshold,
        "target_prior": target_prior,
        "shipped_probability": "sigmoid((z - threshold_logit) / temperature)",
        "fitted_on": {
            "temperature": "val_calib",
            "threshold": "val_select" if kind == "temperature" else "val_calib (calibrated crossing)",
        },
        "n_val_calib": int(labels.size),
        "calibration_map": calibration_map,
        "selection": {"rule": settings.model, "scores": scores},
        "ece_definitions": ECE_DEFINITIONS,
        "n_bins": settings.n_bins,
    }
    metrics = _rounded(
        {
            "model": chosen.name,
            "temperature": temperature,
            "threshold_logit": decision,
            "threshold_probability": threshold_probability,
            "tuned_threshold_logit": threshold,
            "target_prior": target_prior,
            "headline": {
                "ece": headline,
                "aim": ECE_AIM,
                "meets_aim": bool(headline < ECE_AIM),
                "floor_mean": floor["mean"],
                "floor_p95": floor["p95"],
                "floor": "the same ECE of a perfectly calibrated probability on val_test's images and weights "
                f"(labels drawn from the shipped probability, {floor['n_sim']} draws): mean and 95th "
                "percentile; an ECE under floor_p95 is what estimation noise alone gives",
                "what": f"positive-class ECE, {settings.n_bins} equal-width bins, of the shipped probability "
                f"on val_test re-weighted to the target prior (val_test.{prior}.after.{HEADLINE})",
            },
            "calibration_map": calibration_map,
            "conflict": conflict,
            "ece_shipped_minus_raw": paired,
            "selection": scores,
            **reports,
        }
    )
    if shares is not None and (chosen.model_dir / per_kind.SYNTHETIC_LOGITS).is_file():
        z, y, kinds = per_kind.read_kinds(chosen.model_dir, "val_test")
        boot = {"n_boot": settings.bootstrap, "seed": settings.seed}
        metrics["val_test_by_kind"] = per_kind.label(
            {
                "ece": per_kind.report(
                    per_kind.ece_statistic(shipped.probs, settings.n_bins), y, z, kinds, shares, target_prior, **boot
                ),
                "mcc": per_kind.report(per_kind.mcc_statistic(decision), y, z, kinds, shares, target_prior, **boot),
            },
            backend,
        )
    return calibration, metrics, rows


def write_outputs(calibration: dict, rows: list[dict], out_dir: Path, reliability_csv: Path) -> None:
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        (tmp / "calibration.json").write_text(dumps_json(calibration))
    write_csv(reliability_csv, rows, RELIABILITY_COLUMNS)


PRODUCED_BY = {"phase1": "train_phase1 and threshold@phase1", "phase4": "explora and threshold@phase4"}


def candidates(root: Path = Path(".")) -> dict[str, Candidate]:
    """The trained models in pipeline order (ties in the choice go to the earlier one)."""
    return {
        name: Candidate(name, root / path, root / threshold_json(name), PRODUCED_BY[name])
        for name, path in MODELS.items()
    }


def main() -> None:
    started = time.monotonic()
    try:
        config = params()
        shares = per_kind.kind_shares(config.synthesize.fake_prob, config.synthesize.i2i_share)
        calibration, metrics, rows = calibrate(config.calibrate, candidates(), shares, config.synthesize.backend)
    except CalibrationError as error:
        sys.exit(f"calibrate failed: {error}")
    write_outputs(calibration, rows, CALIBRATE, RELIABILITY_CSV)
    finish("calibrate", metrics, started)


if __name__ == "__main__":
    main()

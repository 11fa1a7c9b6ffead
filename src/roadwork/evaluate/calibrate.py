"""Choose the model to ship, fit its calibration map on its val_calib logits under the
validators' prior, and report calibration and decision figures (the calibrate stage's logic;
paths come from the caller).

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
* Calibration map, fitted on the chosen model's **val_calib** logits only, every image weighted
  so that the classes have the decision's ``target_prior`` (``threshold.target_prior``, the
  validators' 50/50 stream; :func:`~roadwork.evaluate.metrics.prior_sample_weights`). Two maps
  (:mod:`roadwork.evaluate.calibration`): ``temperature``, sigmoid((z - t) / T) with t the tuned
  threshold (a logit, from val_select), and ``temperature_bias``, sigmoid(a z + b) with both
  free. Their held-out NLL under the prior (seeded stratified k-fold on val_calib) says which
  describes the data better: ``temperature_bias`` only when its NLL is lower by more than one
  standard error (it has one parameter more; :func:`~roadwork.evaluate.calibration.compare_maps`).
* Rule (:data:`RULE`, :func:`choose_map`): the shipped probability crosses 0.5 exactly at the
  bundle's decision. ``temperature`` keeps the tuned threshold t as the decision. When
  ``temperature_bias`` describes val_calib better, the two cannot both hold: the calibrated map
  is shipped (its crossing z* becomes the decision) unless z > z* decides distinguishably worse
  than z > t in 50/50 MCC on val_select; then the decision wins. ``conflict`` reports what each
  choice costs the other: the calibration gap on val_test (ECE and NLL under the prior of both
  maps) and the decision change (50/50-weighted MCC at z* minus at t, on val_select and val_test,
  paired bootstrap). Only val_calib and val_select decide; val_test is reported.
* val_test is only reported: ECE before (the network's sigmoid(z)) and after (the shipped map)
  at the raw prior and re-weighted to the target prior, and the paired bootstrap of
  ECE(shipped) - ECE(raw) at both priors (:func:`~roadwork.evaluate.calibration.paired_ece_difference`).
  The headline figure is the positive-class ECE with ``calibrate.n_bins`` equal-width bins on
  val_test under the target prior, aimed below :data:`ECE_AIM`.

Outputs (written by :func:`write_outputs`): calibration.json (what the export needs: T and t,
which the export folds into the head as sigmoid((z - t) / T)) and the reliability-diagram rows
(before and after, val_calib and val_test, raw and target prior).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from roadwork.config import CalibrateParams
from roadwork.evaluate import per_kind
from roadwork.evaluate.calibration import (
    IDENTITY,
    MAP_KINDS,
    LogisticMap,
    calibration_report,
    compare_maps,
    ece,
    ece_floor,
    fit_map,
    nll_from_logits,
    paired_ece_difference,
)
from roadwork.evaluate.compare import BETTER, WORSE, mcc_difference, summary
from roadwork.evaluate.metrics import confusion_at, mcc_at, mcc_from_counts, prior_sample_weights, prior_weights
from roadwork.evaluate.threshold_report import paired_split_logits, split_logits
from roadwork.io import atomic_path, dumps_json, read_json, sha256_file, write_csv

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
RULE = (
    "the bundle's probability crosses 0.5 at its decision. 'temperature' (sigmoid((z - t) / T), t the threshold "
    "tuned on val_select) is shipped unless 'temperature_bias' (sigmoid(a z + b), crossing at z* = -b/a) describes "
    "val_calib better under the prior (held-out NLL lower by more than one standard error) and its decision "
    "z > z* is not distinguishably worse than z > t in 50/50 MCC on val_select (paired bootstrap): then the "
    "calibrated map is shipped and z* becomes the decision (the tuned t is one estimate among equals there, "
    "and at the prior the calibrated crossing also maximises accuracy, half of the validators' reward)"
)
CV_FOLDS = 5  # stratified folds on val_calib for the held-out NLL of both maps
CV_SEED = 0
N_BOOT = 1000  # paired bootstrap resamples (ECE shipped vs raw; decision of the two maps)
BOOT_SEED = 0
HEADLINE = "ece_positive_uniform"
ECE_AIM = 0.03  # the seed's aim for the headline ECE on val_test under the target prior


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
        needed = (
            self.logits_csv,
            self.model_dir / "model.safetensors",
            self.model_dir / "model.json",
            self.threshold_json,
        )
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
        score["mcc_target_prior"] = float(
            mcc_from_counts(counts.tp * w_pos, counts.fp * w_neg, counts.tn * w_neg, counts.fn * w_pos)
        )
    else:
        score["mcc_target_prior"] = None
    score["selection_mcc"] = score["mcc_target_prior"] if score["mcc_target_prior"] is not None else score["mcc"]
    return score


def compare_models(
    reference: Candidate, candidate: Candidate, split: str, *, n_boot: int, seed: int, target_prior: float | None = None
) -> dict:
    """MCC(candidate) - MCC(reference) on the same images of ``split``, each model deciding at its
    own chosen threshold from its saved logits, with the paired bootstrap 95% interval and verdict
    (:func:`roadwork.evaluate.compare.mcc_difference`). Both classes are weighted to
    ``target_prior`` (default: the threshold decisions' own, which must agree); the raw MCC when
    there is none. The result adds ``target_prior`` and both thresholds."""
    decisions = {c.name: threshold_decision(c) for c in (reference, candidate)}
    if target_prior is None:
        priors = {name: d.get("target_prior") for name, d in decisions.items()}
        if len(set(priors.values())) > 1:
            raise CalibrationError(
                f"{reference.threshold_json} and {candidate.threshold_json} were chosen for "
                f"different target priors {priors}: rerun the threshold stages (dvc repro)"
            )
        target_prior = priors[reference.name]
    try:
        labels, reference_z, candidate_z = paired_split_logits(reference.logits_csv, candidate.logits_csv, split)
    except ValueError as error:
        raise CalibrationError(str(error)) from error
    both_classes = 0 < labels.sum() < labels.size
    weights = prior_sample_weights(labels, float(target_prior)) if target_prior is not None and both_classes else None
    thresholds = {name: float(d["threshold"]) for name, d in decisions.items()}
    result = mcc_difference(
        labels,
        reference_z > thresholds[reference.name],
        candidate_z > thresholds[candidate.name],
        weights=weights,
        n_boot=n_boot,
        seed=seed,
    )
    return {
        **result,
        "target_prior": target_prior if weights is not None else None,
        "threshold_logits": thresholds,
        "split": split,
    }


def choose_model(
    choice: str, candidates: dict[str, Candidate], *, n_boot: int = 1000, seed: int = 0
) -> tuple[Candidate, dict[str, dict]]:
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
                f"(dvc repro), or set calibrate.model to 'best' to use whichever model exists"
            )
        return candidate, {choice: selection_score(candidate)}
    available = [c for c in candidates.values() if not c.missing()]
    if not available:
        wanted = "; ".join(f"{c.name}: {', '.join(p.as_posix() for p in c.missing())}" for c in candidates.values())
        raise CalibrationError(
            f"calibrate.model is 'best' but no trained model is complete ({wanted} missing): "
            "run the training and threshold stages first (dvc repro)"
        )
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


def fit_maps(logits, labels, *, threshold: float, sample_weight) -> tuple[dict[str, LogisticMap], dict]:
    """Both maps fitted on (val_calib) logits under ``sample_weight``, and their report: parameters,
    crossing logit, in-sample and cross-validated weighted NLL, and which describes the data
    better (:func:`~roadwork.evaluate.calibration.compare_maps`)."""
    maps = {kind: fit_map(kind, logits, labels, threshold=threshold, sample_weight=sample_weight) for kind in MAP_KINDS}
    cv = compare_maps(logits, labels, threshold=threshold, sample_weight=sample_weight, folds=CV_FOLDS, seed=CV_SEED)
    report = {
        kind: {
            "scale": mapping.scale,
            "bias": mapping.bias,
            "temperature": mapping.temperature,
            "crossing_logit": mapping.crossing_logit,
            "nll_in_sample": nll_from_logits(labels, mapping.logits(logits), sample_weight),
            "nll_cv": cv["nll_cv"][kind],
        }
        for kind, mapping in maps.items()
    }
    return maps, {
        "rule": RULE,
        "better_cv": cv["better"],
        "nll_cv_difference": cv["nll_cv_difference"],
        "nll_cv_standard_error": cv["standard_error"],
        "cv_folds": CV_FOLDS,
        "cv_seed": CV_SEED,
        **report,
    }


def conflict_report(maps: dict[str, LogisticMap], data: dict, weights: dict, *, threshold: float, n_bins: int) -> dict:
    """The two maps side by side: ``temperature`` (crosses 0.5 at the tuned threshold t) and
    ``temperature_bias`` (calibrated, crosses at z*). On val_test under the prior, ECE and NLL of
    both (``*_gap`` = temperature minus temperature_bias: how much calibration the tuned decision
    costs); on val_select and val_test, the 50/50-weighted MCC of the decision z > z* minus z > t
    with a paired bootstrap interval (how much decision the calibration costs)."""
    tuned, calibrated = maps["temperature"], maps["temperature_bias"]
    z, y = data["val_test"]
    w = weights["val_test"]
    calibration = {}
    for name, measure in (
        ("ece", lambda m: ece(y, m.probs(z), n_bins, "uniform", "positive", w)),
        ("nll", lambda m: nll_from_logits(y, m.logits(z), w)),
    ):
        ours, theirs = measure(tuned), measure(calibrated)
        calibration.update(
            {f"{name}_temperature": ours, f"{name}_temperature_bias": theirs, f"{name}_gap": ours - theirs}
        )
    decision = {}
    for split in ("val_select", "val_test"):
        z, y = data[split]
        at_t, at_crossing = z > threshold, calibrated.decisions(z)
        diff = mcc_difference(y, at_t, at_crossing, weights=weights[split], n_boot=N_BOOT, seed=BOOT_SEED)
        decision[split] = {
            "mcc_at_tuned_threshold": mcc_at(at_t, y, 0.5, weights[split]),
            "mcc_at_calibrated_crossing": mcc_at(at_crossing, y, 0.5, weights[split]),
            "decisions_changed": int(np.sum(at_t != at_crossing)),
            **{k: diff[k] for k in ("difference", "ci95_low", "ci95_high", "verdict")},
        }
    return {
        "tuned_threshold_logit": threshold,
        "calibrated_crossing_logit": calibrated.crossing_logit,
        "val_test_calibration": calibration,
        "decision": decision,
    }


def choose_map(better_cv: str, conflict: dict) -> tuple[str, str]:
    """(the map to ship, why), by :data:`RULE`; only val_calib and val_select decide."""
    if better_cv != "temperature_bias":
        return "temperature", "temperature alone describes val_calib as well: the tuned threshold stays the decision"
    if conflict["decision"]["val_select"]["verdict"] == WORSE:
        return "temperature", (
            "the calibrated crossing decides distinguishably worse on val_select: the decision "
            "wins, and the shipped probability misses calibration by val_test_calibration.ece_gap"
        )
    return "temperature_bias", (
        "calibrated under the prior, and its crossing decides no distinguishably worse on "
        "val_select (decision.val_select): the crossing becomes the decision"
    )


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

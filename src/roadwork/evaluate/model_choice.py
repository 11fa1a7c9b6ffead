"""Which trained model to ship: each candidate scored on val_select at its own threshold decision (the
threshold stage's data output), and two candidates compared on the same images by the paired bootstrap of
their MCC difference (:func:`roadwork.evaluate.compare.mcc_difference`).

Inputs are the saved logits only (``<model dir>/logits.csv``, computed from exactly the saved weights) and
each model's threshold decision; the model is never run here.

``best`` compares each later candidate (phase 4) with the first (phase 1) on val_select, each at its own
chosen threshold, by the MCC the thresholds were chosen for (re-weighted to the decisions' ``target_prior``,
the validators' 50/50, when they have one, else the raw MCC). A later candidate is shipped only when the
verdict is ``better`` (the whole 95% interval above 0); a difference the data cannot tell from 0, or a worse
one, ships the first, the simpler model.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from roadwork.evaluate.compare import BETTER, mcc_difference, summary
from roadwork.evaluate.logits import paired_split_logits, split_logits
from roadwork.evaluate.metrics import confusion_at, mcc_from_counts, prior_sample_weights, prior_weights
from roadwork.io import read_json


class CalibrationError(Exception):
    """The requested model cannot be calibrated (missing inputs); the message says what to do."""


@dataclass(frozen=True)
class Candidate:
    """A trained model that may be shipped: its model directory and its threshold decision."""

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

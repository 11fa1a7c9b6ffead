"""Which calibration map to ship, and what it costs the decision.

Two maps (:mod:`roadwork.evaluate.calibration`) are fitted on a model's val_calib logits, every image
weighted so that the classes have the decision's target prior: ``temperature``, sigmoid((z - t) / T) with t
the tuned threshold (a logit, from val_select), and ``temperature_bias``, sigmoid(a z + b) with both free.
Their held-out NLL under the prior (seeded stratified k-fold on val_calib) says which describes the data
better: ``temperature_bias`` only when its NLL is lower by more than one standard error (it has one parameter
more; :func:`~roadwork.evaluate.calibration.compare_maps`).

Rule (:data:`RULE`, :func:`choose_map`): the shipped probability crosses 0.5 exactly at the bundle's decision.
``temperature`` keeps the tuned threshold t as the decision. When ``temperature_bias`` describes val_calib
better, the two cannot both hold: the calibrated map is shipped (its crossing z* becomes the decision) unless
z > z* decides distinguishably worse than z > t in 50/50 MCC on val_select; then the decision wins.
:func:`conflict_report` says what each choice costs the other: the calibration gap on val_test (ECE and NLL
under the prior of both maps) and the decision change (50/50-weighted MCC at z* minus at t, on val_select and
val_test, paired bootstrap). Only val_calib and val_select decide; val_test is reported.
"""

from __future__ import annotations

import numpy as np

from roadwork.evaluate.calibration import MAP_KINDS, LogisticMap, compare_maps, ece, fit_map, nll_from_logits
from roadwork.evaluate.compare import WORSE, mcc_difference
from roadwork.evaluate.metrics import mcc_at

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

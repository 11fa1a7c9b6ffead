"""Multi-view must earn its place: its own decision threshold, and a paired comparison with the
single view, decided on val_select (the export stage); val_test only reports it (the evaluate stage).

The single view's threshold is folded into the bundle's head (its probability is > 0.5 exactly
when our tuned decision is roadwork). The multi-view aggregate (mean of the top-k view
probabilities) is shifted upward by the top-k, so it gets its own threshold ``tau``: the project's
exact MCC sweep (:func:`roadwork.evaluate.threshold.best_threshold`) on val_select, re-weighted to
the validators' 50/50 prior, in probability space. The detector folds it the same way
(``sigmoid(logit(a) - logit(tau))``, :func:`roadwork.miner.detector.fold_threshold`).

The decision uses val_select only, cross-fitted so that the threshold is never judged on the images
it was fitted on: val_select is cut into ``folds`` class-stratified folds (seeded); each fold's
multi-view decisions use the threshold fitted on the other folds. The two are then compared on
every val_select image with a *paired* percentile bootstrap of the difference (cross-fitted
multi-view minus single view) of the class-balanced MCC (each class weighted to half the stream,
as the validators draw labels). The rule: multi-view is shipped only when the whole 95% interval
lies above 0. The single view's threshold was fitted on val_select too (by the threshold stage, on
the full-size saved logits), so the comparison leans, if anything, towards the single view, the
default. The shipped ``tau`` is the fit on all of val_select.

:func:`multiview_report` gives the same comparison on another split (val_test, report only) at
the shipped thresholds.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from roadwork.evaluate.compare import mcc_difference
from roadwork.evaluate.metrics import mcc_at, prior_sample_weights
from roadwork.evaluate.threshold import best_threshold

FOLDS = 5
RULE = (
    "multi-view is used only when the paired bootstrap 95% interval of (multi-view minus single-view) "
    "class-balanced MCC on val_select lies above 0, the multi-view threshold cross-fitted "
    "(each of {folds} class-stratified folds decided at the threshold fitted on the others); "
    "the shipped multi-view threshold is fitted on all of val_select; val_test is not read"
)


def _mcc(y, pred, w) -> float:
    return mcc_at(pred, y, 0.5, sample_weight=w)


def fit_multiview_threshold(labels, multi, target_prior: float = 0.5) -> tuple[float, dict]:
    """(tau, the chosen fit): the MCC-optimal threshold of the multi-view aggregate, re-weighted to
    ``target_prior`` (the raw fit when the labels hold one class), clipped into (0, 1)."""
    fit = best_threshold(
        np.asarray(multi, dtype=np.float64).ravel(),
        np.asarray(labels).astype(int).ravel(),
        target_prior,
        default_threshold=0.5,
    )
    chosen = fit["reweighted"] or fit["raw"]
    tau = float(np.clip(chosen["threshold"], 1e-9, 1 - 1e-9))  # an operating threshold may lie past 0 or 1
    return tau, {**chosen, "n": fit["n"], "positive_rate": fit["positive_rate"]}


def stratified_folds(labels, folds: int, seed: int) -> np.ndarray:
    """A fold number per image: each class shuffled (seeded) and dealt round the folds in turn."""
    y = np.asarray(labels).astype(int).ravel()
    out = np.zeros(y.size, dtype=int)
    rng = np.random.default_rng(seed)
    offset = 0
    for cls in (0, 1):
        members = rng.permutation(np.flatnonzero(y == cls))
        out[members] = (offset + np.arange(members.size)) % folds
        offset += members.size
    return out


def cross_fitted_decisions(labels, multi, *, target_prior: float, folds: int, seed: int) -> np.ndarray:
    """Multi-view decisions per image, each at the threshold fitted without its fold."""
    y = np.asarray(labels).astype(int).ravel()
    scores = np.asarray(multi, dtype=np.float64).ravel()
    fold = stratified_folds(y, folds, seed)
    out = np.zeros(y.size, dtype=bool)
    for k in np.unique(fold):
        held = fold == k
        if held.all():  # one fold only (a single image): nothing to fit on
            tau = 0.5
        else:
            tau, _ = fit_multiview_threshold(y[~held], scores[~held], target_prior)
        out[held] = scores[held] > tau
    return out


def _scores(y, pred, balanced, target_prior) -> dict:
    return {
        "mcc": _mcc(y, pred, np.ones(y.size)),
        "accuracy": float(np.mean(pred == y)),
        f"mcc_prior_{target_prior}": _mcc(y, pred, balanced),
    }


def multiview_decision(
    select_labels,
    select_single,
    select_multi,
    *,
    target_prior: float = 0.5,
    n_boot: int = 1000,
    seed: int = 0,
    folds: int = FOLDS,
) -> dict:
    """Fit the multi-view threshold on val_select and decide, on val_select (cross-fitted), whether
    multi-view helps.

    ``select_multi``: the multi-view aggregate per image (``Predictor.predict(..., multiview=True)``
    with the params' grid, overlap, top-k, flip TTA), unfolded; ``select_single``: the shipped
    single-view probability (threshold already folded: decision ``p > 0.5``). Returns a JSON-ready
    dict with ``threshold`` (probability space, for inference.json's ``multiview.threshold``),
    ``val_select`` (the fit; MCC / accuracy of the single view, the cross-fitted multi-view and, for
    reference, the in-sample multi-view; the paired bootstrap of the differences), ``use_multiview``
    and ``rule``."""
    y = np.asarray(select_labels).astype(bool).ravel()
    single_scores = np.asarray(select_single, dtype=np.float64).ravel()
    multi_scores = np.asarray(select_multi, dtype=np.float64).ravel()
    if not (y.shape == single_scores.shape == multi_scores.shape) or y.size == 0:
        raise ValueError(
            f"val_select labels {y.shape}, single {single_scores.shape} and multi {multi_scores.shape} "
            "must be equal and non-empty"
        )
    if y.all() or not y.any():
        raise ValueError(
            f"val_select holds one class only ({int(y.sum())} roadwork of {y.size}): the views decision "
            "compares class-balanced MCCs and needs both"
        )
    folds = int(max(1, min(folds, y.size)))
    tau, chosen = fit_multiview_threshold(y, multi_scores, target_prior)
    single = single_scores > 0.5
    crossed = cross_fitted_decisions(y, multi_scores, target_prior=target_prior, folds=folds, seed=seed)
    balanced = prior_sample_weights(y, target_prior)
    difference_balanced = mcc_difference(y, single, crossed, weights=balanced, n_boot=n_boot, seed=seed)
    difference_plain = mcc_difference(y, single, crossed, n_boot=n_boot, seed=seed)
    return {
        "threshold": tau,
        "val_select": {
            "n": chosen["n"],
            "positive_rate": chosen["positive_rate"],
            "target_prior": target_prior,
            "mcc_at_threshold": chosen["mcc"],
            "mcc_at_0.5": chosen["mcc_at_default"],
            "folds": folds,
            "single": _scores(y, single, balanced, target_prior),
            "multi_cross_fitted": _scores(y, crossed, balanced, target_prior),
            "multi_in_sample": _scores(y, multi_scores > tau, balanced, target_prior),
            f"mcc_prior_{target_prior}_difference": difference_balanced,
            "mcc_difference": difference_plain,
        },
        "use_multiview": bool(difference_balanced["ci95_low"] > 0),
        "rule": RULE.format(folds=folds),
    }


def multiview_report(labels, single, multi, threshold: float, *, target_prior: float = 0.5, n_boot=1000, seed=0):
    """Single vs multi-view on a split at the shipped thresholds (single: ``p > 0.5``; multi:
    aggregate > ``threshold``), with the paired bootstrap of the differences: a report (the
    evaluate stage's val_test), not a decision."""
    y = np.asarray(labels).astype(bool).ravel()
    single_pred = np.asarray(single, dtype=np.float64).ravel() > 0.5
    multi_scores = np.asarray(multi, dtype=np.float64).ravel()
    multi_pred = multi_scores > threshold
    balanced = prior_sample_weights(y, target_prior)
    return {
        "n": int(y.size),
        "single": _scores(y, single_pred, balanced, target_prior),
        "multi": _scores(y, multi_pred, balanced, target_prior),
        "multi_at_0.5_unfitted": _scores(y, multi_scores > 0.5, balanced, target_prior),
        f"mcc_prior_{target_prior}_difference": mcc_difference(
            y, single_pred, multi_pred, weights=balanced, n_boot=n_boot, seed=seed
        ),
        "mcc_difference": mcc_difference(y, single_pred, multi_pred, n_boot=n_boot, seed=seed),
    }


def inference_config(decision: dict, grid: int, overlap: float, topk: int, flip_tta: bool) -> dict:
    """The bundle's inference.json content (read by the detector): views and the multi-view
    settings with the threshold fitted for them; the measured comparison is kept beside them."""
    return {
        "views": "multi" if decision["use_multiview"] else "single",
        "multiview": {
            "grid": int(grid),
            "overlap": float(overlap),
            "topk": int(topk),
            "flip_tta": bool(flip_tta),
            "threshold": float(decision["threshold"]),
        },
        "rule": decision.get("rule", RULE.format(folds=FOLDS)),
        "measured": {"val_select": decision["val_select"]},
    }


def write_inference_config(bundle_dir: str | Path, config: dict) -> dict:
    """Write ``inference.json`` into a built bundle and bring its manifest up to date (the file's
    sha256, ``model_sha256``, which covers it, and ``manifest["inference"]``). Returns the manifest."""
    from roadwork.io import dumps_json, sha256_file
    from roadwork.miner.detector import INFERENCE_JSON
    from roadwork.miner.manifest import MANIFEST, model_sha256

    bundle_dir = Path(bundle_dir)
    manifest_path = bundle_dir / MANIFEST
    if not manifest_path.is_file():
        raise FileNotFoundError(f"{manifest_path} not found: build the bundle first (build_bundle)")
    if config.get("views") not in ("single", "multi"):
        raise ValueError(f"inference config 'views' must be single or multi, got {config.get('views')!r}")
    path = bundle_dir / INFERENCE_JSON
    path.write_text(dumps_json(config))
    path.chmod(0o644)
    manifest = json.loads(manifest_path.read_text())
    manifest["files"][INFERENCE_JSON] = sha256_file(path)
    manifest["files"] = dict(sorted(manifest["files"].items()))
    manifest["model_sha256"] = model_sha256(manifest["files"])
    manifest["inference"] = {k: config[k] for k in ("views", "multiview", "rule") if k in config}
    manifest_path.write_text(dumps_json(manifest))
    return manifest

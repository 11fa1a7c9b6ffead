"""Multi-view must earn its place: its own decision threshold, and a paired comparison with the
single view, for the export stage.

The single view's threshold is folded into the bundle's head (its probability is > 0.5 exactly
when our tuned decision is roadwork). The multi-view aggregate (mean of the top-k view
probabilities) is shifted upward by the top-k, so it gets its own threshold ``tau``: the project's
exact MCC sweep (:func:`roadwork.evaluate.threshold.best_threshold`) on val_select, re-weighted to
the validators' 50/50 prior, in probability space. The detector folds it the same way
(``sigmoid(logit(a) - logit(tau))``, :func:`roadwork.miner.detector.fold_threshold`).

On val_test the two are compared at their own thresholds with a *paired* percentile bootstrap of
the difference (multi-view minus single view) of the class-balanced MCC (each class weighted to
half the stream, as the validators draw labels): the same resampled images for both. The rule:
multi-view is shipped only when the whole 95% interval lies above 0.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from roadwork.evaluate.compare import mcc_difference
from roadwork.evaluate.metrics import mcc_at, prior_sample_weights
from roadwork.evaluate.threshold import best_threshold

RULE = (
    "multi-view is used only when the paired bootstrap 95% interval of (multi-view minus single-view) "
    "class-balanced MCC on val_test lies above 0"
)


def _mcc(y, pred, w) -> float:
    return mcc_at(pred, y, 0.5, sample_weight=w)


def multiview_decision(
    select_labels,
    select_multi,
    test_labels,
    test_single,
    test_multi,
    *,
    target_prior: float = 0.5,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict:
    """Fit the multi-view threshold on val_select and decide whether multi-view helps on val_test.

    ``select_multi`` / ``test_multi``: the multi-view aggregate per image (``Predictor.predict(...,
    multiview=True)`` with the params' grid, overlap, top-k, flip TTA), unfolded; ``test_single``:
    the shipped single-view probability (threshold already folded: decision ``p > 0.5``).
    Returns a JSON-ready dict with ``threshold`` (probability space, for inference.json's
    ``multiview.threshold``), the val_select fit, val_test MCC/accuracy of both (plain and
    class-balanced), the paired bootstrap of the differences, and ``use_multiview``.
    """
    sel_y = np.asarray(select_labels).astype(int).ravel()
    fit = best_threshold(np.asarray(select_multi, dtype=np.float64), sel_y, target_prior, default_threshold=0.5)
    chosen = fit["reweighted"] or fit["raw"]
    tau = float(np.clip(chosen["threshold"], 1e-9, 1 - 1e-9))  # an operating threshold may lie past 0 or 1

    y = np.asarray(test_labels).astype(bool).ravel()
    single = np.asarray(test_single, dtype=np.float64).ravel() > 0.5
    multi_scores = np.asarray(test_multi, dtype=np.float64).ravel()
    multi = multi_scores > tau
    multi_at_half = multi_scores > 0.5
    balanced = prior_sample_weights(y, target_prior)
    ones = np.ones(y.size)

    def scores(pred):
        return {
            "mcc": _mcc(y, pred, ones),
            "accuracy": float(np.mean(pred == y)),
            f"mcc_prior_{target_prior}": _mcc(y, pred, balanced),
        }

    difference_balanced = mcc_difference(y, single, multi, weights=balanced, n_boot=n_boot, seed=seed)
    difference_plain = mcc_difference(y, single, multi, n_boot=n_boot, seed=seed)
    return {
        "threshold": tau,
        "val_select": {
            "n": fit["n"],
            "positive_rate": fit["positive_rate"],
            "target_prior": target_prior,
            "mcc_at_threshold": chosen["mcc"],
            "mcc_at_0.5": chosen["mcc_at_default"],
        },
        "val_test": {
            "n": int(y.size),
            "single": scores(single),
            "multi": scores(multi),
            "multi_at_0.5_unfitted": scores(multi_at_half),
            f"mcc_prior_{target_prior}_difference": difference_balanced,
            "mcc_difference": difference_plain,
        },
        "use_multiview": bool(difference_balanced["ci95_low"] > 0),
        "rule": RULE,
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
        "rule": decision.get("rule", RULE),
        "measured": {"val_test": decision["val_test"], "val_select": decision["val_select"]},
    }


def write_inference_config(bundle_dir: str | Path, config: dict) -> dict:
    """Write ``inference.json`` into a built bundle and bring its manifest up to date (the file's
    sha256, ``model_sha256``, which covers it, and ``manifest["inference"]``). Returns the manifest."""
    from roadwork.export.bundle import MANIFEST, _model_sha256
    from roadwork.io import dumps_json, sha256_file
    from roadwork.miner.detector import INFERENCE_JSON

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
    manifest["model_sha256"] = _model_sha256(manifest["files"])
    manifest["inference"] = {k: config[k] for k in ("views", "multiview", "rule") if k in config}
    manifest_path.write_text(dumps_json(manifest))
    return manifest

"""evaluate: the exported bundle (data/bundle) on val_test, with every comparison's paired interval
and verdict; the only stage (with the reports) where val_test is read, and nothing here feeds back
into the bundle.

* the shipped output (the miner's detector, single view, = the pipeline's preprocessing) at full
  size: MCC, accuracy, AUC, ECE, confusion matrix, bootstrap 95% intervals (MCC, accuracy);
  ROC / precision-recall / confusion-matrix plots (dvclive/evaluate);
* ``multiview``: what the export's views decision (taken on val_select, inference.json) gives on
  val_test: single view vs multi-view at their shipped thresholds on the validators' 224 x 224
  inputs (a report, not a decision);
* ``protocol``: the validators' protocol through the stock miner's transformers pipeline
  (``roadwork.evaluate.protocol``): levels 0-3, class-balanced, ``export.protocol_draws`` seeded
  augmentation draws; the mix's expected reward, averaged over the draws with its 95% interval, is
  ``protocol.reward_real``; with the synthesize stage's val_test children (i2i, t2i) the same
  protocol runs on them and the headline ``protocol.reward`` is the validators' stream, 50% real,
  25% i2i, 25% t2i (``synthesize.fake_prob``, ``i2i_share``), with its interval (``protocol.kinds``:
  each kind and the mix; labelled "not a measurement" on the tiny backend); without them
  ``protocol.reward`` is the real images' figure;
* ``comparisons``: every comparison as a paired bootstrap of the difference on the same val_test
  images (``roadwork.evaluate.compare``; ``export.bootstrap`` resamples, seed
  ``export.protocol_seed``) with its verdict (better / worse / not distinguishable): phase 4 minus
  phase 1 (saved logits, each at its own threshold), multi-view minus single view, the shipped
  model minus the colour-histogram baseline (``roadwork.evaluate.baseline``, fitted on the train
  split), all by 50/50-weighted MCC; and on the protocol's challenges, the expected reward of the
  model minus the baseline's per level and for the mix, and of each level minus level 0;
  ``power``: the minimum detectable MCC differences at 80% power;
* ``latency``: the detector's seconds per query on the CPU, by view count.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from roadwork.config import Params
from roadwork.io import read_csv, read_json
from roadwork.stages.calibrate import candidates
from roadwork.stages.common import (
    BUNDLE,
    CALIBRATION_JSON,
    RAW,
    SPLIT,
    SYNTHETIC,
    finish,
    finish_printed,
    open_live,
    params,
)
from roadwork.stages.export import BATCH, bundle_record, rounded, score_views

log = logging.getLogger(__name__)

BASELINE = "colour_baseline"
POWER_EXPLANATION = (
    "smallest true difference in val_test MCC (50/50 class weights) that a paired 95% interval "
    "tells from 0 with 80% power (2.80 x bootstrap standard error): against a fixed reference "
    "(the shipped model's MCC), and between two models as correlated as phase 1 and phase 4 "
    "(their paired difference); a smaller true gap is likely reported 'not distinguishable'"
)


class EvaluateError(Exception):
    """The inputs cannot be evaluated (e.g. a bundle that is not the calibrated model's)."""


def colour_baseline_features(examples) -> np.ndarray:
    """The colour baseline's features (:func:`roadwork.evaluate.baseline.colour_features`) of
    the examples' images, decoded in threads."""
    from roadwork.evaluate.baseline import colour_features
    from roadwork.predict import load_image

    with ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as pool:
        rows = list(pool.map(lambda e: colour_features([load_image(e.path)])[0], examples))
    return np.stack(rows)


def comparisons(
    labels, shipped, baseline, phases: dict, multiview: dict, protocol: dict, *, n_boot: int, seed: int
) -> tuple[dict, dict]:
    """(``comparisons``, ``power``) of metrics/evaluate.json. ``shipped`` / ``baseline``: val_test
    probabilities of the bundle and of the colour baseline; ``phases``: phase 4 vs phase 1
    (:func:`roadwork.evaluate.model_choice.compare_models` on val_test); ``multiview``: the val_test
    50/50 comparison (:func:`roadwork.miner.decision.multiview_report`); ``protocol``:
    :func:`~roadwork.evaluate.protocol.protocol_over_draws` with the baseline among its ``others``."""
    from roadwork.evaluate.compare import mcc_difference, mcc_standard_error, minimum_detectable_difference, summary
    from roadwork.evaluate.metrics import prior_sample_weights
    from roadwork.evaluate.protocol import protocol_comparisons

    labels = np.asarray(labels).astype(int)
    balanced = prior_sample_weights(labels, 0.5)
    boot = {"n_boot": n_boot, "seed": seed}
    vs_baseline = mcc_difference(
        labels, np.asarray(baseline) > 0.5, np.asarray(shipped) > 0.5, weights=balanced, **boot
    )
    on_protocol = protocol_comparisons(labels, protocol, BASELINE, **boot)
    out = {
        "phase4_vs_phase1": summary(phases),
        "multiview_vs_single_view": summary(multiview),
        f"model_vs_{BASELINE}": summary(vs_baseline),
        **{f"protocol_{name}": value for name, value in on_protocol.items()},
    }
    shipped_se = mcc_standard_error(labels, np.asarray(shipped) > 0.5, weights=balanced, **boot)
    power = {
        "mdd_mcc_vs_fixed_reference": minimum_detectable_difference(shipped_se),
        "mdd_mcc_phase4_vs_phase1": minimum_detectable_difference(phases["standard_error"]),
        "explanation": POWER_EXPLANATION,
    }
    return out, power


def protocol_kinds(
    config: Params, protocol: dict, labels, raw_dir: Path, split_dir: Path, synthetic_dir: Path, score, progress: bool
) -> dict:
    """The protocol on val_test's i2i and t2i children and the validators' mix with the real images: the keys
    that replace ``protocol``'s headline (the real figure stays as ``reward_real``)."""
    from roadwork.data.examples import load_split
    from roadwork.evaluate import per_kind
    from roadwork.evaluate.protocol import protocol_over_draws
    from roadwork.predict import load_image

    settings = config.export
    runs, kind_labels = {"real": protocol}, {"real": np.asarray(labels)}
    for kind in ("i2i", "t2i"):
        examples = load_split(raw_dir, split_dir / "splits.csv", "val_test", (kind,), synthetic_dir)
        if examples:
            kind_labels[kind] = np.array([e.label for e in examples])
            runs[kind] = protocol_over_draws(
                lambda i, examples=examples: load_image(examples[i].path),
                kind_labels[kind],
                score,
                settings.protocol_seed,
                settings.protocol_draws,
                n_boot=settings.bootstrap,
                chunk=BATCH,
                progress=progress,
            )
    shares = per_kind.kind_shares(config.synthesize.fake_prob, config.synthesize.i2i_share)
    kinds = per_kind.label(
        per_kind.protocol_by_kind(runs, kind_labels, shares, settings.bootstrap, settings.protocol_seed),
        config.synthesize.backend,
    )
    out = {
        "kinds": kinds,
        "reward_real": protocol["reward"],
        "reward_real_ci95_low": protocol["reward_ci95_low"],
        "reward_real_ci95_high": protocol["reward_ci95_high"],
    }
    if "reward" in kinds["mix"]:
        out |= {
            "reward": kinds["mix"]["reward"],
            "reward_ci95_low": kinds["mix"]["ci95_low"],
            "reward_ci95_high": kinds["mix"]["ci95_high"],
            "headline": "the validators' stream: "
            + ", ".join(f"{v:.0%} {k}" for k, v in shares.items())
            + (" (tiny backend: " + per_kind.NOT_A_MEASUREMENT + ")" if config.synthesize.backend == "tiny" else ""),
        }
    return out


def evaluate(
    config: Params,
    bundle_dir: Path,
    calibration_json: Path,
    raw_dir: Path,
    split_dir: Path,
    candidates: dict,
    live=None,
    device=None,
    progress: bool = True,
    synthetic_dir: Path | None = None,
) -> dict:
    """The content of metrics/evaluate.json for the bundle in ``bundle_dir`` (built by the export stage
    from ``calibration_json``'s model). ``split_dir`` holds splits.csv; ``candidates``: the trained
    models with their threshold decisions (:class:`roadwork.evaluate.model_choice.Candidate`, phase1
    and phase4), for the phase 4 vs phase 1 comparison; ``live``: a dvclive logger for the ROC,
    precision-recall and confusion-matrix plots."""
    import torch

    from roadwork.data.examples import load_split
    from roadwork.evaluate.baseline import colour_scorer, fit_colour_baseline, roadwork_probability
    from roadwork.evaluate.model_choice import CalibrationError, compare_models
    from roadwork.evaluate.protocol import evaluate_scores, protocol_over_draws
    from roadwork.miner.decision import multiview_report
    from roadwork.miner.detector import RoadworkTimmDetector, read_inference_config
    from roadwork.miner.latency import latency_warning, measure_latency
    from roadwork.miner.manifest import MANIFEST, verify_manifest
    from roadwork.predict import Predictor, load_image

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    bundle_dir = Path(bundle_dir)
    if not (bundle_dir / MANIFEST).is_file():
        raise EvaluateError(f"{bundle_dir / MANIFEST} not found: run the export stage first (dvc repro export)")
    changed = verify_manifest(bundle_dir)
    if changed:
        raise EvaluateError(f"{bundle_dir}: files differ from {MANIFEST}: {changed}; rebuild it (dvc repro export)")
    manifest = read_json(bundle_dir / MANIFEST)
    calibration = read_json(calibration_json)
    if manifest["source"]["model.safetensors"] != calibration["model_sha256"]:
        raise EvaluateError(
            f"{bundle_dir} was not built from the calibrated model ({calibration_json} records another "
            "sha256): run `dvc repro export`"
        )
    inference = read_inference_config(bundle_dir)
    if inference is None:
        raise EvaluateError(f"{bundle_dir} has no inference.json (the views decision): run `dvc repro export`")
    model_dir = Path(calibration["model_dir"])
    settings, views = config.export, config.predict
    missing = [
        p.as_posix()
        for name in ("phase1", "phase4")
        for p in (candidates[name].logits_csv, candidates[name].threshold_json)
        if not p.exists()
    ]
    if missing:
        raise EvaluateError(
            f"{', '.join(missing)} not found: the phase 4 vs phase 1 comparison needs both models' "
            "logits and threshold decisions (dvc repro threshold@phase1 threshold@phase4)"
        )

    examples = load_split(raw_dir, split_dir / "splits.csv", "val_test")
    if not examples:
        raise EvaluateError(f"{split_dir / 'splits.csv'}: val_test is empty")
    labels = np.array([e.label for e in examples])
    predictor = Predictor.from_params(bundle_dir, views, device=device)  # raw multi-view aggregate
    scores = score_views(predictor, examples, progress=progress, desc="val_test")
    shipped = scores["shipped"]
    val_test = evaluate_scores(
        labels, shipped, n_boot=settings.bootstrap, seed=settings.protocol_seed, n_bins=config.calibrate.n_bins
    )
    saved = {r["id"]: float(r["logit"]) for r in read_csv(model_dir / "logits.csv") if r["split"] == "val_test"}
    expected = np.array([saved[e.id] > calibration["threshold_logit"] for e in examples])
    val_test["agreement_with_saved_logits"] = float(np.mean((shipped > 0.5) == expected))

    if live is not None:
        live.log_sklearn_plot("roc", labels, shipped, name="roc", drop_intermediate=True)
        live.log_sklearn_plot("precision_recall", labels, shipped, name="precision_recall", drop_intermediate=True)
        live.log_sklearn_plot("confusion_matrix", labels, (shipped > 0.5).astype(int), name="confusion_matrix")

    # the views decision was taken on val_select (export); here what it gives on val_test
    target_prior = config.threshold.target_prior
    tau = float(inference["multiview"]["threshold"])
    multiview = {
        "settings": views.model_dump(),
        "threshold": tau,
        "use_multiview": inference["views"] == "multi",
        "decided_on": "val_select (the export stage; inference.json's rule)",
        "rule": inference.get("rule"),
        "val_test": multiview_report(
            labels,
            scores["v224_single"],
            scores["v224_multi"],
            tau,
            target_prior=target_prior,
            n_boot=settings.bootstrap,
            seed=settings.protocol_seed,
        ),
    }

    # what the miner runs: our detector with the views the bundle says, on the CPU (its default)
    latency = measure_latency(
        bundle_dir,
        grid=views.multiview_grid,
        overlap=views.multiview_overlap,
        topk=views.multiview_topk,
        flip_tta=views.flip_tta,
        repeats=3,
        device="cpu",
    )
    latency["budget_s"] = settings.latency_budget_s
    latency["warning"] = latency_warning(latency, settings.latency_budget_s)
    if latency["warning"]:
        log.warning("%s", latency["warning"])

    # the colour-histogram baseline: fitted on the train split, deciding at 0.5
    train = load_split(raw_dir, split_dir / "splits.csv", "train")
    baseline = fit_colour_baseline(
        colour_baseline_features(train), [e.label for e in train], seed=settings.protocol_seed
    )
    colour = colour_scorer(baseline)

    # the validators' protocol, answered by that detector (single or multi-view as shipped) and,
    # on the same challenge images, by the colour baseline
    detector = RoadworkTimmDetector(config_name=None, device=device, bundle=str(bundle_dir), model=predictor.model)
    protocol = protocol_over_draws(
        lambda i: load_image(examples[i].path),
        labels,
        lambda images: np.asarray(detector.batch(images)),
        settings.protocol_seed,
        settings.protocol_draws,
        n_boot=settings.bootstrap,
        others={BASELINE: colour},
        chunk=BATCH,
        progress=progress,
    )
    protocol["views"] = "multi" if detector.multiview else "single"

    try:
        phases = compare_models(
            candidates["phase1"],
            candidates["phase4"],
            "val_test",
            target_prior=0.5,
            n_boot=settings.bootstrap,
            seed=settings.protocol_seed,
        )
    except CalibrationError as error:
        raise EvaluateError(str(error)) from error
    baseline_test = roadwork_probability(baseline, colour_baseline_features(examples))
    compared, power = comparisons(
        labels,
        shipped,
        baseline_test,
        phases,
        multiview["val_test"][f"mcc_prior_{target_prior}_difference"],
        protocol,
        n_boot=settings.bootstrap,
        seed=settings.protocol_seed,
    )
    if synthetic_dir is not None and (Path(synthetic_dir) / "manifest.csv").is_file():
        protocol.update(
            protocol_kinds(
                config,
                protocol,
                labels,
                raw_dir,
                split_dir,
                Path(synthetic_dir),
                lambda images: np.asarray(detector.batch(images)),
                progress,
            )
        )
    protocol.pop("_probs")
    for other in protocol["others"].values():
        other.pop("_probs")
    return rounded(
        {
            "protocol": protocol,
            "val_test": val_test,
            "comparisons": compared,
            "power": power,
            "multiview": multiview,
            "latency": latency,
            "bundle": bundle_record(calibration, manifest, protocol["views"]),
        }
    )


def comparison_lines(comparisons: dict, prefix: str = "comparisons") -> dict:
    """Each comparison as ``{"comparisons.<name>": "difference [low, high] verdict"}``."""
    lines = {}
    for name, c in comparisons.items():
        if "verdict" in c:
            lines[f"{prefix}.{name}"] = f"{c['difference']} [{c['ci95_low']}, {c['ci95_high']}] {c['verdict']}"
        else:
            lines.update(comparison_lines(c, f"{prefix}.{name}"))
    return lines


def headline(metrics: dict) -> dict:
    """The lines of metrics/evaluate.json a person reads first (the stage's summary)."""
    val_test, protocol, multiview = metrics["val_test"], metrics["protocol"], metrics["multiview"]
    views = metrics["latency"]["views"]
    return {
        f"protocol.reward [95% CI over images, mean of {protocol['draws']} draws, {protocol['views']} view]": f"{protocol['reward']} [{protocol['reward_ci95_low']}, {protocol['reward_ci95_high']}]",
        **(
            {
                "protocol.headline": protocol["headline"],
                "protocol.reward_real [95% CI]": f"{protocol['reward_real']} [{protocol['reward_real_ci95_low']}, "
                f"{protocol['reward_real_ci95_high']}]",
                "protocol.kinds (reward)": {
                    k: v.get("reward") for k, v in protocol["kinds"].items() if isinstance(v, dict)
                },
            }
            if "headline" in protocol
            else {}
        ),
        "protocol.levels": {k: {m: v[m] for m in ("mcc", "accuracy", "reward")} for k, v in protocol["levels"].items()},
        **{
            f"val_test.{m} [95% CI]": f"{val_test[m]} [{val_test[m + '_ci95_low']}, {val_test[m + '_ci95_high']}]"
            for m in ("mcc", "accuracy")
        },
        "val_test.auc": val_test["auc"],
        "val_test.ece_positive_uniform": val_test["ece_positive_uniform"],
        "multiview.use_multiview (decided on val_select)": multiview["use_multiview"],
        "comparisons (difference [95% CI] verdict)": "50/50 MCC on val_test; protocol_*: expected reward",
        **comparison_lines(metrics["comparisons"]),
        "power: minimum detectable val_test MCC difference (80%)": f"{metrics['power']['mdd_mcc_vs_fixed_reference']} against a fixed reference, "
        f"{metrics['power']['mdd_mcc_phase4_vs_phase1']} between phase 1 and phase 4",
        "latency s per query (CPU) by views": {k: v["detector_s"] for k, v in views.items()},
        **({"latency.warning": metrics["latency"]["warning"]} if metrics["latency"]["warning"] else {}),
    }


def main() -> None:
    started = time.monotonic()
    config = params()
    for needed, stage in ((CALIBRATION_JSON, "calibrate"), (BUNDLE, "export")):
        if not needed.exists():
            sys.exit(f"evaluate failed: {needed} not found: run the {stage} stage first (dvc repro {stage})")
    live = open_live("evaluate")
    try:
        metrics = evaluate(
            config, BUNDLE, CALIBRATION_JSON, RAW, SPLIT, candidates(), live=live, synthetic_dir=SYNTHETIC
        )
    except EvaluateError as error:
        sys.exit(f"evaluate failed: {error}")
    live.end()
    finish("evaluate", metrics, started)  # writes metrics/evaluate.json
    finish_printed("evaluate", headline(metrics), started)


if __name__ == "__main__":
    main()

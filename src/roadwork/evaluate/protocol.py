"""The final evaluation on val_test: plain metrics of the exported bundle, and the validators'
protocol replayed through the miner's own inference call.

Validators' protocol (natixnetwork/streetvision-subnet; see ``validator_aug`` for the
augmentation): every val_test image goes through augmentation level 0, 1, 2 and 3
(:func:`~roadwork.evaluate.validator_aug.apply_validator_augmentation`, 224 x 224), is
JPEG-encoded and decoded as the validator's base64 JPEG is (PIL default quality), and is scored
by a callable: the evaluate stage passes the detector the miner runs
(:class:`roadwork.miner.detector.RoadworkTimmDetector`, with the views the bundle ships);
:func:`load_pipeline` / :func:`pipeline_scores` are the stock miner's transformers call
(``AutoModelForImageClassification`` + ``AutoImageProcessor(use_fast=True)`` + the
``image-classification`` pipeline, score of the label "Roadwork"), for transformers >= 4.53.

Class balance: validators draw the label 50/50 while val_test is imbalanced (~4:1). Rather than
resampling (which adds noise), each image is weighted so that both classes carry half the total
weight: the weighted MCC and accuracy are the expected values on a 50/50 stream (the weighted
accuracy is the balanced accuracy). ``simulated_reward`` additionally replays a balanced query
stream (labels drawn 50/50, images with replacement, seeded) through the validators' windowed
reward. Randomness is per query: image ``i`` at level ``L`` uses
``numpy.random.default_rng([seed, L, i])``, so results do not depend on batching or order.

Metrics per level: MCC, accuracy (balanced), the expected reward ``(0.5 * MCC + 0.5 * acc) ** 3``
(:func:`~roadwork.evaluate.metrics.expected_reward`) and the simulated reward; ``mix`` pools the
four levels (each holds every image once, so each level weighs 25%, as the validators draw them).

Comparisons (:func:`protocol_comparisons`): other scorers (``others``, e.g. the colour baseline)
answer the same challenge images, and the model's reward is compared with theirs, and level k
with level 0, by a paired bootstrap over images that keeps the draws of an image together.
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

import numpy as np
from PIL import Image

from roadwork.evaluate.calibration import ece_variants
from roadwork.evaluate.compare import reward_difference, reward_interval
from roadwork.evaluate.compare import summary as comparison_summary
from roadwork.evaluate.metrics import (
    binary_metrics,
    bootstrap_ci,
    check_binary_labels,
    confusion_at,
    expected_reward,
    mcc_from_counts,
    prior_sample_weights,
    simulated_reward,
)
from roadwork.evaluate.validator_aug import apply_validator_augmentation, center_crop_resize, jpeg_roundtrip

LEVELS = (0, 1, 2, 3)
ROADWORK_LABEL = "Roadwork"

ScoreFn = Callable[[list[Image.Image]], np.ndarray]


# ------------------------------------------------------------------------------ the miner's call
def load_miner_model(bundle_dir):
    """(model, image processor) loaded from ``bundle_dir`` exactly as the stock miner loads them
    (base_miner/detectors/vit_detector.py): ``AutoModelForImageClassification`` and
    ``AutoImageProcessor(use_fast=True)``; transformers' progress bars and notices silenced."""
    from transformers import AutoImageProcessor, AutoModelForImageClassification
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()  # TimmWrapperImageProcessor has no fast variant: it says so
    hf_logging.disable_progress_bar()
    try:
        model = AutoModelForImageClassification.from_pretrained(str(bundle_dir)).eval()
        processor = AutoImageProcessor.from_pretrained(str(bundle_dir), use_fast=True)
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()
    return model, processor


def load_pipeline(bundle_dir, device=None):
    """The stock miner's inference object for ``bundle_dir`` (base_miner/detectors/vit_detector.py)."""
    from transformers import pipeline

    model, processor = load_miner_model(bundle_dir)
    return pipeline("image-classification", model=model, feature_extractor=processor, device=device)


def pipeline_scores(pipe, images: Sequence[Image.Image], batch_size: int = 16) -> np.ndarray:
    """The "Roadwork" score the miner returns for each image."""
    if not images:
        return np.zeros(0)
    outputs = pipe(list(images), batch_size=batch_size)
    scores = []
    for output in outputs:
        by_label = {item["label"]: item["score"] for item in output}
        if ROADWORK_LABEL not in by_label:
            raise ValueError(
                f"the pipeline returned labels {sorted(by_label)}: no {ROADWORK_LABEL!r} (the stock miner would fail)"
            )
        scores.append(by_label[ROADWORK_LABEL])
    return np.asarray(scores, dtype=np.float64)


# ------------------------------------------------------------------------------ challenges
def query_rng(seed: int, level: int, index: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), int(level), int(index)])


def validator_challenge_image(image: Image.Image, level: int, rng: np.random.Generator) -> Image.Image:
    """What the miner receives for ``image`` at ``level``: augmented to 224 x 224, then the
    validator's JPEG encoding (PIL default quality) decoded again."""
    return jpeg_roundtrip(apply_validator_augmentation(image, level, rng))


def validator_resize(image: Image.Image) -> Image.Image:
    """An image as the validators send it without augmentation (level 0: centre square, 224,
    JPEG): the input for "does multi-view help at 224 x 224"."""
    return jpeg_roundtrip(center_crop_resize(image))


# ------------------------------------------------------------------------------ metrics
def balanced_metrics(labels, probs, threshold: float = 0.5) -> dict:
    """MCC and accuracy expected on a 50/50 stream (class-weighted with
    :func:`~roadwork.evaluate.metrics.prior_sample_weights`), their expected reward, and the
    unweighted values for reference."""
    y = check_binary_labels(labels)
    pred = np.asarray(probs, dtype=np.float64).ravel() > threshold
    tp, fp, tn, fn = confusion_at(probs, y, threshold, sample_weight=prior_sample_weights(y, 0.5))
    mcc = float(mcc_from_counts(tp, fp, tn, fn))
    accuracy = (tp + tn) / (tp + fp + tn + fn)
    raw = binary_metrics(y.astype(int), probs, threshold)
    return {
        "n": int(y.size),
        "n_pos": int(y.sum()),
        "mcc": mcc,
        "accuracy": accuracy,
        "reward": expected_reward(mcc, accuracy),
        "tpr": float(np.mean(pred[y])),
        "tnr": float(np.mean(~pred[~y])),
        "mcc_unweighted": raw["mcc"],
        "accuracy_unweighted": raw["accuracy"],
    }


def run_protocol(
    load: Callable[[int], Image.Image],
    labels: Sequence[int],
    score: ScoreFn,
    seed: int,
    *,
    others: Mapping[str, ScoreFn] | None = None,
    levels: Sequence[int] = LEVELS,
    chunk: int = 16,
    n_queries: int | None = None,
    progress: bool = False,
    workers: int | None = None,
) -> dict:
    """Every image (``load(i)``, the original) through every level, scored by ``score``.

    Images are decoded once per chunk and augmented at every level; ``score`` receives the
    challenge images (224 x 224, JPEG round trip) and returns "Roadwork" probabilities.
    Returns ``{"reward", "mcc", "accuracy", "reward_simulated", "levels": {...}, "mix": {...}}``
    (the top-level values are the mix's) and the raw probabilities under ``"_probs"``.
    ``others``: more scorers (e.g. the colour baseline) answering the very same challenge images,
    which are made once whatever the number of scorers (the augmentation is the expensive part);
    each one's result, with the same keys, is under ``out["others"][name]``.
    """
    import os
    from concurrent.futures import ThreadPoolExecutor

    from tqdm import tqdm

    y = np.asarray(labels).astype(int)
    n = y.size
    scorers = [score, *(others or {}).values()]
    probs = [{level: np.zeros(n) for level in levels} for _ in scorers]
    workers = workers or min(8, os.cpu_count() or 1)
    with (
        ThreadPoolExecutor(workers) as pool,
        tqdm(total=n * len(levels), unit="query", desc="validators' protocol", disable=not progress) as bar,
    ):
        for start in range(0, n, chunk):
            indices = range(start, min(n, start + chunk))
            originals = dict(zip(indices, pool.map(load, indices)))
            where = [(level, i) for level in levels for i in indices]
            # the augmentations (full-size rotations, distortions) run in threads: torch and numpy
            # release the GIL, and every query has its own generator, so the result is the same
            challenges = list(
                pool.map(
                    lambda q, originals=originals: validator_challenge_image(
                        originals[q[1]], q[0], query_rng(seed, q[0], q[1])
                    ),
                    where,
                )
            )
            for scorer, out in zip(scorers, probs):
                scores = np.asarray(scorer(challenges), dtype=np.float64).ravel()
                if scores.size != len(challenges):
                    raise ValueError(f"a protocol scorer returned {scores.size} scores for {len(challenges)} images")
                for (level, i), s in zip(where, scores):
                    out[level][i] = s
            bar.update(len(challenges))

    queries = n_queries or max(2000, n)
    out = _protocol_metrics(y, probs[0], seed, queries)
    if others:
        out["others"] = {name: _protocol_metrics(y, p, seed, queries) for name, p in zip(others, probs[1:])}
    return out


def _protocol_metrics(y: np.ndarray, probs: dict, seed: int, queries: int) -> dict:
    """:func:`run_protocol`'s result for one scorer's probabilities per level."""
    out: dict = {"seed": int(seed), "n_images": int(y.size), "levels": {}}
    for level, p in probs.items():
        metrics = balanced_metrics(y, p)
        metrics["reward_simulated"] = simulated_reward(y, p, seed=seed, n_queries=queries)
        out["levels"][str(level)] = metrics
    pooled_y = np.concatenate([y] * len(probs))
    pooled_p = np.concatenate(list(probs.values()))
    mix = balanced_metrics(pooled_y, pooled_p)
    mix["reward_simulated"] = simulated_reward(pooled_y, pooled_p, seed=seed, n_queries=queries * len(probs))
    out["mix"] = mix
    out.update(reward=mix["reward"], mcc=mix["mcc"], accuracy=mix["accuracy"], reward_simulated=mix["reward_simulated"])
    out["_probs"] = probs
    return out


def protocol_comparisons(labels: Sequence[int], result: dict, reference: str, *, n_boot: int, seed: int) -> dict:
    """Paired comparisons of the validators' expected reward on the protocol's own challenge
    images (``result``: :func:`protocol_over_draws` with ``others`` holding ``reference``), 50/50
    class weights, resampling images with all their draws
    (:func:`roadwork.evaluate.compare.reward_difference`):

    * ``vs_<reference>``: per level (``level_0`` ... ``level_3``) and for the ``mix`` (the four
      levels pooled), the model's reward minus ``reference``'s on the same challenges;
    * ``levels_vs_level_0``: the model's reward at level k minus its reward at level 0 (what
      each augmentation level costs), k = 1, 2, 3.

    Each is the :func:`~roadwork.evaluate.compare.summary` of the comparison (difference, 95%
    interval, verdict, n images)."""
    y = check_binary_labels(labels)
    weights = prior_sample_weights(y, 0.5)
    model, other = result["_probs"], result["others"][reference]["_probs"]
    levels = list(model)

    def decisions(probs: dict, keys: list[str]) -> np.ndarray:  # (draws, pooled levels, images)
        return np.stack([probs[key] > 0.5 for key in keys], axis=1)

    def difference(reference_decisions, candidate_decisions) -> dict:
        return comparison_summary(
            reward_difference(y, reference_decisions, candidate_decisions, weights=weights, n_boot=n_boot, seed=seed)
        )

    versus = {f"level_{level}": difference(decisions(other, [level]), decisions(model, [level])) for level in levels}
    versus["mix"] = difference(decisions(other, levels), decisions(model, levels))
    first = levels[0]
    by_level = {
        f"level_{level}": difference(decisions(model, [first]), decisions(model, [level])) for level in levels[1:]
    }
    return {f"vs_{reference}": versus, f"levels_vs_level_{first}": by_level}


def protocol_over_draws(
    load: Callable[[int], Image.Image],
    labels: Sequence[int],
    score: ScoreFn,
    seed: int,
    draws: int,
    n_boot: int = 1000,
    **kwargs,
) -> dict:
    """:func:`run_protocol` for ``draws`` independent augmentation draws (seeds ``seed``,
    ``seed + 1``, ...): one draw's reward depends on which rotation, crop and distortion each image
    happened to get, so the published figures are means over draws. ``reward_ci95_low``/
    ``reward_ci95_high`` (mix and each level) are the 95% percentile bootstrap interval over
    images, each image bringing all its draws (and, for the mix, its four levels): the uncertainty
    of the reward on the stream from which the images were drawn. ``reward_draws_ci95_low``/
    ``_high`` are the t-interval of the mean over draws (the augmentation noise alone; with 2
    draws it has one degree of freedom and is wide). ``reward_per_draw`` lists every draw's reward; ``_probs`` holds, per level, the probabilities
    of every draw (draws x images). With ``others`` (see :func:`run_protocol`), each other
    scorer's result, with the same keys, is under ``out["others"][name]``."""
    runs = [run_protocol(load, labels, score, seed + k, **kwargs) for k in range(draws)]
    out = _over_draws(runs, seed, labels, n_boot)
    if runs[0].get("others"):
        out["others"] = {
            name: _over_draws([run["others"][name] for run in runs], seed, labels, n_boot) for name in runs[0]["others"]
        }
    return out


def _over_draws(runs: list[dict], seed: int, labels, n_boot: int) -> dict:
    """One scorer's :func:`run_protocol` results over the draws, averaged (see :func:`protocol_over_draws`)."""
    from scipy import stats

    def summary(values) -> dict:
        values = np.asarray(values, dtype=np.float64)
        mean = float(values.mean())
        if len(values) < 2:
            return {"mean": mean, "ci95_low": mean, "ci95_high": mean}
        half = float(stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values)))
        return {"mean": mean, "ci95_low": mean - half, "ci95_high": mean + half}

    def averaged(pick) -> dict:
        out = {}
        for key in ("reward", "mcc", "accuracy", "reward_simulated"):
            spread = summary([pick(run)[key] for run in runs])
            out[key] = spread["mean"]
            if key == "reward":
                out["reward_draws_ci95_low"], out["reward_draws_ci95_high"] = spread["ci95_low"], spread["ci95_high"]
        return out

    y = check_binary_labels(labels)
    weights = prior_sample_weights(y, 0.5)
    probs = {str(level): np.stack([run["_probs"][level] for run in runs]) for level in runs[0]["_probs"]}

    def over_images(decisions) -> dict:
        interval = reward_interval(y, decisions, weights=weights, n_boot=n_boot, seed=seed)
        return {"reward_ci95_low": interval["ci95_low"], "reward_ci95_high": interval["ci95_high"]}

    out = {
        "seed": int(seed),
        "draws": len(runs),
        "n_images": runs[0]["n_images"],
        "levels": {
            level: {**averaged(lambda run, level=level: run["levels"][level]), **over_images(probs[level] > 0.5)}
            for level in runs[0]["levels"]
        },
        "mix": {
            **averaged(lambda run: run["mix"]),
            **over_images(np.stack([probs[level] for level in probs], axis=1) > 0.5),
        },
        "reward_per_draw": [run["reward"] for run in runs],
    }
    out.update(
        {
            k: out["mix"][k]
            for k in (
                "reward",
                "reward_ci95_low",
                "reward_ci95_high",
                "reward_draws_ci95_low",
                "reward_draws_ci95_high",
                "mcc",
                "accuracy",
                "reward_simulated",
            )
        }
    )
    out["_probs"] = probs
    return out


def evaluate_scores(labels, probs, *, n_boot: int, seed: int, n_bins: int = 15) -> dict:
    """val_test metrics of the shipped probabilities: MCC, accuracy, AUC, confusion counts at
    0.5; bootstrap 95% intervals of MCC and accuracy; ECE (positive class and top label;
    equal-width and equal-mass bins) of the shipped probability. ``prior_0.5`` holds the same
    re-weighted to the validators' 50/50 stream (:func:`~roadwork.evaluate.metrics.prior_sample_weights`):
    MCC, accuracy, reward, TPR, TNR and the four weighted ECEs (``ece_positive_uniform`` there is
    the calibration headline)."""
    y = np.asarray(labels).astype(int)
    p = np.asarray(probs, dtype=np.float64)
    out = binary_metrics(y, p, 0.5)
    for name in ("mcc", "accuracy"):
        point, low, high = bootstrap_ci(y, p, name, n_boot=n_boot, seed=seed, threshold=0.5)
        out[f"{name}_ci95_low"], out[f"{name}_ci95_high"] = low, high  # scalars: `dvc exp show` lists them
    out["confusion_matrix"] = {
        "labels": ["None", "Roadwork"],
        "rows_actual_cols_predicted": [[out["tn"], out["fp"]], [out["fn"], out["tp"]]],
    }
    if 0 < y.sum() < y.size:
        balanced = balanced_metrics(y, p)
        out["prior_0.5"] = {k: balanced[k] for k in ("mcc", "accuracy", "reward", "tpr", "tnr")}
        out["prior_0.5"].update(ece_variants(y, p, n_bins, sample_weight=prior_sample_weights(y, 0.5)))
    out.update(ece_variants(y, p, n_bins))
    out["n_bins"] = int(n_bins)
    out["n_boot"] = int(n_boot)
    return out

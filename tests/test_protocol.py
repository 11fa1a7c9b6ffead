"""The validators' protocol and the final val_test evaluation: class balance, per-level metrics,
the reward formula, determinism, the miner's pipeline deciding as our Predictor does, and the
export and evaluate stages end to end."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import json
from pathlib import Path

import numpy as np
import pytest
from kit.bundles import EXPORT_A, calibrated_workspace, make_bundle, make_model_dir
from kit.train import TINY_MODEL, make_dataset
from PIL import Image

from roadwork.config import parse_params
from roadwork.data.examples import load_split
from roadwork.evaluate.calibration import ece
from roadwork.evaluate.compare import SUMMARY_KEYS, TIE, VERDICTS
from roadwork.evaluate.metrics import binary_metrics, prior_sample_weights
from roadwork.evaluate.protocol import (
    balanced_metrics,
    evaluate_scores,
    load_pipeline,
    pipeline_scores,
    protocol_comparisons,
    protocol_over_draws,
    query_rng,
    run_protocol,
    validator_challenge_image,
)
from roadwork.io import read_json
from roadwork.predict import Predictor, load_image


def pictures(n: int, seed: int = 0, size=(80, 60)) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [
        Image.fromarray(rng.integers(0, 256, (4, 5, 3), dtype=np.uint8)).resize(size, Image.BICUBIC) for _ in range(n)
    ]


# ------------------------------------------------------------------------------ balance & reward
def test_class_weights_make_a_balanced_stream():
    labels = np.array([1, 1, 0, 0, 0, 0, 0, 0])
    w = prior_sample_weights(labels, 0.5)
    assert w[labels == 1].sum() == pytest.approx(w[labels == 0].sum()) == pytest.approx(labels.size / 2)
    probs = np.array([0.9, 0.3, 0.6, 0.1, 0.2, 0.7, 0.4, 0.05])
    # the weighted metrics equal plain metrics on the same examples replicated into a 50/50 set
    replicated_y = np.r_[np.repeat(labels[labels == 1], 3), labels[labels == 0]]
    replicated_p = np.r_[np.repeat(probs[labels == 1], 3), probs[labels == 0]]
    plain = binary_metrics(replicated_y, replicated_p)
    balanced = balanced_metrics(labels, probs)
    assert balanced["mcc"] == pytest.approx(plain["mcc"])
    assert balanced["accuracy"] == pytest.approx(plain["accuracy"])
    assert balanced["accuracy"] == pytest.approx((balanced["tpr"] + balanced["tnr"]) / 2)
    assert balanced["mcc_unweighted"] == pytest.approx(binary_metrics(labels, probs)["mcc"])
    with pytest.raises(ValueError, match="both classes"):
        balanced_metrics([1, 1, 1], [0.2, 0.7, 0.9])


def test_reward_formula():
    labels = np.array([1, 0, 1, 0, 1, 0, 0, 0])
    probs = np.array([0.9, 0.2, 0.4, 0.1, 0.8, 0.6, 0.3, 0.2])
    m = balanced_metrics(labels, probs)
    assert m["reward"] == pytest.approx((0.5 * m["mcc"] + 0.5 * m["accuracy"]) ** 3)
    worse = balanced_metrics(labels, 1 - probs)  # negative MCC is clipped at 0, accuracy still counts
    assert worse["mcc"] < 0 and worse["reward"] == pytest.approx((0.5 * worse["accuracy"]) ** 3)


# ------------------------------------------------------------------------------ protocol
def brightness_score(images):
    """A cheap stand-in for a model: roadwork iff the picture is bright."""
    for image in images:
        assert image.size == (224, 224) and image.mode == "RGB"  # what validators send
    return np.array([np.asarray(image, dtype=np.float64).mean() / 255 for image in images])


@pytest.fixture(scope="module")
def toy():
    images = pictures(10, seed=1)
    labels = np.array([int(np.asarray(im).mean() > 127) for im in images])
    if labels.min() == labels.max():
        labels[:3] = 1 - labels[:3]
    return images, labels


def test_protocol_levels_mix_and_determinism(toy):
    images, labels = toy
    result = run_protocol(lambda i: images[i], labels, brightness_score, seed=7, chunk=4, workers=4)
    assert set(result["levels"]) == {"0", "1", "2", "3"}
    for level in result["levels"].values():
        assert {"mcc", "accuracy", "reward", "reward_simulated", "n"} <= level.keys() and level["n"] == 10
        assert level["reward"] == pytest.approx((0.5 * max(level["mcc"], 0) + 0.5 * level["accuracy"]) ** 3)
    mix = result["mix"]
    assert mix["n"] == 40  # every image through every level: 25% each
    pooled = np.concatenate([result["_probs"][level] for level in range(4)])
    assert mix["mcc"] == pytest.approx(balanced_metrics(np.tile(labels, 4), pooled)["mcc"])
    assert result["reward"] == mix["reward"] and result["mcc"] == mix["mcc"]

    again = run_protocol(lambda i: images[i], labels, brightness_score, seed=7, chunk=3, workers=1)  # other batching
    for level in range(4):
        np.testing.assert_array_equal(again["_probs"][level], result["_probs"][level])
    assert json.dumps({k: v for k, v in again.items() if k != "_probs"}, sort_keys=True) == json.dumps(
        {k: v for k, v in result.items() if k != "_probs"}, sort_keys=True
    )

    other = run_protocol(lambda i: images[i], labels, brightness_score, seed=8, chunk=4)
    np.testing.assert_array_equal(other["_probs"][0], result["_probs"][0])  # level 0 has no randomness
    for level in (1, 2, 3):
        assert not np.array_equal(other["_probs"][level], result["_probs"][level])


def test_protocol_over_draws_averages_independent_draws_with_their_interval(toy):
    from scipy import stats

    images, labels = toy
    over = protocol_over_draws(lambda i: images[i], labels, brightness_score, seed=7, draws=3, chunk=4)
    single = [run_protocol(lambda i: images[i], labels, brightness_score, seed=7 + k, chunk=4) for k in range(3)]
    rewards = [run["reward"] for run in single]
    assert over["reward_per_draw"] == rewards and over["draws"] == 3
    assert over["reward"] == pytest.approx(np.mean(rewards))
    half = stats.t.ppf(0.975, 2) * np.std(rewards, ddof=1) / np.sqrt(3)
    assert (over["reward_draws_ci95_low"], over["reward_draws_ci95_high"]) == pytest.approx(
        (np.mean(rewards) - half, np.mean(rewards) + half)
    )
    # the headline interval is over images, each bringing its draws and four levels
    from roadwork.evaluate.compare import reward_interval
    from roadwork.evaluate.metrics import prior_sample_weights

    pooled = np.stack([over["_probs"][str(level)] for level in (0, 1, 2, 3)], axis=1) > 0.5  # (draws, levels, n)
    interval = reward_interval(labels, pooled, weights=prior_sample_weights(np.asarray(labels), 0.5), seed=7)
    assert interval["reward"] == pytest.approx(over["reward"])
    assert (over["reward_ci95_low"], over["reward_ci95_high"]) == (interval["ci95_low"], interval["ci95_high"])
    assert over["reward_ci95_low"] < over["reward"] < over["reward_ci95_high"]
    level = over["levels"]["2"]
    assert level["reward_ci95_low"] <= level["reward"] <= level["reward_ci95_high"]
    assert over["levels"]["2"]["mcc"] == pytest.approx(np.mean([run["levels"]["2"]["mcc"] for run in single]))
    assert len(set(rewards)) > 1  # the draws differ: that is the noise the interval measures
    one = protocol_over_draws(lambda i: images[i], labels, brightness_score, seed=7, draws=1, chunk=4)
    assert one["reward"] == one["reward_draws_ci95_low"] == one["reward_draws_ci95_high"] == rewards[0]


def darkness_score(images):
    return 1 - brightness_score(images)


def without_probs(result: dict) -> str:
    return json.dumps({k: v for k, v in result.items() if k not in ("_probs", "others")}, sort_keys=True)


def test_other_scorers_answer_the_same_challenges_made_once(toy, monkeypatch):
    from roadwork.evaluate import protocol

    images, labels = toy
    alone = run_protocol(lambda i: images[i], labels, brightness_score, seed=7, chunk=4)
    other_alone = run_protocol(lambda i: images[i], labels, darkness_score, seed=7, chunk=4)
    made = []
    challenge = protocol.validator_challenge_image
    monkeypatch.setattr(protocol, "validator_challenge_image", lambda *a: made.append(1) or challenge(*a))
    both = run_protocol(lambda i: images[i], labels, brightness_score, seed=7, chunk=4, others={"dark": darkness_score})
    assert len(made) == 4 * len(images)  # each challenge image made once for both scorers
    assert without_probs(both) == without_probs(alone)  # the model's result is unchanged
    assert without_probs(both["others"]["dark"]) == without_probs(other_alone)
    for level in range(4):
        np.testing.assert_array_equal(both["_probs"][level], alone["_probs"][level])
        np.testing.assert_array_equal(both["others"]["dark"]["_probs"][level], other_alone["_probs"][level])


def test_protocol_comparisons_are_paired_per_level(toy):
    images, labels = toy
    over = protocol_over_draws(
        lambda i: images[i],
        labels,
        brightness_score,
        seed=7,
        draws=2,
        chunk=4,
        others={"same": brightness_score, "dark": darkness_score},
    )
    assert over["_probs"]["1"].shape == (2, len(images))  # draws x images
    same = protocol_comparisons(labels, over, "same", n_boot=100, seed=0)
    assert set(same["vs_same"]) == {"level_0", "level_1", "level_2", "level_3", "mix"}
    for comparison in same["vs_same"].values():  # a scorer against itself on the same challenges
        assert comparison == {"difference": 0.0, "ci95_low": 0.0, "ci95_high": 0.0, "verdict": TIE, "n": len(images)}
    dark = protocol_comparisons(labels, over, "dark", n_boot=100, seed=0)
    for level in ("0", "1", "2", "3"):
        comparison = dark["vs_dark"][f"level_{level}"]
        expected = over["levels"][level]["reward"] - over["others"]["dark"]["levels"][level]["reward"]
        assert comparison["difference"] == pytest.approx(expected, abs=1e-12)
        assert comparison["ci95_low"] <= comparison["difference"] <= comparison["ci95_high"]
        assert comparison["verdict"] in VERDICTS
    assert dark["vs_dark"]["mix"]["difference"] == pytest.approx(
        over["reward"] - over["others"]["dark"]["reward"], abs=1e-12
    )
    assert set(dark["levels_vs_level_0"]) == {"level_1", "level_2", "level_3"}
    for k, comparison in dark["levels_vs_level_0"].items():
        level = k.removeprefix("level_")
        expected = over["levels"][level]["reward"] - over["levels"]["0"]["reward"]
        assert comparison["difference"] == pytest.approx(expected, abs=1e-12)
    assert dark["levels_vs_level_0"] == same["levels_vs_level_0"]  # the model's own levels, whatever the other


def test_challenge_images_are_the_validators():
    image = pictures(1, size=(300, 200))[0]
    a = validator_challenge_image(image, 2, query_rng(0, 2, 5))
    b = validator_challenge_image(image, 2, query_rng(0, 2, 5))
    assert a.size == (224, 224) and np.array_equal(np.asarray(a), np.asarray(b))
    assert not np.array_equal(np.asarray(a), np.asarray(validator_challenge_image(image, 2, query_rng(0, 2, 6))))


def test_evaluate_scores_has_intervals_and_calibration(toy):
    _, labels = toy
    rng = np.random.default_rng(0)
    probs = np.clip(labels * 0.3 + rng.random(labels.size) * 0.7, 0, 1)
    small = evaluate_scores(labels, probs, n_boot=50, seed=0)
    for name in ("mcc", "accuracy"):
        assert small[f"{name}_ci95_low"] <= small[name] <= small[f"{name}_ci95_high"]
    assert sum(map(sum, small["confusion_matrix"]["rows_actual_cols_predicted"])) == labels.size
    assert {"auc", "ece_positive_uniform", "ece_top_label_uniform", "ece_positive_quantile"} <= small.keys()
    assert small["prior_0.5"]["mcc"] == pytest.approx(balanced_metrics(labels, probs)["mcc"])
    # ECE beside the raw figures, re-weighted to the validators' 50/50 stream
    weights = prior_sample_weights(labels, 0.5)
    assert small["ece_positive_uniform"] == ece(labels, probs, 15)
    for definition in ("positive", "top_label"):
        for strategy in ("uniform", "quantile"):
            key = f"ece_{definition}_{strategy}"
            assert small["prior_0.5"][key] == ece(labels, probs, 15, strategy, definition, weights)
    assert small["prior_0.5"]["ece_positive_uniform"] != small["ece_positive_uniform"]
    more = evaluate_scores(labels, probs, n_boot=400, seed=0)
    bounds = ("mcc_ci95_low", "mcc_ci95_high", "accuracy_ci95_low", "accuracy_ci95_high")
    assert [more[k] for k in bounds] != [small[k] for k in bounds]


# ------------------------------------------------------------------------------ the miner's call
@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("protocol_data")
    make_dataset(root)
    return root


def test_pipeline_decisions_on_val_test_equal_the_predictor(tmp_path, dataset):
    """The issue's check: the stock miner's transformers pipeline and our Predictor (single
    view) decide the same on val_test images, as they are and as the validators send them."""
    examples = load_split(dataset / "data" / "raw", dataset / "data" / "split" / "splits.csv", "val_test")
    images = [load_image(e.path) for e in examples]
    # put the folded threshold in the widest gap near the median logit: both decisions occur
    probe = make_bundle(tmp_path / "probe", temperature=1.0, threshold_logit=0.0)
    z = np.sort(np.log(p := Predictor(probe).predict(images)) - np.log1p(-p))
    middle = np.arange(len(z) // 4, 3 * len(z) // 4)
    k = middle[np.argmax(z[middle + 1] - z[middle])]
    bundle = make_bundle(tmp_path / "shipped", temperature=1.3, threshold_logit=float((z[k] + z[k + 1]) / 2))

    pipe = load_pipeline(bundle)
    predictor = Predictor(bundle)
    challenges = [
        validator_challenge_image(image, level, query_rng(0, level, i))
        for i, image in enumerate(images)
        for level in range(4)
    ]
    for batch in (images, challenges):
        ours = predictor.predict(batch)
        theirs = pipeline_scores(pipe, batch, batch_size=5)
        np.testing.assert_array_equal(theirs > 0.5, ours > 0.5)
        np.testing.assert_allclose(theirs, ours, atol=1e-5)
    decisions = predictor.predict(images) > 0.5
    assert 0 < decisions.sum() < len(decisions)


# ------------------------------------------------------------------------------ the export stage
EXPORT_B = {
    "model_name": "name-b",
    "version": "2.0.0",
    "submitted_by": "5Hotkey",
    "onnx": True,
    "bootstrap": 60,
    "protocol_seed": 1,
    "protocol_draws": 1,
    "latency_budget_s": 1e-6,
}


def run_export(tag: str, settings: dict, split: str = "data/split") -> tuple[dict, dict, dict]:
    """The export stage's recipe into data/bundle_<tag>: (metrics, card, manifest)."""
    from roadwork.stages.export import export

    metrics = export(
        parse_params({"model": TINY_MODEL, "export": settings}),
        Path(f"data/bundle_{tag}"),
        Path("data/calibrate/calibration.json"),
        Path("data/raw"),
        Path(split),
        Path("dvc.lock"),
        progress=False,
    )
    return metrics, read_json(f"data/bundle_{tag}/model_card.json"), read_json(f"data/bundle_{tag}/manifest.json")


def all_keys(obj) -> list[str]:
    """Every mapping key in a JSON-like record, nested ones included."""
    if isinstance(obj, dict):
        return [*obj, *(k for v in obj.values() for k in all_keys(v))]
    if isinstance(obj, list):
        return [k for v in obj for k in all_keys(v)]
    return []


@pytest.fixture
def exported(tmp_path, dataset, monkeypatch):
    """A calibrated workspace with two bundles built by the export stage (EXPORT_A, EXPORT_B)."""
    calibration = calibrated_workspace(tmp_path, dataset, monkeypatch)
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")  # the card's submission time
    return calibration, {tag: run_export(tag, settings) for tag, settings in (("a", EXPORT_A), ("b", EXPORT_B))}


def test_export_stage_builds_the_bundle_and_decides_views_on_val_select(exported):
    """Every export key shows in the bundle; the views decision is val_select's; no val_test figure."""
    from roadwork.export.provenance import dvc_md5
    from roadwork.miner.manifest import verify_manifest

    calibration, results = exported
    metrics, card, manifest = results["a"]
    assert set(metrics) == {"bundle", "checks", "onnx", "sizes_bytes", "multiview", "timings_s"}
    inference = read_json("data/bundle_a/inference.json")  # what the detector reads
    for record in (metrics, card, manifest["metrics"], manifest["inference"], inference):  # no val_test figure
        assert not [key for key in all_keys(record) if "val_test" in key], all_keys(record)
    assert verify_manifest("data/bundle_a") == [] and verify_manifest("data/bundle_b") == []
    assert metrics["sizes_bytes"]["total"] == sum(v for k, v in metrics["sizes_bytes"].items() if k != "total")
    assert metrics["sizes_bytes"]["model.safetensors"] == Path("data/bundle_a/model.safetensors").stat().st_size
    assert set(metrics["timings_s"]) == {"build_s", "decision_s"}
    multiview = metrics["multiview"]
    assert {"threshold", "use_multiview", "val_select", "settings", "rule"} <= multiview.keys()
    n_select = len(load_split(Path("data/raw"), Path("data/split/splits.csv"), "val_select"))
    assert multiview["val_select"]["n"] == n_select
    difference = multiview["val_select"]["mcc_prior_0.5_difference"]
    assert difference["ci95_low"] <= difference["difference"] <= difference["ci95_high"]
    assert multiview["use_multiview"] == (difference["ci95_low"] > 0)
    assert "val_select" in multiview["rule"] and "val_test is not read" in multiview["rule"]
    assert inference["views"] == ("multi" if multiview["use_multiview"] else "single") == metrics["bundle"]["views"]
    assert inference["multiview"]["threshold"] == pytest.approx(multiview["threshold"], abs=1e-6)
    assert set(inference["measured"]) == {"val_select"} and inference["rule"] == multiview["rule"]
    assert manifest["provenance"]["data/split"] == dvc_md5(Path("data/split"))
    assert manifest["provenance"]["data/phase1"].endswith(".dir")
    assert manifest["decision"]["temperature"] == calibration["temperature"]
    assert manifest["decision"]["threshold_logit"] == calibration["threshold_logit"]
    assert card["metrics"]["val_select"]["n"] > 0

    other, card_b, _ = results["b"]
    assert (card["model_name"], card["version"], card["submitted_by"]) == ("name-a", "1.0.0", "")
    assert (card_b["model_name"], card_b["version"], card_b["submitted_by"]) == ("name-b", "2.0.0", "5Hotkey")
    assert not Path("data/bundle_a/model.onnx").exists() and Path("data/bundle_b/model.onnx").exists()
    assert metrics["onnx"] is None and other["onnx"]["max_abs_logit_diff"] <= other["onnx"]["tolerance"]
    assert other["bundle"]["onnx"] and "transformers_max_abs_diff" in metrics["checks"]
    # export.bootstrap and export.protocol_seed drive the decision's paired interval
    assert multiview["val_select"]["mcc_difference"]["n_boot"] == 50
    assert other["multiview"]["val_select"]["mcc_difference"]["n_boot"] == 60


def test_export_output_does_not_depend_on_val_test_labels(exported):
    """val_test is report-only: with every val_test label flipped, the export builds the same bundle and
    the same metrics (only the provenance's hash of the split folder, which records the change, differs)."""
    import shutil

    from roadwork.io import format_csv, read_csv

    _, results = exported
    rows = read_csv(Path("data/split/splits.csv"))
    source = Path("data/split").resolve()
    Path("data/split").unlink()  # the dataset's, linked: replaced by a copy with val_test's labels flipped
    shutil.copytree(source, "data/split")
    flipped = [{**r, "label": str(1 - int(r["label"]))} if r["split"] == "val_test" else r for r in rows]
    assert flipped != rows
    Path("data/split/splits.csv").write_text(format_csv(flipped, list(rows[0])))
    metrics, card, manifest = run_export("flipped", EXPORT_A)
    before_metrics, before_card, before_manifest = results["a"]
    assert {k: v for k, v in metrics.items() if k != "timings_s"} == {
        k: v for k, v in before_metrics.items() if k != "timings_s"
    }
    assert card == before_card
    for name in ("config.json", "model.safetensors", "inference.json", "model_card.json"):
        assert Path(f"data/bundle_flipped/{name}").read_bytes() == Path(f"data/bundle_a/{name}").read_bytes(), name
    split_hash = manifest["provenance"].pop("data/split")
    assert split_hash != before_manifest["provenance"].pop("data/split")
    assert manifest == before_manifest


def test_evaluate_stage_end_to_end(exported):
    """The evaluate stage on the exported bundles: every report key, every comparison, dvclive plots; every
    evaluation key of params.export shows in the outputs."""
    from dvclive import Live
    from roadwork.evaluate.logits import split_logits
    from roadwork.evaluate.metrics import mcc_at
    from roadwork.stages.calibrate import candidates
    from roadwork.stages.evaluate import evaluate, headline

    _, built = exported
    results = {}
    for tag, settings in (("a", EXPORT_A), ("b", EXPORT_B)):
        config = parse_params({"model": TINY_MODEL, "export": settings})
        live = Live("dvclive/evaluate", dvcyaml=None, save_dvc_exp=False) if tag == "a" else None
        results[tag] = evaluate(
            config,
            Path(f"data/bundle_{tag}"),
            Path("data/calibrate/calibration.json"),
            Path("data/raw"),
            Path("data/split"),
            candidates(),
            live=live,
            progress=False,
        )
        if live is not None:
            live.end()

    metrics = results["a"]
    assert set(metrics) == {"protocol", "val_test", "comparisons", "power", "multiview", "latency", "bundle"}
    protocol = metrics["protocol"]
    assert {
        "reward",
        "reward_ci95_low",
        "reward_ci95_high",
        "reward_simulated",
        "mcc",
        "accuracy",
        "levels",
        "mix",
        "reward_per_draw",
    } <= protocol.keys()
    assert protocol["draws"] == 2 and len(protocol["reward_per_draw"]) == 2
    assert protocol["reward"] == pytest.approx(np.mean(protocol["reward_per_draw"]), abs=1e-6)
    assert protocol["reward_ci95_low"] <= protocol["reward"] <= protocol["reward_ci95_high"]
    assert set(protocol["levels"]) == {"0", "1", "2", "3"}
    assert metrics["val_test"]["n"] == 12
    assert metrics["val_test"]["mcc_ci95_low"] <= metrics["val_test"]["mcc"] <= metrics["val_test"]["mcc_ci95_high"]
    assert metrics["val_test"]["agreement_with_saved_logits"] == 1.0  # the bundle decides as the saved logits
    # the views decision (export, val_select) reported on val_test
    multiview, decided = metrics["multiview"], built["a"][0]["multiview"]
    assert multiview["threshold"] == decided["threshold"] and multiview["use_multiview"] == decided["use_multiview"]
    assert multiview["rule"] == decided["rule"] and "val_select" in multiview["decided_on"]
    difference = multiview["val_test"]["mcc_prior_0.5_difference"]
    assert multiview["val_test"]["n"] == 12
    assert difference["ci95_low"] <= difference["difference"] <= difference["ci95_high"]
    inference = read_json("data/bundle_a/inference.json")
    assert protocol["views"] == inference["views"] == metrics["bundle"]["views"]
    latency = metrics["latency"]
    assert latency["device"] == "cpu" and set(latency["views"]) == {"1", str(latency["configured_views"])}
    assert all(v["detector_s"] > 0 for v in latency["views"].values()) and latency["budget_s"] == 4.0
    assert latency["warning"] is None
    warned = results["b"]["latency"]["warning"]  # export.latency_budget_s: 1e-6 s
    assert "export.latency_budget_s = 1e-06 s" in warned and "predict.multiview_grid" in warned
    # every comparison: a paired interval around its difference, and a verdict
    compared = metrics["comparisons"]
    assert set(compared) == {
        "phase4_vs_phase1",
        "multiview_vs_single_view",
        "model_vs_colour_baseline",
        "protocol_vs_colour_baseline",
        "protocol_levels_vs_level_0",
    }
    assert set(compared["protocol_vs_colour_baseline"]) == {"level_0", "level_1", "level_2", "level_3", "mix"}
    assert set(compared["protocol_levels_vs_level_0"]) == {"level_1", "level_2", "level_3"}
    flat = [compared[k] for k in ("phase4_vs_phase1", "multiview_vs_single_view", "model_vs_colour_baseline")]
    flat += [*compared["protocol_vs_colour_baseline"].values(), *compared["protocol_levels_vs_level_0"].values()]
    for comparison in flat:
        assert set(comparison) == set(SUMMARY_KEYS) and comparison["n"] == 12
        assert comparison["ci95_low"] <= comparison["difference"] <= comparison["ci95_high"]
        assert comparison["verdict"] in VERDICTS
    assert compared["multiview_vs_single_view"] == {k: difference[k] for k in SUMMARY_KEYS}
    baseline = protocol["others"]["colour_baseline"]  # the baseline answered the same challenges
    assert compared["protocol_vs_colour_baseline"]["mix"]["difference"] == pytest.approx(
        protocol["reward"] - baseline["reward"], abs=2e-6
    )
    assert compared["protocol_levels_vs_level_0"]["level_2"]["difference"] == pytest.approx(
        protocol["levels"]["2"]["reward"] - protocol["levels"]["0"]["reward"], abs=2e-6
    )
    phases = compared["phase4_vs_phase1"]  # saved logits at their own thresholds, 50/50

    def balanced_mcc(name):
        logits, y = split_logits(Path(f"data/{name}/logits.csv"), "val_test")
        return mcc_at(logits, y, read_json(f"data/threshold/{name}.json")["threshold"], prior_sample_weights(y, 0.5))

    assert phases["difference"] == pytest.approx(balanced_mcc("phase4") - balanced_mcc("phase1"), abs=2e-6)
    power = metrics["power"]
    assert 0 < power["mdd_mcc_vs_fixed_reference"] and 0 <= power["mdd_mcc_phase4_vs_phase1"]
    assert "80% power" in power["explanation"]
    lines = headline(metrics)
    assert lines["comparisons.protocol_vs_colour_baseline.mix"].endswith(
        compared["protocol_vs_colour_baseline"]["mix"]["verdict"]
    )

    other = results["b"]
    assert metrics["val_test"]["n_boot"] == 50 and other["val_test"]["n_boot"] == 60
    bounds = ("mcc_ci95_low", "mcc_ci95_high", "accuracy_ci95_low", "accuracy_ci95_high")
    assert [metrics["val_test"][k] for k in bounds] != [other["val_test"][k] for k in bounds]
    assert other["protocol"]["seed"] == 1 and other["protocol"]["levels"]["1"] != protocol["levels"]["1"]
    assert other["protocol"]["draws"] == 1 and other["protocol"]["reward"] == other["protocol"]["reward_per_draw"][0]
    for key in ("mcc", "accuracy", "reward"):  # level 0 has no augmentation randomness
        assert other["protocol"]["levels"]["0"][key] == protocol["levels"]["0"][key]
    for kind in ("roc", "precision_recall", "confusion_matrix"):
        assert Path(f"dvclive/evaluate/plots/sklearn/{kind}.json").exists()


def test_evaluate_refuses_a_bundle_changed_after_export(exported):
    from roadwork.stages.calibrate import candidates
    from roadwork.stages.evaluate import EvaluateError, evaluate

    Path("data/bundle_a/inference.json").write_text("{}")
    with pytest.raises(EvaluateError, match="files differ from manifest.json: \\['inference.json'\\]"):
        evaluate(
            parse_params({"model": TINY_MODEL, "export": EXPORT_A}),
            Path("data/bundle_a"),
            Path("data/calibrate/calibration.json"),
            Path("data/raw"),
            Path("data/split"),
            candidates(),
            progress=False,
        )
    with pytest.raises(EvaluateError, match="run the export stage first"):
        evaluate(
            parse_params({}),
            Path("data/no_bundle"),
            Path("data/calibrate/calibration.json"),
            Path("data/raw"),
            Path("data/split"),
            candidates(),
            progress=False,
        )


def test_export_refuses_weights_that_were_not_calibrated(tmp_path, monkeypatch):
    from roadwork.stages.export import ExportError, export

    monkeypatch.chdir(tmp_path)
    make_model_dir(tmp_path / "data" / "phase1")
    Path("data/calibrate").mkdir(parents=True)
    Path("data/calibrate/calibration.json").write_text(
        json.dumps(
            {
                "model": "phase1",
                "model_dir": "data/phase1",
                "model_sha256": "0" * 64,
                "temperature": 1.0,
                "threshold_logit": 0.0,
            }
        )
    )
    with pytest.raises(ExportError, match="not the model that was calibrated"):
        export(
            parse_params({}),
            Path("data/bundle"),
            Path("data/calibrate/calibration.json"),
            Path("data/raw"),
            Path("data/split"),
            Path("dvc.lock"),
            progress=False,
        )
    assert not Path("data/bundle").exists()


def test_export_and_evaluate_run_as_their_stage_commands(tmp_path, dataset, monkeypatch):
    """`python -m roadwork.stages.export` then `... evaluate` in a calibrated workspace: the paths of the
    table (stages.common), the bundle, metrics/export.json's build facts and metrics/evaluate.json's reports."""
    import subprocess
    import sys

    from kit.train import write_params

    calibrated_workspace(tmp_path, dataset, monkeypatch)
    write_params(tmp_path, export={**EXPORT_A, "protocol_draws": 1})
    for stage in ("export", "evaluate"):
        done = subprocess.run(
            [sys.executable, "-m", f"roadwork.stages.{stage}"], capture_output=True, text=True, timeout=600
        )
        assert done.returncode == 0, done.stderr[-3000:]
        assert f"== {stage}: done" in done.stdout
    exported, evaluated = read_json("metrics/export.json"), read_json("metrics/evaluate.json")
    assert set(exported) == {"bundle", "checks", "onnx", "sizes_bytes", "multiview", "timings_s"}
    assert set(evaluated) == {"protocol", "val_test", "comparisons", "power", "multiview", "latency", "bundle"}
    assert evaluated["bundle"] == exported["bundle"] and Path("data/bundle/inference.json").is_file()
    assert evaluated["multiview"]["threshold"] == exported["multiview"]["threshold"]
    assert not Path("dvclive/export").exists()
    for kind in ("roc", "precision_recall", "confusion_matrix"):
        assert Path(f"dvclive/evaluate/plots/sklearn/{kind}.json").exists()

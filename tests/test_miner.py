"""The miner detector in our own environment (the miner's pinned one: tests/miner_env_check.py), the
multi-view decision, inference.json and latency (`roadwork publish`: test_publish.py)."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import ast
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from kit.bundles import make_bundle
from kit.images import pictures

from roadwork.evaluate.threshold import best_threshold
from roadwork.export.bundle import verify_manifest
from roadwork.io import read_csv
from roadwork.miner import decision, detector, latency
from roadwork.miner.detector import DetectorConfigError, RoadworkTimmDetector, fold_threshold
from roadwork.predict import Predictor, topk_mean

MULTIVIEW = {"grid": 2, "overlap": 0.2, "topk": 3, "flip_tta": False}


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return make_bundle(tmp_path_factory.mktemp("miner"), temperature=1.5, threshold_logit=0.1)


def with_inference(bundle: Path, tmp_path: Path, config: dict) -> Path:
    import shutil

    copy = tmp_path / "bundle"
    shutil.copytree(bundle, copy)
    decision.write_inference_config(copy, config)
    return copy


# ------------------------------------------------------------------------------ detector
def test_single_view_equals_predictor(bundle):
    images = pictures(10, seed=3)
    expected = Predictor(bundle, device="cpu").predict(images)
    found = RoadworkTimmDetector(config_name=None, bundle=str(bundle))
    assert not found.multiview and found.views_per_query == 1
    got = np.array([found(image) for image in images])
    assert np.abs(got - expected).max() < 1e-5
    assert ((got > 0.5) == (expected > 0.5)).all()


@pytest.mark.parametrize("flip_tta", [False, True])
def test_multi_view_equals_predictor_with_its_threshold_folded(bundle, tmp_path, flip_tta):
    images = pictures(10, seed=4)
    settings = {**MULTIVIEW, "flip_tta": flip_tta}
    aggregate = Predictor(
        bundle, settings["overlap"], settings["topk"], settings["grid"], flip_tta, device="cpu"
    ).predict(images, multiview=True)
    tau = float(np.median(aggregate))
    copy = with_inference(bundle, tmp_path, {"views": "multi", "multiview": {**settings, "threshold": tau}})
    found = RoadworkTimmDetector(config_name=None, bundle=str(copy))
    assert found.multiview and found.views_per_query == 5 * (2 if flip_tta else 1)
    got = np.array([found(image) for image in images])
    expected = np.array([fold_threshold(a, tau) for a in aggregate])
    assert np.abs(got - expected).max() < 1e-5
    assert ((got > 0.5) == (aggregate > tau)).all() and 0 < (got > 0.5).sum() < len(images)
    assert np.abs(np.array(found.batch(images)) - got).max() < 1e-5  # the export's batched evaluation


def test_batch_is_the_per_query_answer_for_single_view(bundle):
    images = pictures(7, seed=5)
    found = RoadworkTimmDetector(config_name=None, bundle=str(bundle))
    assert np.abs(np.array(found.batch(images)) - np.array([found(image) for image in images])).max() < 1e-5


def reference_scores(bundle: Path, images, multiview: bool, flip: bool, settings: dict) -> np.ndarray:
    """The scores written out from their definitions (README "predict", the detector's docstring), through
    transformers' own loader and image processor (the stock miner's path), not the engine: the single
    view is softmax(logits)[1] of the whole image (never flipped); multi-view is the top-k mean of the
    whole image's and the tiles' probabilities, each averaged with its mirrored view's under flip TTA."""
    from roadwork.evaluate.protocol import load_miner_model

    model, processor = load_miner_model(bundle)

    def probabilities(pixels):
        with torch.no_grad():
            return torch.softmax(model(pixel_values=pixels).logits.double(), dim=-1)[:, 1]

    out = []
    for image in images:
        crops = [image] + (
            [image.crop(b) for b in detector.tile_boxes(*image.size, settings["grid"], settings["overlap"])]
            if multiview
            else []
        )
        pixels = processor([c.convert("RGB") for c in crops], return_tensors="pt")["pixel_values"]
        p = probabilities(pixels)
        if multiview and flip:
            p = (p + probabilities(torch.flip(pixels, dims=[-1]))) / 2
        out.append(float(p[0]) if not multiview else float(p.sort(descending=True).values[: settings["topk"]].mean()))
    return np.array(out)


@pytest.mark.parametrize("multiview", [False, True], ids=["single", "multi"])
@pytest.mark.parametrize("flip", [False, True], ids=["no_flip", "flip"])
def test_one_engine_for_every_views_and_flip_combination(bundle, tmp_path, multiview, flip):
    """Predictor, `roadwork predict`, the export's scoring and the miner's detector (per query and
    batched, views from inference.json as the export writes it) give the scores of the definitions;
    flip TTA changes multi-view only; the multi-view threshold is folded in the same way everywhere."""
    from types import SimpleNamespace

    from roadwork.cli import main
    from roadwork.evaluate.protocol import validator_resize
    from roadwork.predict import load_image
    from roadwork.stages.export import score_views

    settings = {**MULTIVIEW, "flip_tta": flip}
    folder = tmp_path / "originals"
    folder.mkdir()
    for i, image in enumerate(pictures(8, seed=21)):
        image.save(folder / f"{i}.png")
    originals = sorted(folder.iterdir())
    small = [validator_resize(load_image(p)) for p in originals]  # what the export scores at 224 x 224
    raw = reference_scores(bundle, small, multiview, flip, settings)
    if multiview:  # flip TTA makes a difference here, and the threshold is fitted for these settings
        assert np.abs(raw - reference_scores(bundle, small, True, not flip, settings)).max() > 1e-4
        tau = float(np.median(raw))
        expected = np.array([fold_threshold(a, tau) for a in raw])
        assert 0 < (expected > 0.5).sum() < len(expected)
    else:
        tau, expected = None, raw
    copy = with_inference(
        bundle,
        tmp_path,
        {"views": "multi" if multiview else "single", "multiview": {**settings, "threshold": float(np.median(raw))}},
    )
    args = (settings["overlap"], settings["topk"], settings["grid"], flip)

    # Predictor: raw top-k mean without a threshold, the miner's answer with it
    assert np.abs(Predictor(copy, *args, device="cpu").predict(small, multiview) - raw).max() < 1e-5
    predictor = Predictor(copy, *args, multiview_threshold=tau, device="cpu")
    assert np.abs(predictor.predict(small, multiview) - expected).max() < 1e-5
    # the export's scoring (no threshold yet: it is fitted on these)
    scores = score_views(
        Predictor(copy, *args, device="cpu"), [SimpleNamespace(path=p) for p in originals], progress=False
    )
    assert np.abs(scores["v224_multi" if multiview else "v224_single"] - raw).max() < 1e-5
    # the miner's detector, views and threshold from inference.json
    found = RoadworkTimmDetector(config_name=None, bundle=str(copy), device="None")
    assert found.multiview == multiview and found.views_per_query == (5 * (1 + flip) if multiview else 1)
    assert np.abs(np.array([found(image) for image in small]) - expected).max() < 1e-5
    assert np.abs(np.array(found.batch(small)) - expected).max() < 1e-5
    # `roadwork predict`: the bundle's threshold is folded in when the settings are the fitted ones
    pngs = tmp_path / "small"
    pngs.mkdir()
    for i, image in enumerate(small):
        image.save(pngs / f"{i}.png")
    out = tmp_path / "predictions.csv"
    options = [
        "--multiview",
        "--grid",
        str(settings["grid"]),
        "--overlap",
        str(settings["overlap"]),
        "--topk",
        str(settings["topk"]),
    ] * multiview + ["--flip-tta"] * (multiview and flip)
    assert (
        main(["predict", str(pngs), "--bundle", str(copy), "--out", str(out), "--quiet", "--device", "cpu", *options])
        == 0
    )
    rows = sorted(read_csv(out), key=lambda r: int(Path(r["path"]).stem))
    assert np.abs(np.array([float(r["probability"]) for r in rows]) - expected).max() < 1e-5


def test_yaml_config_and_views_override(bundle, tmp_path):
    copy = with_inference(bundle, tmp_path, {"views": "multi", "multiview": {**MULTIVIEW, "threshold": 0.4}})
    config = tmp_path / "roadwork_timm.yaml"
    config.write_text(yaml.safe_dump({"bundle": "bundle", "hf_repo": "", "views": "single", "threads": 0}))
    found = RoadworkTimmDetector(config_name=str(config), device="auto")  # bundle relative to the YAML's folder
    assert found.bundle_path == copy and not found.multiview and found.device.type in ("cpu", "cuda")
    assert RoadworkTimmDetector(config_name=str(config), views="bundle").multiview  # inference.json says multi


def test_fold_threshold_puts_the_threshold_at_one_half():
    rng = np.random.default_rng(0)
    for tau in (0.05, 0.3, 0.5, 0.77, 0.999):
        a = np.sort(rng.uniform(0, 1, 500))
        folded = np.array([fold_threshold(v, tau) for v in a])
        assert ((folded > 0.5) == (a > tau)).all()
        assert np.all(np.diff(folded) >= 0) and folded.min() >= 0 and folded.max() <= 1
        assert fold_threshold(tau, tau) == pytest.approx(0.5, abs=1e-12)
    assert fold_threshold(0.3, 0.5) == pytest.approx(0.3, abs=1e-12)
    with pytest.raises(ValueError, match="threshold"):
        fold_threshold(0.3, 1.0)


def test_tile_boxes_have_one_home():
    """One home: the detector's (self-contained) tile_boxes, which the predictor reaches through the
    detector it wraps (tested in test_predict); roadwork.predict keeps no copy or alias of its own."""
    import roadwork.predict

    assert callable(detector.tile_boxes)
    assert not hasattr(roadwork.predict, "tile_boxes")


def test_importing_the_predictor_loads_no_model_library():
    """roadwork.predict imports the detector module: that must not pull in timm, transformers,
    huggingface_hub or a base_miner package, nor register anything."""
    import subprocess
    import sys

    code = (
        "import sys, roadwork.predict, roadwork.miner.detector as d; "
        "print(sorted(m for m in ('timm', 'transformers', 'huggingface_hub', 'base_miner') if m in sys.modules), "
        "d.DETECTOR_REGISTRY)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    assert done.stdout.split() == ["[]", "None"], done.stdout + done.stderr


def test_topk_mean_agrees_with_the_predictors():
    """The detector's torch top-k mean and the predictor's numpy one give the same aggregate."""
    rng = np.random.default_rng(11)
    probabilities = rng.random((20, 9))
    probabilities[:, 3] = probabilities[:, 5]  # ties
    for k in (1, 3, 9, 99):
        got = detector.topk_mean(torch.from_numpy(probabilities), k).numpy()
        assert np.abs(got - topk_mean(probabilities, k)).max() < 1e-15


def test_configuration_errors_name_the_setting(bundle, tmp_path):
    with pytest.raises(DetectorConfigError, match="unknown setting"):
        RoadworkTimmDetector(config_name=None, bundle=str(bundle), weights="x")
    with pytest.raises(DetectorConfigError, match="views"):
        RoadworkTimmDetector(config_name=None, bundle=str(bundle), views="all")
    with pytest.raises(DetectorConfigError, match="no hf_repo"):
        RoadworkTimmDetector(config_name=None, bundle=str(tmp_path / "nothing"))
    with pytest.raises(DetectorConfigError, match="not found"):
        RoadworkTimmDetector(config_name="no_such.yaml")
    with pytest.raises(DetectorConfigError, match="multiview.threshold"):
        RoadworkTimmDetector(config_name=None, bundle=str(bundle), views="multi", multiview=MULTIVIEW)
    broken = with_inference(bundle, tmp_path, {"views": "multi"})
    (broken / "inference.json").write_text("{not json")
    with pytest.raises(DetectorConfigError, match="inference.json: cannot read"):
        RoadworkTimmDetector(config_name=None, bundle=str(broken))
    with pytest.raises(DetectorConfigError, match="device must be cpu, cuda, cuda:N or auto, got 'tpu'"):
        RoadworkTimmDetector(config_name=None, bundle=str(bundle), device="tpu")


@pytest.mark.parametrize("device", [None, "None", "none", "", "cpu", "CPU"])
def test_a_missing_or_none_device_is_the_cpu(bundle, device):
    """start_miner.sh passes the string "None" when miner.env has no IMAGE_DETECTOR_DEVICE: the CPU, as the
    subnet's FeatureDetector falls back to it."""
    assert detector.resolve_device(device) == torch.device("cpu")
    assert RoadworkTimmDetector(config_name=None, bundle=str(bundle), device=device).device == torch.device("cpu")


def test_cuda_only_where_it_is_available():
    expected = torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    assert detector.resolve_device("cuda") == expected == detector.resolve_device("auto")


def test_detector_needs_only_what_the_miners_lock_has():
    """Self-contained (copied into base_miner/detectors/): no roadwork, no transformers."""
    tree = ast.parse(Path(detector.__file__).read_text())
    modules = {
        alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names
    }
    modules |= {
        node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module
    }
    allowed_third_party = {"torch", "timm", "yaml", "PIL", "huggingface_hub", "safetensors", "base_miner"}
    stdlib = {"__future__", "importlib", "json", "math", "pathlib"}
    assert modules - stdlib <= allowed_third_party, modules - stdlib - allowed_third_party
    assert detector.DETECTOR_REGISTRY is None  # base_miner is not importable here


def test_detector_reads_weights_without_pickle():
    """No torch.load and no timm ``local-dir:`` loading (timm 1.0.22 reads model.safetensors through
    torch.load, which unpickles and fails on the miner's torch 2.6.0): safetensors only. The real check
    runs in the miner's torch 2.6.0 (tests/miner_env_check.py)."""
    text = Path(detector.__file__).read_text()
    calls = {ast.unparse(node.func) for node in ast.walk(ast.parse(text)) if isinstance(node, ast.Call)}
    assert not {c for c in calls if c.endswith("torch.load") or c == "load_state_dict_from_path"}, calls
    assert '"local-dir:' not in text and "f'local-dir:" not in text and "load_file" in calls


def test_shipped_yaml_is_the_detectors_defaults():
    shipped = yaml.safe_load((Path(detector.__file__).parent / "configs" / detector.DEFAULT_CONFIG).read_text())
    assert set(shipped) == {"bundle", "hf_repo", "views", "threads", "device"}
    assert shipped["views"] == "bundle" and shipped["bundle"] == "base_miner/RoadworkTimm/weights"


# ------------------------------------------------------------------------------ decision
def synthetic_scores(n: int, seed: int, multi_noise: float):
    """Labels, shipped single-view probabilities (noise 1), and a multi-view aggregate shifted upward
    (as the top-k mean is) with noise ``multi_noise`` (below 1: multi-view sees more)."""
    rng = np.random.default_rng(seed)
    y = (rng.uniform(size=n) < 0.3).astype(int)
    signal = 1.2 * (2 * y - 1)
    single = 1 / (1 + np.exp(-(signal + rng.normal(size=n))))
    multi = 1 / (1 + np.exp(-(signal + multi_noise * rng.normal(size=n) + 1.5)))
    return y, single, multi


def test_multiview_threshold_is_the_exact_sweep_on_val_select():
    y, single, multi = synthetic_scores(400, 0, 1.0)
    result = decision.multiview_decision(y, single, multi, n_boot=200)
    fit = best_threshold(multi, y, 0.5, default_threshold=0.5)["reweighted"]
    assert result["threshold"] == fit["threshold"] and result["threshold"] > 0.5  # the top-k shift, undone
    select = result["val_select"]
    assert select["n"] == 400 and select["folds"] == decision.FOLDS
    # cross-fitted: each fold decided at a threshold fitted without it, a little worse than in-sample
    assert select["multi_cross_fitted"]["mcc_prior_0.5"] <= select["multi_in_sample"]["mcc_prior_0.5"] + 1e-12
    assert "val_select" in result["rule"] and "val_test is not read" in result["rule"]
    assert json.loads(json.dumps(result)) == result

    # the report on another split (val_test), at the shipped threshold
    y_test, single_test, multi_test = synthetic_scores(400, 1, 1.0)
    test = decision.multiview_report(y_test, single_test, multi_test, result["threshold"], n_boot=200)
    assert test["multi"]["mcc_prior_0.5"] > test["multi_at_0.5_unfitted"]["mcc_prior_0.5"]
    assert test["n"] == 400 and "mcc_prior_0.5_difference" in test


def test_cross_fitted_decisions_use_thresholds_fitted_without_their_fold():
    y, _, multi = synthetic_scores(200, 6, 1.0)
    folds = decision.stratified_folds(y, 5, seed=3)
    assert set(folds) == set(range(5))
    for k in range(5):  # both classes in every fold, dealt evenly
        assert abs(int(y[folds == k].sum()) - y.sum() / 5) <= 1
    crossed = decision.cross_fitted_decisions(y, multi, target_prior=0.5, folds=5, seed=3)
    for k in range(5):
        held = folds == k
        tau, _ = decision.fit_multiview_threshold(y[~held], multi[~held], 0.5)
        np.testing.assert_array_equal(crossed[held], multi[held] > tau)


def test_multiview_is_used_only_when_the_paired_interval_is_above_zero():
    y, single, multi = synthetic_scores(1500, 2, 0.5)
    helps = decision.multiview_decision(y, single, multi, n_boot=300, seed=1)
    assert helps["val_select"]["mcc_prior_0.5_difference"]["ci95_low"] > 0 and helps["use_multiview"]

    y, single, multi = synthetic_scores(1500, 4, 2.0)
    hurts = decision.multiview_decision(y, single, multi, n_boot=300, seed=1)
    assert hurts["val_select"]["mcc_prior_0.5_difference"]["difference"] < 0 and not hurts["use_multiview"]
    assert decision.inference_config(hurts, **MULTIVIEW)["views"] == "single"
    assert decision.inference_config(helps, **MULTIVIEW)["views"] == "multi"
    assert "val_test" not in decision.inference_config(helps, **MULTIVIEW)["measured"]
    with pytest.raises(ValueError, match="val_select holds one class only"):
        decision.multiview_decision([1, 1, 1], [0.6, 0.7, 0.8], [0.7, 0.8, 0.9], n_boot=10)


def test_write_inference_config_keeps_the_manifest_true(bundle, tmp_path):
    before = json.loads((bundle / "manifest.json").read_text())
    copy = with_inference(bundle, tmp_path, {"views": "single", "multiview": {**MULTIVIEW, "threshold": 0.6}})
    after = json.loads((copy / "manifest.json").read_text())
    assert verify_manifest(copy) == []
    assert "inference.json" in after["files"] and after["model_sha256"] != before["model_sha256"]
    assert after["inference"]["multiview"]["threshold"] == 0.6
    with pytest.raises(ValueError, match="views"):
        decision.write_inference_config(copy, {"views": "both"})


# ------------------------------------------------------------------------------ latency
def test_latency_per_view_count_and_warning(bundle):
    measured = latency.measure_latency(bundle, **MULTIVIEW, repeats=1, threads=1)
    assert set(measured["views"]) == {"1", "5"} and measured["configured_views"] == 5
    for row in measured["views"].values():
        assert row["detector_s"] > 0 and row["budget_left_s"] == pytest.approx(9.0 - row["detector_s"])
        assert row["ratio_to_timm_forward"] == pytest.approx(row["detector_s"] / measured["timm_forward_1_image_s"])
    assert latency.latency_warning(measured, budget_s=1e3) is None
    warning = latency.latency_warning(measured, budget_s=0.0, setting="export.latency_budget_s")
    assert "export.latency_budget_s" in warning and "5 views" in warning and "predict.multiview_grid" in warning

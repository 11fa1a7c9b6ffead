"""calibrate stage: model choice (phase 4 only when distinguishably better), the calibration map
fitted on val_calib only under the target prior, the shipped map crossing 0.5 at the threshold,
the conflict report, reliability rows at both priors, and clear failures."""

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from kit.bundles import SPLITS, logits_rows, make_model

from roadwork.config import CalibrateParams
from roadwork.evaluate.calibration import apply_temperature, ece, fit_temperature
from roadwork.evaluate.compare import BETTER, SUMMARY_KEYS, TIE, WORSE
from roadwork.evaluate.metrics import prior_sample_weights
from roadwork.evaluate.model_choice import CalibrationError, choose_model
from roadwork.io import read_csv, read_json, write_csv
from roadwork.stages.calibrate import (
    ECE_AIM,
    RELIABILITY_COLUMNS,
    SERIES,
    calibrate,
    write_outputs,
)
from roadwork.stages.calibrate import candidates as default_candidates


def with_logits(rows: list[dict], split: str, change) -> list[dict]:
    return [{**r, "logit": change(r["logit"])} if r["split"] == split else r for r in rows]


@pytest.fixture
def phase1(tmp_path):
    make_model(tmp_path, "phase1", logits_rows(0))
    return tmp_path


def run(root: Path, model: str = "best", n_bins: int = 15, **settings):
    return calibrate(CalibrateParams(model=model, n_bins=n_bins, **settings), default_candidates(root))


def split_rows(rows: list[dict], split: str) -> tuple[np.ndarray, np.ndarray]:
    mine = [r for r in rows if r["split"] == split]
    return np.array([float(r["logit"]) for r in mine]), np.array([int(r["label"]) for r in mine])


def set_threshold(root: Path, name: str, threshold: float) -> None:
    """Overwrite a model's threshold decision (as if val_select had chosen ``threshold``)."""
    path = root / "data" / "threshold" / f"{name}.json"
    path.write_text(json.dumps({**read_json(path), "threshold": threshold}))


# ------------------------------------------------------------------------------ temperature
def test_temperature_is_fitted_on_val_calib_only_under_the_target_prior(tmp_path):
    rows = logits_rows(0)
    make_model(tmp_path, "phase1", rows)
    reference, _, _ = run(tmp_path)
    t = reference["threshold_logit"]
    z, y = split_rows(rows, "val_calib")
    expected = fit_temperature(z, y, offset=t, sample_weight=prior_sample_weights(y, 0.5))
    assert reference["temperature"] == pytest.approx(expected, rel=1e-12)
    assert reference["target_prior"] == 0.5
    assert fit_temperature(z, y, offset=t) != pytest.approx(expected, rel=1e-3)  # the weights matter
    assert 2.0 < reference["temperature"] < 4.5  # the planted over-confidence (x3) is found

    threshold_json = read_json(tmp_path / "data" / "threshold" / "phase1.json")
    for split in ("val_select", "val_test"):
        changed = with_logits(rows, split, lambda z: 5 * z + 3)
        (tmp_path / "data" / "phase1" / "logits.csv").unlink()
        write_csv(tmp_path / "data" / "phase1" / "logits.csv", changed, ["split", "id", "label", "logit"])
        result, _, _ = run(tmp_path)
        assert result["temperature"] == reference["temperature"], f"changing {split} changed T"
        assert read_json(tmp_path / "data" / "threshold" / "phase1.json") == threshold_json

    changed = with_logits(rows, "val_calib", lambda z: t + 2 * (z - t))  # twice as far from t: T doubles
    write_csv(tmp_path / "data" / "phase1" / "logits.csv", changed, ["split", "id", "label", "logit"])
    result, _, _ = run(tmp_path)
    assert result["temperature"] == pytest.approx(2 * reference["temperature"], rel=1e-3)


def test_the_shipped_probability_crosses_one_half_at_the_threshold(phase1):
    calibration, metrics, _ = run(phase1)
    t, temperature = calibration["threshold_logit"], calibration["temperature"]
    assert t == read_json(phase1 / "data" / "threshold" / "phase1.json")["threshold"]
    assert calibration["threshold_probability"] == 0.5 == metrics["threshold_probability"]
    assert calibration["calibration_map"]["temperature"]["crossing_logit"] == pytest.approx(t, abs=1e-12)
    # what the bundle ships, sigmoid((z - t) / T), is > 0.5 exactly when z > t
    z = np.array([float(r["logit"]) for r in read_csv(phase1 / "data" / "phase1" / "logits.csv")])
    np.testing.assert_array_equal(z > t, apply_temperature(z, temperature, offset=t) > 0.5)
    assert apply_temperature(t, temperature, offset=t) == 0.5
    assert calibration["model_dir"] == (phase1 / "data" / "phase1").as_posix()
    assert calibration["fitted_on"] == {"temperature": "val_calib", "threshold": "val_select"}


def test_calibration_under_the_prior_improves_and_reports_both_ece_definitions(phase1):
    _, metrics, _ = run(phase1)
    for split in ("val_calib", "val_test"):
        for prior in ("raw_prior", "prior_0.5"):
            before, after = metrics[split][prior]["before"], metrics[split][prior]["after"]
            for key in (
                "ece_positive_uniform",
                "ece_top_label_uniform",
                "ece_positive_quantile",
                "ece_top_label_quantile",
                "nll",
                "brier",
                "accuracy_at_0.5",
                "mean_prob",
            ):
                assert key in before and key in after
        balanced = metrics[split]["prior_0.5"]
        assert balanced["after"]["nll"] < balanced["before"]["nll"]
        assert balanced["after"]["ece_positive_uniform"] < balanced["before"]["ece_positive_uniform"]
        assert balanced["after"]["mean_prob"] == pytest.approx(0.5, abs=0.05)  # calibrated at 50/50
    # the figures are the weighted ECE of the shipped probability on val_test
    calibration, _, _ = run(phase1)
    z, y = split_rows(logits_rows(0), "val_test")
    shipped = apply_temperature(z, calibration["temperature"], offset=calibration["threshold_logit"])
    headline = ece(y, shipped, 15, "uniform", "positive", prior_sample_weights(y, 0.5))
    assert metrics["val_test"]["prior_0.5"]["after"]["ece_positive_uniform"] == pytest.approx(headline, abs=1e-6)
    assert metrics["headline"]["ece"] == pytest.approx(headline, abs=1e-6)
    assert metrics["headline"]["aim"] == ECE_AIM and metrics["headline"]["meets_aim"] == (headline < ECE_AIM)
    assert metrics["val_test"]["raw_prior"]["after"]["ece_positive_uniform"] == pytest.approx(
        ece(y, shipped, 15), abs=1e-6
    )


def test_shipped_minus_raw_ece_is_a_paired_comparison_at_both_priors(phase1):
    _, metrics, _ = run(phase1)
    for prior in ("raw_prior", "prior_0.5"):
        paired = metrics["ece_shipped_minus_raw"][prior]
        figures = metrics["val_test"][prior]
        assert paired["difference"] == pytest.approx(
            figures["after"]["ece_positive_uniform"] - figures["before"]["ece_positive_uniform"], abs=2e-6
        )
        assert paired["ci95_low"] <= paired["difference"] <= paired["ci95_high"]
        assert all(not isinstance(v, (dict, list)) for v in paired.values())  # scalar leaves
    # the network's own sigmoid(z) is far off under the 50/50 prior; the shipped map is not
    assert metrics["ece_shipped_minus_raw"]["prior_0.5"]["verdict"] == "better"


# ------------------------------------------------------------------------------ map choice and conflict
def test_no_conflict_when_the_threshold_is_where_the_data_cross(phase1):
    calibration, metrics, _ = run(phase1)
    maps = metrics["calibration_map"]
    assert maps["shipped"] == "temperature" and "crosses 0.5" in maps["rule"]
    assert maps["better_cv"] == "temperature" and metrics["conflict"]["present"] is False
    for kind in ("temperature", "temperature_bias"):
        assert {"scale", "bias", "temperature", "crossing_logit", "nll_in_sample", "nll_cv"} <= maps[kind].keys()
    assert maps["temperature_bias"]["nll_in_sample"] <= maps["temperature"]["nll_in_sample"]  # nested
    assert calibration["calibration_map"]["better_cv"] == "temperature"
    assert {"val_test_calibration", "decision"} <= metrics["conflict"].keys()  # reported either way


def test_conflict_when_the_data_cross_elsewhere_ships_the_calibrated_crossing(tmp_path):
    """A tuned threshold far from where val_calib crosses 0.5, and no worse a decision at the
    crossing: calibration wins, the crossing becomes the decision, both costs are reported."""
    make_model(tmp_path, "phase1", logits_rows(0))
    t = read_json(tmp_path / "data" / "threshold" / "phase1.json")["threshold"]
    set_threshold(tmp_path, "phase1", t + 4.0)  # a threshold well off the 50/50 crossing
    calibration, metrics, _ = run(tmp_path)
    maps, conflict = metrics["calibration_map"], metrics["conflict"]
    assert maps["better_cv"] == "temperature_bias" and conflict["present"] is True
    assert maps["nll_cv_difference"] < -maps["nll_cv_standard_error"]
    assert conflict["tuned_threshold_logit"] == pytest.approx(t + 4.0, abs=1e-6)
    assert conflict["calibrated_crossing_logit"] == pytest.approx(maps["temperature_bias"]["crossing_logit"])
    # calibration: the tuned map misses (higher ECE and NLL on val_test under the prior)
    gap = conflict["val_test_calibration"]
    assert gap["ece_gap"] == pytest.approx(gap["ece_temperature"] - gap["ece_temperature_bias"], abs=2e-6)
    assert gap["ece_gap"] > 0 and gap["nll_gap"] > 0
    # decision: the crossing z* changes decisions, here for the better
    for split in ("val_select", "val_test"):
        decision = conflict["decision"][split]
        assert decision["decisions_changed"] > 0
        assert decision["difference"] == pytest.approx(
            decision["mcc_at_calibrated_crossing"] - decision["mcc_at_tuned_threshold"], abs=2e-6
        )
        assert decision["ci95_low"] <= decision["difference"] <= decision["ci95_high"]
        assert decision["verdict"] in ("better", "worse", "not distinguishable")
    assert conflict["decision"]["val_select"]["verdict"] != "worse"
    # so the calibrated map ships, and the bundle's 0.5 is its crossing
    assert maps["shipped"] == "temperature_bias" and "crossing becomes the decision" in maps["why"]
    shipped = calibration["calibration_map"]["temperature_bias"]  # unrounded (metrics are rounded to 1e-6)
    assert calibration["threshold_logit"] == pytest.approx(shipped["crossing_logit"], abs=1e-12)
    assert calibration["temperature"] == pytest.approx(shipped["temperature"], abs=1e-12)
    assert calibration["tuned_threshold_logit"] == pytest.approx(t + 4.0, abs=1e-6)
    assert calibration["threshold_probability"] == pytest.approx(0.5, abs=1e-12)
    assert metrics["val_test"]["prior_0.5"]["after"]["ece_positive_uniform"] == pytest.approx(
        gap["ece_temperature_bias"], abs=2e-6
    )


def test_the_decision_wins_when_the_calibrated_crossing_decides_worse(tmp_path):
    """val_calib's logits shifted by +9 (a drifted split): its calibrated crossing lands ~9 logits
    above the tuned threshold, which decides far worse on val_select, so the tuned threshold stays
    the decision and the calibration gap is what the shipped probability misses."""
    rows = [dict(r, logit=r["logit"] + 9.0) if r["split"] == "val_calib" else r for r in logits_rows(0)]
    make_model(tmp_path, "phase1", rows)
    t = read_json(tmp_path / "data" / "threshold" / "phase1.json")["threshold"]
    calibration, metrics, _ = run(tmp_path)
    maps, conflict = metrics["calibration_map"], metrics["conflict"]
    assert maps["better_cv"] == "temperature_bias" and conflict["present"] is True
    assert conflict["decision"]["val_select"]["verdict"] == "worse"
    assert maps["shipped"] == "temperature" and "decision wins" in maps["why"]
    assert calibration["threshold_logit"] == calibration["tuned_threshold_logit"]
    assert calibration["threshold_logit"] == pytest.approx(t, abs=1e-12)
    assert calibration["fitted_on"]["threshold"] == "val_select"


def test_a_decision_without_target_prior_fails_clearly(phase1):
    path = phase1 / "data" / "threshold" / "phase1.json"
    path.write_text(json.dumps({k: v for k, v in read_json(path).items() if k != "target_prior"}))
    with pytest.raises(CalibrationError, match="target_prior"):
        run(phase1)


# ------------------------------------------------------------------------------ reliability
@pytest.mark.parametrize("n_bins", [15, 7])
def test_reliability_rows_cover_both_priors(phase1, tmp_path, n_bins):
    calibration, metrics, rows = run(phase1, n_bins=n_bins)
    assert calibration["n_bins"] == n_bins
    groups = {(r["split"], r["prior"], r["calibration"]) for r in rows}
    assert groups == {
        (s, p, w) for s in ("val_calib", "val_test") for p in ("raw", "target") for w in ("before", "after")
    }
    for split, n in (("val_calib", SPLITS["val_calib"]), ("val_test", SPLITS["val_test"])):
        for prior, label in (("raw", "raw_prior"), ("target", "prior_0.5")):
            for when in ("before", "after"):
                mine = [r for r in rows if (r["split"], r["prior"], r["calibration"]) == (split, prior, when)]
                assert sum(r["count"] for r in mine) == n
                assert sum(r["weight"] for r in mine) == pytest.approx(1.0)
                assert all(0 <= r["bin"] < n_bins for r in mine)
                # share-weighted |accuracy - confidence| over the bins is the reported positive-class ECE
                gap = sum(r["weight"] * abs(r["accuracy"] - r["confidence"]) for r in mine)
                assert gap == pytest.approx(metrics[split][label][when]["ece_positive_uniform"], abs=1e-6)
                for r in mine:  # one y column per series, NaN elsewhere (a DVC plot draws one series each)
                    own = f"{split}_{prior}_{when}"
                    assert r[own] == r["accuracy"]
                    assert all(math.isnan(r[s]) for s in SERIES if s != own)
    out = tmp_path / "out"
    write_outputs(calibration, rows, out / "calibrate", out / "reliability.csv")
    table = read_csv(out / "reliability.csv")
    assert list(table[0]) == RELIABILITY_COLUMNS and len(table) == len(rows)
    assert read_json(out / "calibrate" / "calibration.json")["temperature"] == calibration["temperature"]


def test_the_dvc_plots_draw_every_reliability_series():
    plots = yaml.safe_load((Path(__file__).resolve().parents[1] / "dvc.yaml").read_text())["plots"]
    drawn = []
    for plot in plots:
        ((title, spec),) = plot.items() if isinstance(plot, dict) else ((plot, None),)
        if spec and "plots/reliability.csv" in spec.get("y", {}):
            assert spec["x"] == "confidence" and spec["template"] == "scatter", title
            drawn += spec["y"]["plots/reliability.csv"]
    assert set(drawn) == {*SERIES, "perfect"}
    assert {"raw", "target"} == {s.split("_")[2] for s in SERIES}


def test_n_bins_sets_the_bins_of_every_ece_and_the_diagram(phase1):
    _, fifteen, rows15 = run(phase1, n_bins=15)
    _, five, rows5 = run(phase1, n_bins=5)
    assert max(r["bin"] for r in rows5) < 5 < max(r["bin"] for r in rows15)
    # (the shipped map at the raw 25% prior over-predicts in every bin, so its ECE is the global gap
    # |mean p - mean y| for any binning: not a case that shows the bins)
    for prior, when in (("raw_prior", "before"), ("prior_0.5", "before"), ("prior_0.5", "after")):
        assert (
            fifteen["val_test"][prior][when]["ece_positive_uniform"]
            != five["val_test"][prior][when]["ece_positive_uniform"]
        )
    test = fifteen["val_test"]
    gap = test["raw_prior"]["after"]["mean_prob"] - test["n_pos"] / test["n"]
    assert test["raw_prior"]["after"]["ece_positive_uniform"] == pytest.approx(gap, abs=2e-6)
    assert fifteen["temperature"] == five["temperature"]


# ------------------------------------------------------------------------------ model choice
def noisy_rows(noise: float, seed: int) -> list[dict]:
    """Another model scoring the images of ``logits_rows(0)`` (same ids and labels): its logits
    plus Gaussian noise of standard deviation ``noise``; the more noise, the worse it ranks."""
    rng = np.random.default_rng(seed)
    return [{**r, "logit": r["logit"] + noise * rng.normal()} for r in logits_rows(0)]


def fix_mistakes(rows: list[dict], threshold: float, k: int) -> list[dict]:
    """``rows`` with the ``k`` most confident val_select mistakes at ``threshold`` moved far to
    the right side: a model that is better on k images and the same on every other."""
    wrong = [i for i, r in enumerate(rows) if r["split"] == "val_select" and (r["logit"] > threshold) != r["label"]]
    wrong = sorted(wrong, key=lambda i: -abs(rows[i]["logit"] - threshold))[:k]
    out = [dict(r) for r in rows]
    for i in wrong:
        out[i]["logit"] = 20.0 if out[i]["label"] else -20.0
    return out


@pytest.mark.slow
def test_best_ships_phase4_only_when_distinguishably_better(tmp_path):
    good, poor = logits_rows(0), noisy_rows(6.0, seed=1)
    make_model(tmp_path, "phase1", poor)
    make_model(tmp_path, "phase4", good)
    chosen, scores = choose_model("best", default_candidates(tmp_path))
    comparison = scores["phase4_vs_phase1"]
    assert chosen.name == "phase4" and comparison["verdict"] == BETTER
    assert comparison["ci95_low"] > 0 and comparison["n"] == SPLITS["val_select"]
    # the MCC compared is the one each threshold was chosen for (50/50 prior), at that threshold
    report = read_json(tmp_path / "metrics" / "threshold_phase4.json")  # the report beside the decision
    assert scores["phase4"]["selection_mcc"] == pytest.approx(report["val_select"]["target_prior"]["mcc_at_optimum"])
    assert comparison["difference"] == pytest.approx(
        scores["phase4"]["selection_mcc"] - scores["phase1"]["selection_mcc"]
    )
    calibration, metrics, _ = run(tmp_path)
    assert calibration["model"] == "phase4" and calibration["model_dir"].endswith("data/phase4")
    recorded = metrics["selection"]["phase4_vs_phase1"]  # metrics/calibrate.json: one dvc exp show column each
    assert set(recorded) == set(SUMMARY_KEYS) and recorded["verdict"] == BETTER
    assert recorded["ci95_low"] <= recorded["difference"] <= recorded["ci95_high"]
    assert calibration["selection"]["scores"]["phase4_vs_phase1"] == comparison

    make_model(tmp_path, "phase1", good)  # phase 4 worse: phase 1
    make_model(tmp_path, "phase4", poor)
    chosen, scores = choose_model("best", default_candidates(tmp_path))
    assert chosen.name == "phase1" and scores["phase4_vs_phase1"]["verdict"] == WORSE
    assert run(tmp_path, model="phase4")[0]["model"] == "phase4"  # explicit choice wins

    # phase 4 right on two more val_select images: a higher MCC the data cannot tell from 0
    phase1_threshold = read_json(tmp_path / "data" / "threshold" / "phase1.json")["threshold"]
    make_model(tmp_path, "phase4", fix_mistakes(good, phase1_threshold, 2))
    assert read_json(tmp_path / "data" / "threshold" / "phase4.json")["threshold"] == phase1_threshold
    chosen, scores = choose_model("best", default_candidates(tmp_path))
    assert scores["phase4"]["selection_mcc"] > scores["phase1"]["selection_mcc"]  # the old rule shipped phase 4
    assert scores["phase4_vs_phase1"]["verdict"] == TIE and chosen.name == "phase1"


def test_a_model_compared_with_itself_is_not_distinguishable(tmp_path):
    make_model(tmp_path, "phase1", logits_rows(0))
    make_model(tmp_path, "phase4", logits_rows(0))
    chosen, scores = choose_model("best", default_candidates(tmp_path))
    assert chosen.name == "phase1"
    assert scores["phase4_vs_phase1"] == {
        "difference": 0.0,
        "ci95_low": 0.0,
        "ci95_high": 0.0,
        "verdict": TIE,
        "n": SPLITS["val_select"],
    }


def test_bootstrap_and_seed_set_the_selection_interval(tmp_path):
    make_model(tmp_path, "phase1", noisy_rows(3.0, seed=1))
    make_model(tmp_path, "phase4", noisy_rows(3.0, seed=2))

    def interval(**settings):
        _, metrics, _ = run(tmp_path, **settings)
        comparison = metrics["selection"]["phase4_vs_phase1"]
        return comparison["difference"], (comparison["ci95_low"], comparison["ci95_high"])

    reference = interval()
    for changed in ({"bootstrap": 300}, {"seed": 1}):
        point, bounds = interval(**changed)
        assert point == reference[0] and bounds != reference[1], changed


def test_models_scored_on_other_images_are_refused(tmp_path):
    make_model(tmp_path, "phase1", logits_rows(0))
    make_model(tmp_path, "phase4", logits_rows(1))  # other labels for the same ids
    with pytest.raises(CalibrationError, match="different labels"):
        choose_model("best", default_candidates(tmp_path))
    make_model(tmp_path, "phase4", [r for r in logits_rows(0) if r["id"] != "val_select0007"])
    with pytest.raises(CalibrationError, match="do not hold the same val_select images"):
        choose_model("best", default_candidates(tmp_path))


def test_best_without_phase4_uses_phase1(phase1):
    calibration, metrics, _ = run(phase1, "best")
    assert calibration["model"] == "phase1"
    assert set(metrics["selection"]) == {"phase1"}


def test_phase4_requested_without_its_data_fails_clearly(phase1):
    with pytest.raises(CalibrationError) as error:
        run(phase1, "phase4")
    message = str(error.value)
    assert "data/phase4" in message and "explora" in message and "'best'" in message


def test_stage_end_to_end_and_its_failure_message(phase1):
    (phase1 / "params.yaml").write_text(yaml.safe_dump({"calibrate": {"model": "phase1", "n_bins": 10}}))
    done = subprocess.run(
        [sys.executable, "-m", "roadwork.stages.calibrate"], cwd=phase1, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    calibration = read_json(phase1 / "data" / "calibrate" / "calibration.json")
    metrics = read_json(phase1 / "metrics" / "calibrate.json")
    assert calibration["model"] == metrics["model"] == "phase1" and calibration["n_bins"] == 10
    assert {"temperature", "threshold_logit", "threshold_probability", "model_dir"} <= calibration.keys()
    assert (phase1 / "plots" / "reliability.csv").exists()

    (phase1 / "params.yaml").write_text(yaml.safe_dump({"calibrate": {"model": "phase4"}}))
    failed = subprocess.run(
        [sys.executable, "-m", "roadwork.stages.calibrate"], cwd=phase1, capture_output=True, text=True
    )
    assert failed.returncode != 0
    assert "data/phase4" in failed.stderr and "Traceback" not in failed.stderr

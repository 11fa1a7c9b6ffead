"""calibrate stage: model choice, temperature fitted on val_calib only, threshold re-expression,
reliability rows, and clear failures."""

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from scipy.special import expit

from roadwork.config import CalibrateParams
from roadwork.evaluate.calibration import apply_temperature, fit_temperature
from roadwork.io import read_csv, read_json, write_csv
from roadwork.evaluate.calibrate import (
    RELIABILITY_COLUMNS,
    SERIES,
    CalibrationError,
    calibrate,
    choose_model,
    write_outputs,
)
from roadwork.stages.calibrate import candidates as default_candidates

SPLITS = {"val_select": 600, "val_calib": 600, "val_test": 600}


def logits_rows(seed: int, separation: float = 1.5, overconfidence: float = 3.0) -> list[dict]:
    """Labels drawn from a calibrated logit z ~ N(-1.5, separation) (~25% positives); the saved
    logit is `overconfidence` x z, so the fitted T is near `overconfidence`; `separation` sets
    how well the model ranks (its val_select MCC)."""
    rng = np.random.default_rng(seed)
    rows = []
    for split, n in SPLITS.items():
        z = rng.normal(-1.5, separation, n)
        y = (rng.random(n) < expit(z)).astype(int)
        rows += [{"split": split, "id": f"{split}{i:04d}", "label": int(label), "logit": float(overconfidence * v)}
                 for i, (label, v) in enumerate(zip(y, z))]
    return rows


def make_model(root: Path, name: str, rows: list[dict]) -> Path:
    """A trained-model directory as the calibrate stage sees it (logits.csv + weights files) and
    its threshold decision and report, written by the real threshold stage."""
    model_dir = root / "data" / name
    model_dir.mkdir(parents=True, exist_ok=True)
    write_csv(model_dir / "logits.csv", rows, ["split", "id", "label", "logit"])
    (model_dir / "model.safetensors").write_bytes(f"weights of {name}".encode())
    (model_dir / "model.json").write_text("{}")
    (root / "params.yaml").write_text(yaml.safe_dump({"threshold": {"target_prior": 0.5}}))
    done = subprocess.run([sys.executable, "-m", "roadwork.stages.threshold", name], cwd=root, capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr
    assert set(read_json(root / "data" / "threshold" / f"{name}.json")) == {"space", "target_prior", "threshold"}
    assert (root / "metrics" / f"threshold_{name}.json").exists() and (root / "plots" / f"threshold_{name}.csv").exists()
    return model_dir


def with_logits(rows: list[dict], split: str, change) -> list[dict]:
    return [{**r, "logit": change(r["logit"])} if r["split"] == split else r for r in rows]


@pytest.fixture
def phase1(tmp_path):
    make_model(tmp_path, "phase1", logits_rows(0))
    return tmp_path


def run(root: Path, model: str = "best", n_bins: int = 15):
    return calibrate(CalibrateParams(model=model, n_bins=n_bins), default_candidates(root))


# ------------------------------------------------------------------------------ temperature
def test_temperature_is_fitted_on_val_calib_only(tmp_path):
    rows = logits_rows(0)
    make_model(tmp_path, "phase1", rows)
    reference, _, _ = run(tmp_path)
    calib = [r for r in rows if r["split"] == "val_calib"]
    expected = fit_temperature([r["logit"] for r in calib], [r["label"] for r in calib])
    assert reference["temperature"] == pytest.approx(expected, rel=1e-12)
    assert 2.0 < reference["temperature"] < 4.5  # the planted over-confidence (x3) is found

    threshold_json = read_json(tmp_path / "data" / "threshold" / "phase1.json")
    for split in ("val_select", "val_test"):
        changed = with_logits(rows, split, lambda z: 5 * z + 3)
        (tmp_path / "data" / "phase1" / "logits.csv").unlink()
        write_csv(tmp_path / "data" / "phase1" / "logits.csv", changed, ["split", "id", "label", "logit"])
        result, _, _ = run(tmp_path)
        assert result["temperature"] == reference["temperature"], f"changing {split} changed T"
        assert read_json(tmp_path / "data" / "threshold" / "phase1.json") == threshold_json

    changed = with_logits(rows, "val_calib", lambda z: 2 * z)
    write_csv(tmp_path / "data" / "phase1" / "logits.csv", changed, ["split", "id", "label", "logit"])
    result, _, _ = run(tmp_path)
    assert result["temperature"] == pytest.approx(2 * reference["temperature"], rel=1e-3)


def test_threshold_is_re_expressed_in_calibrated_probability_space(phase1):
    calibration, metrics, _ = run(phase1)
    t, temperature = calibration["threshold_logit"], calibration["temperature"]
    assert t == read_json(phase1 / "data" / "threshold" / "phase1.json")["threshold"]
    assert calibration["threshold_probability"] == pytest.approx(1 / (1 + math.exp(-t / temperature)), rel=1e-12)
    # the same decisions in both spaces: z > t  <=>  sigmoid(z / T) > p*
    z = np.array([float(r["logit"]) for r in read_csv(phase1 / "data" / "phase1" / "logits.csv")])
    np.testing.assert_array_equal(z > t, apply_temperature(z, temperature) > calibration["threshold_probability"])
    assert metrics["threshold_probability"] == pytest.approx(calibration["threshold_probability"], abs=1e-6)
    assert calibration["model_dir"] == (phase1 / "data" / "phase1").as_posix()
    assert calibration["fitted_on"] == {"temperature": "val_calib", "threshold": "val_select"}


def test_calibration_improves_and_reports_both_ece_definitions(phase1):
    _, metrics, _ = run(phase1)
    for split in ("val_calib", "val_test"):
        before, after = metrics[split]["before"], metrics[split]["after"]
        for key in ("ece_positive_uniform", "ece_top_label_uniform", "ece_positive_quantile",
                    "ece_top_label_quantile", "nll", "brier"):
            assert key in before and key in after
        assert after["nll"] < before["nll"]
        assert after["ece_positive_uniform"] < before["ece_positive_uniform"]
        assert after["accuracy_at_0.5"] == before["accuracy_at_0.5"]  # T never flips a decision
    assert metrics["val_test"]["after"]["ece_positive_uniform"] < 0.05


# ------------------------------------------------------------------------------ reliability
@pytest.mark.parametrize("n_bins", [15, 7])
def test_reliability_rows(phase1, tmp_path, n_bins):
    calibration, metrics, rows = run(phase1, n_bins=n_bins)
    assert calibration["n_bins"] == n_bins
    groups = {(r["split"], r["calibration"]) for r in rows}
    assert groups == {(s, w) for s in ("val_calib", "val_test") for w in ("before", "after")}
    for split, n in (("val_calib", SPLITS["val_calib"]), ("val_test", SPLITS["val_test"])):
        for when in ("before", "after"):
            mine = [r for r in rows if (r["split"], r["calibration"]) == (split, when)]
            assert sum(r["count"] for r in mine) == n
            assert all(0 <= r["bin"] < n_bins for r in mine)
            # weighted |accuracy - confidence| over the bins is the reported positive-class ECE
            gap = sum(r["count"] * abs(r["accuracy"] - r["confidence"]) for r in mine) / n
            assert gap == pytest.approx(metrics[split][when]["ece_positive_uniform"], abs=1e-6)
            for r in mine:  # one y column per series, NaN elsewhere (a DVC plot draws one series each)
                own = f"{split}_{when}"
                assert r[own] == r["accuracy"]
                assert all(math.isnan(r[s]) for s in SERIES if s != own)
    out = tmp_path / "out"
    write_outputs(calibration, rows, out / "calibrate", out / "reliability.csv")
    table = read_csv(out / "reliability.csv")
    assert list(table[0]) == RELIABILITY_COLUMNS and len(table) == len(rows)
    assert read_json(out / "calibrate" / "calibration.json")["temperature"] == calibration["temperature"]


def test_n_bins_sets_the_bins_of_every_ece_and_the_diagram(phase1):
    _, fifteen, rows15 = run(phase1, n_bins=15)
    _, five, rows5 = run(phase1, n_bins=5)
    assert max(r["bin"] for r in rows5) < 5 < max(r["bin"] for r in rows15)
    for when in ("before", "after"):
        assert fifteen["val_test"][when]["ece_positive_uniform"] != five["val_test"][when]["ece_positive_uniform"]
    assert fifteen["temperature"] == five["temperature"]


# ------------------------------------------------------------------------------ model choice
def test_best_picks_the_model_with_the_higher_val_select_mcc(tmp_path):
    good, poor = logits_rows(1, separation=3.0), logits_rows(2, separation=0.7)
    make_model(tmp_path, "phase1", poor)
    make_model(tmp_path, "phase4", good)
    chosen, scores = choose_model("best", default_candidates(tmp_path))
    assert chosen.name == "phase4"
    assert scores["phase4"]["selection_mcc"] > scores["phase1"]["selection_mcc"]
    # the MCC compared is the one each threshold was chosen for (50/50 prior), at that threshold
    report = read_json(tmp_path / "metrics" / "threshold_phase4.json")  # the report beside the decision
    assert scores["phase4"]["selection_mcc"] == pytest.approx(report["val_select"]["target_prior"]["mcc_at_optimum"])
    calibration, _, _ = run(tmp_path)
    assert calibration["model"] == "phase4" and calibration["model_dir"].endswith("data/phase4")

    make_model(tmp_path, "phase1", good)
    make_model(tmp_path, "phase4", poor)
    assert choose_model("best", default_candidates(tmp_path))[0].name == "phase1"
    assert run(tmp_path, model="phase4")[0]["model"] == "phase4"  # explicit choice wins


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
    done = subprocess.run([sys.executable, "-m", "roadwork.stages.calibrate"], cwd=phase1, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    calibration = read_json(phase1 / "data" / "calibrate" / "calibration.json")
    metrics = read_json(phase1 / "metrics" / "calibrate.json")
    assert calibration["model"] == metrics["model"] == "phase1" and calibration["n_bins"] == 10
    assert {"temperature", "threshold_logit", "threshold_probability", "model_dir"} <= calibration.keys()
    assert (phase1 / "plots" / "reliability.csv").exists()

    (phase1 / "params.yaml").write_text(yaml.safe_dump({"calibrate": {"model": "phase4"}}))
    failed = subprocess.run([sys.executable, "-m", "roadwork.stages.calibrate"], cwd=phase1, capture_output=True, text=True)
    assert failed.returncode != 0
    assert "data/phase4" in failed.stderr and "Traceback" not in failed.stderr

"""Trained-model directories, miner bundles and workspaces up to export, for the tests of predict, the
miner, publish, calibrate, synthesize and export."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
import yaml
from safetensors.torch import save_file
from scipy.special import expit

from kit.train import TINY_MODEL
from roadwork.config import CalibrateParams, parse_params
from roadwork.data.examples import load_split
from roadwork.io import read_json, write_csv
from roadwork.models.adapters import add_qv_adapters
from roadwork.models.classifier import build_model
from roadwork.models.model_dir import model_description


# ------------------------------------------------------------------------------ model directories and bundles
def make_model_dir(path: Path, head_type: str = "linear", adapter: dict | None = None, seed: int = 0) -> Path:
    """A trained-model directory in the format of roadwork.train.fit (random but non-trivial weights)."""
    torch.manual_seed(seed)
    params = parse_params({"model": {**TINY_MODEL, "head_type": head_type, "head": {"rank": 2, "hidden": 8}}}).model
    classifier = build_model(params)
    extra = {"best_epoch": 1}
    if adapter:
        add_qv_adapters(classifier.backbone, **adapter)
        with torch.no_grad():  # DoRA starts equal to the base model: move it away
            for name, p in classifier.backbone.named_parameters():
                if "lora_B" in name:
                    p.normal_(0, 0.2)
        extra["adapter"] = adapter
    with torch.no_grad():  # timm's init (std 0.02) makes the CLS token nearly image-independent
        for p in classifier.parameters():
            p.add_(0.3 * torch.randn_like(p))
    path.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in classifier.state_dict().items()}, path / "model.safetensors")
    (path / "model.json").write_text(json.dumps(model_description(params, classifier, **extra)))
    return path


def make_bundle(root: Path, temperature: float = 1.5, threshold_logit: float = 0.0, seed: int = 0) -> Path:
    from roadwork.export.bundle import build_bundle

    model_dir = make_model_dir(root / "model", seed=seed)
    build_bundle(
        model_dir,
        temperature,
        threshold_logit,
        root / "bundle",
        model_name="test",
        version="0",
        submitted_by="",
        metrics={},
        provenance={},
        onnx=False,
        check_transformers=False,
    )
    return root / "bundle"


def write_model(root: Path, name: str = "phase1", seed: int = 0) -> None:
    """data/<name> as train_phase1 (or explora) writes it: weights, model.json and logits.csv from
    those weights."""
    from roadwork.models.classifier import data_config
    from roadwork.models.model_dir import load_trained
    from roadwork.train.augment import eval_transform
    from roadwork.train.data import ImageCache, ImageDataset
    from roadwork.train.fit import EVAL_SPLITS

    model_dir = make_model_dir(root / "data" / name, seed=seed)
    classifier, description = load_trained(model_dir)
    cfg = data_config(classifier)
    transform = eval_transform(description["img_size"], cfg["mean"], cfg["std"])
    cache = ImageCache(description["img_size"], root / ".cache")
    rows = []
    for split in EVAL_SPLITS:
        dataset = ImageDataset(
            load_split(root / "data" / "raw", root / "data" / "split" / "splits.csv", split), cache, transform
        )
        with torch.no_grad():
            logits = classifier(torch.stack([dataset[i][0] for i in range(len(dataset))]))
        rows += [
            {"split": split, "id": e.id, "label": e.label, "logit": float(v)} for e, v in zip(dataset.examples, logits)
        ]
    write_csv(model_dir / "logits.csv", rows, ["split", "id", "label", "logit"])


def calibrated_workspace(tmp_path, dataset, monkeypatch, folders=("raw", "split")) -> dict:
    """`tmp_path` as the working directory of a pipeline that has run up to export: the dataset's `folders` linked
    under data/, two trained models (phase1, phase4) with their threshold outputs, and calibrate's outputs.
    Returns the calibration."""
    from roadwork.stages.calibrate import calibrate, candidates, write_outputs
    from roadwork.stages.threshold import write_threshold_outputs

    (tmp_path / "data").mkdir(exist_ok=True)
    for name in folders:
        (tmp_path / "data" / name).symlink_to(dataset / "data" / name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ROADWORK_CACHE", str(tmp_path / ".cache"))
    for seed, name in enumerate(("phase1", "phase4")):
        write_model(tmp_path, name, seed)
        write_threshold_outputs(
            Path(f"data/{name}/logits.csv"),
            0.5,
            Path(f"data/threshold/{name}.json"),
            Path(f"plots/threshold_{name}.csv"),
        )
    calibration, _, rows = calibrate(CalibrateParams(), candidates())
    write_outputs(calibration, rows, Path("data/calibrate"), Path("plots/reliability.csv"))
    return calibration


EXPORT_A = {
    "model_name": "name-a",
    "version": "1.0.0",
    "submitted_by": "",
    "onnx": False,
    "bootstrap": 50,
    "protocol_seed": 0,
    "protocol_draws": 2,
}

# ------------------------------------------------------------------------------ calibrate's inputs: logits and thresholds
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
        rows += [
            {"split": split, "id": f"{split}{i:04d}", "label": int(label), "logit": float(overconfidence * v)}
            for i, (label, v) in enumerate(zip(y, z))
        ]
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
    done = subprocess.run(
        [sys.executable, "-m", "roadwork.stages.threshold", name], cwd=root, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert set(read_json(root / "data" / "threshold" / f"{name}.json")) == {"space", "target_prior", "threshold"}
    assert (root / "metrics" / f"threshold_{name}.json").exists() and (
        root / "plots" / f"threshold_{name}.csv"
    ).exists()
    return model_dir

"""Shared plumbing for the stage scripts: the pipeline's file layout, params, metrics and the
end-of-stage summary.

The paths below are the one table of the pipeline's files: stage scripts take every path from
here and pass it to the library (which takes paths as arguments and knows none), and `dvc.yaml`
declares the same files as deps and outs (``STAGE_FILES``; tests/test_dvc_graph.py checks that
the two agree, stage by stage).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from roadwork.config import ConfigError, Params, load_params
from roadwork.io import write_json
from roadwork.log import setup as setup_logging

setup_logging()  # every stage imports this module: the library's log records go to stderr

DATA = Path("data")
METRICS = Path("metrics")
PLOTS = Path("plots")
LIVE = Path("dvclive")
RUNS = Path("runs")  # resume checkpoints, keyed by params + inputs; not a DVC output

LOCAL_INVENTORY = DATA / "local_inventory.csv"  # what download depends on instead of ${data.local.path}
RAW = DATA / "raw"
DEDUP = DATA / "dedup"
SPLIT = DATA / "split"
SPLITS_CSV = SPLIT / "splits.csv"
SYNTHETIC = DATA / "synthetic"  # the validators' synthetic challenges: images/, manifest.csv (stage synthesize)
SYNTHETIC_METRICS = METRICS / "synthesize.json"
PHASE1 = DATA / "phase1"
EXPLORA = DATA / "explora"
PHASE4 = DATA / "phase4"
THRESHOLDS = DATA / "threshold"
CALIBRATE = DATA / "calibrate"
CALIBRATION_JSON = CALIBRATE / "calibration.json"
BUNDLE = DATA / "bundle"
DVC_LOCK = Path("dvc.lock")
RELIABILITY_CSV = PLOTS / "reliability.csv"

MODELS = {"phase1": PHASE1, "phase4": PHASE4}  # trained models, each with its threshold stage


def threshold_json(model: str) -> Path:
    """The decision a later stage reads (data output of `threshold@<model>`)."""
    return THRESHOLDS / f"{model}.json"


def threshold_metrics(model: str) -> Path:
    return METRICS / f"threshold_{model}.json"


def threshold_curve(model: str) -> Path:
    return PLOTS / f"threshold_{model}.csv"


def live_dir(name: str) -> Path:
    return LIVE / name


def _live(name: str) -> list[Path]:
    return [live_dir(name) / "plots", live_dir(name) / "metrics.json"]


# Stage -> the pipeline files it reads (deps, code excluded: roadwork.depgraph keeps those) and
# writes (outs, metrics and plots), as dvc.yaml declares them.
STAGE_FILES: dict[str, dict[str, list[Path]]] = {
    "scan_local": {"deps": [], "outs": [LOCAL_INVENTORY]},  # lists ${data.local.path} on every run (always_changed)
    "download": {"deps": [LOCAL_INVENTORY], "outs": [RAW, METRICS / "download.json"]},
    "dedup": {"deps": [RAW], "outs": [DEDUP, METRICS / "dedup.json"]},
    "split": {"deps": [DEDUP], "outs": [SPLIT, METRICS / "split.json"]},
    "synthesize": {"deps": [RAW, SPLIT], "outs": [SYNTHETIC, SYNTHETIC_METRICS]},
    "train_phase1": {"deps": [RAW, SPLIT, SYNTHETIC], "outs": [PHASE1, METRICS / "phase1.json", *_live("phase1")]},
    **{
        f"threshold@{model}": {
            "deps": [path / "logits.csv", path / "logits_synthetic.csv"],
            "outs": [threshold_json(model), threshold_metrics(model), threshold_curve(model)],
        }
        for model, path in MODELS.items()
    },
    "explora": {
        "deps": [RAW, SPLIT, SYNTHETIC, PHASE1],
        "outs": [EXPLORA, PHASE4, METRICS / "explora.json", *_live("explora"), *_live("phase4")],
    },
    "calibrate": {
        "deps": [PHASE1, threshold_json("phase1"), PHASE4, threshold_json("phase4")],
        "outs": [CALIBRATE, RELIABILITY_CSV, METRICS / "calibrate.json"],
    },
    "export": {"deps": [CALIBRATE, PHASE1, PHASE4, RAW, SPLIT], "outs": [BUNDLE, METRICS / "export.json"]},
    "evaluate": {
        "deps": [
            BUNDLE,
            CALIBRATE,
            PHASE1,
            threshold_json("phase1"),
            PHASE4,
            threshold_json("phase4"),
            RAW,
            SPLIT,
            SYNTHETIC,
        ],
        "outs": [METRICS / "evaluate.json", live_dir("evaluate") / "plots"],
    },
}


def open_live(name: str):
    """A dvclive logger for rank 0, writing dvclive/<name>/ (declared in dvc.yaml, not by dvclive)."""
    from dvclive import Live

    return Live(str(live_dir(name)), dvcyaml=None, save_dvc_exp=False)


def params() -> Params:
    try:
        return load_params("params.yaml")
    except ConfigError as error:
        sys.exit(str(error))


def finish(stage: str, metrics: dict, started: float, path: Path | None = None) -> None:
    """Write metrics/<stage>.json (or `path`) and print a one-screen summary."""
    write_json(path or METRICS / f"{stage}.json", metrics)
    finish_printed(stage, metrics, started)


def finish_printed(stage: str, metrics: dict, started: float) -> None:
    """The stage's end-of-run report on stdout (what `dvc repro` shows; the stage's output, not a log record)."""
    print(f"\n== {stage}: done in {time.monotonic() - started:.1f}s")
    for key, value in metrics.items():
        print(f"   {key}: {value}")

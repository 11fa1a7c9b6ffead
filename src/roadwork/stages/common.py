"""Shared plumbing for the stage scripts: params, paths, metrics and the end-of-stage summary.

Stage scripts are the only code that knows the pipeline's file layout (the paths below, which
`dvc.yaml` repeats as deps and outs).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from roadwork.config import ConfigError, Params, load_params
from roadwork.io import write_json

DATA = Path("data")
METRICS = Path("metrics")
RAW = DATA / "raw"
DEDUP = DATA / "dedup"
SPLIT = DATA / "split"
SPLITS_CSV = SPLIT / "splits.csv"
PHASE1 = DATA / "phase1"
RUNS = Path("runs")  # resume checkpoints, keyed by params + inputs; not a DVC output
LIVE = Path("dvclive")
PLOTS = Path("plots")


def open_live(name: str):
    """A dvclive logger for rank 0, writing dvclive/<name>/ (declared in dvc.yaml, not by dvclive)."""
    from dvclive import Live

    return Live(str(LIVE / name), dvcyaml=None, save_dvc_exp=False)


def params() -> Params:
    try:
        return load_params("params.yaml")
    except ConfigError as error:
        sys.exit(str(error))


def finish(stage: str, metrics: dict, started: float) -> None:
    """Write metrics/<stage>.json and print a one-screen summary."""
    write_json(METRICS / f"{stage}.json", metrics)
    finish_printed(stage, metrics, started)


def finish_printed(stage: str, metrics: dict, started: float) -> None:
    print(f"\n== {stage}: done in {time.monotonic() - started:.1f}s")
    for key, value in metrics.items():
        print(f"   {key}: {value}")

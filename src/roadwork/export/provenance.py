"""Provenance of an exported bundle: what data, splits, params and weights made it.

Recorded in the manifest: the DVC md5 of the split folder (whose splits.csv pins every image by
sha256) and of the shipped model directory, *computed* here with DVC's own hashing (``dvc_data``;
the value dvc.lock records for the same content, so it is right whether or not the stage runs
under DVC), plus the values and md5 of the params sections that shaped the model; the raw data's
md5 is copied from dvc.lock when the lock has it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import yaml

from roadwork.config import Params
from roadwork.io import dumps_json

MODEL_SECTIONS = ("data", "dedup", "split", "model", "train", "threshold", "calibrate")


def dvc_md5(path: Path) -> str:
    """The md5 DVC records for ``path`` in dvc.lock, computed with DVC's own hashing (dvc_data):
    md5 of a file's bytes; for a directory, md5 of the sorted JSON list of its entries + ".dir"."""
    import tempfile

    from dvc_data.hashfile.build import build
    from dvc_data.hashfile.db import HashFileDB
    from dvc_objects.fs.local import LocalFileSystem

    fs = LocalFileSystem()
    with tempfile.TemporaryDirectory() as scratch:
        _, _, obj = build(HashFileDB(fs, scratch), str(path), fs, "md5")
    return obj.hash_info.value


def _lock_md5(lock: dict, path: str) -> str | None:
    for stage in (lock.get("stages") or {}).values():
        for out in stage.get("outs") or []:
            if out.get("path") == path:
                return out.get("md5")
    return None


def provenance(config: Params, calibration: dict, raw_dir: Path, split_dir: Path, lock_path: Path) -> dict:
    """The manifest's provenance record; paths are recorded as given (relative to the repository)."""
    lock = yaml.safe_load(lock_path.read_text()) if lock_path.exists() else {}
    model_dir = calibration["model_dir"]
    sections = [*MODEL_SECTIONS, *(("explora",) if calibration["model"] == "phase4" else ())]
    values = {name: getattr(config, name).model_dump(mode="json") for name in sections}
    out = {
        "hash": "dvc md5, computed with DVC's hashing (dvc_data); equals dvc.lock's value for the same content",
        split_dir.as_posix(): dvc_md5(split_dir),
        model_dir: dvc_md5(Path(model_dir)),
        "params": values,
        "params_md5": {name: hashlib.md5(dumps_json(v).encode()).hexdigest() for name, v in values.items()},
        "calibration": {
            k: calibration[k]
            for k in (
                "model",
                "temperature",
                "threshold_logit",
                "threshold_probability",
                "model_sha256",
                "logits_sha256",
            )
        },
    }
    raw = _lock_md5(lock, raw_dir.as_posix())
    if raw:
        out[f"{raw_dir.as_posix()} (dvc.lock)"] = raw
    for path in (split_dir.as_posix(), model_dir):
        recorded = _lock_md5(lock, path)
        if recorded is not None and recorded != out[path]:
            out.setdefault("differs_from_dvc_lock", []).append(path)
    return out

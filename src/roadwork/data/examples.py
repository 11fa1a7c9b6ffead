"""The labelled examples of one split: ``splits.csv`` (written by :mod:`roadwork.data.split`)
joined with the raw manifest (written by :mod:`roadwork.data.ingest`). Read by training,
evaluation, export and the benchmarks alike."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from roadwork.io import read_csv


@dataclass(frozen=True)
class Example:
    id: str
    sha256: str
    label: int
    path: Path  # stored image (data/raw/images/...)


def load_split(raw_dir: Path, splits_csv: Path, split: str) -> list[Example]:
    """The examples of one split, joined with the raw manifest; ordered by id."""
    manifest = {row["id"]: row for row in read_csv(raw_dir / "manifest.csv")}
    examples = []
    for row in read_csv(splits_csv):
        if row["split"] == split:
            image = manifest[row["id"]]
            if image["sha256"] != row["sha256"]:
                raise ValueError(f"{splits_csv}: id {row['id']} has sha256 {row['sha256']} but the manifest says {image['sha256']}")
            examples.append(Example(row["id"], row["sha256"], int(row["label"]), raw_dir / image["path"]))
    return sorted(examples, key=lambda e: e.id)

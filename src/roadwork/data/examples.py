"""The labelled examples of one split: ``splits.csv`` (written by :mod:`roadwork.data.split`)
joined with the raw manifest (written by :mod:`roadwork.data.ingest`). Read by training,
evaluation, export and the benchmarks alike.

Real photos by default; ``kinds=("i2i", "t2i")`` (with ``synthetic_dir``, the synthesize stage's
``data/synthetic``) gives the validators' synthetic children of that split's sources, whose rows
carry their kind. A child is in its source's split (roadwork.synthesize.plan), so asking for a
split never returns a child of another split's source."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from roadwork.io import read_csv


@dataclass(frozen=True)
class Example:
    id: str
    sha256: str
    label: int
    path: Path  # stored image (data/raw/images/... or data/synthetic/images/...)
    kind: str = "real"  # real | i2i | t2i


KINDS = ("real", "i2i", "t2i")


def load_split(
    raw_dir: Path, splits_csv: Path, split: str, kinds: tuple[str, ...] = ("real",), synthetic_dir: Path | None = None
) -> list[Example]:
    """The examples of one split, joined with the raw manifest; ordered by id (within each kind, kinds in the
    order asked). Synthetic kinds are read from ``synthetic_dir/manifest.csv``."""
    unknown = [kind for kind in kinds if kind not in KINDS]
    if unknown or not kinds:
        raise ValueError(f"kinds must be a non-empty subset of {list(KINDS)}, got {list(kinds)}")
    examples = _real(raw_dir, splits_csv, split) if "real" in kinds else []
    synthetic = [kind for kind in kinds if kind != "real"]
    if synthetic:
        if synthetic_dir is None:
            raise ValueError(f"kinds {synthetic} need synthetic_dir (the synthesize stage's data/synthetic)")
        examples += _synthetic(Path(synthetic_dir), splits_csv, split, synthetic)
    return examples


def _real(raw_dir: Path, splits_csv: Path, split: str) -> list[Example]:
    manifest = {row["id"]: row for row in read_csv(raw_dir / "manifest.csv")}
    examples = []
    for row in read_csv(splits_csv):
        if row["split"] == split:
            image = manifest[row["id"]]
            if image["sha256"] != row["sha256"]:
                raise ValueError(
                    f"{splits_csv}: id {row['id']} has sha256 {row['sha256']} but the manifest says {image['sha256']}"
                )
            examples.append(Example(row["id"], row["sha256"], int(row["label"]), raw_dir / image["path"]))
    return sorted(examples, key=lambda e: e.id)


def _synthetic(synthetic_dir: Path, splits_csv: Path, split: str, kinds: list[str]) -> list[Example]:
    """The children of ``split``'s sources, checked against the split table (split and label follow the source)."""
    manifest = synthetic_dir / "manifest.csv"
    if not manifest.is_file():
        raise FileNotFoundError(f"{manifest} not found (run the synthesize stage: dvc repro synthesize)")
    sources = {row["id"]: row for row in read_csv(splits_csv)}
    examples = {kind: [] for kind in kinds}
    for number, row in enumerate(read_csv(manifest), start=2):
        source = sources.get(row["source_id"])
        if source is None or (source["split"], source["label"]) != (row["split"], row["label"]):
            found = (
                f"not in {splits_csv}" if source is None else f"in split {source['split']} with label {source['label']}"
            )
            raise ValueError(
                f"{manifest} line {number} ({row['id']}): source {row['source_id']} is {found}, the row "
                f"says split {row['split']} label {row['label']}: run the synthesize stage again"
            )
        if row["split"] == split and row["kind"] in examples:
            examples[row["kind"]].append(
                Example(row["id"], row["sha256"], int(row["label"]), synthetic_dir / row["path"], row["kind"])
            )
    return [e for kind in kinds for e in sorted(examples[kind], key=lambda e: e.id)]

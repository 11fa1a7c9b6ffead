"""Where raw images come from: the synthetic generator, a local folder/manifest, or NATIX on the hub.

Every source is listed first (cheap: names only) so that `data.limit` can pick a deterministic
subset before any image bytes are read, then streamed as `SourceRecord`s.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from roadwork.config import DataParams


class SourceError(ValueError):
    """The source itself (not one image) is unusable: missing folder, bad manifest, bad label."""


@dataclass(frozen=True)
class SourceRecord:
    ref: str  # stable reference to the original (relative path, parquet file#row, synthetic name)
    data: bytes
    label: object  # validated to {0, 1} by the download stage, which names the row otherwise
    scene_description: str = ""


def subset(refs: list[str], limit: int | None) -> set[str]:
    """A deterministic subset of `limit` refs: the smallest sha256(ref), independent of order."""
    if limit is None or limit >= len(refs):
        return set(refs)
    return set(sorted(refs, key=lambda ref: hashlib.sha256(ref.encode()).hexdigest())[:limit])


# ----------------------------------------------------------------------------------- synthetic
class SyntheticSource:
    def __init__(self, params):
        from roadwork.data.synthetic import generate

        self.items = list(generate(params))

    def refs(self) -> list[str]:
        return [item.ref for item in self.items]

    def records(self, wanted: set[str]) -> Iterator[SourceRecord]:
        for item in self.items:
            if item.ref in wanted:
                yield SourceRecord(item.ref, item.data, item.label, item.scene_description)

    def truth(self) -> list[dict]:
        """What the generator planted (duplicates, broken files), for measuring dedup recall."""
        return [
            {"ref": item.ref, "kind": item.kind, "parent": item.parent or "", "variant": item.variant}
            for item in self.items
        ]


# --------------------------------------------------------------------------------------- local
class LocalSource:
    """A folder with one sub-folder per class, or a CSV/parquet manifest with `path` and `label`."""

    def __init__(self, path: str, class_folders: dict[str, int]):
        self.root = Path(path)
        if not self.root.exists():
            raise SourceError(f"data.local.path: {self.root} does not exist")
        self.entries: dict[str, tuple[Path, object, str]] = {}
        if self.root.is_dir():
            self._scan_folders(class_folders)
        else:
            self._read_manifest()

    def _scan_folders(self, class_folders: dict[str, int]) -> None:
        folders = sorted(p for p in self.root.iterdir() if p.is_dir())
        unknown = [p.name for p in folders if p.name.lower() not in class_folders]
        if unknown:
            raise SourceError(
                f"{self.root}: class folder(s) {unknown} not in data.local.class_folders "
                f"({sorted(class_folders)}); rename them or extend the mapping"
            )
        for folder in folders:
            label = class_folders[folder.name.lower()]
            for file in sorted(folder.rglob("*")):
                if file.is_file():
                    ref = file.relative_to(self.root).as_posix()
                    self.entries[ref] = (file, label, "")
        if not self.entries:
            raise SourceError(f"{self.root}: no files found in class sub-folders")

    def _read_manifest(self) -> None:
        import pyarrow.csv as pacsv
        import pyarrow.parquet as pq

        if self.root.suffix.lower() == ".parquet":
            table = pq.read_table(self.root)
        elif self.root.suffix.lower() == ".csv":
            table = pacsv.read_csv(self.root, convert_options=pacsv.ConvertOptions(strings_can_be_null=False))
        else:
            raise SourceError(f"data.local.path: {self.root} is neither a folder nor a .csv/.parquet manifest")
        missing = {"path", "label"} - set(table.column_names)
        if missing:
            raise SourceError(f"{self.root}: manifest lacks column(s) {sorted(missing)}; it needs 'path' and 'label'")
        rows = table.to_pylist()
        for number, row in enumerate(rows, start=2 if self.root.suffix.lower() == ".csv" else 0):
            file = Path(row["path"])
            if not file.is_absolute():
                file = self.root.parent / file
            ref = str(row["path"])
            if ref in self.entries:
                raise SourceError(f"{self.root}: row {number}: path {ref!r} listed twice")
            self.entries[ref] = (file, row["label"], str(row.get("scene_description") or ""))

    def refs(self) -> list[str]:
        return list(self.entries)

    def records(self, wanted: set[str]) -> Iterator[SourceRecord]:
        for ref, (file, label, text) in self.entries.items():
            if ref in wanted:
                # A missing/unreadable file is quarantined like a broken image, not a crash.
                try:
                    data = file.read_bytes()
                except OSError:
                    data = b""
                yield SourceRecord(ref, data, label, text)


# --------------------------------------------------------------------------------------- natix
class NatixSource:
    """`natix-network-org/roadwork`: parquet shards with an image column (dict with `bytes`),
    `label` and `scene_description`, downloaded with huggingface_hub at a pinned revision.

    The token comes from the environment (HF_TOKEN, read by huggingface_hub itself) and is never
    passed through params, logs or outputs.
    """

    def __init__(self, repo_id: str, revision: str):
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

        try:
            self.folder = Path(
                snapshot_download(repo_id, repo_type="dataset", revision=revision, allow_patterns=["*.parquet"])
            )
        except (LocalEntryNotFoundError, HfHubHTTPError, OSError) as error:
            raise SourceError(
                f"data.natix: cannot fetch dataset {repo_id!r} at revision {revision!r}: {error}. "
                "Check the network, the revision, and HF_TOKEN in the environment if the dataset is gated."
            ) from None
        self.files = sorted(self.folder.rglob("*.parquet"))
        if not self.files:
            raise SourceError(f"data.natix: no parquet files in {repo_id}@{revision}")

    def _ref(self, file: Path, row: int) -> str:
        return f"{file.relative_to(self.folder).as_posix()}#{row}"

    def refs(self) -> list[str]:
        import pyarrow.parquet as pq

        return [self._ref(f, i) for f in self.files for i in range(pq.ParquetFile(f).metadata.num_rows)]

    def records(self, wanted: set[str]) -> Iterator[SourceRecord]:
        import pyarrow.parquet as pq

        for file in self.files:
            parquet = pq.ParquetFile(file)
            columns = parquet.schema_arrow.names
            image_columns = [c for c in columns if "image" in c.lower()]
            missing = [c for c in ("label",) if c not in columns]
            if not image_columns or missing:
                raise SourceError(f"{file.name}: expected an image column and 'label', found columns {columns}")
            wanted_cols = [image_columns[0], "label"] + (["scene_description"] if "scene_description" in columns else [])
            row = 0
            for batch in parquet.iter_batches(batch_size=256, columns=wanted_cols):
                for item in batch.to_pylist():
                    ref = self._ref(file, row)
                    row += 1
                    if ref not in wanted:
                        continue
                    image = item[image_columns[0]]
                    data = image.get("bytes") if isinstance(image, dict) else image
                    yield SourceRecord(ref, data or b"", item["label"], item.get("scene_description") or "")


def open_source(params: DataParams):
    if params.source == "synthetic":
        return SyntheticSource(params.synthetic)
    if params.source == "local":
        return LocalSource(params.local.path, params.local.class_folders)
    return NatixSource(params.natix.repo_id, params.natix.revision)


def label_text_conflict(label: int, scene_description: str) -> str | None:
    """The validators' rule: skip rows whose description is non-empty with label 0, or empty with 1."""
    has_text = bool(scene_description.strip())
    if label == 0 and has_text:
        return "label 0 but scene_description is non-empty"
    if label == 1 and not has_text:
        return "label 1 but scene_description is empty"
    return None


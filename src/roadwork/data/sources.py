"""Where raw images come from: the synthetic generator, a local folder/manifest, or NATIX on the hub.

Every source is listed first (cheap: names only) so that `data.limit` can pick a deterministic
subset before any image bytes are read, then streamed as `SourceRecord`s.
"""

from __future__ import annotations

import csv
import hashlib
import os
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
    refused: str = ""  # why the source would not read this entry (nothing of it is kept), or ""
    inside_root: bool = True  # False: read from outside the local root (allowed); never quarantined


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
    """A folder with one sub-folder per class, or a CSV/parquet manifest with `path` and `label`.

    Confined to its root (the folder, or the manifest's folder): every entry must resolve, after
    symlinks, to a file inside the root, else it is refused with the reason and nothing of it is
    read (``allow_outside_root`` lifts this, e.g. for a folder of symlinks into a photo library).
    Files larger than ``max_file_bytes`` are refused unread; a missing file (a dangling symlink, a
    manifest row naming nothing) is refused as "missing file". Manifest labels are read as text
    and checked row by row, naming the row.
    """

    def __init__(self, path: str, class_folders: dict[str, int], allow_outside_root: bool = False,
                 max_file_bytes: int = 1 << 28):
        self.path = Path(path)
        if not self.path.exists():
            raise SourceError(f"data.local.path: {self.path} does not exist")
        self.root = (self.path if self.path.is_dir() else self.path.parent).resolve()
        self.allow_outside_root = allow_outside_root
        self.max_file_bytes = max_file_bytes
        self.entries: dict[str, tuple[Path, object, str]] = {}
        if self.path.is_dir():
            self._scan_folders(class_folders)
        else:
            self._read_manifest()

    def _scan_folders(self, class_folders: dict[str, int]) -> None:
        folders = sorted(p for p in self.path.iterdir() if p.is_dir())
        unknown = [p.name for p in folders if p.name.lower() not in class_folders]
        if unknown:
            raise SourceError(
                f"{self.path}: class folder(s) {unknown} not in data.local.class_folders "
                f"({sorted(class_folders)}); rename them or extend the mapping"
            )
        for folder in folders:
            label = class_folders[folder.name.lower()]
            for file in sorted(folder.rglob("*")):
                if file.is_file() or file.is_symlink():  # a dangling symlink is reported, not skipped
                    self.entries[file.relative_to(self.path).as_posix()] = (file, label, "")
        if not self.entries:
            raise SourceError(f"{self.path}: no files found in class sub-folders")

    def _read_manifest(self) -> None:
        import pyarrow.parquet as pq

        suffix = self.path.suffix.lower()
        if suffix == ".parquet":
            rows, first = pq.read_table(self.path).to_pylist(), 0
        elif suffix == ".csv":
            with open(self.path, newline="", encoding="utf-8") as handle:  # every value as text
                rows, first = list(csv.DictReader(handle)), 2
        else:
            raise SourceError(f"data.local.path: {self.path} is neither a folder nor a .csv/.parquet manifest")
        missing = {"path", "label"} - set(rows[0] if rows else {})
        if missing:
            raise SourceError(f"{self.path}: manifest lacks column(s) {sorted(missing)}; it needs 'path' and 'label'")
        for number, row in enumerate(rows, start=first):
            ref = str(row["path"])
            label = str(row["label"]).strip()
            if label not in ("0", "1"):
                raise SourceError(f"{self.path}: row {number} ({ref!r}): label {row['label']!r} is not 0 or 1")
            if ref in self.entries:
                raise SourceError(f"{self.path}: row {number}: path {ref!r} listed twice")
            self.entries[ref] = (self.path.parent / ref, int(label), str(row.get("scene_description") or ""))

    def refusal(self, file: Path) -> str:
        """Why `file` is not read ("" if it is fine)."""
        if not file.exists():
            target = f" (a symlink to {os.readlink(file)})" if file.is_symlink() else ""
            return f"missing file: {file}{target}"
        resolved = file.resolve()
        if not self.allow_outside_root and not resolved.is_relative_to(self.root):
            return (f"outside data.local.path: {file} resolves to {resolved}, outside {self.root} "
                    "(data.local.allow_outside_root: true allows it)")
        if not resolved.is_file():
            return f"not a regular file: {file}"
        size = resolved.stat().st_size
        if size > self.max_file_bytes:
            return f"file too large: {file} has {size} bytes, more than data.max_file_bytes ({self.max_file_bytes})"
        return ""

    def refs(self) -> list[str]:
        return list(self.entries)

    def records(self, wanted: set[str]) -> Iterator[SourceRecord]:
        for ref, (file, label, text) in self.entries.items():
            if ref in wanted:
                refused = self.refusal(file)
                data = b"" if refused else file.resolve().read_bytes()
                yield SourceRecord(ref, data, label, text, refused, file.resolve().is_relative_to(self.root))


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
            for batch in parquet.iter_batches(batch_size=16, columns=wanted_cols):  # 16 full-size photos at a time
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
        return LocalSource(params.local.path, params.local.class_folders, params.local.allow_outside_root,
                           params.max_file_bytes)
    return NatixSource(params.natix.repo_id, params.natix.revision)


def label_text_conflict(label: int, scene_description: str) -> str | None:
    """The validators' rule: skip rows whose description is non-empty with label 0, or empty with 1."""
    has_text = bool(scene_description.strip())
    if label == 0 and has_text:
        return "label 0 but scene_description is non-empty"
    if label == 1 and not has_text:
        return "label 1 but scene_description is empty"
    return None


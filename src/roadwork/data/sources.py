"""Where raw images come from: the synthetic generator, a local folder/manifest, or NATIX on the hub.

Every source is listed first (cheap: names only) so that `data.limit` can pick a deterministic
subset before any image bytes are read, then streamed as `SourceRecord`s.
"""

from __future__ import annotations

import csv
import errno
import hashlib
import io
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from roadwork.config import DataParams
from roadwork.data.walk import OUTSIDE_HINT, Entry, check_file, inside, kind, printable, problem_of, read_regular, walk


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
INVENTORY_COLUMNS = ["ref", "label", "bytes", "sha256", "problem"]


class LocalSource:
    """A folder with one sub-folder per class, or a CSV/parquet manifest with `path` and `label`.

    Confined to its root (the folder, or the manifest's folder): every entry must resolve, after
    symlinks, to a regular file inside the root, else it is refused with the reason and nothing of
    it is read (``allow_outside_root`` lifts the confinement, e.g. for a folder of symlinks into a
    photo library; a class folder that is such a symlink is then walked too). Listing uses only
    ``stat`` (roadwork.data.walk): FIFOs, sockets, devices, symlink loops, dangling symlinks,
    unreadable entries and files larger than ``max_file_bytes`` become refused entries, never
    opened. Reasons name entries relative to the root, never a symlink's target. Manifest labels
    are read as text and checked row by row, naming the row.
    """

    def __init__(
        self, path: str, class_folders: dict[str, int], allow_outside_root: bool = False, max_file_bytes: int = 1 << 28
    ):
        self.path = Path(path)
        try:
            mode = os.stat(self.path).st_mode
        except OSError as error:
            problem = "does not exist" if error.errno == errno.ENOENT else f"cannot be read ({error.strerror})"
            raise SourceError(f"data.local.path: {self.path} {problem}") from None
        if not (stat.S_ISDIR(mode) or stat.S_ISREG(mode)):
            raise SourceError(f"data.local.path: {self.path} is {kind(mode)}, not a folder or a .csv/.parquet manifest")
        self.root = Path(os.path.realpath(self.path if stat.S_ISDIR(mode) else self.path.parent))
        self.allow_outside_root = allow_outside_root
        self.max_file_bytes = max_file_bytes
        self.entries: dict[str, tuple[Entry, object, str]] = {}  # ref -> (checked entry, label, scene description)
        if stat.S_ISDIR(mode):
            self._scan_folders(class_folders)
        else:
            self._read_manifest()

    def _scan_folders(self, class_folders: dict[str, int]) -> None:
        try:
            with os.scandir(self.path) as listing:
                top = sorted(listing, key=lambda child: child.name)
        except OSError as error:
            raise SourceError(f"data.local.path: {self.path} cannot be listed ({error.strerror})") from None
        folders = []
        for child in top:
            try:
                is_dir = stat.S_ISDIR(child.stat().st_mode)
            except OSError:
                is_dir = False
            if is_dir:
                folders.append(child.name)
                continue
            # files beside the class folders (a README) are not data; anything else there is listed
            entry = check_file(self.path / child.name, child.name, self.root, self.allow_outside_root)
            if entry.problem:
                self.entries[entry.rel] = (entry, None, "")
        unknown = [printable(name) for name in folders if name.lower() not in class_folders]
        if unknown:
            raise SourceError(
                f"{self.path}: class folder(s) {unknown} not in data.local.class_folders "
                f"({sorted(class_folders)}); rename them or extend the mapping"
            )
        tops = []
        for name in folders:
            folder = self.path / name
            if folder.is_symlink() and not self.allow_outside_root and not inside(folder, self.root):
                self.entries[name] = (
                    Entry(
                        name,
                        folder,
                        f"outside data.local.path: class folder {name} is a symlink "
                        f"to a folder outside the root; not walked {OUTSIDE_HINT}",
                    ),
                    class_folders[name.lower()],
                    "",
                )
            else:
                tops.append((folder, name))
        for entry in walk(tops, self.root, self.allow_outside_root, self.max_file_bytes):
            self.entries[entry.rel] = (entry, class_folders[entry.rel.split("/")[0].lower()], "")
        if not self.entries:
            raise SourceError(f"{self.path}: no files found in class sub-folders")

    def _read_manifest(self) -> None:
        suffix = self.path.suffix.lower()
        if suffix not in (".csv", ".parquet"):
            raise SourceError(f"data.local.path: {self.path} is neither a folder nor a .csv/.parquet manifest")
        try:
            data = read_regular(self.path, self.max_file_bytes)
        except OSError as error:
            raise SourceError(
                f"data.local.path: {self.path} cannot be read ({error.strerror or error}; the "
                f"manifest must be a regular file within data.max_file_bytes)"
            ) from None
        columns, rows, first = _parquet_rows(self.path, data) if suffix == ".parquet" else _csv_rows(self.path, data)
        missing = [c for c in ("path", "label") if c not in columns]
        if missing:
            raise SourceError(
                f"{self.path}: manifest lacks column(s) {missing}; it needs 'path' and 'label' (found {columns})"
            )
        if not rows:
            raise SourceError(f"{self.path}: the manifest has a header but no rows")
        for number, row in enumerate(rows, start=first):
            ref = row["path"]
            if ref is None or str(ref) == "" or "\0" in str(ref):
                raise SourceError(f"{self.path}: row {number}: path {ref!r} is empty, null or not a file name")
            ref = str(ref)
            label = str(row["label"])
            if label not in ("0", "1"):  # exactly: " 1", "1.0", "true" are refused
                raise SourceError(f"{self.path}: row {number} ({ref!r}): label {row['label']!r} is not 0 or 1")
            if ref in self.entries:
                raise SourceError(f"{self.path}: row {number}: path {ref!r} listed twice")
            entry = check_file(self.path.parent / ref, ref, self.root, self.allow_outside_root, self.max_file_bytes)
            self.entries[ref] = (entry, int(label), str(row.get("scene_description") or ""))

    def refs(self) -> list[str]:
        return list(self.entries)

    def records(self, wanted: set[str]) -> Iterator[SourceRecord]:
        for ref, (entry, label, text) in self.entries.items():
            if ref not in wanted:
                continue
            if entry.problem:
                yield SourceRecord(ref, b"", label, text, entry.problem)
                continue
            try:
                data = read_regular(entry.path, self.max_file_bytes)
            except OSError as error:  # unreadable, or changed since it was listed
                yield SourceRecord(ref, b"", label, text, problem_of(error, entry.rel, entry.path))
                continue
            yield SourceRecord(ref, data, label, text, "", inside(entry.path, self.root))

    def inventory(self) -> list[dict]:
        """One row per entry: its label, and its size and sha256 (read) or why it is refused (not
        opened). What `download` depends on in dvc.yaml instead of the folder itself."""
        rows = []
        for ref, (entry, label, _) in sorted(self.entries.items()):
            row = {
                "ref": printable(ref),
                "label": "" if label is None else label,
                "bytes": entry.size,
                "sha256": "",
                "problem": entry.problem,
            }
            if not entry.problem:
                try:
                    row["sha256"] = hashlib.sha256(read_regular(entry.path, self.max_file_bytes)).hexdigest()
                except OSError as error:
                    row["problem"] = problem_of(error, entry.rel, entry.path)
            rows.append(row)
        return rows


def _csv_rows(path: Path, data: bytes) -> tuple[list[str], list[dict], int]:
    """A CSV manifest's columns, rows (every value as text) and first row number (the line after the header)."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise SourceError(f"{path}: the manifest is UTF-16 text; save it as UTF-8")
    try:
        text = data.decode("utf-8-sig")  # a UTF-8 byte-order mark (Excel's "CSV UTF-8") is fine
    except UnicodeDecodeError as error:
        raise SourceError(
            f"{path}: the manifest is not UTF-8 text (byte {error.start}: "
            f"{data[error.start : error.start + 1]!r}); save it as UTF-8"
        ) from None
    if "\0" in text:
        raise SourceError(f"{path}: the manifest contains NUL bytes (byte {data.index(0)}): not a text CSV file")
    try:
        reader = csv.DictReader(io.StringIO(text, newline=""))
        rows = list(reader)
    except csv.Error as error:
        raise SourceError(f"{path}: not a readable CSV file (line {reader.line_num}: {error})") from None
    if reader.fieldnames is None:
        raise SourceError(f"{path}: the manifest is empty; it needs a header row with 'path' and 'label'")
    return list(reader.fieldnames), rows, 2


def _parquet_rows(path: Path, data: bytes) -> tuple[list[str], list[dict], int]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(pa.BufferReader(data))
    except (pa.ArrowException, OSError, ValueError) as error:
        raise SourceError(f"{path}: not a readable parquet file ({type(error).__name__}: {error})") from None
    return table.column_names, table.to_pylist(), 0


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
            wanted_cols = [image_columns[0], "label"] + (
                ["scene_description"] if "scene_description" in columns else []
            )
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
        return LocalSource(
            params.local.path, params.local.class_folders, params.local.allow_outside_root, params.max_file_bytes
        )
    return NatixSource(params.natix.repo_id, params.natix.revision)


def scan_local(params: DataParams) -> list[dict]:
    """The local source's inventory (:meth:`LocalSource.inventory`); no rows for the other sources."""
    if params.source != "local":
        return []
    return LocalSource(
        params.local.path, params.local.class_folders, params.local.allow_outside_root, params.max_file_bytes
    ).inventory()


def label_text_conflict(label: int, scene_description: str) -> str | None:
    """The validators' rule: skip rows whose description is non-empty with label 0, or empty with 1."""
    has_text = bool(scene_description.strip())
    if label == 0 and has_text:
        return "label 0 but scene_description is non-empty"
    if label == 1 and not has_text:
        return "label 1 but scene_description is empty"
    return None

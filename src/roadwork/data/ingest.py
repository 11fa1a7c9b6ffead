"""The download stage's logic: source records -> validated RGB images + manifest + quarantine.

Each image is fully decoded exactly once, here; the hashes that dedup needs (file bytes, pixels,
perceptual hash) are computed from that one decode, so dedup never touches the images again.
"""

from __future__ import annotations

import os
from collections import Counter, deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

from tqdm import tqdm

from roadwork.config import DataParams
from roadwork.data.decode import QuarantineError, decode_image
from roadwork.data.images import encode_png, looks_like_image
from roadwork.data.phash import phash64, phash_hex
from roadwork.data.sources import SourceError, SourceRecord, label_text_conflict, open_source, subset
from roadwork.io import atomic_path, format_csv, sha256_bytes

MANIFEST_COLUMNS = [
    "id",
    "sha256",
    "file_sha256",
    "pixel_sha256",
    "phash",
    "label",
    "width",
    "height",
    "path",
    "source_ref",
    "scene_description",
]
QUARANTINE_COLUMNS = ["source_ref", "file_sha256", "reason", "path"]
CONFLICT_COLUMNS = ["source_ref", "label", "reason", "action"]
TRUTH_COLUMNS = ["ref", "kind", "parent", "variant"]


def image_id(ref: str) -> str:
    return sha256_bytes(ref.encode())[:16]


def check_label(record: SourceRecord) -> int:
    label = record.label
    if isinstance(label, str) and label in ("0", "1"):
        label = int(label)
    if isinstance(label, bool) or not isinstance(label, int) or label not in (0, 1):
        raise SourceError(f"row {record.ref!r}: label {record.label!r} is not 0 or 1")
    return label


@dataclass(frozen=True)
class Ingested:
    data: bytes  # bytes to store: the original for RGB JPEGs, else a lossless PNG of the RGB pixels
    suffix: str
    pixel_sha256: str
    phash: int
    width: int
    height: int


def _process(record: SourceRecord, max_pixels: int) -> Ingested | QuarantineError:
    """Runs in a worker thread: the one full decode, and everything derived from it."""
    if record.refused:
        return QuarantineError(record.refused)
    try:
        result = decode_image(record.data, max_pixels)
    except QuarantineError as error:
        return error
    data, suffix = (record.data, "jpg") if result.unchanged else (encode_png(result.image), "png")
    image = result.image
    return Ingested(data, suffix, result.pixel_sha256, phash64(image), image.width, image.height)


def _ordered_map(fn, items: Iterable, workers: int) -> Iterator:
    """Like Executor.map, but with at most workers + 1 items in flight: memory bounded by the core
    count, not the dataset (a decoded 12 MP photo and its pixel hash take ~70 MB)."""
    with ThreadPoolExecutor(max_workers=workers) as pool:
        pending: deque = deque()
        for item in items:
            pending.append((item, pool.submit(fn, item)))
            if len(pending) > workers:
                first, future = pending.popleft()
                yield first, future.result()
        while pending:
            first, future = pending.popleft()
            yield first, future.result()


def ingest(params: DataParams, out_dir: Path) -> dict:
    """Read the configured source into `out_dir` (written atomically); return summary metrics."""
    source = open_source(params)
    wanted = subset(source.refs(), params.limit)
    manifest, quarantine, conflicts = [], [], []
    stored: set[str] = set()
    with atomic_path(out_dir) as tmp:
        (tmp / "images").mkdir(parents=True)
        (tmp / "quarantine").mkdir()
        # Pillow releases the GIL while decoding, so threads use every core.
        results = _ordered_map(lambda r: _process(r, params.max_pixels), source.records(wanted), os.cpu_count() or 1)
        for record, result in tqdm(results, total=len(wanted), desc="download", unit="img"):
            label = None if record.refused else check_label(record)  # a refused entry may have none (a FIFO
            # beside the class folders)
            file_sha = sha256_bytes(record.data)
            if isinstance(result, QuarantineError):
                # bytes are kept (for a person to inspect) only of files that claim to be images,
                # were read at all and came from inside the source: never a refused file, never
                # more than the size cap
                keep = (
                    not record.refused
                    and record.inside_root
                    and len(record.data) <= params.max_file_bytes
                    and looks_like_image(record.ref, record.data)
                )
                path = f"quarantine/{file_sha}.bin" if keep else ""
                if keep:
                    (tmp / path).write_bytes(record.data)
                quarantine.append(
                    {
                        "source_ref": record.ref,
                        "file_sha256": "" if record.refused else file_sha,
                        "reason": result.reason,
                        "path": path,
                    }
                )
                continue
            if params.source == "natix":
                problem = label_text_conflict(label, record.scene_description)
                if problem:
                    action = params.natix.label_text_conflict
                    conflicts.append({"source_ref": record.ref, "label": label, "reason": problem, "action": action})
                    if action == "drop":
                        continue
            sha = sha256_bytes(result.data)
            path = f"images/{sha}.{result.suffix}"
            if sha not in stored:  # exact duplicates share one stored file
                (tmp / path).write_bytes(result.data)
                stored.add(sha)
            manifest.append(
                {
                    "id": image_id(record.ref),
                    "sha256": sha,
                    "file_sha256": file_sha,
                    "pixel_sha256": result.pixel_sha256,
                    "phash": phash_hex(result.phash),
                    "label": label,
                    "width": result.width,
                    "height": result.height,
                    "path": path,
                    "source_ref": record.ref,
                    "scene_description": record.scene_description,
                }
            )
        manifest.sort(key=lambda row: row["id"])
        quarantine.sort(key=lambda row: row["source_ref"])
        conflicts.sort(key=lambda row: row["source_ref"])
        (tmp / "manifest.csv").write_text(format_csv(manifest, MANIFEST_COLUMNS), encoding="utf-8")
        (tmp / "quarantine.csv").write_text(format_csv(quarantine, QUARANTINE_COLUMNS), encoding="utf-8")
        (tmp / "label_conflicts.csv").write_text(format_csv(conflicts, CONFLICT_COLUMNS), encoding="utf-8")
        if hasattr(source, "truth"):
            truth = sorted(source.truth(), key=lambda row: row["ref"])
            (tmp / "truth.csv").write_text(format_csv(truth, TRUTH_COLUMNS), encoding="utf-8")
    labels = Counter(row["label"] for row in manifest)
    resolved = {"natix_commit": source.folder.name} if params.source == "natix" else {}
    return resolved | {
        "source": params.source,
        "listed": len(wanted),
        "images": len(manifest),
        "positives": labels[1],
        "negatives": labels[0],
        "quarantined": len(quarantine),
        "quarantine_reasons": dict(sorted(Counter(r["reason"].split(":")[0] for r in quarantine).items())),
        "label_text_conflicts": len(conflicts),
        "stored_files": len(stored),
    }

"""dedup: exact duplicates removed, near-duplicates clustered, label conflicts resolved (roadwork.data.dedup):
records read from the download manifest, the DedupResult written out as data/dedup/*.csv."""

import logging
import time
from pathlib import Path

from roadwork.data.dedup import DedupResult, conflict_warnings, deduplicate
from roadwork.data.phash import phash_from_hex, phash_hex
from roadwork.data.recall import planted_truth
from roadwork.io import atomic_path, format_csv, read_csv
from roadwork.stages.common import DEDUP, RAW, finish, params

log = logging.getLogger("roadwork.stages.dedup")  # not __name__: that is __main__ under `python -m`


RECORD_COLUMNS = ["id", "sha256", "label", "original_label", "cluster", "phash"]


def manifest_records(raw_dir: Path) -> list[dict]:
    return [
        {**row, "phash": phash_from_hex(row["phash"]), "label": int(row["label"])}
        for row in read_csv(raw_dir / "manifest.csv")
    ]


def write_outputs(result: DedupResult, records: list[dict], out_dir: Path) -> None:
    sha = {r["id"]: r["sha256"] for r in records}
    kept = [
        {
            "id": k.id,
            "sha256": sha[k.id],
            "label": k.label,
            "original_label": k.original_label,
            "cluster": k.cluster,
            "phash": phash_hex(k.phash),
        }
        for k in result.kept
    ]
    removed = [{"id": r.id, "reason": r.reason, "cluster": r.cluster, "label": r.label} for r in result.removed]
    conflicts = [
        {
            "cluster": c.cluster,
            "ids": " ".join(c.ids),
            "labels": " ".join(map(str, c.labels)),
            "resolution": c.resolution,
        }
        for c in result.conflicts
    ]
    pairs = [{"id_a": a, "id_b": b, "distance": d} for a, b, d in result.near_pairs]
    (out_dir / "records.csv").write_text(format_csv(kept, RECORD_COLUMNS))
    (out_dir / "removed.csv").write_text(format_csv(removed, ["id", "reason", "cluster", "label"]))
    (out_dir / "label_conflicts.csv").write_text(format_csv(conflicts, ["cluster", "ids", "labels", "resolution"]))
    (out_dir / "near_pairs.csv").write_text(format_csv(pairs, ["id_a", "id_b", "distance"]))


def main() -> None:
    started = time.monotonic()
    config = params().dedup
    records = manifest_records(RAW)
    result = deduplicate(records, config.max_hamming, config.label_conflict, config.near_duplicates)
    with atomic_path(DEDUP) as tmp:
        tmp.mkdir()
        write_outputs(result, records, tmp)
    metrics = dict(result.counts)
    metrics["warnings"] = conflict_warnings(result.counts, config.max_conflict_share)
    for warning in metrics["warnings"]:
        log.warning("%s", warning)
    truth = planted_truth(RAW, records, config.max_hamming)
    if truth is not None:
        metrics["synthetic_truth"] = truth
    finish("dedup", metrics, started)


if __name__ == "__main__":
    main()

"""Turn a DedupResult into the dedup stage's files, and measure it against planted truth."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from roadwork.data.dedup import DedupResult, find_near_duplicate_pairs, pair_metrics, pair_recall
from roadwork.data.ingest import image_id
from roadwork.io import format_csv, read_csv

RECORD_COLUMNS = ["id", "sha256", "label", "original_label", "cluster", "phash"]


def manifest_records(raw_dir: Path) -> list[dict]:
    return [
        {**row, "phash": int(row["phash"], 16), "label": int(row["label"])}
        for row in read_csv(raw_dir / "manifest.csv")
    ]


def write_outputs(result: DedupResult, records: list[dict], out_dir: Path) -> None:
    sha = {r["id"]: r["sha256"] for r in records}
    kept = [{"id": k.id, "sha256": sha[k.id], "label": k.label, "original_label": k.original_label,
             "cluster": k.cluster, "phash": f"{k.phash:016x}"} for k in result.kept]
    removed = [{"id": r.id, "reason": r.reason, "cluster": r.cluster, "label": r.label} for r in result.removed]
    conflicts = [{"cluster": c.cluster, "ids": " ".join(c.ids), "labels": " ".join(map(str, c.labels)),
                  "resolution": c.resolution} for c in result.conflicts]
    pairs = [{"id_a": a, "id_b": b, "distance": d} for a, b, d in result.near_pairs]
    (out_dir / "records.csv").write_text(format_csv(kept, RECORD_COLUMNS))
    (out_dir / "removed.csv").write_text(format_csv(removed, ["id", "reason", "cluster", "label"]))
    (out_dir / "label_conflicts.csv").write_text(format_csv(conflicts, ["cluster", "ids", "labels", "resolution"]))
    (out_dir / "near_pairs.csv").write_text(format_csv(pairs, ["id_a", "id_b", "distance"]))


def planted_truth(raw_dir: Path, records: list[dict], max_hamming: int) -> dict | None:
    """Recall of the synthetic generator's planted near-duplicates, and the false-pair rate."""
    truth_csv = raw_dir / "truth.csv"
    if not truth_csv.exists():
        return None
    present = {r["id"] for r in records}
    planted, near = [], []
    for row in read_csv(truth_csv):
        if row["parent"] and row["kind"] != "broken":
            pair = (image_id(row["ref"]), image_id(row["parent"]))
            if pair[0] in present and pair[1] in present:
                planted.append(pair)
                if row["kind"] == "near_duplicate":
                    near.append(pair)
    ids = [r["id"] for r in records]
    hashes = np.array([r["phash"] for r in records], dtype=np.uint64)
    found = [(ids[a], ids[b]) for a, b in find_near_duplicate_pairs(hashes, max_hamming).tolist()]
    metrics = pair_metrics(found, planted, len(ids))
    return {"planted_near_duplicates": len(near), "near_duplicate_recall": round(pair_recall(found, near), 6),
            "false_pairs": metrics["false_pairs"], "false_pair_rate": metrics["false_pair_rate"]}

"""split: train / val_select / val_calib / val_test, stratified by label, grouped by dedup cluster.

Fails (and writes nothing) if the leakage audit finds a near-duplicate pair across splits, or if a
split lacks one of the classes.
"""

import sys
import time

from roadwork.data.split import assign_splits, audit_leakage, split_summary, unusable_splits
from roadwork.io import atomic_path, format_csv, read_csv
from roadwork.stages.common import DEDUP, SPLIT, finish, params

COLUMNS = ["id", "sha256", "label", "cluster", "split"]


def main() -> None:
    started = time.monotonic()
    config = params()
    records = [{**row, "label": int(row["label"])} for row in read_csv(DEDUP / "records.csv")]
    assignment = assign_splits(records, config.split.ratios.model_dump(), config.split.seed)
    leaks = audit_leakage(
        [r["id"] for r in records], assignment, [int(r["phash"], 16) for r in records], config.dedup.max_hamming
    )
    if leaks:
        shown = "\n".join(f"  {leak}" for leak in leaks[:10])
        sys.exit(
            f"split failed: {len(leaks)} near-duplicate pair(s) across splits "
            f"(dedup.max_hamming={config.dedup.max_hamming}):\n{shown}"
        )
    summary = split_summary(records, assignment)
    problems = unusable_splits(summary, config.split.ratios.model_dump())
    if problems:
        sys.exit("split failed:\n" + "\n".join(f"  {problem}" for problem in problems))
    rows = [{**{k: r[k] for k in COLUMNS[:4]}, "split": assignment[r["id"]]} for r in records]
    with atomic_path(SPLIT) as tmp:
        tmp.mkdir()
        (tmp / "splits.csv").write_text(format_csv(rows, COLUMNS))
    metrics = {name: {k: v for k, v in stats.items()} for name, stats in summary.items()}
    metrics["leakage_pairs"] = 0
    finish("split", metrics, started)


if __name__ == "__main__":
    main()

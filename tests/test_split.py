"""Group-aware stratified split, leakage audit, split summary."""

from __future__ import annotations

import random
from collections import Counter, defaultdict

import pytest

from roadwork.config import SPLITS, SplitRatios
from roadwork.data.dedup import deduplicate
from roadwork.data.split import LeakPair, assign_splits, audit_leakage, split_summary, unusable_splits

RATIOS = {"train": 0.60, "val_select": 0.15, "val_calib": 0.15, "val_test": 0.10}


def make_records(n_clusters: int, seed: int = 0, max_size: int = 4, positive: float = 0.2):
    """Records in clusters of 1..max_size members, one label per cluster."""
    rng = random.Random(seed)
    records = []
    for c in range(n_clusters):
        label = int(rng.random() < positive)
        size = 1 if rng.random() < 0.7 else rng.randint(2, max_size)
        for m in range(size):
            records.append({"id": f"c{c:05d}_{m}", "label": label, "cluster": f"c{c:05d}_0"})
    return records


def per_label_counts(records, assignment):
    counts = Counter()
    for r in records:
        counts[assignment[r["id"]], r["label"]] += 1
    return counts


def test_ratios_honoured_per_label_singletons():
    records = [{"id": f"r{k:04d}", "label": int(k % 5 == 0)} for k in range(1003)]
    assignment = assign_splits(records, RATIOS, seed=0)
    assert set(assignment) == {r["id"] for r in records}
    counts = per_label_counts(records, assignment)
    for label in (0, 1):
        n_label = sum(1 for r in records if r["label"] == label)
        for split in SPLITS:
            assert abs(counts[split, label] - RATIOS[split] * n_label) < 1, (split, label)


def test_ratios_honoured_per_label_with_clusters_and_clusters_never_split():
    records = make_records(1500, seed=1)
    max_size = max(Counter(r["cluster"] for r in records).values())
    assignment = assign_splits(records, RATIOS, seed=3)
    counts = per_label_counts(records, assignment)
    for label in (0, 1):
        n_label = sum(1 for r in records if r["label"] == label)
        for split in SPLITS:
            assert abs(counts[split, label] - RATIOS[split] * n_label) < max_size, (split, label)
    splits_of_cluster = defaultdict(set)
    for r in records:
        splits_of_cluster[r["cluster"]].add(assignment[r["id"]])
    assert all(len(s) == 1 for s in splits_of_cluster.values())


def test_deterministic_order_independent_and_seed_dependent():
    records = make_records(400, seed=2)
    reference = assign_splits(records, RATIOS, seed=42)
    assert assign_splits(records, RATIOS, seed=42) == reference
    for trial in range(3):
        shuffled = records[:]
        random.Random(trial).shuffle(shuffled)
        assert assign_splits(shuffled, RATIOS, seed=42) == reference
    other = assign_splits(records, RATIOS, seed=43)
    assert other != reference
    # a different seed reshuffles membership, not the sizes
    assert Counter(other.values()) == Counter(reference.values())
    assert list(reference) == sorted(reference)


def test_zero_ratio_split_and_config_object():
    records = make_records(300, seed=4)
    ratios = SplitRatios(train=0.7, val_select=0.3, val_calib=0.0, val_test=0.0)
    assignment = assign_splits(records, ratios, seed=0)
    assert set(assignment.values()) == {"train", "val_select"}
    # a subset mapping means the rest are 0
    assert set(assign_splits(records, {"train": 1.0}, seed=0).values()) == {"train"}


def test_tiny_datasets_do_not_crash():
    assert assign_splits([], RATIOS, seed=0) == {}
    assert assign_splits([{"id": "a", "label": 1}], RATIOS, seed=0) == {"a": "train"}
    two = assign_splits([{"id": "a", "label": 1}, {"id": "b", "label": 0}], RATIOS, seed=0)
    assert two == {"a": "train", "b": "train"}  # one per label: each goes to the largest target
    five = assign_splits([{"id": str(k), "label": 0} for k in range(5)], RATIOS, seed=0)
    assert Counter(five.values()) == Counter({"train": 3, "val_select": 1, "val_calib": 1})


def test_invalid_input():
    with pytest.raises(ValueError, match="unknown split"):
        assign_splits([{"id": "a", "label": 0}], {"train": 0.5, "test": 0.5}, seed=0)
    with pytest.raises(ValueError):
        assign_splits([{"id": "a", "label": 0}], {"train": 0.0}, seed=0)
    with pytest.raises(ValueError, match="duplicate"):
        assign_splits([{"id": "a", "label": 0}, {"id": "a", "label": 1}], RATIOS, seed=0)


def test_mixed_label_cluster_goes_to_majority_stratum_and_stays_together():
    records = [{"id": f"m{k}", "label": int(k < 2), "cluster": "m0"} for k in range(3)]
    records += [{"id": f"s{k:03d}", "label": k % 2} for k in range(100)]
    assignment = assign_splits(records, RATIOS, seed=0)
    assert len({assignment[f"m{k}"] for k in range(3)}) == 1


# --------------------------------------------------------------------------------- leakage
def hashed_records(seed: int = 0):
    rng = random.Random(seed)
    records = []
    for k in range(300):
        parent = rng.getrandbits(64)
        records.append(
            {
                "id": f"i{k:03d}",
                "file_sha256": f"f{k}",
                "pixel_sha256": f"p{k}",
                "phash": parent,
                "label": int(k % 4 == 0),
            }
        )
        if k % 15 == 0:  # a near duplicate 3 bits away
            near = parent ^ 0b1011
            records.append(
                {
                    "id": f"n{k:03d}",
                    "file_sha256": f"nf{k}",
                    "pixel_sha256": f"np{k}",
                    "phash": near,
                    "label": int(k % 4 == 0),
                }
            )
    return records


def test_audit_leakage_clean_after_dedup_and_split():
    records = hashed_records()
    kept = deduplicate(records, max_hamming=10).kept
    assignment = assign_splits(kept, RATIOS, seed=0)
    ids = [r.id for r in kept]
    assert audit_leakage(ids, assignment, [r.phash for r in kept], 10) == []


def test_audit_leakage_finds_planted_cross_split_pair():
    records = hashed_records()
    ids = [r["id"] for r in records]
    hashes = [r["phash"] for r in records]
    # a split that ignores clusters: put the near copy n015 elsewhere than its parent i015
    assignment = {rid: "train" for rid in ids}
    assignment["n015"] = "val_test"
    leaks = audit_leakage(ids, assignment, hashes, 10)
    assert leaks == [LeakPair("i015", "train", "n015", "val_test", 3)]
    # aligned-sequence form of the splits, reversed input order: same answer
    splits = [assignment[i] for i in ids]
    assert audit_leakage(ids[::-1], splits[::-1], hashes[::-1], 10) == leaks
    # below the pair's distance nothing is reported
    assert audit_leakage(ids, assignment, hashes, 2) == []
    with pytest.raises(ValueError, match="no split"):
        audit_leakage(ids, {"i000": "train"}, hashes, 10)


# --------------------------------------------------------------------------------- summary
def test_split_summary_counts():
    records = [{"id": f"r{k}", "label": int(k < 3), "cluster": f"c{k // 2}"} for k in range(8)]
    assignment = {f"r{k}": ("train" if k < 6 else "val_test") for k in range(8)}
    summary = split_summary(records, assignment)
    assert list(summary) == [*SPLITS, "total"]
    assert summary["train"] == {
        "n": 6,
        "positive": 3,
        "negative": 3,
        "positive_rate": 0.5,
        "clusters": 3,
        "fraction": 0.75,
    }
    assert summary["val_test"]["positive_rate"] == 0.0 and summary["val_test"]["clusters"] == 1
    assert summary["val_select"]["n"] == 0 and summary["val_select"]["positive_rate"] is None
    assert summary["total"]["n"] == 8 and summary["total"]["positive"] == 3
    with pytest.raises(ValueError):
        split_summary(records, {})


def test_unusable_splits_name_the_split_counts_and_setting():
    records = [{"id": f"n{i}", "label": 0} for i in range(40)] + [{"id": f"p{i}", "label": 1} for i in range(3)]
    ratios = {"train": 0.6, "val_select": 0.15, "val_calib": 0.15, "val_test": 0.1}
    summary = split_summary(records, assign_splits(records, ratios, seed=0))
    problems = unusable_splits(summary, ratios)
    roles = {"val_calib": "fits the temperature", "val_test": "is the final report"}
    empty = [name for name in SPLITS if summary[name]["positive"] == 0]
    assert empty == ["val_calib", "val_test"]  # 3 positives: train gets 2, val_select 1 (largest deficits)
    assert problems == [
        f"split {name!r} has 0 roadwork (label 1) and {summary[name]['negative']} other (label 0) "
        f"image(s), but it {roles[name]} and needs both classes: add images of the missing class, or "
        f"give it a larger share (split.ratios.{name} is {ratios[name]})"
        for name in empty
    ]
    records += [{"id": f"p{i}", "label": 1} for i in range(3, 12)]
    assert not unusable_splits(split_summary(records, assign_splits(records, ratios, seed=0)), ratios)


def test_split_stage_refuses_data_with_one_class(tmp_path, make_jpeg):
    """An empty roadwork/ folder used to train 30 epochs of nothing and end in a scikit-learn
    traceback; now split stops, naming the split and what to change, and writes nothing."""
    import subprocess
    import sys

    photos = tmp_path / "photos"
    (photos / "roadwork").mkdir(parents=True)
    (photos / "none").mkdir()
    for i in range(30):
        (photos / "none" / f"{i}.jpg").write_bytes(make_jpeg(i))
    (tmp_path / "params.yaml").write_text(f"data: {{source: local, local: {{path: {photos}}}}}\n")
    for stage in ("download", "dedup"):
        done = subprocess.run(
            [sys.executable, "-m", f"roadwork.stages.{stage}"], cwd=tmp_path, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
    failed = subprocess.run(
        [sys.executable, "-m", "roadwork.stages.split"], cwd=tmp_path, capture_output=True, text=True
    )
    assert failed.returncode == 1 and "Traceback" not in failed.stderr
    assert failed.stderr.startswith("split failed:\n  split 'train' has 0 roadwork (label 1) and ")
    from roadwork.config import SplitParams

    assert (
        f"split.ratios.train is {SplitParams().ratios.train:g}" in failed.stderr
        and failed.stderr.count("needs both classes") == 4
    )
    assert not (tmp_path / "data" / "split").exists()


def test_no_images_at_all_is_one_message_that_does_not_suggest_a_larger_share():
    """When dedup drops every image, "give it a larger share" cannot help: one message says what happened."""
    ratios = {"train": 0.6, "val_select": 0.15, "val_calib": 0.15, "val_test": 0.1}
    problems = unusable_splits(split_summary([], assign_splits([], ratios, seed=0)), ratios)
    assert problems == [
        "no images to split: the dedup stage kept none (download quarantined them, or dedup removed "
        "them: see data/raw/quarantine.csv and data/dedup/removed.csv for each image's reason); add "
        "usable images of both classes, no split.ratios setting can help"
    ]

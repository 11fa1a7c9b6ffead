"""Group-aware, label-stratified, seeded split into train / val_select / val_calib / val_test.

Rules of :func:`assign_splits`
------------------------------
* **Groups.** Records sharing a ``cluster`` (the dedup cluster id) form one group and always
  land in the same split, so near-duplicates never straddle a split boundary. A record without a
  ``cluster`` field is its own group.
* **Strata.** Each group is stratified by its label (after dedup a cluster usually has one label). A
  group holding both labels (input that was not deduplicated) goes to the stratum of its
  majority label, ties to label 1; its members still count under their own labels, so per-label
  counts can then drift from the targets by up to that group's size.
* **Targets.** Per stratum ``l`` and split ``s``: ``target[s, l] = ratio[s] * n_l`` where
  ``n_l`` is the number of records (not groups) of label ``l``. Ratios are normalised by their
  sum; a split with ratio 0 gets nothing.
* **Greedy.** Within a stratum, groups are ordered largest first; equal sizes are ordered by a
  seeded key ``sha256(f"{seed}\\0{cluster}")`` (so the order is random under a seed but
  independent of the input order and of numpy's RNG implementation). Each group goes to the
  split furthest below its target in records (``target - assigned``); ties go to the split
  with the larger ratio, then to the earlier one in ``SPLITS``. With singleton groups every
  split ends within one record of its target per label (the max-deficit rule never pushes a
  split more than one item past its target); a group of size k can overshoot by up to k-1 more.
* **Tiny datasets** never crash: with fewer records than non-zero-ratio splits the first
  records go to the splits with the largest targets (train first), and some splits stay empty.
  Callers that need every split populated must check :func:`split_summary`.
"""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from typing import Mapping, NamedTuple, Sequence

import numpy as np

from roadwork.config import SPLITS
from roadwork.data.dedup import record_field as _field
from roadwork.data.hamming import as_hash_array, find_near_duplicate_pairs


def _normalise_ratios(ratios) -> dict[str, float]:
    if hasattr(ratios, "model_dump"):
        ratios = ratios.model_dump()
    ratios = dict(ratios)
    unknown = sorted(set(ratios) - set(SPLITS))
    if unknown:
        raise ValueError(f"unknown split name(s) {unknown}; expected a subset of {list(SPLITS)}")
    values = {name: float(ratios.get(name, 0.0)) for name in SPLITS}
    if any(not np.isfinite(v) or v < 0 for v in values.values()):
        raise ValueError(f"split ratios must be finite and >= 0, got {values}")
    total = sum(values.values())
    if total <= 0:
        raise ValueError("at least one split ratio must be > 0")
    return {name: value / total for name, value in values.items()}


def stable_key(seed: int, name: str) -> str:
    """Seeded sort key of a name: random-looking under a seed, independent of input order."""
    return hashlib.sha256(f"{int(seed)}\x00{name}".encode("utf-8")).hexdigest()


def assign_splits(records: Sequence, ratios, seed: int) -> dict[str, str]:
    """Map every record id to one of ``SPLITS`` (see the module docstring for the rules).

    ``records``: dicts or objects with ``id``, ``label`` (0/1) and optionally ``cluster``
    (e.g. :class:`roadwork.data.dedup.KeptRecord`). ``ratios``: a mapping over (a subset of)
    ``SPLITS`` or a ``SplitRatios``. Returns ``{id: split}`` in ascending id order.
    """
    shares = _normalise_ratios(ratios)
    active = [name for name in SPLITS if shares[name] > 0]
    rank = {name: (-shares[name], SPLITS.index(name)) for name in active}

    groups: dict[str, list[tuple[str, int]]] = defaultdict(list)
    seen: set[str] = set()
    for record in records:
        rid = str(_field(record, "id"))
        if rid in seen:
            raise ValueError(f"duplicate record id {rid!r}")
        seen.add(rid)
        label = int(_field(record, "label"))
        if label not in (0, 1):
            raise ValueError(f"record {rid}: label must be 0 or 1, got {label}")
        cluster = _field(record, "cluster", None)
        cluster = rid if cluster in (None, "") else str(cluster)
        groups[cluster].append((rid, label))

    strata: dict[int, list[str]] = defaultdict(list)
    label_totals: Counter = Counter()
    for cluster, members in groups.items():
        votes = Counter(label for _, label in members)
        label_totals.update(votes)
        strata[1 if votes[1] >= votes[0] else 0].append(cluster)

    assignment: dict[str, str] = {}
    for label in (0, 1):
        clusters = strata.get(label, [])
        if not clusters:
            continue
        target = {name: shares[name] * label_totals[label] for name in active}
        assigned = {name: 0 for name in active}
        clusters.sort(key=lambda c: (-len(groups[c]), stable_key(seed, c)))
        for cluster in clusters:
            members = groups[cluster]
            weight = sum(1 for _, member_label in members if member_label == label)
            best = max(active, key=lambda s: (target[s] - assigned[s], tuple(-x for x in rank[s])))
            assigned[best] += weight
            for rid, _ in members:
                assignment[rid] = best
    return {rid: assignment[rid] for rid in sorted(assignment)}


class LeakPair(NamedTuple):
    id_a: str
    split_a: str
    id_b: str
    split_b: str
    distance: int


def audit_leakage(ids: Sequence[str], splits_of_ids, hashes, max_distance: int) -> list[LeakPair]:
    """Cross-split near-duplicate pairs, recomputed from the pHashes (independent of dedup).

    ``ids`` and ``hashes`` are aligned; ``splits_of_ids`` is either a mapping id -> split or a
    sequence aligned with ``ids``. Returns every pair (id_a < id_b) in different splits with
    Hamming distance <= ``max_distance``, sorted; ``[]`` means no leakage.
    """
    ids = [str(i) for i in ids]
    hashes = as_hash_array(hashes)
    if len(hashes) != len(ids):
        raise ValueError(f"{len(ids)} ids but {len(hashes)} hashes")
    if isinstance(splits_of_ids, Mapping):
        missing = [i for i in ids if i not in splits_of_ids]
        if missing:
            raise ValueError(f"{len(missing)} ids have no split, e.g. {missing[:3]}")
        splits = [str(splits_of_ids[i]) for i in ids]
    else:
        splits = [str(s) for s in splits_of_ids]
        if len(splits) != len(ids):
            raise ValueError(f"{len(ids)} ids but {len(splits)} splits")
    order = sorted(range(len(ids)), key=lambda k: ids[k])
    ids = [ids[k] for k in order]
    splits = [splits[k] for k in order]
    hashes = hashes[np.array(order, dtype=np.int64)]
    pairs = find_near_duplicate_pairs(hashes, max_distance)
    leaks = []
    for a, b in pairs.tolist():
        if splits[a] != splits[b]:
            distance = int(np.bitwise_count(hashes[a] ^ hashes[b]))
            leaks.append(LeakPair(ids[a], splits[a], ids[b], splits[b], distance))
    return leaks


def split_summary(records: Sequence, assignment: Mapping[str, str]) -> dict:
    """Per split (every name in ``SPLITS``, even when empty) and in total: records, positives,
    negatives, positive rate (``None`` for an empty split), clusters and share of all records."""
    rows: dict[str, dict] = {name: {"n": 0, "positive": 0, "clusters": set()} for name in SPLITS}
    total = 0
    for record in records:
        rid = str(_field(record, "id"))
        if rid not in assignment:
            raise ValueError(f"record {rid} has no split")
        split = assignment[rid]
        if split not in rows:
            raise ValueError(f"record {rid}: unknown split {split!r}")
        cluster = _field(record, "cluster", None)
        row = rows[split]
        row["n"] += 1
        row["positive"] += int(_field(record, "label"))
        row["clusters"].add(rid if cluster in (None, "") else str(cluster))
        total += 1
    out: dict = {}
    for name in SPLITS:
        row = rows[name]
        n = row["n"]
        out[name] = {
            "n": n,
            "positive": row["positive"],
            "negative": n - row["positive"],
            "positive_rate": row["positive"] / n if n else None,
            "clusters": len(row["clusters"]),
            "fraction": n / total if total else 0.0,
        }
    positives = sum(out[name]["positive"] for name in SPLITS)
    out["total"] = {
        "n": total,
        "positive": positives,
        "negative": total - positives,
        "positive_rate": positives / total if total else None,
        "clusters": sum(out[name]["clusters"] for name in SPLITS),
        "fraction": 1.0 if total else 0.0,
    }
    return out


SPLIT_ROLES = {
    "train": "trains the model",
    "val_select": "picks the epoch and the decision threshold",
    "val_calib": "fits the temperature",
    "val_test": "is the final report",
}


def unusable_splits(summary: Mapping[str, Mapping], ratios: Mapping[str, float]) -> list[str]:
    """One message per split of :func:`split_summary` that later stages cannot use: every split
    must hold both classes (each computes an MCC or fits a calibration on them). No image at all is
    one message: no share of nothing helps."""
    if not any(summary[name]["n"] for name in SPLITS):
        return [
            "no images to split: the dedup stage kept none (download quarantined them, or dedup removed them: "
            "see data/raw/quarantine.csv and data/dedup/removed.csv for each image's reason); add usable "
            "images of both classes, no split.ratios setting can help"
        ]
    problems = []
    for name in SPLITS:
        row = summary[name]
        if row["positive"] and row["negative"]:
            continue
        problems.append(
            f"split {name!r} has {row['positive']} roadwork (label 1) and {row['negative']} other (label 0) "
            f"image(s), but it {SPLIT_ROLES[name]} and needs both classes: add images of the missing class, or "
            f"give it a larger share (split.ratios.{name} is {ratios[name]})"
        )
    return problems

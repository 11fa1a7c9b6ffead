"""Exact and near-duplicate detection, clustering and label-conflict resolution.

No file I/O here: the stage script decodes images, computes ``file_sha256``, ``pixel_sha256``
and ``phash`` (see :mod:`roadwork.data.phash`) and writes whatever it wants from the
:class:`DedupResult`.

Near-duplicate pairs come from :func:`roadwork.data.hamming.find_near_duplicate_pairs`.

Clusters and representatives
----------------------------
Records are linked by exact edges (same ``file_sha256`` or same ``pixel_sha256``: an *exact
group*) and by near edges (pHash distance <= ``max_hamming``); the connected components
(union-find) are the *clusters*. Chains link: a~b and b~c put a, b, c in one cluster even if
a and c are far apart. Every representative is the member with the **smallest id** (string
order), so the result does not depend on input order; a cluster's id is its smallest member's
id (that member may itself be removed as a label conflict).

* exact duplicates: every member of an exact group but its smallest id is removed,
  ``"exact_duplicate_of:<smallest id of the exact group>"``.
* near duplicates: ``near_duplicates="group"`` keeps them all, sharing the ``cluster`` id (the
  split must keep a cluster together); ``"drop"`` keeps only the cluster representative and
  removes the others, ``"near_duplicate_of:<cluster id>"`` (a member of the same cluster,
  possibly through a chain, not necessarily within ``max_hamming`` of it).
* label conflicts: a cluster whose members (exact duplicates included: a byte-identical image
  labelled both ways is the plainest conflict) carry both labels. Always reported. The decision
  is local: the records **in conflict** are those linked *directly* (exact group, or pHash
  distance <= ``max_hamming``) to a record with the other label, with their whole exact group.
  Union-find chains: at 8,500 street photos, false pairs merge up to ~30 unrelated scenes into
  one cluster (benchmarks/RESULTS.md, NATIX scale), and a decision over the whole cluster would
  drop or relabel scenes that are nowhere near the disagreement. Members that see no other
  label keep theirs, so a kept cluster can hold both labels (the split still keeps it together:
  grouping is never split, so near-duplicates never straddle splits).
  ``label_conflict="drop"`` removes the records in conflict, reason ``"label_conflict"`` (this
  reason wins over the exact/near reasons). ``"majority"``: the records in conflict and the
  records linked directly to them vote, one vote per input record (exact copies included); the
  records in conflict take the majority label; **a tie drops them** as in ``"drop"``.
  :class:`LabelConflict` lists the records in conflict of each such cluster.

Cluster shape (in ``counts``, no ground truth needed): ``largest_cluster``,
``images_in_clusters_over_10`` and ``chained_clusters``, the clusters with two members more than
``max_hamming`` apart (linked only through a chain). Many or large chained clusters mean that
false pairs merge unrelated scenes; :func:`conflict_warnings` warns when label conflicts drop
more than a set share of the images.
"""

from __future__ import annotations

import dataclasses
from collections import Counter, defaultdict
from typing import Any, Iterable, Literal, Mapping, Sequence

import numpy as np

from roadwork.data.hamming import HASH_BITS, find_near_duplicate_pairs


# ================================================================================ union-find
class UnionFind:
    """Disjoint sets over 0..n-1 with path halving and union by size."""

    def __init__(self, n: int):
        self.parent = list(range(n))
        self.size = [1] * n

    def find(self, x: int) -> int:
        parent = self.parent
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    def union(self, a: int, b: int) -> bool:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return False
        if self.size[ra] < self.size[rb]:
            ra, rb = rb, ra
        self.parent[rb] = ra
        self.size[ra] += self.size[rb]
        return True

    def union_pairs(self, pairs: Iterable[tuple[int, int]]) -> None:
        for a, b in pairs:
            self.union(int(a), int(b))

    def components(self) -> list[list[int]]:
        """Members of each set, each list ascending, lists ordered by their first member."""
        groups: dict[int, list[int]] = defaultdict(list)
        for x in range(len(self.parent)):
            groups[self.find(x)].append(x)
        return sorted(groups.values(), key=lambda members: members[0])


def diameter(hashes: np.ndarray, block: int = 512) -> int:
    """Largest pHash distance between two of `hashes` (uint64); 0 for fewer than two."""
    widest = 0
    for start in range(0, len(hashes), block):
        rows = hashes[start : start + block]
        widest = max(widest, int(np.bitwise_count(rows[:, None] ^ hashes[None, :]).max()))
    return widest


def conflict_warnings(counts: Mapping, max_share: float) -> list[str]:
    """A warning when label conflicts removed more than `max_share` of the input images."""
    removed, total = counts["removed_label_conflict"], counts["input"]
    if total == 0 or removed / total <= max_share:
        return []
    return [
        f"label conflicts dropped {removed} of {total} images ({removed / total:.1%}), more than "
        f"dedup.max_conflict_share={max_share:g}; {counts['label_conflicts']} clusters hold both labels "
        f"(largest cluster {counts['largest_cluster']} images, {counts['chained_clusters']} chained clusters). "
        "Check data/dedup/label_conflicts.csv; lower dedup.max_hamming if false pairs chain unrelated scenes, "
        "or set dedup.label_conflict: majority, or raise dedup.max_conflict_share"
    ]


# ============================================================================ records & result
@dataclasses.dataclass(frozen=True)
class ImageRecord:
    """One decoded image, as the dedup stage sees it (a dict with these keys works too)."""

    id: str
    file_sha256: str
    pixel_sha256: str
    phash: int
    label: int


@dataclasses.dataclass(frozen=True)
class KeptRecord:
    id: str
    label: int  # after label-conflict resolution (the majority label under "majority")
    cluster: str  # id of the cluster's representative (its smallest id); == id for singletons
    original_label: int
    file_sha256: str
    pixel_sha256: str
    phash: int
    record: Any = dataclasses.field(default=None, compare=False, repr=False)  # the input object

    @property
    def relabelled(self) -> bool:
        return self.label != self.original_label


@dataclasses.dataclass(frozen=True)
class RemovedRecord:
    id: str
    reason: str  # "exact_duplicate_of:<id>" | "near_duplicate_of:<id>" | "label_conflict"
    cluster: str
    label: int


@dataclasses.dataclass(frozen=True)
class LabelConflict:
    cluster: str
    ids: tuple[str, ...]  # the cluster's records in conflict (exact duplicates included), ascending
    labels: tuple[int, ...]  # aligned with ids
    resolution: str  # "dropped" | "majority:<label>" | "dropped_tie"


@dataclasses.dataclass(frozen=True)
class DedupResult:
    kept: tuple[KeptRecord, ...]  # ascending id
    removed: tuple[RemovedRecord, ...]  # ascending id
    conflicts: tuple[LabelConflict, ...]  # ascending cluster id
    near_pairs: tuple[tuple[str, str, int], ...]  # (id_a < id_b, distance), not exact duplicates
    counts: dict

    def cluster_of(self) -> dict[str, str]:
        return {record.id: record.cluster for record in self.kept}

    def removed_reasons(self) -> dict[str, str]:
        return {record.id: record.reason for record in self.removed}


def record_field(record, name: str, default=...):
    """`record[name]` for mappings, `record.name` otherwise; `default` if given and absent."""
    if isinstance(record, Mapping):
        return record[name] if default is ... or name in record else default
    return getattr(record, name) if default is ... else getattr(record, name, default)


def _normalise(records: Sequence) -> list[dict]:
    rows = []
    for record in records:
        try:
            row = {
                "id": str(record_field(record, "id")),
                "file_sha256": record_field(record, "file_sha256"),
                "pixel_sha256": record_field(record, "pixel_sha256"),
                "phash": int(record_field(record, "phash")),
                "label": int(record_field(record, "label")),
                "record": record,
            }
        except (KeyError, AttributeError) as error:
            raise ValueError(f"dedup record lacks a field: {error}") from None
        if row["label"] not in (0, 1):
            raise ValueError(f"record {row['id']}: label must be 0 or 1, got {row['label']}")
        if row["phash"] < 0 or row["phash"] >> HASH_BITS:
            raise ValueError(f"record {row['id']}: phash is not an unsigned 64-bit integer")
        rows.append(row)
    rows.sort(key=lambda row: row["id"])
    for a, b in zip(rows, rows[1:]):
        if a["id"] == b["id"]:
            raise ValueError(f"duplicate record id {a['id']!r}")
    return rows


def _exact_groups(rows: list[dict]) -> UnionFind:
    uf = UnionFind(len(rows))
    for name in ("file_sha256", "pixel_sha256"):
        first: dict[str, int] = {}
        for index, row in enumerate(rows):
            value = row[name]
            if not value:
                continue  # missing digest: no exact edge through this field
            if value in first:
                uf.union(first[value], index)
            else:
                first[value] = index
    return uf


def deduplicate(
    records: Sequence,
    max_hamming: int = 10,
    label_conflict: Literal["drop", "majority"] = "drop",
    near_duplicates: Literal["group", "drop"] = "group",
) -> DedupResult:
    """Remove exact duplicates, cluster near-duplicates, resolve label conflicts.

    ``records``: dicts or objects with ``id``, ``file_sha256``, ``pixel_sha256``, ``phash``
    (64-bit int), ``label`` (0/1); ids must be unique. The output depends only on the set of
    records, not on their order. See the module docstring for the rules.
    """
    if label_conflict not in ("drop", "majority"):
        raise ValueError(f"label_conflict must be 'drop' or 'majority', got {label_conflict!r}")
    if near_duplicates not in ("group", "drop"):
        raise ValueError(f"near_duplicates must be 'group' or 'drop', got {near_duplicates!r}")
    rows = _normalise(records)
    n = len(rows)
    ids = [row["id"] for row in rows]
    labels = [row["label"] for row in rows]

    exact = _exact_groups(rows)
    exact_root = [exact.find(i) for i in range(n)]
    exact_rep: dict[int, int] = {}
    for i in range(n):  # rows are sorted by id: the first member seen is the smallest id
        exact_rep.setdefault(exact_root[i], i)

    hashes = np.array([row["phash"] for row in rows], dtype=np.uint64)
    pairs = find_near_duplicate_pairs(hashes, max_hamming)
    clusters = UnionFind(n)
    for i in range(n):
        clusters.union(i, exact_rep[exact_root[i]])
    near_pairs = []
    neighbours: dict[int, set[int]] = defaultdict(set)  # near pairs (exact copies: via exact_root)
    if len(pairs):
        distances = np.bitwise_count(hashes[pairs[:, 0]] ^ hashes[pairs[:, 1]])
        for (a, b), dist in zip(pairs.tolist(), distances.tolist()):
            clusters.union(a, b)
            neighbours[a].add(b)
            neighbours[b].add(a)
            if exact_root[a] != exact_root[b]:
                near_pairs.append((ids[a], ids[b], int(dist)))
    # a record is in conflict when a record linked to it directly (an exact copy or a near pair)
    # has the other label; exact copies are decided together
    group_labels: dict[int, set[int]] = defaultdict(set)
    for i in range(n):
        group_labels[exact_root[i]].add(labels[i])
    group_sees = {root: len(seen) > 1 for root, seen in group_labels.items()}
    for i, linked in neighbours.items():
        if any(labels[j] != labels[i] for j in linked):
            group_sees[exact_root[i]] = True
    in_conflict = [group_sees[exact_root[i]] for i in range(n)]

    kept: list[KeptRecord] = []
    removed: list[RemovedRecord] = []
    conflicts: list[LabelConflict] = []
    n_relabelled = 0
    components = clusters.components()
    for members in components:
        cluster_id = ids[members[0]]  # smallest id of the cluster
        conflicting = [i for i in members if in_conflict[i]]  # empty iff the cluster has one label
        resolved = {i: labels[i] for i in members}  # None: removed as a label conflict
        if conflicting:
            voters = set(conflicting).union(*(neighbours.get(i, ()) for i in conflicting))
            votes = Counter(labels[i] for i in voters)
            if label_conflict == "majority" and votes[0] != votes[1]:
                majority = 1 if votes[1] > votes[0] else 0
                resolved.update({i: majority for i in conflicting})
                resolution = f"majority:{majority}"
            else:
                resolved.update({i: None for i in conflicting})
                resolution = "dropped" if label_conflict == "drop" else "dropped_tie"
            conflicts.append(
                LabelConflict(
                    cluster_id, tuple(ids[i] for i in conflicting), tuple(labels[i] for i in conflicting), resolution
                )
            )
        survivors = [i for i in members if resolved[i] is not None]
        for i in members:
            if resolved[i] is None:
                removed.append(RemovedRecord(ids[i], "label_conflict", cluster_id, labels[i]))
            elif exact_rep[exact_root[i]] != i:
                of = ids[exact_rep[exact_root[i]]]
                removed.append(RemovedRecord(ids[i], f"exact_duplicate_of:{of}", cluster_id, labels[i]))
            elif near_duplicates == "drop" and i != survivors[0]:
                of = ids[survivors[0]]
                removed.append(RemovedRecord(ids[i], f"near_duplicate_of:{of}", cluster_id, labels[i]))
            else:
                row = rows[i]
                kept.append(
                    KeptRecord(
                        id=row["id"],
                        label=resolved[i],
                        cluster=cluster_id,
                        original_label=row["label"],
                        file_sha256=row["file_sha256"],
                        pixel_sha256=row["pixel_sha256"],
                        phash=row["phash"],
                        record=row["record"],
                    )
                )
                n_relabelled += resolved[i] != row["label"]

    sizes = [len(members) for members in components]
    chained = sum(1 for members in components if len(members) > 2 and diameter(hashes[np.array(members)]) > max_hamming)
    kept.sort(key=lambda r: r.id)
    removed.sort(key=lambda r: r.id)
    reasons = Counter(r.reason.split(":", 1)[0] for r in removed)
    kept_clusters = Counter(r.cluster for r in kept)
    counts = {
        "input": n,
        "kept": len(kept),
        "kept_positive": sum(r.label for r in kept),
        "removed": len(removed),
        "removed_exact_duplicate": reasons.get("exact_duplicate_of", 0),
        "removed_near_duplicate": reasons.get("near_duplicate_of", 0),
        "removed_label_conflict": reasons.get("label_conflict", 0),
        "exact_groups_with_copies": sum(1 for members in exact.components() if len(members) > 1),
        "clusters": len(components),
        "kept_clusters": len(kept_clusters),
        "kept_clusters_with_near_duplicates": sum(1 for size in kept_clusters.values() if size > 1),
        "near_pairs": len(near_pairs),
        "label_conflicts": len(conflicts),
        "relabelled": n_relabelled,
        "max_hamming": int(max_hamming),
        "largest_cluster": max(sizes, default=0),
        "images_in_clusters_over_10": sum(size for size in sizes if size > 10),
        "chained_clusters": chained,
    }
    return DedupResult(
        kept=tuple(kept),
        removed=tuple(removed),
        conflicts=tuple(conflicts),
        near_pairs=tuple(near_pairs),
        counts=counts,
    )

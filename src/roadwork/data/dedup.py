"""Exact and near-duplicate detection, clustering and label-conflict resolution.

No file I/O here: the stage script decodes images, computes ``file_sha256``, ``pixel_sha256``
and ``phash`` (see :mod:`roadwork.data.phash`) and writes whatever it wants from the
:class:`DedupResult`.

Near-duplicate pairs
--------------------
:func:`find_near_duplicate_pairs` returns *all* pairs within a Hamming distance (it is exact, not
approximate). Two methods, picked by a cost estimate (``method="auto"``):

* ``"mih"`` -- multi-index hashing. The 64 bits are cut into ``m`` chunks with search radii
  ``r_c`` such that ``sum(r_c + 1) > max_distance``; by the pigeonhole principle two hashes within
  ``max_distance`` agree within ``r_c`` bits on at least one chunk ``c``. For every chunk the
  hashes are bucketed by chunk value, and each hash probes the buckets of every chunk value
  within ``r_c`` bits of its own (each bucket pair once); candidates are then verified on all
  64 bits with ``np.bitwise_count``. A verified pair is kept only in the first chunk that finds
  it, so no pair is repeated and memory follows the output size. For 100,000 random hashes at
  distance 10 (m=4 chunks of 16 bits, radii 2,2,2,1) that is 33M candidate checks instead of
  5e9 comparisons; ``m`` is chosen per call from the actual bucket occupancy.
* ``"blocked"`` -- brute force, vectorised: blocks of rows against all later hashes, XOR and
  popcount in numpy, the block height chosen so one block holds at most ``block_elements``
  comparisons (memory bound). Used when the hashes are so concentrated (or ``max_distance`` so
  large) that MIH would check more candidates than brute force would.

Both bound memory: MIH probes in batches of at most ``block_elements`` candidates.

Clusters and representatives
----------------------------
Records are linked by exact edges (same ``file_sha256`` or same ``pixel_sha256``: an *exact
group*) and by near edges (pHash distance <= ``max_hamming``); the connected components
(union-find) are the *clusters*. Chains link: a~b and b~c put a, b, c in one cluster even if
a and c are far apart. Every representative is the member with the **smallest id** (string
order), so the result does not depend on input order; a cluster's id is its representative's id.

* exact duplicates: every member of an exact group but its smallest id is removed,
  ``"exact_duplicate_of:<smallest id of the exact group>"``.
* near duplicates: ``near_duplicates="group"`` keeps them all, sharing the ``cluster`` id (the
  split must keep a cluster together); ``"drop"`` keeps only the cluster representative and
  removes the others, ``"near_duplicate_of:<cluster id>"`` (a member of the same cluster,
  possibly through a chain, not necessarily within ``max_hamming`` of it).
* label conflicts: a cluster whose members (exact duplicates included: a byte-identical image
  labelled both ways is the plainest conflict) carry both labels. Always reported.
  ``label_conflict="drop"`` removes the whole cluster, every member with reason
  ``"label_conflict"`` (this reason wins over the exact/near reasons). ``"majority"`` counts one
  vote per input record (exact copies included) and keeps the cluster relabelled with the
  majority label; **a tie drops the cluster** as in ``"drop"``.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections import Counter, defaultdict
from typing import Any, Iterable, Literal, Mapping, Optional, Sequence

import numpy as np

HASH_BITS = 64
DEFAULT_BLOCK_ELEMENTS = 1 << 22  # ~4M comparisons per block: ~32 MiB of uint64 temporaries

# Cost of one MIH probe (one hash x one mask) and of one MIH candidate (gather, repeat, verify),
# in units of one brute-force comparison (XOR + popcount + compare over a block, ~3.3 ns here).
# Calibrated on the 2-core dev machine: MIH ran at ~0.8 ns per (6 x probes + 12 x candidates),
# i.e. ~1.5 and ~3 brute-force comparisons.
_MIH_PROBE_COST = 1.5
_MIH_CANDIDATE_COST = 3.0
_SMALL_BRUTE = 2_000_000  # below this many comparisons (~2,000 hashes) brute force just runs


# =============================================================================== pair search
def as_hash_array(hashes) -> np.ndarray:
    """1-D uint64 array from a uint64/int array or a sequence of Python ints (checked)."""
    if isinstance(hashes, np.ndarray):
        if hashes.dtype == np.uint64:
            return np.ascontiguousarray(hashes.ravel())
        if hashes.dtype.kind == "i":
            if hashes.size and hashes.min() < 0:
                raise ValueError("hashes must be non-negative (unsigned 64-bit)")
            return hashes.astype(np.uint64).ravel()
        if hashes.dtype.kind == "u":
            return hashes.astype(np.uint64).ravel()
        if hashes.dtype != object:
            raise TypeError(f"hashes must be integers, got dtype {hashes.dtype}")
        hashes = hashes.ravel().tolist()
    values = [int(h) for h in hashes]
    for value in values:
        if value < 0 or value >> HASH_BITS:
            raise ValueError(f"not an unsigned 64-bit hash: {value}")
    return np.array(values, dtype=np.uint64)


def _chunk_layout(m: int) -> list[tuple[int, int]]:
    """(shift, width) of m near-equal chunks covering the 64 bits."""
    base, extra = divmod(HASH_BITS, m)
    widths = [base + (1 if c < extra else 0) for c in range(m)]
    layout, shift = [], 0
    for width in widths:
        layout.append((shift, width))
        shift += width
    return layout


def _chunk_radii(m: int, max_distance: int) -> list[int]:
    """Radii r_c with sum(r_c + 1) = max_distance + 1 (the pigeonhole bound), widest first."""
    need = max_distance + 1 - m  # sum of radii
    if need <= 0:
        return [0] * m
    q, rem = divmod(need, m)
    return [q + 1 if c < rem else q for c in range(m)]


def _n_masks(width: int, radius: int) -> int:
    return sum(math.comb(width, k) for k in range(min(radius, width) + 1))


def _masks(width: int, radius: int) -> np.ndarray:
    """All width-bit values with popcount 1..radius (0 is handled separately)."""
    out = []
    for k in range(1, min(radius, width) + 1):
        for bits in itertools.combinations(range(width), k):
            out.append(sum(1 << b for b in bits))
    return np.array(out, dtype=np.int64)


def _mih_plan(h: np.ndarray, max_distance: int) -> Optional[tuple[float, int]]:
    """Best (estimated cost, m) for multi-index hashing, or None if no chunking is usable."""
    n = h.size
    best = None
    for m in range(3, HASH_BITS + 1):
        layout = _chunk_layout(m)
        radii = _chunk_radii(m, max_distance)
        if any(width > 22 for _, width in layout):
            continue  # dense bucket tables of 2**width entries: keep them <= 4M
        if sum(radii) + m <= max_distance:
            continue
        probes = 0.0
        candidates = 0.0
        for (shift, width), radius in zip(layout, radii):
            n_masks = _n_masks(width, radius)
            if n_masks > 20_000:
                probes = math.inf
                break
            keys = ((h >> np.uint64(shift)) & np.uint64((1 << width) - 1)).astype(np.int64)
            counts = np.bincount(keys, minlength=1 << width)
            # sum_b count_b * count_{b^f} <= sum_b count_b**2 (Cauchy-Schwarz): an upper bound
            # on the candidates one mask yields, exact for the identity mask.
            s2 = float(np.dot(counts, counts))
            probes += n * n_masks
            candidates += (s2 - n) / 2 + (n_masks - 1) * s2 / 2
        if not math.isfinite(probes):
            continue
        cost = _MIH_PROBE_COST * probes + _MIH_CANDIDATE_COST * candidates
        if best is None or cost < best[0]:
            best = (cost, m)
        if m > max_distance + 1:
            break  # more chunks only make buckets bigger
    return best


def _expand(starts: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For query q with range [starts[q], starts[q]+counts[q]): (query index, position) pairs."""
    total = int(counts.sum())
    query = np.repeat(np.arange(counts.size), counts)
    first = np.cumsum(counts) - counts
    positions = np.arange(total, dtype=np.int64) - np.repeat(first - starts, counts)
    return query, positions


def _batches(counts: np.ndarray, budget: int) -> Iterable[slice]:
    """Split queries into contiguous runs whose candidate counts sum to <= budget (>= 1 query)."""
    n = counts.size
    if n == 0:
        return
    cum = np.cumsum(counts)
    if cum[-1] <= budget:
        yield slice(0, n)
        return
    start = 0
    while start < n:
        base = cum[start - 1] if start else 0
        stop = int(np.searchsorted(cum, base + budget, side="right"))
        stop = max(stop, start + 1)
        yield slice(start, stop)
        start = stop


def _pairs_mih(h: np.ndarray, max_distance: int, m: int, budget: int) -> np.ndarray:
    n = h.size
    found = []
    d = np.uint8(max_distance)
    layout = _chunk_layout(m)
    radii = _chunk_radii(m, max_distance)

    def accept(i: np.ndarray, j: np.ndarray, chunk: int) -> None:
        """Keep verified pairs not already found through an earlier chunk.

        Within one chunk a pair is generated exactly once (by the one mask equal to the XOR of
        its two chunk values), and it was generated by an earlier chunk c iff its distance on c
        is <= radii[c]: so dropping those makes every pair appear exactly once overall, and
        memory stays proportional to the output.
        """
        x = h[i] ^ h[j]
        keep = np.bitwise_count(x) <= d
        x = x[keep]
        i, j = i[keep], j[keep]
        for (shift, width), radius in zip(layout[:chunk], radii[:chunk]):
            part = (x >> np.uint64(shift)) & np.uint64((1 << width) - 1)
            new = np.bitwise_count(part) > radius
            x, i, j = x[new], i[new], j[new]
        found.append((i, j))

    for chunk, ((shift, width), radius) in enumerate(zip(layout, radii)):
        keys = ((h >> np.uint64(shift)) & np.uint64((1 << width) - 1)).astype(np.int64)
        order = np.argsort(keys, kind="stable")  # within a bucket: ascending index
        counts = np.bincount(keys, minlength=1 << width)
        starts = np.cumsum(counts) - counts
        sorted_keys = keys[order]

        # identity mask: pairs inside one bucket, each once (position p with the later ones)
        pos = np.arange(n, dtype=np.int64)
        after = starts[sorted_keys] + counts[sorted_keys] - pos - 1
        for part in _batches(after, budget):
            q, p = _expand(pos[part] + 1, after[part])
            accept(order[pos[part][q]], order[p], chunk)

        # other masks: bucket k against bucket k^f, queried from the smaller key only
        for mask in _masks(width, radius):
            partner = keys ^ mask
            active = np.nonzero(partner > keys)[0]
            if active.size == 0:
                continue
            partner = partner[active]
            cnt = counts[partner]
            nonempty = cnt > 0
            active, partner, cnt = active[nonempty], partner[nonempty], cnt[nonempty]
            for part in _batches(cnt, budget):
                q, p = _expand(starts[partner[part]], cnt[part])
                accept(active[part][q], order[p], chunk)
    return _collect(found, n)


def _pairs_blocked(h: np.ndarray, max_distance: int, budget: int, block_rows: Optional[int]) -> np.ndarray:
    n = h.size
    found = []
    d = np.uint8(max_distance)
    start = 0
    while start < n - 1:
        width = n - start
        rows = block_rows if block_rows else max(1, budget // max(width, 1))
        stop = min(n, start + rows)
        x = np.bitwise_count(h[start:stop, None] ^ h[None, start:])
        i, j = np.nonzero(x <= d)
        i = i + start
        j = j + start
        keep = j > i
        found.append((i[keep], j[keep]))
        start = stop
    return _collect(found, n)


def _collect(found, n: int) -> np.ndarray:
    if not found:
        return np.empty((0, 2), dtype=np.int64)
    i = np.concatenate([a for a, _ in found]).astype(np.int64)
    j = np.concatenate([b for _, b in found]).astype(np.int64)
    lo, hi = np.minimum(i, j), np.maximum(i, j)
    order = np.lexsort((hi, lo))
    return np.stack([lo[order], hi[order]], axis=1)


def find_near_duplicate_pairs(
    hashes,
    max_distance: int,
    *,
    method: Literal["auto", "mih", "blocked"] = "auto",
    block_elements: int = DEFAULT_BLOCK_ELEMENTS,
    block_rows: Optional[int] = None,
) -> np.ndarray:
    """All index pairs (i, j), i < j, with Hamming(hashes[i], hashes[j]) <= max_distance.

    ``hashes``: 1-D array of uint64 (or anything convertible: Python ints up to 2**64-1).
    Returns an int64 array of shape (k, 2), sorted by i then j, without repeats.
    ``block_elements`` bounds the comparisons/candidates held in memory at once;
    ``block_rows`` forces the row-block height of the blocked method (tests use it to exercise
    block boundaries). Exact for every method.
    """
    h = as_hash_array(hashes)
    max_distance = int(max_distance)
    if max_distance < 0:
        raise ValueError("max_distance must be >= 0")
    if block_elements < 1:
        raise ValueError("block_elements must be >= 1")
    n = h.size
    if n < 2:
        return np.empty((0, 2), dtype=np.int64)
    if max_distance >= HASH_BITS:
        i, j = np.triu_indices(n, k=1)
        return np.stack([i, j], axis=1).astype(np.int64)
    brute_cost = n * (n - 1) / 2
    if method == "blocked" or (method == "auto" and brute_cost <= _SMALL_BRUTE):
        return _pairs_blocked(h, max_distance, block_elements, block_rows)
    plan = _mih_plan(h, max_distance)
    if method == "mih":
        if plan is None:
            raise ValueError(f"multi-index hashing has no usable chunking for max_distance={max_distance}")
        return _pairs_mih(h, max_distance, plan[1], block_elements)
    if method != "auto":
        raise ValueError(f"unknown method {method!r}")
    if plan is None or plan[0] >= brute_cost:
        return _pairs_blocked(h, max_distance, block_elements, block_rows)
    return _pairs_mih(h, max_distance, plan[1], block_elements)


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
    ids: tuple[str, ...]  # every member of the cluster (exact duplicates included), ascending
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
    if len(pairs):
        distances = np.bitwise_count(hashes[pairs[:, 0]] ^ hashes[pairs[:, 1]])
        for (a, b), dist in zip(pairs.tolist(), distances.tolist()):
            clusters.union(a, b)
            if exact_root[a] != exact_root[b]:
                near_pairs.append((ids[a], ids[b], int(dist)))

    kept: list[KeptRecord] = []
    removed: list[RemovedRecord] = []
    conflicts: list[LabelConflict] = []
    n_relabelled = 0
    components = clusters.components()
    for members in components:
        rep = members[0]  # smallest id of the cluster; also the smallest id of its exact group
        cluster_id = ids[rep]
        member_labels = [labels[i] for i in members]
        resolved: Optional[int] = member_labels[0]
        if len(set(member_labels)) > 1:
            votes = Counter(member_labels)
            if label_conflict == "majority" and votes[0] != votes[1]:
                resolved = 1 if votes[1] > votes[0] else 0
                resolution = f"majority:{resolved}"
            else:
                resolved = None
                resolution = "dropped" if label_conflict == "drop" else "dropped_tie"
            conflicts.append(
                LabelConflict(cluster_id, tuple(ids[i] for i in members), tuple(member_labels), resolution)
            )
        for i in members:
            if resolved is None:
                removed.append(RemovedRecord(ids[i], "label_conflict", cluster_id, labels[i]))
            elif exact_rep[exact_root[i]] != i:
                of = ids[exact_rep[exact_root[i]]]
                removed.append(RemovedRecord(ids[i], f"exact_duplicate_of:{of}", cluster_id, labels[i]))
            elif near_duplicates == "drop" and i != rep:
                removed.append(RemovedRecord(ids[i], f"near_duplicate_of:{cluster_id}", cluster_id, labels[i]))
            else:
                row = rows[i]
                kept.append(
                    KeptRecord(
                        id=row["id"],
                        label=resolved,
                        cluster=cluster_id,
                        original_label=row["label"],
                        file_sha256=row["file_sha256"],
                        pixel_sha256=row["pixel_sha256"],
                        phash=row["phash"],
                        record=row["record"],
                    )
                )
                n_relabelled += resolved != row["label"]

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
        "exact_groups_with_copies": sum(1 for members in _groups(exact_root) if len(members) > 1),
        "clusters": len(components),
        "kept_clusters": len(kept_clusters),
        "kept_clusters_with_near_duplicates": sum(1 for size in kept_clusters.values() if size > 1),
        "near_pairs": len(near_pairs),
        "label_conflicts": len(conflicts),
        "relabelled": n_relabelled,
        "max_hamming": int(max_hamming),
    }
    return DedupResult(
        kept=tuple(kept),
        removed=tuple(removed),
        conflicts=tuple(conflicts),
        near_pairs=tuple(near_pairs),
        counts=counts,
    )


def _groups(roots: list[int]) -> list[list[int]]:
    groups: dict[int, list[int]] = defaultdict(list)
    for i, root in enumerate(roots):
        groups[root].append(i)
    return list(groups.values())


# ===================================================================== measuring against truth
def _pair_set(pairs) -> set[tuple]:
    out = set()
    for pair in pairs:
        a, b = pair[0], pair[1]
        if isinstance(a, np.generic):
            a = a.item()
        if isinstance(b, np.generic):
            b = b.item()
        if a == b:
            continue
        out.add((a, b) if a < b else (b, a))
    return out


def pair_recall(found_pairs, true_pairs) -> float:
    """Fraction of true (e.g. planted (copy, parent)) pairs that appear among found pairs.

    Pairs are unordered, of ids or indices (the same kind on both sides); extra elements of a
    pair (a distance) are ignored. With no true pairs there is nothing to miss: 1.0.
    """
    truth = _pair_set(true_pairs)
    if not truth:
        return 1.0
    return len(truth & _pair_set(found_pairs)) / len(truth)


def _true_groups(true_pairs) -> dict:
    """Member -> family root, where families are the connected components of the true pairs."""
    parent: dict = {}

    def find(x):
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in _pair_set(true_pairs):
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return {x: find(x) for x in list(parent)}


def false_pairs(found_pairs, true_pairs) -> list[tuple]:
    """Found pairs whose two members are not true duplicates of each other.

    Two items are true duplicates when the true pairs connect them, possibly through others
    (two planted copies of one parent are duplicates of each other, as are a chain's ends).
    """
    family = _true_groups(true_pairs)
    out = []
    for a, b in sorted(_pair_set(found_pairs)):
        fa, fb = family.get(a), family.get(b)
        if fa is None or fa != fb:
            out.append((a, b))
    return out


def false_pair_rate(found_pairs, true_pairs, n: int) -> float:
    """Found pairs that are not true duplicates, divided by all n*(n-1)/2 pairs."""
    total = n * (n - 1) // 2
    if total == 0:
        return 0.0
    return len(false_pairs(found_pairs, true_pairs)) / total


def pair_metrics(found_pairs, true_pairs, n: int) -> dict:
    """Recall, false pairs and false-pair rate in one dict (JSON-ready)."""
    truth = _pair_set(true_pairs)
    found = _pair_set(found_pairs)
    wrong = false_pairs(found, truth)
    total = n * (n - 1) // 2
    return {
        "n": n,
        "true_pairs": len(truth),
        "found_pairs": len(found),
        "true_pairs_found": len(truth & found),
        "recall": pair_recall(found, truth),
        "false_pairs": len(wrong),
        "false_pair_rate": len(wrong) / total if total else 0.0,
    }


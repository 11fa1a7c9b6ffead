"""All pairs of 64-bit hashes within a Hamming distance (exact), and the distance of one pair.

Used by dedup (near-duplicate edges), by split (the leakage audit) and by the recall measurement.
A hash is an unsigned 64-bit integer (a pHash, see :mod:`roadwork.data.phash`), held in numpy
as ``uint64``.

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
"""

from __future__ import annotations

import itertools
import math
from typing import Iterable, Literal, Optional

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


def hamming_distance(a: int, b: int) -> int:
    """Number of differing bits between two 64-bit hashes (ints or numpy integers)."""
    a, b = int(a), int(b)
    if a < 0 or b < 0 or a >> HASH_BITS or b >> HASH_BITS:
        raise ValueError("hashes must be unsigned 64-bit integers")
    return (a ^ b).bit_count()

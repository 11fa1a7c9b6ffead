"""Benchmark: all near-duplicate pairs among N random 64-bit hashes (default 100,000, distance 10).

Times ``find_near_duplicate_pairs`` (method "auto", and optionally "blocked" brute force) on N
seeded random hashes with planted close pairs, and a naive pure-Python double loop on a
subsample (default 2,000 hashes), extrapolated to N by the ratio of pair counts
N(N-1) / (n(n-1)) -- an extrapolation, not a measurement. Both must give the same pairs on the
subsample, and every planted pair must be found in the full run.

    python benchmarks/bench_hamming.py [--n 100000] [--distance 10] [--subsample 2000]
"""

from __future__ import annotations

import argparse
import platform
import sys
import time

import numpy as np

from roadwork.data.hamming import _mih_plan, find_near_duplicate_pairs
from roadwork.data.recall import pair_recall


def make_hashes(n: int, n_planted: int, max_distance: int, seed: int):
    """N random hashes; the last n_planted are copies of random earlier ones with 0..max bits
    flipped. Returns (hashes, planted pairs (parent, copy))."""
    rng = np.random.default_rng(seed)
    hashes = rng.integers(0, 2**64, size=n, dtype=np.uint64)
    n_planted = min(n_planted, n // 2)
    copies = np.arange(n - n_planted, n)
    parents = rng.choice(n - n_planted, size=n_planted, replace=False)
    planted = []
    for parent, copy in zip(parents.tolist(), copies.tolist()):
        k = int(rng.integers(0, max_distance + 1))
        mask = 0
        for bit in rng.choice(64, size=k, replace=False).tolist():
            mask |= 1 << bit
        hashes[copy] = hashes[parent] ^ np.uint64(mask)
        planted.append((parent, copy))
    return hashes, planted


def naive_pairs(values: list[int], max_distance: int) -> list[tuple[int, int]]:
    out = []
    n = len(values)
    for i in range(n):
        a = values[i]
        for j in range(i + 1, n):
            if (a ^ values[j]).bit_count() <= max_distance:
                out.append((i, j))
    return out


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    return time.perf_counter() - start, result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=100_000, help="number of hashes (default 100000)")
    parser.add_argument("--distance", type=int, default=10, help="max Hamming distance (default 10)")
    parser.add_argument("--subsample", type=int, default=2_000, help="hashes in the naive loop (default 2000)")
    parser.add_argument("--planted", type=int, default=1_000, help="planted close pairs (default 1000)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=3, help="timed runs of the fast search; best is reported")
    parser.add_argument("--blocked", action="store_true", help="also time the vectorised brute force")
    args = parser.parse_args(argv)

    print(f"python {platform.python_version()}, numpy {np.__version__}, {platform.machine()}")
    hashes, planted = make_hashes(args.n, args.planted, args.distance, args.seed)
    n = hashes.size
    plan = _mih_plan(hashes, args.distance)
    print(
        f"N={n} hashes, max_distance={args.distance}, {len(planted)} planted pairs (distance 0..{args.distance}), seed {args.seed}"
    )
    if plan is not None:
        print(
            f"multi-index plan: m={plan[1]} chunks, estimated cost {plan[0]:.3g} vs brute force {n * (n - 1) / 2:.3g} comparisons"
        )

    times = []
    pairs = None
    for _ in range(max(1, args.repeat)):
        elapsed, pairs = timed(find_near_duplicate_pairs, hashes, args.distance)
        times.append(elapsed)
    fast = min(times)
    recall = pair_recall(pairs.tolist(), planted)
    print(
        f"find_near_duplicate_pairs (auto), N={n}: {fast:.3f} s (best of {len(times)}: {', '.join(f'{t:.3f}' for t in times)}), "
        f"{len(pairs)} pairs, planted recall {recall:.3f}"
    )
    ok = recall == 1.0

    if args.blocked:
        elapsed, blocked = timed(find_near_duplicate_pairs, hashes, args.distance, method="blocked")
        same = np.array_equal(blocked, pairs)
        ok &= same
        print(f"find_near_duplicate_pairs (blocked brute force), N={n}: {elapsed:.3f} s, same pairs: {same}")

    # naive baseline on a subsample holding planted pairs (both ends) plus random others
    m = min(args.subsample, n)
    rng = np.random.default_rng(args.seed + 1)
    take = planted[: m // 20]
    chosen = {i for pair in take for i in pair}
    others = rng.permutation(n)
    extra = [i for i in others.tolist() if i not in chosen][: m - len(chosen)]
    sub_index = np.array(sorted(chosen | set(extra)), dtype=np.int64)
    sub = hashes[sub_index]
    naive_time, naive = timed(naive_pairs, [int(v) for v in sub], args.distance)
    fast_sub_time, fast_sub = timed(find_near_duplicate_pairs, sub, args.distance)
    same = [tuple(p) for p in fast_sub.tolist()] == naive
    ok &= same
    scale = (n * (n - 1)) / (m * (m - 1)) if m > 1 else float("nan")
    extrapolated = naive_time * scale
    print(
        f"naive pure-Python double loop, subsample n={m}: {naive_time:.3f} s, {len(naive)} pairs; "
        f"fast on the same subsample: {fast_sub_time:.4f} s; same pairs: {same}"
    )
    print(
        f"naive extrapolated to N={n} by the pair-count ratio N(N-1)/(n(n-1)) = {scale:.0f}: "
        f"{extrapolated:.0f} s ({extrapolated / 60:.1f} min) -- extrapolated, not measured"
    )
    print(f"speed-up (naive extrapolated / fast): {extrapolated / fast:.0f}x")
    print("OK" if ok else "MISMATCH")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

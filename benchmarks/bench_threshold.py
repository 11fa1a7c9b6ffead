"""Benchmark: exact MCC at every distinct threshold vs a grid loop over sklearn.

    python benchmarks/bench_threshold.py --n 1000000 --grid 2000 [--measure 20]

The exact sweep (roadwork.evaluate.threshold.mcc_at_all_thresholds) is timed in full.
The grid baseline calls sklearn.metrics.matthews_corrcoef once per threshold on
``--grid`` evenly spaced thresholds; when that would take too long, only ``--measure``
of the grid thresholds (spread over the range) are timed and the time is extrapolated
linearly to the full grid (said so in the output). The grid's best MCC is evaluated
exactly on all ``--grid`` thresholds with the vectorised counter, so the comparison of
best MCCs is over the full grid either way.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from sklearn.metrics import matthews_corrcoef

from roadwork.evaluate.metrics import mcc_from_counts
from roadwork.evaluate.threshold import mcc_at_all_thresholds, operating_thresholds


def _grid_mcc_vectorised(scores, labels, grid):
    """MCC at each grid threshold (rule score > g) via a sorted search; for checking."""
    s_pos = np.sort(scores[labels])
    s_neg = np.sort(scores[~labels])
    tp = s_pos.size - np.searchsorted(s_pos, grid, side="right")
    fp = s_neg.size - np.searchsorted(s_neg, grid, side="right")
    return mcc_from_counts(tp, fp, s_neg.size - fp, s_pos.size - tp)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1_000_000, help="number of random scores")
    ap.add_argument("--grid", type=int, default=2000, help="grid size of the sklearn baseline")
    ap.add_argument(
        "--measure",
        type=int,
        default=20,
        help="grid thresholds actually timed with sklearn (0 = all of them); extrapolated linearly",
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=3, help="repeats of the exact sweep (best time)")
    args = ap.parse_args(argv)

    rng = np.random.default_rng(args.seed)
    labels = rng.random(args.n) < 0.25
    scores = rng.normal(size=args.n) + 1.0 * labels  # logits, ~all distinct

    # exact sweep
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        th, mcc, *_ = mcc_at_all_thresholds(scores, labels)
        op = operating_thresholds(th)
        times.append(time.perf_counter() - t0)
    t_exact = min(times)
    k = int(np.argmax(mcc))
    print(f"n={args.n:,} scores, {th.size - 1:,} distinct thresholds (+ 'all negative' point)")
    print(
        f"exact sweep:   {t_exact * 1e3:9.1f} ms  (best of {args.repeats}); best MCC {mcc[k]:.6f} at score > {op[k]:.6f}"
    )

    # grid baseline with sklearn
    grid = np.linspace(scores.min(), scores.max(), args.grid)
    n_meas = args.grid if args.measure <= 0 or args.measure >= args.grid else args.measure
    meas_idx = np.unique(np.round(np.linspace(0, args.grid - 1, n_meas)).astype(int))
    y = labels.astype(int)
    t0 = time.perf_counter()
    sk_vals = []
    for g in grid[meas_idx]:
        sk_vals.append(matthews_corrcoef(y, (scores > g).astype(int)))
    t_meas = time.perf_counter() - t0
    t_grid = t_meas * args.grid / meas_idx.size
    grid_mcc = _grid_mcc_vectorised(scores, labels, grid)
    assert np.allclose(grid_mcc[meas_idx], sk_vals, atol=1e-9), "vectorised grid MCC disagrees with sklearn"
    if meas_idx.size < args.grid:
        print(
            f"sklearn grid:  {t_grid:9.1f} s   ({args.grid} thresholds, EXTRAPOLATED linearly from "
            f"{meas_idx.size} timed calls: {t_meas:.2f} s, {t_meas / meas_idx.size * 1e3:.1f} ms/threshold)"
        )
    else:
        print(f"sklearn grid:  {t_grid:9.1f} s   ({args.grid} thresholds, all timed)")
    print(f"ratio grid/exact: {t_grid / t_exact:,.0f}x")
    best_grid = float(grid_mcc.max())
    ok = mcc[k] >= best_grid - 1e-12
    print(f"best MCC: exact {mcc[k]:.6f} >= grid {best_grid:.6f}: {ok}")
    if not ok:
        raise SystemExit("exact sweep found a lower MCC than the grid: bug")


if __name__ == "__main__":
    main()

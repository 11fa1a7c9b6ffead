"""Measuring near-duplicate search against known true pairs: recall and false pairs.

The truth is what the synthetic generator planted (its ``truth.csv`` rows: each copy with its
parent, see :meth:`roadwork.data.sources.SyntheticSource.truth`). Pairs are unordered, of ids or
indices (the same kind on both sides).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from roadwork.data.dedup import UnionFind
from roadwork.data.hamming import find_near_duplicate_pairs
from roadwork.data.ingest import image_id
from roadwork.io import read_csv


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
    """Member -> family, where families are the connected components of the true pairs."""
    pairs = sorted(_pair_set(true_pairs))
    members = sorted({x for pair in pairs for x in pair})
    index = {x: k for k, x in enumerate(members)}
    families = UnionFind(len(members))
    families.union_pairs((index[a], index[b]) for a, b in pairs)
    return {x: families.find(index[x]) for x in members}


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


def planted_pairs(truth_rows) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(every planted copy, the planted near-duplicates) as (copy ref, parent ref) pairs, from
    rows with ``ref``, ``kind`` and ``parent`` ("" or None for originals). Broken files are no
    copies: they never decode."""
    planted, near = [], []
    for row in truth_rows:
        if row["parent"] and row["kind"] != "broken":
            planted.append((row["ref"], row["parent"]))
            if row["kind"] == "near_duplicate":
                near.append((row["ref"], row["parent"]))
    return planted, near


def planted_truth(raw_dir: Path, records: list[dict], max_hamming: int) -> dict | None:
    """Recall of the synthetic generator's planted near-duplicates among ``records`` (the dedup
    stage's, with ``id`` and int ``phash``), and the false-pair rate; None without truth.csv."""
    truth_csv = raw_dir / "truth.csv"
    if not truth_csv.exists():
        return None
    present = {r["id"] for r in records}

    def by_id(pairs):
        pairs = [(image_id(copy), image_id(parent)) for copy, parent in pairs]
        return [pair for pair in pairs if pair[0] in present and pair[1] in present]

    planted, near = map(by_id, planted_pairs(read_csv(truth_csv)))
    ids = [r["id"] for r in records]
    hashes = np.array([r["phash"] for r in records], dtype=np.uint64)
    found = [(ids[a], ids[b]) for a, b in find_near_duplicate_pairs(hashes, max_hamming).tolist()]
    metrics = pair_metrics(found, planted, len(ids))
    return {
        "planted_near_duplicates": len(near),
        "near_duplicate_recall": round(pair_recall(found, near), 6),
        "false_pairs": metrics["false_pairs"],
        "false_pair_rate": metrics["false_pair_rate"],
    }


def chaining_report(cluster_of: dict, family_of: dict) -> dict:
    """How dedup's clusters compare with the true families (an original and its copies).

    ``cluster_of`` and ``family_of`` map the same ids to a cluster / a family. A cluster holding
    more than one family merged unrelated scenes (a false pair, or a chain of them); a family
    spread over several clusters lost a true pair.
    """
    clusters: dict = {}
    for rid, cluster in cluster_of.items():
        clusters.setdefault(cluster, []).append(rid)
    sizes = sorted((len(members) for members in clusters.values()), reverse=True)
    families_in = {c: {family_of[r] for r in members} for c, members in clusters.items()}
    impure = [c for c, fams in families_in.items() if len(fams) > 1]
    clusters_of_family: dict = {}
    for rid, cluster in cluster_of.items():
        clusters_of_family.setdefault(family_of[rid], set()).add(cluster)
    return {
        "clusters": len(clusters),
        "largest_cluster": sizes[0] if sizes else 0,
        "images_in_clusters_over_10": sum(s for s in sizes if s > 10),
        "merged_clusters": len(impure),  # clusters holding more than one true family
        "images_in_merged_clusters": sum(len(clusters[c]) for c in impure),
        "most_families_in_one_cluster": max((len(f) for f in families_in.values()), default=0),
        "families_split": sum(1 for cs in clusters_of_family.values() if len(cs) > 1),
    }

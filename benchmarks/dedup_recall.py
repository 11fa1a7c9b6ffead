"""Near-duplicate recall and false-pair rate on the synthetic set's planted duplicates, for the
project's pHash (`roadwork.data.phash.phash64`, i.e. `imagehash.phash`) at several distances.

    python benchmarks/dedup_recall.py [--params params.yaml] [--distances 8 10 12]

True duplicates are the generator's planted copies (exact, same-pixel and near) and their
parents; recall is over the planted near-duplicates; a false pair is a found pair of two images
that are not copies of each other, as a share of all n(n-1)/2 pairs. The images are hashed as
the download stage hashes them: the full RGB decode of `decode_image`.
"""

import argparse

import numpy as np

from roadwork.config import load_params
from roadwork.data.decode import QuarantineError, decode_image
from roadwork.data.hamming import find_near_duplicate_pairs
from roadwork.data.phash import phash64
from roadwork.data.recall import pair_metrics, pair_recall, planted_pairs
from roadwork.data.synthetic import generate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--distances", type=int, nargs="+", default=[8, 10, 12])
    args = parser.parse_args()
    params = load_params(args.params)
    refs, hashes, truth = [], [], []
    for item in generate(params.data.synthetic):
        truth.append({"ref": item.ref, "kind": item.kind, "parent": item.parent})
        try:
            image = decode_image(item.data, params.data.max_pixels).image
        except QuarantineError:
            continue
        refs.append(item.ref)
        hashes.append(phash64(image))
    planted, near = planted_pairs(truth)
    n = len(refs)
    print(
        f"{n} decodable synthetic images, {len(near)} planted near-duplicates, "
        f"{len(planted)} planted copies in all, {n * (n - 1) // 2} pairs"
    )
    print(f"{'distance':>9}{'recall':>9}{'false pairs':>13}{'false-pair rate':>17}")
    array = np.array(hashes, dtype=np.uint64)
    for distance in args.distances:
        found = [(refs[a], refs[b]) for a, b in find_near_duplicate_pairs(array, distance).tolist()]
        metrics = pair_metrics(found, planted, n)
        print(
            f"{distance:>9}{pair_recall(found, near):>9.3f}{metrics['false_pairs']:>13}"
            f"{metrics['false_pair_rate']:>17.2e}"
        )


if __name__ == "__main__":
    main()

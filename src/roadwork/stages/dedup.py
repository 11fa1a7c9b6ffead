"""dedup: exact duplicates removed, near-duplicates clustered, label conflicts resolved."""

import logging
import time

from roadwork.data.dedup import conflict_warnings, deduplicate
from roadwork.data.dedup_report import manifest_records, write_outputs
from roadwork.data.recall import planted_truth
from roadwork.io import atomic_path
from roadwork.stages.common import DEDUP, RAW, finish, params

log = logging.getLogger("roadwork.stages.dedup")  # not __name__: that is __main__ under `python -m`


def main() -> None:
    started = time.monotonic()
    config = params().dedup
    records = manifest_records(RAW)
    result = deduplicate(records, config.max_hamming, config.label_conflict, config.near_duplicates)
    with atomic_path(DEDUP) as tmp:
        tmp.mkdir()
        write_outputs(result, records, tmp)
    metrics = dict(result.counts)
    metrics["warnings"] = conflict_warnings(result.counts, config.max_conflict_share)
    for warning in metrics["warnings"]:
        log.warning("%s", warning)
    truth = planted_truth(RAW, records, config.max_hamming)
    if truth is not None:
        metrics["synthetic_truth"] = truth
    finish("dedup", metrics, started)


if __name__ == "__main__":
    main()

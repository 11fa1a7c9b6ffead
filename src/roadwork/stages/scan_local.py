"""scan_local: list data.local.path (stat only, then sha256 of each readable file) into the inventory
that `download` depends on, so DVC never hashes the folder itself (a FIFO in it would hang DVC)."""

import sys
import time

from roadwork.data.sources import INVENTORY_COLUMNS, SourceError, scan_local
from roadwork.io import write_csv
from roadwork.stages.common import LOCAL_INVENTORY, finish_printed, params


def main() -> None:
    started = time.monotonic()
    try:
        rows = scan_local(params().data)
    except SourceError as error:
        sys.exit(f"scan_local failed: {error}")
    write_csv(LOCAL_INVENTORY, rows, INVENTORY_COLUMNS)
    finish_printed("scan_local", {"entries": len(rows), "refused": sum(bool(r["problem"]) for r in rows)}, started)


if __name__ == "__main__":
    main()

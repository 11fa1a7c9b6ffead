"""download: read data.source into data/raw (images, manifest.csv, quarantine.csv, ...)."""

import sys
import time

from roadwork.data.ingest import ingest
from roadwork.data.sources import SourceError
from roadwork.stages.common import RAW, finish, params


def main() -> None:
    started = time.monotonic()
    try:
        metrics = ingest(params().data, RAW)
    except SourceError as error:
        sys.exit(f"download failed: {error}")
    finish("download", metrics, started)


if __name__ == "__main__":
    main()

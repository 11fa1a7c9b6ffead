"""Where the library's log records go: the one handler setup for the stage scripts and the CLIs.

Library modules log with ``log = logging.getLogger(__name__)`` and never configure anything;
the entry points (``roadwork.stages.common`` on import, so every stage; ``roadwork.cli.main``;
the ``python -m`` mains) call `setup`, which sends the ``roadwork`` loggers' records to stderr
as ``LEVEL logger: message``. The level is ``$ROADWORK_LOG_LEVEL`` (default INFO). Under torchrun
with more than one process the line starts with the rank. A program's actual output (the CSV of
``roadwork predict``, the YAML of ``presets show``, a stage's end summary) stays on stdout/stderr
through print.
"""

from __future__ import annotations

import logging
import os
import sys

ENV_LEVEL = "ROADWORK_LOG_LEVEL"
FORMAT = "%(levelname)s %(name)s: %(message)s"


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is at the time (pytest's capture swaps it per test)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def setup() -> logging.Logger:
    """Attach the stderr handler to the ``roadwork`` logger (once) and set its level; returns it."""
    logger = logging.getLogger("roadwork")
    name = os.environ.get(ENV_LEVEL, "INFO").strip().upper() or "INFO"
    level = logging.getLevelName(name)
    if not isinstance(level, int):
        raise SystemExit(f"{ENV_LEVEL}={name!r} is not a logging level (DEBUG, INFO, WARNING, ERROR, CRITICAL)")
    logger.setLevel(level)
    if not any(isinstance(h, _StderrHandler) for h in logger.handlers):
        handler = _StderrHandler()
        prefix = ""
        if int(os.environ.get("WORLD_SIZE", "1") or 1) > 1:
            prefix = f"[rank {os.environ.get('RANK', '?')}] "
        handler.setFormatter(logging.Formatter(prefix + FORMAT))
        logger.addHandler(handler)
    return logger

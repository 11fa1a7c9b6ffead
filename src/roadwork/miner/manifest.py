"""The bundle's manifest (``manifest.json``): the names of the card and the manifest, the digest of
the model's files, the card's submission time, and the check that a bundle's files are the ones its
manifest lists. Shared by the export (which writes a bundle) and by the miner's tools (which
read, amend and publish one), so that neither imports the other.
"""

from __future__ import annotations

import hashlib
import json
import os
from datetime import datetime, timezone
from pathlib import Path

from roadwork.io import sha256_file

MODEL_CARD = "model_card.json"
MANIFEST = "manifest.json"


def model_sha256(files: dict[str, str]) -> str:
    """A digest of every file's sha256 *except* the card and the manifest: it identifies the exported model
    independently of when it was exported."""
    digest = hashlib.sha256()
    for name in sorted(files):
        if name not in (MODEL_CARD, MANIFEST):
            digest.update(f"{name}\0{files[name]}\n".encode())
    return digest.hexdigest()


def submission_time_now() -> str:
    """UTC ISO 8601 (seconds); ``SOURCE_DATE_EPOCH`` (reproducible builds) wins if set."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    moment = datetime.fromtimestamp(int(epoch), timezone.utc) if epoch else datetime.now(timezone.utc)
    return moment.replace(microsecond=0).isoformat().replace("+00:00", "Z")


def verify_manifest(bundle_dir: str | Path) -> list[str]:
    """Names of files whose sha256 does not match the manifest (and files missing from it)."""
    bundle_dir = Path(bundle_dir)
    files = json.loads((bundle_dir / MANIFEST).read_text())["files"]
    present = {p.name for p in bundle_dir.iterdir() if p.is_file() and p.name != MANIFEST}
    bad = sorted(present.symmetric_difference(files))
    bad += sorted(n for n in present & files.keys() if sha256_file(bundle_dir / n) != files[n])
    return bad

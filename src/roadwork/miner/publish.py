"""``roadwork publish``: everything the subnet asks a miner to publish, in one folder, pushed to a
Hugging Face model repo when ``HF_TOKEN`` is set.

The folder (= the model repo's files)::

    config.json, model.safetensors      the bundle (timm's Hugging Face layout)
    inference.json                      views and the multi-view threshold (when the export wrote it)
    model.onnx                          when the bundle has it (--no-onnx leaves it out)
    model_card.json                     model_name, description, version, submitted_by = the hotkey,
                                        submission_time = now (docs/Mining.md) + our metrics and the
                                        licence notice
    LICENSE.md                          the DINOv3 License (the backbone's; it covers derivatives), unless the
                                        manifest records model.pretrained: none (random initialisation)
    manifest.json                       sha256 of every file above (the card's hash updated)
    roadwork_detector_timm.py           the detector, to copy into base_miner/detectors/
    roadwork_timm.yaml                  its config (hf_repo = this repo), for base_miner/detectors/configs/
    .roadwork-publish.json              sha256 of every file publish wrote (not uploaded)

Publish never deletes what it did not write: the folder is built in a temporary folder beside
``--out`` and renamed into place. An existing ``--out`` is replaced only when its marker
(``.roadwork-publish.json``) lists every entry it holds with the same sha256; anything else (a
foreign or changed file, a folder without the marker, a file, a symbolic link, the bundle or a
folder inside it) is refused before anything is written. The swap renames the old folder aside,
the new one in, then removes the old one, so a kill leaves one of them whole.

The push (``huggingface_hub.HfApi.upload_folder``) needs the network and a token: it is not
covered by the tests (they run offline); the folder and the refusals are.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Sequence

import yaml

log = logging.getLogger(__name__)

DETECTOR_FILE = "roadwork_detector_timm.py"
CONFIG_FILE = "roadwork_timm.yaml"
LICENSE_FILE = "LICENSE.md"
MARKER = ".roadwork-publish.json"
BUNDLE_FILES = ("config.json", "model.safetensors", "inference.json", "model.onnx", "model.onnx.data")
CARD_KEYS = ("model_name", "description", "version", "submitted_by", "submission_time")
_SOURCE = Path(__file__).resolve().parent

# The DINOv3 License (facebookresearch/dinov3 LICENSE.md, "Last Updated: August 19, 2025", commit ffb4bb8; the
# timm weights timm/vit_*_dinov3.lvd1689m declare dinov3-license and ship a LICENSE.md of the same size),
# section 1.b.i: "Distribution of DINO Materials, and any derivative works thereof, are subject to the terms of
# this Agreement. If you distribute or make the DINO Materials, or any derivative works thereof, available to a
# third party, you may only do so under the terms of this Agreement and you shall provide a copy of this
# Agreement with any such DINO Materials." Hence LICENSE.md (a verbatim copy) and the card's notice below.
LICENSE_SOURCE = _SOURCE / "DINOv3-LICENSE.md"
LICENSE_URL = "https://ai.meta.com/resources/models-and-libraries/dinov3-license/"
LICENSE_NOTICE = (
    "This model is a derivative work of Meta's DINOv3 (its backbone is a DINOv3 model). DINO Materials "
    "and derivative works of them are distributed under the terms of the DINOv3 License Agreement: "
    f"a copy is {LICENSE_FILE} in this repository ({LICENSE_URL})."
)

NO_WEIGHTS_NOTICE = (
    "The backbone was initialised at random (model.pretrained: none, as the bundle's manifest "
    "records): no DINOv3 weights were used, so the DINOv3 License is not attached."
)

_BASE58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


class PublishError(ValueError):
    """The bundle, the card, an argument or ``--out`` is not publishable as it is."""


# ------------------------------------------------------------------------------ arguments
def uses_dinov3_weights(manifest: dict) -> bool:
    """Whether the bundle's backbone started from pretrained (DINOv3) weights: False only when the manifest's
    provenance records ``model.pretrained: none``; unknown counts as True (the licence is attached)."""
    model = ((manifest.get("provenance") or {}).get("params") or {}).get("model") or {}
    return str(model.get("pretrained", "")).strip().lower() != "none"


def check_repo_id(repo: str) -> str:
    """``namespace/name`` by the Hub's rules (``huggingface_hub.utils.validate_repo_id``: letters, digits, '-', '_',
    '.', at most 96 characters each, no '--' or '..', not '.git' at the end), ASCII only."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if repo.count("/") != 1 or not repo.isascii():
        raise PublishError(
            f"--repo {repo!r} must be a Hugging Face model repo id 'namespace/name' (ASCII letters, "
            "digits, '-', '_', '.'), e.g. you/roadwork"
        )
    try:
        validate_repo_id(repo)
    except HFValidationError as error:
        raise PublishError(f"--repo {repo!r} is not a Hugging Face repo id: {error}") from None
    return repo


def _base58_decode(text: str) -> bytes:
    number = 0
    for char in text:
        number = number * 58 + _BASE58.index(char)
    body = number.to_bytes((number.bit_length() + 7) // 8, "big")
    return b"\0" * (len(text) - len(text.lstrip("1"))) + body


def check_hotkey(hotkey: str, where: str = "--hotkey") -> str:
    """An SS58 address of a 32-byte public key with a valid checksum (a bittensor hotkey: 48 base58 characters,
    '5...' under the network's prefix 42)."""
    reason = ""
    if not 46 <= len(hotkey) <= 50 or not set(hotkey) <= set(_BASE58):
        reason = "not 47-49 base58 characters"
    else:
        data = _base58_decode(hotkey)
        prefix = 1 if data and data[0] < 64 else 2
        checksum = hashlib.blake2b(b"SS58PRE" + data[:-2], digest_size=64).digest()[:2]
        if data[0] >= 128 or len(data) != prefix + 32 + 2 or data[-2:] != checksum:
            reason = "not a 32-byte key with a valid checksum: a typo?"
    if reason:
        raise PublishError(
            f"{where} {hotkey!r} is not an SS58 hotkey address ({reason}); `btcli wallet list` shows yours, e.g. 5F..."
        )
    return hotkey


def check_version(version: str, where: str = "--version") -> str:
    if not re.fullmatch(r"[0-9]+\.[0-9]+\.[0-9]+", version):
        raise PublishError(f"{where}: version must be X.Y.Z (digits), got {version!r}")
    return version


# ------------------------------------------------------------------------------ --out
def _foreign_entries(out_dir: Path) -> list[str] | None:
    """Entries of an existing ``out_dir`` that publish did not write (or that changed since); ``None`` when it has
    no readable marker (then publish wrote none of it)."""
    from roadwork.io import sha256_file

    marker = out_dir / MARKER
    try:
        written = json.loads(marker.read_text())["files"] if marker.is_file() and not marker.is_symlink() else None
    except (ValueError, KeyError, TypeError):
        written = None
    if not isinstance(written, dict):
        return None
    foreign = []
    for path in sorted(out_dir.iterdir()):
        if path.name == MARKER:
            continue
        if path.name not in written or path.is_symlink() or not path.is_file():
            foreign.append(path.name)
        elif sha256_file(path) != written[path.name]:
            foreign.append(f"{path.name} (changed since publish wrote it)")
    return foreign


def check_out(out_dir: Path, bundle_dir: Path) -> None:
    """Refuse an ``--out`` that publish may not replace (see the module docstring); nothing is touched."""
    if out_dir.is_symlink():
        raise PublishError(
            f"--out {out_dir} is a symbolic link (to {os.readlink(out_dir)}): name a folder; nothing was changed"
        )
    if out_dir.exists() and not out_dir.is_dir():
        raise PublishError(f"--out {out_dir} is a file, not a folder: name a folder; nothing was changed")
    out_real, bundle_real = out_dir.resolve(), bundle_dir.resolve()
    if out_real == bundle_real or bundle_real in out_real.parents:
        raise PublishError(
            f"--out {out_dir} is the bundle or inside it (--bundle {bundle_dir}): name a folder "
            "outside the bundle; nothing was changed"
        )
    if not out_dir.is_dir():
        return
    foreign = _foreign_entries(out_dir)
    if foreign is None:
        entries = sorted(p.name for p in out_dir.iterdir())
        held = f"it holds {_some(entries)}" if entries else "it is empty"
        raise PublishError(
            f"--out {out_dir} exists and was not written by roadwork publish (no {MARKER}; {held}): "
            "name a new folder; nothing was changed"
        )
    if foreign:
        raise PublishError(
            f"--out {out_dir} holds what roadwork publish did not write: {_some(foreign)}; move "
            "them away or name a new folder; nothing was changed"
        )


def _some(names: list[str], limit: int = 10) -> str:
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _swap_into_place(new: Path, out_dir: Path, aside: Path) -> None:
    """Rename ``new`` onto ``out_dir``. An existing ``out_dir`` is renamed to ``aside`` first and checked again
    there: anything added meanwhile puts it back (never deleted). The caller removes ``aside``."""
    if out_dir.exists():
        os.replace(out_dir, aside)
        foreign = _foreign_entries(aside)
        if foreign != []:
            os.replace(aside, out_dir)
            raise PublishError(
                f"--out {out_dir}: {foreign or 'its ' + MARKER} changed while publishing; nothing was changed"
            )
    try:
        os.replace(new, out_dir)
    except OSError:
        if aside.exists():
            os.replace(aside, out_dir)
        raise


# ------------------------------------------------------------------------------ the folder
def detector_yaml(hf_repo: str) -> str:
    """Our detector YAML (its settings from configs/roadwork_timm.yaml) with ``hf_repo`` filled in, written
    with PyYAML; the template's leading comment is kept."""
    text = (_SOURCE / "configs" / CONFIG_FILE).read_text()
    settings = yaml.safe_load(text)
    settings["hf_repo"] = hf_repo
    header = [line for line in text.splitlines() if line.startswith("#")][:2]
    header.append("# The settings are described in roadwork_detector_timm.py (RoadworkTimmDetector).")
    return "\n".join(header) + "\n" + yaml.safe_dump(settings, sort_keys=False, allow_unicode=False)


def write_publish_folder(
    bundle_dir: str | Path,
    out_dir: str | Path,
    *,
    hotkey: str | None = None,
    version: str | None = None,
    hf_repo: str = "",
    onnx: bool = True,
) -> dict:
    """Write the folder to publish (see module docstring); returns {file name: sha256} of every file written,
    the marker included. ``hotkey`` replaces the card's ``submitted_by`` (the subnet needs an SS58 hotkey),
    ``version`` its version (X.Y.Z); ``submission_time`` is now."""
    from roadwork.io import dumps_json, sha256_file
    from roadwork.miner.manifest import MANIFEST, MODEL_CARD, submission_time_now, verify_manifest

    if hf_repo:
        check_repo_id(hf_repo)
    if hotkey is not None:
        check_hotkey(hotkey)
    if version is not None:
        check_version(version)
    bundle_dir, out_dir = Path(bundle_dir), Path(os.path.abspath(out_dir))
    if (bundle_dir / MARKER).exists():
        raise PublishError(
            f"--bundle {bundle_dir} is a publish folder, not a bundle: pass the exported bundle (data/bundle)"
        )
    if not (bundle_dir / "config.json").is_file() or not (bundle_dir / MANIFEST).is_file():
        raise PublishError(f"{bundle_dir} is not a bundle (config.json and manifest.json): run the export stage")
    changed = verify_manifest(bundle_dir)
    if changed:
        raise PublishError(f"{bundle_dir}: files differ from manifest.json: {changed}")
    card = json.loads((bundle_dir / MODEL_CARD).read_text())
    if hotkey is not None:
        card["submitted_by"] = hotkey
    if version is not None:
        card["version"] = version
    missing = [k for k in CARD_KEYS if k != "submission_time" and not str(card.get(k) or "").strip()]
    if missing:
        raise PublishError(
            f"{bundle_dir / MODEL_CARD}: {missing} empty; the subnet needs them (set export.submitted_by "
            f"in params.yaml or pass --hotkey)"
        )
    check_hotkey(str(card["submitted_by"]), where=f"{bundle_dir / MODEL_CARD}: submitted_by (or --hotkey)")
    check_version(str(card["version"]), where=f"{bundle_dir / MODEL_CARD} (or --version)")
    card["exported_at"] = card.get("submission_time")
    card["submission_time"] = submission_time_now()
    manifest = json.loads((bundle_dir / MANIFEST).read_text())
    licensed = uses_dinov3_weights(manifest)
    if licensed:
        card.update(license="DINOv3 License", license_file=LICENSE_FILE, license_notice=LICENSE_NOTICE)
    else:
        card.update(license_notice=NO_WEIGHTS_NOTICE)
    check_out(out_dir, bundle_dir)

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".publish-tmp", dir=out_dir.parent))
    try:
        new = tmp / "new"
        new.mkdir()
        for name in BUNDLE_FILES:
            if (bundle_dir / name).is_file() and (onnx or not name.startswith("model.onnx")):
                shutil.copyfile(bundle_dir / name, new / name)
        (new / MODEL_CARD).write_text(dumps_json(card))
        shutil.copyfile(_SOURCE / "detector.py", new / DETECTOR_FILE)
        (new / CONFIG_FILE).write_text(detector_yaml(hf_repo))
        if licensed:
            shutil.copyfile(LICENSE_SOURCE, new / LICENSE_FILE)
        manifest["files"] = {p.name: sha256_file(p) for p in sorted(new.iterdir())}
        (new / MANIFEST).write_text(dumps_json(manifest))
        written = {**manifest["files"], MANIFEST: sha256_file(new / MANIFEST)}
        (new / MARKER).write_text(dumps_json({"written_by": "roadwork publish", "files": written}))
        written[MARKER] = sha256_file(new / MARKER)
        for path in new.iterdir():
            path.chmod(0o644)
        _swap_into_place(new, out_dir, tmp / "old")
    finally:
        if (tmp / "old").exists() and _foreign_entries(tmp / "old") != []:  # putting it back failed: keep it
            shutil.rmtree(tmp / "new", ignore_errors=True)
            log.error("the earlier %s is in %s", out_dir, tmp / "old")
        else:
            shutil.rmtree(tmp)  # ours: what is left of new, and the replaced publish folder
    return written


def push(out_dir: str | Path, repo_id: str, token: str, private: bool = False) -> str:
    """Create (if needed) the Hugging Face model repo and upload the folder (not its marker); returns the commit
    URL."""
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
    info = api.upload_folder(
        folder_path=str(out_dir),
        repo_id=repo_id,
        repo_type="model",
        commit_message="roadwork publish",
        ignore_patterns=[MARKER],
    )
    return str(getattr(info, "commit_url", info))


def build_parser(prog: str = "roadwork publish") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Write what the NATIX subnet asks a miner to publish (bundle, model_card.json with "
        "the hotkey, the detector and its config) to a folder, and push it to a Hugging Face "
        "model repo when --repo is given and HF_TOKEN is set.",
    )
    parser.add_argument("--bundle", default="data/bundle", help="exported bundle (default: %(default)s)")
    parser.add_argument(
        "--out",
        default="publish",
        help="folder to write: new, or one an earlier publish wrote (then replaced; default: %(default)s)",
    )
    parser.add_argument("--hotkey", default=None, help="your miner hotkey, SS58 (default: the card's submitted_by)")
    parser.add_argument("--version", default=None, help="model version X.Y.Z (default: the card's)")
    parser.add_argument(
        "--repo",
        default="",
        help="Hugging Face model repo, e.g. you/roadwork (goes into the "
        "detector YAML's hf_repo; pushed to when HF_TOKEN is set)",
    )
    parser.add_argument("--no-onnx", action="store_true", help="leave model.onnx out")
    parser.add_argument("--private", action="store_true", help="create the repo private")
    return parser


def main(argv: Sequence[str] | None = None, prog: str = "roadwork publish") -> int:
    from roadwork.log import setup as setup_logging

    setup_logging()
    args = build_parser(prog).parse_args(argv)
    try:
        files = write_publish_folder(
            args.bundle, args.out, hotkey=args.hotkey, version=args.version, hf_repo=args.repo, onnx=not args.no_onnx
        )
    except (PublishError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(
        f"wrote {len(files)} files to {args.out}: {', '.join(sorted(files))} ({MARKER} is not uploaded)",
        file=sys.stderr,
    )
    token = os.environ.get("HF_TOKEN")
    if not args.repo:
        print("not pushed: no --repo given", file=sys.stderr)
        return 0
    if not token:
        print(f"not pushed: set HF_TOKEN (a write token) to push {args.out} to {args.repo}", file=sys.stderr)
        return 0
    print(f"pushed: {push(args.out, args.repo, token, args.private)}", file=sys.stderr)
    return 0

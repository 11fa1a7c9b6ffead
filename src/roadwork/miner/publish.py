"""``roadwork publish``: everything the subnet asks a miner to publish, in one folder, pushed to a
Hugging Face model repo when ``HF_TOKEN`` is set.

The folder (= the model repo's files)::

    config.json, model.safetensors      the bundle (timm's Hugging Face layout)
    inference.json                      views and the multi-view threshold (when the export wrote it)
    model.onnx                          when the bundle has it (--no-onnx leaves it out)
    model_card.json                     model_name, description, version, submitted_by = the hotkey,
                                        submission_time (docs/Mining.md) + our metrics
    manifest.json                       sha256 of every file above (the card's hash updated)
    roadwork_detector_timm.py           the detector, to copy into base_miner/detectors/
    roadwork_timm.yaml                  its config (hf_repo = this repo), for base_miner/detectors/configs/

The push (``huggingface_hub.HfApi.upload_folder``) needs the network and a token: it is not
covered by the tests (they run offline); the folder layout is.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
from pathlib import Path
from typing import Sequence

import yaml

DETECTOR_FILE = "roadwork_detector_timm.py"
CONFIG_FILE = "roadwork_timm.yaml"
BUNDLE_FILES = ("config.json", "model.safetensors", "inference.json", "model.onnx", "model.onnx.data")
CARD_KEYS = ("model_name", "description", "version", "submitted_by", "submission_time")
_SOURCE = Path(__file__).resolve().parent


class PublishError(ValueError):
    """The bundle or the card is not publishable as it is."""


def detector_yaml(hf_repo: str) -> str:
    """Our YAML with ``hf_repo`` filled in (the comments kept)."""
    text = (_SOURCE / "configs" / CONFIG_FILE).read_text()
    return re.sub(r"^hf_repo: ''", f"hf_repo: '{hf_repo}'", text, count=1, flags=re.MULTILINE)


def write_publish_folder(bundle_dir: str | Path, out_dir: str | Path, *, hotkey: str | None = None,
                         version: str | None = None, hf_repo: str = "", onnx: bool = True) -> dict:
    """Write the folder to publish (see module docstring); returns {file name: sha256}. ``hotkey``
    replaces the card's ``submitted_by`` (the subnet needs one: an empty hotkey is an error),
    ``version`` its version (X.Y.Z)."""
    from roadwork.export.bundle import MANIFEST, MODEL_CARD, verify_manifest
    from roadwork.io import dumps_json, sha256_file

    bundle_dir, out_dir = Path(bundle_dir), Path(out_dir)
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
    missing = [k for k in CARD_KEYS if not str(card.get(k) or "").strip()]
    if missing:
        raise PublishError(f"{bundle_dir / MODEL_CARD}: {missing} empty; the subnet needs them (set export.submitted_by "
                           f"in params.yaml or pass --hotkey)")
    if not re.fullmatch(r"\d+\.\d+\.\d+", str(card["version"])):
        raise PublishError(f"{bundle_dir / MODEL_CARD}: version must be X.Y.Z, got {card['version']!r}")

    if out_dir.exists() and any(out_dir.iterdir()) and not (out_dir / DETECTOR_FILE).is_file():
        raise PublishError(f"{out_dir} exists and is not an earlier publish folder: name a new or empty folder "
                           "(--out); it is replaced whole")
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    for name in BUNDLE_FILES:
        if (bundle_dir / name).is_file() and (onnx or not name.startswith("model.onnx")):
            shutil.copyfile(bundle_dir / name, out_dir / name)
    (out_dir / MODEL_CARD).write_text(dumps_json(card))
    shutil.copyfile(_SOURCE / "detector.py", out_dir / DETECTOR_FILE)
    (out_dir / CONFIG_FILE).write_text(detector_yaml(hf_repo))
    manifest = json.loads((bundle_dir / MANIFEST).read_text())
    manifest["files"] = {p.name: sha256_file(p) for p in sorted(out_dir.iterdir()) if p.is_file()}
    (out_dir / MANIFEST).write_text(dumps_json(manifest))
    for path in out_dir.iterdir():
        path.chmod(0o644)
    return manifest["files"]


def push(out_dir: str | Path, repo_id: str, token: str, private: bool = False) -> str:
    """Create (if needed) the Hugging Face model repo and upload the folder; returns the commit URL."""
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
    info = api.upload_folder(folder_path=str(out_dir), repo_id=repo_id, repo_type="model",
                             commit_message="roadwork publish")
    return str(getattr(info, "commit_url", info))


def build_parser(prog: str = "roadwork publish") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog, description="Write what the NATIX subnet asks a miner to publish (bundle, model_card.json with "
                               "the hotkey, the detector and its config) to a folder, and push it to a Hugging Face "
                               "model repo when --repo is given and HF_TOKEN is set.")
    parser.add_argument("--bundle", default="data/bundle", help="exported bundle (default: %(default)s)")
    parser.add_argument("--out", default="publish", help="folder to write (replaced; default: %(default)s)")
    parser.add_argument("--hotkey", default=None, help="your miner hotkey (default: the card's submitted_by)")
    parser.add_argument("--version", default=None, help="model version X.Y.Z (default: the card's)")
    parser.add_argument("--repo", default="", help="Hugging Face model repo, e.g. you/roadwork (goes into the "
                                                   "detector YAML's hf_repo; pushed to when HF_TOKEN is set)")
    parser.add_argument("--no-onnx", action="store_true", help="leave model.onnx out")
    parser.add_argument("--private", action="store_true", help="create the repo private")
    return parser


def main(argv: Sequence[str] | None = None, prog: str = "roadwork publish") -> int:
    args = build_parser(prog).parse_args(argv)
    try:
        files = write_publish_folder(args.bundle, args.out, hotkey=args.hotkey, version=args.version, hf_repo=args.repo,
                                     onnx=not args.no_onnx)
    except (PublishError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {len(files)} files to {args.out}: {', '.join(sorted(files))}", file=sys.stderr)
    token = os.environ.get("HF_TOKEN")
    if not args.repo:
        print("not pushed: no --repo given", file=sys.stderr)
        return 0
    if not token:
        print(f"not pushed: set HF_TOKEN (a write token) to push {args.out} to {args.repo}", file=sys.stderr)
        return 0
    print(f"pushed: {push(args.out, args.repo, token, args.private)}", file=sys.stderr)
    return 0

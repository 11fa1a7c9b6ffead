"""`roadwork publish`: the folder it writes, and every --out / argument it refuses without touching anything."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import json
import shutil
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from kit.bundles import make_bundle
from kit.images import pictures

from roadwork.cli import main
from roadwork.io import sha256_file
from roadwork.miner import decision, detector, publish
from roadwork.miner.detector import RoadworkTimmDetector
from roadwork.predict import Predictor

HOTKEY = "5GrwvaEF5zXb26Fz9rcQpDWS57CtERHpNehXCPcNoHGKutQY"  # Substrate's well-known dev account "Alice"
MULTIVIEW = {"grid": 2, "overlap": 0.2, "topk": 3, "flip_tta": False, "threshold": 0.6}


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    bundle = make_bundle(tmp_path_factory.mktemp("publish"), temperature=1.5, threshold_logit=0.1)
    decision.write_inference_config(bundle, {"views": "single", "multiview": MULTIVIEW})
    return bundle


@pytest.fixture(autouse=True)
def no_token(monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)


def run(bundle, out, *extra) -> int:
    return main(["publish", "--bundle", str(bundle), "--out", str(out), *extra])


def good(*extra) -> list[str]:
    return ["--hotkey", HOTKEY, "--version", "1.2.3", *extra]


def snapshot(root: Path) -> dict:
    """Every entry under ``root`` (not following links) with its kind and content hash, ``root`` itself included."""

    def entry(path: Path):
        if path.is_symlink():
            return ("link", os.readlink(path))
        if path.is_dir():
            return ("dir", path.stat().st_mode)
        return ("file", path.stat().st_mode, sha256_file(path))

    found = {".": entry(root)}
    if root.is_dir() and not root.is_symlink():
        for path in root.rglob("*"):
            found[path.relative_to(root).as_posix()] = entry(path)
    return found


def miners_detectors(root: Path) -> Path:
    """base_miner/detectors/ of a subnet checkout after Route 1: our detector beside the miner's own files."""
    folder = root / "base_miner" / "detectors"
    (folder / "configs").mkdir(parents=True)
    (folder / "__init__.py").write_text(
        "from .vit_detector import ViTImageDetector\nfrom .roadwork_detector_timm import RoadworkTimmDetector\n"
    )
    (folder / "vit_detector.py").write_text("class ViTImageDetector: ...\n")
    shutil.copyfile(detector.__file__, folder / publish.DETECTOR_FILE)
    (folder / "configs" / "ViT_roadwork.yaml").write_text("hf_repo: natix-network-org/roadwork\n")
    (folder / "configs" / publish.CONFIG_FILE).write_text("hf_repo: me/mine\n")
    return folder


# ------------------------------------------------------------------------------ the folder
def test_publish_folder_layout(bundle, tmp_path, capsys):
    out = tmp_path / "publish"
    assert run(bundle, out) == 2  # the card has no hotkey
    assert "submitted_by" in capsys.readouterr().err
    assert run(bundle, out, "--hotkey", HOTKEY) == 2
    assert "version must be X.Y.Z (digits), got '0'" in capsys.readouterr().err
    assert not out.exists()

    before = datetime.now(timezone.utc).replace(microsecond=0)
    assert run(bundle, out, *good("--repo", "me/road_work-1.0")) == 0
    after = datetime.now(timezone.utc)
    err = capsys.readouterr().err
    assert "not pushed: set HF_TOKEN" in err
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(
        [
            "config.json",
            "model.safetensors",
            "inference.json",
            "model_card.json",
            "manifest.json",
            "LICENSE.md",
            publish.DETECTOR_FILE,
            publish.CONFIG_FILE,
            publish.MARKER,
        ]
    )
    assert f"wrote {len(names)} files to {out}: {', '.join(names)}" in err  # the count is what is there
    assert sorted(p.name for p in tmp_path.iterdir()) == ["publish"]  # no temporary folder left

    card = json.loads((out / "model_card.json").read_text())
    bundle_card = json.loads((bundle / "model_card.json").read_text())
    assert card["submitted_by"] == HOTKEY and card["version"] == "1.2.3" and all(card[k] for k in publish.CARD_KEYS)
    assert before <= datetime.fromisoformat(card["submission_time"].replace("Z", "+00:00")) <= after
    assert card["exported_at"] == bundle_card["submission_time"]
    assert card["license"] == "DINOv3 License" and card["license_file"] == "LICENSE.md"
    assert "derivative work of Meta's DINOv3" in card["license_notice"] and "LICENSE.md" in card["license_notice"]
    licence = (out / "LICENSE.md").read_text()
    assert licence.startswith("# DINOv3 License") and "you shall provide a copy of this Agreement" in licence

    # manifest.json: what the model repo holds (the marker is not uploaded); the marker: everything publish wrote
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["files"] == {n: sha256_file(out / n) for n in names if n not in ("manifest.json", publish.MARKER)}
    marker = json.loads((out / publish.MARKER).read_text())
    assert marker["files"] == {n: sha256_file(out / n) for n in names if n != publish.MARKER}
    assert all((out / n).stat().st_mode & 0o777 == 0o644 for n in names)

    assert (out / publish.DETECTOR_FILE).read_bytes() == Path(detector.__file__).read_bytes()
    config = yaml.safe_load((out / publish.CONFIG_FILE).read_text())
    shipped = yaml.safe_load((Path(publish.__file__).parent / "configs" / publish.CONFIG_FILE).read_text())
    assert config == {**shipped, "hf_repo": "me/road_work-1.0"}
    for name in ("config.json", "model.safetensors", "inference.json"):
        assert (out / name).read_bytes() == (bundle / name).read_bytes()
    # the published folder is itself a bundle the detector loads
    assert RoadworkTimmDetector(config_name=None, bundle=str(out))(pictures(1)[0]) == pytest.approx(
        RoadworkTimmDetector(config_name=None, bundle=str(bundle))(pictures(1)[0])
    )


def test_submission_time_is_the_publish_time(bundle, tmp_path, monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1767225600")  # reproducible builds pin "now"
    assert run(bundle, tmp_path / "out", *good()) == 0
    assert json.loads((tmp_path / "out" / "model_card.json").read_text())["submission_time"] == "2026-01-01T00:00:00Z"


def test_a_second_publish_replaces_the_first(bundle, tmp_path, capsys):
    out = tmp_path / "publish"
    assert run(bundle, out, *good("--repo", "me/first")) == 0
    assert run(bundle, out, "--hotkey", HOTKEY, "--version", "2.0.0", "--repo", "me/second", "--no-onnx") == 0
    assert json.loads((out / "model_card.json").read_text())["version"] == "2.0.0"
    assert yaml.safe_load((out / publish.CONFIG_FILE).read_text())["hf_repo"] == "me/second"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["publish"]
    capsys.readouterr()

    # a file publish did not write, or one changed since, stops the next publish; nothing is touched
    def refused(expected: str):
        before = snapshot(tmp_path)
        assert run(bundle, out, *good()) == 2
        assert expected in capsys.readouterr().err
        assert snapshot(tmp_path) == before

    (out / "notes.txt").write_text("mine")
    refused("holds what roadwork publish did not write: notes.txt")
    (out / "notes.txt").unlink()
    (out / publish.CONFIG_FILE).write_text("hf_repo: me/edited-by-hand\n")
    refused(f"{publish.CONFIG_FILE} (changed since publish wrote it)")


def test_a_file_added_while_publishing_is_put_back_not_deleted(bundle, tmp_path):
    out, new = tmp_path / "publish", tmp_path / "new"
    assert run(bundle, out, *good()) == 0
    shutil.copytree(out, new)
    (out / "notes.txt").write_text("arrived after the check")
    before = snapshot(out)
    with pytest.raises(publish.PublishError, match="notes.txt"):
        publish._swap_into_place(new, out, tmp_path / "aside")
    assert snapshot(out) == before and not (tmp_path / "aside").exists()


# ------------------------------------------------------------------------------ refusals: --out
def test_refuses_the_miners_detectors_folder(bundle, tmp_path, capsys):
    folder = miners_detectors(tmp_path / "subnet")
    before, around = snapshot(folder), snapshot(tmp_path)
    assert run(bundle, folder, *good()) == 2
    err = capsys.readouterr().err
    assert f"--out {folder} exists and was not written by roadwork publish" in err
    assert "__init__.py" in err and "configs" in err and "nothing was changed" in err
    assert snapshot(folder) == before and snapshot(tmp_path) == around  # no temporary folder either


def test_refuses_an_empty_folder_and_a_folder_with_a_broken_marker(bundle, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert run(bundle, tmp_path / "empty", *good()) == 2
    assert "it is empty" in capsys.readouterr().err
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / publish.MARKER).write_text("{not json")
    (broken / "data.csv").write_text("a,b\n")
    before = snapshot(tmp_path)
    assert run(bundle, broken, *good()) == 2
    assert "data.csv" in capsys.readouterr().err
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("where", ["bundle", "inside an existing folder", "inside a new folder"])
def test_refuses_the_bundle_and_folders_inside_it(bundle, tmp_path, capsys, where):
    copy = tmp_path / "bundle"
    shutil.copytree(bundle, copy)
    (copy / "extra").mkdir()
    out = {"bundle": copy, "inside an existing folder": copy / "extra", "inside a new folder": copy / "new"}[where]
    before = snapshot(copy)
    assert run(copy, out, *good()) == 2
    assert "is the bundle or inside it" in capsys.readouterr().err
    assert snapshot(copy) == before


def test_refuses_a_publish_folder_as_the_bundle(bundle, tmp_path, capsys):
    published = tmp_path / "pub"
    assert run(bundle, published, *good()) == 0
    before = snapshot(tmp_path)
    assert run(published, published, *good()) == 2
    assert "is a publish folder, not a bundle" in capsys.readouterr().err
    assert snapshot(tmp_path) == before


def test_refuses_a_symlink_and_a_file(bundle, tmp_path, capsys):
    target = tmp_path / "target"
    assert run(bundle, target, *good()) == 0  # even a link to a publish folder: the link is not replaced
    (tmp_path / "link").symlink_to(target, target_is_directory=True)
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    (tmp_path / "file").write_text("mine")
    before = snapshot(tmp_path)
    for name, message in [("link", "is a symbolic link"), ("dangling", "is a symbolic link"), ("file", "is a file")]:
        assert run(bundle, tmp_path / name, *good()) == 2
        assert message in capsys.readouterr().err
        assert snapshot(tmp_path) == before


# ------------------------------------------------------------------------------ refusals: arguments
@pytest.mark.parametrize(
    "repo",
    [
        "me/road'work",
        'me/road"work',
        "me/roadwork\nviews: multi",
        "me/\\1",
        "me/" + "a" * 97,
        "me/road work",
        "roadwork",
        "a/b/c",
        "me/road..work",
        "me/roadwork.git",
        "mé/roadwork",
    ],
)
def test_refuses_a_bad_repo(bundle, tmp_path, capsys, repo):
    out = tmp_path / "publish"
    assert run(bundle, out, *good("--repo", "me/roadwork")) == 0
    before = snapshot(tmp_path)
    assert run(bundle, out, *good("--repo", repo)) == 2
    assert f"--repo {repo!r}" in capsys.readouterr().err
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize(
    "hotkey",
    ["5HotKey", HOTKEY[:-1] + "Z", HOTKEY + "\n", HOTKEY[:-1] + "'", " " + HOTKEY, HOTKEY.replace("v", "0"), ""],
)
def test_refuses_a_bad_hotkey(bundle, tmp_path, capsys, hotkey):
    out = tmp_path / "publish"
    assert run(bundle, out, *good()) == 0
    before = snapshot(tmp_path)
    assert run(bundle, out, "--hotkey", hotkey, "--version", "1.2.3") == 2
    assert f"--hotkey {hotkey!r} is not an SS58 hotkey address" in capsys.readouterr().err
    assert snapshot(tmp_path) == before


def test_real_hotkeys_pass():
    for hotkey in (
        HOTKEY,
        "5FHneW46xGXgs5mUiveU4sbTyGBzmstUspZC92UhjJM694ty",  # Bob
        "15oF4uVJwmo4TdGW7VfQxNLavjCXviqxT9S1MgbjMNHr6Sp5",
    ):  # Alice under Polkadot's prefix 0
        assert publish.check_hotkey(hotkey) == hotkey


@pytest.mark.parametrize("version", ["1.2", "1.2.3.4", "v1.2.3", "1.2.3\n", "1.2.x", "1.2.3-rc1", "١.٢.٣"])
def test_refuses_a_bad_version(bundle, tmp_path, capsys, version):
    out = tmp_path / "publish"
    assert run(bundle, out, *good()) == 0
    before = snapshot(tmp_path)
    assert run(bundle, out, "--hotkey", HOTKEY, "--version", version) == 2
    assert f"version must be X.Y.Z (digits), got {version!r}" in capsys.readouterr().err
    assert snapshot(tmp_path) == before


# ------------------------------------------------------------------------------ Route 1
def test_readme_route1_installs_the_published_detector(bundle, tmp_path, monkeypatch):
    """The README's Route 1 block, run with bash as written on a `roadwork publish` folder in a fresh subnet
    layout, puts the files where the published YAML and the miner look (here in our environment; in the
    miner's: tests/miner_env_check.py)."""
    from miner_env_check import install_route1, write_harness

    subnet = tmp_path / "subnet"
    write_harness(subnet)
    install_route1(subnet, bundle, tmp_path)
    detectors = subnet / "base_miner" / "detectors"
    assert (detectors / publish.DETECTOR_FILE).read_text() == Path(detector.__file__).read_text()
    assert "from .roadwork_detector_timm import RoadworkTimmDetector" in (detectors / "__init__.py").read_text()
    monkeypatch.chdir(subnet)  # the YAML's bundle folder is relative to the miner's working directory
    found = RoadworkTimmDetector(config_name=str(detectors / "configs" / publish.CONFIG_FILE), device="None")
    assert found.bundle_path.resolve() == (subnet / "base_miner" / "RoadworkTimm" / "weights").resolve()
    assert found.hf_repo == "you/roadwork" and found.device == torch.device("cpu")
    images = pictures(4, seed=9)
    assert np.abs(np.array(found.batch(images)) - Predictor(bundle, device="cpu").predict(images)).max() < 1e-6


def test_a_randomly_initialised_backbone_carries_no_dinov3_licence(tmp_path, capsys):
    """The licence follows the weights: with model.pretrained: none in the manifest's provenance (the embedded
    default) no DINOv3 weights were used, so no LICENSE.md and the card says why; any other value attaches it."""
    for pretrained, licensed in (("none", False), ("vit_small_patch16_dinov3.lvd1689m", True)):
        bundle = make_bundle(tmp_path / pretrained, temperature=1.0, threshold_logit=0.0)
        manifest = json.loads((bundle / "manifest.json").read_text())
        manifest["provenance"] = {"params": {"model": {"pretrained": pretrained}}}
        (bundle / "manifest.json").write_text(json.dumps(manifest))
        out = tmp_path / f"publish-{licensed}"
        assert run(bundle, out, *good()) == 0, capsys.readouterr().err
        card = json.loads((out / "model_card.json").read_text())
        assert (out / "LICENSE.md").exists() == licensed and ("license" in card) == licensed
        assert ("derivative work of Meta's DINOv3" in card["license_notice"]) == licensed
        assert ("no DINOv3 weights" in card["license_notice"]) != licensed

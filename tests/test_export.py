"""The miner bundle: loads as the stock miner loads it, decides as we decide, ONNX parity, manifest."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before transformers / huggingface_hub are imported

import json
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from kit.bundles import make_model_dir
from kit.train import TINY_MODEL
from PIL import Image
from safetensors.torch import load_file

from roadwork.export.bundle import (
    build_bundle,
    bundle_transform,
    load_bundle_model,
    roadwork_probability,
    verify_manifest,
)
from roadwork.io import sha256_file
from roadwork.models.adapters import has_adapters
from roadwork.models.model_dir import load_trained
from roadwork.train.augment import eval_transform

TEMPERATURE = 1.7
CARD = dict(model_name="roadwork-test", version="9.8.7", submitted_by="5FakeHotkey")
METRICS = {"val_test": {"mcc": 0.5, "n": 12}}
PROVENANCE = {"data/split": "md5-of-splits.dir", "params": {"model": "abc"}}


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a network connection fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def sample_images(n: int = 30, seed: int = 0) -> list[Image.Image]:
    """Smooth random pictures at various sizes and aspect ratios (smaller and larger than img_size)."""
    rng = np.random.default_rng(seed)
    images = []
    for _ in range(n):
        w, h = (int(v) for v in rng.integers(20, 120, 2))
        coarse = rng.integers(0, 256, size=(int(rng.integers(2, 6)), int(rng.integers(2, 6)), 3), dtype=np.uint8)
        images.append(Image.fromarray(coarse).resize((w, h), Image.BICUBIC))
    return images


def our_logits(model_dir: Path, images) -> tuple[np.ndarray, torch.Tensor]:
    classifier, description = load_trained(model_dir)
    transform = eval_transform(description["img_size"], description["mean"], description["std"])
    batch = torch.stack([transform(im) for im in images])
    with torch.no_grad():
        return classifier(batch).double().numpy(), batch


def middle_threshold(z: np.ndarray) -> float:
    """Midpoint of the widest gap between neighbouring logits in the middle half: images on both
    sides, none within float32 rounding of the threshold."""
    s = np.sort(z)
    n = len(s)
    i = max(range(n // 4, 3 * n // 4 + 1), key=lambda k: s[k] - s[k - 1])
    return float((s[i - 1] + s[i]) / 2)


@pytest.fixture(scope="module", params=["linear", "doran+dora"])
def built(request, tmp_path_factory):
    root = tmp_path_factory.mktemp(request.param.replace("+", "_"))
    head_type, _, adapter_kind = request.param.partition("+")
    adapter = {"kind": adapter_kind, "rank": 2} if adapter_kind else None
    model_dir = make_model_dir(root / "model", head_type, adapter)
    images = sample_images()
    z, batch = our_logits(model_dir, images)
    t = middle_threshold(z)
    assert np.abs(z - t).min() > 1e-5, "test images too close to the threshold for an exact comparison"
    out = root / "bundle"
    manifest = build_bundle(model_dir, TEMPERATURE, t, out, metrics=METRICS, provenance=PROVENANCE, **CARD)
    return dict(model_dir=model_dir, out=out, manifest=manifest, images=images, z=z, batch=batch, t=t, adapter=adapter)


def test_stock_miner_loading_and_decision_match(built, no_network):
    from transformers import AutoImageProcessor, AutoModelForImageClassification, pipeline

    out, images, z, t = built["out"], built["images"], built["z"], built["t"]
    model = AutoModelForImageClassification.from_pretrained(str(out)).eval()
    processor = AutoImageProcessor.from_pretrained(str(out), use_fast=True)
    assert type(model).__name__ == "TimmWrapperForImageClassification"
    assert model.config.id2label == {0: "None", 1: "Roadwork"}
    assert model.timm_model.embed_dim == TINY_MODEL["overrides"]["embed_dim"]  # the CPU-sized variant
    assert len(model.timm_model.blocks) == TINY_MODEL["overrides"]["depth"]

    # Preprocessing: the processor's pixel_values equal our eval transform's, pixel for pixel.
    pixels = torch.cat([processor(images=im, return_tensors="pt")["pixel_values"] for im in images])
    assert pixels.shape == built["batch"].shape == (len(images), 3, 32, 32)
    assert float((pixels - built["batch"]).abs().max()) == 0.0
    ours = torch.stack([bundle_transform(out)(im) for im in images])
    assert torch.equal(ours, built["batch"])

    classify = pipeline("image-classification", model=model, image_processor=processor)
    scores = []
    for im in images:
        result = classify(im)
        scores.append(next(r["score"] for r in result if r["label"] == "Roadwork"))
    scores = np.array(scores)
    decisions = z > t
    assert 0 < decisions.sum() < len(decisions)  # both sides of the threshold are exercised
    np.testing.assert_array_equal(scores > 0.5, decisions)
    expected = 1 / (1 + np.exp(-(z - t) / TEMPERATURE))
    np.testing.assert_allclose(scores, expected, atol=1e-5, rtol=0)

    # Our own loading path gives the same probabilities (the predictor uses it).
    timm_model = load_bundle_model(out)
    assert not has_adapters(timm_model)
    np.testing.assert_allclose(roadwork_probability(timm_model, pixels).numpy(), expected, atol=1e-5, rtol=0)


def test_config_is_timm_hf_layout(built):
    config = json.loads((built["out"] / "config.json").read_text())
    assert config["architecture"] == TINY_MODEL["backbone"]
    assert config["num_classes"] == 2 and config["label_names"] == ["None", "Roadwork"]
    assert config["num_features"] == TINY_MODEL["overrides"]["embed_dim"]
    assert config["global_pool"] == "token"
    args = config["model_args"]
    assert {k: args[k] for k in TINY_MODEL["overrides"]} == TINY_MODEL["overrides"]
    assert list(args["img_size"]) == [32, 32] and "num_classes" not in args
    cfg = config["pretrained_cfg"]
    assert list(cfg["input_size"]) == [3, 32, 32]
    assert cfg["interpolation"] == "bicubic" and cfg["crop_pct"] == 1.0 and cfg["crop_mode"] == "center"
    description = json.loads((built["model_dir"] / "model.json").read_text())
    assert cfg["mean"] == description["mean"] and cfg["std"] == description["std"]
    import timm

    # timm itself reads the directory too (local-dir: source) and gets the same weights.
    same = timm.create_model(f"local-dir:{built['out']}", pretrained=True).eval()
    with torch.no_grad():
        assert torch.equal(same(built["batch"]), load_bundle_model(built["out"])(built["batch"]))


def test_onnx_parity(built):
    import onnxruntime as ort

    record = built["manifest"]["onnx"]
    assert record["max_abs_logit_diff"] <= 1e-4 and record["files"] == ["model.onnx"]
    session = ort.InferenceSession(str(built["out"] / "model.onnx"), providers=["CPUExecutionProvider"])
    model = load_bundle_model(built["out"])
    for batch in (built["batch"][:1], built["batch"]):  # dynamic batch axis
        (onnx_logits,) = session.run(["logits"], {"pixel_values": batch.numpy()})
        with torch.no_grad():
            torch_logits = model(batch).numpy()
        assert onnx_logits.shape == torch_logits.shape
        assert np.abs(onnx_logits - torch_logits).max() <= 1e-4
    probability = torch.softmax(torch.from_numpy(onnx_logits), -1)[:, 1].numpy()
    np.testing.assert_array_equal(probability > 0.5, built["z"] > built["t"])


def test_manifest_and_model_card(built, tmp_path):
    out, manifest = built["out"], built["manifest"]
    on_disk = json.loads((out / "manifest.json").read_text())
    assert on_disk == json.loads(json.dumps(manifest))
    names = {p.name for p in out.iterdir()}
    assert names == {"config.json", "model.safetensors", "model.onnx", "model_card.json", "manifest.json"}
    assert set(on_disk["files"]) == names - {"manifest.json"}
    assert all(sha256_file(out / n) == h for n, h in on_disk["files"].items())
    assert all((out / n).stat().st_mode & 0o777 == 0o644 for n in names)
    assert verify_manifest(out) == []
    assert on_disk["provenance"] == PROVENANCE and on_disk["metrics"] == METRICS
    assert on_disk["decision"]["temperature"] == TEMPERATURE and on_disk["decision"]["threshold_logit"] == built["t"]
    assert on_disk["source"]["model.safetensors"] == sha256_file(built["model_dir"] / "model.safetensors")
    assert on_disk["source"]["adapter_merged"] == built["adapter"]

    card = json.loads((out / "model_card.json").read_text())
    for key in ("model_name", "description", "version", "submitted_by", "submission_time"):
        assert isinstance(card[key], str) and card[key], key
    assert {k: card[k] for k in CARD} == CARD and card["metrics"] == METRICS
    assert card["submission_time"].endswith("Z")
    from datetime import datetime

    datetime.fromisoformat(card["submission_time"].replace("Z", "+00:00"))

    tampered = tmp_path / "tampered"
    shutil.copytree(out, tampered)
    (tampered / "config.json").write_text((tampered / "config.json").read_text() + " ")
    assert verify_manifest(tampered) == ["config.json"]


def test_temperature_changes_only_the_head(tmp_path):
    model_dir = make_model_dir(tmp_path / "model", "linear", seed=3)
    common = dict(
        metrics=METRICS,
        provenance=PROVENANCE,
        onnx=False,
        check_transformers=False,
        submission_time="2026-01-01T00:00:00Z",
        **CARD,
    )
    one = build_bundle(model_dir, 1.0, 0.25, tmp_path / "t1", **common)
    two = build_bundle(model_dir, 2.0, 0.25, tmp_path / "t2", **common)
    a, b = load_file(tmp_path / "t1" / "model.safetensors"), load_file(tmp_path / "t2" / "model.safetensors")
    assert a.keys() == b.keys()
    differing = sorted(k for k in a if not torch.equal(a[k], b[k]))
    assert differing == ["head.bias", "head.weight"]
    torch.testing.assert_close(b["head.weight"], a["head.weight"] / 2, rtol=1e-6, atol=0)
    torch.testing.assert_close(b["head.bias"], a["head.bias"] / 2, rtol=1e-6, atol=0)
    assert torch.count_nonzero(a["head.weight"][0]) == 0 and a["head.bias"][0] == 0  # "None" row
    assert (tmp_path / "t1" / "config.json").read_bytes() == (tmp_path / "t2" / "config.json").read_bytes()
    assert one["files"]["config.json"] == two["files"]["config.json"]
    assert one["model_sha256"] != two["model_sha256"]
    # same inputs and the same submission time: byte-identical bundle (reproducible export)
    again = build_bundle(model_dir, 1.0, 0.25, tmp_path / "t1_again", **common)
    assert again["files"] == one["files"]


def test_failed_build_leaves_previous_bundle(tmp_path, monkeypatch):
    model_dir = make_model_dir(tmp_path / "model", "linear", seed=4)
    out = tmp_path / "bundle"
    out.mkdir()
    (out / "previous.txt").write_text("old bundle")

    def broken(*args, **kwargs):
        raise RuntimeError("exporter crashed")

    monkeypatch.setattr("roadwork.export.onnx_export.export_and_check", broken)
    with pytest.raises(RuntimeError, match="exporter crashed"):
        build_bundle(model_dir, 1.0, 0.0, out, metrics={}, provenance={}, check_transformers=False, **CARD)
    assert [p.name for p in out.iterdir()] == ["previous.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle", "model"]  # no temporaries left

    with pytest.raises(ValueError, match="temperature"):
        build_bundle(model_dir, 0.0, 0.0, tmp_path / "never", metrics={}, provenance={}, **CARD)
    assert not (tmp_path / "never").exists()


def test_killed_build_leaves_no_bundle(tmp_path):
    model_dir = make_model_dir(tmp_path / "model", "linear", seed=5)
    out = tmp_path / "bundle"
    script = textwrap.dedent(f"""
        import os, signal
        from pathlib import Path
        import roadwork.export.onnx_export as onnx_export
        from roadwork.export.bundle import build_bundle

        def killed(model, path, img_size, tolerance):
            assert (Path(path).parent / "model.safetensors").exists()  # half-way: weights written
            os.kill(os.getpid(), signal.SIGKILL)

        onnx_export.export_and_check = killed
        build_bundle(Path({str(model_dir)!r}), 1.0, 0.0, Path({str(out)!r}), model_name="m", version="1",
                     submitted_by="", metrics={{}}, provenance={{}}, check_transformers=False)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == -signal.SIGKILL, result.stderr[-2000:]
    assert not out.exists()


def test_onnx_external_data_is_consolidated(built, tmp_path):
    """Over 2 GiB the exporter writes one file per tensor; the bundle keeps model.onnx + one .data."""
    import onnx
    import onnxruntime as ort

    from roadwork.export.onnx_export import consolidate

    scratch = tmp_path / "scratch"
    scratch.mkdir()
    proto = onnx.load(str(built["out"] / "model.onnx"))
    onnx.save_model(
        proto, str(scratch / "model.onnx"), save_as_external_data=True, all_tensors_to_one_file=False, size_threshold=0
    )
    assert len(list(scratch.iterdir())) > 2
    final = tmp_path / "final"
    final.mkdir()
    files = consolidate(scratch / "model.onnx", final / "model.onnx")
    assert [p.name for p in files] == ["model.onnx", "model.onnx.data"]
    assert sorted(p.name for p in final.iterdir()) == ["model.onnx", "model.onnx.data"]
    batch = built["batch"].numpy()
    reference = ort.InferenceSession(str(built["out"] / "model.onnx"), providers=["CPUExecutionProvider"])
    moved = ort.InferenceSession(str(final / "model.onnx"), providers=["CPUExecutionProvider"])
    np.testing.assert_array_equal(
        moved.run(None, {"pixel_values": batch})[0], reference.run(None, {"pixel_values": batch})[0]
    )

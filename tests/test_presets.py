"""Every preset validates like params.yaml, builds its model, and resolves to its launch command."""

import shutil

import pytest
import yaml
from kit.repo import REPO

from roadwork.config import ConfigError
from roadwork.models.backbone import count_parameters
from roadwork.presets import apply, resolve
from roadwork.train.distributed import launch_command

PRESETS = sorted((REPO / "presets").glob("*.yaml"))


@pytest.mark.parametrize("preset", PRESETS, ids=[p.stem for p in PRESETS])
def test_preset_validates_and_builds_its_model_on_the_meta_device(preset, monkeypatch):
    params = resolve(preset, REPO / "params.yaml")
    count = count_parameters(params.model.backbone, dict(params.model.overrides))
    assert count > 0
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    command = launch_command("roadwork.stages.train_phase1", params.train.processes)
    if params.train.processes > 1:
        assert "torch.distributed.run" in command and f"--nproc_per_node={params.train.processes}" in command
    else:
        assert command is None


def test_real_preset_is_the_seed_plan(monkeypatch):
    params = resolve(REPO / "presets" / "real.yaml", REPO / "params.yaml")
    assert params.data.source == "natix" and params.data.natix.repo_id == "natix-network-org/roadwork"
    assert params.model.backbone == "vit_huge_plus_patch16_dinov3"
    assert params.model.pretrained == "vit_huge_plus_patch16_dinov3.lvd1689m"
    assert params.model.overrides == {}  # not params.yaml's CPU-sized overrides
    assert round(count_parameters(params.model.backbone, dict(params.model.overrides)) / 1e6, 1) == 840.5  # ViT-H/16+
    explora = params.explora
    assert (
        explora.lora_rank,
        explora.global_crop_size,
        explora.local_crop_size,
        explora.local_crops_number,
        explora.head_prototypes,
        explora.grad_checkpointing,
    ) == (64, 256, 112, 8, 65536, True)
    assert params.model.head_type == "doran" and params.train.lr == 3e-4 and params.train.batch_size == 64
    assert params.train.precision == "bf16" and params.train.processes == 2
    assert (params.predict.multiview_topk, params.predict.multiview_overlap) == (3, 0.2)
    assert params.split.ratios.model_dump() == {"train": 0.6, "val_select": 0.15, "val_calib": 0.15, "val_test": 0.1}
    augment = params.train.augment
    assert (augment.hflip, augment.color_jitter, augment.mixup_alpha, augment.cutmix_alpha) == (0.5, 0.4, 0.2, 1.0)
    assert (augment.rotation_degrees, augment.brightness, augment.contrast, augment.gaussian_blur_prob) == (
        15,
        0.2,
        0.2,
        0.1,
    )
    assert augment.auto_augment
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    assert "--nproc_per_node=2" in launch_command("roadwork.stages.train_phase1", params.train.processes)


def test_apply_rewrites_params_keeping_comments_and_other_keys(tmp_path):
    params = tmp_path / "params.yaml"
    shutil.copy(REPO / "params.yaml", params)
    apply(REPO / "presets" / "real.yaml", params)
    text = params.read_text()
    assert "# The single source of configuration" in text
    data = yaml.safe_load(text)
    assert data["model"]["backbone"] == "vit_huge_plus_patch16_dinov3"
    untouched = yaml.safe_load((REPO / "params.yaml").read_text())["dedup"]
    assert data["dedup"] == {**untouched, "max_hamming": 12}  # the preset sets one dedup key, the rest stay
    assert data["data"]["limit"] is None


def test_open_mappings_are_replaced_and_sections_merged(tmp_path):
    params = tmp_path / "params.yaml"
    shutil.copy(REPO / "params.yaml", params)
    preset = tmp_path / "p.yaml"
    preset.write_text("model: {overrides: {depth: 2}}\ndata: {local: {class_folders: {works: 1, clear: 0}}}\n")
    resolved = resolve(preset, params)
    assert resolved.model.overrides == {"depth": 2}  # not merged into params.yaml's overrides
    assert resolved.data.local.class_folders == {"works": 1, "clear": 0}
    assert resolved.model.img_size == 64 and resolved.data.local.path == "inputs"  # sections keep the rest
    apply(preset, params)
    assert yaml.safe_load(params.read_text())["model"]["overrides"] == {"depth": 2}


def test_invalid_preset_fails_before_writing(tmp_path):
    params = tmp_path / "params.yaml"
    shutil.copy(REPO / "params.yaml", params)
    before = params.read_bytes()
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: {precison: bf16}\n")
    with pytest.raises(ConfigError, match="train.precison"):
        apply(bad, params)
    assert params.read_bytes() == before

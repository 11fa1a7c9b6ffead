"""The rehearsal (issue 12): presets/rehearsal*.yaml keep the real preset's model, head, precision,
image size, augmentations and ExPLoRA settings; the CI-sized one runs every stage end to end
through benchmarks/rehearsal.py (slow)."""

import math
import shutil
from pathlib import Path

import pytest
import yaml
from kit.repo import REPO, load_script

from roadwork.config import parse_params
from roadwork.presets import load_preset, merge, resolve

REAL = REPO / "presets" / "real.yaml"
REHEARSALS = [REPO / "presets" / "rehearsal.yaml", REPO / "presets" / "rehearsal_ci.yaml"]
# what the rehearsal must not change (the model the real run trains and how it trains it)
EXPLORA_KEPT = (
    "lora_rank",
    "unfrozen_blocks",
    "global_crop_size",
    "local_crops_number",
    "local_crop_size",
    "head_prototypes",
    "head_hidden_dim",
    "head_bottleneck_dim",
    "ibot_weight",
    "koleo_weight",
    "grad_checkpointing",
)


def real_then(preset: Path, tmp_path: Path):
    params = tmp_path / "params.yaml"
    shutil.copy(REPO / "params.yaml", params)
    base = resolve(REAL, params)
    raw = merge(merge(yaml.safe_load(params.read_text()), load_preset(REAL)), load_preset(preset))
    return base, parse_params(raw, str(preset))


@pytest.mark.parametrize("preset", REHEARSALS, ids=lambda p: p.stem)
def test_rehearsal_keeps_the_real_model_and_training(preset, tmp_path):
    real, rehearsal = real_then(preset, tmp_path)
    assert rehearsal.model.model_copy(update={"pretrained": "x", "backbone": "x"}) == real.model.model_copy(
        update={"pretrained": "x", "backbone": "x"}
    )
    assert rehearsal.model.overrides == {} and rehearsal.model.head_type == "doran"
    assert rehearsal.model.backbone == (
        real.model.backbone if preset.stem == "rehearsal" else "vit_base_patch16_dinov3"
    )
    assert rehearsal.model.pretrained == "none"
    assert rehearsal.train.precision == "bf16" and rehearsal.train.augment == real.train.augment
    for key in EXPLORA_KEPT:
        assert getattr(rehearsal.explora, key) == getattr(real.explora, key), key
    assert rehearsal.export.onnx is True
    assert rehearsal.data.source == "synthetic" and rehearsal.train.processes == 1
    assert rehearsal.train.batch_size // rehearsal.train.grad_accum_steps <= 2


@pytest.mark.slow
def test_ci_rehearsal_runs_every_stage_and_loads_the_bundle(tmp_path):
    rehearsal = load_script(REPO / "benchmarks" / "rehearsal.py")
    logs = tmp_path / "logs"
    logs.mkdir()
    report = rehearsal.rehearse(REPO / "presets/rehearsal_ci.yaml", REAL, tmp_path, logs)
    assert "failed" not in report, (report.get("failed"), report["stages"])
    assert list(report["stages"]) == rehearsal.STAGES
    for stage, row in report["stages"].items():
        assert row["rc"] == 0 and row["peak_rss_gib"] > 0, (stage, row)
    # ViT-B/16 (86M parameters) in fp32 safetensors: the bundle's largest file is the weights
    assert 0.3 < report["sizes"]["data/bundle"]["gb"] < 2.0, report["sizes"]
    onnx = report["onnx"]
    assert onnx["max_abs_logit_diff"] <= onnx["tolerance"]
    for kind in ("predictor", "detector"):
        row = report[kind]
        assert row["rc"] == 0, Path(row["log"]).read_text()[-3000:]
        assert len(row["answers"]) == 2 and all(0 <= a <= 1 for a in row["answers"])
        assert math.isfinite(row["load_s"])
    print(rehearsal.table(report))

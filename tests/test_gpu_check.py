"""benchmarks/gpu_check.py (issue 12): its CPU-sized run goes through the same code paths as the GPU
run and reports finite numbers, and the settings it derives from presets/real.yaml are the real ones."""

import json
import math
import os
import subprocess
import sys

import pytest
from kit.repo import REPO, load_script

SCRIPT = REPO / "benchmarks" / "gpu_check.py"
RESULT_SECTIONS = ("device", "phase1", "explora", "detector_latency")
# Reported as null on the CPU, and only these: no bf16 peak (so no MFU), no card memory.
NOT_APPLICABLE_ON_CPU = {
    ("device", "peak_bf16_tflops"),
    ("device", "memory_gib"),
    ("phase1", "mfu"),
    ("explora", "mfu"),
}


def numeric_leaves(obj, path=()):
    """(path, value) of every number or null in a JSON document (booleans and strings excluded)."""
    if isinstance(obj, dict):
        for key, value in obj.items():
            yield from numeric_leaves(value, path + (key,))
    elif isinstance(obj, list):
        for index, value in enumerate(obj):
            yield from numeric_leaves(value, path + (index,))
    elif obj is None or (isinstance(obj, (int, float)) and not isinstance(obj, bool)):
        yield path, obj


@pytest.mark.slow
def test_tiny_cpu_run_reports_finite_numbers_and_overfits_the_fixed_batch(tmp_path):
    out = tmp_path / "gpu_check.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO / "src"), os.environ.get("PYTHONPATH")]))}
    result = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--device",
            "cpu",
            "--tiny",
            "--steps",
            "3",
            "--latency-repeats",
            "2",
            "--json",
            str(out),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(out.read_text())

    leaves = [
        (path, value) for section in RESULT_SECTIONS for path, value in numeric_leaves(report[section], (section,))
    ]
    assert {path[:2] for path, value in leaves if value is None} == NOT_APPLICABLE_ON_CPU
    not_finite = [path for path, value in leaves if value is not None and not math.isfinite(value)]
    assert not not_finite
    for phase in ("phase1", "explora"):
        r = report[phase]
        assert r["loss_finite"] and len(r["losses"]) == 4  # the FLOP-counted warm-up update + 3 timed ones
        assert r["updates_timed"] == 3
        for key in (
            "images_per_s",
            "tflop_per_update",
            "tflops_per_s",
            "peak_memory_gib",
            "estimate_gib",
            "estimate_static_gib",
            "estimate_activations_gib",
        ):
            assert r[key] > 0, (phase, key)
    phase1 = report["phase1"]
    assert phase1["loss_decreased"] and phase1["eval_loss_after"] < phase1["eval_loss_before"]
    assert phase1["images_per_update"] == 8 and report["explora"]["images_per_update"] == 4  # --tiny's batches
    latency = report["detector_latency"]["seconds_per_query"]
    assert set(latency) == {"1", "5"} and all(v > 0 for v in latency.values())  # predict.multiview_grid 2
    for label in ("images/s", "achieved TFLOP/s", "MFU", "peak memory GiB", "estimate GiB", "detector latency"):
        assert label in result.stdout


def test_settings_are_the_real_preset_at_real_size():
    gpu_check = load_script(SCRIPT)
    params, notes = gpu_check.check_params(REPO / "presets" / "real.yaml", REPO / "params.yaml", False, 1.0)
    model = params.model
    assert (model.backbone, model.img_size, model.head_type, model.pooling) == (
        "vit_huge_plus_patch16_dinov3",
        224,
        "doran",
        "token",
    )
    assert dict(model.overrides) == {"init_values": 1.0}  # full width and depth; only the LayerScale start
    assert model.pretrained == "none"
    train = params.train
    assert (
        train.precision,
        train.lr,
        train.backbone_lr,
        train.batch_size,
        train.grad_accum_steps,
        train.processes,
    ) == ("bf16", 3e-4, 3e-5, 64, 2, 2)
    for key, value in gpu_check.PAPER_SCALE_EXPLORA.items():
        assert getattr(params.explora, key) == value, key
    assert any("random initial weights" in note for note in notes)


def test_peak_table_matches_specific_names_first():
    peak = load_script(SCRIPT).peak_bf16_tflops
    assert peak("NVIDIA H200") == 989.0
    assert peak("NVIDIA H100 80GB HBM3") == 989.0
    assert peak("NVIDIA H100 NVL") == 835.0 and peak("NVIDIA H100 PCIe") == 756.0
    assert peak("NVIDIA A100-SXM4-80GB") == 312.0 and peak("NVIDIA A10") == 125.0
    assert peak("NVIDIA L40S") == 362.0 and peak("NVIDIA L4") == 121.0
    assert peak("NVIDIA RTX A6000") == 155.0 and peak("NVIDIA GeForce RTX 4090") == 165.0
    assert peak("Tesla T4") is None

"""Every key in params.yaml changes behaviour.

The plan's first implementation had whole config groups that no code read. Here each leaf key
of params.yaml has a probe: a function of the validated params that runs the real code the key
should affect and returns an observable. The test changes the key and asserts the observable
changes. A key with no probe fails `test_every_key_has_a_probe`, so a new key cannot be added
without showing what it does.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import yaml
from kit.images import jpeg_bytes
from kit.repo import REPO, merge
from kit.train import make_dataset
from PIL import Image

from roadwork.config import parse_params

PARAMS = yaml.safe_load((REPO / "params.yaml").read_text())


def leaf_keys(tree: dict, prefix: str = "") -> list[str]:
    keys = []
    for key, value in tree.items():
        path = f"{prefix}{key}"
        # mappings whose keys are data (not schema) are one key: ratios, overrides, class folders
        if isinstance(value, dict) and path not in ("model.overrides", "data.local.class_folders", "split.ratios"):
            keys += leaf_keys(value, path + ".")
        else:
            keys.append(path)
    return keys


def patch(path: str, value) -> dict:
    out: dict = {}
    node = out
    parts = path.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return out


def digest(obj) -> str:
    if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        obj = {k: v.detach().numpy().tobytes().hex() for k, v in obj.items()}
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=repr).encode()).hexdigest()


# ------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("params_used")
    make_dataset(root, n=48)
    folder = root / "local"
    for name, label in (("none", 0), ("roadwork", 1), ("1", 1)):
        (folder / name).mkdir(parents=True)
        for i in range(3):
            image = Image.new("RGB", (24, 20), (40 * i + 60 * label, 90, 30 * i))
            image.save(folder / name / f"{i}.jpg", quality=90)
    (root / "other_local" / "none").mkdir(parents=True)
    Image.new("RGB", (24, 20), (1, 2, 3)).save(root / "other_local" / "none" / "x.jpg")
    return root


# -------------------------------------------------------------------------------------- probes
def probe_ingest(params, ws):
    from roadwork.data.ingest import ingest

    out = ws / "raw_probe"
    summary = ingest(params.data, out)
    return summary, (out / "manifest.csv").read_bytes(), (out / "label_conflicts.csv").read_bytes()


def probe_synthetic(params, ws):
    from roadwork.data.synthetic import generate

    return [hashlib.sha256(item.data).hexdigest() + item.kind for item in generate(params.data.synthetic)]


def natix_cache(root: Path) -> Path:
    cache = root / "hub"
    if cache.exists():
        return cache
    for repo_id, rows in (("natix-network-org/roadwork", 4), ("someone/roadwork-fork", 2)):
        repo = cache / f"datasets--{repo_id.replace('/', '--')}"
        for revision in ("a" * 40, "b" * 40):
            shard = repo / "snapshots" / revision / "data" / "train.parquet"
            shard.parent.mkdir(parents=True)
            image_type = pa.struct([("bytes", pa.binary())])
            n = rows + (revision == "b" * 40)
            pq.write_table(
                pa.table(
                    {
                        "image": pa.array([{"bytes": jpeg_bytes(i)} for i in range(n)], type=image_type),
                        "label": pa.array([i % 2 for i in range(n)], type=pa.int64()),
                        "scene_description": ["cones" if i % 2 else ("stray text" if i == 0 else "") for i in range(n)],
                    }
                ),
                shard,
            )
    return cache


def probe_natix(params, ws):
    """The natix source through huggingface_hub's offline cache, in a subprocess (hub constants
    are read at import time)."""
    cache = natix_cache(ws)
    run_dir = ws / f"natix_{digest(params.data.natix.model_dump())[:8]}"
    run_dir.mkdir(exist_ok=True)
    raw = {"data": {**params.data.model_dump(), "source": "natix"}}
    (run_dir / "params.yaml").write_text(yaml.safe_dump(raw))
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(cache))
    result = subprocess.run(
        [sys.executable, "-m", "roadwork.stages.download"], cwd=run_dir, env=env, capture_output=True, text=True
    )
    if result.returncode:
        return "failed: " + result.stderr.strip().splitlines()[-1]
    return (run_dir / "data" / "raw" / "manifest.csv").read_text(), (run_dir / "metrics" / "download.json").read_text()


def dedup_records():
    base = [0x0F0F0F0F0F0F0F0F, 0x00FF00FF00FF00FF, 0x123456789ABCDEF0, 0xFFFF0000FFFF0000]
    records = []
    for i, value in enumerate(base):
        records.append(
            {"id": f"r{i}a", "file_sha256": f"f{i}a", "pixel_sha256": f"p{i}a", "phash": value, "label": i % 2}
        )
        records.append(
            {
                "id": f"r{i}b",
                "file_sha256": f"f{i}b",
                "pixel_sha256": f"p{i}b",
                "phash": value ^ (0b111 << i * 3),
                "label": (i % 2) if i else 1,
            }
        )
    records.append({"id": "r0c", "file_sha256": "f0c", "pixel_sha256": "p0c", "phash": base[0] ^ 1, "label": 0})
    return records


def probe_dedup(params, ws):
    from roadwork.data.dedup import deduplicate

    d = params.dedup
    result = deduplicate(dedup_records(), d.max_hamming, d.label_conflict, d.near_duplicates)
    return [(k.id, k.label, k.cluster) for k in result.kept]


def probe_dedup_warning(params, ws):
    from roadwork.data.dedup import conflict_warnings, deduplicate

    d = params.dedup
    result = deduplicate(dedup_records(), d.max_hamming, d.label_conflict, d.near_duplicates)
    return conflict_warnings(result.counts, d.max_conflict_share)


def probe_split(params, ws):
    from roadwork.data.split import assign_splits

    records = [{"id": f"i{i:03d}", "label": int(i % 5 == 0), "cluster": f"c{i // 2}"} for i in range(200)]
    return assign_splits(records, params.split.ratios.model_dump(), params.split.seed)


def probe_model(params, ws):
    from roadwork.models.backbone import apply_freeze_policy
    from roadwork.models.classifier import build_model

    torch.manual_seed(0)
    model = build_model(params.model)
    counts = apply_freeze_policy(model.backbone, params.model.freeze, params.model.freeze_last_n)
    x = torch.randn(2, 3, params.model.img_size, params.model.img_size, generator=torch.Generator().manual_seed(1))
    model.train()
    torch.manual_seed(2)
    train_out = model(x).detach()
    return counts, type(model.backbone).__name__, model.eval()(x).detach().tolist(), train_out.tolist()


def probe_training(params, ws):
    """A real (tiny) phase-1 run in-process; the observable is the weights and the history."""
    from roadwork.models.classifier import build_model
    from roadwork.train.distributed import Dist, seed_everything
    from roadwork.train.fit import fit

    run_dir = ws / "runs" / digest(params.model_dump())[:12]
    seed_everything(params.train.seed)
    model = build_model(params.model)
    cwd = os.getcwd()
    os.chdir(ws)
    try:
        metrics = fit(
            params,
            model,
            ws / "data" / "raw",
            ws / "data" / "split" / "splits.csv",
            run_dir / "out",
            run_dir / "ckpt",
            Dist(0, 1, torch.device("cpu")),
        )
    finally:
        os.chdir(cwd)
    return metrics, digest(model.state_dict())


def probe_augment(params, ws):
    from roadwork.train.augment import build_mixup, train_transform

    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8))
    transform = train_transform(params.train.augment, 32, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    torch.manual_seed(0)
    np.random.seed(0)
    import random

    random.seed(0)
    outputs = [transform(image) for _ in range(8)]
    mixup = build_mixup(params.train.augment, params.train.label_smoothing)
    mixed = None
    if mixup is not None:
        np.random.seed(0)
        mixed = mixup(torch.stack(outputs), torch.tensor([0, 1] * 4))[1].tolist()
    return digest([o.numpy().tobytes().hex() for o in outputs]), mixed


def probe_loader(params):
    """num_workers changes the loader, not the numbers (augmentation is seeded per item)."""
    from roadwork.train.data import EpochSampler
    from roadwork.train.supervised import train_loader

    loader = train_loader(list(range(8)), EpochSampler(np.array([0, 1] * 4), 0, False), 2, params.train.num_workers)
    return loader.num_workers, loader.persistent_workers


def probe_launch(params, ws):
    from roadwork.train.distributed import launch_command

    return launch_command("roadwork.stages.train_phase1", params.train.processes)


def probe_threshold(params, ws):
    from roadwork.evaluate.threshold import choose_threshold
    from roadwork.io import write_csv

    rng = np.random.default_rng(0)
    rows = []
    for split in ("val_select", "val_test"):
        labels = (rng.random(300) < 0.2).astype(int)
        logits = rng.normal(labels * 1.5, 1.0)
        rows += [
            {"split": split, "id": str(i), "label": int(y), "logit": float(z)}
            for i, (y, z) in enumerate(zip(labels, logits))
        ]
    path = ws / "probe_logits.csv"
    write_csv(path, rows, ["split", "id", "label", "logit"])
    report = choose_threshold(path, params.threshold.target_prior)
    report.pop("_curve")
    return report


TINY_DATA = {
    "synthetic": {
        "count": 12,
        "width": 32,
        "height": 32,
        "exact_duplicates": 1,
        "pixel_duplicates": 1,
        "near_duplicates": 2,
        "broken_files": 1,
    }
}
TINY_MODEL = {"overrides": {"embed_dim": 32, "depth": 2, "num_heads": 2}, "img_size": 32}
TINY_TRAIN = {
    "epochs": 2,
    "batch_size": 8,
    "num_workers": 0,
    "warmup_epochs": 1,
    "augment": {"mode": "standard", "auto_augment": None},
}

FLIP = object()  # new value = the opposite of the boolean's current value
# key -> (probe, new value, base patch applied before both runs)
PROBES = {
    "data.source": (probe_ingest, "local", {"data": {"local": {"path": "{ws}/local"}}}),
    "data.limit": (probe_ingest, 5, {}),
    "data.max_pixels": (probe_ingest, 1000, {}),
    "data.local.path": (
        probe_ingest,
        "{ws}/other_local",
        {"data": {"source": "local", "local": {"path": "{ws}/local"}}},
    ),
    "data.local.class_folders": (
        probe_ingest,
        {"none": 0, "roadwork": 1, "1": 0},
        {"data": {"source": "local", "local": {"path": "{ws}/local"}}},
    ),
    "data.natix.repo_id": (probe_natix, "someone/roadwork-fork", {"data": {"natix": {"revision": "a" * 40}}}),
    "data.natix.revision": (probe_natix, "b" * 40, {"data": {"natix": {"revision": "a" * 40}}}),
    "data.natix.label_text_conflict": (probe_natix, "keep", {"data": {"natix": {"revision": "a" * 40}}}),
    **{
        f"data.synthetic.{key}": (probe_synthetic, value, {})
        for key, value in {
            "count": 13,
            "width": 40,
            "height": 40,
            "positive_fraction": 0.6,
            "jpeg_quality": 60,
            "exact_duplicates": 2,
            "pixel_duplicates": 2,
            "near_duplicates": 3,
            "broken_files": 2,
            "seed": 1,
        }.items()
    },
    "dedup.max_hamming": (probe_dedup, 1, {}),
    "dedup.label_conflict": (probe_dedup, "majority", {}),
    "dedup.near_duplicates": (probe_dedup, "drop", {}),
    "dedup.max_conflict_share": (probe_dedup_warning, 0.5, {}),
    "split.ratios": (probe_split, {"train": 0.5, "val_select": 0.2, "val_calib": 0.2, "val_test": 0.1}, {}),
    "split.seed": (probe_split, 1, {}),
    "model.backbone": (probe_model, "vit_small_patch16_dinov3_qkvb", {}),
    "model.overrides": (probe_model, {"embed_dim": 48, "depth": 2, "num_heads": 2}, {}),
    "model.pretrained": (probe_model, "{ws}/weights.safetensors", {}),
    "model.pooling": (probe_model, "avg", {}),
    "model.img_size": (probe_model, 48, {}),
    "model.freeze": (probe_model, "frozen", {}),
    "model.freeze_last_n": (probe_model, 1, {"model": {"freeze": "last_n"}}),
    "model.head_type": (probe_model, "doran", {}),
    "model.head.rank": (probe_model, 2, {"model": {"head_type": "doran"}}),
    "model.head.hidden": (probe_model, 8, {"model": {"head_type": "doran"}}),
    "model.head.noise_std": (probe_model, 0.5, {"model": {"head_type": "doran"}}),
    "model.head.dropout": (probe_model, 0.5, {}),
    "train.processes": (probe_launch, 2, {"train": {"batch_size": 8}}),
    "threshold.target_prior": (probe_threshold, 0.2, {}),
    **{
        f"train.augment.{key}": (probe_augment, value, base)
        for key, (value, base) in {
            "mode": ("none", {}),
            "scale": ([0.2, 0.3], {}),
            "hflip": (1.0, {}),
            "color_jitter": (0.8, {}),
            "brightness": (0.0, {}),
            "contrast": (0.0, {}),
            "auto_augment": ("rand-m9-mstd0.5", {}),
            "rotation_degrees": (30.0, {}),
            "gaussian_blur_prob": (1.0, {}),
            "mixup_alpha": (0.4, {"train": {"augment": {"mixup_alpha": 0.2}}}),
            "cutmix_alpha": (1.0, {"train": {"augment": {"mixup_alpha": 0.2}}}),
            "mix_prob": (0.5, {"train": {"augment": {"mixup_alpha": 0.2}}}),
            "validator_levels": ([0], {"train": {"augment": {"mode": "validator"}}}),
        }.items()
    },
    **{
        f"train.{key}": (probe_training, value, base)
        for key, (value, base) in {
            "epochs": (3, {}),
            "batch_size": (16, {}),
            "grad_accum_steps": (2, {}),
            "lr": (1e-2, {}),
            "backbone_lr": (1e-2, {}),
            "weight_decay": (0.5, {"train": {"lr": 1e-2, "backbone_lr": 1e-2}}),
            "warmup_epochs": (0, {}),
            "min_lr": (1e-3, {}),
            "clip_grad": (1e-3, {}),
            "label_smoothing": (0.3, {}),
            "early_stopping_patience": (1, {"train": {"epochs": 4}}),
            "precision": ("bf16", {}),
            "balanced_sampler": (FLIP, {}),
            "feature_cache": (True, {"model": {"freeze": "frozen"}}),
            "seed": (1, {}),
        }.items()
    },
    "train.num_workers": (lambda params, ws: probe_loader(params), 1, {}),
}
EXPLORA_SSL_KEYS = [k for k in PARAMS["explora"] if k not in ("init", "adapter", "adapter_rank", "extra_unlabeled")]
# Keys whose effect is shown by a dedicated test elsewhere ("file::function"; it must exist).
TESTED_ELSEWHERE: dict[str, str] = {
    "calibrate.model": "test_calibrate.py::test_best_ships_phase4_only_when_distinguishably_better",
    "calibrate.bootstrap": "test_calibrate.py::test_bootstrap_and_seed_set_the_selection_interval",
    "calibrate.seed": "test_calibrate.py::test_bootstrap_and_seed_set_the_selection_interval",
    "calibrate.n_bins": "test_calibrate.py::test_n_bins_sets_the_bins_of_every_ece_and_the_diagram",
    **{
        f"export.{key}": "test_protocol.py::test_export_stage_builds_the_bundle_and_decides_views_on_val_select"
        for key in ("model_name", "version", "submitted_by", "onnx")
    },
    **{
        f"export.{key}": "test_protocol.py::test_evaluate_stage_end_to_end"
        for key in ("bootstrap", "protocol_seed", "protocol_draws", "latency_budget_s")
    },
    "data.local.allow_outside_root": "test_local_source.py::test_symlinks_leaving_the_root_are_refused_unless_allowed",
    "data.max_file_bytes": "test_local_source.py::test_quarantine_keeps_bytes_only_of_image_like_files_within_the_cap",
    **{f"explora.{key}": "test_explora.py::test_every_ssl_key_changes_the_run" for key in EXPLORA_SSL_KEYS},
    "explora.init": "test_explora.py::test_init_phase1_and_finetuning_adapters",
    "explora.adapter": "test_explora.py::test_init_phase1_and_finetuning_adapters",
    "explora.adapter_rank": "test_explora.py::test_init_phase1_and_finetuning_adapters",
    "explora.extra_unlabeled": "test_explora.py::test_ssl_loader_never_reads_val_or_test_images",
    **{
        f"predict.{key}": "test_predict.py::test_each_predict_param_changes_the_multiview_output"
        for key in ("multiview_overlap", "multiview_topk", "multiview_grid", "flip_tta")
    },
    # the synthesize section (tests/test_synthesize.py draws with tiny random-weight models)
    **{
        f"synthesize.{key}": "test_synthesize.py::test_plan_is_seeded_and_independent_of_row_order"
        for key in ("splits", "sources_per_label", "kinds", "seed")
    },
    "synthesize.strength": "test_synthesize.py::test_changed_params_redraw_and_damage_is_redrawn",
    **{
        f"synthesize.{key}": "test_synthesize.py::test_hub_loader_reads_saved_models_by_id"
        for key in (
            "backend",
            "diffusion_variant",
            *(f"{model}_model.{part}" for model in ("caption", "rewrite", "diffusion") for part in ("id", "revision")),
        )
    },
    **{
        f"synthesize.{key}": "test_synthesize_stage.py::test_each_generation_key_changes_what_is_drawn"
        for key in (
            "guidance_scale",
            "num_inference_steps",
            "negative_prompt_t2i",
            "negative_prompt_i2i",
            "t2i_width",
            "t2i_height",
            "i2i_max_width",
            "i2i_max_height",
            "caption_max_new_tokens",
            "rewrite_max_new_tokens",
            "instruction_roadwork",
            "instruction_clear",
        )
    },
    # no effect a CPU test can show: dtype applies on a GPU only, i2i_resample has one allowed value, empty_caption
    # replaces an empty BLIP-2 caption (a random-weight captioner does not give one on demand); the values are
    # checked against the validators' code by this test
    **{
        f"synthesize.{key}": "test_synthesize.py::test_defaults_are_the_validators_values"
        for key in ("dtype", "i2i_resample", "empty_caption")
    },
    **{
        f"synthesize.{key}": "test_synthesize_stage.py::test_the_mix_weights_each_kind_to_its_share"
        for key in ("fake_prob", "i2i_share")
    },
    "train.synthetic_share": "test_synthesize_stage.py::test_training_mixes_in_train_children_only",
}


def resolve(value, ws):
    if isinstance(value, str):
        return value.replace("{ws}", str(ws))
    if isinstance(value, dict):
        return {k: resolve(v, ws) for k, v in value.items()}
    return value


def test_every_key_has_a_probe():
    missing = [key for key in leaf_keys(PARAMS) if key not in PROBES and key not in TESTED_ELSEWHERE]
    assert not missing, f"params.yaml keys that no test shows to change behaviour: {missing}"
    for key, where in TESTED_ELSEWHERE.items():
        file, function = where.split("::")
        assert f"def {function}(" in (Path(__file__).parent / file).read_text(), f"{key}: {where} does not exist"


@pytest.mark.parametrize("key", sorted(PROBES))
def test_changing_the_key_changes_behaviour(key, workspace):
    if key not in leaf_keys(PARAMS):
        pytest.fail(f"{key} has a probe but is not in params.yaml any more: remove the probe")
    probe, new_value, base_patch = PROBES[key]
    tiny = {"data": TINY_DATA, "model": TINY_MODEL, "train": TINY_TRAIN}
    base = merge(merge(PARAMS, tiny), resolve(base_patch, workspace))
    if key == "model.pretrained":
        save_weights(base, workspace / "weights.safetensors")
    if new_value is FLIP:
        node = base
        for part in key.split("."):
            node = node[part]
        new_value = not node
    before = probe(parse_params(base), workspace)
    after = probe(parse_params(merge(base, patch(key, resolve(new_value, workspace)))), workspace)
    assert digest(before) != digest(after), f"changing {key} to {new_value!r} changed nothing"


def save_weights(raw: dict, path: Path):
    """Weights for `model.pretrained`: the tiny backbone, randomly initialised with another seed."""
    import timm
    from safetensors.torch import save_file

    model = raw["model"]
    torch.manual_seed(123)
    backbone = timm.create_model(model["backbone"], num_classes=0, img_size=model["img_size"], **model["overrides"])
    save_file(backbone.state_dict(), path)

"""Phase 4 (ExPLoRA): DINO loss pieces, one SSL step, iBOT/KoLeo, the unlabeled loader never reading
val/test images, resume, every explora key changing behaviour, and the stage end to end."""

from __future__ import annotations

import io
import logging
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F
from kit.train import TINY_MODEL, TINY_TRAIN, make_dataset, write_params
from PIL import Image
from safetensors.torch import load_file

from roadwork.config import ExploraParams, TrainParams, parse_params
from roadwork.data.examples import load_split
from roadwork.io import read_csv, read_json
from roadwork.models.backbone import create_backbone
from roadwork.train.data import ImageCache, ImageDataset
from roadwork.train.dino_loss import dino_loss, ibot_loss, koleo_loss, teacher_softmax, updated_center
from roadwork.train.distributed import Dist
from roadwork.train.multicrop import MultiCropTransform, make_masks
from roadwork.train.ssl import SSLTrainer, pretrain, teacher_momentum, teacher_temperature, unlabeled_examples
from roadwork.train.student_teacher import ExploraSSL

CPU = Dist(0, 1, torch.device("cpu"))
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
# LayerScale starts at 1e-5 in DINOv3: a random tiny model would give every image the same CLS
# embedding; init_values=1 makes the unit tests sensitive (as in test_models.py).
TINY = {"embed_dim": 32, "depth": 3, "num_heads": 2, "init_values": 1.0}
SMALL_SSL = dict(
    batch_size=8,
    global_crop_size=32,
    local_crop_size=16,
    local_crops_number=2,
    head_prototypes=32,
    head_hidden_dim=16,
    head_bottleneck_dim=8,
    warmup_epochs=0,
    freeze_last_layer_epochs=0,
    lora_rank=4,
    clip_grad=None,
)


def tiny_backbone(seed: int = 0):
    torch.manual_seed(seed)
    return create_backbone("vit_small_patch16_dinov3", None, TINY, "token", 32)


def tiny_ssl(seed: int = 0, **cfg) -> ExploraSSL:
    backbone = tiny_backbone(seed)
    torch.manual_seed(seed + 1)
    return ExploraSSL(backbone, ExploraParams(**{**SMALL_SSL, **cfg}))


def random_views(cfg: ExploraParams, batch: int = 4, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    size = [cfg.global_crop_size] * 2 + [cfg.local_crop_size] * cfg.local_crops_number
    return [torch.randn(batch, 3, s, s, generator=g) for s in size]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models on a shared 2-core machine: one intra-op thread is 10x faster than two
    contending ones (and the numbers do not depend on it)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("explora_dataset")
    make_dataset(root)
    return root


def split_sha(root: Path) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for row in read_csv(root / "data" / "split" / "splits.csv"):
        out.setdefault(row["split"], set()).add(row["sha256"])
    return out


# --------------------------------------------------------------------------- DINO loss pieces
def test_center_update_and_sharpening():
    torch.manual_seed(0)
    center, logits = torch.randn(1, 6), torch.randn(5, 6)
    expected = center * 0.9 + logits.mean(0, keepdim=True) * 0.1
    torch.testing.assert_close(updated_center(center, logits, 0.9), expected)
    assert torch.equal(updated_center(center, logits, 0.0), logits.mean(0, keepdim=True) * 1.0)

    probs = teacher_softmax(logits, center, 0.07)
    torch.testing.assert_close(probs, torch.softmax((logits - center) / 0.07, dim=-1))
    entropy = lambda p: torch.special.entr(p).sum(-1).mean().item()  # noqa: E731
    temps = [1.0, 0.2, 0.07, 0.04]
    entropies = [entropy(teacher_softmax(logits, center, t)) for t in temps]
    assert all(a > b for a, b in zip(entropies, entropies[1:])), entropies  # lower temperature, sharper
    # centering: a constant shift of every logit does nothing; the centre removes a shared bias
    biased = logits + torch.tensor([[5.0, 0, 0, 0, 0, 0]])
    torch.testing.assert_close(
        teacher_softmax(biased, torch.tensor([[5.0, 0, 0, 0, 0, 0]]), 0.1),
        teacher_softmax(logits, torch.zeros(1, 6), 0.1),
    )


def test_dino_loss_equals_the_formula():
    torch.manual_seed(0)
    s_g1, s_g2, s_l = (torch.randn(3, 4) for _ in range(3))
    t_g1, t_g2 = (torch.softmax(torch.randn(3, 4), -1) for _ in range(2))
    tau = 0.1

    def h(t, s):  # cross-entropy of teacher probs t against student logits s, mean over the batch
        return float(
            np.mean(
                [
                    -sum(
                        t[i, k] * math.log(math.exp(s[i, k] / tau) / sum(math.exp(v / tau) for v in s[i]))
                        for k in range(4)
                    )
                    for i in range(3)
                ]
            )
        )

    t_g1, t_g2, s_g1, s_g2, s_l = (x.double() for x in (t_g1, t_g2, s_g1, s_g2, s_l))
    expected = (h(t_g2, s_g1) + h(t_g1, s_g2) + h(t_g1, s_l) + h(t_g2, s_l)) / 4  # no same-view pairs
    got = dino_loss([s_g1.float(), s_g2.float(), s_l.float()], [t_g1.float(), t_g2.float()], tau)
    assert got.item() == pytest.approx(expected, rel=1e-5)


def test_schedules():
    assert teacher_momentum(0, 100, 0.992) == pytest.approx(0.992)
    assert teacher_momentum(100, 100, 0.992) == pytest.approx(1.0)
    values = [teacher_momentum(s, 100, 0.992) for s in range(101)]
    assert all(a <= b for a, b in zip(values, values[1:]))
    assert teacher_momentum(50, 100, 0.992) == pytest.approx(0.996)  # cosine: halfway at the middle

    cfg = ExploraParams(teacher_temp=0.07, teacher_temp_warmup=0.04, teacher_temp_warmup_epochs=2, epochs=4)
    assert teacher_temperature(0, cfg) == pytest.approx(0.04)
    assert teacher_temperature(1, cfg) == pytest.approx(0.055)
    assert teacher_temperature(2, cfg) == teacher_temperature(3.5, cfg) == 0.07


def test_learning_rate_warms_up_then_cosine_to_min_lr_and_weight_decay_groups():
    """timm's scheduler in DINO's form: linear from min_lr to lr over the warm-up updates, then cosine
    from lr down to min_lr at the last epoch; the learning rate a step reports is the one it used."""
    ssl = tiny_ssl(lr=1e-3, min_lr=1e-5, warmup_epochs=1, epochs=3, weight_decay=0.04, ibot_weight=1.0)
    trainer = SSLTrainer(ssl, "fp32", CPU, updates_per_epoch=10)
    scheduler, optimizer = trainer.optimization.scheduler, trainer.optimization.optimizer
    lrs = []
    for step in range(31):
        scheduler.step_update(num_updates=step)
        lrs.append(optimizer.param_groups[0]["lr"])
    assert lrs[0] == pytest.approx(1e-5) and lrs[5] == pytest.approx(1e-5 + 0.5 * (1e-3 - 1e-5))
    assert lrs[10] == pytest.approx(1e-3) and lrs[20] == pytest.approx(1e-5 + (1e-3 - 1e-5) / 2)  # cosine's middle
    assert all(a < b for a, b in zip(lrs[:10], lrs[1:11])) and all(a > b for a, b in zip(lrs[10:30], lrs[11:31]))
    assert lrs[30] == pytest.approx(1e-5) and max(lrs) == pytest.approx(1e-3)
    with pytest.raises(ValueError, match="explora.warmup_epochs"):
        SSLTrainer(tiny_ssl(warmup_epochs=3, epochs=3), "fp32", CPU, updates_per_epoch=10)
    scheduler.step_update(num_updates=0)
    assert trainer.step([random_views(ssl.cfg)], step=0)["lr"] == pytest.approx(1e-5)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(lrs[1])  # set for the next update

    # no weight decay on norms, biases, LayerScale, tokens; every trainable parameter in one group
    decay = {id(p) for g in optimizer.param_groups if g["weight_decay"] == 0.04 for p in g["params"]}
    no_decay = {id(p) for g in optimizer.param_groups if g["weight_decay"] == 0.0 for p in g["params"]}
    names = {id(p): n for n, p in ssl.student.named_parameters()}
    assert decay | no_decay == {id(p) for p in ssl.student.parameters() if p.requires_grad} and not decay & no_decay
    for name in (
        "backbone.norm.weight",
        "backbone.blocks.2.attn.proj.bias",
        "backbone.blocks.2.gamma_1",
        "head.mlp.0.bias",
        "mask_token",
    ):
        assert id(dict(ssl.student.named_parameters())[name]) in no_decay, name
    assert {names[i] for i in decay} >= {
        "backbone.blocks.2.attn.qkv.weight",
        "backbone.blocks.0.attn.qkv.lora_A",
        "head.mlp.0.weight",
        "head.last_layer.weight",
    }


def test_koleo_and_ibot_formulas():
    x = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [-1.0, 0.2]])
    n = F.normalize(x, dim=-1).double().numpy()
    expected = []
    for i in range(4):
        dots = [n[i] @ n[j] if j != i else -np.inf for j in range(4)]
        j = int(np.argmax(dots))
        expected.append(-math.log(np.linalg.norm(n[i] - n[j] + 1e-8) + 1e-8))
    assert koleo_loss(x).item() == pytest.approx(float(np.mean(expected)), rel=1e-5)
    # spreading the points lowers it
    assert koleo_loss(torch.eye(4)).item() < koleo_loss(x).item()

    torch.manual_seed(0)
    masks = torch.tensor([[True, False, True], [False, False, False], [False, True, False]])
    s = torch.randn(3, 5)  # the 3 masked patches, in masks[masks] order
    t = torch.softmax(torch.randn(3, 5), -1)
    ce = -(t * F.log_softmax(s / 0.1, -1)).sum(-1)
    expected = ((ce[0] + ce[1]) / 2 + ce[2]) / 3  # mean per masked image, / number of views
    assert ibot_loss(s, t, masks, 0.1).item() == pytest.approx(expected.item(), rel=1e-6)

    torch.manual_seed(0)
    m = make_masks(8, 16, (0.25, 0.5), 0.5)
    per_image = m.sum(1)
    assert m.shape == (8, 16) and (per_image > 0).sum() == 4
    assert per_image[per_image > 0].min() >= 4 and per_image.max() <= 8


# --------------------------------------------------------------------------------- SSL steps
def test_one_step_frozen_bit_identical_trainable_moved_teacher_is_ema():
    ssl = tiny_ssl()
    trainer = SSLTrainer(ssl, "fp32", CPU, updates_per_epoch=4)
    student = dict(ssl.student.named_parameters())
    before = {n: p.detach().clone() for n, p in student.items()}
    _, teacher = ssl.ema_pairs()
    teacher_before = [t.detach().clone() for t in teacher]

    stats = trainer.step([random_views(ssl.cfg)], step=0)
    assert math.isfinite(stats["loss"]) and stats["teacher_momentum"] == pytest.approx(0.992)

    frozen = [n for n, p in student.items() if not p.requires_grad]
    assert "backbone.patch_embed.proj.weight" in frozen and "backbone.blocks.0.attn.qkv.base.weight" in frozen
    for name in frozen:
        assert torch.equal(student[name], before[name]), name
    for name in (
        "backbone.blocks.0.attn.qkv.lora_B",
        "backbone.blocks.1.attn.qkv.lora_B",
        "backbone.blocks.2.attn.qkv.weight",
        "backbone.blocks.2.mlp.fc1.weight",
        "backbone.norm.weight",
        "backbone.blocks.0.norm1.weight",
        "head.mlp.0.weight",
        "head.last_layer.weight",
    ):
        assert student[name].requires_grad and not torch.equal(student[name], before[name]), name

    m = stats["teacher_momentum"]
    names = ssl.ema_names
    _, teacher = ssl.ema_pairs()
    for name, t_old, t_new in zip(names, teacher_before, teacher):
        torch.testing.assert_close(t_new, m * t_old + (1 - m) * student[name].detach(), rtol=0, atol=1e-7)
        if not torch.equal(student[name], before[name]):
            assert not torch.equal(t_new, student[name]), name  # an average, not a copy
    teacher_params = dict(ssl.teacher.named_parameters(remove_duplicate=False))
    assert all(p.grad is None and not p.requires_grad for p in teacher_params.values())
    # frozen tensors are shared, not copied: same objects in student and teacher
    assert teacher_params["backbone.patch_embed.proj.weight"] is student["backbone.patch_embed.proj.weight"]
    assert teacher_params["backbone.blocks.0.attn.qkv.base.weight"] is student["backbone.blocks.0.attn.qkv.base.weight"]


def test_last_layer_frozen_for_the_first_epochs():
    ssl = tiny_ssl(freeze_last_layer_epochs=1)
    trainer = SSLTrainer(ssl, "fp32", CPU, updates_per_epoch=2)
    last = ssl.student.head.last_layer.weight
    for step in range(2):
        before = last.detach().clone()
        trainer.step([random_views(ssl.cfg, seed=step)], step)
        assert last.grad is None and torch.equal(last, before)
        assert ssl.student.head.mlp[0].weight.grad.abs().sum() > 0
    before = last.detach().clone()
    trainer.step([random_views(ssl.cfg, seed=2)], 2)
    assert last.grad is not None and last.grad.abs().sum() > 0 and not torch.equal(last, before)


def test_ibot_and_koleo_options_change_the_loss():
    def losses(**cfg):
        ssl = tiny_ssl(**cfg)
        torch.manual_seed(5)
        return ssl.losses(ssl.student, random_views(ssl.cfg), 0.05, CPU, "fp32")

    plain = losses()
    ibot = losses(ibot_weight=1.0, ibot_mask_probability=1.0)
    koleo = losses(koleo_weight=0.1)
    assert "ibot_loss" not in plain and "koleo_loss" not in plain
    assert plain["loss"].item() == pytest.approx(plain["dino_loss"].item())
    assert ibot["ibot_loss"].item() > 0
    assert ibot["loss"].item() == pytest.approx(ibot["dino_loss"].item() + ibot["ibot_loss"].item(), rel=1e-6)
    assert koleo["loss"].item() == pytest.approx(koleo["dino_loss"].item() + 0.1 * koleo["koleo_loss"].item(), rel=1e-6)
    assert len({round(x["loss"].item(), 6) for x in (plain, ibot, koleo)}) == 3
    # iBOT: the mask token reaches the student, and masking changes its CLS output
    ssl = tiny_ssl(ibot_weight=1.0, ibot_mask_probability=1.0)
    ssl.student.mask_token.data.normal_()
    views = random_views(ssl.cfg)
    masks = make_masks(8, 4, (0.5, 0.5), 1.0)
    masked = ssl.student(torch.cat(views[:2]), None, masks)
    unmasked = ssl.student(torch.cat(views[:2]))
    assert not torch.allclose(masked["cls"], unmasked["cls"]) and masked["patches"].shape == (int(masks.sum()), 32)


def test_collapse_monitors():
    ssl = tiny_ssl()
    out = ssl.losses(ssl.student, random_views(ssl.cfg), 0.07, CPU, "fp32")
    assert 0 < out["teacher_entropy"].item() <= out["teacher_batch_entropy"].item() <= math.log(32) + 1e-6
    assert out["embedding_std"].item() > 0
    views = random_views(ssl.cfg)
    one = views[0][:1].expand_as(views[0]).clone()  # one view repeated: what a collapsed backbone outputs
    same = [one, one.clone(), *views[2:]]
    assert ssl.losses(ssl.student, same, 0.07, CPU, "fp32")["embedding_std"].item() < 1e-6


@pytest.mark.parametrize("precision, dtype", [("fp32", torch.float32), ("bf16", torch.bfloat16)])
def test_precision_takes_effect(precision, dtype):
    ssl = tiny_ssl()
    seen = []
    ssl.student.backbone.blocks[-1].mlp.fc1.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    ssl.teacher["backbone"].blocks[-1].mlp.fc1.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    out = ssl.losses(ssl.student, random_views(ssl.cfg), 0.07, CPU, precision)
    assert seen and set(seen) == {dtype}
    assert out["loss"].dtype == torch.float32 and torch.isfinite(out["loss"])  # the loss itself in fp32


# --------------------------------------------------------------------------- unlabeled images
class RecordingCache(ImageCache):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.read: list[str] = []

    def get(self, example):
        self.read.append(example.sha256)
        return super().get(example)


def test_ssl_loader_never_reads_val_or_test_images(dataset, tmp_path):
    raw, splits = dataset / "data" / "raw", dataset / "data" / "split" / "splits.csv"
    by_split = split_sha(dataset)
    held_out = set().union(*(by_split[s] for s in ("val_select", "val_calib", "val_test")))
    manifest = {r["sha256"]: r for r in read_csv(raw / "manifest.csv")}
    val_test = sorted(by_split["val_test"])[0]
    val_select = sorted(by_split["val_select"])[0]

    extra = tmp_path / "extra"
    (extra / "sub").mkdir(parents=True)
    shutil.copy(raw / manifest[val_test]["path"], extra / "copy_of_val_test.jpg")  # exact copy
    image = Image.open(raw / manifest[val_select]["path"]).convert("RGB")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")  # same picture, other encoding
    (extra / "reencoded_val_select.png").write_bytes(buffer.getvalue())
    buffer = io.BytesIO()
    image.resize((36, 36)).save(buffer, format="JPEG", quality=70)  # near duplicate
    (extra / "sub" / "resized_val_select.jpg").write_bytes(buffer.getvalue())
    new = np.random.default_rng(1).integers(0, 255, (40, 40, 3), dtype=np.uint8)
    Image.fromarray(new).save(extra / "sub" / "new.png")
    (extra / "broken.jpg").write_bytes(b"not an image")

    examples, counts = unlabeled_examples(raw, splits, extra, max_hamming=10)
    assert counts == {
        "train": len(by_split["train"]),
        "extra": 1,
        "extra_excluded_eval_duplicates": 3,
        "extra_undecodable": 1,
        "extra_duplicates": 0,
    }
    assert [e.id for e in examples if e.label == -1] == ["extra:sub/new.png"]
    assert not {e.sha256 for e in examples} & held_out
    assert len(unlabeled_examples(raw, splits)[0]) == len(by_split["train"])  # default: the train split only

    cfg = ExploraParams(**{**SMALL_SSL, "batch_size": 10, "epochs": 1})
    cache = RecordingCache(32, tmp_path / "cache")
    data = ImageDataset(examples, cache, MultiCropTransform(cfg, MEAN, STD))
    pretrain(
        tiny_ssl(**{**SMALL_SSL, "batch_size": 10, "epochs": 1}),
        data,
        TrainParams(num_workers=0),
        tmp_path / "run",
        CPU,
    )
    read = set(cache.read)
    assert len(read) >= len(examples) - 10  # the whole epoch went through this cache
    assert not read & held_out
    assert read <= by_split["train"] | {e.sha256 for e in examples if e.label == -1}


def test_multicrop_views_follow_params():
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8))
    for sizes in (
        {"global_crop_size": 32, "local_crop_size": 16, "local_crops_number": 3},
        {"global_crop_size": 48, "local_crop_size": 32, "local_crops_number": 0},
    ):
        views = MultiCropTransform(ExploraParams(**sizes), MEAN, STD)(image)
        assert len(views) == 2 + sizes["local_crops_number"]
        g, loc = sizes["global_crop_size"], sizes["local_crop_size"]
        assert [tuple(v.shape) for v in views] == [(3, g, g)] * 2 + [(3, loc, loc)] * sizes["local_crops_number"]


# -------------------------------------------------------------------------------------- resume
def test_interrupted_pretraining_resumes_to_identical_state(dataset, tmp_path):
    raw, splits = dataset / "data" / "raw", dataset / "data" / "split" / "splits.csv"
    examples = load_split(raw, splits, "train")[:16]
    cfg = {
        **SMALL_SSL,
        "epochs": 3,
        "ibot_weight": 0.5,
        "koleo_weight": 0.1,
        "warmup_epochs": 1,
        "freeze_last_layer_epochs": 1,
    }
    train = TrainParams(num_workers=0)

    def run(run_dir, on_epoch_end=None):
        ssl = tiny_ssl(**cfg)
        data = ImageDataset(examples, ImageCache(32, tmp_path / "cache"), MultiCropTransform(ssl.cfg, MEAN, STD))
        return ssl, pretrain(ssl, data, train, run_dir, CPU, on_epoch_end=on_epoch_end)

    reference, ref_state = run(tmp_path / "reference")

    class Killed(Exception):
        pass

    def kill_after_first(state):
        if state.epoch == 1:
            raise Killed

    with pytest.raises(Killed):
        run(tmp_path / "killed", kill_after_first)
    saved = torch.load(tmp_path / "killed" / "checkpoint.pt", weights_only=True)
    assert saved["state"]["epoch"] == 1
    assert not any("patch_embed" in k for k in saved["model"]["student"])  # frozen tensors are not saved
    resumed, state = run(tmp_path / "killed")
    assert state.epoch == 3 and state.step == ref_state.step and state.history == ref_state.history
    a, b = reference.resumable_state(), resumed.resumable_state()
    for part in ("student", "teacher"):
        assert a[part].keys() == b[part].keys()
        assert all(torch.equal(a[part][k], b[part][k]) for k in a[part]), part
    assert torch.equal(a["center"], b["center"]) and torch.equal(a["patch_center"], b["patch_center"])


# ------------------------------------------------------------------------- every key is read
BASE = {**SMALL_SSL, "epochs": 2, "ibot_weight": 0.5, "koleo_weight": 0.1}
# key -> (extra base settings the key needs to matter, the changed value)
VARIANTS = {
    "epochs": ({}, 1),
    "batch_size": ({}, 4),
    "grad_accum_steps": ({}, 2),
    "lr": ({}, 1e-2),
    "min_lr": ({}, 1e-3),
    "warmup_epochs": ({}, 1),
    "weight_decay": ({}, 0.5),
    "clip_grad": ({}, 1e-3),
    "grad_checkpointing": ({}, True),
    "unfrozen_blocks": ({}, 0),
    "lora_rank": ({}, 2),
    "global_crop_size": ({}, 48),
    "global_crop_scale": ({}, (0.9, 1.0)),
    "local_crops_number": ({}, 1),
    "local_crop_size": ({}, 32),
    "local_crop_scale": ({}, (0.3, 0.5)),
    "head_prototypes": ({}, 16),
    "head_hidden_dim": ({}, 8),
    "head_bottleneck_dim": ({}, 4),
    "head_layers": ({}, 1),
    "student_temp": ({}, 0.2),
    "teacher_temp": ({}, 0.03),
    "teacher_temp_warmup": ({"teacher_temp_warmup_epochs": 1}, 0.01),
    "teacher_temp_warmup_epochs": ({}, 1),
    "center_momentum": ({}, 0.5),
    "teacher_momentum": ({}, 0.9),
    "freeze_last_layer_epochs": ({}, 1),
    "ibot_weight": ({}, 0.0),
    "ibot_mask_ratio": ({}, (0.6, 0.9)),
    "ibot_mask_probability": ({}, 1.0),
    "koleo_weight": ({}, 0.0),
}
TESTED_ELSEWHERE = {"init", "extra_unlabeled", "adapter", "adapter_rank"}


def test_every_explora_key_is_covered():
    assert set(ExploraParams.model_fields) == set(VARIANTS) | TESTED_ELSEWHERE


def ssl_fingerprint(cfg: dict, examples, cache_dir: Path, run_dir: Path, monkeypatch) -> dict:
    """Everything a key could change: shapes the student sees, the history, parameter counts,
    the final teacher, checkpointed blocks."""
    import timm.models.eva as eva

    calls = []
    original = eva.checkpoint
    monkeypatch.setattr(eva, "checkpoint", lambda *a, **k: calls.append(1) or original(*a, **k))
    ssl = tiny_ssl(**cfg)
    shapes = []
    losses = ssl.losses
    ssl.losses = lambda student, views, *a: shapes.append([tuple(v.shape) for v in views]) or losses(student, views, *a)
    data = ImageDataset(examples, ImageCache(48, cache_dir), MultiCropTransform(ssl.cfg, MEAN, STD))
    state = pretrain(ssl, data, TrainParams(num_workers=0), run_dir, CPU)
    teacher = ssl.resumable_state()["teacher"]
    return {
        "shapes": shapes,
        "history": state.history,
        "counts": ssl.trainable_counts(),
        "teacher": {k: round(float(v.double().abs().sum()), 9) for k, v in teacher.items()},
        "checkpointed": len(calls),
    }


@pytest.mark.slow
def test_every_ssl_key_changes_the_run(dataset, tmp_path, monkeypatch):
    examples = load_split(dataset / "data" / "raw", dataset / "data" / "split" / "splits.csv", "train")[:16]
    runs = iter(range(1000))

    def fingerprint(cfg):
        return ssl_fingerprint(cfg, examples, tmp_path / "cache", tmp_path / f"run{next(runs)}", monkeypatch)

    base = fingerprint(BASE)
    assert base == fingerprint(BASE)  # deterministic: a difference below is the key's doing
    assert base["checkpointed"] == 0
    unchanged = []
    for key, (needs, value) in VARIANTS.items():
        reference = base if not needs else fingerprint({**BASE, **needs})
        if fingerprint({**BASE, **needs, key: value}) == reference:
            unchanged.append(key)
    assert not unchanged, f"explora keys that change nothing: {unchanged}"


def test_trainable_counts_follow_unfrozen_blocks_and_rank():
    counts = {
        (u, r): tiny_ssl(unfrozen_blocks=u, lora_rank=r).trainable_counts()["backbone_trainable"]
        for u in (0, 1, 2)
        for r in (2, 4)
    }
    assert counts[(0, 2)] < counts[(0, 4)] < counts[(1, 4)] < counts[(2, 4)]
    d = TINY["embed_dim"]
    assert counts[(0, 4)] - counts[(0, 2)] == 3 * 2 * 2 * (2 * d)  # 3 LoRA blocks, q and v, (A, B) per rank


# ----------------------------------------------------------------------------- the stage
STAGE_EXPLORA = {
    "epochs": 2,
    "batch_size": 16,
    "global_crop_size": 48,
    "local_crop_size": 16,
    "local_crops_number": 2,
    "head_prototypes": 64,
    "head_hidden_dim": 32,
    "head_bottleneck_dim": 16,
    "adapter": "lora",
    "adapter_rank": 4,
    "ibot_weight": 1.0,
    "koleo_weight": 0.1,
}


def stage_params(**explora):
    return parse_params({"model": dict(TINY_MODEL), "train": dict(TINY_TRAIN), "explora": {**STAGE_EXPLORA, **explora}})


def run_module(module: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, ROADWORK_CACHE=str(cwd / ".cache"), OMP_NUM_THREADS="1")
    result = subprocess.run([sys.executable, "-m", module], cwd=cwd, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def stage_run(dataset, tmp_path_factory) -> Path:
    cwd = tmp_path_factory.mktemp("explora_stage")
    (cwd / "data").mkdir()
    for name in ("raw", "split"):
        (cwd / "data" / name).symlink_to(dataset / "data" / name)
    write_params(cwd, explora=STAGE_EXPLORA)
    run_module("roadwork.stages.train_phase1", cwd)
    run_module("roadwork.stages.explora", cwd)
    return cwd


@pytest.mark.slow
def test_stage_end_to_end(stage_run):
    cwd = stage_run
    from roadwork.models.classifier import build_model
    from roadwork.models.model_dir import load_trained
    from roadwork.train.augment import eval_transform

    # the adapted backbone: a stock timm state dict (strict), changed where ExPLoRA trains only
    weights = load_file(cwd / "data" / "explora" / "backbone.safetensors")
    stock = timm.create_model(
        TINY_MODEL["backbone"], num_classes=0, global_pool="token", img_size=32, **TINY_MODEL["overrides"]
    )
    stock.load_state_dict(weights, strict=True)
    config = stage_params()
    from roadwork.train.distributed import seed_everything

    seed_everything(config.train.seed)
    initial = build_model(config.model).backbone.state_dict()
    assert torch.equal(weights["patch_embed.proj.weight"], initial["patch_embed.proj.weight"])
    assert torch.equal(weights["blocks.0.attn.proj.weight"], initial["blocks.0.attn.proj.weight"])  # frozen
    assert not torch.equal(weights["blocks.0.attn.qkv.weight"], initial["blocks.0.attn.qkv.weight"])  # LoRA merged
    assert not torch.equal(weights["blocks.1.mlp.fc1.weight"], initial["blocks.1.mlp.fc1.weight"])  # unfrozen

    # phase 4 like phase 1, with the unmerged fine-tuning adapter recorded for load_trained
    phase4 = cwd / "data" / "phase4"
    description = read_json(phase4 / "model.json")
    assert description["adapter"] == {"kind": "lora", "rank": 4}
    model, _ = load_trained(phase4)
    rows = [r for r in read_csv(phase4 / "logits.csv") if r["split"] == "val_select"]
    assert {r["split"] for r in read_csv(phase4 / "logits.csv")} == {"val_select", "val_calib", "val_test"}
    examples = {e.id: e for e in load_split(cwd / "data" / "raw", cwd / "data" / "split" / "splits.csv", "val_select")}
    cache = ImageCache(32, cwd / ".cache" / "images")
    transform = eval_transform(32, description["mean"], description["std"])
    with torch.no_grad():
        logits = model(torch.stack([transform(cache.get(examples[r["id"]])) for r in rows])).numpy()
    np.testing.assert_allclose(logits, [float(r["logit"]) for r in rows], rtol=0, atol=1e-5)

    metrics = read_json(cwd / "metrics" / "explora.json")
    compared = metrics["val_select"]
    for phase in ("phase1", "phase4"):
        assert set(compared[phase]) == {"mcc", "accuracy", "auc", "n"} and compared[phase]["n"] == 12
    assert compared["phase4_minus_phase1"]["mcc"] == pytest.approx(
        compared["phase4"]["mcc"] - compared["phase1"]["mcc"]
    )
    interval = compared["phase4_vs_phase1"]  # the same difference, with its paired interval and verdict
    assert interval["difference"] == pytest.approx(compared["phase4_minus_phase1"]["mcc"], abs=2e-6)
    assert interval["ci95_low"] <= interval["difference"] <= interval["ci95_high"] and interval["n"] == 12
    ssl = metrics["ssl"]
    assert ssl["epochs"] == 2 and math.isfinite(ssl["final_loss"]) and ssl["images"]["train"] == 60
    assert {"teacher_entropy", "embedding_std", "ibot_loss", "koleo_loss"} <= set(ssl["final"])
    assert 0 < ssl["parameters"]["backbone_trainable"] < ssl["parameters"]["backbone_total"]
    assert metrics["finetune"]["backbone_freeze"] == "frozen" and metrics["finetune"]["adapter"] == "lora"
    assert not (cwd / "metrics" / "threshold_phase4.json").exists()  # the threshold stage's job
    assert read_json(cwd / "dvclive" / "explora" / "metrics.json")["step"] == 1  # logged per epoch
    assert not list((cwd / "runs").glob("*/*"))  # checkpoints removed after success

    # the SSL image cache (short side 48: only the SSL loader uses it) holds train images only
    ssl_cached = {p.stem for p in (cwd / ".cache" / "images" / "48").rglob("*.npy")}
    by_split = split_sha(cwd)
    assert ssl_cached and ssl_cached <= by_split["train"]


def test_phase_comparison_pairs_the_same_val_select_images(tmp_path):
    from sklearn.metrics import matthews_corrcoef

    from roadwork.evaluate.compare import BETTER, TIE
    from roadwork.io import write_csv
    from roadwork.stages.explora import compare

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 400)
    weak, strong = (np.where(rng.uniform(size=400) < accuracy, labels, 1 - labels) for accuracy in (0.7, 0.9))
    paths = {}
    for name, decisions in (("weak", weak), ("strong", strong)):
        rows = [
            {"split": "val_select", "id": f"v{i:03d}", "label": int(y), "logit": float(2 * d - 1)}
            for i, (y, d) in enumerate(zip(labels, decisions))
        ]
        rows = rows[::-1] if name == "strong" else rows  # other row order: pairing is by id
        paths[name] = tmp_path / f"{name}.csv"
        write_csv(paths[name], rows, ["split", "id", "label", "logit"])
    result = compare(paths["weak"], paths["strong"])["phase4_vs_phase1"]
    expected = matthews_corrcoef(labels, strong) - matthews_corrcoef(labels, weak)
    assert result["difference"] == pytest.approx(expected, abs=1e-6) and result["verdict"] == BETTER
    assert result["ci95_low"] <= result["difference"] <= result["ci95_high"] and result["n"] == 400
    assert compare(paths["weak"], paths["weak"])["phase4_vs_phase1"]["verdict"] == TIE


@pytest.mark.slow
def test_init_phase1_and_finetuning_adapters(stage_run, monkeypatch):
    from roadwork.models.backbone import apply_freeze_policy
    from roadwork.train import adaptation as stage

    phase1_dir = stage_run / "data" / "phase1"
    phase1 = load_file(phase1_dir / "model.safetensors")
    base = stage_params()
    from_pretrained = stage.initial_classifier(base, phase1_dir).backbone.state_dict()
    config = stage_params(init="phase1")
    from_phase1 = stage.initial_classifier(config, phase1_dir).backbone.state_dict()
    assert all(torch.equal(v, phase1[f"backbone.{k}"]) for k, v in from_phase1.items())
    assert not all(torch.equal(v, from_pretrained[k]) for k, v in from_phase1.items())

    weights = load_file(stage_run / "data" / "explora" / "backbone.safetensors")
    trainable = {}
    for adapter, rank in (("none", 4), ("lora", 4), ("lora", 2), ("dora", 4), ("doran", 4)):
        config = stage_params(adapter=adapter, adapter_rank=rank)
        ft = stage.finetune_params(config)
        model, extra = stage.finetune_model(config, weights)
        trainable[(adapter, rank)] = apply_freeze_policy(
            model.backbone, ft.model.freeze, ft.model.freeze_last_n
        ).trainable
        assert ("adapter" in extra) == (adapter != "none")
        assert ft.model.freeze == ("full" if adapter == "none" else "frozen")
    assert len(set(trainable.values())) == len(trainable)  # every adapter / rank trains something else
    assert trainable[("lora", 2)] < trainable[("lora", 4)] < trainable[("none", 4)]


@pytest.mark.slow
def test_finished_pretraining_is_reused_and_reproducible(stage_run, monkeypatch, caplog):
    from roadwork.train import adaptation as stage

    monkeypatch.chdir(stage_run)
    config = stage_params()
    inputs = (Path("data/raw"), Path("data/split/splits.csv"), Path("data/phase1"), Path("runs"))
    first, summary, path = stage.pretrained_backbone(config, *inputs, CPU, None)
    try:
        with caplog.at_level(logging.INFO, logger="roadwork.train.adaptation"):
            again, summary_again, path_again = stage.pretrained_backbone(config, *inputs, CPU, None)
        assert "already finished" in caplog.text
        assert path_again == path and summary_again == summary
        assert first.keys() == again.keys() and all(torch.equal(first[k], again[k]) for k in first)
        # the same params give the same adapted backbone as the stage's own run
        saved = load_file(stage_run / "data" / "explora" / "backbone.safetensors")
        assert all(torch.allclose(first[k], saved[k], rtol=0, atol=1e-6) for k in saved)
    finally:
        shutil.rmtree(path.parent)


def test_finetune_model_takes_the_adapted_weights_without_a_copy(tmp_path):
    """Phase 4's classifier uses the pre-trained backbone's tensors themselves (no second copy
    of a 3.4 GB backbone alongside the fine-tuning state), and they keep requires_grad."""
    from roadwork.train.adaptation import finetune_model

    config = parse_params(write_params(tmp_path, model={"overrides": TINY}))
    weights = {k: v.clone() for k, v in tiny_backbone(seed=1).state_dict().items()}
    model, _ = finetune_model(config, weights)
    own = model.backbone.state_dict()
    assert own.keys() == weights.keys()
    for key, tensor in weights.items():
        assert own[key].data_ptr() == tensor.data_ptr(), key
    assert all(p.requires_grad for p in model.backbone.parameters())
    assert isinstance(model.backbone.blocks[0].attn.qkv.weight, torch.nn.Parameter)

"""params.yaml -> typed, validated objects.

The defaults here are the embedded default's values, the same as params.yaml's (a test keeps the
two equal), so a section built in code and the checked-in params.yaml never disagree.

Every section is a pydantic model with ``extra="forbid"``: an unknown key, a wrong type or an
out-of-range value fails at load time with a message naming the key (``split.ratios.train``)
and the expected form, before any stage does work.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Literal, Optional

import yaml
from pydantic import BeforeValidator, Field, StrictBool, StrictInt, ValidationError, model_validator

from roadwork.sections import MAX_STRING, SPLITS, Section  # noqa: F401  (re-exported: roadwork.config.SPLITS)
from roadwork.synthesize_params import SynthesizeParams


class ConfigError(ValueError):
    """params.yaml (or a preset) is invalid; the message names every offending key."""


def _not_a_bool(value):
    if isinstance(value, bool):
        raise ValueError(f"expected a number, not a boolean ({str(value).lower()})")
    return value


# YAML `true` is not 1, `1.5` is not an int, `.inf`/`.nan` are not numbers (allow_inf_nan=False above);
# a float may still be written `1e-3` (PyYAML reads that as a string, pydantic converts it)
Int = StrictInt
Float = Annotated[float, BeforeValidator(_not_a_bool)]
Bit = Annotated[Literal[0, 1], BeforeValidator(_not_a_bool)]


# --------------------------------------------------------------------------------------- data
class SyntheticParams(Section):
    """The embedded default: procedural street scenes, deterministic from `seed`."""

    count: Int = Field(10000, gt=0, description="distinct scenes generated (before planted copies)")
    width: Int = Field(96, ge=32, le=8192)
    height: Int = Field(96, ge=32, le=8192)
    positive_fraction: Float = Field(0.3, gt=0, lt=1, description="share of roadwork scenes (NATIX: ~0.2)")
    jpeg_quality: Int = Field(90, ge=30, le=100)
    exact_duplicates: Int = Field(15, ge=0, description="byte-identical copies planted")
    pixel_duplicates: Int = Field(10, ge=0, description="same pixels, different metadata/encoding")
    near_duplicates: Int = Field(60, ge=0, description="re-encoded/resized/cropped/brightened copies")
    broken_files: Int = Field(6, ge=0, description="zero-byte, truncated, non-image... files planted")
    seed: Int = 0


class LocalParams(Section):
    """A folder with one sub-folder per class, or a CSV/parquet manifest of (path, label)."""

    path: str = Field("inputs", min_length=1, description="the folder or manifest; a dependency of download")
    class_folders: dict[str, Bit] = Field(default_factory=lambda: {"0": 0, "1": 1, "none": 0, "roadwork": 1})
    allow_outside_root: StrictBool = Field(
        False,
        description="read entries that resolve (symlinks, manifest paths) outside the folder / the manifest's folder",
    )


class NatixParams(Section):
    repo_id: str = "natix-network-org/roadwork"
    revision: str = "main"
    label_text_conflict: Literal["drop", "keep"] = "drop"


class DataParams(Section):
    source: Literal["synthetic", "local", "natix"] = "synthetic"
    limit: Optional[Int] = Field(None, gt=0, description="deterministic subset size; null = all")
    max_pixels: Int = Field(89_478_485, gt=0, description="decompression-bomb limit (pixels per image)")
    max_file_bytes: Int = Field(
        268_435_456, gt=0, description="larger files are refused unread; quarantine never keeps more bytes than this"
    )
    synthetic: SyntheticParams = SyntheticParams()
    local: LocalParams = LocalParams()
    natix: NatixParams = NatixParams()


# -------------------------------------------------------------------------------------- dedup
class DedupParams(Section):
    max_hamming: Int = Field(10, ge=0, le=64, description="near-duplicate pHash distance (bits)")
    label_conflict: Literal["drop", "majority"] = "drop"
    near_duplicates: Literal["group", "drop"] = "group"
    max_conflict_share: Float = Field(
        0.05, ge=0, le=1, description="share of the images dropped as label conflicts above which dedup warns"
    )


# -------------------------------------------------------------------------------------- split
class SplitRatios(Section):
    train: Float = Field(0.55, ge=0, le=1)
    val_select: Float = Field(0.15, ge=0, le=1)
    val_calib: Float = Field(0.10, ge=0, le=1)
    val_test: Float = Field(0.20, ge=0, le=1)

    @model_validator(mode="after")
    def _sum_to_one(self):
        total = self.train + self.val_select + self.val_calib + self.val_test
        if not math.isclose(total, 1.0, abs_tol=1e-6):
            raise ValueError(f"split ratios must sum to 1, got {total:g}")
        return self


class SplitParams(Section):
    ratios: SplitRatios = SplitRatios()
    seed: Int = 0


# -------------------------------------------------------------------------------------- model
class HeadParams(Section):
    rank: Int = Field(8, gt=0, description="DoRAN head: rank of the generated low-rank update")
    hidden: Int = Field(32, gt=0, description="DoRAN head: width of the auxiliary (hyper)network")
    noise_std: Float = Field(0.1, ge=0, description="DoRAN head: feature noise in train mode only")
    dropout: Float = Field(0.0, ge=0, lt=1)


class ModelParams(Section):
    backbone: str = "vit_small_patch16_dinov3"
    overrides: dict[str, Int | Float] = Field(
        default_factory=lambda: {"embed_dim": 64, "depth": 3, "num_heads": 2, "init_values": 1.0, "patch_size": 8},
        description="timm kwargs, e.g. embed_dim/depth/num_heads",
    )
    pretrained: str = Field("none", description="none | timm hub id with tag | local weights file")
    pooling: Literal["token", "avg", "max"] = "max"
    img_size: Int = Field(64, ge=16, le=1024)
    freeze: Literal["full", "frozen", "last_n"] = "full"
    freeze_last_n: Int = Field(2, ge=0)
    head_type: Literal["linear", "doran"] = "linear"
    head: HeadParams = HeadParams()

    @model_validator(mode="after")
    def _patch_multiple(self):
        patch = int(self.overrides.get("patch_size", 16))
        if self.img_size % patch:
            raise ValueError(f"model.img_size must be a multiple of the patch size {patch}, got {self.img_size}")
        return self


# -------------------------------------------------------------------------------------- train
class AugmentParams(Section):
    mode: Literal["standard", "validator", "mix", "none"] = "standard"
    scale: tuple[Float, Float] = (0.5, 1.0)
    hflip: Float = Field(0.5, ge=0, le=1)
    color_jitter: Float = Field(0.0, ge=0, description="saturation jitter (brightness/contrast below)")
    brightness: Float = Field(0.2, ge=0)
    contrast: Float = Field(0.2, ge=0)
    auto_augment: Optional[str] = Field(None, description="timm auto-augment spec or null")
    rotation_degrees: Float = Field(0, ge=0, le=180)
    gaussian_blur_prob: Float = Field(0.0, ge=0, le=1)
    mixup_alpha: Float = Field(0.0, ge=0)
    cutmix_alpha: Float = Field(0.0, ge=0)
    mix_prob: Float = Field(1.0, ge=0, le=1)
    validator_levels: list[Int] = Field(default_factory=lambda: [0, 1, 2, 3])

    @model_validator(mode="after")
    def _check(self):
        if not 0 < self.scale[0] <= self.scale[1] <= 1:
            raise ValueError(f"train.augment.scale must be (low, high) with 0 < low <= high <= 1, got {self.scale}")
        if not self.validator_levels or not set(self.validator_levels) <= {0, 1, 2, 3}:
            raise ValueError(
                f"train.augment.validator_levels must be a non-empty subset of [0, 1, 2, 3], got {self.validator_levels}"
            )
        return self


class TrainParams(Section):
    epochs: Int = Field(12, gt=0)
    batch_size: Int = Field(32, gt=0, description="per optimizer step, across all processes")
    grad_accum_steps: Int = Field(1, gt=0)
    lr: Float = Field(1e-3, gt=0, description="head learning rate")
    backbone_lr: Float = Field(1e-3, ge=0)
    weight_decay: Float = Field(0.05, ge=0)
    warmup_epochs: Int = Field(2, ge=0)
    min_lr: Float = Field(1e-6, ge=0)
    clip_grad: Optional[Float] = Field(1.0, gt=0)
    label_smoothing: Float = Field(0.0, ge=0, lt=1)
    early_stopping_patience: Int = Field(30, gt=0)
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    processes: Int = Field(1, gt=0, description="> 1: torchrun + DistributedDataParallel")
    balanced_sampler: StrictBool = True
    feature_cache: StrictBool = Field(False, description="frozen backbone only: train the head on cached features")
    num_workers: Int = Field(1, ge=0)
    seed: Int = 0
    synthetic_share: Float = Field(
        0.0,
        ge=0,
        lt=1,
        description="share of the training set that is synthetic train children (data/synthetic), "
        "drawn seeded; 0 = real images only",
    )
    augment: AugmentParams = AugmentParams()

    @model_validator(mode="after")
    def _check(self):
        if self.batch_size % (self.processes * self.grad_accum_steps):
            raise ValueError(
                f"train.batch_size ({self.batch_size}) must be divisible by processes x grad_accum_steps "
                f"({self.processes} x {self.grad_accum_steps})"
            )
        return self


class ThresholdParams(Section):
    target_prior: Float = Field(0.5, gt=0, lt=1, description="positive rate the model is scored under")


class ExploraParams(Section):
    """Phase 4: ExPLoRA extended self-supervised pre-training (DINO family) with LoRA, then supervised
    fine-tuning of the adapted backbone (src/roadwork/train/ssl.py, src/roadwork/stages/explora.py).

    Pre-training: a student and an EMA teacher on multi-crop views of unlabeled images (the train
    split and ``extra_unlabeled``, never val/test), DINO head with prototypes, teacher centering and
    sharpening, optional iBOT masked-patch loss and KoLeo. Mixed precision and processes follow
    ``train.precision`` / ``train.processes``; ``train.seed`` and ``train.num_workers`` are reused."""

    init: Literal["pretrained", "phase1"] = Field(
        "pretrained", description="backbone start: model.pretrained or phase-1 weights"
    )
    epochs: Int = Field(1, gt=0, description="self-supervised epochs over the unlabeled images")
    batch_size: Int = Field(64, gt=0, description="images per optimizer step, across all processes")
    grad_accum_steps: Int = Field(1, gt=0)
    lr: Float = Field(5e-4, gt=0, description="peak AdamW learning rate (after warmup), cosine to min_lr")
    min_lr: Float = Field(1e-6, ge=0)
    warmup_epochs: Int = Field(0, ge=0, description="linear learning-rate warmup")
    weight_decay: Float = Field(0.04, ge=0)
    clip_grad: Optional[Float] = Field(3.0, gt=0, description="global gradient-norm clip; null = none")
    grad_checkpointing: StrictBool = Field(
        False, description="activation checkpointing of the blocks (memory for compute)"
    )
    unfrozen_blocks: Int = Field(1, ge=0, description="last blocks fully trainable")
    lora_rank: Int = Field(8, gt=0, description="LoRA rank on q and v of every other block")
    global_crop_size: Int = Field(64, ge=16, le=1024, description="the 2 global views (multiple of 16)")
    global_crop_scale: tuple[Float, Float] = Field(
        (0.32, 1.0), description="RandomResizedCrop area range, global views"
    )
    local_crops_number: Int = Field(4, ge=0, description="local views per image")
    local_crop_size: Int = Field(32, ge=16, le=1024, description="multiple of 16")
    local_crop_scale: tuple[Float, Float] = Field((0.05, 0.32), description="RandomResizedCrop area range, local views")
    head_prototypes: Int = Field(1024, gt=1, description="DINO head output dimension (prototypes)")
    head_hidden_dim: Int = Field(256, gt=0)
    head_bottleneck_dim: Int = Field(64, gt=0)
    head_layers: Int = Field(3, ge=1, description="MLP layers before the L2-normalised bottleneck")
    student_temp: Float = Field(0.1, gt=0)
    teacher_temp: Float = Field(0.07, gt=0, description="teacher softmax temperature after warmup (sharpening)")
    teacher_temp_warmup: Float = Field(0.04, gt=0, description="teacher temperature at the start of the warmup")
    teacher_temp_warmup_epochs: Int = Field(0, ge=0, description="linear teacher-temperature warmup; 0 = none")
    center_momentum: Float = Field(0.9, ge=0, lt=1, description="EMA momentum of the teacher centre")
    teacher_momentum: Float = Field(0.992, ge=0, le=1, description="EMA momentum m0, cosine schedule to 1")
    freeze_last_layer_epochs: Int = Field(1, ge=0, description="head's prototype layer not updated for these epochs")
    ibot_weight: Float = Field(0.0, ge=0, description="iBOT masked-patch loss weight; 0 = off")
    ibot_mask_ratio: tuple[Float, Float] = Field((0.1, 0.5), description="masked share of patches (min, max)")
    ibot_mask_probability: Float = Field(0.5, ge=0, le=1, description="share of global views that are masked")
    koleo_weight: Float = Field(0.0, ge=0, description="KoLeo regulariser weight on student CLS; 0 = off")
    extra_unlabeled: str = Field("", description="optional folder of extra unlabeled images (never val/test images)")
    adapter: Literal["none", "lora", "dora", "doran"] = Field("none", description="fine-tuning adapter")
    adapter_rank: Int = Field(8, gt=0, description="rank of the fine-tuning adapter (lora/dora/doran)")

    @model_validator(mode="after")
    def _check(self):
        for key in ("global_crop_size", "local_crop_size"):
            if getattr(self, key) % 16:
                raise ValueError(f"explora.{key} must be a multiple of the patch size 16, got {getattr(self, key)}")
        for key in ("global_crop_scale", "local_crop_scale", "ibot_mask_ratio"):
            low, high = getattr(self, key)
            if not 0 < low <= high <= 1:
                raise ValueError(f"explora.{key} must be (low, high) with 0 < low <= high <= 1, got {(low, high)}")
        if self.warmup_epochs >= self.epochs:
            raise ValueError(
                f"explora.warmup_epochs ({self.warmup_epochs}) must be smaller than explora.epochs "
                f"({self.epochs}): the cosine schedule starts after the warmup"
            )
        if self.batch_size % self.grad_accum_steps:
            raise ValueError(
                f"explora.batch_size ({self.batch_size}) must be divisible by explora.grad_accum_steps "
                f"({self.grad_accum_steps})"
            )
        if self.koleo_weight > 0 and self.batch_size // self.grad_accum_steps < 2:
            raise ValueError("explora.koleo_weight needs at least 2 images per micro-batch (nearest neighbours)")
        return self


class CalibrateParams(Section):
    model: Literal["phase1", "phase4", "best"] = Field(
        "best",
        description="model to ship; best = phase 4 only when distinguishably better than phase 1 "
        "(val_select MCC at their own thresholds, paired bootstrap)",
    )
    n_bins: Int = Field(15, gt=1, description="ECE and reliability-diagram bins (calibrate and evaluate)")
    bootstrap: Int = Field(
        1000,
        gt=0,
        description="resamples of the paired bootstrap that compares phase 4 with phase 1 on val_select (model: best)",
    )
    seed: Int = Field(0, description="seed of that bootstrap")


class ExportParams(Section):
    model_name: str = "roadwork-dinov3"
    version: str = "0.1.0"
    submitted_by: str = Field("", description="miner hotkey for model_card.json (public, not a secret)")
    onnx: StrictBool = True
    bootstrap: Int = Field(1000, gt=0, description="bootstrap resamples: val_test confidence intervals (evaluate) and the views decision on val_select (export)")
    protocol_seed: Int = Field(0, description="seed of the validators'-protocol augmentation draws, reward stream and the bootstraps")
    latency_budget_s: Float = Field(
        4.0,
        gt=0,
        description="warn when the detector's configured views take longer "
        "per query on this machine's CPU (validators wait 9 s)",
    )
    protocol_draws: Int = Field(
        2,
        gt=0,
        description="independent validators'-protocol augmentation draws averaged "
        "(seeds protocol_seed, protocol_seed + 1, ...)",
    )


class PredictParams(Section):
    multiview_overlap: Float = Field(0.2, ge=0, lt=1)
    multiview_topk: Int = Field(3, gt=0)
    multiview_grid: Int = Field(2, gt=0, description="tiles per side (plus the whole image)")
    flip_tta: StrictBool = False


class Params(Section):
    data: DataParams = DataParams()
    dedup: DedupParams = DedupParams()
    split: SplitParams = SplitParams()
    model: ModelParams = ModelParams()
    train: TrainParams = TrainParams()
    threshold: ThresholdParams = ThresholdParams()
    explora: ExploraParams = ExploraParams()
    calibrate: CalibrateParams = CalibrateParams()
    export: ExportParams = ExportParams()
    predict: PredictParams = PredictParams()
    # the embedded default: the tiny random-weight backend on 4 sources per (split, label) (about a minute on a
    # CPU); SynthesizeParams' own defaults are the validators' (presets/real.yaml: the hub models)
    synthesize: SynthesizeParams = SynthesizeParams(backend="tiny", sources_per_label=4)

    @model_validator(mode="after")
    def _feature_cache_needs_frozen(self):
        if self.train.feature_cache and self.model.freeze != "frozen":
            raise ValueError("train.feature_cache needs model.freeze: frozen (features of a trained backbone change)")
        return self


def _short(value, limit: int = 80) -> str:
    """repr(value), cut at `limit` characters (a 10 MB param is not repeated in full)."""
    text = repr(value)
    size = f"{len(value)} characters" if isinstance(value, str) else f"{len(text)} characters shown as Python"
    return text if len(text) <= limit else f"{text[:limit]}... ({size})"


def _format_errors(error: ValidationError, source: str) -> str:
    lines = [f"{source}: invalid parameters"]
    for item in error.errors():
        parts = [str(part) for part in item["loc"]]
        key = ".".join(p if len(p) <= 40 else f"{p[:40]}...({len(p)} characters)" for p in parts) or "(top level)"
        got = item.get("input")
        if item["type"] == "extra_forbidden":
            lines.append(f"  {key}: unknown key (check the spelling; see params.yaml for the known keys)")
        else:
            shown = "" if isinstance(got, dict) else f" (got {_short(got)})"
            lines.append(f"  {key}: {item['msg']}{shown}")
    return "\n".join(lines)


def parse_params(raw: dict | None, source: str = "params") -> Params:
    try:
        return Params.model_validate(raw or {})
    except ValidationError as error:
        raise ConfigError(_format_errors(error, source)) from None


class _NoAliasLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing aliases (``*name``): a few lines of nested aliases expand to
    gigabytes (a "billion laughs"); params.yaml needs none."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.YAMLError(
                f"line {event.start_mark.line + 1}: alias *{event.anchor} refused; params.yaml "
                "may not use YAML anchors and aliases (write the value out)"
            )
        return super().compose_node(parent, index)


MAX_PARAMS_BYTES = 1 << 20


def load_params(path: str | Path = "params.yaml") -> Params:
    path = Path(path)
    if not path.is_file():
        problem = "is not a regular file" if path.exists() else "not found (run from the repository root)"
        raise ConfigError(f"{path}: parameter file {problem}")
    if path.stat().st_size > MAX_PARAMS_BYTES:
        raise ConfigError(f"{path}: {path.stat().st_size} bytes; a parameter file is at most {MAX_PARAMS_BYTES}")
    try:
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=_NoAliasLoader)
    except UnicodeDecodeError as error:
        raise ConfigError(f"{path}: not UTF-8 text (byte {error.start})") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from None
    if raw is not None and not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top level")
    return parse_params(raw, str(path))

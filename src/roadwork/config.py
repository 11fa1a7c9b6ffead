"""params.yaml -> typed, validated objects; the one source of each param's default and description.

Every field carries its default (the embedded default's value) and ``Field(description=...)``;
``python -m roadwork.paramsdoc --write`` generates docs/params.md and params.yaml's keys, order and
comments from them (tests/test_paramsdoc.py), and the committed params.yaml holds these defaults
(tests/test_config.py), so a section built in code and the checked-in params.yaml never disagree.

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
    width: Int = Field(96, ge=32, le=8192, description="image width in pixels (benchmarks go up to 4032)")
    height: Int = Field(96, ge=32, le=8192, description="image height in pixels (benchmarks go up to 3024)")
    positive_fraction: Float = Field(
        0.3,
        gt=0,
        lt=1,
        description="share of roadwork scenes; NATIX is ~4:1 negatives to positives, 0.3 keeps the imbalance "
        "and gives the default's comparisons more positives",
    )
    jpeg_quality: Int = Field(90, ge=30, le=100, description="JPEG quality of the generated scenes")
    exact_duplicates: Int = Field(15, ge=0, description="byte-identical copies planted")
    pixel_duplicates: Int = Field(10, ge=0, description="same pixels, different metadata/encoding")
    near_duplicates: Int = Field(60, ge=0, description="re-encoded/resized/cropped/brightened copies")
    broken_files: Int = Field(6, ge=0, description="zero-byte, truncated, non-image... files planted")
    seed: Int = Field(0, description="the generator's seed: the same seed gives the same bytes")


class LocalParams(Section):
    """A folder with one sub-folder per class, or a CSV/parquet manifest of (path, label)."""

    path: str = Field("inputs", min_length=1, description="the folder or manifest; a dependency of download")
    class_folders: dict[str, Bit] = Field(
        default_factory=lambda: {"0": 0, "1": 1, "none": 0, "roadwork": 1},
        description="class folder name -> label (0 or 1); files beside the class folders are not read",
    )
    allow_outside_root: StrictBool = Field(
        False,
        description="read entries that resolve (symlinks, manifest paths) outside the folder / the manifest's folder",
    )


class NatixParams(Section):
    """The Hugging Face dataset, downloaded with huggingface_hub (a gated one needs HF_TOKEN)."""

    repo_id: str = Field("natix-network-org/roadwork", description="the Hugging Face dataset")
    revision: str = Field(
        "main", description="pin a commit sha for a reproducible real run; the resolved sha is recorded"
    )
    label_text_conflict: Literal["drop", "keep"] = Field(
        "drop",
        description="rows whose label and scene_description disagree (the validators' rule: text with label 0, "
        "or no text with label 1): drop or keep",
    )


class DataParams(Section):
    """Where the images come from (the download stage; docs/data.md)."""

    source: Literal["synthetic", "local", "natix"] = Field(
        "synthetic", description="synthetic (the embedded default) | local (a folder or manifest) | natix (the hub)"
    )
    limit: Optional[Int] = Field(
        None, gt=0, description="deterministic subset (smallest sha256 of the source reference); null = all"
    )
    max_pixels: Int = Field(
        89_478_485, gt=0, description="decompression-bomb limit (pixels per image); larger images are quarantined"
    )
    max_file_bytes: Int = Field(
        268_435_456,
        gt=0,
        description="larger files are refused unread (256 MiB); quarantine never keeps more bytes than this",
    )
    synthetic: SyntheticParams = Field(
        SyntheticParams(), description="the embedded default: procedural street scenes (data.source: synthetic)"
    )
    local: LocalParams = Field(LocalParams(), description="your own images (data.source: local)")
    natix: NatixParams = Field(NatixParams(), description="the NATIX dataset on the hub (data.source: natix)")


# -------------------------------------------------------------------------------------- dedup
class DedupParams(Section):
    """Exact and near-duplicates (pHash), clusters and label conflicts (docs/data.md)."""

    max_hamming: Int = Field(
        10,
        ge=0,
        le=64,
        description="near-duplicate pHash distance in bits (synthetic, 10,085 images: recall 58/60, 139 false "
        "pairs of 51M; at 12: 58/60, 924)",
    )
    label_conflict: Literal["drop", "majority"] = Field(
        "drop", description="images within max_hamming of the other label (and their copies): drop | majority"
    )
    near_duplicates: Literal["group", "drop"] = Field(
        "group", description="group (keep, same split) | drop (keep one per cluster)"
    )
    max_conflict_share: Float = Field(
        0.05,
        ge=0,
        le=1,
        description="warn (metrics/dedup.json warnings and the log) when label conflicts drop more of the images",
    )


# -------------------------------------------------------------------------------------- split
class SplitRatios(Section):
    """Shares of the images per split (whole clusters, stratified by label); they sum to 1."""

    train: Float = Field(0.55, ge=0, le=1, description="trains")
    val_select: Float = Field(0.15, ge=0, le=1, description="picks the epoch, the threshold and the model to ship")
    val_calib: Float = Field(0.10, ge=0, le=1, description="fits the calibration")
    val_test: Float = Field(0.20, ge=0, le=1, description="only reported, never used to choose anything")

    @model_validator(mode="after")
    def _sum_to_one(self):
        total = self.train + self.val_select + self.val_calib + self.val_test
        if not math.isclose(total, 1.0, abs_tol=1e-6):
            raise ValueError(f"split ratios must sum to 1, got {total:g}")
        return self


class SplitParams(Section):
    ratios: SplitRatios = Field(
        SplitRatios(),
        description="the embedded default measures more (val_test 0.20); presets/real.yaml: the seed's 60/15/15/10",
    )
    seed: Int = Field(0, description="seed of the cluster assignment")


# -------------------------------------------------------------------------------------- model
class HeadParams(Section):
    rank: Int = Field(8, gt=0, description="DoRAN head: rank of the generated low-rank update")
    hidden: Int = Field(32, gt=0, description="DoRAN head: width of the auxiliary (hyper)network")
    noise_std: Float = Field(0.1, ge=0, description="DoRAN head: feature noise in train mode only")
    dropout: Float = Field(0.0, ge=0, lt=1, description="dropout before the head (linear and DoRAN)")


class ModelParams(Section):
    backbone: str = Field(
        "vit_small_patch16_dinov3",
        description="any timm DINOv3 name; presets/real.yaml uses vit_huge_plus_patch16_dinov3",
    )
    overrides: dict[str, Int | Float] = Field(
        default_factory=lambda: {"embed_dim": 64, "depth": 3, "num_heads": 2, "init_values": 1.0, "patch_size": 8},
        description="timm kwargs for a smaller model of the same architecture; {} for the real sizes. The default "
        "is CPU-sized. init_values: DINOv3's LayerScale starts at 1e-5, which leaves a randomly initialised "
        "backbone giving every image the same embedding: start it at 1. patch_size 8: 64 patches of a 64 px "
        "image, so a cone a few pixels wide is not averaged away in one patch",
    )
    pretrained: str = Field(
        "none",
        description="none | timm hub id with tag (vit_..._dinov3.lvd1689m) | local weights file (.safetensors, "
        "or a timm/Meta .pth, loaded without unpickling arbitrary objects)",
    )
    pooling: Literal["token", "avg", "max"] = Field(
        "max",
        description="token (CLS, as upstream DINOv3) | avg | max (a random-init ViT learns "
        "'is any patch roadwork' far sooner)",
    )
    img_size: Int = Field(
        64, ge=16, le=1024, description="input size; a multiple of the patch size (16 unless overrides.patch_size)"
    )
    freeze: Literal["full", "frozen", "last_n"] = Field(
        "full", description="full fine-tuning | frozen backbone | the last freeze_last_n blocks trained"
    )
    freeze_last_n: Int = Field(2, ge=0, description="blocks trained when freeze is last_n")
    head_type: Literal["linear", "doran"] = Field(
        "linear",
        description="linear | doran (magnitude times direction, a low-rank update from a small hypernetwork, "
        "feature noise in training only)",
    )
    head: HeadParams = Field(HeadParams(), description="DoRAN head: rank, hidden, noise_std; both heads: dropout")

    @model_validator(mode="after")
    def _patch_multiple(self):
        patch = int(self.overrides.get("patch_size", 16))
        if self.img_size % patch:
            raise ValueError(f"model.img_size must be a multiple of the patch size {patch}, got {self.img_size}")
        return self


# -------------------------------------------------------------------------------------- train
class AugmentParams(Section):
    """Training augmentation: the standard list, or the validators' levels 0-3."""

    mode: Literal["standard", "validator", "mix", "none"] = Field(
        "standard",
        description="standard | validator (NATIX levels 0-3, so training sees what scoring sees) | "
        "mix (each image one or the other, 50/50) | none",
    )
    scale: tuple[Float, Float] = Field((0.5, 1.0), description="RandomResizedCrop area range")
    hflip: Float = Field(0.5, ge=0, le=1, description="horizontal flip probability")
    color_jitter: Float = Field(0.0, ge=0, description="saturation jitter (real preset: 0.4)")
    brightness: Float = Field(0.2, ge=0, description="brightness jitter")
    contrast: Float = Field(0.2, ge=0, description="contrast jitter")
    auto_augment: Optional[str] = Field(None, description="timm auto-augment spec, e.g. rand-m9-mstd0.5; null = off")
    rotation_degrees: Float = Field(0, ge=0, le=180, description="random rotation range (real preset: 15)")
    gaussian_blur_prob: Float = Field(0.0, ge=0, le=1, description="Gaussian blur probability (real preset: 0.1)")
    mixup_alpha: Float = Field(0.0, ge=0, description="timm Mixup alpha; 0 = off")
    cutmix_alpha: Float = Field(0.0, ge=0, description="timm CutMix alpha; 0 = off")
    mix_prob: Float = Field(1.0, ge=0, le=1, description="probability of Mixup/CutMix per batch")
    validator_levels: list[Int] = Field(
        default_factory=lambda: [0, 1, 2, 3], description="validator mode: the levels drawn from"
    )

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
    epochs: Int = Field(12, gt=0, description="training epochs (cosine schedule with warmup)")
    batch_size: Int = Field(32, gt=0, description="per optimizer step, across all processes")
    grad_accum_steps: Int = Field(1, gt=0, description="micro-batches per optimizer step (memory)")
    lr: Float = Field(1e-3, gt=0, description="head learning rate (AdamW; no weight decay on norms, biases, tokens)")
    backbone_lr: Float = Field(1e-3, ge=0, description="backbone learning rate")
    weight_decay: Float = Field(0.05, ge=0, description="AdamW weight decay")
    warmup_epochs: Int = Field(2, ge=0, description="linear warmup, then cosine to min_lr (stepped per update)")
    min_lr: Float = Field(1e-6, ge=0, description="learning rate at the end of the cosine schedule")
    clip_grad: Optional[Float] = Field(1.0, gt=0, description="global gradient-norm clip; null = none")
    label_smoothing: Float = Field(0.0, ge=0, lt=1, description="label smoothing of the loss")
    early_stopping_patience: Int = Field(
        30,
        gt=0,
        description="epochs without a better val_select MCC (the random-init default improves to the end); "
        "the best epoch's weights are the output",
    )
    precision: Literal["fp32", "bf16", "fp16"] = Field(
        "fp32", description="fp32 | bf16 | fp16 (fp16 gives NaN with DINOv3; use bf16 on GPUs)"
    )
    processes: Int = Field(1, gt=0, description="> 1: the stage re-launches itself under torchrun (DDP)")
    balanced_sampler: StrictBool = Field(True, description="draw both classes equally often")
    feature_cache: StrictBool = Field(
        False,
        description="frozen backbone only: cache features once, train the head on them (no image augmentation)",
    )
    num_workers: Int = Field(1, ge=0, description="loader processes (results do not depend on it)")
    seed: Int = Field(0, description="seed of the model init, sampler and augmentation")
    synthetic_share: Float = Field(
        0.0,
        ge=0,
        lt=1,
        description="share of the training set that is synthetic train children (data/synthetic), "
        "drawn seeded; 0 = real images only",
    )
    augment: AugmentParams = Field(AugmentParams(), description="training augmentation")

    @model_validator(mode="after")
    def _check(self):
        if self.batch_size % (self.processes * self.grad_accum_steps):
            raise ValueError(
                f"train.batch_size ({self.batch_size}) must be divisible by processes x grad_accum_steps "
                f"({self.processes} x {self.grad_accum_steps})"
            )
        return self


class ThresholdParams(Section):
    """The decision threshold, tuned on val_select under the validators' prior."""

    target_prior: Float = Field(
        0.5, gt=0, lt=1, description="positive rate the model is scored under (the validators draw labels 50/50)"
    )


class ExploraParams(Section):
    """Phase 4: ExPLoRA extended self-supervised pre-training (DINO family) with LoRA, then supervised
    fine-tuning of the adapted backbone (src/roadwork/train/ssl.py, src/roadwork/stages/explora.py).

    Pre-training: a student and an EMA teacher on multi-crop views of unlabeled images (the train
    split and ``extra_unlabeled``, never val/test), DINO head with prototypes, teacher centering and
    sharpening, optional iBOT masked-patch loss and KoLeo. Mixed precision and processes follow
    ``train.precision`` / ``train.processes``; ``train.seed`` and ``train.num_workers`` are reused."""

    init: Literal["pretrained", "phase1"] = Field(
        "pretrained", description="pretrained (model.pretrained, as the paper) | phase1 (phase-1 fine-tuned weights)"
    )
    epochs: Int = Field(1, gt=0, description="self-supervised epochs over the unlabeled images (real preset: 10)")
    batch_size: Int = Field(64, gt=0, description="images per optimizer step, across all processes")
    grad_accum_steps: Int = Field(1, gt=0, description="micro-batches per optimizer step (memory)")
    lr: Float = Field(5e-4, gt=0, description="peak AdamW learning rate (after warmup), cosine to min_lr")
    min_lr: Float = Field(1e-6, ge=0, description="learning rate at the end of the cosine schedule")
    warmup_epochs: Int = Field(0, ge=0, description="linear learning-rate warmup")
    weight_decay: Float = Field(0.04, ge=0, description="not on norms, biases, LayerScale, tokens")
    clip_grad: Optional[Float] = Field(3.0, gt=0, description="global gradient-norm clip; null = none")
    grad_checkpointing: StrictBool = Field(
        False, description="activation checkpointing of the student's blocks (ViT-H on 48 GB: true)"
    )
    unfrozen_blocks: Int = Field(1, ge=0, description="last blocks fully trainable")
    lora_rank: Int = Field(8, gt=0, description="LoRA rank on q and v of every other block (paper: 64 on ViT-L)")
    global_crop_size: Int = Field(
        64, ge=16, le=1024, description="the 2 global views, multiple of 16 (DINOv3: 256 on ViT-H)"
    )
    global_crop_scale: tuple[Float, Float] = Field(
        (0.32, 1.0), description="RandomResizedCrop area range, global views"
    )
    local_crops_number: Int = Field(4, ge=0, description="local views per image (DINOv2: 8)")
    local_crop_size: Int = Field(32, ge=16, le=1024, description="the local views, multiple of 16 (DINOv3: 112)")
    local_crop_scale: tuple[Float, Float] = Field((0.05, 0.32), description="RandomResizedCrop area range, local views")
    head_prototypes: Int = Field(1024, gt=1, description="DINO head output dimension, prototypes (DINOv2: 65536)")
    head_hidden_dim: Int = Field(256, gt=0, description="DINO head MLP width (DINOv2: 2048)")
    head_bottleneck_dim: Int = Field(64, gt=0, description="L2-normalised bottleneck (DINOv2: 256)")
    head_layers: Int = Field(3, ge=1, description="MLP layers before the L2-normalised bottleneck")
    student_temp: Float = Field(0.1, gt=0, description="student softmax temperature")
    teacher_temp: Float = Field(0.07, gt=0, description="teacher softmax temperature after warmup (sharpening)")
    teacher_temp_warmup: Float = Field(0.04, gt=0, description="teacher temperature at the start of the warmup")
    teacher_temp_warmup_epochs: Int = Field(0, ge=0, description="linear teacher-temperature warmup; 0 = none")
    center_momentum: Float = Field(0.9, ge=0, lt=1, description="EMA momentum of the teacher centre")
    teacher_momentum: Float = Field(0.992, ge=0, le=1, description="EMA momentum m0, cosine schedule to 1")
    freeze_last_layer_epochs: Int = Field(1, ge=0, description="head's prototype layer not updated for these epochs")
    ibot_weight: Float = Field(0.0, ge=0, description="iBOT masked-patch loss weight (DINOv2: 1.0); 0 = off")
    ibot_mask_ratio: tuple[Float, Float] = Field((0.1, 0.5), description="masked share of patches (min, max)")
    ibot_mask_probability: Float = Field(0.5, ge=0, le=1, description="share of global views that are masked")
    koleo_weight: Float = Field(
        0.0, ge=0, description="KoLeo regulariser on the student CLS embeddings (DINOv2: 0.1); 0 = off"
    )
    extra_unlabeled: str = Field(
        "", description="optional folder of extra unlabeled images (near-duplicates of val/test images are skipped)"
    )
    adapter: Literal["none", "lora", "dora", "doran"] = Field(
        "none",
        description="fine-tuning: none (model.freeze applies) | lora | dora | doran (backbone frozen, adapters + head)",
    )
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
    n_bins: Int = Field(
        15, gt=1, description="ECE and reliability-diagram bins, equal-width and equal-mass (calibrate and evaluate)"
    )
    bootstrap: Int = Field(
        1000,
        gt=0,
        description="resamples of the paired bootstrap that compares phase 4 with phase 1 on val_select (model: best)",
    )
    seed: Int = Field(0, description="seed of that bootstrap")


class ExportParams(Section):
    model_name: str = Field("roadwork-dinov3", description="model_card.json's model_name")
    version: str = Field("0.1.0", description="model_card.json's version")
    submitted_by: str = Field("", description="your miner hotkey (public, not a secret); goes into model_card.json")
    onnx: StrictBool = Field(True, description="also write model.onnx (parity-checked)")
    bootstrap: Int = Field(
        1000,
        gt=0,
        description="bootstrap resamples: val_test intervals (evaluate) and the views decision on val_select (export)",
    )
    protocol_seed: Int = Field(
        0, description="seed of the protocol's augmentation draws, its reward stream and the bootstraps"
    )
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
    """Multi-view vs single view on val_test (export stage); the defaults of `roadwork predict`'s flags."""

    multiview_overlap: Float = Field(0.2, ge=0, lt=1, description="overlap of neighbouring tiles (fraction of a tile)")
    multiview_topk: Int = Field(
        3, gt=0, description="mean of the k highest roadwork probabilities (not the k most confident views)"
    )
    multiview_grid: Int = Field(2, gt=0, description="tiles per side (plus the whole image)")
    flip_tta: StrictBool = Field(
        False, description="multi-view: average each view with its horizontal mirror (never the single view)"
    )


class Params(Section):
    data: DataParams = Field(DataParams(), description="where the images come from (download)")
    dedup: DedupParams = Field(DedupParams(), description="exact and near-duplicates (dedup)")
    split: SplitParams = Field(
        SplitParams(),
        description="clusters to train / val_select / val_calib / val_test, no near-duplicate across (split)",
    )
    model: ModelParams = Field(
        ModelParams(), description="the timm DINOv3 backbone and its one-logit head (train_phase1, explora)"
    )
    train: TrainParams = Field(TrainParams(), description="supervised fine-tuning (train_phase1, explora)")
    threshold: ThresholdParams = Field(ThresholdParams(), description="the decision threshold (threshold)")
    explora: ExploraParams = Field(
        ExploraParams(),
        description="phase 4: ExPLoRA self-supervised pre-training (DINO), then fine-tuning "
        "(src/roadwork/train/ssl.py)",
    )
    calibrate: CalibrateParams = Field(
        CalibrateParams(), description="the model to ship and its calibration under the validators' prior (calibrate)"
    )
    export: ExportParams = Field(
        ExportParams(), description="the bundle a miner loads (export) and its figures on val_test (evaluate)"
    )
    predict: PredictParams = Field(
        PredictParams(), description="multi-view vs single view on val_test (export); `roadwork predict` flags"
    )
    # the embedded default: the tiny random-weight backend on 4 sources per (split, label) (about a minute on a
    # CPU); SynthesizeParams' own defaults are the validators' (presets/real.yaml: the hub models)
    synthesize: SynthesizeParams = Field(
        SynthesizeParams(backend="tiny", sources_per_label=4),
        description="the validators' synthetic challenges; in the embedded default the tiny backend on 4 sources per "
        "(split, label), every other default is the validators' value (src/roadwork/synthesize/params.py cites "
        "their code)",
    )

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

"""One GPU check of the real run (issue 12, part 2): phase-1 updates and ExPLoRA updates of the real
preset's model (ViT-H/16+, DoRAN head, bf16, 224 px), random weights, through the project's own code
paths, and the detector's per-query latency. Under 8 minutes on one GPU.

    python benchmarks/gpu_check.py --json benchmarks/out/gpu_check.json          # CUDA, the real sizes
    python benchmarks/gpu_check.py --device cpu --tiny --steps 3 --json out.json  # CI-sized, same code paths

What runs (one process, one GPU: one rank's share of the preset's 2-GPU run, without DDP):

* settings: ``presets/real.yaml`` over ``params.yaml`` (``roadwork.presets.resolve``), random initial
  weights (no hub access), LayerScale started at ``--init-values`` (1.0; DINOv3's 1e-5 makes a random
  backbone give every image the same CLS embedding, below bf16's resolution, so nothing could be
  learnt), and ExPLoRA at the paper's scale (:data:`PAPER_SCALE_EXPLORA`, the sizes
  ``benchmarks/explora_memory.py`` and docs/pipeline.md use) where the preset leaves ``explora.*`` at
  params.yaml's CPU sizes. Every change to the resolved preset is printed and written to the JSON;
* phase 1: ``build_model`` + ``apply_freeze_policy`` (``model.freeze``), ``supervised.param_groups``
  (``decay_groups``: backbone and head learning rates), ``loop.Optimization`` (timm AdamW,
  clipping, accumulation over ``train.grad_accum_steps`` micro-batches of ``train.batch_size /
  (train.processes x grad_accum_steps)`` images), ``loop.autocast``; the loss of
  ``supervised.train`` (BCE on the logit, ``soft_targets``). Mixup/cutmix (data-side) are left out so
  the batch stays fixed;
* ExPLoRA: ``ExploraSSL`` (student + EMA teacher + DINO head) and ``ssl.SSLTrainer.step`` (one update:
  teacher forward, student forward over all views, DINO loss, backward, AdamW, EMA) on
  ``MultiCropTransform`` views (2 global + N local crops); micro-batch ``explora.batch_size /
  (train.processes x explora.grad_accum_steps)``; activation checkpointing as
  ``--ssl-checkpointing`` says (auto: on when the estimate does not fit the card);
* each phase: ``--steps`` + 1 optimizer updates on one FIXED batch (random images, labels 0/1), the
  learning-rate schedule compressed into them (no warm-up, cosine from the peak ``lr``; ExPLoRA's
  prototype layer trained from the first update). Update 0 is the warm-up and is counted with
  ``torch.utils.flop_counter.FlopCounterMode`` (matmuls, convolutions and CUDA attention kernels;
  element-wise ops and the optimizer are not counted; CPU attention is not counted either); the
  other ``--steps`` updates are timed. Data loading is not part of the check;
* numerics: every loss finite; phase 1's eval-mode loss on the fixed batch before the first and after
  the last update (no DoRAN noise) must decrease (the model can overfit one batch). ExPLoRA's DINO
  loss (first vs last update) is reported, not judged: its target, the teacher, moves;
* memory: ``torch.cuda.max_memory_allocated`` per phase (CPU: the process's peak RSS) beside the
  estimate of ``benchmarks/explora_memory.py``'s method (its functions: static bytes from parameter
  counts, activations saved for backward measured on 1- and 2-block CPU models of the real width);
  phase 1: all blocks trainable, 16 bytes per parameter (fp32 weights, gradients, AdamW's 2 moments).
  Single process, so no DDP gradient buckets; the CUDA context is outside both figures;
* detector latency: ``roadwork.miner.latency.measure_latency`` (the miner's ``RoadworkTimmDetector``
  on a bundle written from the random classifier) at 1 view and 1 + grid^2 views, when
  ``roadwork.miner`` exists; otherwise a stand-in: the classifier's fp32 eval forward at those view
  counts (no JPEG decode or preprocessing), and the report says which;
* SDXL (issue 18; CUDA only, ``--sdxl-steps 0`` skips): the validators' t2i and i2i calls (1024 px, 25
  steps, guidance 8, i2i strength 0.7) through diffusers' SDXL pipelines built from
  ``benchmarks/synthesize_rehearsal.py``'s transcribed SDXL base 1.0 configs with random fp16 weights
  (the hub is not reachable): seconds per image, GPU hours per 1,000 images, peak memory, and the UNet's
  TFLOP/s from its counted FLOPs per step (a lower bound: the call's other work is in the seconds).
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import timm
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.flop_counter import FlopCounterMode

from roadwork.config import ExploraParams, Params, parse_params
from roadwork.models.backbone import apply_freeze_policy
from roadwork.models.classifier import build_model, data_config
from roadwork.models.model_dir import model_description
from roadwork.presets import resolve
from roadwork.train.augment import soft_targets
from roadwork.train.distributed import Dist, seed_everything
from roadwork.train.loop import Optimization, autocast
from roadwork.train.multicrop import MultiCropTransform
from roadwork.train.ssl import SSLTrainer
from roadwork.train.student_teacher import ExploraSSL
from roadwork.train.supervised import param_groups

sys.path.insert(0, str(Path(__file__).resolve().parent))
import explora_memory  # noqa: E402  (benchmarks/ is not a package)

GIB = 1024**3
REPO = Path(__file__).resolve().parents[1]

# ExPLoRA at the paper's scale (DINOv3 crops, DINOv2's head, LoRA rank 64): explora_memory.py's defaults.
PAPER_SCALE_EXPLORA = {
    "lora_rank": 64,
    "global_crop_size": 256,
    "local_crop_size": 112,
    "local_crops_number": 8,
    "head_prototypes": 65536,
    "head_hidden_dim": 2048,
    "head_bottleneck_dim": 256,
    "head_layers": 3,
}
# --tiny: what must shrink for 2 CPU cores; everything else (architecture, head, precision, code paths) stays.
TINY = {
    "model": {"overrides": {"embed_dim": 64, "depth": 2, "num_heads": 2}, "img_size": 64},
    "train": {"batch_size": 16, "lr": 1.0e-2, "backbone_lr": 1.0e-3},  # micro-batch 4 x 2; lr: overfits in 3 updates
    "explora": {
        "batch_size": 8,
        "lora_rank": 4,
        "global_crop_size": 64,
        "local_crop_size": 32,
        "local_crops_number": 2,
        "head_prototypes": 256,
        "head_hidden_dim": 64,
        "head_bottleneck_dim": 32,
    },
}
# Peak dense (no sparsity) bf16 tensor-core TFLOP/s with fp32 accumulate, vendor datasheets; the first
# name contained in torch.cuda.get_device_name() wins (so "H100 NVL" before "H100", "A100" before "A10").
PEAK_BF16_TFLOPS = [
    ("GH200", 989.0),
    ("H200", 989.0),
    ("H100 NVL", 835.0),
    ("H100 PCIe", 756.0),
    ("H100", 989.0),
    ("H800", 989.0),
    ("B200", 2250.0),
    ("A100", 312.0),
    ("A800", 312.0),
    ("L40S", 362.0),
    ("L40", 181.0),
    ("RTX 6000 Ada", 364.0),
    ("A6000", 155.0),
    ("A40", 150.0),
    ("A10", 125.0),
    ("L4", 121.0),
    ("RTX 4090", 165.0),
    ("RTX 3090", 71.0),
]


def peak_bf16_tflops(device_name: str) -> float | None:
    for key, tflops in PEAK_BF16_TFLOPS:
        if key in device_name:
            return tflops
    return None


# ------------------------------------------------------------------------------ settings
def check_params(preset: Path, params_path: Path, tiny: bool, init_values: float | None) -> tuple[Params, list[str]]:
    """The resolved preset with the check's changes (random weights, LayerScale start, paper-scale
    ExPLoRA, --tiny), validated again; and a note per change."""
    params = resolve(preset, params_path)
    raw, notes = params.model_dump(mode="json"), []
    raw["model"]["pretrained"] = "none"
    notes.append("random initial weights (model.pretrained: none; the hub is not reachable)")
    scaled = {k: v for k, v in PAPER_SCALE_EXPLORA.items() if raw["explora"][k] != v}
    if scaled:
        notes.append(
            f"explora.* at the paper's scale (the resolved preset has "
            f"{ {k: raw['explora'][k] for k in scaled} }): {scaled}"
        )
        raw["explora"].update(scaled)
    if tiny:
        for section, values in TINY.items():
            raw[section].update(values)
        notes.append(f"--tiny: {TINY}")
    if init_values is not None:
        raw["model"]["overrides"]["init_values"] = init_values
        notes.append(f"model.overrides.init_values: {init_values} (LayerScale start of the random weights)")
    return parse_params(raw, f"{preset} (gpu_check)"), notes


def memory_args(params: Params, cfg: ExploraParams, unfrozen_blocks: int):
    """explora_memory.py's command-line arguments for these settings."""
    return argparse.Namespace(
        backbone=params.model.backbone,
        overrides=dict(params.model.overrides),
        unfrozen_blocks=unfrozen_blocks,
        lora_rank=cfg.lora_rank,
        global_size=cfg.global_crop_size,
        local_size=cfg.local_crop_size,
        local_crops=cfg.local_crops_number,
        prototypes=cfg.head_prototypes,
        head_hidden=cfg.head_hidden_dim,
        bottleneck=cfg.head_bottleneck_dim,
        head_layers=cfg.head_layers,
    )


def explora_estimate(params: Params, cfg: ExploraParams, micro_batch: int, checkpointing: bool) -> dict:
    """explora_memory.py's per-GPU peak for one process (no DDP buckets), bytes."""
    args = memory_args(params, cfg, cfg.unfrozen_blocks)
    c = explora_memory.counts(args)
    trainable = c["trainable"] + c["head"]
    static = (c["total"] + c["head"]) * 4 + trainable * 4 * 4  # weights; EMA copies, gradients, AdamW x2
    activations = 0
    blocks = []
    for size, images in (
        (cfg.global_crop_size, 2 * micro_batch),
        (cfg.local_crop_size, cfg.local_crops_number * micro_batch),
    ):
        if images:
            saved, block = explora_memory.forward_bytes(
                explora_memory.activation_model(args, size), c, args, images, checkpointing
            )
            activations += saved
            blocks.append(block)
    activations += max(blocks)  # one block recomputed / backward workspace
    return {"static": static, "activations": activations, "total": static + activations}


def phase1_estimate(params: Params, micro_batch: int, parameters: int) -> dict:
    """explora_memory.py's method for phase 1: every block trainable (``model.freeze: full``), 16 bytes
    per parameter, activations of one micro-batch at ``model.img_size`` (no DINO head: a 2-wide stand-in)."""
    tiny_head = ExploraParams(
        lora_rank=1,
        head_prototypes=2,
        head_hidden_dim=2,
        head_bottleneck_dim=2,
        head_layers=1,
        global_crop_size=params.model.img_size,
    )
    c = explora_memory.counts(memory_args(params, tiny_head, 0))
    args = memory_args(params, tiny_head, c["depth"])
    saved, block = explora_memory.forward_bytes(
        explora_memory.activation_model(args, params.model.img_size), c, args, micro_batch, False
    )
    static = parameters * 16
    return {"static": static, "activations": saved + block, "total": static + saved + block}


# ------------------------------------------------------------------------------ measuring
def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory(device: torch.device) -> tuple[int, str]:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device), "torch.cuda.max_memory_allocated"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "process peak RSS (CPU; whole run so far)"


def timed_updates(update, steps: int, device: torch.device) -> tuple[list, float, float]:
    """Update 0 under the FLOP counter (warm-up), then ``steps`` timed updates.
    Returns (each update's output, FLOPs of one update, seconds of the timed updates)."""
    with FlopCounterMode(display=False) as counter:
        outputs = [update(0)]
    flops = counter.get_total_flops()
    synchronize(device)
    start = time.perf_counter()
    for step in range(1, steps + 1):
        outputs.append(update(step))
    synchronize(device)
    return outputs, float(flops), time.perf_counter() - start


def rates(images_per_update: int, steps: int, seconds: float, flops: float, peak_tflops: float | None) -> dict:
    tflops = flops * steps / seconds / 1e12
    return {
        "updates_timed": steps,
        "seconds": seconds,
        "seconds_per_update": seconds / steps,
        "images_per_s": images_per_update * steps / seconds,
        "tflop_per_update": flops / 1e12,
        "tflops_per_s": tflops,
        "mfu": tflops / peak_tflops if peak_tflops else None,
    }


def phase1(params: Params, device: torch.device, steps: int, peak_tflops: float | None) -> dict:
    t = params.train
    micro = t.batch_size // (t.processes * t.grad_accum_steps)
    reset_memory(device)
    seed_everything(t.seed)
    with torch.device(device):
        model = build_model(params.model)
    model.to(device)
    counts = apply_freeze_policy(model.backbone, params.model.freeze, params.model.freeze_last_n)
    parameters = sum(p.numel() for p in model.parameters())
    optimization = Optimization(
        param_groups(model, t),
        lr=t.lr,
        min_lr=t.min_lr,
        weight_decay=t.weight_decay,
        epochs=1,
        warmup_epochs=0,
        updates_per_epoch=steps + 1,
        grad_accum_steps=t.grad_accum_steps,
        clip_grad=t.clip_grad,
        precision=t.precision,
        device=device,
    )
    generator = torch.Generator().manual_seed(t.seed)
    size = params.model.img_size
    batch = [
        (torch.randn(micro, 3, size, size, generator=generator).to(device), (torch.arange(micro) % 2).to(device))
        for _ in range(t.grad_accum_steps)
    ]

    def loss_of(images, labels):
        with autocast(t.precision, device):
            logits = model(images).reshape(len(images))
        return F.binary_cross_entropy_with_logits(logits.float(), soft_targets(labels, t.label_smoothing))

    @torch.no_grad()
    def eval_loss() -> float:
        model.eval()
        value = sum(float(loss_of(x, y)) for x, y in batch) / len(batch)
        model.train()
        return value

    def update(step: int) -> torch.Tensor:  # supervised.train's inner loop on the fixed batch
        optimization.zero_grad()
        total = torch.zeros((), device=device)
        for index, (images, labels) in enumerate(batch):
            with optimization.sync(model, index):
                loss = loss_of(images, labels)
                optimization.backward(loss)
            total += loss.detach() / t.grad_accum_steps
        optimization.step(model.parameters(), step + 1)
        return total

    before = eval_loss()
    model.train()
    losses, flops, seconds = timed_updates(update, steps, device)
    after = eval_loss()
    memory, source = peak_memory(device)
    losses = [float(v) for v in losses]
    estimate = phase1_estimate(params, micro, parameters)
    model = optimization = batch = None  # free the GPU memory before the next check
    return {
        "micro_batch": micro,
        "grad_accum_steps": t.grad_accum_steps,
        "images_per_update": micro * t.grad_accum_steps,
        "parameters": parameters,
        "trainable_backbone_parameters": int(counts.trainable),
        **rates(micro * t.grad_accum_steps, steps, seconds, flops, peak_tflops),
        "peak_memory_gib": memory / GIB,
        "peak_memory_source": source,
        "estimate_gib": estimate["total"] / GIB,
        "estimate_static_gib": estimate["static"] / GIB,
        "estimate_activations_gib": estimate["activations"] / GIB,
        "losses": losses,
        "loss_first": losses[0],
        "loss_last": losses[-1],
        "eval_loss_before": before,
        "eval_loss_after": after,
        "loss_finite": all(math.isfinite(v) for v in losses + [before, after]),
        "loss_decreased": after < before,
    }


def fixed_views(
    params: Params, cfg: ExploraParams, mean, std, micro: int, accum: int, device
) -> list[list[torch.Tensor]]:
    """``accum`` micro-batches of MultiCropTransform views (as the loader collates them) of random images."""
    transform = MultiCropTransform(cfg, mean, std)
    rng = np.random.default_rng(params.train.seed)
    side = cfg.global_crop_size * 5 // 4
    batches = []
    for _ in range(accum):
        items = [
            transform(Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8))) for _ in range(micro)
        ]
        batches.append([torch.stack(views).to(device) for views in zip(*items)])
    return batches


def explora(params: Params, device: torch.device, steps: int, peak_tflops: float | None, checkpointing: str) -> dict:
    micro = params.explora.batch_size // (params.train.processes * params.explora.grad_accum_steps)
    estimate = explora_estimate(params, params.explora, micro, False)
    if checkpointing == "auto":
        fits = (
            device.type != "cuda"
            or estimate["total"] + 3 * GIB <= torch.cuda.get_device_properties(device).total_memory
        )
        use_checkpointing = params.explora.grad_checkpointing or not fits
    else:
        use_checkpointing = checkpointing == "on"
    if use_checkpointing:
        estimate = explora_estimate(params, params.explora, micro, True)
    # The schedules compressed into the check's updates (no warm-ups; prototype layer trained from update 0).
    cfg = ExploraParams.model_validate(
        {
            **params.explora.model_dump(),
            "epochs": 1,
            "warmup_epochs": 0,
            "freeze_last_layer_epochs": 0,
            "teacher_temp_warmup_epochs": 0,
            "grad_checkpointing": use_checkpointing,
        }
    )
    reset_memory(device)
    seed_everything(params.train.seed)
    with torch.device(device):
        classifier = build_model(params.model)
    mean_std = data_config(classifier)
    ssl = ExploraSSL(classifier.backbone, cfg)
    del classifier
    trainer = SSLTrainer(ssl, params.train.precision, Dist(0, 1, device), updates_per_epoch=steps + 1)
    batches = fixed_views(params, cfg, mean_std["mean"], mean_std["std"], micro, cfg.grad_accum_steps, device)
    losses, flops, seconds = timed_updates(lambda step: trainer.step(iter(batches), step), steps, device)
    memory, source = peak_memory(device)
    counts = ssl.trainable_counts()
    ssl = trainer = batches = None
    first, last = losses[0], losses[-1]
    values = [s["loss"] for s in losses]
    return {
        "micro_batch": micro,
        "grad_accum_steps": cfg.grad_accum_steps,
        "images_per_update": micro * cfg.grad_accum_steps,
        "views": f"2 x {cfg.global_crop_size} px + {cfg.local_crops_number} x {cfg.local_crop_size} px",
        "grad_checkpointing": use_checkpointing,
        "parameters": counts,
        **rates(micro * cfg.grad_accum_steps, steps, seconds, flops, peak_tflops),
        "peak_memory_gib": memory / GIB,
        "peak_memory_source": source,
        "estimate_gib": estimate["total"] / GIB,
        "estimate_static_gib": estimate["static"] / GIB,
        "estimate_activations_gib": estimate["activations"] / GIB,
        "losses": values,
        "loss_first": first["loss"],
        "loss_last": last["loss"],
        "teacher_entropy_last": last["teacher_entropy"],
        "embedding_std_last": last["embedding_std"],
        "loss_finite": all(math.isfinite(v) for v in values),
        "loss_decreased": last["loss"] < first["loss"],
    }


def median_seconds(fn, repeats: int, device: torch.device) -> float:
    fn()
    times = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def detector_latency(params: Params, device: torch.device, repeats: int) -> dict:
    """Seconds per query at 1 view and 1 + grid^2 views (the preset's predict.*, fp32 as the detector)."""
    p = params.predict
    views = [1, 1 + p.multiview_grid**2]
    seed_everything(params.train.seed)
    with torch.device(device):  # random init on the device: seconds instead of a minute for ViT-H on the CPU
        classifier = build_model(params.model).eval()
    try:
        from roadwork.miner.latency import measure_latency
    except ImportError:
        measure_latency = None
    if measure_latency is not None:
        from roadwork.export.bundle import _write_hf_layout, stock_model

        description = model_description(params.model, classifier)
        with tempfile.TemporaryDirectory() as scratch:
            bundle = Path(scratch) / "bundle"
            bundle.mkdir()
            _write_hf_layout(stock_model(classifier, 1.0, 0.0), description, bundle)
            del classifier
            out = measure_latency(
                bundle,
                grid=p.multiview_grid,
                overlap=p.multiview_overlap,
                topk=p.multiview_topk,
                flip_tta=False,
                repeats=repeats,
                device=str(device),
            )
        return {
            "source": "roadwork.miner.latency.measure_latency (RoadworkTimmDetector: decoded 224 px JPEG in, "
            "probability out; fp32)",
            "seconds_per_query": {str(v): out["views"][str(v)]["detector_s"] for v in views},
            "timm_forward_1_image_s": out["timm_forward_1_image_s"],
        }
    classifier.to(device)
    size = params.model.img_size
    seconds = {}
    for n in views:
        x = torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(n)).to(device)
        with torch.inference_mode():
            seconds[str(n)] = median_seconds(lambda x=x, classifier=classifier: classifier(x), repeats, device)
    del classifier
    return {
        "source": "stand-in: roadwork.miner is not on this branch; the classifier's fp32 eval forward of 1 and "
        "1 + grid^2 views in one batch (no decode, no preprocessing)",
        "seconds_per_query": seconds,
    }


# ------------------------------------------------------------------------------ SDXL (issue 18)
def build_sdxl(device: torch.device, dtype=torch.float16):
    """SDXL base 1.0's t2i and i2i pipelines from ``synthesize_rehearsal.py``'s transcribed configs, random
    weights (the hub is not reachable from the lent machine either), the project's offline tokenizer
    (token ids only; CLIP's vocabulary size), SDXL base's Euler scheduler settings, no watermarker."""
    import synthesize_rehearsal as sr  # benchmarks/ is on sys.path
    from diffusers import (
        AutoencoderKL,
        EulerDiscreteScheduler,
        StableDiffusionXLImg2ImgPipeline,
        StableDiffusionXLPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from roadwork.synthesize.models import tiny_tokenizer

    torch.manual_seed(0)
    with torch.device(device):
        modules = dict(
            unet=UNet2DConditionModel(**sr.SDXL_UNET),
            vae=AutoencoderKL(**sr.SDXL_VAE),
            text_encoder=CLIPTextModel(CLIPTextConfig(**sr.SDXL_TEXT_ENCODER)),
            text_encoder_2=CLIPTextModelWithProjection(CLIPTextConfig(**sr.SDXL_TEXT_ENCODER_2)),
        )
    for module in modules.values():
        module.to(dtype).eval()
    scheduler = EulerDiscreteScheduler(  # stable-diffusion-xl-base-1.0 scheduler/scheduler_config.json
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        num_train_timesteps=1000,
        prediction_type="epsilon",
        steps_offset=1,
        timestep_spacing="leading",
        interpolation_type="linear",
        use_karras_sigmas=False,
    )
    tokenizer = tiny_tokenizer(model_max_length=77)
    t2i = StableDiffusionXLPipeline(
        **modules, tokenizer=tokenizer, tokenizer_2=tokenizer, scheduler=scheduler, add_watermarker=False
    )
    i2i = StableDiffusionXLImg2ImgPipeline(**t2i.components, add_watermarker=False)
    for pipe in (t2i, i2i):
        pipe.set_progress_bar_config(disable=True)
    return t2i, i2i


def time_sdxl(
    t2i,
    i2i,
    device: torch.device,
    steps: int,
    size: int,
    repeats: int,
    unet_flops_per_step: float | None,
    peak_tflops: float | None,
) -> dict:
    """Seconds per image of the validators' t2i (``steps`` steps) and i2i (strength 0.7 from a ``size`` px
    image) calls: guidance 8, one image, ``output_type="pt"`` (no PIL conversion); one warm-up call each,
    then the median of ``repeats``. UNet TFLOP/s from the counted FLOPs per step (``unet_flops_per_step``)."""
    prompt, negative = "Photorealistic dashcam footage of a road", "cartoon, anime, painting"
    image = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    calls = {
        "t2i": (
            steps,
            lambda: t2i(
                prompt=prompt,
                negative_prompt=negative,
                num_inference_steps=steps,
                guidance_scale=8.0,
                height=size,
                width=size,
                output_type="pt",
            ),
        ),
        "i2i": (
            int(steps * 0.7),
            lambda: i2i(
                prompt=prompt,
                negative_prompt=negative,
                image=image,
                strength=0.7,
                num_inference_steps=steps,
                guidance_scale=8.0,
                output_type="pt",
            ),
        ),
    }
    out = {"size": size, "num_inference_steps": steps, "repeats": repeats}
    for kind, (unet_steps, call) in calls.items():
        reset_memory(device)
        seconds = median_seconds(call, repeats, device)
        memory, source = peak_memory(device)
        flops = unet_flops_per_step * unet_steps if unet_flops_per_step else None
        tflops = flops / seconds / 1e12 if flops else None
        out[kind] = {
            "unet_steps": unet_steps,
            "seconds_per_image": seconds,
            "images_per_hour": 3600 / seconds,
            "gpu_hours_per_1000_images": 1000 * seconds / 3600,
            "peak_memory_gib": memory / GIB,
            "peak_memory_source": source,
            "unet_tflops_per_s_lower_bound": tflops,
            "unet_mfu_lower_bound": tflops / peak_tflops if tflops and peak_tflops else None,
        }
    return out


def sdxl_check(device: torch.device, steps: int, repeats: int, peak_tflops: float | None) -> dict:
    import synthesize_rehearsal as sr

    flops = sr.meta_flops("unet")["unet_step_cfg"]
    t2i, i2i = build_sdxl(device)
    out = time_sdxl(t2i, i2i, device, steps, 1024, repeats, flops, peak_tflops)
    out["unet_tflop_per_step_cfg"] = flops / 1e12
    out["weights"] = "random, from synthesize_rehearsal.py's transcribed SDXL base 1.0 configs, float16 (no hub)"
    out["note"] = (
        "seconds include text encoders and the VAE (upcast to float32: force_upcast); TFLOP/s and MFU "
        "count only the UNet's FLOPs over the whole call, so they are lower bounds; no CPU offload"
    )
    del t2i, i2i
    return out


# ------------------------------------------------------------------------------ report
def fmt(value, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def print_table(report: dict) -> None:
    d, r1, r4 = report["device"], report["phase1"], report["explora"]
    peak = f"{d['peak_bf16_tflops']:g} TFLOP/s" if d["peak_bf16_tflops"] else "unknown peak"
    print(f"\n== GPU check on {d['name']} (bf16 dense peak: {peak}); torch {d['torch']}, timm {d['timm']}")
    c = report["config"]
    print(
        f"   {c['backbone']} {c['overrides']} at {c['img_size']} px, {c['head_type']} head, {c['precision']}, "
        f"{r1['parameters'] / 1e6:.1f}M parameters"
    )
    rows = [
        (
            "images per update (micro x accum)",
            lambda r: f"{r['images_per_update']} ({r['micro_batch']} x {r['grad_accum_steps']})",
        ),
        ("updates timed", lambda r: str(r["updates_timed"])),
        ("seconds per update", lambda r: f"{r['seconds_per_update']:.3f}"),
        ("images/s", lambda r: f"{r['images_per_s']:.1f}"),
        ("TFLOP per update (FlopCounterMode)", lambda r: f"{r['tflop_per_update']:.4g}"),
        ("achieved TFLOP/s", lambda r: f"{r['tflops_per_s']:.4g}"),
        ("MFU (of bf16 dense peak)", lambda r: "unknown peak" if r["mfu"] is None else f"{r['mfu']:.1%}"),
        ("peak memory GiB", lambda r: f"{r['peak_memory_gib']:.3g}"),
        (
            "estimate GiB (static + activations)",
            lambda r: f"{r['estimate_gib']:.3g} ({r['estimate_static_gib']:.3g} + {r['estimate_activations_gib']:.3g})",
        ),
        ("loss first -> last update", lambda r: f"{r['loss_first']:.4f} -> {r['loss_last']:.4f}"),
        ("all losses finite", lambda r: "yes" if r["loss_finite"] else "NO"),
    ]
    print(f"\n{'':38s} {'phase 1':>24s} {'ExPLoRA':>28s}")
    for name, cell in rows:
        print(f"{name:38s} {cell(r1):>24s} {cell(r4):>28s}")
    print(
        f"{'fixed-batch eval loss before -> after':38s} {r1['eval_loss_before']:.4f} -> {r1['eval_loss_after']:.4f}"
        f" ({'decreased' if r1['loss_decreased'] else 'DID NOT DECREASE'})"
    )
    print(
        f"ExPLoRA: views {r4['views']}, activation checkpointing {'on' if r4['grad_checkpointing'] else 'off'}, "
        f"trainable {r4['parameters']['backbone_trainable']:,} of {r4['parameters']['backbone_total']:,} backbone "
        f"parameters + DINO head {r4['parameters']['head']:,}; last teacher entropy {r4['teacher_entropy_last']:.3f}, "
        f"embedding std {r4['embedding_std_last']:.4f}"
    )
    lat = report["detector_latency"]
    print(
        f"detector latency on {d['name']}: "
        + ", ".join(f"{v} view{'s' if v != '1' else ''} {s * 1000:.1f} ms" for v, s in lat["seconds_per_query"].items())
        + f"  [{lat['source']}]"
    )
    print(
        f"peak memory: {r1['peak_memory_source']}; estimate: benchmarks/explora_memory.py's method, one process "
        f"(no DDP buckets), CUDA context not included"
    )
    for note in report["notes"]:
        print(f"note: {note}")
    sdxl = report.get("sdxl")
    if sdxl:
        print(
            f"SDXL base 1.0 (random fp16 weights) at {sdxl['size']} px, {sdxl['num_inference_steps']} steps, "
            f"guidance 8, UNet {sdxl['unet_tflop_per_step_cfg']:.2f} TFLOP per CFG step:"
        )
        for kind in ("t2i", "i2i"):
            r = sdxl[kind]
            print(
                f"  {kind}: {r['seconds_per_image']:.2f} s/image ({r['unet_steps']} UNet steps), "
                f"{r['gpu_hours_per_1000_images']:.2f} GPU hours per 1,000 images, "
                f"peak {r['peak_memory_gib']:.1f} GiB, "
                f"UNet >= {fmt(r['unet_tflops_per_s_lower_bound'], '.0f')} TFLOP/s "
                f"(MFU >= {fmt(r['unet_mfu_lower_bound'], '.1%')})"
            )
    print(f"total {report['seconds_total']:.0f} s")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    ap.add_argument("--tiny", action="store_true", help="CPU-sized model and batches; same code paths")
    ap.add_argument("--steps", type=int, default=30, help="timed optimizer updates per phase (after 1 warm-up)")
    ap.add_argument("--json", type=Path, help="write the results here (machine-readable)")
    ap.add_argument("--preset", type=Path, default=REPO / "presets" / "real.yaml")
    ap.add_argument("--params", type=Path, default=REPO / "params.yaml")
    ap.add_argument("--init-values", type=float, default=1.0, help="LayerScale start of the random weights")
    ap.add_argument("--ssl-checkpointing", choices=["auto", "on", "off"], default="auto")
    ap.add_argument("--latency-repeats", type=int, default=20)
    ap.add_argument(
        "--sdxl-steps",
        type=int,
        default=25,
        help="CUDA only: time SDXL t2i/i2i at 1024 px with this many steps (the validators' 25); 0 skips",
    )
    ap.add_argument("--sdxl-repeats", type=int, default=3, help="timed SDXL calls per kind (after 1 warm-up)")
    args = ap.parse_args(argv)
    if args.steps < 1:
        ap.error("--steps must be at least 1")
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("gpu_check: --device cuda but torch sees no CUDA device (use --device cpu --tiny for the CPU check)")
    started = time.perf_counter()
    params, notes = check_params(args.preset, args.params, args.tiny, args.init_values)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    peak = peak_bf16_tflops(name) if device.type == "cuda" else None
    if device.type == "cuda" and peak is None:
        notes.append(f"unknown peak: {name!r} is not in PEAK_BF16_TFLOPS; MFU not computed")
    report = {
        "device": {
            "name": name,
            "peak_bf16_tflops": peak,
            "torch": torch.__version__,
            "timm": timm.__version__,
            "memory_gib": torch.cuda.get_device_properties(device).total_memory / GIB
            if device.type == "cuda"
            else None,
        },
        "config": {
            "preset": str(args.preset),
            "tiny": args.tiny,
            "steps": args.steps,
            "backbone": params.model.backbone,
            "overrides": dict(params.model.overrides),
            "img_size": params.model.img_size,
            "head_type": params.model.head_type,
            "precision": params.train.precision,
            "train": params.train.model_dump(mode="json"),
            "explora": params.explora.model_dump(mode="json"),
        },
        "notes": notes,
    }
    print(
        f"gpu_check: {name}, {params.model.backbone} {dict(params.model.overrides)}, {args.steps} timed updates per phase",
        flush=True,
    )
    report["phase1"] = phase1(params, device, args.steps, peak)
    print(f"phase 1 done ({time.perf_counter() - started:.0f} s)", flush=True)
    report["explora"] = explora(params, device, args.steps, peak, args.ssl_checkpointing)
    print(f"ExPLoRA done ({time.perf_counter() - started:.0f} s)", flush=True)
    reset_memory(device)
    report["detector_latency"] = detector_latency(params, device, args.latency_repeats)
    if device.type == "cuda" and args.sdxl_steps:
        reset_memory(device)
        report["sdxl"] = sdxl_check(device, args.sdxl_steps, args.sdxl_repeats, peak)
        print(f"SDXL done ({time.perf_counter() - started:.0f} s)", flush=True)
    report["seconds_total"] = time.perf_counter() - started
    print_table(report)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    ok = report["phase1"]["loss_finite"] and report["explora"]["loss_finite"] and report["phase1"]["loss_decreased"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

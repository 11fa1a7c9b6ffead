"""Full-size rehearsal of the validators' generator on the CPU (issue 18, item 4): the real architectures
(SDXL base 1.0 UNet, VAE and both CLIP text encoders; BLIP-2 opt-2.7b; Llama 3.1 8B) built from their
configs, transcribed below with their sources, with random weights (no hub access), one model at a time in bf16.

    python benchmarks/synthesize_rehearsal.py --json benchmarks/out/synthesize_rehearsal.json

For each model, in its own child process (so the peak RSS is that model's, and two big models are never
held at once; before each child the driver checks ``psutil.virtual_memory().available``):

* measured: parameter count (on the meta device, then again on the materialised model), bytes in bf16/fp16,
  peak RSS after building and after running (``ru_maxrss``), CPU seconds of one forward: one UNet step at
  1024 px (128x128 latents, classifier-free guidance: batch 2), one VAE decode (and the i2i encode) at
  1024 px, the text encoders on the prompt and the negative prompt, BLIP-2's image encode + prefill and one
  caption token, Llama's prefill of the validators' prompt length and one rewrite token;
* counted: FLOPs of each step (``torch.utils.flop_counter.FlopCounterMode``: matmuls, convolutions and
  attention; UNet/VAE/text encoders on the meta device with diffusers' bmm attention, the LMs during the
  real run with eager attention);
* derived (not measured): GPU hours per 1,000 images per card class, from the counted FLOPs, an assumed
  sustained fraction of each card's datasheet peak, and each card's memory bandwidth for the token steps
  (:data:`CARDS`, :data:`COMPUTE_EFFICIENCY`, :data:`BANDWIDTH_EFFICIENCY`).

The CPU seconds say nothing about GPU seconds; they are here to show each step runs at full size.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

GB = 1e9
GIB = 1024**3

# ---------------------------------------------------------------------------------------- configs
# stabilityai/stable-diffusion-xl-base-1.0, unet/config.json (commit 462165984030d82259a11f4367a4eed129e94a7b)
SDXL_UNET = dict(
    sample_size=128,
    in_channels=4,
    out_channels=4,
    layers_per_block=2,
    block_out_channels=(320, 640, 1280),
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    mid_block_type="UNetMidBlock2DCrossAttn",
    attention_head_dim=(5, 10, 20),
    transformer_layers_per_block=(1, 2, 10),
    cross_attention_dim=2048,
    use_linear_projection=True,
    addition_embed_type="text_time",
    addition_time_embed_dim=256,
    projection_class_embeddings_input_dim=2816,
    norm_num_groups=32,
    norm_eps=1e-5,
    act_fn="silu",
    flip_sin_to_cos=True,
    freq_shift=0,
)
# ... vae/config.json
SDXL_VAE = dict(
    in_channels=3,
    out_channels=3,
    latent_channels=4,
    block_out_channels=(128, 256, 512, 512),
    layers_per_block=2,
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    norm_num_groups=32,
    act_fn="silu",
    sample_size=1024,
    scaling_factor=0.13025,
    force_upcast=True,
)
# ... text_encoder/config.json (CLIP ViT-L/14's text tower) and text_encoder_2/config.json (OpenCLIP ViT-bigG/14's)
SDXL_TEXT_ENCODER = dict(
    vocab_size=49408,
    hidden_size=768,
    intermediate_size=3072,
    num_hidden_layers=12,
    num_attention_heads=12,
    max_position_embeddings=77,
    hidden_act="quick_gelu",
    projection_dim=768,
)
SDXL_TEXT_ENCODER_2 = dict(
    vocab_size=49408,
    hidden_size=1280,
    intermediate_size=5120,
    num_hidden_layers=32,
    num_attention_heads=20,
    max_position_embeddings=77,
    hidden_act="gelu",
    projection_dim=1280,
)
# Salesforce/blip2-opt-2.7b-coco, config.json: EVA ViT-g/14 vision tower (transformers' Blip2VisionConfig defaults
# are these values), the Q-Former (Blip2QFormerConfig defaults), 32 query tokens, OPT-2.7b (facebook/opt-2.7b
# config.json); image_token_index 50265 is the "<image>" token the processor expands to the 32 query positions
BLIP2_VISION = dict(
    hidden_size=1408,
    intermediate_size=6144,
    num_hidden_layers=39,
    num_attention_heads=16,
    image_size=224,
    patch_size=14,
    hidden_act="gelu",
    layer_norm_eps=1e-6,
    qkv_bias=True,
)
BLIP2_QFORMER = dict(
    hidden_size=768,
    intermediate_size=3072,
    num_hidden_layers=12,
    num_attention_heads=12,
    cross_attention_frequency=2,
    encoder_hidden_size=1408,
    vocab_size=30522,
)
BLIP2_OPT = dict(
    model_type="opt",
    vocab_size=50272,
    hidden_size=2560,
    ffn_dim=10240,
    num_hidden_layers=32,
    num_attention_heads=32,
    max_position_embeddings=2048,
    word_embed_proj_dim=2560,
    do_layer_norm_before=True,
    bos_token_id=2,
    eos_token_id=50118,
    pad_token_id=1,
)
BLIP2 = dict(num_query_tokens=32, image_token_index=50265)
# unsloth/Meta-Llama-3.1-8B-Instruct, config.json (= meta-llama/Llama-3.1-8B-Instruct's)
LLAMA_31_8B = dict(
    vocab_size=128256,
    hidden_size=4096,
    intermediate_size=14336,
    num_hidden_layers=32,
    num_attention_heads=32,
    num_key_value_heads=8,
    max_position_embeddings=131072,
    rms_norm_eps=1e-5,
    rope_theta=500000.0,
    rope_scaling=dict(
        rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0, original_max_position_embeddings=8192
    ),
    tie_word_embeddings=False,
    bos_token_id=128000,
    eos_token_id=128009,
    hidden_act="silu",
)

# Known totals (model cards / the safetensors index of each repo), for the parameter-count check
KNOWN_PARAMETERS = {
    "unet": 2.567e9,
    "vae": 83.65e6,
    "text_encoder": 123.06e6,
    "text_encoder_2": 694.66e6,
    "blip2": 3.745e9,
    "llama": 8.030e9,
}

# ------------------------------------------------------------------------------ the validators' workload
STEPS_T2I = 25  # config.py:82
STEPS_I2I = int(25 * 0.7)  # config.py:108-109: strength 0.7 runs int(25 * 0.7) = 17 of the 25 steps
TEXT_TOKENS = 77  # CLIP's context; the pipeline pads the prompt and the negative prompt to 77
# prompt_generator.py:134: BLIP-2 gets the image and text "": 32 query positions + BOS
CAPTION_PREFILL_TOKENS = BLIP2["num_query_tokens"] + 1
CAPTION_TOKENS = 20  # assumed: a COCO-style caption is ~10-15 words; generate stops at EOS (max_new_tokens=80)
# prompt_generator.py:168-199: Llama 3.1's chat template (its default system header ~25 tokens) + the label's
# instruction (~60 words, ~90 tokens) + the caption (~20 tokens) + the assistant header: ~160 tokens (an estimate:
# the real tokenizer is not reachable offline; ~1.3 tokens per English word)
REWRITE_PREFILL_TOKENS = 160
REWRITE_TOKENS = 80  # max_new_tokens=80 (prompt_generator.py:154); a rewrite of a caption is taken to use them all

# Card classes: datasheet dense fp16/bf16 tensor-core peak (fp32 accumulate), memory bandwidth, host link.
# RTX 4090: Ada whitepaper (165.2 TFLOP/s, 1008 GB/s, PCIe 4.0 x16); L40S: NVIDIA datasheet (362 TFLOP/s, 864 GB/s,
# PCIe 4.0); A100 80GB SXM: datasheet (312 TFLOP/s, 2039 GB/s, PCIe 4.0); H100 SXM: datasheet (989 TFLOP/s,
# 3350 GB/s, PCIe 5.0). Host link: ~25 GB/s (PCIe 4.0 x16) and ~50 GB/s (PCIe 5.0 x16) sustained.
CARDS = [
    {"card": "RTX 4090", "memory_gb": 24, "tflops": 165.2, "bandwidth_gb_s": 1008, "host_gb_s": 25},
    {"card": "L40S", "memory_gb": 48, "tflops": 362.0, "bandwidth_gb_s": 864, "host_gb_s": 25},
    {"card": "A100 80GB", "memory_gb": 80, "tflops": 312.0, "bandwidth_gb_s": 2039, "host_gb_s": 25},
    {"card": "H100 SXM", "memory_gb": 80, "tflops": 989.0, "bandwidth_gb_s": 3350, "host_gb_s": 50},
]
# Assumed sustained fractions (not measured here; gpu_check.py --sdxl-steps measures the UNet's on a lent GPU):
COMPUTE_EFFICIENCY = 0.35  # of the dense peak, for the UNet, VAE, text encoders and LM prefills in fp16
BANDWIDTH_EFFICIENCY = 0.7  # of the memory bandwidth, for a batch-1 token step (reads every weight once)
# bitsandbytes nf4 (the validators' "-bnb-4bit" twin on CUDA): 0.5 byte per parameter, but the embeddings and the
# lm_head (2 x 128256 x 4096) stay 16-bit: 1.5 bytes more for each of those; ~5.6 GB
LLAMA_4BIT_BYTES = 8.030e9 * 0.5 + 2 * 128256 * 4096 * 1.5


def bf16_default():
    """Build parameters directly in bf16 (no fp32 copy at full size)."""

    @contextlib.contextmanager
    def context():
        previous = torch.get_default_dtype()
        torch.set_default_dtype(torch.bfloat16)
        try:
            yield
        finally:
            torch.set_default_dtype(previous)

    return context()


# --------------------------------------------------------------------------------------- builders
def build(name: str, device: str):
    """The model ``name`` on ``device`` ("meta": shapes only), bf16, eval mode, random weights."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import (
        Blip2Config,
        Blip2ForConditionalGeneration,
        CLIPTextConfig,
        CLIPTextModel,
        CLIPTextModelWithProjection,
        LlamaConfig,
        LlamaForCausalLM,
    )

    with torch.device(device), bf16_default():
        if name == "unet":
            model = UNet2DConditionModel(**SDXL_UNET)
        elif name == "vae":
            model = AutoencoderKL(**SDXL_VAE)
        elif name == "text_encoders":
            model = torch.nn.ModuleDict(
                {
                    "text_encoder": CLIPTextModel(CLIPTextConfig(**SDXL_TEXT_ENCODER)),
                    "text_encoder_2": CLIPTextModelWithProjection(CLIPTextConfig(**SDXL_TEXT_ENCODER_2)),
                }
            )
        elif name == "blip2":
            config = Blip2Config(
                vision_config=BLIP2_VISION, qformer_config=BLIP2_QFORMER, text_config=BLIP2_OPT, **BLIP2
            )
            config._attn_implementation = "eager"
            model = Blip2ForConditionalGeneration(config)
        elif name == "llama":
            model = LlamaForCausalLM(LlamaConfig(**LLAMA_31_8B, attn_implementation="eager"))
        else:
            raise ValueError(f"unknown model {name!r}; one of {MODELS}")
    return model.to(torch.bfloat16).eval().requires_grad_(False)  # inference only (and FlopCounterMode's tracker)


MODELS = ("text_encoders", "unet", "vae", "blip2", "llama")


def diffusion_steps(name: str, model, device: str) -> dict:
    """The model's step(s) as closures over inputs on ``device``."""
    g = torch.Generator().manual_seed(0)

    def randn(*shape):
        return torch.randn(*shape, generator=g).to(device=device, dtype=torch.bfloat16)

    if name == "unet":
        latents, context = randn(2, 4, 128, 128), randn(2, TEXT_TOKENS, 2048)
        added = {
            "text_embeds": randn(2, 1280),
            "time_ids": torch.tensor([[1024, 1024, 0, 0, 1024, 1024]] * 2, device=device, dtype=torch.bfloat16),
        }
        t = torch.tensor(500, device=device)
        return {"unet_step_cfg": lambda: model(latents, t, encoder_hidden_states=context, added_cond_kwargs=added)}
    if name == "vae":
        latents, image = randn(1, 4, 128, 128), randn(1, 3, 1024, 1024)
        return {"vae_decode_1024": lambda: model.decode(latents), "vae_encode_1024": lambda: model.encode(image)}
    if name == "text_encoders":
        ids = torch.randint(0, 49407, (2, TEXT_TOKENS), generator=g).to(device)  # prompt + negative prompt
        return {
            "text_encoders": lambda: (
                model["text_encoder"](ids, output_hidden_states=True),
                model["text_encoder_2"](ids, output_hidden_states=True),
            )
        }
    raise ValueError(name)


def meta_flops(name: str) -> dict:
    """FLOPs of each diffusion step, counted on the meta device (no memory, no compute)."""
    from diffusers.models.attention_processor import AttnProcessor

    model = build(name, "meta")
    if hasattr(model, "set_attn_processor"):
        model.set_attn_processor(AttnProcessor())  # bmm attention: counted (CPU SDPA is not)
    flops = {}
    with torch.inference_mode():
        for step, fn in diffusion_steps(name, model, "meta").items():
            with FlopCounterMode(display=False) as counter:
                fn()
            flops[step] = float(counter.get_total_flops())
    return flops


def parameter_counts(model) -> dict:
    if isinstance(model, torch.nn.ModuleDict):
        return {k: sum(p.numel() for p in m.parameters()) for k, m in model.items()}
    return {"total": sum(p.numel() for p in model.parameters())}


def rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GIB


def lm_steps(name: str, model) -> tuple[dict, dict]:
    """Prefill and one token step through ``generate`` (the validators' call), timed and counted:
    generate(1 token) = prefill (+ BLIP-2's image encode); (generate(3) - generate(1)) / 2 = one token step."""
    g = torch.Generator().manual_seed(0)
    if name == "blip2":
        pixels = torch.randn(1, 3, 224, 224, generator=g).to(torch.bfloat16)
        ids = torch.tensor([[BLIP2["image_token_index"]] * BLIP2["num_query_tokens"] + [BLIP2_OPT["bos_token_id"]]])
        inputs = {"pixel_values": pixels, "input_ids": ids, "attention_mask": torch.ones_like(ids)}
        prefill = "caption_encode_prefill"
    else:
        ids = torch.randint(0, 128000, (1, REWRITE_PREFILL_TOKENS), generator=g)
        inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
        prefill = "rewrite_prefill"

    def generate(n):
        return model.generate(**inputs, max_new_tokens=n, min_new_tokens=n, do_sample=False)

    seconds, flops = {}, {}
    with torch.inference_mode():
        with FlopCounterMode(display=False) as counter:  # warm-up, counted
            generate(1)
        flops[prefill] = float(counter.get_total_flops())
        start = time.perf_counter()
        generate(1)
        seconds[prefill] = time.perf_counter() - start
        with FlopCounterMode(display=False) as counter:
            start = time.perf_counter()
            generate(3)
            three = time.perf_counter() - start
        flops[name + "_token"] = (float(counter.get_total_flops()) - flops[prefill]) / 2
        seconds[name + "_token"] = (three - seconds[prefill]) / 2
    return seconds, flops


def child(name: str, repeats: int) -> dict:
    """One model: counts, build, run; the JSON the driver reads."""
    torch.manual_seed(0)
    out = {"model": name, "torch_threads": torch.get_num_threads()}
    start = time.perf_counter()
    meta = build(name, "meta")
    out["parameters_meta"] = parameter_counts(meta)
    del meta
    if name in ("unet", "vae", "text_encoders"):
        out["flops"] = meta_flops(name)
    out["meta_seconds"] = time.perf_counter() - start
    start = time.perf_counter()
    model = build(name, "cpu")
    out["build_seconds"] = time.perf_counter() - start
    out["parameters"] = parameter_counts(model)
    total = sum(out["parameters"].values())
    out["bytes_16bit"] = total * 2
    out["peak_rss_after_build_gib"] = rss_gib()
    if name in ("unet", "vae", "text_encoders"):
        seconds = {}
        with torch.inference_mode():
            for step, fn in diffusion_steps(name, model, "cpu").items():
                times = []
                for _ in range(repeats):
                    begin = time.perf_counter()
                    fn()
                    times.append(time.perf_counter() - begin)
                seconds[step] = times
        out["cpu_seconds"] = {k: min(v) for k, v in seconds.items()}
        out["cpu_seconds_all"] = seconds
    else:
        out["cpu_seconds"], out["flops"] = lm_steps(name, model)
    out["peak_rss_gib"] = rss_gib()
    return out


# ------------------------------------------------------------------------------------------ driver
def available_gib() -> float:
    import psutil

    return psutil.virtual_memory().available / GIB


# bf16 weights + what a step needs on top (generous): the driver refuses to start a child below this
NEEDED_GIB = {"text_encoders": 4, "unet": 12, "vae": 8, "blip2": 11, "llama": 19}


def run_children(names, repeats: int, log, keep: Path | None) -> dict:
    """Each model in its own child process; with ``keep``, each child's JSON is kept there and reused."""
    results = {}
    for name in names:
        kept = keep / f"{name}.json" if keep else None
        if kept and kept.exists():
            results[name] = json.loads(kept.read_text())
            log(f"{name}: reused {kept}")
            continue
        free = available_gib()
        log(f"{name}: {free:.1f} GiB available (need {NEEDED_GIB[name]}), load average {os.getloadavg()}")
        if free < NEEDED_GIB[name]:
            results[name] = {"model": name, "skipped": f"only {free:.1f} GiB available, {NEEDED_GIB[name]} needed"}
            log(f"{name}: SKIPPED ({results[name]['skipped']})")
            continue
        load = os.getloadavg()
        proc = subprocess.run(
            [sys.executable, __file__, "--child", name, "--repeats", str(repeats)], capture_output=True, text=True
        )
        if proc.returncode != 0:
            raise SystemExit(f"synthesize_rehearsal: {name} failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
        results[name] = json.loads(proc.stdout.strip().splitlines()[-1])
        results[name]["available_gib_before"], results[name]["load_average_before"] = free, load
        if kept:
            kept.parent.mkdir(parents=True, exist_ok=True)
            kept.write_text(json.dumps(results[name]) + "\n")
        r = results[name]
        log(
            f"{name}: {sum(r['parameters'].values()) / 1e9:.4g}B parameters, peak RSS {r['peak_rss_gib']:.2f} GiB, "
            f"build {r['build_seconds']:.0f} s, CPU s { ({k: round(v, 2) for k, v in r['cpu_seconds'].items()}) }, "
            f"GFLOP { ({k: round(v / 1e9, 1) for k, v in r['flops'].items()}) }"
        )
    return results


def derive(results: dict) -> dict:
    """GPU seconds per image/prompt per card class from counted FLOPs and weight bytes (derived, not measured)."""
    flops = {k: v for r in results.values() for k, v in r.get("flops", {}).items()}
    weights = {name: r["bytes_16bit"] for name, r in results.items() if "bytes_16bit" in r}
    needed = (
        "text_encoders",
        "unet_step_cfg",
        "vae_decode_1024",
        "vae_encode_1024",
        "caption_encode_prefill",
        "blip2_token",
        "rewrite_prefill",
        "llama_token",
    )
    missing = [k for k in needed if k not in flops]
    if missing:
        return {"missing": missing}
    sdxl_bytes = sum(weights[k] for k in ("text_encoders", "unet", "vae"))
    rows = []
    for card in CARDS:
        compute = card["tflops"] * 1e12 * COMPUTE_EFFICIENCY
        bandwidth = card["bandwidth_gb_s"] * GB * BANDWIDTH_EFFICIENCY

        def token(flops_per_token, weight_bytes, compute=compute, bandwidth=bandwidth):
            return max(flops_per_token / compute, weight_bytes / bandwidth)

        t2i = (flops["text_encoders"] + STEPS_T2I * flops["unet_step_cfg"] + flops["vae_decode_1024"]) / compute
        i2i = (
            flops["text_encoders"]
            + flops["vae_encode_1024"]
            + STEPS_I2I * flops["unet_step_cfg"]
            + flops["vae_decode_1024"]
        ) / compute
        caption = flops["caption_encode_prefill"] / compute + CAPTION_TOKENS * token(
            flops["blip2_token"], weights["blip2"]
        )
        rewrite_bf16 = flops["rewrite_prefill"] / compute + REWRITE_TOKENS * token(
            flops["llama_token"], weights["llama"]
        )
        rewrite_4bit = flops["rewrite_prefill"] / compute + REWRITE_TOKENS * token(
            flops["llama_token"], LLAMA_4BIT_BYTES
        )
        host = card["host_gb_s"] * GB
        offload = {"sdxl": sdxl_bytes / host, "blip2": weights["blip2"] / host}  # enable_model_cpu_offload per call
        prompt = caption + rewrite_4bit
        rows.append(
            {
                **card,
                "seconds": {
                    "t2i_image": t2i,
                    "i2i_image": i2i,
                    "caption": caption,
                    "rewrite_bf16": rewrite_bf16,
                    "rewrite_4bit": rewrite_4bit,
                    "offload_sdxl_per_image": offload["sdxl"],
                    "offload_blip2_per_caption": offload["blip2"],
                },
                # one prompt per image (t2i only / i2i only) or per source with both kinds (the mix: 500 prompts)
                "gpu_hours_per_1000": {
                    "t2i": 1000 * (t2i + prompt) / 3600,
                    "i2i": 1000 * (i2i + prompt) / 3600,
                    "mix_both_kinds_per_source": (500 * (t2i + i2i) + 500 * prompt) / 3600,
                    "mix_with_offload": (500 * (t2i + i2i) + 1000 * offload["sdxl"] + 500 * (prompt + offload["blip2"]))
                    / 3600,
                },
            }
        )
    return {
        "cards": rows,
        "compute_efficiency": COMPUTE_EFFICIENCY,
        "bandwidth_efficiency": BANDWIDTH_EFFICIENCY,
        "sdxl_bytes_16bit": sdxl_bytes,
        "llama_4bit_bytes": LLAMA_4BIT_BYTES,
    }


def fits(results: dict) -> list[dict]:
    """Which models fit which card in fp16 (weights + measured-on-CPU working set of the step, +1.5 GB context)."""

    def need(name):
        r = results[name]
        working = max(r["peak_rss_gib"] - r["peak_rss_after_build_gib"], 0) * GIB
        return r["bytes_16bit"] + working + 1.5 * GB

    names = [n for n in MODELS if "bytes_16bit" in results.get(n, {})]
    rows = []
    for card in CARDS:
        limit = card["memory_gb"] * GB
        each = {n: need(n) <= limit for n in names}
        resident = (
            sum(results[n]["bytes_16bit"] for n in names)
            + 1.5 * GB
            + max(need(n) - results[n]["bytes_16bit"] - 1.5 * GB for n in names)
        )
        resident_4bit = resident - results["llama"]["bytes_16bit"] + LLAMA_4BIT_BYTES if "llama" in names else None
        rows.append(
            {
                "card": card["card"],
                "memory_gb": card["memory_gb"],
                "each_alone": each,
                "all_resident_gb": resident / GB,
                "all_resident_fits": resident <= limit,
                "all_resident_llama_4bit_gb": None if resident_4bit is None else resident_4bit / GB,
                "all_resident_llama_4bit_fits": None if resident_4bit is None else resident_4bit <= limit,
            }
        )
    return rows


def print_report(results: dict, derived: dict, fit: list[dict]) -> None:
    print("\n| model | parameters (known) | bf16/fp16 GB | peak RSS build / run GiB | step | GFLOP | CPU s |")
    print("|---|---|---|---|---|---|---|")
    for name, r in results.items():
        if "skipped" in r:
            print(f"| {name} | skipped: {r['skipped']} | | | | | |")
            continue
        params = ", ".join(
            f"{v / 1e6:,.1f}M ({KNOWN_PARAMETERS.get(k if k != 'total' else name, 0) / 1e6:,.1f}M)"
            for k, v in r["parameters"].items()
        )
        for i, (step, seconds) in enumerate(r["cpu_seconds"].items()):
            head = (
                (
                    f"| {name} | {params} | {r['bytes_16bit'] / GB:.2f} | {r['peak_rss_after_build_gib']:.2f} / "
                    f"{r['peak_rss_gib']:.2f}"
                )
                if i == 0
                else "| | | |"
            )
            print(f"{head} | {step} | {r['flops'].get(step, float('nan')) / 1e9:,.0f} | {seconds:.2f} |")
    if "cards" in derived:
        print(
            f"\nDerived GPU hours per 1,000 images (compute at {COMPUTE_EFFICIENCY:.0%} of the dense fp16 peak, "
            f"token steps at {BANDWIDTH_EFFICIENCY:.0%} of the bandwidth; prompts with Llama 4-bit):"
        )
        print(
            "| card | s/t2i image | s/i2i image | s/prompt (caption + rewrite 4-bit / bf16) | t2i | i2i | "
            "mix (both kinds per source) | mix + cpu offload |"
        )
        print("|---|---|---|---|---|---|---|---|")
        for row in derived["cards"]:
            s, h = row["seconds"], row["gpu_hours_per_1000"]
            print(
                f"| {row['card']} {row['memory_gb']} GB | {s['t2i_image']:.2f} | {s['i2i_image']:.2f} | "
                f"{s['caption'] + s['rewrite_4bit']:.2f} / {s['caption'] + s['rewrite_bf16']:.2f} | {h['t2i']:.2f} | "
                f"{h['i2i']:.2f} | {h['mix_both_kinds_per_source']:.2f} | {h['mix_with_offload']:.2f} |"
            )
    else:
        print(f"\nno GPU-hour table: missing {derived['missing']}")
    print("\nFit in fp16 (weights + the step's working set measured on the CPU + 1.5 GB CUDA context):")
    for row in fit:
        four_bit = (
            ""
            if row["all_resident_llama_4bit_gb"] is None
            else (
                f", with Llama 4-bit {row['all_resident_llama_4bit_gb']:.1f} GB "
                f"({'fits' if row['all_resident_llama_4bit_fits'] else 'does not fit'})"
            )
        )
        print(
            f"  {row['card']} {row['memory_gb']} GB: alone {row['each_alone']}; all resident "
            f"{row['all_resident_gb']:.1f} GB ({'fits' if row['all_resident_fits'] else 'does not fit'}){four_bit}"
        )


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    ap.add_argument("--repeats", type=int, default=2, help="runs of each diffusion step (the fastest is reported)")
    ap.add_argument("--json", type=Path, help="write the results here")
    ap.add_argument(
        "--keep",
        type=Path,
        help="keep each model's result in this folder and reuse what is there "
        "(a failure or kill later loses no finished model)",
    )
    ap.add_argument("--child", choices=MODELS, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.repeats)))
        return 0
    started = time.perf_counter()
    load = [os.getloadavg()]

    def log(message):
        print(f"[{time.perf_counter() - started:6.0f} s] {message}", flush=True)

    results = run_children(args.models, args.repeats, log, args.keep)
    load.append(os.getloadavg())
    missing = sorted(set(MODELS) - set(args.models))
    derived = {"missing": missing} if missing else derive(results)
    fit = fits(results) if all("bytes_16bit" in results.get(n, {}) for n in args.models) else []
    print_report(results, derived, fit)
    report = {
        "results": results,
        "derived": derived,
        "fit": fit,
        "load_average_start_end": load,
        "seconds_total": time.perf_counter() - started,
        "torch": torch.__version__,
        "workload": {
            "steps_t2i": STEPS_T2I,
            "steps_i2i": STEPS_I2I,
            "caption_tokens": CAPTION_TOKENS,
            "rewrite_prefill_tokens": REWRITE_PREFILL_TOKENS,
            "rewrite_tokens": REWRITE_TOKENS,
        },
    }
    print(f"load average start {load[0]}, end {load[1]}; total {report['seconds_total']:.0f} s")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.json.with_suffix(".tmp")
        tmp.write_text(json.dumps(report, indent=1) + "\n")
        tmp.replace(args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())

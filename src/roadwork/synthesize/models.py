"""The three models of the validators' generator, from the hub (real runs) or tiny (tests, the embedded default).

``load_models(params, device)`` returns :class:`Models`: a BLIP-2 captioner with its processor, a
causal LM with a chat-templated tokenizer (the rewrite) and the SDXL text-to-image pipeline (the
image-to-image pipeline shares its modules, as the validators load the same base model twice).

``backend: hub`` loads every model by id and pinned revision through the libraries' own
``from_pretrained`` (safetensors only, nothing unpickled); ``backend: tiny`` builds the same
classes from small configs with random weights, seeded, without touching the network: the code
path is the real one, the pictures are noise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from roadwork.synthesize_params import SynthesizeParams

DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}

# The rewrite LM's dtype: prompt_generator.py:79 (torch_dtype=torch.bfloat16)
REWRITE_DTYPE = torch.bfloat16


@dataclass
class Models:
    caption_processor: Any  # Blip2Processor
    caption_model: Any  # Blip2ForConditionalGeneration
    rewrite_tokenizer: Any  # a tokenizer with a chat template
    rewrite_model: Any  # a causal LM
    t2i: Any  # StableDiffusionXLPipeline
    i2i: Any  # StableDiffusionXLImg2ImgPipeline sharing t2i's modules
    device: torch.device
    description: str  # which weights: for the records
    rewriter: Any = None  # the text-generation pipeline over rewrite_model, made on first use


def models_description(params: SynthesizeParams, tiny_seed: int | None = None) -> str:
    """Which weights draw the images (in every record and fingerprint)."""
    if params.backend == "tiny":
        seed = params.seed if tiny_seed is None else tiny_seed
        return f"tiny: random weights from seed {seed} (a code-path check, not the validators' models)"
    refs = (params.caption_model, params.rewrite_model, params.diffusion_model)
    return "hub: " + ", ".join(f"{ref.id}@{ref.revision}" for ref in refs)


def load_models(params: SynthesizeParams, device: str | torch.device = "cpu") -> Models:
    device = torch.device(device)
    if params.backend == "tiny":
        return build_tiny_models(seed=params.seed, device=device)
    return _load_hub_models(params, device)


def _load_hub_models(params: SynthesizeParams, device: torch.device) -> Models:
    from diffusers import StableDiffusionXLImg2ImgPipeline, StableDiffusionXLPipeline
    from transformers import AutoModelForCausalLM, AutoTokenizer, Blip2ForConditionalGeneration, Blip2Processor

    gpu = device.type == "cuda"
    caption, rewrite, diffusion = params.caption_model, params.rewrite_model, params.diffusion_model
    # prompt_generator.py:60-71: BLIP-2 loaded in float32, its float32 weights then cast to float16
    caption_processor = Blip2Processor.from_pretrained(caption.id, revision=caption.revision)
    caption_model = Blip2ForConditionalGeneration.from_pretrained(
        caption.id, revision=caption.revision, dtype=torch.float16 if gpu else torch.float32, use_safetensors=True
    )
    rewrite_tokenizer = AutoTokenizer.from_pretrained(rewrite.id, revision=rewrite.revision)
    rewrite_model = AutoModelForCausalLM.from_pretrained(
        rewrite.id, revision=rewrite.revision, dtype=REWRITE_DTYPE, use_safetensors=True
    )
    # config.py:71-75 and 95-101: safetensors, the fp16 variant, float16 weights; the watermarker off
    # (generator.py:407-409, 427)
    t2i = StableDiffusionXLPipeline.from_pretrained(
        diffusion.id,
        revision=diffusion.revision,
        variant=params.diffusion_variant,
        use_safetensors=True,
        dtype=DTYPES[params.dtype] if gpu else torch.float32,
        add_watermarker=False,
    )
    i2i = StableDiffusionXLImg2ImgPipeline.from_pipe(t2i)
    models = Models(
        caption_processor,
        caption_model.eval(),
        rewrite_tokenizer,
        rewrite_model.eval(),
        t2i,
        i2i,
        device,
        models_description(params),
    )
    return _to(models, device)


def _to(models: Models, device: torch.device) -> Models:
    if device.type != "cpu":  # built and loaded on the CPU
        models.caption_model.to(device)
        models.rewrite_model.to(device)
        models.t2i.to(device)  # i2i shares t2i's modules
    for pipe in (models.t2i, models.i2i):
        pipe.set_progress_bar_config(disable=True)
        pipe.watermark = None
    return models


# ===================================================================================== tiny models
TINY_SPECIAL = [
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|pad|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
]
# Llama 3.1's chat layout (header tokens, <|eot_id|> after each turn), shortened
TINY_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}<|start_header_id|>{{ message['role'] }}<|end_header_id|>\n\n"
    "{{ message['content'] }}<|eot_id|>{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)


def tiny_tokenizer(model_max_length: int = 77):
    """A byte-level BPE tokenizer without merges, built offline: one token per printable ASCII character
    (byte-level's "Ġ" for a space), anything else unknown, so random weights write printable text."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = ["Ġ"] + [chr(code) for code in range(33, 127)]  # byte-level maps these bytes to themselves
    vocab = {token: index for index, token in enumerate(TINY_SPECIAL + alphabet)}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=TINY_SPECIAL[1]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens(TINY_SPECIAL)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=TINY_SPECIAL[0],
        eos_token=TINY_SPECIAL[1],
        pad_token=TINY_SPECIAL[2],
        unk_token=TINY_SPECIAL[1],
        model_max_length=model_max_length,
    )
    tokenizer.chat_template = TINY_CHAT_TEMPLATE
    return tokenizer


def build_tiny_models(seed: int = 0, device: str | torch.device = "cpu", image_size: int = 96) -> Models:
    """The validators' model classes from small configs, random weights drawn from ``seed``.

    Same classes and call path as the hub models (Blip2ForConditionalGeneration + Blip2Processor,
    a Llama causal LM with a chat template, SDXL t2i/i2i with two CLIP text encoders, the UNet's
    text-time conditioning and SDXL base's Euler scheduler settings); t2i draws ``image_size``
    pixels square by default. Nothing is downloaded; the output is noise shaped by the code path.
    """
    from diffusers import (
        AutoencoderKL,
        EulerDiscreteScheduler,
        StableDiffusionXLImg2ImgPipeline,
        StableDiffusionXLPipeline,
        UNet2DConditionModel,
    )
    from transformers import (
        Blip2Config,
        Blip2ForConditionalGeneration,
        Blip2Processor,
        BlipImageProcessor,
        CLIPTextConfig,
        CLIPTextModel,
        CLIPTextModelWithProjection,
        LlamaConfig,
        LlamaForCausalLM,
    )

    if image_size % 2:
        raise ValueError(f"image_size must be even (the tiny VAE halves it), got {image_size}")
    device = torch.device(device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        # ---- captioner
        caption_tokenizer = tiny_tokenizer(model_max_length=512)
        caption_processor = Blip2Processor(
            image_processor=BlipImageProcessor(size={"height": 32, "width": 32}),
            tokenizer=caption_tokenizer,
            num_query_tokens=4,
        )
        vocab = len(caption_processor.tokenizer)
        caption_config = Blip2Config(
            vision_config=dict(
                hidden_size=32,
                intermediate_size=37,
                num_hidden_layers=2,
                num_attention_heads=4,
                image_size=32,
                patch_size=8,
            ),
            qformer_config=dict(
                hidden_size=32,
                intermediate_size=37,
                num_hidden_layers=2,
                num_attention_heads=4,
                encoder_hidden_size=32,
                vocab_size=vocab,
            ),
            text_config=dict(
                model_type="opt",
                hidden_size=32,
                ffn_dim=37,
                num_hidden_layers=2,
                num_attention_heads=4,
                vocab_size=vocab,
                word_embed_proj_dim=32,
                max_position_embeddings=256,
                bos_token_id=caption_tokenizer.bos_token_id,
                eos_token_id=caption_tokenizer.eos_token_id,
                pad_token_id=caption_tokenizer.pad_token_id,
            ),
            num_query_tokens=4,
            image_token_index=caption_processor.tokenizer.convert_tokens_to_ids("<image>"),
        )
        caption_model = Blip2ForConditionalGeneration(caption_config)
        # ---- rewrite LM
        rewrite_tokenizer = tiny_tokenizer(model_max_length=4096)
        rewrite_model = LlamaForCausalLM(
            LlamaConfig(
                vocab_size=len(rewrite_tokenizer),
                hidden_size=32,
                intermediate_size=37,
                num_hidden_layers=2,
                num_attention_heads=4,
                num_key_value_heads=2,
                max_position_embeddings=4096,
                bos_token_id=rewrite_tokenizer.bos_token_id,
                eos_token_id=rewrite_tokenizer.eos_token_id,
                pad_token_id=rewrite_tokenizer.pad_token_id,
            )
        )
        # ---- SDXL
        tokenizer = tiny_tokenizer(model_max_length=77)
        text = dict(
            hidden_size=32,
            intermediate_size=37,
            num_hidden_layers=2,
            num_attention_heads=4,
            vocab_size=len(tokenizer),
            max_position_embeddings=77,
            projection_dim=32,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
        text_encoder = CLIPTextModel(CLIPTextConfig(**text))
        text_encoder_2 = CLIPTextModelWithProjection(CLIPTextConfig(**text))
        unet = UNet2DConditionModel(
            sample_size=image_size // 2,
            in_channels=4,
            out_channels=4,
            layers_per_block=1,
            block_out_channels=(8, 16),
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            attention_head_dim=(2, 4),
            use_linear_projection=True,
            addition_embed_type="text_time",
            addition_time_embed_dim=8,
            transformer_layers_per_block=(1, 1),
            projection_class_embeddings_input_dim=6 * 8 + 32,
            cross_attention_dim=64,
            norm_num_groups=4,
        )
        vae = AutoencoderKL(
            in_channels=3,
            out_channels=3,
            latent_channels=4,
            block_out_channels=(8, 16),
            layers_per_block=1,
            down_block_types=("DownEncoderBlock2D",) * 2,
            up_block_types=("UpDecoderBlock2D",) * 2,
            norm_num_groups=4,
            sample_size=image_size,
        )
    # stabilityai/stable-diffusion-xl-base-1.0 scheduler/scheduler_config.json
    scheduler = EulerDiscreteScheduler(
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
    t2i = StableDiffusionXLPipeline(
        vae=vae,
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=tokenizer,
        tokenizer_2=tokenizer,
        unet=unet,
        scheduler=scheduler,
        add_watermarker=False,
    )
    i2i = StableDiffusionXLImg2ImgPipeline(**{k: v for k, v in t2i.components.items()}, add_watermarker=False)
    models = Models(
        caption_processor,
        caption_model.eval(),
        rewrite_tokenizer,
        rewrite_model.eval(),
        t2i,
        i2i,
        device,
        models_description(SynthesizeParams(backend="tiny"), tiny_seed=seed),
    )
    return _to(models, device)

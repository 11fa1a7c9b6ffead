"""`SynthesizeParams`: how the validators' synthetic challenges are reproduced.

Every default is the validators' value, read from the subnet's code (natixnetwork/streetvision-subnet
at 28a1755, 2026-01-06); the comment next to each field names the file and line. Paths are relative
to the subnet's root: ``config.py`` is ``natix/validator/config.py``, ``generator.py`` is
``natix/synthetic_data_generation/synthetic_data_generator.py``, ``prompt_generator.py`` is
``natix/synthetic_data_generation/prompt_generator.py``.

``roadwork.config.Params`` holds it as ``synthesize:`` (params.yaml); its embedded default there is the
tiny backend on a few sources per label, ``presets/real.yaml`` the hub models. The stage
``synthesize`` (after ``split``) reads it.
"""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field, model_validator

from roadwork.sections import SPLITS, Section

# config.py:86 (T2I_MODELS[...]["generate_args"]["negative_prompt"])
T2I_NEGATIVE_PROMPT = (
    "cartoon, anime, painting, drawing, artistic, stylized, illustration, sketch, unrealistic, fake, artificial, "
    "3d render, cgi, video game, fantasy, sci-fi, aerial view, bird's eye view, satellite view, drone footage, "
    "helicopter view, top-down view, security camera, cctv, surveillance camera, indoor scene, interior, portrait, "
    "face, person close-up, selfie, vibrant colors, oversaturated, neon, glowing, night vision, thermal imaging, "
    "fisheye lens, wide angle distortion, motion blur, blurry, out of focus, unfocused, soft focus, speed blur, "
    "camera shake, movement blur"
)
# config.py:113 (I2I_MODELS[...]): the same list without the blur terms after "wide angle distortion"
I2I_NEGATIVE_PROMPT = T2I_NEGATIVE_PROMPT.split(", motion blur")[0]

# prompt_generator.py:169-173 (label 1) and 176-179 (label 0): the system message of the rewrite
ROADWORK_INSTRUCTION = (
    "[INST]Enhance this dashcam footage description to include active roadwork. "
    "Start with 'Photorealistic dashcam footage' and ADD roadwork elements to the existing scene: "
    "orange traffic cones, construction barriers, construction vehicles, road crews in safety vests, "
    "lane closure signs, construction equipment, or construction zones. The scene MUST show active roadwork.[/INST]"
)
CLEAR_ROAD_INSTRUCTION = (
    "[INST]Rewrite as concise dashcam footage description. "
    "Focus on clear roads and regular traffic. "
    "Start with 'Photorealistic dashcam footage' of normal road and keep factual.[/INST]"
)
# prompt_generator.py:148-149: the caption used when BLIP-2 returns nothing
EMPTY_CAPTION = "Dashcam view of road scene."

KINDS = ("t2i", "i2i")


class ModelRef(Section):
    """A hub model: its id and the revision (commit) that is downloaded."""

    id: str = Field(min_length=1, description="the hub model id")
    revision: str = Field("main", min_length=1, description="a commit hash pins the weights; 'main' moves")


class SynthesizeParams(Section):
    """The synthetic half of the validators' challenges: caption -> rewrite -> SDXL t2i and i2i."""

    # ------------------------------------------------------------------ what is generated, from what
    splits: tuple[Literal[SPLITS], ...] = Field(
        SPLITS,
        min_length=1,
        description="splits whose sources get synthetic children (each child stays in its source's split)",
    )
    sources_per_label: Optional[int] = Field(
        None, gt=0, description="at most this many sources per (split, label), a seeded choice; null = all"
    )
    kinds: tuple[Literal[KINDS], ...] = Field(
        # generator.py:144-154: every prompt of a batch goes through every model, t2i and i2i alike
        KINDS,
        min_length=1,
        description="children per source: one per kind, sharing the source's prompt",
    )
    seed: int = Field(0, description="per-image seeds derive from it")
    backend: Literal["hub", "tiny"] = Field(
        "hub",
        description="hub: the models below, downloaded by id and revision; tiny: the same architectures "
        "built from small configs with random weights (a code-path check, no real images)",
    )
    dtype: Literal["float16", "bfloat16", "float32"] = Field(
        "float16", description="SDXL weights' dtype on a GPU (config.py:73, 99); a CPU run always uses float32"
    )

    # ------------------------------------------------------------------------------------- models
    caption_model: ModelRef = Field(
        ModelRef(
            # config.py:60 IMAGE_ANNOTATION_MODEL; revision unknown offline: "main" until pinned
            id="Salesforce/blip2-opt-2.7b-coco",
            revision="main",
        ),
        description="BLIP-2 captioner; pin a commit for real runs",
    )
    rewrite_model: ModelRef = Field(
        ModelRef(
            # config.py:61-65 TEXT_MODERATION_MODEL: this id on a CPU, its "-bnb-4bit" twin on CUDA (same weights,
            # 4-bit quantised); revision unknown offline: "main" until pinned
            id="unsloth/Meta-Llama-3.1-8B-Instruct",
            revision="main",
        ),
        description="the caption's label-specific rewrite (Llama 3.1 8B; 4-bit on CUDA, as the validators)",
    )
    diffusion_model: ModelRef = Field(
        ModelRef(
            # config.py:69 (t2i) and config.py:97 (i2i "model_id"): one base model for both tasks. The commit is the
            # one public cache paths show for this repo (last change 2023); check with huggingface_hub.model_info
            id="stabilityai/stable-diffusion-xl-base-1.0",
            revision="462165984030d82259a11f4367a4eed129e94a7b",
        ),
        description="SDXL base, one model for t2i and i2i",
    )
    diffusion_variant: Optional[str] = Field("fp16", description="the hub weights' variant (config.py:75, 101)")

    # ------------------------------------------------------------------------------------ prompts
    # prompt_generator.py:118 (generate(max_new_tokens=80))
    caption_max_new_tokens: int = Field(80, gt=0, description="longest BLIP-2 caption, in tokens")
    # prompt_generator.py:154 (moderate(max_new_tokens=80))
    rewrite_max_new_tokens: int = Field(80, gt=0, description="longest rewritten prompt, in tokens")
    # prompt_generator.py:148-149
    empty_caption: str = Field(EMPTY_CAPTION, min_length=1, description="used when BLIP-2 says nothing")
    # prompt_generator.py:168-174
    instruction_roadwork: str = Field(ROADWORK_INSTRUCTION, min_length=1, description="rewrite instruction, label 1")
    # prompt_generator.py:175-180
    instruction_clear: str = Field(CLEAR_ROAD_INSTRUCTION, min_length=1, description="rewrite instruction, label 0")

    # --------------------------------------------------------------------------------- generation
    # config.py:81 (t2i), config.py:107 (i2i)
    guidance_scale: float = Field(8.0, ge=0, description="classifier-free guidance scale (t2i and i2i)")
    # config.py:82 (t2i), config.py:108 (i2i)
    num_inference_steps: int = Field(25, gt=0, description="denoising steps (t2i and i2i)")
    strength: float = Field(0.7, gt=0, le=1, description="i2i noise strength")  # config.py:109 (i2i only)
    negative_prompt_t2i: str = Field(T2I_NEGATIVE_PROMPT, description="t2i negative prompt")  # config.py:86
    negative_prompt_i2i: str = Field(  # config.py:113
        I2I_NEGATIVE_PROMPT, description="i2i negative prompt (the t2i one without the blur terms)"
    )
    # generator.py:272-274: an i2i input wider or taller than this is resized to exactly this size (aspect
    # ratio not kept) with LANCZOS; a smaller input is used as it is
    i2i_max_width: int = Field(
        1024, gt=0, description="larger i2i inputs are resized to exactly max_width x max_height (LANCZOS)"
    )
    i2i_max_height: int = Field(1024, gt=0, description="see i2i_max_width")
    # generator.py:274 (Image.Resampling.LANCZOS)
    i2i_resample: Literal["lanczos"] = Field("lanczos", description="the resampling filter of that resize")
    # generator.py:293-299: neither generate_at_target_size nor "resolution" is set for SDXL, so t2i draws at the
    # pipeline's default size (1024x1024 for SDXL base); null keeps that default
    t2i_width: Optional[int] = Field(
        None, gt=0, description="null: the pipeline's default size (SDXL base: 1024; the tiny backend: 96)"
    )
    t2i_height: Optional[int] = Field(None, gt=0, description="set with t2i_width (both null or both set)")

    # ------------------------------------------------------------------- how challenges are drawn
    # forward.py:145, 149; neurons/validator.py:90 (default 0.5)
    fake_prob: float = Field(
        0.5,
        ge=0,
        le=1,
        description="validators: share of challenges that are synthetic (the per-kind reports' mix weights)",
    )
    # forward.py:152 ("i2i" if rand < 0.5 else "t2i")
    i2i_share: float = Field(0.5, ge=0, le=1, description="validators: share of synthetic challenges that are i2i")

    @model_validator(mode="after")
    def _unique(self):
        for name in ("splits", "kinds"):
            values = getattr(self, name)
            if len(set(values)) != len(values):
                raise ValueError(f"{name} lists a value twice: {list(values)}")
        if (self.t2i_width is None) != (self.t2i_height is None):
            raise ValueError("t2i_width and t2i_height are set together (both null = the pipeline's default)")
        return self

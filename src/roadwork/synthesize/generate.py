"""Run the plan: caption -> rewrite -> SDXL t2i / i2i, one file per image, resumable, sharded by rank.

Output layout under ``out_dir`` (every file written to a temporary name and renamed into place):

* ``prompts/<source id>.json``: the BLIP-2 caption, the rewritten prompt and its seed (shared by
  the source's children);
* ``images/<child id>.png`` and ``records/<child id>.json`` (prompt as given to SDXL, source id,
  label, split, cluster, kind, seed, the image's sha256 and size, a fingerprint of everything that
  shaped it). The record is written after the image, so a killed run leaves at most an image
  without a record, which the next run redraws;
* ``manifest.csv`` (:func:`collect`, once every rank is done): one row per child, in plan order.

:func:`run` does all of it for one rank (draw its share, wait for the others, rank 0 collects);
:func:`publish` copies a collected set (manifest + images) into a pipeline output atomically and
:func:`counts_by` counts its rows per split x kind x label.

A child is done when its record's fingerprint equals the current one and the image's sha256
matches the record: a re-run with the same params skips it; a changed param (steps, a model
revision, the seed...) redraws it. Each image's noise comes from its own seeded generator and each
prompt's sampling from its own seed, so a resumed run writes the same bytes as an uninterrupted one
(same machine, same libraries).

What follows the validators (natix/synthetic_data_generation/, subnet 28a1755): the caption has
no text prompt and ends with a period (prompt_generator.py:134-149); the rewrite is a system +
user chat through ``transformers.pipeline("text-generation")`` with ``return_full_text=False`` and
the EOS token as padding (prompt_generator.py:187-201); the prompt is cut to the shorter SDXL
tokenizer's length (prompt_utils.py:23-41); i2i inputs larger than 1024 on a side are resized to
1024x1024 with LANCZOS (synthetic_data_generator.py:272-274); images are stored as PNG
(synthetic_data_generator.py:173-175). What differs: seeds per image (the validators draw from an
unseeded generator); a rewrite that raises stops the run (the validators fall back to the caption).
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
from pathlib import Path
from typing import Callable, Mapping, Optional, Sequence

import torch
from PIL import Image

from roadwork.data.decode import load_rgb
from roadwork.data.images import encode_png
from roadwork.io import (
    atomic_path,
    dumps_json,
    format_csv,
    read_csv,
    read_json,
    sha256_bytes,
    write_bytes,
    write_json,
    write_text,
)
from roadwork.synthesize.models import Models, load_models, models_description
from roadwork.synthesize.plan import PLAN_COLUMNS, Child, shard
from roadwork.synthesize_params import SynthesizeParams

MANIFEST_COLUMNS = PLAN_COLUMNS + ["prompt", "path", "sha256", "width", "height"]
# params that decide what is planned or how challenges are drawn, not how a planned image looks
_NOT_IN_FINGERPRINT = {"splits", "sources_per_label", "kinds", "fake_prob", "i2i_share"}
_PROMPT_FIELDS = {
    "caption_model",
    "rewrite_model",
    "caption_max_new_tokens",
    "rewrite_max_new_tokens",
    "empty_caption",
    "instruction_roadwork",
    "instruction_clear",
    "backend",
    "seed",
}


class SynthesizeError(RuntimeError):
    """The generator cannot go on; the message names the file or child and what is wrong."""


def distributed_rank() -> tuple[int, int]:
    """(rank, world size) from torchrun's environment (RANK, WORLD_SIZE); (0, 1) without it."""
    try:
        rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError as error:
        raise SynthesizeError(f"RANK / WORLD_SIZE must be integers: {error}") from None
    if world < 1 or not 0 <= rank < world:
        raise SynthesizeError(f"RANK={rank} is not in [0, WORLD_SIZE={world})")
    return rank, world


def _fingerprint(obj) -> str:
    return hashlib.sha256(dumps_json(obj).encode("utf-8")).hexdigest()


def prompt_fingerprint(params: SynthesizeParams, child: Child, weights: str) -> str:
    fields = {k: v for k, v in params.model_dump(mode="json").items() if k in _PROMPT_FIELDS}
    return _fingerprint(
        {
            "params": fields,
            "source": [child.source_id, child.source_sha256, child.label],
            "prompt_seed": child.prompt_seed,
            "models": weights,
        }
    )


def image_fingerprint(params: SynthesizeParams, child: Child, weights: str) -> str:
    fields = {k: v for k, v in params.model_dump(mode="json").items() if k not in _NOT_IN_FINGERPRINT}
    return _fingerprint({"params": fields, "child": child.row(), "models": weights})


# ============================================================================ the validators' steps
def caption(models: Models, image: Image.Image, params: SynthesizeParams) -> str:
    """BLIP-2 without a text prompt, greedy, a period appended; the fallback when it says nothing."""
    model = models.caption_model
    inputs = models.caption_processor(images=image, text="", return_tensors="pt").to(models.device, model.dtype)
    with torch.inference_mode():
        ids = model.generate(**inputs, max_new_tokens=params.caption_max_new_tokens)
    text = models.caption_processor.batch_decode(ids, skip_special_tokens=True)[0].strip()
    if text and not text.endswith("."):
        text += "."
    return text or params.empty_caption


def rewrite(models: Models, description: str, label: int, params: SynthesizeParams, seed: int) -> str:
    """The LLM's label-specific rewrite of a caption; its sampling seeded by ``seed``."""
    from transformers import pipeline

    instruction = params.instruction_roadwork if label == 1 else params.instruction_clear
    messages = [{"role": "system", "content": instruction}, {"role": "user", "content": description}]
    if models.rewriter is None:
        models.rewriter = pipeline(
            "text-generation", model=models.rewrite_model, tokenizer=models.rewrite_tokenizer, device=models.device
        )
    devices = [models.device] if models.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), torch.inference_mode():
        torch.manual_seed(seed)
        out = models.rewriter(
            messages,
            max_new_tokens=params.rewrite_max_new_tokens,
            return_full_text=False,
            pad_token_id=models.rewrite_tokenizer.eos_token_id,
        )
    return out[0]["generated_text"]


def truncate_prompt(prompt: str, pipe) -> str:
    """The prompt cut to the shorter of the pipeline's two tokenizers' lengths (minus one token)."""
    tokenizer = pipe.tokenizer
    if pipe.tokenizer_2 is not None and pipe.tokenizer_2.model_max_length < tokenizer.model_max_length:
        tokenizer = pipe.tokenizer_2
    limit = tokenizer.model_max_length
    ids = tokenizer(prompt, verbose=False)["input_ids"]
    if len(ids) < limit:
        return prompt
    return tokenizer.decode(ids[: limit - 1], skip_special_tokens=True)


def i2i_input(image: Image.Image, params: SynthesizeParams) -> Image.Image:
    """The validators' i2i input: resized to exactly max width x max height (LANCZOS) when larger on a side."""
    if image.width > params.i2i_max_width or image.height > params.i2i_max_height:
        return image.resize((params.i2i_max_width, params.i2i_max_height), Image.Resampling.LANCZOS)
    return image


def draw(
    models: Models, child: Child, prompt: str, source: Optional[Image.Image], params: SynthesizeParams
) -> tuple[Image.Image, str]:
    """One SDXL image: t2i from the prompt, or i2i from the source and the prompt; noise seeded by the child.
    Returns the image and the prompt as the pipeline got it (truncated)."""
    generator = torch.Generator("cpu").manual_seed(child.seed)  # CPU noise: the same latents on any device
    common = dict(
        guidance_scale=params.guidance_scale, num_inference_steps=params.num_inference_steps, generator=generator
    )
    pipe = models.t2i if child.kind == "t2i" else models.i2i
    prompt = truncate_prompt(prompt, pipe)
    with torch.inference_mode():
        if child.kind == "t2i":
            size = {} if params.t2i_width is None else {"width": params.t2i_width, "height": params.t2i_height}
            out = pipe(prompt=prompt, negative_prompt=params.negative_prompt_t2i, **size, **common)
        else:
            out = pipe(
                prompt=prompt,
                negative_prompt=params.negative_prompt_i2i,
                image=i2i_input(source, params),
                strength=params.strength,
                **common,
            )
    return out.images[0], prompt


# ===================================================================================== the run
def _done(out_dir: Path, child: Child, fingerprint: str) -> bool:
    record_path, image_path = out_dir / "records" / f"{child.id}.json", out_dir / "images" / f"{child.id}.png"
    if not record_path.is_file() or not image_path.is_file():
        return False
    try:
        record = read_json(record_path)
    except ValueError:
        return False
    return record.get("fingerprint") == fingerprint and record.get("sha256") == sha256_bytes(image_path.read_bytes())


def _load_source(path: Path, child: Child) -> Image.Image:
    if not path.is_file():
        raise SynthesizeError(f"source image of {child.source_id} not found: {path}")
    data = path.read_bytes()
    if child.source_sha256 and sha256_bytes(data) != child.source_sha256:
        raise SynthesizeError(
            f"{path}: sha256 {sha256_bytes(data)} differs from the split table's "
            f"{child.source_sha256} for source {child.source_id}"
        )
    return load_rgb(io.BytesIO(data))


def generate(
    children: Sequence[Child],
    source_paths: Mapping[str, Path],
    out_dir: str | os.PathLike,
    params: SynthesizeParams,
    models: Optional[Models] = None,
    device: Optional[str] = None,
    rank: Optional[int] = None,
    world_size: Optional[int] = None,
    on_image: Optional[Callable[[Child, Path], None]] = None,
) -> dict:
    """Draw this rank's share of ``children`` into ``out_dir``, skipping what is already done.

    ``source_paths``: source id -> stored image. ``models``: loaded on first need with
    :func:`load_models` when not given. ``rank``/``world_size`` default to torchrun's environment.
    ``on_image(child, path)`` is called after each image is complete. Returns counts.
    """
    out_dir = Path(out_dir)
    if rank is None or world_size is None:
        rank, world_size = distributed_rank()
    mine = shard(children, rank, world_size)
    missing = sorted({c.source_id for c in mine if c.source_id not in source_paths})
    if missing:
        raise SynthesizeError(f"{len(missing)} planned source(s) have no image path, e.g. {missing[:3]}")
    if device is None:
        device = f"cuda:{os.environ.get('LOCAL_RANK', '0')}" if torch.cuda.is_available() else "cpu"
    description = models.description if models is not None else models_description(params)
    counts = {"rank": rank, "world_size": world_size, "planned": len(mine), "skipped": 0, "drawn": 0, "prompts": 0}
    prompts: dict[str, str] = {}
    for child in mine:
        fingerprint = image_fingerprint(params, child, description)
        if _done(out_dir, child, fingerprint):
            counts["skipped"] += 1
            continue
        if models is None:
            models = load_models(params, device)
        source = _load_source(Path(source_paths[child.source_id]), child)
        if child.source_id not in prompts:
            prompts[child.source_id] = _prompt(models, child, source, out_dir, params, description, counts)
        image, prompt = draw(models, child, prompts[child.source_id], source, params)
        data = encode_png(image)
        image_path = out_dir / "images" / f"{child.id}.png"
        write_bytes(image_path, data)
        write_json(
            out_dir / "records" / f"{child.id}.json",
            {
                **child.row(),
                "prompt": prompt,
                "path": f"images/{child.id}.png",
                "sha256": sha256_bytes(data),
                "width": image.width,
                "height": image.height,
                "models": description,
                "fingerprint": fingerprint,
            },
        )
        counts["drawn"] += 1
        if on_image is not None:
            on_image(child, image_path)
    return counts


def _prompt(
    models: Models,
    child: Child,
    source: Image.Image,
    out_dir: Path,
    params: SynthesizeParams,
    description: str,
    counts: dict,
) -> str:
    """The source's prompt: read back when already written under the same fingerprint, else made and written."""
    path = out_dir / "prompts" / f"{child.source_id}.json"
    fingerprint = prompt_fingerprint(params, child, description)
    if path.is_file():
        try:
            record = read_json(path)
            if record.get("fingerprint") == fingerprint:
                return record["prompt"]
        except (ValueError, KeyError):
            pass  # a record this program wrote under other params, or damaged: made again below
    text = caption(models, source, params)
    prompt = rewrite(models, text, child.label, params, child.prompt_seed)
    write_json(
        path,
        {
            "source_id": child.source_id,
            "label": child.label,
            "caption": text,
            "prompt": prompt,
            "prompt_seed": child.prompt_seed,
            "fingerprint": fingerprint,
        },
    )
    counts["prompts"] += 1
    return prompt


def collect(
    children: Sequence[Child], out_dir: str | os.PathLike, params: SynthesizeParams, description: Optional[str] = None
) -> list[dict]:
    """Check that every child is done, remove what this generator wrote for children no longer planned
    (and temporaries a kill left), and write ``manifest.csv`` (plan order); returns its rows.

    Run it once every rank is done (it removes temporaries another rank may still be writing)."""
    out_dir = Path(out_dir)
    description = description or models_description(params)
    rows, missing = [], []
    for child in children:
        if not _done(out_dir, child, image_fingerprint(params, child, description)):
            missing.append(child.id)
            continue
        record = read_json(out_dir / "records" / f"{child.id}.json")
        rows.append({key: record[key] for key in MANIFEST_COLUMNS})
    if missing:
        raise SynthesizeError(
            f"{out_dir}: {len(missing)} of {len(children)} planned images are not done "
            f"(e.g. {missing[:3]}); run the generation again to finish them"
        )
    _remove_unplanned(out_dir, {c.id for c in children}, {c.source_id for c in children})
    write_text(out_dir / "manifest.csv", format_csv(rows, MANIFEST_COLUMNS))
    return rows


def _ours(path: Path) -> bool:
    """A JSON file this generator wrote (it holds a fingerprint)."""
    try:
        record = read_json(path)
    except (OSError, ValueError):
        return False
    return isinstance(record, dict) and "fingerprint" in record


def _remove_unplanned(out_dir: Path, child_ids: set[str], source_ids: set[str]) -> None:
    for folder in ("images", "records", "prompts"):
        for leftover in (out_dir / folder).glob(".*.tmp"):  # roadwork.io.atomic_path's temporaries
            if leftover.is_dir():
                shutil.rmtree(leftover)
    for record in (out_dir / "records").glob("*.json"):
        if record.stem not in child_ids and _ours(record):
            (out_dir / "images" / f"{record.stem}.png").unlink(missing_ok=True)
            record.unlink()
    for prompt in (out_dir / "prompts").glob("*.json"):
        if prompt.stem not in source_ids and _ours(prompt):
            prompt.unlink()


def source_paths(raw_dir: Path) -> dict[str, Path]:
    """Source id -> stored image, from the download stage's ``manifest.csv``."""
    manifest = Path(raw_dir) / "manifest.csv"
    if not manifest.is_file():
        raise SynthesizeError(f"{manifest} not found (the download stage's manifest: id, path, ...)")
    return {row["id"]: Path(raw_dir) / row["path"] for row in read_csv(manifest)}


def run(
    children: Sequence[Child],
    source_paths: Mapping[str, Path],
    out_dir: str | os.PathLike,
    params: SynthesizeParams,
    device: Optional[str] = None,
) -> tuple[dict, Optional[list[dict]]]:
    """Draw this rank's share (torchrun's RANK / WORLD_SIZE), wait for every rank, and on rank 0 collect the
    manifest. Returns (this rank's counts, the manifest rows on rank 0 else None)."""
    rank, world_size = distributed_rank()
    counts = generate(children, source_paths, out_dir, params, device=device, rank=rank, world_size=world_size)
    if world_size > 1:
        torch.distributed.init_process_group(backend="gloo")
        torch.distributed.barrier()
    rows = collect(children, out_dir, params) if rank == 0 else None
    if world_size > 1:
        torch.distributed.destroy_process_group()
    return counts, rows


def publish(rows: Sequence[Mapping], out_dir: str | os.PathLike, dest: str | os.PathLike) -> None:
    """Copy the collected set (``manifest.csv`` and the images its rows name) from ``out_dir`` to ``dest``,
    atomically: ``dest`` is replaced whole or not at all."""
    out_dir = Path(out_dir)
    with atomic_path(dest) as tmp:
        (tmp / "images").mkdir(parents=True)
        for row in rows:
            shutil.copyfile(out_dir / row["path"], tmp / row["path"])
        shutil.copyfile(out_dir / "manifest.csv", tmp / "manifest.csv")


def counts_by(rows: Sequence[Mapping]) -> dict:
    """{split: {kind: {"0": n, "1": n}}} of manifest rows."""
    counts: dict = {}
    for row in rows:
        per_label = counts.setdefault(row["split"], {}).setdefault(row["kind"], {"0": 0, "1": 0})
        per_label[str(row["label"])] += 1
    return counts

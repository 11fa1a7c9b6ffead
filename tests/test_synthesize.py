"""The validators' synthetic generator (roadwork.synthesize): params = the validators' values, the plan
never crosses splits, and tiny random-weight models (built from configs, never from the hub; the subprocesses
run with HF_HUB_OFFLINE=1) draw byte-identical images on a re-run, after a kill and across rank shards."""

import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from kit.repo import REPO, files_of
from PIL import Image

from roadwork.config import SPLITS
from roadwork.io import read_csv, read_json, sha256_bytes
from roadwork.synthesize.generate import SynthesizeError, collect, generate, i2i_input, truncate_prompt
from roadwork.synthesize.plan import PlanError, plan_children, shard, training_children
from roadwork.synthesize_params import SynthesizeParams

# ------------------------------------------------------------------ the validators' values, transcribed
# natixnetwork/streetvision-subnet at 28a1755 (2026-01-06); paths from the subnet's root.
VALIDATORS = {
    # natix/validator/config.py:60 IMAGE_ANNOTATION_MODEL
    "caption_model.id": "Salesforce/blip2-opt-2.7b-coco",
    # natix/validator/config.py:61-65 TEXT_MODERATION_MODEL (CPU value; "-bnb-4bit" on CUDA)
    "rewrite_model.id": "unsloth/Meta-Llama-3.1-8B-Instruct",
    # natix/validator/config.py:69 (T2I_MODELS key) and :97 (I2I "model_id")
    "diffusion_model.id": "stabilityai/stable-diffusion-xl-base-1.0",
    "diffusion_variant": "fp16",  # natix/validator/config.py:75, :101
    "dtype": "float16",  # natix/validator/config.py:73, :99
    "guidance_scale": 8.0,  # natix/validator/config.py:81, :107
    "num_inference_steps": 25,  # natix/validator/config.py:82, :108
    "strength": 0.7,  # natix/validator/config.py:109
    "i2i_max_width": 1024,  # natix/synthetic_data_generation/synthetic_data_generator.py:272
    "i2i_max_height": 1024,  # natix/synthetic_data_generation/synthetic_data_generator.py:272
    "i2i_resample": "lanczos",  # natix/synthetic_data_generation/synthetic_data_generator.py:274
    "t2i_width": None,  # synthetic_data_generator.py:293-299: no size given, SDXL's default (1024)
    "t2i_height": None,
    "caption_max_new_tokens": 80,  # natix/synthetic_data_generation/prompt_generator.py:118
    "rewrite_max_new_tokens": 80,  # natix/synthetic_data_generation/prompt_generator.py:154
    "empty_caption": "Dashcam view of road scene.",  # natix/synthetic_data_generation/prompt_generator.py:149
    "fake_prob": 0.5,  # natix/validator/forward.py:145, neurons/validator.py:90
    "i2i_share": 0.5,  # natix/validator/forward.py:152
    "kinds": ("t2i", "i2i"),  # synthetic_data_generator.py:144-154: every prompt through every model
    # natix/synthetic_data_generation/prompt_generator.py:169-173
    "instruction_roadwork": (
        "[INST]Enhance this dashcam footage description to include active roadwork. Start with 'Photorealistic "
        "dashcam footage' and ADD roadwork elements to the existing scene: orange traffic cones, construction "
        "barriers, construction vehicles, road crews in safety vests, lane closure signs, construction equipment, "
        "or construction zones. The scene MUST show active roadwork.[/INST]"
    ),
    # natix/synthetic_data_generation/prompt_generator.py:176-179
    "instruction_clear": (
        "[INST]Rewrite as concise dashcam footage description. Focus on clear roads and regular traffic. Start with "
        "'Photorealistic dashcam footage' of normal road and keep factual.[/INST]"
    ),
}
_NEGATIVE_COMMON = (
    "cartoon, anime, painting, drawing, artistic, stylized, illustration, sketch, unrealistic, fake, artificial, 3d "
    "render, cgi, video game, fantasy, sci-fi, aerial view, bird's eye view, satellite view, drone footage, helicopter "
    "view, top-down view, security camera, cctv, surveillance camera, indoor scene, interior, portrait, face, person "
    "close-up, selfie, vibrant colors, oversaturated, neon, glowing, night vision, thermal imaging, fisheye lens, wide "
    "angle distortion"
)
VALIDATORS["negative_prompt_i2i"] = _NEGATIVE_COMMON  # natix/validator/config.py:113
VALIDATORS["negative_prompt_t2i"] = _NEGATIVE_COMMON + (  # natix/validator/config.py:86
    ", motion blur, blurry, out of focus, unfocused, soft focus, speed blur, camera shake, movement blur"
)


def test_defaults_are_the_validators_values():
    params = SynthesizeParams().model_dump()
    for key, expected in VALIDATORS.items():
        value = params
        for part in key.split("."):
            value = value[part]
        assert value == expected, key
    assert SynthesizeParams().splits == SPLITS  # every split gets children, each in its own split


def test_params_refuse_bad_values():
    with pytest.raises(ValueError, match="strength"):
        SynthesizeParams(strength=1.5)
    with pytest.raises(ValueError, match="kinds lists a value twice"):
        SynthesizeParams(kinds=("t2i", "t2i"))
    with pytest.raises(ValueError, match="t2i_width and t2i_height"):
        SynthesizeParams(t2i_width=512)
    with pytest.raises(ValueError, match="splits"):
        SynthesizeParams(splits=("training",))


# -------------------------------------------------------------------------------------------- the plan
def split_table(n=48, seed=0):
    """Rows like splits.csv: the first 16 give every split two sources of each label, the rest random labels;
    some records share a cluster (within a split) and some have none."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        split = SPLITS[i % 4]
        label = (i // 4) % 2 if i < 16 else int(rng.random() < 0.4)
        cluster = f"c{i // 8}{split}" if i % 3 else ""
        rows.append({"id": f"{i:016x}", "sha256": f"{i:064x}", "label": str(label), "cluster": cluster, "split": split})
    return rows


def test_children_inherit_their_source_and_never_cross_splits():
    rows = split_table()
    children = plan_children(rows, SynthesizeParams())
    sources = {row["id"]: row for row in rows}
    assert len(children) == 2 * len(rows)
    for child in children:
        source = sources[child.source_id]
        assert (child.split, child.label) == (source["split"], int(source["label"]))
        assert child.cluster == (source["cluster"] or source["id"])
        assert child.id == f"{child.kind}-{child.source_id}"
    training = training_children(children)
    assert {c.source_id for c in training} == {r["id"] for r in rows if r["split"] == "train"}
    assert all(sources[c.source_id]["split"] == "train" for c in training)
    evaluation = [c for c in children if c.split == "val_test"]
    assert {c.kind for c in evaluation} == {"t2i", "i2i"}
    assert not {c.id for c in evaluation} & {c.id for c in training}


def test_plan_is_seeded_and_independent_of_row_order():
    rows = split_table()
    params = SynthesizeParams(sources_per_label=2)
    children = plan_children(rows, params)
    assert plan_children(list(reversed(rows)), params) == children
    per_stratum = {}
    for child in children:
        per_stratum.setdefault((child.split, child.label), set()).add(child.source_id)
    assert set(per_stratum) == {(s, label) for s in SPLITS for label in (0, 1)}
    assert all(len(ids) == 2 for ids in per_stratum.values())
    larger = {c.id for c in plan_children(rows, SynthesizeParams(sources_per_label=3))}
    assert {c.id for c in children} < larger  # more sources only add children
    by_id = {c.id: c for c in children}
    for child in children:
        twin = by_id["i2i-" + child.source_id]
        assert child.prompt_seed == twin.prompt_seed  # one prompt per source
        assert child.kind == "i2i" or child.seed != twin.seed  # own noise per image
    other_seed = plan_children(rows, SynthesizeParams(sources_per_label=2, seed=1))
    assert [c.seed for c in other_seed] != [c.seed for c in children]
    only_train = plan_children(rows, SynthesizeParams(splits=("train",), kinds=("i2i",)))
    assert {c.split for c in only_train} == {"train"} and {c.kind for c in only_train} == {"i2i"}


@pytest.mark.parametrize(
    "change, message",
    [
        ({"split": "validation"}, "splits row 5 \\(id 0000000000000003\\): unknown split 'validation'"),
        ({"label": "2"}, "splits row 5 \\(id 0000000000000003\\): label must be 0 or 1, got '2'"),
        ({"id": "0000000000000000"}, "splits row 5: duplicate id '0000000000000000'"),
        ({"id": "../escape"}, "splits row 5: id '../escape' is not file-name safe"),
        ({"label": ""}, r"splits row 5: missing \['label'\]"),
    ],
)
def test_plan_names_the_bad_row(change, message):
    rows = split_table(8)
    rows[3] = {**rows[3], **change}
    with pytest.raises(PlanError, match=message):
        plan_children(rows, SynthesizeParams())


def test_shards_partition_the_plan_by_source():
    children = plan_children(split_table(), SynthesizeParams())
    shards = [shard(children, rank, 3) for rank in range(3)]
    assert sorted(c.id for s in shards for c in s) == sorted(c.id for c in children)
    owners = {}
    for rank, part in enumerate(shards):
        for child in part:
            assert owners.setdefault(child.source_id, rank) == rank  # a source's children stay together
    assert shard(children, 1, 3) == shards[1]
    with pytest.raises(ValueError, match="rank 3"):
        shard(children, 3, 3)


def test_i2i_input_is_the_validators_resize():
    params = SynthesizeParams()
    rng = np.random.default_rng(0)
    wide = Image.fromarray(rng.integers(0, 256, (800, 1200, 3), dtype=np.uint8))
    resized = i2i_input(wide, params)
    assert resized.size == (1024, 1024)  # aspect not kept
    assert resized.tobytes() == wide.resize((1024, 1024), Image.Resampling.LANCZOS).tobytes()
    for size in ((96, 96), (1024, 1024), (1024, 700)):
        small = Image.new("RGB", size)
        assert i2i_input(small, params) is small  # not larger on any side: used as it is


def test_prompt_is_cut_to_the_shorter_tokenizer(tiny):
    pipe = tiny.t2i
    short = "Photorealistic dashcam footage of a road."
    assert truncate_prompt(short, pipe) == short
    long = "Photorealistic dashcam footage " + "with orange cones " * 20
    cut = truncate_prompt(long, pipe)
    assert long.startswith(cut) and len(pipe.tokenizer(cut)["input_ids"]) == 76


# ------------------------------------------------------------------------------------- the generator
STEPS = 2  # the code path, quickly; the validators' 25 are the default
SIZE = 64


@pytest.fixture(scope="module")
def tiny():
    from roadwork.synthesize.models import build_tiny_models

    return build_tiny_models(seed=0)


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """A raw folder (manifest.csv + images) and its splits.csv: 2 sources per split, one of each label."""
    root = tmp_path_factory.mktemp("raw")
    (root / "images").mkdir()
    rng = np.random.default_rng(1)
    manifest, rows = ["id,path"], []
    for i in range(8):
        rid = f"{i:016x}"
        coarse = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
        path = root / "images" / f"{rid}.png"
        Image.fromarray(coarse).resize((SIZE, SIZE), Image.BICUBIC).save(path)
        manifest.append(f"{rid},images/{rid}.png")
        rows.append(
            {
                "id": rid,
                "sha256": sha256_bytes(path.read_bytes()),
                "label": str(i % 2),
                "cluster": "",
                "split": SPLITS[i // 2],
            }
        )
    (root / "manifest.csv").write_text("\n".join(manifest) + "\n")
    splits = root / "splits.csv"
    splits.write_text(
        "id,sha256,label,cluster,split\n"
        + "".join(f"{r['id']},{r['sha256']},{r['label']},,{r['split']}\n" for r in rows)
    )
    return {
        "raw": root,
        "splits": splits,
        "rows": rows,
        "paths": {r["id"]: root / "images" / f"{r['id']}.png" for r in rows},
    }


def params_for_test(**changes):
    return SynthesizeParams(
        **{"backend": "tiny", "num_inference_steps": STEPS, "t2i_width": SIZE, "t2i_height": SIZE, **changes}
    )


@pytest.fixture(scope="module")
def reference(tiny, sources, tmp_path_factory):
    """One uninterrupted run over the train and val_test sources (8 images)."""
    params = params_for_test(splits=("train", "val_test"))
    children = plan_children(sources["rows"], params)
    out = tmp_path_factory.mktemp("reference")
    counts = generate(children, sources["paths"], out, params, models=tiny, rank=0, world_size=1)
    rows = collect(children, out, params)
    return {"params": params, "children": children, "out": out, "counts": counts, "rows": rows}


def test_records_follow_their_sources(reference, sources, tiny):
    assert reference["counts"] == {"rank": 0, "world_size": 1, "planned": 8, "skipped": 0, "drawn": 8, "prompts": 4}
    truth = {r["id"]: r for r in sources["rows"]}
    out = reference["out"]
    manifest = read_csv(out / "manifest.csv")
    assert [r["id"] for r in manifest] == [c.id for c in reference["children"]]
    for row in manifest:
        source = truth[row["source_id"]]
        assert (row["label"], row["split"]) == (source["label"], source["split"])
        assert row["split"] in ("train", "val_test")
        image = out / row["path"]
        assert sha256_bytes(image.read_bytes()) == row["sha256"]
        assert Image.open(image).size == (SIZE, SIZE)
        prompt = read_json(out / "prompts" / f"{row['source_id']}.json")
        assert prompt["label"] == int(row["label"]) and prompt["caption"].endswith(".")
        assert row["prompt"] == truncate_prompt(prompt["prompt"], tiny.t2i)
    record = read_json(out / "records" / f"{manifest[0]['id']}.json")
    assert record["models"].startswith("tiny: random weights")
    # the two children of a source share its prompt but not their pixels
    t2i, i2i = (out / "images" / f"{kind}-{manifest[0]['source_id']}.png" for kind in ("t2i", "i2i"))
    assert t2i.read_bytes() != i2i.read_bytes()


def test_rerun_is_byte_identical_and_skips_finished_images(reference, tiny, sources, tmp_path):
    params, children = reference["params"], reference["children"]
    fresh = tmp_path / "fresh"
    generate(children, sources["paths"], fresh, params, models=tiny, rank=0, world_size=1)
    collect(children, fresh, params)
    assert files_of(fresh) == files_of(reference["out"])
    again = generate(children, sources["paths"], fresh, params, models=tiny, rank=0, world_size=1)
    assert (again["skipped"], again["drawn"]) == (8, 0)


def test_rank_shards_together_equal_one_run(reference, tiny, sources, tmp_path):
    params, children = reference["params"], reference["children"]
    counts = [generate(children, sources["paths"], tmp_path, params, models=tiny, rank=r, world_size=2) for r in (1, 0)]
    assert [c["drawn"] for c in counts] == [4, 4]
    collect(children, tmp_path, params)
    assert files_of(tmp_path) == files_of(reference["out"])


def test_changed_params_redraw_and_damage_is_redrawn(reference, tiny, sources, tmp_path):
    params, children = reference["params"], reference["children"]
    generate(children, sources["paths"], tmp_path, params, models=tiny, rank=0, world_size=1)
    damaged = tmp_path / "images" / f"{children[0].id}.png"
    damaged.write_bytes(b"half a png")
    (tmp_path / "records" / f"{children[1].id}.json").unlink()  # killed between image and record
    counts = generate(children, sources["paths"], tmp_path, params, models=tiny, rank=0, world_size=1)
    assert (counts["drawn"], counts["prompts"]) == (2, 0)
    assert files_of(tmp_path) == {k: v for k, v in files_of(reference["out"]).items() if k != "manifest.csv"}
    stronger = params_for_test(splits=("train", "val_test"), strength=0.9)
    counts = generate(children, sources["paths"], tmp_path, stronger, models=tiny, rank=0, world_size=1)
    assert (counts["drawn"], counts["prompts"]) == (8, 0)  # the prompts do not depend on the strength
    with pytest.raises(SynthesizeError, match="8 of 8 planned images are not done"):
        collect(children, tmp_path, params)
    # a smaller plan: collect removes the images, records and prompts of the children left out, and temporaries
    fewer = params_for_test(splits=("train", "val_test"), strength=0.9, kinds=("i2i",))
    kept = plan_children(sources["rows"], fewer)
    (tmp_path / "images" / ".x.png.abc.tmp").mkdir()
    (tmp_path / "images" / ".x.png.abc.tmp" / "x.png").write_bytes(b"killed while writing")
    (tmp_path / "images" / "user-notes.png").write_bytes(b"not ours: stays")
    assert len(collect(kept, tmp_path, fewer)) == 4
    assert sorted(files_of(tmp_path)) == sorted(
        ["manifest.csv", "images/user-notes.png"]
        + [f"images/{c.id}.png" for c in kept]
        + [f"records/{c.id}.json" for c in kept]
        + [f"prompts/{c.source_id}.json" for c in kept]
    )


def test_source_problems_are_named(reference, tiny, sources, tmp_path):
    params, children = reference["params"], reference["children"]
    with pytest.raises(SynthesizeError, match="have no image path"):
        generate(children, {}, tmp_path, params, models=tiny, rank=0, world_size=1)
    paths = dict(sources["paths"])
    first = children[0].source_id
    paths[first] = paths[children[-1].source_id]  # another image than the split table's
    with pytest.raises(SynthesizeError, match=f"differs from the split table's .* for source {first}"):
        generate(children, paths, tmp_path, params, models=tiny, rank=0, world_size=1)
    assert not (tmp_path / "images").exists()


KILLER = textwrap.dedent("""
    import os, signal, sys
    from roadwork.synthesize import __main__ as cli
    from roadwork.synthesize import generate as gen
    done = []
    original = gen.generate
    def killing(*args, **kwargs):
        def on_image(child, path):
            done.append(child.id)
            if len(done) == 3:
                os.kill(os.getpid(), signal.SIGKILL)
        return original(*args, **kwargs, on_image=on_image)
    gen.generate = killing  # run() looks it up at call time
    cli.main(sys.argv[1:])
""")


@pytest.mark.slow
def test_resume_after_kill_gives_the_uninterrupted_result(reference, sources, tmp_path):
    """The command line run is killed (SIGKILL) after 3 images; a second run finishes the other 5 and the
    folder then equals the uninterrupted run's, byte for byte."""
    params_file = tmp_path / "params.yaml"
    params_file.write_text(
        f"synthesize:\n  backend: tiny\n  num_inference_steps: {STEPS}\n  t2i_width: {SIZE}\n  t2i_height: {SIZE}\n"
        "  splits: [train, val_test]\n"
    )
    out = tmp_path / "out"
    args = [
        "--splits",
        str(sources["splits"]),
        "--raw",
        str(sources["raw"]),
        "--out",
        str(out),
        "--params",
        str(params_file),
        "--device",
        "cpu",
    ]
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")]),
    }
    env.pop("RANK", None), env.pop("WORLD_SIZE", None)
    killed = subprocess.run([sys.executable, "-c", KILLER, *args], env=env, capture_output=True, text=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert len(list((out / "records").glob("*.json"))) == 3 and not (out / "manifest.csv").exists()
    resumed = subprocess.run(
        [sys.executable, "-m", "roadwork.synthesize", *args], env=env, capture_output=True, text=True
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert '"drawn": 5' in resumed.stdout and '"skipped": 3' in resumed.stdout
    assert files_of(out) == files_of(reference["out"])


def test_command_line_names_bad_params(sources, tmp_path):
    params_file = tmp_path / "params.yaml"
    params_file.write_text("synthesize:\n  strength: 2\n")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "roadwork.synthesize",
            "--splits",
            str(sources["splits"]),
            "--raw",
            str(sources["raw"]),
            "--out",
            str(tmp_path / "out"),
            "--params",
            str(params_file),
        ],
        env={**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO / "src")},
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0
    assert "synthesize.strength: Input should be less than or equal to 1" in result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_hub_loader_reads_saved_models_by_id(tiny, sources, tmp_path):
    """backend "hub" loads the three models with the libraries' from_pretrained (safetensors, SDXL's fp16 variant);
    here the "ids" are local folders holding the tiny models, so nothing is downloaded."""
    from roadwork.synthesize.models import load_models
    from roadwork.synthesize_params import ModelRef

    tiny.caption_processor.save_pretrained(tmp_path / "blip2")
    tiny.caption_model.save_pretrained(tmp_path / "blip2")
    tiny.rewrite_tokenizer.save_pretrained(tmp_path / "llm")
    tiny.rewrite_model.save_pretrained(tmp_path / "llm")
    tiny.t2i.save_pretrained(tmp_path / "sdxl", variant="fp16")
    assert (tmp_path / "sdxl" / "unet" / "diffusion_pytorch_model.fp16.safetensors").is_file()
    params = params_for_test(
        backend="hub",
        splits=("val_test",),
        sources_per_label=1,
        kinds=("i2i",),
        caption_model=ModelRef(id=str(tmp_path / "blip2")),
        rewrite_model=ModelRef(id=str(tmp_path / "llm")),
        diffusion_model=ModelRef(id=str(tmp_path / "sdxl")),
    )
    models = load_models(params, "cpu")
    assert models.description == f"hub: {tmp_path}/blip2@main, {tmp_path}/llm@main, {tmp_path}/sdxl@main"
    assert models.i2i.unet is models.t2i.unet  # one SDXL in memory for both tasks
    children = plan_children(sources["rows"], params)
    out = tmp_path / "out"
    assert generate(children, sources["paths"], out, params, models=models, rank=0, world_size=1)["drawn"] == 2
    assert [row["split"] for row in collect(children, out, params)] == ["val_test", "val_test"]

"""config.py is the one source of each param's default and description: docs/params.md and params.yaml's
keys, order and comments are generated from it (python -m roadwork.paramsdoc --write)."""

import shutil
import subprocess
import sys
from pathlib import Path

import yaml
from pydantic import BaseModel

from roadwork import paramsdoc
from roadwork.config import Params, load_params, parse_params
from roadwork.presets import apply

REPO = Path(__file__).resolve().parents[1]


def _fields(model=Params, prefix=""):
    for name, field in model.model_fields.items():
        yield f"{prefix}{name}", field
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            yield from _fields(field.annotation, f"{prefix}{name}.")


def test_every_param_has_a_description():
    missing = [path for path, field in _fields() if not field.description]
    assert not missing, f"config.py fields without Field(description=...): {missing}"


def test_docs_params_md_is_current():
    assert (REPO / "docs/params.md").read_text(encoding="utf-8") == paramsdoc.params_md(), (
        "docs/params.md is stale: run python -m roadwork.paramsdoc --write"
    )


def test_params_yaml_keys_order_and_comments_are_generated():
    """Values may differ (presets, dvc exp run -S); the keys, their order and the comments may not."""
    have = paramsdoc.skeleton((REPO / "params.yaml").read_text(encoding="utf-8"))
    want = paramsdoc.skeleton(paramsdoc.params_yaml())
    assert have == want, paramsdoc._first_difference(have, want)
    assert paramsdoc.stale(REPO) == []


def test_generated_params_yaml_holds_the_model_defaults():
    text = paramsdoc.params_yaml()
    raw = yaml.safe_load(text)
    assert raw == Params().model_dump(mode="json")
    assert parse_params(raw) == Params()
    # and it keeps another file's values when asked (--write-keep-values)
    values = {**raw, "dedup": {**raw["dedup"], "max_hamming": 12}}
    assert yaml.safe_load(paramsdoc.params_yaml(values))["dedup"]["max_hamming"] == 12


def test_every_section_and_key_has_its_comment_in_params_yaml():
    lines = paramsdoc.params_yaml().splitlines()
    comments = " ".join(line.split("# ", 1)[1] for line in lines if "# " in line)
    for path, field in _fields():
        assert " ".join(field.description.split()) in comments, path


def test_a_preset_keeps_the_generated_layout(tmp_path):
    params = tmp_path / "params.yaml"
    shutil.copy(REPO / "params.yaml", params)
    for preset in sorted((REPO / "presets").glob("*.yaml")):
        apply(preset, params)
        assert paramsdoc.stale(tmp_path)[1:] == [], preset  # [0]: tmp_path has no docs/params.md
    assert load_params(params).model.backbone != Params().model.backbone


def test_check_names_the_stale_file(tmp_path):
    (tmp_path / "docs").mkdir()
    shutil.copy(REPO / "docs/params.md", tmp_path / "docs/params.md")
    text = (REPO / "params.yaml").read_text(encoding="utf-8")
    (tmp_path / "params.yaml").write_text(text.replace("# byte-identical copies planted", "# copies"))
    done = subprocess.run(
        [sys.executable, "-m", "roadwork.paramsdoc", "--check"], cwd=tmp_path, capture_output=True, text=True
    )
    assert done.returncode == 1
    assert "params.yaml: comment of 'data.synthetic.exact_duplicates' differs" in done.stderr, done.stderr
    assert "docs/params.md" not in done.stderr
    dropped = [line for line in text.splitlines(keepends=True) if "# seed of the cluster assignment" not in line]
    (tmp_path / "params.yaml").write_text("".join(dropped))  # split.seed gone
    problems = paramsdoc.stale(tmp_path)
    assert len(problems) == 1 and "split" in problems[0], problems
    (tmp_path / "docs/params.md").write_text("old")
    subprocess.run([sys.executable, "-m", "roadwork.paramsdoc", "--write"], cwd=tmp_path, check=True)
    assert paramsdoc.stale(tmp_path) == []
    assert yaml.safe_load((tmp_path / "params.yaml").read_text()) == Params().model_dump(mode="json")

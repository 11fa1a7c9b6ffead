"""The stage graph cannot go stale: each stage's code deps in dvc.yaml are exactly the project
modules its script imports (roadwork.depgraph), its data deps and outs are the paths table the
stage scripts use (roadwork.stages.common.STAGE_FILES), stage scripts are thin, and editing a
module makes `dvc status` report exactly the stages that import it."""

import json
import shutil
from pathlib import Path

import pytest
import yaml
from kit.repo import REPO, dvc, expand_stages, make_repo

from roadwork import depgraph
from roadwork.stages.common import STAGE_FILES

STAGE_SCRIPTS = REPO / "src" / "roadwork" / "stages"


def copy_tree(dest: Path) -> Path:
    shutil.copytree(REPO / "src", dest / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    shutil.copy2(REPO / "dvc.yaml", dest / "dvc.yaml")
    return dest


def importers(module: str) -> set[str]:
    """DVC stage names (foreach stages expanded) whose code deps include `module`."""
    expected = depgraph.expected_code_deps(REPO)
    return {name for name in expand_stages(REPO / "dvc.yaml") if module in expected[name.split("@")[0]]}


def test_dvc_yaml_lists_exactly_the_modules_each_stage_imports():
    problems = depgraph.differences(REPO)
    assert not problems, (
        "dvc.yaml is out of step with the code; run `python -m roadwork.depgraph --write`:\n" + "\n".join(problems)
    )


def test_the_check_names_the_stage_and_module_of_a_new_import_even_inside_a_function(tmp_path):
    root = copy_tree(tmp_path)
    threshold = root / "src/roadwork/stages/threshold.py"
    threshold.write_text(threshold.read_text() + "\n\ndef later():\n    from roadwork.predict import Predictor\n")
    problems = depgraph.differences(root)
    assert "threshold: imports src/roadwork/predict.py but dvc.yaml does not list it" in problems
    assert all(p.startswith("threshold: imports ") for p in problems), problems  # nothing else is flagged
    assert depgraph.rewrite(root) and not depgraph.differences(root)
    assert (
        "src/roadwork/predict.py"
        in yaml.safe_load((root / "dvc.yaml").read_text())["stages"]["threshold"]["do"]["deps"]
    )


def test_the_check_names_a_listed_module_no_stage_imports(tmp_path):
    root = copy_tree(tmp_path)
    spec = yaml.safe_load((root / "dvc.yaml").read_text())
    spec["stages"]["split"]["deps"].append("src/roadwork/predict.py")
    (root / "dvc.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    assert depgraph.differences(root) == [
        "split: dvc.yaml lists src/roadwork/predict.py but the stage does not import it"
    ]


def test_rewrite_keeps_data_deps_and_comments(tmp_path):
    root = copy_tree(tmp_path)
    text = (root / "dvc.yaml").read_text()
    stripped = "\n".join(line for line in text.splitlines() if "- src/" not in line) + "\n"
    (root / "dvc.yaml").write_text(stripped)
    assert depgraph.differences(root)
    depgraph.rewrite(root)
    assert (root / "dvc.yaml").read_text() == text


def test_dvc_yaml_files_are_the_paths_table():
    """Every stage's data deps and its outs, metrics and plots are the stage scripts' paths."""
    stages = expand_stages(REPO / "dvc.yaml")
    assert set(stages) == set(STAGE_FILES)

    def names(entries):
        return sorted(next(iter(e)) if isinstance(e, dict) else e for e in entries or [])

    raw = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    # the local source reaches download through scan_local's inventory, never as a folder DVC would hash
    assert raw["scan_local"]["always_changed"] and not any("${" in d for s in raw.values() for d in s.get("deps", []))
    for name, stage in stages.items():
        deps = [d for d in names(stage.get("deps")) if not d.startswith("src/")]
        outs = names(stage.get("outs")) + names(stage.get("metrics")) + names(stage.get("plots"))
        assert deps == sorted(p.as_posix() for p in STAGE_FILES[name]["deps"]), name
        assert sorted(outs) == sorted(p.as_posix() for p in STAGE_FILES[name]["outs"]), name


def test_no_stage_reads_a_metrics_file():
    metrics = {
        next(iter(m)) if isinstance(m, dict) else m
        for stage in expand_stages(REPO / "dvc.yaml").values()
        for m in stage.get("metrics") or []
    }
    for name, stage in expand_stages(REPO / "dvc.yaml").items():
        assert not metrics & set(stage.get("deps") or []), f"{name} reads a metrics file: a later stage reads data"


def test_stage_modules_run_their_stage_and_know_no_paths_but_the_table():
    """Each stage's recipe is its module (the library below knows no stage); it runs as the stage's
    command and takes every pipeline path from stages.common's table."""
    commands = {body["cmd"].split()[2] for body in expand_stages(REPO / "dvc.yaml").values()}
    for script in sorted(STAGE_SCRIPTS.glob("*.py")):
        if script.name in ("__init__.py", "common.py"):
            continue
        text = script.read_text()
        assert f"roadwork.stages.{script.stem}" in commands, f"{script.name} is no stage's command in dvc.yaml"
        assert "def main(" in text and 'if __name__ == "__main__":' in text, f"{script.name} does not run as a script"
        for literal in ('"data/', "'data/", '"metrics/', '"plots/', '"dvclive/', '"runs/'):
            assert literal not in text, f"{script.name} spells a pipeline path ({literal}...); use stages.common"


@pytest.mark.slow
def test_editing_a_module_marks_exactly_the_stages_that_import_it(tmp_path):
    """In a clone with the committed lock, append a comment to a module imported by one stage and to
    one imported by all: `dvc status` reports it modified in exactly the importing stages."""
    expected = depgraph.expected_code_deps(REPO)
    every = set.intersection(*(set(m) for m in expected.values()))
    counts = {m: len(importers(m)) for modules in expected.values() for m in modules}
    only_one = sorted(m for m, n in counts.items() if n == 1)
    assert "src/roadwork/config.py" in every and only_one
    repo = make_repo(tmp_path / "clone", drop_lock=False)
    for module in (only_one[0], "src/roadwork/config.py"):
        (repo / module).write_text((repo / module).read_text() + "\n# edited\n")
        status = json.loads(dvc(repo, "status", "--json").stdout or "{}")
        reported = {
            stage
            for stage, changes in status.items()
            for change in changes
            if isinstance(change, dict)
            if change.get("changed deps", {}).get(module) == "modified"
        }
        assert reported == importers(module), (module, reported)
        assert len(reported) == (1 if module == only_one[0] else len(STAGE_FILES))

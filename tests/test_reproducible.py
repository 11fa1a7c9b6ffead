"""`dvc repro split` in two separate clones produces byte-identical outputs and dvc.lock."""

import json

import pytest
import yaml
from kit.repo import TINY, dvc, make_repo


@pytest.mark.slow
def test_two_clones_reproduce_the_data_stages_byte_for_byte(tmp_path):
    locks = []
    for name in ("first", "second"):
        repo = make_repo(tmp_path / name, TINY)
        dvc(repo, "repro", "split")
        locks.append(yaml.safe_load((repo / "dvc.lock").read_text())["stages"])
        assert dvc(repo, "status", "split").stdout.strip().startswith("Data and pipelines are up to date"), (
            "dvc status not clean"
        )
    first, second = locks
    for stage in ("download", "dedup", "split"):
        assert first[stage]["outs"] == second[stage]["outs"], f"{stage} outputs differ between clones"
    assert (tmp_path / "first" / "data" / "split" / "splits.csv").read_bytes() == (
        tmp_path / "second" / "data" / "split" / "splits.csv"
    ).read_bytes()
    # the second clone's checkout of the committed lock would not change: a repro is a no-op there
    repro = dvc(tmp_path / "second", "repro", "split")
    assert "didn't change, skipping" in repro.stdout


@pytest.mark.slow
def test_fresh_clone_reproduces_the_committed_lock(tmp_path):
    """The committed dvc.lock (made on the developer's machine) is what a fresh clone produces."""
    repo = make_repo(tmp_path / "clone", drop_lock=False)
    committed = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    dvc(repo, "repro", "split")
    produced = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    for stage in ("download", "dedup", "split"):
        assert produced[stage] == committed[stage], f"{stage}: dvc.lock changed on a fresh clone"


def test_committed_lock_matches_the_code_it_was_made_from(tmp_path):
    """Every code and params dependency recorded in dvc.lock is the one in the tree.

    A refactor of a stage's code without `dvc repro` leaves a stale lock that a fresh clone
    would re-run (and the slow test above would catch minutes later); this catches it in seconds.
    """
    repo = make_repo(tmp_path / "clone", drop_lock=False)
    status = json.loads(dvc(repo, "status", "--json").stdout or "{}")
    # e.g. {"dedup": [{"changed deps": {"src/...": "modified", "params.yaml": {"dedup": "modified"}}}]};
    # upstream outputs are absent in a clone ("deleted"), code and params are not
    stale = {
        stage: modified
        for stage, changes in status.items()
        for change in changes
        if isinstance(change, dict)
        if (modified := {path: what for path, what in change.get("changed deps", {}).items() if what != "deleted"})
    }
    assert not stale, f"dvc.lock is stale, run `dvc repro` and commit it: {stale}"

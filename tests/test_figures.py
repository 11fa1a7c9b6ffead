"""The pipeline's figures in README.md, docs/ and benchmarks/RESULTS.md are generated from metrics/*.json
(python -m roadwork.figures --write); the committed blocks equal what the committed metrics give."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from roadwork import figures

REPO = Path(__file__).resolve().parents[1]


def test_committed_figure_blocks_match_the_committed_metrics():
    assert figures.stale(REPO) == [], "run python -m roadwork.figures --write"
    blocks = {m.group(2) for path in figures.documents(REPO) for m in figures.BLOCK.finditer(path.read_text())}
    assert blocks == {row[0] for row in figures.FIGURES}, "a FIGURES block that no document shows, or the reverse"


def test_every_row_resolves_and_intervals_are_found():
    for name in {row[0] for row in figures.FIGURES}:
        figures.block(name, REPO / "metrics")  # raises naming the file and key of a row that moved
    assert figures.figure(REPO / "metrics", "evaluate.json", "val_test.mcc", "f3")[1].startswith("[")
    value, interval = figures.figure(REPO / "metrics", "evaluate.json", "comparisons.phase4_vs_phase1.difference", "d3")
    assert value.endswith(")") and interval.startswith("[")


def _workspace(tmp_path, mcc=0.5):
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics/export.json").write_text(
        json.dumps({"val_test": {"mcc": mcc, "mcc_ci95_low": 0.4, "mcc_ci95_high": 0.6, "prior_0.5": {"mcc": 0.55}}})
    )
    (tmp_path / "README.md").write_text("intro\n<!-- figures:t -->\nold\n<!-- /figures:t -->\nend\n")
    return tmp_path


def test_write_fills_and_check_names_the_stale_block(tmp_path, monkeypatch):
    monkeypatch.setattr(
        figures,
        "FIGURES",
        [
            ("t", "MCC", "export.json", "val_test.mcc", "f3"),
            ("t", "50/50", "export.json", "val_test.prior_0.5.mcc", "f3"),
        ],
    )
    root = _workspace(tmp_path)
    assert figures.stale(root) == ["README.md: block t is stale"]
    figures.write(root)
    text = (root / "README.md").read_text()
    assert "| MCC | 0.500 | [0.400, 0.600] | `metrics/export.json` `val_test.mcc` |" in text
    assert "| 50/50 | 0.550 |  |" in text and text.startswith("intro\n") and text.endswith("end\n")
    assert figures.stale(root) == []
    (root / "metrics/export.json").write_text(json.dumps({"val_test": {"mcc": 0.7, "prior_0.5": {"mcc": 0.55}}}))
    assert figures.stale(root) == ["README.md: block t is stale"]


def test_a_moved_key_is_named(tmp_path, monkeypatch):
    monkeypatch.setattr(figures, "FIGURES", [("t", "MCC", "export.json", "val_test.auc", "f3")])
    root = _workspace(tmp_path)
    with pytest.raises(KeyError, match=r"export.json: no key 'val_test.auc'"):
        figures.stale(root)


def test_cli_check_runs_on_the_repository():
    done = subprocess.run(
        [sys.executable, "-m", "roadwork.figures", "--check"], cwd=REPO, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr

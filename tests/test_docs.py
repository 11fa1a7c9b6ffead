"""The documentation a newcomer walks: the README stays a short page, and every relative link in
README.md, docs/ and benchmarks/RESULTS.md reaches a file (and, with ``#anchor``, one of its headings)."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PAGES = sorted([REPO / "README.md", REPO / "benchmarks" / "RESULTS.md", *(REPO / "docs").glob("*.md")])
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = heading.strip().lower().replace("`", "")
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = FENCE.sub("", page.read_text(encoding="utf-8"))
    return {slug(m.group(1)) for m in re.finditer(r"^#{1,6} (.+)$", text, re.M)}


def broken_links(pages: list[Path], root: Path = REPO) -> list[str]:
    problems = []
    for page in pages:
        text = FENCE.sub("", page.read_text(encoding="utf-8"))
        for target in LINK.findall(text):
            if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
                continue
            path, _, anchor = target.partition("#")
            dest = (page.parent / path).resolve() if path else page
            where = page.relative_to(root)
            if not dest.exists():
                problems.append(f"{where}: link to {target}: no file {path}")
            elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
                problems.append(f"{where}: link to {target}: no heading #{anchor} in {dest.name}")
    return problems


def test_slug_is_githubs():
    assert slug("explora: extended self-supervised pre-training (ExPLoRA), then fine-tuning") == (
        "explora-extended-self-supervised-pre-training-explora-then-fine-tuning"
    )
    assert slug("`threshold@phase1`, `@phase4`") == "thresholdphase1-phase4"


def test_every_relative_link_reaches_its_file_and_heading():
    assert broken_links(PAGES) == []


def test_the_checker_finds_a_missing_file_and_a_missing_heading(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("# A page\n\n## Real heading\n")
    page = tmp_path / "README.md"
    page.write_text("[ok](docs/a.md#real-heading) [gone](docs/b.md) [typo](docs/a.md#real-headin)\n")
    problems = broken_links([page], tmp_path)
    assert problems == [
        "README.md: link to docs/b.md: no file docs/b.md",
        "README.md: link to docs/a.md#real-headin: no heading #real-headin in a.md",
    ]


def test_readme_stays_a_short_page():
    """Set-up, the pipeline at a glance, deploy, real runs; the reference lives in docs/ (issue 20)."""
    lines = (REPO / "README.md").read_text(encoding="utf-8").count("\n")
    assert lines <= 250, f"README.md has {lines} lines: move reference material to docs/"

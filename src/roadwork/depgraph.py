"""Each DVC stage's code dependencies are the project modules its script imports, transitively.

`dvc.yaml` lists them so that editing any module a stage runs makes `dvc status` report that
stage (and only the stages that run it) as changed. This module computes the import closure of
every stage script from the source (``import`` statements anywhere in a module, including inside
functions; a package's ``__init__.py`` counts, since importing a submodule runs it) and checks or
rewrites the ``src/`` entries of each stage's ``deps`` in `dvc.yaml`:

    python -m roadwork.depgraph           # check: exit 1 naming each stage and module that differ
    python -m roadwork.depgraph --write   # rewrite the src/ deps of dvc.yaml in place

Only the ``src/`` lines of a ``deps`` list are rewritten; data dependencies, comments and the
rest of the file are left as they are.
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
from functools import lru_cache
from pathlib import Path

import yaml

PACKAGE = "roadwork"
STAGE_COMMAND = re.compile(r"python -m (roadwork\.stages\.\w+)")
# The package's layers, top first, by the name under roadwork/: a module imports from its own layer or
# below, never above (tests/test_layers.py checks it, imports inside functions included).
LAYERS = (
    ("stages", "cli", "depgraph", "paramsdoc", "figures"),
    ("predict", "miner", "export"),
    ("train", "evaluate", "synthesize"),
    ("data", "models"),
    ("config", "io", "log", "sections", "synthesize_params", "presets"),
)


class SourceTree:
    """The project's modules under ``src/`` and the project modules each one imports."""

    def __init__(self, src: Path):
        self.src = Path(src)

    def path_of(self, module: str) -> Path | None:
        base = self.src.joinpath(*module.split("."))
        for candidate in (base.with_suffix(".py"), base / "__init__.py"):
            if candidate.is_file():
                return candidate
        return None

    def _resolve(self, node: ast.ImportFrom, importer: str) -> str:
        if not node.level:
            return node.module or ""
        package = importer if self.path_of(importer).name == "__init__.py" else importer.rpartition(".")[0]
        for _ in range(node.level - 1):
            package = package.rpartition(".")[0]
        return f"{package}.{node.module}" if node.module else package

    @lru_cache(maxsize=None)  # noqa: B019 (one graph per dvc.yaml check, freed with it)
    def direct_imports(self, module: str) -> frozenset[str]:
        """Project modules named by the import statements of `module`, wherever they stand."""
        path = self.path_of(module)
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        found = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = self._resolve(node, module)
                found.add(base)
                found.update(f"{base}.{alias.name}" for alias in node.names)  # `from pkg import submodule`
        return frozenset(
            name for name in found if (name == PACKAGE or name.startswith(PACKAGE + ".")) and self.path_of(name)
        )

    def closure(self, module: str) -> list[Path]:
        """Source files run by importing `module`: its imports, transitively, and every package
        ``__init__.py`` on the way."""
        seen, todo = set(), [module]
        while todo:
            name = todo.pop()
            if name in seen or self.path_of(name) is None:
                continue
            seen.add(name)
            parts = name.split(".")
            todo.extend(".".join(parts[:i]) for i in range(1, len(parts)))  # parent packages
            todo.extend(self.direct_imports(name))
        return sorted(self.path_of(name) for name in seen)


def layer_of(module: str) -> int | None:
    """0 for the top layer (stages), larger further down; None for a module outside :data:`LAYERS`."""
    parts = module.split(".")
    for depth, names in enumerate(LAYERS):
        if len(parts) > 1 and parts[0] == PACKAGE and parts[1] in names:
            return depth
    return None


def _stage_bodies(dvc_yaml: dict) -> dict[str, dict]:
    """{stage name: the mapping holding its cmd and deps} (a foreach stage's `do` block)."""
    return {name: stage.get("do", stage) for name, stage in dvc_yaml["stages"].items()}


def expected_code_deps(root: Path) -> dict[str, list[str]]:
    """{stage: sorted src/ paths its command imports}, for every stage whose command runs a
    ``roadwork.stages`` module."""
    root = Path(root)
    tree = SourceTree(root / "src")
    stages = _stage_bodies(yaml.safe_load((root / "dvc.yaml").read_text()))
    out = {}
    for name, body in stages.items():
        match = STAGE_COMMAND.search(body.get("cmd", ""))
        if match:
            out[name] = [path.relative_to(root).as_posix() for path in tree.closure(match.group(1))]
    return out


def listed_code_deps(root: Path) -> dict[str, list[str]]:
    stages = _stage_bodies(yaml.safe_load((Path(root) / "dvc.yaml").read_text()))
    return {
        name: [d for d in body.get("deps") or [] if isinstance(d, str) and d.startswith("src/")]
        for name, body in stages.items()
    }


def differences(root: Path) -> list[str]:
    """One line per stage and module where dvc.yaml and the import closure disagree."""
    expected, listed = expected_code_deps(root), listed_code_deps(root)
    problems = []
    for stage, modules in expected.items():
        have = listed.get(stage, [])
        problems += [f"{stage}: imports {m} but dvc.yaml does not list it" for m in modules if m not in have]
        problems += [f"{stage}: dvc.yaml lists {m} but the stage does not import it" for m in have if m not in modules]
    return problems


def rewrite(root: Path) -> bool:
    """Replace the src/ entries of each stage's deps list in dvc.yaml by its import closure.
    Returns whether the file changed."""
    path = Path(root) / "dvc.yaml"
    expected = expected_code_deps(root)
    lines = path.read_text().splitlines(keepends=True)
    out, stage, i = [], None, 0
    while i < len(lines):
        line = lines[i]
        top = re.match(r"^  (\w[\w-]*):\s*(#.*)?$", line)
        if top:
            stage = top.group(1)
        deps = re.match(r"^(\s+)deps:\s*$", line)
        out.append(line)
        i += 1
        if deps and stage in expected:
            indent = deps.group(1) + "  "
            others = []
            while i < len(lines) and lines[i].startswith(f"{indent}- "):
                if not lines[i].startswith(f"{indent}- src/"):
                    others.append(lines[i])  # data dependencies stay, after the code
                i += 1
            out.extend(f"{indent}- {module}\n" for module in expected[stage])
            out.extend(others)
    text = "".join(out)
    changed = text != path.read_text()
    if changed:
        path.write_text(text)
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m roadwork.depgraph", description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", action="store_true", help="rewrite the src/ deps of dvc.yaml")
    parser.add_argument("--root", type=Path, default=Path("."), help="repository root (default: .)")
    args = parser.parse_args(argv)
    if args.write:
        print("dvc.yaml updated" if rewrite(args.root) else "dvc.yaml already lists every stage's imports")
    problems = differences(args.root)
    for problem in problems:
        print(problem, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())

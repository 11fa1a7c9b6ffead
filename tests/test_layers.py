"""The library's layering: no module imports a module of a higher layer (imports inside
functions included), and no two packages import each other, directly or round a longer loop.

    stages, cli, depgraph, paramsdoc,    4  (recipes and tools: may import anything)
    figures
    predict, miner, export               3
    train, evaluate, synthesize          2
    data, models                         1
    config, io, log, sections, presets,  0
    synthesize_params, the package's __init__

The layers are :data:`roadwork.depgraph.LAYERS`. The imports are read with ``ast`` by
:class:`roadwork.depgraph.SourceTree` (the resolver that builds dvc.yaml's code deps), so a relative
import or ``from pkg import submodule`` counts too.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from roadwork.depgraph import LAYERS, PACKAGE, SourceTree, layer_of

SRC = Path(__file__).resolve().parents[1] / "src"


def modules(src: Path) -> list[str]:
    root = src / PACKAGE
    out = []
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(src).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out.append(".".join(parts))
    return out


def unit(module: str) -> str:
    """The layered unit of a module: ``roadwork.evaluate.metrics`` -> ``evaluate``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def layer(module: str) -> int:
    """The module's layer counted from the bottom (config/io = 0), from :data:`roadwork.depgraph.LAYERS`."""
    if module == PACKAGE:
        return 0  # roadwork/__init__.py
    depth = layer_of(module)
    if depth is None:
        raise AssertionError(f"{module}: package or module {unit(module)!r} has no layer in roadwork.depgraph.LAYERS")
    return len(LAYERS) - 1 - depth


def violations(src: Path) -> tuple[list[str], list[str]]:
    """(upward imports, package cycles) of the source tree under `src`."""
    tree = SourceTree(src)
    upward, edges = [], {}
    for module in modules(src):
        for imported in sorted(tree.direct_imports(module)):
            if unit(imported) == unit(module) or imported == PACKAGE:
                continue
            if layer(imported) > layer(module):
                upward.append(f"{module} (layer {layer(module)}) imports {imported} (layer {layer(imported)})")
            edges.setdefault(unit(module), set()).add(unit(imported))
    cycles = []
    for start in sorted(edges):  # any path from a package back to itself
        stack, seen = [(start, [start])], set()
        while stack:
            node, path = stack.pop()
            for nxt in sorted(edges.get(node, ())):
                if nxt == start:
                    cycles.append(" -> ".join([*path, start]))
                elif nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, [*path, nxt]))
    return upward, sorted(set(cycles))


def test_no_upward_import_and_no_package_cycle():
    upward, cycles = violations(SRC)
    assert upward == [], "imports of a higher layer:\n" + "\n".join(upward)
    assert cycles == [], "import cycles between packages:\n" + "\n".join(cycles)


def test_every_module_has_a_layer():
    for module in modules(SRC):
        layer(module)


def test_the_checker_catches_a_planted_upward_import_and_cycle(tmp_path):
    src = tmp_path / "src"
    shutil.copytree(SRC / PACKAGE, src / PACKAGE, ignore=shutil.ignore_patterns("__pycache__"))
    metrics = src / PACKAGE / "evaluate" / "metrics.py"
    metrics.write_text(metrics.read_text() + "\n\ndef _planted():\n    from roadwork.predict import Predictor\n")
    upward, cycles = violations(src)
    assert upward == ["roadwork.evaluate.metrics (layer 2) imports roadwork.predict (layer 3)"]
    assert "evaluate -> predict -> miner -> evaluate" in cycles  # and the loop it closes (miner uses evaluate)
    metrics.write_text((SRC / PACKAGE / "evaluate" / "metrics.py").read_text())
    assert violations(src) == ([], [])

    # a same-layer loop: export <-> predict
    bundle = src / PACKAGE / "export" / "bundle.py"
    bundle.write_text(bundle.read_text() + "\n\ndef _loop():\n    from roadwork import predict\n")
    predict = src / PACKAGE / "predict.py"
    predict.write_text(predict.read_text() + "\n\ndef _back():\n    from roadwork.export import bundle\n")
    _, cycles = violations(src)
    assert any(c.startswith("export -> predict -> export") for c in cycles), cycles

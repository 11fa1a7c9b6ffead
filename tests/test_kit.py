"""The tests share one kit (tests/kit/) and fixtures (tests/conftest.py): no test module imports another
test module, or conftest, so each can move, be renamed or run alone."""

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def imported_modules(path: Path) -> set[str]:
    """Top-level names of every module `path` imports, anywhere in the file (functions included)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_no_test_module_imports_another_test_module_or_conftest():
    sources = sorted(TESTS.glob("*.py")) + sorted((TESTS / "kit").glob("*.py"))
    assert len(sources) > 30 and (TESTS / "kit" / "__init__.py") in sources
    offenders = {
        path.relative_to(TESTS).as_posix(): sorted(
            name for name in imported_modules(path) if name.startswith("test_") or name == "conftest"
        )
        for path in sources
    }
    assert {path: names for path, names in offenders.items() if names} == {}


def test_the_kit_is_the_only_helper_package():
    """Helpers live in tests/kit/; beside the test modules only conftest.py (fixtures) and the miner's
    environment check (.ci/run runs it by path)."""
    helpers = {p.name for p in TESTS.glob("*.py") if not p.name.startswith("test_")}
    assert helpers == {"conftest.py", "miner_env_check.py"}

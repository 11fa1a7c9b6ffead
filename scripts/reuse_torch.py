"""Print the site-packages entries (top-level files and folders) that make up torch and
torchvision and everything they need, in the environment running this script; used by
scripts/miner_env.sh to let the miner's environment reuse an installed torch instead of
installing a second ~5 GB CUDA build. Packages the miner pins itself are left out (they are
installed at the pinned version). Run with the Python of the environment that has torch.

    python scripts/reuse_torch.py [EXCLUDED_DISTRIBUTION ...]
"""
import importlib.metadata as md
import re
import sys
from pathlib import Path

from packaging.requirements import Requirement

ROOTS = ("torch", "torchvision")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def closure(roots, excluded):
    seen, todo = {}, [(root, frozenset()) for root in roots]
    while todo:
        name, extras = todo.pop()
        key = canonical(name)
        if key in excluded or (key in seen and extras <= seen[key]):
            continue
        dist = md.distribution(name)
        seen[key] = seen.get(key, frozenset()) | extras
        for text in dist.requires or []:
            req = Requirement(text)
            if req.marker is None or any(req.marker.evaluate({"extra": e}) for e in ("", *extras)):
                todo.append((req.name, frozenset(req.extras)))
    return sorted(seen)


def top_level_entries(name: str) -> set[str]:
    dist = md.distribution(name)
    entries = {Path(f).parts[0] for f in dist.files or [] if not str(f).startswith("..")}
    return {e for e in entries if e != "__pycache__"}


if __name__ == "__main__":
    excluded = {canonical(n) for n in sys.argv[1:]}
    site = Path(md.distribution("torch").locate_file(""))
    for entry in sorted(set().union(*(top_level_entries(n) for n in closure(ROOTS, excluded)))):
        print(site / entry)

"""End-to-end helpers: a throwaway git+DVC repository made from this working tree."""

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def tracked_files() -> list[str]:
    """Files git tracks or would track (untracked but not ignored): what a commit would hold."""
    out = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout
    return sorted(p for p in out.split("\0") if p and (REPO / p).is_file())


def make_repo(dest: Path, params_patch: dict | None = None, drop_lock: bool = True) -> Path:
    """Copy the project into `dest` as a fresh git repo with one commit, like a clone."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in tracked_files():
        if name.startswith(("metrics/", "plots/", "dvclive/")) or (drop_lock and name == "dvc.lock"):
            continue
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, target)
    if params_patch:
        params = yaml.safe_load((dest / "params.yaml").read_text())
        (dest / "params.yaml").write_text(yaml.safe_dump(merge(params, params_patch), sort_keys=False))
    git(dest, "init", "-q")
    git(dest, "add", "-A")
    git(dest, "commit", "-qm", "initial")
    return dest


def merge(base: dict, patch: dict) -> dict:
    out = dict(base)
    for key, value in patch.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def env(repo: Path) -> dict:
    return dict(
        os.environ,
        PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}",
        ROADWORK_CACHE=str(repo / ".cache"),
        GIT_AUTHOR_NAME="test",
        GIT_AUTHOR_EMAIL="test@localhost",
        GIT_COMMITTER_NAME="test",
        GIT_COMMITTER_EMAIL="test@localhost",
    )


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, env=env(repo), capture_output=True, text=True, check=True).stdout


def dvc(repo: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([str(BIN / "dvc"), *args], cwd=repo, env=env(repo), capture_output=True, text=True)
    if check and result.returncode != 0:
        raise AssertionError(f"dvc {' '.join(args)} failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
    return result


# Small enough for CI: a few hundred 64x64 scenes and a tiny model, a couple of epochs.
TINY = {
    "data": {
        "synthetic": {
            "count": 160,
            "width": 64,
            "height": 64,
            "exact_duplicates": 4,
            "pixel_duplicates": 3,
            "near_duplicates": 8,
            "broken_files": 4,
        }
    },
    "model": {"overrides": {"embed_dim": 32, "depth": 2, "num_heads": 2}, "img_size": 32},
    "train": {"epochs": 2, "batch_size": 16, "num_workers": 0},
    # the tiny random-weight generator on one source per (split, label), 2 steps: the stage's code path, quickly
    "synthesize": {"sources_per_label": 1, "num_inference_steps": 2, "t2i_width": 32, "t2i_height": 32},
}


# --- helpers for remotes, experiments and concurrent runs (tests/test_remote.py, tests/test_experiments.py)


def dvc_env(
    repo: Path, extra_env: dict, *args: str, check: bool = True, timeout: float | None = None
) -> subprocess.CompletedProcess:
    """`dvc(...)` with extra environment variables (e.g. HOME for ~/.ssh/known_hosts)."""
    result = subprocess.run(
        [str(BIN / "dvc"), *args],
        cwd=repo,
        env=dict(env(repo), **extra_env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"dvc {' '.join(args)} failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
    return result


def digest_tree(repo: Path, *paths: str) -> dict[str, str]:
    """sha256 of every file under `paths` (files or folders), keyed by path relative to `repo`."""
    import hashlib

    digests = {}
    for path in paths:
        root = repo / path
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for file in files:
            digests[file.relative_to(repo).as_posix()] = hashlib.sha256(file.read_bytes()).hexdigest()
    return digests


def expand_stages(dvc_yaml: Path) -> dict[str, dict]:
    """dvc.yaml's stages as DVC runs them: `${section.key}` taken from the params.yaml beside it,
    and a `foreach` stage as one stage per item, named `<stage>@<item>`, with ${item} substituted."""
    params = yaml.safe_load((dvc_yaml.parent / "params.yaml").read_text())

    def value(match):
        node = params
        for key in match.group(1).split("."):
            node = node[key]
        return str(node)

    text = re.sub(r"\$\{((?!item\})[\w.]+)\}", value, dvc_yaml.read_text())
    stages = {}
    for name, stage in yaml.safe_load(text)["stages"].items():
        if "foreach" not in stage:
            stages[name] = stage
            continue
        for item in stage["foreach"]:
            text = yaml.safe_dump(stage["do"]).replace("${item}", str(item))
            stages[f"{name}@{item}"] = yaml.safe_load(text)
    return stages


def pipeline_paths(dvc_yaml: Path) -> dict[str, dict[str, list[str]]]:
    """{stage: {"deps": [...], "outs": [...]}} from dvc.yaml (outs include metrics and plots outputs)."""
    stages = expand_stages(dvc_yaml)

    def names(entries):
        return [next(iter(e)) if isinstance(e, dict) else e for e in entries or []]

    return {
        name: {
            "deps": names(stage.get("deps")),
            "outs": names(stage.get("outs")) + names(stage.get("metrics")) + names(stage.get("plots")),
        }
        for name, stage in stages.items()
    }


def experiments(show: list) -> list[dict]:
    """The experiments of `dvc exp show --json` (DVC 3.x layout), flattened: name, rev, params, metrics, error."""
    found = []
    for commit in show:
        for exp in commit.get("experiments") or []:
            for rev in exp.get("revs") or []:
                data = rev.get("data") or {}
                found.append(
                    {
                        "name": rev.get("name") or exp.get("name"),
                        "rev": rev.get("rev"),
                        "baseline": commit.get("rev"),
                        "error": rev.get("error"),
                        "params": (data.get("params") or {}).get("params.yaml", {}).get("data", {}),
                        "metrics": {
                            path: m.get("data") for path, m in (data.get("metrics") or {}).items() if "data" in m
                        },
                    }
                )
    return found


def make_clean_repo(dest: Path, params_patch: dict | None = None) -> Path:
    """`make_repo`, minus any stage output that the working tree happens to hold untracked and not
    yet git-ignored (e.g. data/explora/ while a stage runs in the developer's checkout): a clone
    never has those, and DVC refuses an output that git tracks."""
    repo = make_repo(dest, params_patch)
    outs = {out for paths in pipeline_paths(repo / "dvc.yaml").values() for out in paths["outs"]}
    present = [out for out in sorted(outs) if (repo / out).exists()]
    if present:
        git(repo, "rm", "-r", "-q", "--cached", "--ignore-unmatch", *present)
        for out in present:
            target = repo / out
            shutil.rmtree(target) if target.is_dir() else target.unlink()
        git(repo, "commit", "-q", "--amend", "--allow-empty", "-m", "initial")
    return repo


def files_of(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` with its bytes, keyed by path relative to `folder`."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def load_script(path: Path):
    """A script outside the package (e.g. benchmarks/gpu_check.py) imported as a module named after its file."""
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module

"""Experiments: `dvc exp run -S`, queued sweeps from a clone with only committed files, what
`dvc exp show` lists, that every stage input is in git or produced by a stage (what a queued run,
which starts from a copy of the commit, can see), and what a second dvc command does while one runs.
"""

import json
import os
import pty
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from kit.repo import BIN, REPO, TINY, dvc, env, experiments, git, make_clean_repo, merge, pipeline_paths

# later stages kept small too, so the one full-pipeline run here stays around a minute on 2 cores
SWEEP = merge(TINY, {"explora": {"epochs": 1, "warmup_epochs": 0}, "export": {"bootstrap": 100}})

# The README's `dvc exp show` command for the headline columns. DVC prefixes a metric with its file
# ("metrics/phase1.json:val_select.mcc") only where the same key is in several files.
HEADLINE_KEEP = (
    r"Experiment|train\.lr$|metrics/phase1\.json:val_select\.mcc$|metrics/evaluate\.json:val_test\.mcc$"
    r"|(.*:)?val_test\.mcc_ci95_(low|high)$"
    r"|(.*:)?val_test\.prior_0\.5\.ece_positive_uniform$|(.*:)?protocol\.reward(_ci95_low|_ci95_high)?$"
    r"|(.*:)?comparisons\.[a-z0-9_]+\.verdict$|(.*:)?ece_shipped_minus_raw\.prior_0\.5\.verdict$"
)
HEADLINE_COLUMNS = {
    "Experiment",
    "train.lr",
    "metrics/phase1.json:val_select.mcc",
    "metrics/evaluate.json:val_test.mcc",
    "val_test.mcc_ci95_low",
    "val_test.mcc_ci95_high",
    "val_test.prior_0.5.ece_positive_uniform",
    "protocol.reward",
    "protocol.reward_ci95_low",
    "protocol.reward_ci95_high",
    "comparisons.phase4_vs_phase1.verdict",
    "comparisons.multiview_vs_single_view.verdict",
    "comparisons.model_vs_colour_baseline.verdict",
    "ece_shipped_minus_raw.prior_0.5.verdict",
}


def metric(exp, path, *keys):
    value = exp["metrics"][path]
    for key in keys:
        value = value[key]
    return value


# -- everything a stage needs is in git or made by a stage ---------------------------------------


def input_problems(repo):
    """Stage inputs (deps) that a copy of the commit would lack: neither in `git ls-files` nor made
    by another stage."""
    tracked = set(git(repo, "ls-files").split("\n")) - {""}
    stages = pipeline_paths(repo / "dvc.yaml")

    def produced_by(path, this):
        return [
            name
            for name, paths in stages.items()
            if name != this
            for out in paths["outs"]
            if path == out or path.startswith(out.rstrip("/") + "/")
        ]

    problems = []
    for name, paths in stages.items():
        for dep in paths["deps"]:
            dep = dep.rstrip("/")
            in_git = dep in tracked or any(f.startswith(dep + "/") for f in tracked)
            if not in_git and not produced_by(dep, name):
                problems.append(f"{name}: {dep} is neither git-tracked nor an output of another stage")
            if in_git and produced_by(dep, name):
                problems.append(f"{name}: {dep} is both git-tracked and a stage output")
    return problems


def test_every_stage_input_is_git_tracked_or_made_by_another_stage(tmp_path):
    repo = make_clean_repo(tmp_path / "clone")  # what a commit holds, as a queued run's copy sees it
    assert not input_problems(repo), "\n".join(input_problems(repo))
    assert "params.yaml" in git(repo, "ls-files").split()


def test_the_input_check_catches_ignored_and_missing_inputs(tmp_path):
    repo = make_clean_repo(tmp_path / "clone")
    stages = yaml.safe_load((repo / "dvc.yaml").read_text())
    stages["stages"]["split"]["deps"] += [".cache/images", "src/roadwork/data/typo.py"]
    (repo / "dvc.yaml").write_text(yaml.safe_dump(stages, sort_keys=False))
    problems = input_problems(repo)
    assert any(".cache/images" in p for p in problems) and any("typo.py" in p for p in problems), problems
    assert len(problems) == 2, problems


def test_python_bytecode_in_code_dependencies_is_dvc_ignored(tmp_path):
    """Without PYTHONDONTWRITEBYTECODE, running a stage writes __pycache__ into the code folders that
    are stage deps; DVC (which reads .dvcignore, not .gitignore) would hash those machine-specific
    files into dvc.lock, so a clone or a queued run sees "changed deps" and retrains."""
    repo = make_clean_repo(tmp_path / "clone")
    deps = [dep for paths in pipeline_paths(repo / "dvc.yaml").values() for dep in paths["deps"]]
    # the folders Python writes __pycache__ into: those of the code files, and any folder dep
    folders = sorted(
        {dep for dep in deps if (repo / dep).is_dir()}
        | {Path(dep).parent.as_posix() for dep in deps if dep.endswith(".py")}
    )
    assert "src/roadwork" in folders and "src/roadwork/data" in folders, folders
    probes = []
    for folder in folders:
        probe = repo / folder / "__pycache__" / "probe.cpython-311.pyc"
        probe.parent.mkdir(exist_ok=True)
        probe.write_bytes(b"")
        probes.append(probe.relative_to(repo).as_posix())
    check = dvc(repo, "check-ignore", "-n", "-d", *probes, check=False)
    not_ignored = [line for line in check.stdout.splitlines() if line.startswith("::")]
    assert not not_ignored, "DVC would hash these:\n" + "\n".join(not_ignored)


# -- sweeps and experiments ---------------------------------------------------------------------


def wait_for_queue(repo, timeout=900):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = dvc(repo, "queue", "status").stdout
        if "Queued" not in status and "Running" not in status:
            return status
        time.sleep(3)
    raise AssertionError(f"the queue did not finish within {timeout}s:\n{status}")


@pytest.mark.slow
def test_queued_sweep_from_a_clean_clone_then_a_workspace_experiment(tmp_path):
    repo = make_clean_repo(tmp_path / "repo", SWEEP)
    assert git(repo, "status", "--porcelain") == "", "the clone has uncommitted files"

    # a two-point sweep, queued: each point runs in its own copy of the commit under .dvc/tmp/exps
    queued = dvc(repo, "exp", "run", "--queue", "-S", "train.lr=1e-4,3e-4", "threshold@phase1")
    assert queued.stdout.count("Queued experiment") == 2, queued.stdout
    # `dvc queue start` detaches a worker that inherits stdout: don't wait on a pipe it holds open
    subprocess.run(
        [str(BIN / "dvc"), "queue", "start"],
        cwd=repo,
        env=env(repo),
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    status = wait_for_queue(repo)
    assert status.count("Success") == 2, (
        status
        + "\n"
        + "\n".join(
            dvc(repo, "queue", "logs", line.split()[0], check=False).stdout[-3000:]
            for line in status.splitlines()
            if "Failed" in line
        )
    )

    exps = experiments(json.loads(dvc(repo, "exp", "show", "--json").stdout))
    assert len(exps) == 2, exps
    by_lr = {exp["params"]["train"]["lr"]: exp for exp in exps}
    assert set(by_lr) == {1e-4, 3e-4}, by_lr.keys()
    for exp in exps:
        assert not exp["error"], exp["error"]
        assert exp["params"]["data"]["synthetic"]["count"] == SWEEP["data"]["synthetic"]["count"]
        for path, keys in {
            "metrics/phase1.json": ("val_select", "mcc"),
            "metrics/threshold_phase1.json": ("val_select", "target_prior", "mcc_at_optimum"),
        }.items():
            assert isinstance(metric(exp, path, *keys), (int, float)), (path, exp["metrics"].get(path))
    low, high = by_lr[1e-4], by_lr[3e-4]
    assert low["metrics"]["metrics/phase1.json"] != high["metrics"]["metrics/phase1.json"], (
        "two learning rates gave identical phase-1 metrics"
    )
    assert low["rev"] != high["rev"]

    # a workspace experiment with -S, the whole pipeline: the headline metrics are all there
    dvc(repo, "exp", "run", "-S", "train.lr=3e-4")
    assert yaml.safe_load((repo / "params.yaml").read_text())["train"]["lr"] == 3e-4
    exps = experiments(json.loads(dvc(repo, "exp", "show", "--json").stdout))
    assert len(exps) == 3, [e["name"] for e in exps]
    full = next(e for e in exps if e["name"] not in {low["name"], high["name"]})
    assert full["params"]["train"]["lr"] == 3e-4
    for path, *keys in [
        ("metrics/phase1.json", "val_select", "mcc"),  # val_select MCC
        ("metrics/evaluate.json", "val_test", "mcc"),  # val_test MCC of the bundle
        ("metrics/evaluate.json", "val_test", "prior_0.5", "ece_positive_uniform"),  # ECE, 50/50
        ("metrics/evaluate.json", "protocol", "reward"),
    ]:  # validators'-protocol reward
        assert isinstance(metric(full, path, *keys), (int, float)), (path, keys)
    # same commit, same params: the workspace run and the queued one (in a temp copy) agree
    assert full["metrics"]["metrics/phase1.json"] == high["metrics"]["metrics/phase1.json"]
    assert full["metrics"]["metrics/threshold_phase1.json"] == high["metrics"]["metrics/threshold_phase1.json"]

    # the README's table command shows exactly the headline columns
    table = dvc(repo, "exp", "show", "--csv", "--drop", ".*", "--keep", HEADLINE_KEEP).stdout.splitlines()
    assert set(table[0].split(",")) == HEADLINE_COLUMNS, table[0]
    assert len(table) == 1 + 2 + 3, table  # header, workspace and baseline, three experiments
    assert HEADLINE_KEEP in (REPO / "README.md").read_text(), "README's `dvc exp show --keep` differs from the test's"


# -- two dvc commands at once -------------------------------------------------------------------

SLEEPER = """\
import pathlib, sys, time
pathlib.Path("started").write_text("1")
deadline = time.time() + 120
while not pathlib.Path("release").exists() and time.time() < deadline:
    time.sleep(0.1)
pathlib.Path("slept.txt").write_text("done")
"""


def dvc_timed(repo, *args):
    start = time.monotonic()
    result = dvc(repo, *args, check=False)
    return result, time.monotonic() - start


@pytest.mark.slow
def test_a_second_dvc_repro_fails_fast_while_one_runs(tmp_path):
    repo = make_clean_repo(tmp_path / "repo")
    (repo / "sleeper.py").write_text(SLEEPER)
    stages = yaml.safe_load((repo / "dvc.yaml").read_text())
    stages["stages"]["sleeper"] = {"cmd": "python sleeper.py", "deps": ["sleeper.py"], "outs": ["slept.txt"]}
    (repo / "dvc.yaml").write_text(yaml.safe_dump(stages, sort_keys=False))
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "a slow stage")

    # 1. while a stage's command runs, DVC has released the repository lock but holds the stage's
    #    outputs in .dvc/tmp/rwlock: a second repro of it fails at once, naming the first process
    first = subprocess.Popen(
        [str(BIN / "dvc"), "repro", "sleeper"],
        cwd=repo,
        env=env(repo),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not (repo / "started").exists():
            assert first.poll() is None, first.stdout.read()
            assert time.monotonic() < deadline, "the slow stage did not start"
            time.sleep(0.1)
        second, seconds = dvc_timed(repo, "repro", "sleeper")
        message = second.stdout + second.stderr
        assert second.returncode != 0, message
        assert seconds < 15, f"the second repro took {seconds:.1f}s to fail"
        assert "is busy, it is being blocked by" in message and f"PID {first.pid}" in message, message
        assert ".dvc/tmp/rwlock" in message, message
        (repo / "release").write_text("1")
        assert first.wait(timeout=60) == 0, first.stdout.read()
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGTERM)
            first.wait()

    # 2. while DVC itself holds the repository lock (.dvc/tmp/lock; here: `dvc repro -i` waiting at
    #    its prompt, as when it hashes, checks out or transfers), a second repro gives up after ~3 s
    for name in ("started", "release"):
        (repo / name).unlink()
    controller, terminal = pty.openpty()
    first = subprocess.Popen(
        [str(BIN / "dvc"), "repro", "-i", "-f", "sleeper"],
        cwd=repo,
        env=env(repo),
        stdin=subprocess.PIPE,
        stdout=terminal,
        stderr=terminal,
        start_new_session=True,
    )
    os.close(terminal)
    try:
        shown, deadline = b"", time.monotonic() + 60
        while b"Are you sure" not in shown:
            assert time.monotonic() < deadline, f"no prompt from `dvc repro -i`: {shown!r}"
            shown += os.read(controller, 4096)
        second, seconds = dvc_timed(repo, "repro", "sleeper")
        message = second.stdout + second.stderr
        assert second.returncode != 0, message
        assert seconds < 15, f"the second repro took {seconds:.1f}s to fail"
        assert "Unable to acquire lock" in message, message

        # `dvc --wait-for-lock` queues behind the holder instead of failing
        waiter = subprocess.Popen(
            [str(BIN / "dvc"), "--wait-for-lock", "status", "sleeper"],
            cwd=repo,
            env=env(repo),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        time.sleep(5)
        assert waiter.poll() is None, "`dvc --wait-for-lock status` did not wait for the lock"
        first.stdin.write(b"n\n")  # decline: the first releases the lock
        first.stdin.close()
        first.wait(timeout=60)
        waiter_out, _ = waiter.communicate(timeout=60)
        assert waiter.returncode == 0, waiter_out
    finally:
        os.close(controller)
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGTERM)
            first.wait()

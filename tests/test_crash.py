"""What a killed stage leaves under `dvc repro`, as the README says: DVC deletes a stage's outputs
before running it, so the old output is gone from the workspace (`dvc checkout` restores it from
the cache); the training checkpoint under runs/ survives, and the next `dvc repro` resumes from it."""

import os
import signal
import subprocess
import time

import pytest
from kit.repo import BIN, TINY, digest_tree, dvc, env, make_clean_repo, merge


@pytest.mark.slow
def test_killed_dvc_repro_leaves_no_output_and_resumes_from_the_checkpoint(tmp_path):
    repo = make_clean_repo(tmp_path / "repo", merge(TINY, {"train": {"epochs": 2}}))
    dvc(repo, "repro", "train_phase1")
    before = digest_tree(repo, "data/phase1")
    assert "data/phase1/model.safetensors" in before

    params = (repo / "params.yaml").read_text()
    (repo / "params.yaml").write_text(params.replace("epochs: 2\n", "epochs: 12\n", 1))
    run = subprocess.Popen(
        [str(BIN / "dvc"), "repro", "train_phase1"],
        cwd=repo,
        env=env(repo),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 300
    while not list(repo.glob("runs/phase1/*/checkpoint.pt")) and time.monotonic() < deadline:
        time.sleep(0.2)
    os.killpg(run.pid, signal.SIGKILL)  # dvc and the stage's python, as a closed laptop would
    run.wait()
    assert list(repo.glob("runs/phase1/*/checkpoint.pt")), "no checkpoint was written in time"
    assert not (repo / "data" / "phase1").exists(), "DVC deletes a stage's outputs before running it"
    assert "train_phase1" in dvc(repo, "status", "train_phase1").stdout
    # the old output is still in the cache: `dvc checkout` brings it back (dvc.lock still names it)
    dvc(repo, "checkout", "train_phase1")
    assert digest_tree(repo, "data/phase1") == before

    (repo / "params.yaml").write_text(params.replace("epochs: 2\n", "epochs: 12\n", 1))
    resumed = dvc(repo, "repro", "train_phase1")
    assert "resuming from runs/phase1/" in resumed.stdout + resumed.stderr  # a log record (stderr) of the stage
    assert (repo / "data" / "phase1" / "model.safetensors").exists()

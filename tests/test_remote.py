"""Remote storage against real remotes: a local-path remote and an SSH remote served by a real
SSH server on loopback (tests/kit/sshd.py: OpenSSH, or asyncssh's server where OpenSSH is absent). The workflow of the README's "Experiments, remote
storage and the GPU host": push from one machine, pull into a wiped or a fresh clone, get the
same bytes, and keep credentials out of git.
"""

import shutil
import subprocess

import pytest
from kit.repo import TINY, digest_tree, dvc, dvc_env, git, make_clean_repo
from kit.sshd import SSH_BACKENDS, SSHServer, keygen

DATA_OUTS = ("data/raw", "data/dedup", "data/split")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """One TINY repository with the data stages run and dvc.lock committed (as after `dvc repro split`)."""
    repo = make_clean_repo(tmp_path_factory.mktemp("built") / "repo", TINY)
    dvc(repo, "repro", "split")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "data stages")
    return repo


def copy_of(built, dest):
    shutil.copytree(built, dest, symlinks=True)
    return dest


def wipe(repo):
    """Lose everything DVC has locally: the cache and the data stages' outputs."""
    shutil.rmtree(repo / ".dvc" / "cache")
    for out in DATA_OUTS:
        shutil.rmtree(repo / out)


def assert_clean(repo, extra_env=None, remote=None):
    status = dvc_env(repo, extra_env or {}, "status", "split").stdout
    assert status.strip().startswith("Data and pipelines are up to date"), status
    if remote:
        cloud = dvc_env(repo, extra_env or {}, "status", "--cloud", "split").stdout
        assert "in sync" in cloud, cloud


def assert_no_credentials_in_git(repo):
    committed = (repo / ".dvc" / "config").read_text()
    for word in ("keyfile", "password", "passphrase", "secret_access_key", "access_key_id"):
        assert word not in committed, f".dvc/config (committed) holds {word!r}:\n{committed}"
    assert subprocess.run(["git", "check-ignore", "-q", ".dvc/config.local"], cwd=repo).returncode == 0, (
        ".dvc/config.local is not git-ignored"
    )
    git(repo, "add", "-A")
    assert ".dvc/config.local" not in git(repo, "ls-files").split(), ".dvc/config.local would be committed"


@pytest.mark.slow
def test_local_remote_push_then_pull_into_a_wiped_repo_and_a_fresh_clone(built, tmp_path):
    repo = copy_of(built, tmp_path / "laptop")
    store = tmp_path / "store"
    before = digest_tree(repo, *DATA_OUTS)
    assert len(before) > 100

    dvc(repo, "remote", "add", "-d", "store", str(store))
    push = dvc(repo, "push")
    assert "pushed" in push.stdout, push.stdout
    assert any(store.rglob("*")), "nothing landed in the remote"
    git(repo, "commit", "-qam", "remote storage")

    wipe(repo)
    dvc(repo, "pull", "--with-deps", "split")
    assert digest_tree(repo, *DATA_OUTS) == before, "pulled outputs differ from the pushed ones"
    assert_clean(repo, remote="store")

    # the GPU host: a fresh git clone (no cache, no outputs) gets everything with `dvc pull`
    host = tmp_path / "host"
    subprocess.run(["git", "clone", "-q", str(repo), str(host)], check=True)
    assert not (host / "data" / "raw").exists()
    dvc(host, "pull", "--with-deps", "split")
    assert digest_tree(host, *DATA_OUTS) == before
    assert_clean(host, remote="store")


@pytest.mark.slow
@pytest.mark.parametrize("server", SSH_BACKENDS)
def test_ssh_remote_push_wipe_pull_is_byte_identical(built, tmp_path, server):
    repo = copy_of(built, tmp_path / "laptop")
    before = digest_tree(repo, *DATA_OUTS)
    store = tmp_path / "ssh-store"
    with SSHServer(tmp_path / "sshd", server) as sshd:
        problem = sshd.check()
        assert problem is None, f"the test's own SSH server refuses its key: {problem}"
        dvc(repo, "remote", "add", "-d", "gpu", sshd.url(store))
        dvc(repo, "remote", "modify", "--local", "gpu", "keyfile", str(sshd.client_key))
        assert_no_credentials_in_git(repo)
        git(repo, "commit", "-qm", "ssh remote")

        # a HOME whose ~/.ssh/known_hosts trusts the server, as on a real machine (and the real ~/.ssh
        # stays untouched); dvc-ssh 4.3 does not check it anyway, see the next test
        home = {"HOME": str(sshd.home())}
        push = dvc_env(repo, home, "push", timeout=300)
        assert "pushed" in push.stdout, push.stdout
        assert any(store.rglob("*")), "nothing landed on the SSH server"

        wipe(repo)
        dvc_env(repo, home, "pull", "--with-deps", "split", timeout=300)
        assert digest_tree(repo, *DATA_OUTS) == before, "pulled outputs differ from the pushed ones"
        assert_clean(repo, home, remote="gpu")


@pytest.mark.slow
@pytest.mark.parametrize("server", SSH_BACKENDS)
def test_dvc_ssh_does_not_check_the_server_host_key(built, tmp_path, server):
    """What the README warns about: dvc-ssh 4.3 (sshfs passes known_hosts=None to asyncssh) connects
    even when ~/.ssh/known_hosts lists another key for the server. If this starts failing, DVC has
    begun to check host keys: update the README (add the host to known_hosts on each machine)."""
    repo = copy_of(built, tmp_path / "laptop")
    keygen(tmp_path / "impostor", "impostor")
    kind, key = (tmp_path / "impostor.pub").read_text().split()[:2]
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    with SSHServer(tmp_path / "sshd", server) as sshd:
        (home / ".ssh" / "known_hosts").write_text(f"[{sshd.host}]:{sshd.port} {kind} {key}\n")
        assert sshd.check() is None
        dvc(repo, "remote", "add", "-d", "gpu", sshd.url(tmp_path / "store"))
        dvc(repo, "remote", "modify", "--local", "gpu", "keyfile", str(sshd.client_key))
        push = dvc_env(repo, {"HOME": str(home)}, "push", "download", check=False, timeout=120)
    assert push.returncode == 0 and "pushed" in push.stdout, push.stdout + push.stderr


def test_credentials_stay_in_the_local_config(tmp_path):
    repo = make_clean_repo(tmp_path / "repo")
    dvc(repo, "remote", "add", "-d", "bucket", "s3://example-bucket/roadwork")
    dvc(repo, "remote", "modify", "--local", "bucket", "access_key_id", "AKIAEXAMPLE")
    dvc(repo, "remote", "modify", "--local", "bucket", "secret_access_key", "not-a-real-secret")
    dvc(repo, "remote", "add", "gpu", "ssh://user@gpu-host.example/srv/roadwork-store")
    dvc(repo, "remote", "modify", "--local", "gpu", "keyfile", "~/.ssh/id_ed25519")
    dvc(repo, "remote", "modify", "--local", "gpu", "password", "hunter2")

    local = (repo / ".dvc" / "config.local").read_text()
    assert "not-a-real-secret" in local and "hunter2" in local and "keyfile" in local
    committed = (repo / ".dvc" / "config").read_text()
    assert "s3://example-bucket/roadwork" in committed and "gpu-host.example" in committed
    assert "AKIAEXAMPLE" not in committed and "hunter2" not in committed
    assert_no_credentials_in_git(repo)
    # what DVC uses is the merge of both
    assert dvc(repo, "config", "remote.gpu.password").stdout.strip() == "hunter2"

"""Hostile folders: every special entry is listed with its reason from `stat` alone (a FIFO opened for
reading would block forever, /dev/zero would never end), nothing raises, and no name or byte from
outside the root appears."""

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from kit.repo import REPO

from roadwork.data.walk import NotReadable, check_file, open_regular, read_regular, walk
from roadwork.io import read_csv


def hostile(root: Path, jpeg: bytes) -> Path:
    """A class folder with one good image and one of each kind of entry that used to hang or crash."""
    folder = root / "none"
    (folder / "deeper").mkdir(parents=True)
    (folder / "good.jpg").write_bytes(jpeg)
    (folder / "deeper" / "good2.jpg").write_bytes(jpeg)
    os.mkfifo(folder / "pipe.jpg")
    (folder / "zero.jpg").symlink_to("/dev/zero")
    (folder / "dangling.jpg").symlink_to(root / "nowhere.jpg")
    (folder / "loop.jpg").symlink_to("loop.jpg")
    (folder / "etc").symlink_to("/etc")
    (folder / "slash").symlink_to("/")
    (folder / "up").symlink_to("..")  # back to the root: a loop
    (folder / "again").symlink_to("deeper")  # a second path to a folder inside: listed once
    (folder / os.fsdecode(b"caf\xe9.jpg")).write_bytes(jpeg)  # Latin-1 name: not UTF-8
    return folder


def test_every_special_entry_is_listed_with_its_reason_and_nothing_is_opened(tmp_path, make_jpeg):
    root = tmp_path / "photos"
    folder = hostile(root, make_jpeg(1))
    entries = {e.rel: e.problem for e in walk([(folder, "none")], root.resolve())}
    hint = "(data.local.allow_outside_root: true allows it)"
    assert entries == {
        "none/again": "listed twice: none/again leads to a folder already listed (a symlink loop or a second path "
        "to it); not walked again",
        "none/caf\\xe9.jpg": "unreadable: none/caf\\xe9.jpg (the name is not valid UTF-8; rename it)",
        "none/dangling.jpg": "missing file: none/dangling.jpg (a dangling symlink)",
        "none/deeper/good2.jpg": "",
        "none/etc": f"outside data.local.path: none/etc is a symlink to a folder outside the root; not walked {hint}",
        "none/good.jpg": "",
        "none/loop.jpg": "symlink loop: none/loop.jpg",
        "none/pipe.jpg": "not a regular file: none/pipe.jpg is a FIFO (named pipe)",
        "none/slash": f"outside data.local.path: none/slash is a symlink to a folder outside the root; not walked "
        f"{hint}",
        "none/up": "listed twice: none/up leads to a folder already listed (a symlink loop or a second path to it); "
        "not walked again",
        "none/zero.jpg": f"outside data.local.path: none/zero.jpg resolves outside the root {hint}",
    }


@pytest.mark.slow
def test_allowed_outside_the_root_a_device_is_still_refused_and_the_whole_filesystem_is_walked(tmp_path, make_jpeg):
    """allow_outside_root: true follows none/slash to / (the whole machine: /proc, /dev, ...; slow)."""
    root = tmp_path / "photos"
    folder = hostile(root, make_jpeg(1))
    # allowed outside the root, /dev/zero is still refused by its type, /etc is walked without a crash
    allowed = {e.rel: e.problem for e in walk([(folder, "none")], root.resolve(), allow_outside_root=True)}
    assert allowed["none/zero.jpg"] == "not a regular file: none/zero.jpg is a character device"
    assert any(rel.startswith("none/etc/") for rel in allowed)


def test_size_cap_and_checks_use_stat_only(tmp_path):
    (tmp_path / "big.jpg").write_bytes(b"\0" * 100)
    entry = check_file(tmp_path / "big.jpg", "big.jpg", tmp_path, max_file_bytes=99)
    assert (entry.problem, entry.size) == (
        "file too large: big.jpg has 100 bytes, more than data.max_file_bytes (99)",
        100,
    )
    assert check_file(tmp_path / "big.jpg", "big.jpg", tmp_path, max_file_bytes=100).problem == ""


def test_open_regular_refuses_special_files_without_blocking(tmp_path):
    os.mkfifo(tmp_path / "pipe")
    for path, reason in (
        (tmp_path / "pipe", "not a regular file: a FIFO (named pipe)"),
        ("/dev/zero", "not a regular file: a character device"),
        (tmp_path, "not a regular file: a folder"),
    ):
        with pytest.raises(NotReadable, match=re.escape(reason)):
            open_regular(path)
    (tmp_path / "ok").write_bytes(b"12345")
    assert read_regular(tmp_path / "ok", 5) == b"12345"
    with pytest.raises(NotReadable, match=re.escape("5 bytes, more than the cap of 4")):
        read_regular(tmp_path / "ok", 4)


@pytest.fixture
def shared_tmp():
    """A folder an unprivileged user can enter (pytest's tmp_path is private to root)."""
    folder = Path(tempfile.mkdtemp(prefix="roadwork-perm-"))
    folder.chmod(0o777)
    yield folder
    for path in folder.rglob("*"):
        if path.is_dir() and not path.is_symlink():
            path.chmod(0o755)
    shutil.rmtree(folder)


def unprivileged(command: list[str]) -> list[str]:
    """`command` as a user that permissions apply to (root reads everything)."""
    if os.geteuid() != 0:
        return command
    # util-linux's setpriv (essential on Debian and most distributions). subprocess's own user=/group= fails here:
    # the child cannot exec the venv's python as that user, while setpriv can.
    assert shutil.which("setpriv"), "running as root: the test needs setpriv (util-linux) to drop root's permissions"
    return ["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups", *command]


def test_unreadable_entries_are_listed_not_raised(shared_tmp, make_jpeg):
    """A folder without permission and a file without read permission: the download stage lists
    both in quarantine.csv (it used to end in a PermissionError traceback)."""
    photos = shared_tmp / "photos"
    (photos / "none" / "locked").mkdir(parents=True)
    (photos / "none" / "locked" / "a.jpg").write_bytes(make_jpeg(1))
    (photos / "none" / "ok.jpg").write_bytes(make_jpeg(2))
    (photos / "none" / "secret.jpg").write_bytes(make_jpeg(3))
    (photos / "none" / "secret.jpg").chmod(0o000)
    (photos / "none" / "locked").chmod(0o000)
    (shared_tmp / "params.yaml").write_text(f"data: {{source: local, local: {{path: {photos}}}}}\n")
    env = dict(os.environ, PYTHONPATH=f"{REPO / 'src'}", HOME=str(shared_tmp))
    done = subprocess.run(
        unprivileged([sys.executable, "-m", "roadwork.stages.download"]),
        cwd=shared_tmp,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr[-2000:]
    rows = {r["source_ref"]: r["reason"] for r in read_csv(shared_tmp / "data" / "raw" / "quarantine.csv")}
    assert rows == {
        "none/locked": "unreadable folder: none/locked (permission denied)",
        "none/secret.jpg": "unreadable: none/secret.jpg (permission denied)",
    }

"""`roadwork predict` on hostile paths: a FIFO, a device, a symlink loop, a dangling symlink are
never opened (a FIFO opened for reading blocks forever) and each gets a CSV row with its reason."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from kit.bundles import make_bundle
from kit.images import pictures

from roadwork.io import read_csv
from roadwork.predict import iter_image_paths, load_image


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    return make_bundle(tmp_path_factory.mktemp("listing"))


def hostile_folder(root: Path) -> Path:
    (root / "sub").mkdir(parents=True)
    pictures(1)[0].save(root / "good.jpg")
    pictures(1, seed=1)[0].save(root / "sub" / "good2.png")
    (root / "notes.txt").write_text("not an image: not listed")
    os.mkfifo(root / "pipe.jpg")
    os.mkfifo(root / "sub" / "pipe_without_suffix")
    (root / "zero.jpg").symlink_to("/dev/zero")
    (root / "loop.jpg").symlink_to("loop.jpg")
    (root / "gone.jpg").symlink_to(root / "nowhere.jpg")
    (root / "sub" / "up").symlink_to("..")  # a folder loop
    return root


def test_folder_entries_that_cannot_be_images_are_listed_with_their_reason(tmp_path):
    folder = hostile_folder(tmp_path / "in")
    skipped: list[dict] = []
    paths = list(iter_image_paths([folder], skipped))
    assert paths == [folder / "good.jpg", folder / "sub" / "good2.png"]
    assert {Path(row["path"]).relative_to(folder).as_posix(): row["error"] for row in skipped} == {
        "gone.jpg": "missing file: gone.jpg (a dangling symlink)",
        "loop.jpg": "symlink loop: loop.jpg",
        "pipe.jpg": "not a regular file: pipe.jpg is a FIFO (named pipe)",
        "sub/pipe_without_suffix": "not a regular file: sub/pipe_without_suffix is a FIFO (named pipe)",
        "sub/up": "listed twice: sub/up leads to a folder already listed (a symlink loop or a second path to it); "
        "not walked again",
        "zero.jpg": "not a regular file: zero.jpg is a character device",
    }
    assert all(row["probability"] == "" and row["decision"] == "" for row in skipped)


@pytest.mark.parametrize(
    "make, reason",
    [
        (lambda p: os.mkfifo(p), "not a regular file: a FIFO (named pipe)"),
        (lambda p: p.symlink_to("/dev/zero"), "not a regular file: a character device"),
    ],
)
def test_load_image_refuses_special_files_unopened(tmp_path, make, reason):
    make(tmp_path / "x.jpg")
    with pytest.raises(OSError, match=re.escape(reason)):
        load_image(tmp_path / "x.jpg")


@pytest.mark.slow
def test_predict_on_a_fifo_and_a_hostile_folder_ends_with_rows_not_a_hang(tmp_path, bundle):
    os.mkfifo(tmp_path / "alone.jpg")
    out = tmp_path / "fifo.csv"
    run = [sys.executable, "-m", "roadwork.cli", "predict", "--bundle", str(bundle), "--quiet"]
    done = subprocess.run(
        [*run, str(tmp_path / "alone.jpg"), "--out", str(out)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 1, done.stderr[-2000:]  # nothing scored
    assert [row["error"] for row in read_csv(out)] == ["NotReadable: not a regular file: a FIFO (named pipe)"]

    folder = hostile_folder(tmp_path / "in")
    done = subprocess.run(
        [*run, str(folder), "--out", str(tmp_path / "folder.csv")], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 3, done.stderr[-2000:]  # the two images scored, the others have their reason
    rows = read_csv(tmp_path / "folder.csv")
    assert len(rows) == 8 and sum(not row["error"] for row in rows) == 2
    assert "8 file(s)" in done.stderr and "6 unreadable" in done.stderr

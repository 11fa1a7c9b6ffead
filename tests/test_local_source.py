"""The `local` source is confined to its root: a dataset someone hands you cannot pull files of your
machine into data/raw (which `dvc push` sends to remote storage). Each case with its exact reason."""

import os
from pathlib import Path

import pytest

from roadwork.config import parse_params
from roadwork.data.ingest import ingest
from roadwork.data.sources import SourceError
from roadwork.io import read_csv


def local(path, **extra):
    return parse_params(
        {"data": {"source": "local", "local": {"path": str(path), **extra.pop("local", {})}, **extra}}
    ).data


def quarantine(raw: Path) -> dict[str, dict]:
    return {row["source_ref"]: row for row in read_csv(raw / "quarantine.csv")}


def stored_files(raw: Path) -> set[bytes]:
    return {p.read_bytes() for p in raw.rglob("*") if p.is_file() and p.parent.name in ("images", "quarantine")}


@pytest.fixture
def outside(tmp_path, make_jpeg):
    """Files outside the dataset root: a secret text file and an image."""
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    (folder / "secret.txt").write_bytes(b"root:x:0:0:do not copy me\n")
    (folder / "photo.jpg").write_bytes(make_jpeg(99))
    return folder


def write_manifest(path: Path, rows: list[tuple[str, str]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("path,label\n" + "".join(f"{p},{label}\n" for p, label in rows))
    return path


def test_manifest_rows_outside_the_root_are_refused_unread(tmp_path, make_jpeg, outside):
    root = tmp_path / "dataset"
    root.mkdir()
    (root / "ok.jpg").write_bytes(make_jpeg(1))
    (root / "inside.jpg").write_bytes(make_jpeg(2))
    manifest = write_manifest(
        root / "list.csv",
        [
            ("ok.jpg", "1"),
            ("../elsewhere/secret.txt", "0"),
            (str(outside / "photo.jpg"), "0"),
            (str(root / "inside.jpg"), "0"),  # absolute, but inside the root: fine
        ],
    )
    summary = ingest(local(manifest), tmp_path / "raw")
    assert summary["images"] == 2
    refused = quarantine(tmp_path / "raw")
    assert set(refused) == {"../elsewhere/secret.txt", str(outside / "photo.jpg")}
    assert refused["../elsewhere/secret.txt"]["reason"] == (
        "outside data.local.path: ../elsewhere/secret.txt resolves outside the root "
        "(data.local.allow_outside_root: true allows it)"
    )
    assert refused[str(outside / "photo.jpg")]["reason"].startswith(f"outside data.local.path: {outside / 'photo.jpg'}")
    assert all(row["path"] == "" and row["file_sha256"] == "" for row in refused.values())
    kept = stored_files(tmp_path / "raw")
    assert (outside / "secret.txt").read_bytes() not in kept and (outside / "photo.jpg").read_bytes() not in kept


def test_symlinks_leaving_the_root_are_refused_unless_allowed(tmp_path, make_jpeg, outside):
    root = tmp_path / "dataset"
    for folder in ("none", "roadwork"):
        (root / folder).mkdir(parents=True)
        (root / folder / "real.jpg").write_bytes(make_jpeg(len(folder)))
    (root / "none" / "passwd.jpg").symlink_to(outside / "secret.txt")
    (root / "roadwork" / "library.jpg").symlink_to(outside / "photo.jpg")
    (root / "roadwork" / "same.jpg").symlink_to(root / "roadwork" / "real.jpg")  # inside: fine

    summary = ingest(local(root), tmp_path / "raw")
    refused = quarantine(tmp_path / "raw")
    assert summary["images"] == 3 and set(refused) == {"none/passwd.jpg", "roadwork/library.jpg"}
    assert refused["none/passwd.jpg"]["reason"] == (
        "outside data.local.path: none/passwd.jpg resolves outside the root (data.local.allow_outside_root: true "
        "allows it)"
    )  # the target is not named: nothing from outside the root reaches an output
    assert (outside / "photo.jpg").read_bytes() not in stored_files(tmp_path / "raw")

    allowed = ingest(local(root, local={"allow_outside_root": True}), tmp_path / "raw2")
    assert allowed["images"] == 4  # the library photo is now training data
    assert quarantine(tmp_path / "raw2")["none/passwd.jpg"]["reason"].startswith("not an image")
    assert (outside / "secret.txt").read_bytes() not in stored_files(tmp_path / "raw2")  # not image-like: not kept


def test_missing_files_are_reported_as_missing(tmp_path, make_jpeg):
    root = tmp_path / "dataset"
    (root / "roadwork").mkdir(parents=True)
    (root / "roadwork" / "a.jpg").write_bytes(make_jpeg(1))
    (root / "roadwork" / "gone.jpg").symlink_to(root / "nowhere.jpg")
    ingest(local(root), tmp_path / "raw")
    assert (
        quarantine(tmp_path / "raw")["roadwork/gone.jpg"]["reason"]
        == "missing file: roadwork/gone.jpg (a dangling symlink)"
    )

    manifest = write_manifest(tmp_path / "m" / "list.csv", [("there.jpg", "0"), ("not-there.jpg", "1")])
    (tmp_path / "m" / "there.jpg").write_bytes(make_jpeg(2))
    ingest(local(manifest), tmp_path / "raw2")
    assert quarantine(tmp_path / "raw2")["not-there.jpg"]["reason"] == "missing file: not-there.jpg"


def test_quarantine_keeps_bytes_only_of_image_like_files_within_the_cap(tmp_path, make_jpeg):
    root = tmp_path / "dataset"
    (root / "none").mkdir(parents=True)
    good = make_jpeg(3)
    (root / "none" / "good.jpg").write_bytes(good)
    (root / "none" / "truncated.jpg").write_bytes(good[: len(good) // 2])  # an image, broken: kept
    (root / "none" / "notes.txt").write_bytes(b"private notes\n" * 10)  # not image-like: reason only
    (root / "none" / "huge.jpg").write_bytes(b"\xff\xd8\xff" + b"\0" * 5000)  # over the cap: refused unread
    summary = ingest(local(root, max_file_bytes=4000), tmp_path / "raw")
    rows = quarantine(tmp_path / "raw")
    assert summary["images"] == 1 and set(rows) == {"none/truncated.jpg", "none/notes.txt", "none/huge.jpg"}
    assert rows["none/truncated.jpg"]["path"] and (tmp_path / "raw" / rows["none/truncated.jpg"]["path"]).exists()
    assert rows["none/notes.txt"]["path"] == "" and rows["none/notes.txt"]["reason"].startswith("not an image")
    assert (
        rows["none/huge.jpg"]["reason"]
        == "file too large: none/huge.jpg has 5003 bytes, more than data.max_file_bytes (4000)"
    )
    assert rows["none/huge.jpg"]["path"] == ""
    assert {p.name for p in (tmp_path / "raw" / "quarantine").iterdir()} == {rows["none/truncated.jpg"]["path"][11:]}


@pytest.mark.parametrize("value", ["1.0", "true", "", "yes"])
def test_manifest_labels_are_checked_row_by_row_as_text(tmp_path, make_jpeg, value):
    """A `1.0` or `true` used to make pyarrow retype the column, and the error named another row."""
    rows = [(f"{i}.jpg", str(i % 2)) for i in range(5)] + [("bad.jpg", value)] + [("6.jpg", "0")]
    manifest = write_manifest(tmp_path / "list.csv", rows)
    with pytest.raises(SourceError) as error:
        ingest(local(manifest), tmp_path / "raw")
    assert str(error.value) == f"{manifest}: row 7 ('bad.jpg'): label {value!r} is not 0 or 1"
    assert not (tmp_path / "raw").exists()


def test_a_file_is_read_once_and_refused_files_never(tmp_path, make_jpeg, monkeypatch):
    """Refused files are never opened (the size check uses stat); a readable one is read once."""
    import roadwork.data.sources as sources

    root = tmp_path / "dataset"
    (root / "none").mkdir(parents=True)
    (root / "none" / "big.bin").write_bytes(os.urandom(100_000))
    (root / "none" / "small.jpg").write_bytes(make_jpeg(5))
    opened = []
    real = sources.read_regular
    monkeypatch.setattr(
        sources, "read_regular", lambda path, cap=None: opened.append(Path(path).name) or real(path, cap)
    )
    ingest(local(root, max_file_bytes=50_000), tmp_path / "raw")
    assert opened == ["small.jpg"]


def test_hostile_entries_are_quarantined_with_their_reason_and_nothing_from_outside_is_written(tmp_path, make_jpeg):
    """`python -m roadwork.stages.download` used to hang on a FIFO, end in a RuntimeError on a symlink
    loop, and walk a class folder symlinked to /etc (1,044 names of /etc in quarantine.csv)."""
    import subprocess
    import sys

    photos = tmp_path / "photos"
    for folder in ("none", "roadwork"):
        (photos / folder).mkdir(parents=True)
        (photos / folder / "ok.jpg").write_bytes(make_jpeg(len(folder)))
    os.mkfifo(photos / "none" / "pipe.jpg")
    (photos / "none" / "loop.jpg").symlink_to("loop.jpg")
    (photos / "none" / "root").symlink_to("/")
    (photos / "1").symlink_to("/etc")
    os.mkfifo(photos / "stray")  # beside the class folders
    (tmp_path / "params.yaml").write_text(f"data: {{source: local, local: {{path: {photos}}}}}\n")
    for stage in ("scan_local", "download"):
        done = subprocess.run(
            [sys.executable, "-m", f"roadwork.stages.{stage}"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr[-2000:]
    reasons = {ref: row["reason"] for ref, row in quarantine(tmp_path / "data" / "raw").items()}
    inventory = {row["ref"]: row["problem"] for row in read_csv(tmp_path / "data" / "local_inventory.csv")}
    hint = "(data.local.allow_outside_root: true allows it)"
    assert (
        reasons
        == {ref: problem for ref, problem in inventory.items() if problem}
        == {
            "1": f"outside data.local.path: class folder 1 is a symlink to a folder outside the root; not walked {hint}",
            "none/loop.jpg": "symlink loop: none/loop.jpg",
            "none/pipe.jpg": "not a regular file: none/pipe.jpg is a FIFO (named pipe)",
            "none/root": f"outside data.local.path: none/root is a symlink to a folder outside the root; not walked {hint}",
            "stray": "not a regular file: stray is a FIFO (named pipe)",
        }
    )
    assert set(inventory) == set(reasons) | {"none/ok.jpg", "roadwork/ok.jpg"}
    written = [p for p in (tmp_path / "data").rglob("*") if p.is_file()] + [tmp_path / "metrics" / "download.json"]
    assert not any(name in p.read_bytes() for p in written for name in (b"passwd", b"/etc", b"hostname"))


def repro_download(repo: Path) -> bool:
    """`dvc repro download` (scan_local runs first, every time); whether download's outputs changed:
    re-run, or restored from DVC's run cache (the folder went back to an earlier state)."""
    from kit.repo import dvc

    out = dvc(repo, "repro", "download").stdout
    return "Running stage 'download'" in out or "Stage 'download' is cached" in out


@pytest.mark.slow
def test_adding_changing_or_removing_one_image_reruns_download(tmp_path, make_jpeg):
    """download depends on scan_local's inventory of data.local.path (every entry's name, size and
    sha256), so the pipeline never keeps data that no longer matches the folder, and an unchanged
    folder does not re-run download."""
    from kit.repo import dvc, git, make_repo

    repo = make_repo(tmp_path / "repo", {"data": {"source": "local", "local": {"path": "inputs/photos"}}})
    for folder in ("none", "roadwork"):
        (repo / "inputs" / "photos" / folder).mkdir(parents=True)
        for i in range(3):
            (repo / "inputs" / "photos" / folder / f"{i}.jpg").write_bytes(make_jpeg(i + 10 * len(folder)))
    dvc(repo, "add", "inputs/photos")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "photos")
    assert repro_download(repo)
    assert not repro_download(repo)  # nothing changed: scan_local ran, its inventory is the same
    image = repo / "inputs" / "photos" / "roadwork" / "new.jpg"
    for change in (
        lambda: image.write_bytes(make_jpeg(77)),  # add
        lambda: image.write_bytes(make_jpeg(78)),  # change (same name)
        lambda: image.unlink(),
    ):  # remove
        change()
        assert repro_download(repo)
        assert not repro_download(repo)
        manifest = {row["source_ref"] for row in read_csv(repo / "data" / "raw" / "manifest.csv")}
        assert ("roadwork/new.jpg" in manifest) == image.exists()


@pytest.mark.slow
def test_dvc_repro_and_status_do_not_hang_on_a_hostile_folder(tmp_path, make_jpeg):
    """A FIFO and a symlink to /dev/zero in the local folder used to hang `dvc status`/`dvc repro`
    (DVC hashed the folder, a download dependency); a dangling or looping symlink failed the run
    before the stage started. Now DVC hashes only scan_local's inventory: each entry is in
    quarantine.csv with its reason, and nothing of /etc is in any output."""
    from kit.repo import dvc_env, make_repo

    repo = make_repo(tmp_path / "repo", {"data": {"source": "local", "local": {"path": "inputs/photos"}}})
    photos = repo / "inputs" / "photos"
    for folder in ("none", "roadwork"):
        (photos / folder).mkdir(parents=True)
        for i in range(3):
            (photos / folder / f"{i}.jpg").write_bytes(make_jpeg(i + 10 * len(folder)))
    os.mkfifo(photos / "none" / "pipe.jpg")
    (photos / "none" / "zero.jpg").symlink_to("/dev/zero")
    (photos / "none" / "dangling.jpg").symlink_to(photos / "nowhere.jpg")
    (photos / "roadwork" / "loop.jpg").symlink_to("loop.jpg")
    (photos / "1").symlink_to("/etc")  # a class folder that is a symlink out of the root
    for command in (["repro"], ["status"], ["repro"]):
        done = dvc_env(repo, {}, *command, "download" if command == ["repro"] else "--quiet", check=False, timeout=120)
        assert done.returncode in (0, 1), done.stderr[-2000:]  # status: 1 = "changed" (scan_local always is)
    reasons = quarantine(repo / "data" / "raw")
    hint = "(data.local.allow_outside_root: true allows it)"
    assert {ref: row["reason"] for ref, row in reasons.items()} == {
        "1": f"outside data.local.path: class folder 1 is a symlink to a folder outside the root; not walked {hint}",
        "none/dangling.jpg": "missing file: none/dangling.jpg (a dangling symlink)",
        "none/pipe.jpg": "not a regular file: none/pipe.jpg is a FIFO (named pipe)",
        "none/zero.jpg": f"outside data.local.path: none/zero.jpg resolves outside the root {hint}",
        "roadwork/loop.jpg": "symlink loop: roadwork/loop.jpg",
    }
    outputs = [p for folder in ("data", "metrics") for p in (repo / folder).rglob("*") if p.is_file()]
    assert not any(b"passwd" in p.read_bytes() or b"/etc" in p.read_bytes() for p in outputs)

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
    return parse_params({"data": {"source": "local", "local": {"path": str(path), **extra.pop("local", {})},
                                  **extra}}).data


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
    manifest = write_manifest(root / "list.csv", [
        ("ok.jpg", "1"), ("../elsewhere/secret.txt", "0"), (str(outside / "photo.jpg"), "0"),
        (str(root / "inside.jpg"), "0"),  # absolute, but inside the root: fine
    ])
    summary = ingest(local(manifest), tmp_path / "raw")
    assert summary["images"] == 2
    refused = quarantine(tmp_path / "raw")
    assert set(refused) == {"../elsewhere/secret.txt", str(outside / "photo.jpg")}
    assert refused["../elsewhere/secret.txt"]["reason"] == (
        f"outside data.local.path: {root / '../elsewhere/secret.txt'} resolves to {outside / 'secret.txt'}, "
        f"outside {root} (data.local.allow_outside_root: true allows it)")
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
        f"outside data.local.path: {root / 'none/passwd.jpg'} resolves to {outside / 'secret.txt'}, outside {root} "
        "(data.local.allow_outside_root: true allows it)")
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
    assert quarantine(tmp_path / "raw")["roadwork/gone.jpg"]["reason"] == \
        f"missing file: {root / 'roadwork/gone.jpg'} (a symlink to {root / 'nowhere.jpg'})"

    manifest = write_manifest(tmp_path / "m" / "list.csv", [("there.jpg", "0"), ("not-there.jpg", "1")])
    (tmp_path / "m" / "there.jpg").write_bytes(make_jpeg(2))
    ingest(local(manifest), tmp_path / "raw2")
    assert quarantine(tmp_path / "raw2")["not-there.jpg"]["reason"] == f"missing file: {tmp_path / 'm' / 'not-there.jpg'}"


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
    assert rows["none/huge.jpg"]["reason"] == (
        f"file too large: {root / 'none/huge.jpg'} has 5003 bytes, more than data.max_file_bytes (4000)")
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


def test_a_file_is_read_once_and_never_all_at_once(tmp_path, make_jpeg, monkeypatch):
    """Refused files are never opened (the size check uses stat)."""
    root = tmp_path / "dataset"
    (root / "none").mkdir(parents=True)
    (root / "none" / "big.bin").write_bytes(os.urandom(2048))
    opened = []
    real = Path.read_bytes
    monkeypatch.setattr(Path, "read_bytes", lambda self: opened.append(self.name) or real(self))
    ingest(local(root, max_file_bytes=1024), tmp_path / "raw")
    assert "big.bin" not in opened


def test_adding_changing_or_removing_one_image_reruns_download(tmp_path, make_jpeg):
    """data.local.path is a dependency of `download` in dvc.yaml, so the pipeline never keeps data
    that no longer matches the folder."""
    from e2e import dvc, git, make_repo

    repo = make_repo(tmp_path / "repo", {"data": {"source": "local", "local": {"path": "inputs/photos"}}})
    for folder in ("none", "roadwork"):
        (repo / "inputs" / "photos" / folder).mkdir(parents=True)
        for i in range(3):
            (repo / "inputs" / "photos" / folder / f"{i}.jpg").write_bytes(make_jpeg(i + 10 * len(folder)))
    dvc(repo, "add", "inputs/photos")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "photos")
    dvc(repo, "repro", "download")

    def download_changed() -> bool:
        status = dvc(repo, "status", "download").stdout
        return "inputs/photos" in status and "modified" in status

    assert not download_changed()
    image = repo / "inputs" / "photos" / "roadwork" / "new.jpg"
    for change in (lambda: image.write_bytes(make_jpeg(77)),      # add
                   lambda: image.write_bytes(make_jpeg(78)),      # change
                   lambda: image.unlink()):                       # remove
        change()
        assert download_changed()
        dvc(repo, "repro", "download")
        assert not download_changed()
        manifest = {row["source_ref"] for row in read_csv(repo / "data" / "raw" / "manifest.csv")}
        assert ("roadwork/new.jpg" in manifest) == image.exists()

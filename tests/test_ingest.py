"""The download stage's logic on local folders/manifests and on a NATIX-shaped parquet fixture."""

import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from kit.repo import REPO

from roadwork.config import parse_params
from roadwork.data.ingest import ingest
from roadwork.data.sources import SourceError, subset
from roadwork.io import read_csv


def data_params(**data):
    return parse_params({"data": data}).data


def make_class_folders(root: Path, make_jpeg, n_per_class=4):
    for label_dir, offset in (("none", 0), ("roadwork", 100)):
        (root / label_dir).mkdir(parents=True)
        for i in range(n_per_class):
            (root / label_dir / f"{i}.jpg").write_bytes(make_jpeg(offset + i))
    (root / "roadwork" / "broken.jpg").write_bytes(b"")


def test_local_class_folders(tmp_path, make_jpeg):
    make_class_folders(tmp_path / "src", make_jpeg)
    summary = ingest(data_params(source="local", local={"path": str(tmp_path / "src")}), tmp_path / "raw")
    manifest = read_csv(tmp_path / "raw" / "manifest.csv")
    assert summary["images"] == 8 and summary["positives"] == 4 and summary["quarantined"] == 1
    assert {row["label"] for row in manifest if row["source_ref"].startswith("roadwork/")} == {"1"}
    for row in manifest:  # every manifest row points at a stored file with that content hash
        assert (tmp_path / "raw" / row["path"]).exists() and row["path"].startswith(f"images/{row['sha256']}")
    quarantine = read_csv(tmp_path / "raw" / "quarantine.csv")
    assert quarantine[0]["source_ref"] == "roadwork/broken.jpg" and "empty file" in quarantine[0]["reason"]
    assert (tmp_path / "raw" / quarantine[0]["path"]).exists()  # kept, not lost


def test_unknown_class_folder_is_named(tmp_path, make_jpeg):
    (tmp_path / "src" / "maybe").mkdir(parents=True)
    with pytest.raises(SourceError, match="maybe"):
        ingest(data_params(source="local", local={"path": str(tmp_path / "src")}), tmp_path / "raw")


@pytest.mark.parametrize("kind", ["csv", "parquet"])
def test_local_manifest(tmp_path, make_jpeg, kind):
    for i in range(6):
        (tmp_path / f"img{i}.jpg").write_bytes(make_jpeg(i))
    table = pa.table({"path": [f"img{i}.jpg" for i in range(6)], "label": [0, 1, 0, 1, 0, 0]})
    manifest = tmp_path / f"list.{kind}"
    if kind == "csv":
        import pyarrow.csv as pacsv

        pacsv.write_csv(table, manifest)
    else:
        pq.write_table(table, manifest)
    summary = ingest(data_params(source="local", local={"path": str(manifest)}), tmp_path / "raw")
    assert summary["images"] == 6 and summary["positives"] == 2


def test_label_outside_binary_fails_naming_the_row(tmp_path, make_jpeg):
    (tmp_path / "a.jpg").write_bytes(make_jpeg(1))
    pq.write_table(pa.table({"path": ["a.jpg"], "label": [2]}), tmp_path / "m.parquet")
    with pytest.raises(SourceError, match=r"m.parquet: row 0 \(.a.jpg.\): label 2 is not 0 or 1"):
        ingest(data_params(source="local", local={"path": str(tmp_path / "m.parquet")}), tmp_path / "raw")
    assert not (tmp_path / "raw").exists()  # nothing half-written


def test_limit_is_a_deterministic_subset_independent_of_order(tmp_path, make_jpeg):
    refs = [f"r{i}" for i in range(50)]
    assert subset(refs, 10) == subset(list(reversed(refs)), 10)
    assert len(subset(refs, 10)) == 10 and subset(refs, 10) <= subset(refs, 20)
    make_class_folders(tmp_path / "src", make_jpeg, n_per_class=6)
    params = data_params(source="local", limit=5, local={"path": str(tmp_path / "src")})
    ingest(params, tmp_path / "a")
    ingest(params, tmp_path / "b")
    assert (tmp_path / "a" / "manifest.csv").read_bytes() == (tmp_path / "b" / "manifest.csv").read_bytes()
    assert len(read_csv(tmp_path / "a" / "manifest.csv")) + len(read_csv(tmp_path / "a" / "quarantine.csv")) == 5


REVISION = "0123456789abcdef0123456789abcdef01234567"


def natix_cache(root: Path, make_jpeg) -> Path:
    """A Hugging Face hub cache holding a dataset with NATIX's schema, as snapshot_download leaves it."""
    repo = root / "datasets--natix-network-org--roadwork"
    shard = repo / "snapshots" / REVISION / "data" / "train-00000-of-00001.parquet"
    shard.parent.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(REVISION)
    rows = [
        ({"bytes": make_jpeg(1), "path": "a.jpg"}, 1, "Cones and a worker"),
        ({"bytes": make_jpeg(2), "path": "b.jpg"}, 0, ""),
        ({"bytes": make_jpeg(3), "path": "c.jpg"}, 0, "a road work sign"),  # conflict: text with label 0
        ({"bytes": make_jpeg(4), "path": "d.jpg"}, 1, ""),  # conflict: label 1 without text
        ({"bytes": b"\xff\xd8\xff garbage", "path": "e.jpg"}, 0, ""),  # broken
    ]
    image_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    table = pa.table(
        {
            "image": pa.array([r[0] for r in rows], type=image_type),
            "label": pa.array([r[1] for r in rows], type=pa.int64()),
            "scene_description": [r[2] for r in rows],
        }
    )
    pq.write_table(table, shard)
    return root


@pytest.mark.parametrize("policy, images", [("drop", 2), ("keep", 4)])
def test_natix_source_through_huggingface_hub_offline_cache(tmp_path, make_jpeg, policy, images):
    cache = natix_cache(tmp_path / "hub", make_jpeg)
    (tmp_path / "params.yaml").write_text(
        f"data: {{source: natix, natix: {{revision: {REVISION}, label_text_conflict: {policy}}}}}\n"
    )
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(cache))
    run = subprocess.run(
        [sys.executable, "-m", "roadwork.stages.download"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr
    manifest = read_csv(tmp_path / "data" / "raw" / "manifest.csv")
    conflicts = read_csv(tmp_path / "data" / "raw" / "label_conflicts.csv")
    assert len(manifest) == images
    assert len(conflicts) == 2 and {c["action"] for c in conflicts} == {policy}
    assert len(read_csv(tmp_path / "data" / "raw" / "quarantine.csv")) == 1
    assert all(row["source_ref"].startswith("data/train-00000-of-00001.parquet#") for row in manifest)


def test_natix_unreachable_revision_fails_clearly(tmp_path, make_jpeg):
    cache = natix_cache(tmp_path / "hub", make_jpeg)
    (tmp_path / "params.yaml").write_text("data: {source: natix, natix: {revision: v9}}\n")
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(cache))
    run = subprocess.run(
        [sys.executable, "-m", "roadwork.stages.download"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert run.returncode != 0
    assert "natix-network-org/roadwork" in run.stderr and "'v9'" in run.stderr and "HF_TOKEN" in run.stderr


# ----------------------------------------------------------------------- defective manifests
def manifest_error(path: Path, tmp_path: Path) -> str:
    with pytest.raises(SourceError) as error:
        ingest(data_params(source="local", local={"path": str(path)}), tmp_path / "raw")
    assert not (tmp_path / "raw").exists()  # nothing half-written
    return str(error.value)


def test_a_utf8_byte_order_mark_is_read(tmp_path, make_jpeg):
    """Excel's "CSV UTF-8" starts with a BOM; it used to be reported as a missing `path` column."""
    (tmp_path / "a.jpg").write_bytes(make_jpeg(1))
    (tmp_path / "b.jpg").write_bytes(make_jpeg(2))
    (tmp_path / "m.csv").write_bytes("\ufeffpath,label\na.jpg,0\nb.jpg,1\n".encode("utf-8"))
    summary = ingest(data_params(source="local", local={"path": str(tmp_path / "m.csv")}), tmp_path / "raw")
    assert summary["images"] == 2 and summary["positives"] == 1


@pytest.mark.parametrize(
    "content, expected",
    [
        (b"path,label\n", "the manifest has a header but no rows"),
        (b"", "the manifest is empty; it needs a header row with 'path' and 'label'"),
        (
            b"path;label\na.jpg;1\n",
            "manifest lacks column(s) ['path', 'label']; it needs 'path' and 'label' (found ['path;label'])",
        ),
        ("path,label\na.jpg,1\n".encode("utf-16"), "the manifest is UTF-16 text; save it as UTF-8"),
        (
            "path,label\ncafé.jpg,1\n".encode("latin-1"),
            "the manifest is not UTF-8 text (byte 14: b'\\xe9'); save it as UTF-8",
        ),
        (b"path,label\na.jpg,1\n\0\0\0", "the manifest contains NUL bytes (byte 19): not a text CSV file"),
        (b"path,label\na.jpg, 1\n", "row 2 ('a.jpg'): label ' 1' is not 0 or 1"),
        (b"path,label\n,1\n", "row 2: path '' is empty, null or not a file name"),
        (b"path,label\na.jpg\n", "row 2 ('a.jpg'): label None is not 0 or 1"),
    ],
)
def test_defective_csv_manifests_are_refused_naming_the_file_and_what_is_wrong(tmp_path, make_jpeg, content, expected):
    (tmp_path / "a.jpg").write_bytes(make_jpeg(1))
    (tmp_path / "m.csv").write_bytes(content)
    assert manifest_error(tmp_path / "m.csv", tmp_path) == f"{tmp_path / 'm.csv'}: {expected}"


def test_defective_parquet_manifests_are_refused_naming_the_file_and_what_is_wrong(tmp_path, make_jpeg):
    (tmp_path / "a.jpg").write_bytes(make_jpeg(1))
    manifest = tmp_path / "m.parquet"
    pq.write_table(pa.table({"path": ["a.jpg", None], "label": [0, 1]}), manifest)
    assert manifest_error(manifest, tmp_path) == f"{manifest}: row 1: path None is empty, null or not a file name"
    pq.write_table(pa.table({"path": pa.array([], pa.string()), "label": pa.array([], pa.int64())}), manifest)
    assert manifest_error(manifest, tmp_path) == f"{manifest}: the manifest has a header but no rows"
    pq.write_table(pa.table({"path": ["a.jpg"], "label": [True]}), manifest)
    assert manifest_error(manifest, tmp_path) == f"{manifest}: row 0 ('a.jpg'): label True is not 0 or 1"
    good = (pq.write_table(pa.table({"path": ["a.jpg"], "label": [1]}), manifest), manifest.read_bytes())[1]
    manifest.write_bytes(good[: len(good) // 2])  # truncated: no footer
    error = manifest_error(manifest, tmp_path)
    assert error.startswith(f"{manifest}: not a readable parquet file (") and "Traceback" not in error


def test_a_manifest_that_is_not_a_regular_file_is_refused_unopened(tmp_path):
    os.mkfifo(tmp_path / "m.csv")  # opening it for reading would block forever
    assert manifest_error(tmp_path / "m.csv", tmp_path) == (
        f"data.local.path: {tmp_path / 'm.csv'} is a FIFO (named pipe), not a folder or a .csv/.parquet manifest"
    )


def test_a_killed_download_leaves_a_temporary_folder_the_next_run_removes(tmp_path, make_jpeg):
    """Killed while writing, download leaves .raw.<pid>.<random>.tmp/ (partial images) beside data/raw;
    the next run removes those whose process is gone, and nothing else."""
    make_class_folders(tmp_path / "src", make_jpeg)
    params = data_params(source="local", local={"path": str(tmp_path / "src")})
    out = tmp_path / "data" / "raw"
    script = (
        f"import os, sys; sys.path.insert(0, {str(REPO / 'src')!r})\n"
        "import roadwork.data.ingest as ingest_module\n"
        "from roadwork.config import parse_params\n"
        "real = ingest_module.format_csv\n"
        "def die(*args, **kwargs):\n"
        "    os.kill(os.getpid(), 9)\n"  # a SIGKILL after the images were written, before the manifest
        "ingest_module.format_csv = die\n"
        f"ingest_module.ingest(parse_params({{'data': {params.model_dump()!r}}}).data, __import__('pathlib').Path({str(out)!r}))\n"
    )
    killed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert killed.returncode == -9
    leftovers = list(out.parent.glob(".raw.*.tmp"))
    assert len(leftovers) == 1 and list(leftovers[0].rglob("*.jpg"))  # partial images were there
    legacy = out.parent / ".raw.abcd1234.tmp"  # the name earlier versions used (no pid)
    legacy.mkdir()
    running = out.parent / f".raw.{os.getpid()}.abcd1234.tmp"  # a live process's: not ours to remove
    running.mkdir()
    mine = [out.parent / ".raw.keep.tmp", out.parent / "raw.abcd1234.tmp"]  # not our pattern
    for path in mine:
        path.mkdir()
    ingest(params, out)
    assert not leftovers[0].exists() and not legacy.exists()
    assert running.exists() and all(path.exists() for path in mine)
    assert sorted(p.name for p in out.parent.iterdir()) == sorted(
        [".raw.keep.tmp", "raw.abcd1234.tmp", running.name, "raw"]
    )

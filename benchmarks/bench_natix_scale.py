"""The data stages at NATIX scale: download, dedup and split on a NATIX-shaped dataset of
full-size photos, the first-epoch decode-cache fill, peak memory per phase, and what dedup does
to the data, measured against planted truth.

The dataset is built once under ``--out`` (git-ignored ``benchmarks/out/``) as a Hugging Face
hub cache holding ``natix-network-org/roadwork`` at a fixed revision: parquet shards with
NATIX's schema (``image`` {bytes, path}, ``label``, ``scene_description``), row groups of 100
rows as ``datasets`` writes image datasets. Scenes come from the synthetic renderer
(:func:`roadwork.data.scene.render_scene`, drawn at a quarter of the size, upscaled and given
sensor-like noise so the JPEGs have photo-like size and decode cost), about 4:1 negatives, with
planted copies whose parent is known: exact byte copies, pixel copies (a JPEG comment), near
duplicates (re-encoded, resized, cropped, brighter, darker: the synthetic source's transforms),
mislabelled near duplicates (true label conflicts) and a few broken files.

Each phase runs the real stage (``python -m roadwork.stages.<stage>``, the natix source reading
the hub cache offline, as tests/test_ingest.py does) in its own process; its wall time and peak
RSS (VmHWM) are reported. Times are also given per image and as a
ratio to a baseline measured in the same run: one full decode of one stored JPEG (PIL), per
image. The cache fill decodes every kept image once into the training loader's ImageCache (as
the first epoch does) at params' ``model.img_size`` and at 224.

    python benchmarks/bench_natix_scale.py [--rows 8500] [--size 4032x3024] [--out benchmarks/out/natix_scale]
        [--reuse-download]   # keep data/raw from an earlier run of the same dataset; re-run dedup onwards

Building the dataset is not timed and is done once per (rows, size) under --out: ~0.26 s a
full-size row on 2 busy cores (--rows 200: about a minute to build, a minute to run).
Figures and the full-scale commands: benchmarks/RESULTS.md, "Data at NATIX scale".
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, ImageChops

from roadwork.data.scene import render_scene
from roadwork.data.synthetic import _insert_segment, _near_duplicate, encode_jpeg, scene_label, scene_rng

REPO = Path(__file__).resolve().parents[1]
REVISION = "5ca1ab1e" * 5
ROWS_PER_SHARD = 250
ROW_GROUP = 100
QUALITY = 90
SEED = 0
POSITIVE_FRACTION = 0.2
# planted copies, as shares of all rows
PLANT = {
    "exact_duplicate": 0.01,
    "pixel_duplicate": 0.005,
    "near_duplicate": 0.03,
    "label_noise": 0.003,
    "broken": 0.001,
}
NEAR = ("jpeg", "resize", "crop", "brighter", "darker")


# ============================================================================ the dataset
def plan(rows: int, seed: int = SEED) -> list[dict]:
    """Every row: kind, scene index, variant, parent row; in (shuffled) row order."""
    rng = np.random.default_rng(seed)
    planted = {kind: int(round(share * rows)) for kind, share in PLANT.items()}
    originals = rows - sum(planted.values())
    items = [{"kind": "original", "scene": i, "variant": ""} for i in range(originals)]
    for kind, n in planted.items():
        for k, scene in enumerate(rng.choice(originals, size=n, replace=False)):
            variant = {"near_duplicate": NEAR[k % len(NEAR)], "label_noise": "jpeg"}.get(kind, "")
            items.append({"kind": kind, "scene": int(scene), "variant": variant})
    order = rng.permutation(len(items))
    items = [items[i] for i in order]
    row_of_original = {item["scene"]: row for row, item in enumerate(items) if item["kind"] == "original"}
    for item in items:
        item["parent_row"] = -1 if item["kind"] == "original" else row_of_original[item["scene"]]
    return items


_NOISE: list[Image.Image] = []


def _noise(size: tuple[int, int], k: int) -> Image.Image:
    if not _NOISE:
        rng = np.random.default_rng(1234)
        _NOISE.extend(
            Image.fromarray(rng.integers(0, 13, size=(size[1], size[0], 3), dtype=np.uint8)) for _ in range(3)
        )
    return _NOISE[k % len(_NOISE)]


def _photo(scene: int, size: tuple[int, int]) -> tuple[Image.Image, int, str]:
    rng = scene_rng(SEED, scene)
    label = scene_label(rng, POSITIVE_FRACTION)
    small, text = render_scene(rng, max(64, size[0] // 4), max(48, size[1] // 4), label)
    image = small.resize(size, Image.Resampling.BILINEAR)
    return ImageChops.add(image, _noise(size, scene), scale=1.0, offset=-6), label, text


def make_row(args) -> tuple[bytes, int, str]:
    item, size = args
    image, label, text = _photo(item["scene"], size)
    data = encode_jpeg(image, QUALITY)
    kind = item["kind"]
    rng = np.random.default_rng([SEED, item["scene"], len(kind)])
    if kind == "exact_duplicate":
        pass
    elif kind == "pixel_duplicate":
        data = _insert_segment(data, 0xFE, b"re-uploaded copy")
    elif kind == "near_duplicate":
        data, _ = _near_duplicate(data, item["variant"], QUALITY, rng)
    elif kind == "label_noise":  # a re-encoded copy labelled the other way (text follows the label)
        data, _ = _near_duplicate(data, "jpeg", QUALITY, rng)
        label, text = 1 - label, ("" if label else "planted label conflict: cones")
    elif kind == "broken":
        data = data[: len(data) // 3]
    return data, label, text


def build(root: Path, rows: int, size: tuple[int, int], workers: int) -> dict:
    """The hub cache under root/hub (skipped when root/build.json matches); truth rows."""
    stamp = {"rows": rows, "size": list(size), "seed": SEED, "quality": QUALITY, "plant": PLANT, "revision": REVISION}
    items = plan(rows)
    shards = (rows + ROWS_PER_SHARD - 1) // ROWS_PER_SHARD
    repo = root / "hub" / "datasets--natix-network-org--roadwork"
    names = [f"data/train-{k:05d}-of-{shards:05d}.parquet" for k in range(shards)]
    truth = [{"ref": f"{names[r // ROWS_PER_SHARD]}#{r % ROWS_PER_SHARD}", **item} for r, item in enumerate(items)]
    for row in truth:
        p = row["parent_row"]
        row["parent"] = "" if p < 0 else f"{names[p // ROWS_PER_SHARD]}#{p % ROWS_PER_SHARD}"
    stamp_file = root / "build.json"
    if stamp_file.exists() and json.loads(stamp_file.read_text()) == stamp:
        return {"truth": truth, "built_s": None}
    if root.exists():
        shutil.rmtree(root)
    snapshot = repo / "snapshots" / REVISION
    (snapshot / "data").mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(REVISION)
    image_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    schema = pa.schema([("image", image_type), ("label", pa.int64()), ("scene_description", pa.string())])
    started = time.monotonic()
    writer, buffer = None, []

    def flush():
        writer.write_table(
            pa.table(
                {
                    "image": pa.array(
                        [{"bytes": d, "path": f"{r:06d}.jpg"} for r, (d, _, _) in buffer], type=image_type
                    ),
                    "label": pa.array([lab for _, (_, lab, _) in buffer], type=pa.int64()),
                    "scene_description": [t for _, (_, _, t) in buffer],
                },
                schema=schema,
            )
        )
        buffer.clear()

    with Pool(workers) as pool:
        for r, row in enumerate(pool.imap(make_row, ((item, size) for item in items), chunksize=4)):
            if r % ROWS_PER_SHARD == 0:
                if writer:
                    if buffer:
                        flush()
                    writer.close()
                writer = pq.ParquetWriter(snapshot / names[r // ROWS_PER_SHARD], schema)
            buffer.append((r, row))
            if len(buffer) == ROW_GROUP:
                flush()
            if r % 500 == 0:
                print(f"  built {r}/{rows} rows, {time.monotonic() - started:.0f}s", file=sys.stderr, flush=True)
        if buffer:
            flush()
        writer.close()
    stamp_file.write_text(json.dumps(stamp))
    return {"truth": truth, "built_s": time.monotonic() - started}


# ============================================================================ phases
def run_phase(name: str, target: list[str], cwd: Path, env: dict) -> dict:
    """Run one phase in its own process (``target``: a module run as ``__main__`` and its
    arguments, or ``cache_fill`` and its); wall time and that process's peak RSS: VmHWM of
    /proc/self/status, read by the child at its end (``ru_maxrss`` after fork+exec counts the
    parent's memory too)."""
    started = time.monotonic()
    hwm = cwd / f"{name}.hwm"
    argv = [sys.executable, str(Path(__file__).resolve()), "--child", str(hwm), *target]
    with open(cwd / f"{name}.log", "w") as log:
        code = subprocess.run(argv, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT).returncode
    seconds = time.monotonic() - started
    if code:
        sys.exit(
            f"{name} failed (exit {code}); see {cwd / (name + '.log')}:\n" + (cwd / f"{name}.log").read_text()[-3000:]
        )
    return {"phase": name, "seconds": seconds, "peak_rss_mb": int(hwm.read_text()) / 1024}


def child(hwm: str, target: list[str]) -> None:
    import runpy

    try:
        if target[0] == "cache_fill":
            cache_fill(int(target[1]), Path(target[2]))
        else:
            sys.argv = target
            runpy.run_module(target[0], run_name="__main__", alter_sys=True)
    finally:
        status = Path("/proc/self/status").read_text().splitlines()
        Path(hwm).write_text(next(line for line in status if line.startswith("VmHWM")).split()[1])


def cache_fill(size: int, root: Path) -> None:
    """The first epoch's decode-cache fill: every kept image decoded once into ImageCache."""
    from roadwork.data.examples import load_split
    from roadwork.train.data import ImageCache

    examples = [
        e
        for split in ("train", "val_select", "val_calib", "val_test")
        for e in load_split(Path("data/raw"), Path("data/split/splits.csv"), split)
    ]
    cache = ImageCache(size, root)
    for example in examples:
        cache.get(example)


def baseline_decode(raw: Path, n: int = 20) -> float:
    """Seconds for one full PIL decode of one stored JPEG (the median over n files)."""
    files = sorted((raw / "images").glob("*.jpg"))[:n]
    times = []
    for file in files:
        data = file.read_bytes()
        started = time.perf_counter()
        with Image.open(io.BytesIO(data)) as image:
            image.load()
        times.append(time.perf_counter() - started)
    return float(np.median(times))


# ============================================================================ dedup vs truth
def dedup_analysis(work: Path, truth: list[dict], max_hamming: int) -> dict:
    from roadwork.data.hamming import find_near_duplicate_pairs
    from roadwork.data.recall import chaining_report, pair_metrics
    from roadwork.io import read_csv

    manifest = read_csv(work / "data" / "raw" / "manifest.csv")
    by_ref = {row["ref"]: row for row in truth}
    id_of = {row["source_ref"]: row["id"] for row in manifest}
    ids = [row["id"] for row in manifest]
    hashes = np.array([int(row["phash"], 16) for row in manifest], dtype=np.uint64)
    # true families: an original and every decodable copy of it
    family = {}
    for row in manifest:
        t = by_ref[row["source_ref"]]
        family[row["id"]] = t["parent"] or t["ref"]
    true_pairs = [
        (id_of[r["ref"]], id_of[r["parent"]])
        for r in truth
        if r["parent"] and r["ref"] in id_of and r["parent"] in id_of
    ]
    near_true = [
        (id_of[r["ref"]], id_of[r["parent"]])
        for r in truth
        if r["kind"] in ("near_duplicate", "label_noise") and r["ref"] in id_of and r["parent"] in id_of
    ]
    found = [(ids[a], ids[b]) for a, b in find_near_duplicate_pairs(hashes, max_hamming).tolist()]
    pairs = pair_metrics(found, true_pairs, len(ids))
    near = pair_metrics(found, near_true, len(ids))
    records = read_csv(work / "data" / "dedup" / "records.csv")
    removed = read_csv(work / "data" / "dedup" / "removed.csv")
    cluster_of = {r["id"]: r["cluster"] for r in records} | {r["id"]: r["cluster"] for r in removed}
    chaining = chaining_report(cluster_of, family)
    noisy = {id_of[r["ref"]] for r in truth if r["kind"] == "label_noise" and r["ref"] in id_of}
    noisy_families = {family[i] for i in noisy}
    conflict_removed = [r["id"] for r in removed if r["reason"] == "label_conflict"]
    innocent = [i for i in conflict_removed if family[i] not in noisy_families]
    return {
        "images": len(ids),
        "planted_copies": pairs["true_pairs"],
        "copy_recall": round(pairs["recall"], 4),
        "planted_near": near["true_pairs"],
        "near_recall": round(near["recall"], 4),
        "false_pairs": pairs["false_pairs"],
        "false_pair_rate": pairs["false_pair_rate"],
        **chaining,
        "removed_label_conflict": len(conflict_removed),
        "planted_label_conflict_images": sum(1 for i in ids if family[i] in noisy_families),
        "removed_label_conflict_innocent": len(innocent),
        "planted_label_conflicts_kept": sum(1 for r in records if r["id"] in noisy),
    }


# ============================================================================ main
def main() -> None:
    if sys.argv[1:2] == ["--child"]:
        return child(sys.argv[2], sys.argv[3:])
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=8500)
    parser.add_argument("--size", default="4032x3024", help="WxH of the photos")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "out" / "natix_scale"))
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes building the dataset")
    parser.add_argument("--reuse-download", action="store_true", help="keep data/raw of an earlier run")
    args = parser.parse_args()
    size = tuple(int(v) for v in args.size.lower().split("x"))
    out = Path(args.out).resolve()
    dataset = out / f"dataset_{args.rows}_{size[0]}x{size[1]}"
    built = build(dataset, args.rows, size, args.workers)
    if built["built_s"] is not None:
        print(f"built {args.rows} rows in {built['built_s']:.0f}s", file=sys.stderr)
    work = out / "work"
    raw_ok = (
        args.reuse_download
        and (work / "data" / "raw" / "manifest.csv").exists()
        and json.loads((work / "dataset.json").read_text()) == {"dataset": str(dataset)}
    )
    if not raw_ok and work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    for stale in ("data/dedup", "data/split", "cache"):
        shutil.rmtree(work / stale, ignore_errors=True)
    (work / "dataset.json").write_text(json.dumps({"dataset": str(dataset)}))
    (work / "params.yaml").write_text(f"data: {{source: natix, natix: {{revision: {REVISION}}}}}\n")
    from roadwork.config import load_params

    params = load_params(work / "params.yaml")
    env = dict(
        os.environ,
        HF_HUB_OFFLINE="1",
        HF_HUB_CACHE=str(dataset / "hub"),
        PYTHONPATH=str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""),
    )
    results = []
    if not raw_ok:
        results.append(run_phase("download", ["roadwork.stages.download"], work, env))
    results.append(run_phase("dedup", ["roadwork.stages.dedup"], work, env))
    results.append(run_phase("split", ["roadwork.stages.split"], work, env))
    kept = len((work / "data" / "dedup" / "records.csv").read_text().splitlines()) - 1
    for img_size in sorted({params.model.img_size, 224}):
        results.append(
            run_phase(f"cache_fill_{img_size}", ["cache_fill", str(img_size), str(work / "cache")], work, env)
        )
    download = json.loads((work / "metrics" / "download.json").read_text())
    images = download["images"]
    base = baseline_decode(work / "data" / "raw")
    stored = sum(f.stat().st_size for f in (work / "data" / "raw" / "images").iterdir())
    print(
        f"\n{args.rows} rows of {size[0]}x{size[1]} JPEGs ({download['stored_files']} stored files, "
        f"{stored / download['stored_files'] / 2**20:.2f} MB each), {images} images after download, "
        f"{kept} after dedup; baseline: one full decode = {base * 1000:.0f} ms"
    )
    print(f"{'phase':<16}{'images':>8}{'wall s':>9}{'ms/img':>9}{'x decode':>10}{'peak RSS MB':>13}")
    for r in results:
        n = args.rows if r["phase"] == "download" else images if r["phase"] in ("dedup", "split") else kept
        r["images"] = n
        r["ms_per_image"] = 1000 * r["seconds"] / n
        r["x_decode"] = r["seconds"] / (n * base)
        print(
            f"{r['phase']:<16}{n:>8}{r['seconds']:>9.1f}{r['ms_per_image']:>9.2f}{r['x_decode']:>10.3f}"
            f"{r['peak_rss_mb']:>13.0f}"
        )
    analysis = dedup_analysis(work, built["truth"], params.dedup.max_hamming)
    dedup_metrics = json.loads((work / "metrics" / "dedup.json").read_text())
    print(f"\ndedup at max_hamming={params.dedup.max_hamming} vs planted truth:")
    for key, value in analysis.items():
        print(f"   {key}: {value}")
    print(f"   metrics/dedup.json warnings: {dedup_metrics.get('warnings', [])}")
    report = {
        "rows": args.rows,
        "size": list(size),
        "baseline_decode_s": base,
        "phases": results,
        "download": download,
        "dedup": dedup_metrics,
        "analysis": analysis,
    }
    (out / f"report_{args.rows}.json").write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()

"""Rehearse the real run: every DVC stage at real model size, timed, on this machine.

    python benchmarks/rehearsal.py                                   # ViT-H/16+ (presets/rehearsal.yaml), ~1 h on 2 cores
    python benchmarks/rehearsal.py --preset presets/rehearsal_ci.yaml  # ViT-B/16, minutes (tests/test_rehearsal.py)

A throwaway git+DVC clone of this working tree (tests/kit/repo.py's make_clean_repo) gets
``presets/real.yaml`` and then ``--preset`` applied with ``python -m roadwork.presets apply`` and
committed; each stage then runs with ``dvc repro -s <stage>`` under ``/usr/bin/time -v`` (wall
time and the peak resident memory of the largest process of the stage). Afterwards: sizes of the
resume checkpoints (runs/), the model directories and the bundle; the ONNX export and its parity
(metrics/export.json); and the bundle loaded by our predictor (``roadwork.predict.Predictor``) and
by the miner's detector (``roadwork.miner.detector.RoadworkTimmDetector``), each in its own
process, timed and with its peak memory. Prints a Markdown table; ``--json`` also writes it.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from kit.repo import BIN, env, git, make_clean_repo  # noqa: E402

STAGES = [
    "scan_local",
    "download",
    "dedup",
    "split",
    "synthesize",
    "train_phase1",
    "threshold@phase1",
    "explora",
    "threshold@phase4",
    "calibrate",
    "export",
    "evaluate",
]
SIZES = ["data/raw", "runs", "data/phase1", "data/explora", "data/phase4", "data/bundle"]

LOAD_CHECK = """
import json, sys, time
from pathlib import Path
from PIL import Image
bundle, kind = Path(sys.argv[1]), sys.argv[2]
images = [Image.open(p).convert("RGB") for p in sorted(Path(sys.argv[3]).rglob("*.jpg"))[:2]]
start = time.perf_counter()
if kind == "predictor":
    from roadwork.predict import Predictor
    model = Predictor(bundle, device="cpu")
    loaded = time.perf_counter()
    answers = [float(p) for p in model.predict(images)]
else:
    from roadwork.miner.detector import RoadworkTimmDetector
    model = RoadworkTimmDetector(config_name=None, bundle=str(bundle))
    loaded = time.perf_counter()
    answers = [float(model(image)) for image in images]
done = time.perf_counter()
assert all(0.0 <= a <= 1.0 for a in answers), answers
print("RESULT " + json.dumps({"load_s": loaded - start, "per_image_s": (done - loaded) / len(images),
                              "answers": answers, "image_size": list(images[0].size)}))
"""


def timed(cmd: list[str], cwd: Path, environ: dict, log: Path) -> dict:
    """Run `cmd` under /usr/bin/time -v; its wall time, peak RSS (largest process of the tree), exit code."""
    start = time.perf_counter()
    with open(log, "w") as out:
        result = subprocess.run(
            ["/usr/bin/time", "-v", *cmd], cwd=cwd, env=environ, stdout=out, stderr=subprocess.STDOUT
        )
    wall = time.perf_counter() - start
    text = log.read_text(errors="replace")
    found = re.findall(r"Maximum resident set size \(kbytes\): (\d+)", text)
    return {
        "wall_s": round(wall, 1),
        "peak_rss_gib": round(int(found[-1]) / 1024**2, 2) if found else None,
        "rc": result.returncode,
        "log": str(log),
    }


class PeakSize:
    """The largest total size a folder reaches while the block runs (resume checkpoints in runs/ are
    deleted when a stage succeeds), sampled every `interval` seconds, and its largest file then."""

    def __init__(self, path: Path, interval: float = 2.0):
        self.path, self.interval, self.peak = path, interval, {"gb": 0.0, "files": 0, "largest": None}
        self._stop = threading.Event()

    def _poll(self):
        while not self._stop.wait(self.interval):
            try:
                now = size_of(self.path)
            except FileNotFoundError:  # a file renamed or deleted while listed
                continue
            if now["gb"] > self.peak["gb"]:
                self.peak = now

    def __enter__(self):
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def size_of(path: Path) -> dict:
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()] if path.exists() else []
    sizes = {p: p.stat().st_size for p in files}
    largest = max(sizes, key=sizes.get) if sizes else None
    return {
        "gb": round(sum(sizes.values()) / 1e9, 3),
        "files": len(files),
        "largest": f"{largest.relative_to(path) if largest != path else largest.name} ({sizes[largest] / 1e9:.3f} GB)"
        if largest
        else None,
    }


def rehearse(preset: Path, base: Path | None, workdir: Path, logs: Path, from_stage: str = STAGES[0]) -> dict:
    """Run the stages from `from_stage` on in workdir/repo (created unless from_stage is later: a
    rehearsal resumed there, e.g. after a fix copied into workdir/repo/src)."""
    repo = workdir / "repo"
    environ = dict(env(repo), PYTHONPATH=str(repo / "src"), PYTHONUNBUFFERED="1")
    if from_stage == STAGES[0]:
        make_clean_repo(repo)
        for applied in [p for p in (base, preset) if p is not None]:
            subprocess.run(
                [sys.executable, "-m", "roadwork.presets", "apply", str(applied.resolve())],
                cwd=repo,
                env=environ,
                check=True,
                capture_output=True,
            )
        git(repo, "commit", "-qam", f"apply {base.name if base else ''} {preset.name}")
        # hard links, not copies, from the DVC cache: multi-GB outputs are not written twice
        subprocess.run(
            [str(BIN / "dvc"), "config", "--local", "cache.type", "hardlink,symlink"],
            cwd=repo,
            env=environ,
            check=True,
            capture_output=True,
        )
    report = {"preset": str(preset), "base": str(base) if base else None, "repo": str(repo), "stages": {}}
    for stage in STAGES[STAGES.index(from_stage) :]:
        with PeakSize(repo / "runs") as runs:
            row = timed([str(BIN / "dvc"), "repro", "-s", stage], repo, environ, logs / f"{stage}.log")
        row["runs_peak"] = runs.peak
        report["stages"][stage] = row
        print(f"{stage}: {row}", flush=True)
        if row["rc"] != 0:
            report["failed"] = stage
            return report
    report["sizes"] = {name: size_of(repo / name) for name in SIZES}
    report["onnx"] = json.loads((repo / "data/bundle/manifest.json").read_text()).get("onnx")
    report["latency"] = json.loads((repo / "metrics/evaluate.json").read_text()).get("latency")
    raw = repo / "data/raw"
    for kind in ("predictor", "detector"):
        row = timed(
            [sys.executable, "-c", LOAD_CHECK, str(repo / "data/bundle"), kind, str(raw)],
            repo,
            environ,
            logs / f"load_{kind}.log",
        )
        results = [
            json.loads(line[7:]) for line in Path(row["log"]).read_text().splitlines() if line.startswith("RESULT ")
        ]
        row.update(results[0] if results else {})
        report[kind] = row
        print(f"{kind}: {row}", flush=True)
    return report


def table(report: dict) -> str:
    lines = [
        f"preset: {report['base'] or ''} + {report['preset']}",
        "",
        "| stage | wall (s) | peak RSS (GiB) | runs/ at its largest (GB, largest file) |",
        "|---|---:|---:|---|",
    ]
    for stage, row in report["stages"].items():
        mark = "" if row["rc"] == 0 else f" (FAILED rc {row['rc']}, {row['log']})"
        runs = row.get("runs_peak") or {}
        during = f"{runs['gb']} ({runs['largest']})" if runs.get("gb") else ""
        lines.append(f"| {stage}{mark} | {row['wall_s']} | {row['peak_rss_gib']} | {during} |")
    for kind in ("predictor", "detector"):
        row = report.get(kind)
        if row:
            lines.append(
                f"| load bundle: {kind} (load {row.get('load_s', float('nan')):.1f} s, "
                f"{row.get('per_image_s', float('nan')):.2f} s/image) | {row['wall_s']} | "
                f"{row['peak_rss_gib']} | |"
            )
    if "sizes" in report:
        lines += ["", "| output | GB | files | largest |", "|---|---:|---:|---|"]
        lines += [f"| {name} | {s['gb']} | {s['files']} | {s['largest']} |" for name, s in report["sizes"].items()]
    if report.get("onnx"):
        onnx = report["onnx"]
        lines += [
            "",
            f"ONNX: {', '.join(onnx['files'])}, opset {onnx['opset']}, max |logit difference| vs PyTorch "
            f"{onnx['max_abs_logit_diff']:.3g} (tolerance {onnx['tolerance']:g}), onnxruntime {onnx['onnxruntime']}",
        ]
    if report.get("latency"):
        views = report["latency"]["views"]
        lines += [
            "detector latency per query (evaluate stage, CPU): "
            + ", ".join(f"{n} view(s) {v['detector_s']:.2f} s" for n, v in views.items())
        ]
    if report.get("failed"):
        lines += ["", f"FAILED at {report['failed']}"]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default=str(REPO / "presets/rehearsal.yaml"))
    parser.add_argument(
        "--base",
        default=str(REPO / "presets/real.yaml"),
        help="preset applied first ('' for none; default: %(default)s)",
    )
    parser.add_argument("--workdir", default=None, help="where the throwaway repo goes (default: a temp dir)")
    parser.add_argument("--json", default=None, help="also write the report here")
    parser.add_argument(
        "--from-stage",
        default=STAGES[0],
        choices=STAGES,
        help="resume an earlier rehearsal in --workdir at this stage (default: a new one)",
    )
    args = parser.parse_args(argv)
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="rehearsal-"))
    logs = workdir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    report = rehearse(Path(args.preset), Path(args.base) if args.base else None, workdir, logs, args.from_stage)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    print(table(report))
    return 1 if report.get("failed") else 0


if __name__ == "__main__":
    sys.exit(main())

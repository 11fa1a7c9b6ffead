"""The pipeline's figures in README.md, docs/*.md and benchmarks/RESULTS.md, filled from metrics/*.json.

    python -m roadwork.figures --write   # rewrite every <!-- figures:NAME --> ... <!-- /figures:NAME --> block
    python -m roadwork.figures --check   # exit 1 naming each stale block (tests/test_figures.py runs it)

A block is a table (figure, value, 95% interval where the metric has one) of the rows of ``FIGURES`` with
that block name. Numbers that benchmarks measure (not in metrics/) are written by hand beside the command
that produced them; every other pipeline figure comes from here or from ``dvc metrics show``.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

# block, label, metrics file (under metrics/), key path (dots; a key holding dots is written in full), format.
# The interval is found beside the key: `<key>_ci95_low`/`_high`, or `ci95_low`/`ci95_high` (and `verdict`)
# beside a `difference`. Retarget a row by editing its file or key here.
# fmt: off
FIGURES = [
    # the README's headline
    ("headline", "val_test images", "split.json", "val_test.n", "int"),
    ("headline", "bundle, val_test MCC", "evaluate.json", "val_test.mcc", "f3"),
    ("headline", "bundle, val_test MCC under the validators' 50/50 stream", "evaluate.json", "val_test.prior_0.5.mcc", "f3"),
    ("headline", "validators' protocol, expected reward (real images)", "evaluate.json", "protocol.reward_real", "f3"),
    ("headline", "val_test ECE of the shipped probability, 50/50", "calibrate.json", "headline.ece", "pct"),
    ("headline", "model minus colour baseline, 50/50 MCC", "evaluate.json", "comparisons.model_vs_colour_baseline.difference", "d3"),
    ("headline", "phase 4 minus phase 1, val_test 50/50 MCC", "evaluate.json", "comparisons.phase4_vs_phase1.difference", "d3"),
    # benchmarks/RESULTS.md, "The embedded default now"
    ("default", "images downloaded (decoded, not quarantined)", "download.json", "images", "int"),
    ("default", "kept after dedup", "dedup.json", "kept", "int"),
    ("default", "dropped as label conflicts", "dedup.json", "removed_label_conflict", "int"),
    ("default", "planted near-duplicate recall", "dedup.json", "synthetic_truth.near_duplicate_recall", "f3"),
    ("default", "false near-duplicate pairs", "dedup.json", "synthetic_truth.false_pairs", "int"),
    ("default", "val_test images", "split.json", "val_test.n", "int"),
    ("default", "val_test roadwork images", "split.json", "val_test.positive", "int"),
    ("default", "bundle, val_test MCC at 0.5", "evaluate.json", "val_test.mcc", "f3"),
    ("default", "bundle, val_test accuracy at 0.5", "evaluate.json", "val_test.accuracy", "f3"),
    ("default", "bundle, val_test AUC", "evaluate.json", "val_test.auc", "f3"),
    ("default", "50/50 stream: MCC", "evaluate.json", "val_test.prior_0.5.mcc", "f3"),
    ("default", "50/50 stream: accuracy", "evaluate.json", "val_test.prior_0.5.accuracy", "f3"),
    ("default", "50/50 stream: expected reward", "evaluate.json", "val_test.prior_0.5.reward", "f3"),
    ("default", "50/50 stream: TPR", "evaluate.json", "val_test.prior_0.5.tpr", "f3"),
    ("default", "50/50 stream: TNR", "evaluate.json", "val_test.prior_0.5.tnr", "f3"),
    ("default", "smallest detectable MCC difference vs a fixed reference (80% power)", "evaluate.json", "power.mdd_mcc_vs_fixed_reference", "f3"),
    ("default", "smallest detectable MCC difference, phase 4 vs phase 1", "evaluate.json", "power.mdd_mcc_phase4_vs_phase1", "f3"),
    ("default", "model minus colour-histogram baseline, 50/50 MCC", "evaluate.json", "comparisons.model_vs_colour_baseline.difference", "d3"),
    ("default", "phase 4 minus phase 1, val_select 50/50 MCC (decides `calibrate.model: best`)", "calibrate.json", "selection.phase4_vs_phase1.difference", "d3"),
    ("default", "phase 4 minus phase 1, val_test 50/50 MCC", "evaluate.json", "comparisons.phase4_vs_phase1.difference", "d3"),
    ("default", "multi-view (cross-fitted) minus single view on val_select, 50/50 MCC: decides the views", "export.json", "multiview.val_select.mcc_prior_0.5_difference.difference", "d3"),
    ("default", "multi-view minus single view (224 px, own thresholds), 50/50 MCC", "evaluate.json", "comparisons.multiview_vs_single_view.difference", "d3"),
    ("default", "views the detector ships", "evaluate.json", "protocol.views", "str"),
    ("default", "protocol reward, real images (`protocol.reward_real`)", "evaluate.json", "protocol.reward_real", "f3"),
    ("default", "protocol reward, level 0", "evaluate.json", "protocol.levels.0.reward", "f3"),
    ("default", "protocol reward, level 1", "evaluate.json", "protocol.levels.1.reward", "f3"),
    ("default", "protocol reward, level 2", "evaluate.json", "protocol.levels.2.reward", "f3"),
    ("default", "protocol reward, level 3", "evaluate.json", "protocol.levels.3.reward", "f3"),
    ("default", "level 1 minus level 0, reward", "evaluate.json", "comparisons.protocol_levels_vs_level_0.level_1.difference", "d3"),
    ("default", "level 2 minus level 0, reward", "evaluate.json", "comparisons.protocol_levels_vs_level_0.level_2.difference", "d3"),
    ("default", "level 3 minus level 0, reward", "evaluate.json", "comparisons.protocol_levels_vs_level_0.level_3.difference", "d3"),
    ("default", "model minus colour baseline on the same challenges, reward, level 0", "evaluate.json", "comparisons.protocol_vs_colour_baseline.level_0.difference", "d3"),
    ("default", "model minus colour baseline on the same challenges, reward, level 3", "evaluate.json", "comparisons.protocol_vs_colour_baseline.level_3.difference", "d3"),
    ("default", "model minus colour baseline on the same challenges, reward, mix", "evaluate.json", "comparisons.protocol_vs_colour_baseline.mix.difference", "d3"),
    ("default", "protocol reward, validators' mix 50% real / 25% i2i / 25% t2i (tiny backend: not a measurement)", "evaluate.json", "protocol.reward", "f3"),
    ("default", "tuned threshold t (logit, val_select)", "calibrate.json", "calibration_map.temperature.crossing_logit", "f3"),
    ("default", "calibrated crossing z* (logit, val_calib)", "calibrate.json", "calibration_map.temperature_bias.crossing_logit", "f3"),
    ("default", "held-out NLL, temperature at t", "calibrate.json", "calibration_map.temperature.nll_cv", "f3"),
    ("default", "held-out NLL, temperature + bias", "calibrate.json", "calibration_map.temperature_bias.nll_cv", "f3"),
    ("default", "held-out NLL difference (its standard error below)", "calibrate.json", "calibration_map.nll_cv_difference", "d3"),
    ("default", "standard error of that difference", "calibrate.json", "calibration_map.nll_cv_standard_error", "f3"),
    ("default", "map shipped", "calibrate.json", "calibration_map.shipped", "str"),
    ("default", "shipped temperature T", "calibrate.json", "temperature", "f3"),
    ("default", "deciding at z* minus at t, 50/50 MCC, val_select", "calibrate.json", "conflict.decision.val_select.difference", "d3"),
    ("default", "deciding at z* minus at t, 50/50 MCC, val_test", "calibrate.json", "conflict.decision.val_test.difference", "d3"),
    ("default", "val_test ECE under 50/50 keeping t (temperature)", "calibrate.json", "conflict.val_test_calibration.ece_temperature", "pct"),
    ("default", "val_test ECE under 50/50, shipped (headline; aim 3%)", "calibrate.json", "headline.ece", "pct"),
    ("default", "same ECE of a perfectly calibrated probability on these images, mean", "calibrate.json", "headline.floor_mean", "pct"),
    ("default", "same, 95th percentile", "calibrate.json", "headline.floor_p95", "pct"),
    ("default", "shipped minus the network's own sigmoid(z), that ECE", "calibrate.json", "ece_shipped_minus_raw.prior_0.5.difference", "dpct"),
    ("default", "val_test ECE at its own prior (the map is calibrated for 50/50)", "calibrate.json", "val_test.raw_prior.after.ece_positive_uniform", "pct"),
    ("default", "miner detector latency per query, 1 view (this CPU)", "evaluate.json", "latency.views.1.detector_s", "ms"),
    ("default", "miner detector latency per query, 5 views (this CPU)", "evaluate.json", "latency.views.5.detector_s", "ms"),
]
# fmt: on

FILES = ["README.md", "docs/*.md", "benchmarks/RESULTS.md"]
BLOCK = re.compile(r"(<!-- figures:([\w-]+) -->\n)(.*?)(<!-- /figures:\2 -->)", re.S)


def _signed(value: float, digits: int) -> str:
    return f"{value:+.{digits}f}"


FORMATS = {
    "f3": lambda v: f"{v:.3f}",
    "d3": lambda v: _signed(v, 3),
    "pct": lambda v: f"{100 * v:.1f}%",
    "dpct": lambda v: f"{_signed(100 * v, 1)} points",
    "ms": lambda v: f"{1000 * v:.1f} ms",
    "int": lambda v: f"{v:,}",
    "str": str,
}


def lookup(data: dict, key: str):
    """`data` at the dotted `key`; a part may itself hold dots (``val_test.prior_0.5.mcc``)."""
    if key in data:
        return data[key]
    for cut in range(len(key), 0, -1):
        head = key[:cut]
        if key[cut : cut + 1] in (".", "") and head in data:
            rest = key[cut + 1 :]
            return data[head] if not rest else lookup(data[head], rest)
    raise KeyError(key)


def _parent_and_leaf(data: dict, key: str):
    parent_key, _, leaf = key.rpartition(".")
    return (lookup(data, parent_key) if parent_key else data), leaf


def figure(metrics: Path, file: str, key: str, fmt: str) -> tuple[str, str]:
    """(value, interval) of one row, formatted; the interval is '' where the metric has none."""
    path = metrics / file
    data = json.loads(path.read_text(encoding="utf-8"))
    try:
        value = lookup(data, key)
        parent, leaf = _parent_and_leaf(data, key)
    except (KeyError, TypeError):
        raise KeyError(f"{path}: no key {key!r} (retarget it in roadwork.figures.FIGURES)") from None
    show = FORMATS[fmt]
    text = show(value)
    if leaf == "difference":
        low, high, verdict = parent.get("ci95_low"), parent.get("ci95_high"), parent.get("verdict")
        text += f" ({verdict})" if verdict else ""
    else:
        low, high = parent.get(f"{leaf}_ci95_low"), parent.get(f"{leaf}_ci95_high")
    interval = f"[{show(low)}, {show(high)}]" if low is not None and high is not None else ""
    return text, interval


def block(name: str, metrics: Path) -> str:
    rows = [row for row in FIGURES if row[0] == name]
    if not rows:
        raise KeyError(f"no figures block {name!r} in roadwork.figures.FIGURES")
    lines = ["| figure | value | 95% interval | from |", "|---|---|---|---|"]
    for _, label, file, key, fmt in rows:
        value, interval = figure(metrics, file, key, fmt)
        lines.append(f"| {label} | {value} | {interval} | `metrics/{file}` `{key}` |")
    return "\n".join(lines) + "\n"


def documents(root: Path) -> list[Path]:
    return sorted({path for pattern in FILES for path in root.glob(pattern)})


def fill(text: str, metrics: Path) -> str:
    return BLOCK.sub(lambda m: m.group(1) + block(m.group(2), metrics) + m.group(4), text)


def stale(root: Path) -> list[str]:
    """Each block whose table differs from metrics/ now, as 'file: block NAME'."""
    problems = []
    for path in documents(root):
        text = path.read_text(encoding="utf-8")
        for match in BLOCK.finditer(text):
            if match.group(3) != block(match.group(2), root / "metrics"):
                problems.append(f"{path.relative_to(root)}: block {match.group(2)} is stale")
    return problems


def write(root: Path) -> list[Path]:
    from roadwork.io import write_text

    changed = []
    for path in documents(root):
        text = path.read_text(encoding="utf-8")
        new = fill(text, root / "metrics")
        if new != text:
            write_text(path, new)
            changed.append(path)
    return changed


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m roadwork.figures", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--write", action="store_true", help="fill every figures block from metrics/")
    group.add_argument("--check", action="store_true", help="exit 1 naming each stale block")
    args = parser.parse_args(argv)
    root = Path.cwd()
    try:
        if args.check:
            problems = stale(root)
            for problem in problems:
                print(f"{problem} (run python -m roadwork.figures --write)", file=sys.stderr)
            sys.exit(1 if problems else 0)
        for path in write(root):
            print(f"wrote {path.relative_to(root)}")
    except KeyError as error:
        sys.exit(str(error.args[0]))


if __name__ == "__main__":
    main()

"""Which training augmentation wins under the validators' protocol: standard vs validator vs mix.

    python benchmarks/augment_protocol.py                      # after `dvc repro split`; ~20 min on 2 cores
    python benchmarks/augment_protocol.py --modes standard mix --draws 2 --workdir /tmp/aug

For each `train.augment.mode` the phase-1 model is trained with params.yaml's settings (only the
mode changed, same seed, same splits), its decision threshold is chosen on val_select at the
validators' 50/50 prior (as the threshold stage does), and the model is built into a bundle with
that threshold folded (T = 1) and answered through the miner's detector
(:class:`roadwork.miner.detector.RoadworkTimmDetector`), as the export stage does. val_test goes
through the validators' protocol (levels 0-3, `--draws` seeded augmentation draws, the same
challenge images for every mode).

Printed and written (``--out``, JSON): per mode and level, the expected reward at the 50/50 prior
(mean over draws) with its paired bootstrap 95% interval over images, and for every mode against
`standard` the paired difference of the reward per level and for the mix of levels (the same
images and the same challenge draws on both sides; an image's draws stay together), with a
verdict (roadwork.evaluate.compare).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from roadwork.config import load_params  # noqa: E402
from roadwork.evaluate.compare import paired_difference  # noqa: E402
from roadwork.evaluate.metrics import prior_sample_weights  # noqa: E402
from roadwork.evaluate.protocol import LEVELS, run_protocol  # noqa: E402

REWARD_EXPONENT = 3


def train(config, out_dir: Path, run_dir: Path) -> None:
    import torch

    from roadwork.models.classifier import build_model
    from roadwork.train.distributed import Dist, seed_everything
    from roadwork.train.fit import fit

    if (out_dir / "logits.csv").exists():
        print(f"reusing {out_dir}", file=sys.stderr)
        return
    seed_everything(config.train.seed)
    fit(
        config,
        build_model(config.model),
        ROOT / "data/raw",
        ROOT / "data/split/splits.csv",
        out_dir,
        run_dir,
        Dist(rank=0, world_size=1, device=torch.device("cpu")),
        None,
    )


def detector_for(model_dir: Path, target_prior: float, bundle_dir: Path):
    from roadwork.evaluate.logits import split_logits
    from roadwork.evaluate.threshold import best_threshold
    from roadwork.export.bundle import build_bundle
    from roadwork.miner.detector import RoadworkTimmDetector

    logits, labels = split_logits(model_dir / "logits.csv", "val_select")
    fit = best_threshold(logits, labels, target_prior, default_threshold=0.0)
    threshold = float((fit["reweighted"] or fit["raw"])["threshold"])
    build_bundle(
        model_dir,
        1.0,
        threshold,
        bundle_dir,
        model_name="augment-benchmark",
        version="0",
        submitted_by="",
        metrics={},
        provenance={},
        onnx=False,
    )
    return RoadworkTimmDetector(config_name=None, bundle=str(bundle_dir)), threshold


def reward_rows(y, w, draws, axis=-1):
    """Expected reward (50/50 weights) averaged over draws; ``draws``: per draw, the decisions at
    each level pooled (one array per level, rows of resampled images along ``axis``)."""
    from roadwork.evaluate.compare import _weighted_mcc

    rewards = []
    for levels in draws:
        pred = np.concatenate(levels, axis=axis)
        yy, ww = (np.concatenate([a] * len(levels), axis=axis) for a in (y, w))
        mcc = _weighted_mcc(yy, pred, ww, axis)
        accuracy = (ww * (yy.astype(bool) == pred.astype(bool))).sum(axis) / ww.sum(axis)
        rewards.append((0.5 * np.maximum(mcc, 0) + 0.5 * accuracy) ** REWARD_EXPONENT)
    return np.mean(rewards, axis=0)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--modes", nargs="+", default=["standard", "validator", "mix"])
    parser.add_argument("--draws", type=int, default=2)
    parser.add_argument("--n-boot", type=int, default=1000)
    parser.add_argument("--workdir", type=Path, default=None, help="trained models are kept (and reused) here")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)

    from roadwork.data.examples import load_split
    from roadwork.predict import load_image

    base = load_params(ROOT / "params.yaml")
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="augment-protocol-"))
    examples = load_split(ROOT / "data/raw", ROOT / "data/split/splits.csv", "val_test")
    y = np.array([e.label for e in examples])
    w = prior_sample_weights(y, base.threshold.target_prior)
    decisions, results = (
        {},
        {
            "command": "python benchmarks/augment_protocol.py " + " ".join(argv or sys.argv[1:]),
            "n_images": int(y.size),
            "draws": args.draws,
            "modes": {},
        },
    )
    for mode in args.modes:
        config = base.model_copy(
            update={
                "train": base.train.model_copy(update={"augment": base.train.augment.model_copy(update={"mode": mode})})
            }
        )
        started = time.monotonic()
        train(config, workdir / mode, workdir / "runs" / mode)
        trained_s = time.monotonic() - started
        detector, threshold = detector_for(workdir / mode, base.threshold.target_prior, workdir / f"bundle_{mode}")
        runs = [
            run_protocol(
                lambda i: load_image(examples[i].path),
                y,
                lambda images, detector=detector: np.asarray(detector.batch(images)),
                base.export.protocol_seed + k,
                chunk=32,
                progress=True,
            )
            for k in range(args.draws)
        ]
        decisions[mode] = {str(level): [run["_probs"][level] > 0.5 for run in runs] for level in LEVELS}
        results["modes"][mode] = {"train_s": round(trained_s, 1), "threshold_logit": round(threshold, 6), "levels": {}}

    def arrays(mode, levels):
        """Flat per-image arrays: for each draw, the decisions at each of ``levels``."""
        return [decisions[mode][str(level)][d] for d in range(args.draws) for level in levels]

    def statistic(n_levels, n_sides):
        def reward(y_, w_, *flat, axis=-1):
            per_side = len(flat) // n_sides
            sides = [
                [flat[s * per_side + d * n_levels : s * per_side + (d + 1) * n_levels] for d in range(args.draws)]
                for s in range(n_sides)
            ]
            values = [reward_rows(y_, w_, side, axis) for side in sides]
            return values[0] if n_sides == 1 else values[1] - values[0]

        return reward

    for mode in args.modes:
        for name, levels in [*((str(level), [level]) for level in LEVELS), ("mix", list(LEVELS))]:
            alone = paired_difference(statistic(len(levels), 1), (y, w, *arrays(mode, levels)), n_boot=args.n_boot)
            entry = {"reward": alone["difference"], "ci95_low": alone["ci95_low"], "ci95_high": alone["ci95_high"]}
            if mode != "standard" and "standard" in decisions:
                diff = paired_difference(
                    statistic(len(levels), 2),
                    (y, w, *arrays("standard", levels), *arrays(mode, levels)),
                    n_boot=args.n_boot,
                )
                entry["minus_standard"] = {key: diff[key] for key in ("difference", "ci95_low", "ci95_high", "verdict")}
            results["modes"][mode]["levels"][name] = entry

    for mode, result in results["modes"].items():
        print(f"{mode} (train {result['train_s']} s)")
        for level, entry in result["levels"].items():
            line = (
                f"  level {level:>3}: reward {entry['reward']:.3f} [{entry['ci95_low']:.3f}, {entry['ci95_high']:.3f}]"
            )
            if "minus_standard" in entry:
                d = entry["minus_standard"]
                line += f"   minus standard {d['difference']:+.3f} [{d['ci95_low']:+.3f}, {d['ci95_high']:+.3f}] {d['verdict']}"
            print(line)
    if args.out:
        args.out.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

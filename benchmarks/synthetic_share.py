"""Does training with the validators' synthetic images pay: train.synthetic_share 0 vs a share, paired.

    python benchmarks/synthetic_share.py                 # after `dvc repro synthesize`; ~10 min on 2 cores
    python benchmarks/synthetic_share.py --share 0.5 --draws 1 --workdir /tmp/share

The phase-1 model is trained twice with params.yaml's settings, only ``train.synthetic_share`` changed
(0 and ``--share``; same seed, same splits, same data/synthetic). Each model's threshold is chosen on
real val_select at the validators' 50/50 prior (as the threshold stage does), folded into a bundle
(T = 1) and answered through the miner's detector, as in benchmarks/augment_protocol.py. val_test's
real images and their i2i and t2i children go through the validators' protocol (levels 0-3,
``--draws`` seeded draws, the same challenges for both models).

Printed and written (``--out``, JSON), each as the paired bootstrap difference (share minus 0) with
its 95% interval and verdict (roadwork.evaluate.compare): the protocol reward of the validators' mix
(50% real, 25% i2i, 25% t2i, roadwork.evaluate.per_kind.mix_weights) and the real-only val_test MCC
at the 50/50 prior (saved logits, each model at its threshold).

On the embedded default (synthesize.backend tiny) the synthetic images are noise from random
weights: the result exercises the code and means nothing about the real generator.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from augment_protocol import detector_for  # noqa: E402

from roadwork.config import load_params  # noqa: E402
from roadwork.evaluate import per_kind  # noqa: E402
from roadwork.evaluate.compare import mcc_difference, reward_difference  # noqa: E402
from roadwork.evaluate.metrics import prior_sample_weights  # noqa: E402

SYNTHETIC = ROOT / "data/synthetic"


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
        synthetic_dir=SYNTHETIC,
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--share", type=float, default=0.5)
    parser.add_argument("--draws", type=int, default=2)
    parser.add_argument("--n-boot", type=int, default=1000)
    parser.add_argument("--workdir", type=Path, default=None, help="trained models are kept (and reused) here")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)

    from roadwork.data.examples import load_split
    from roadwork.evaluate.logits import paired_split_logits
    from roadwork.evaluate.protocol import protocol_over_draws
    from roadwork.predict import load_image

    base = load_params(ROOT / "params.yaml")
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="synthetic-share-"))
    examples = load_split(ROOT / "data/raw", ROOT / "data/split/splits.csv", "val_test", per_kind.KINDS, SYNTHETIC)
    y = np.array([e.label for e in examples])
    kinds = np.array([e.kind for e in examples])
    shares = per_kind.kind_shares(base.synthesize.fake_prob, base.synthesize.i2i_share)
    weights = per_kind.mix_weights(kinds, y, shares, 0.5)
    decisions, thresholds = {}, {}
    for share in (0.0, args.share):
        name = f"share_{share:g}"
        config = base.model_copy(update={"train": base.train.model_copy(update={"synthetic_share": share})})
        train(config, workdir / name, workdir / "runs" / name)
        detector, thresholds[name] = detector_for(workdir / name, base.threshold.target_prior, workdir / f"b_{name}")
        run = protocol_over_draws(
            lambda i: load_image(examples[i].path),
            y,
            lambda images, detector=detector: np.asarray(detector.batch(images)),
            base.export.protocol_seed,
            args.draws,
            n_boot=args.n_boot,
            chunk=32,
            progress=True,
        )
        decisions[name] = np.stack([run["_probs"][level] for level in run["_probs"]], axis=1) > 0.5
    reference, candidate = decisions
    mix = reward_difference(y, decisions[reference], decisions[candidate], weights=weights, n_boot=args.n_boot)
    labels, z_ref, z_cand = paired_split_logits(
        workdir / reference / "logits.csv", workdir / candidate / "logits.csv", "val_test"
    )
    real = mcc_difference(
        labels,
        z_ref > thresholds[reference],
        z_cand > thresholds[candidate],
        weights=prior_sample_weights(labels, 0.5),
        n_boot=args.n_boot,
    )
    keys = ("difference", "ci95_low", "ci95_high", "verdict")
    results = {
        "command": "python benchmarks/synthetic_share.py " + " ".join(argv or sys.argv[1:]),
        "synthetic_backend": base.synthesize.backend,
        "n_images": {k: int((kinds == k).sum()) for k in shares},
        "mix_shares": shares,
        "protocol_mix_reward": {k: mix[k] for k in keys},
        "real_val_test_mcc_prior_0.5": {k: real[k] for k in keys},
    }
    if base.synthesize.backend == "tiny":
        results["note"] = per_kind.NOT_A_MEASUREMENT
    for what in ("protocol_mix_reward", "real_val_test_mcc_prior_0.5"):
        d = results[what]
        print(
            f"{what}, share {args.share:g} minus 0: {d['difference']:+.4f} [{d['ci95_low']:+.4f}, "
            f"{d['ci95_high']:+.4f}] {d['verdict']}"
        )
    if "note" in results:
        print(results["note"])
    if args.out:
        args.out.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

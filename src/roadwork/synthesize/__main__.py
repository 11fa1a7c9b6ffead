"""``python -m roadwork.synthesize``: plan and draw the synthetic children of a split table.

    python -m roadwork.synthesize --splits data/split/splits.csv --raw data/raw --out DIR [--params FILE]
    torchrun --nproc-per-node 8 -m roadwork.synthesize ...      # each rank draws its share

``--params``: a YAML file holding the ``synthesize`` section (or a params.yaml with a
``synthesize:`` key); the defaults are the validators' values. A killed run resumes where it
stopped when started again with the same arguments. When every rank is done, rank 0 writes
``DIR/manifest.csv``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml
from pydantic import ValidationError

from roadwork.io import read_csv
from roadwork.synthesize.generate import SynthesizeError, run, source_paths
from roadwork.synthesize.plan import PlanError, plan_children
from roadwork.synthesize_params import SynthesizeParams


def read_params(path: Path | None) -> SynthesizeParams:
    if path is None:
        return SynthesizeParams()
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as error:
        raise SynthesizeError(f"{path}: cannot read the params: {error}") from None
    if not isinstance(raw, dict):
        raise SynthesizeError(f"{path}: expected a mapping of synthesize params, got {type(raw).__name__}")
    section = raw.get("synthesize", raw)
    try:
        return SynthesizeParams(**section)
    except ValidationError as error:
        problems = "; ".join(f"synthesize.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in error.errors())
        raise SynthesizeError(f"{path}: {problems}") from None


def main(argv: list[str] | None = None) -> None:
    from roadwork.log import setup as setup_logging

    setup_logging()
    parser = argparse.ArgumentParser(prog="python -m roadwork.synthesize", description=__doc__.split("\n\n")[0])
    parser.add_argument("--splits", type=Path, required=True, help="splits.csv (id, sha256, label, cluster, split)")
    parser.add_argument("--raw", type=Path, required=True, help="the folder of manifest.csv and the images")
    parser.add_argument("--out", type=Path, required=True, help="output folder (resumed when it exists)")
    parser.add_argument("--params", type=Path, help="YAML with the synthesize params (default: the validators')")
    parser.add_argument("--device", help="torch device (default: cuda:$LOCAL_RANK when CUDA is there, else cpu)")
    args = parser.parse_args(argv)
    try:
        params = read_params(args.params)
        if not args.splits.is_file():
            raise SynthesizeError(f"{args.splits} not found (the split stage's splits.csv)")
        children = plan_children(read_csv(args.splits), params)
        counts, rows = run(children, source_paths(args.raw), args.out, params, device=args.device)
        if rows is not None:
            counts["manifest_rows"] = len(rows)
    except (SynthesizeError, PlanError) as error:
        sys.exit(f"synthesize failed: {error}")
    print(json.dumps(counts, sort_keys=True))


if __name__ == "__main__":
    main()

"""synthesize: the validators' synthetic challenges (SDXL t2i and i2i from captioned, rewritten sources) per split.

Each child stays in its source's split (roadwork.synthesize.plan). Images are drawn into
runs/synthesize/<backend>/ (not a DVC output: DVC deletes outputs before a stage runs), resumable
after a kill, sharded by torchrun rank; the finished set (images + manifest.csv) is then copied into
data/synthetic/ atomically. The embedded default's tiny backend has random weights: its images are
noise and every figure computed on them is a code-path check, not a measurement.
"""

import sys
import time

from roadwork.io import read_csv
from roadwork.stages.common import RAW, RUNS, SPLITS_CSV, SYNTHETIC, SYNTHETIC_METRICS, finish, params
from roadwork.synthesize.generate import SynthesizeError, counts_by, publish, run, source_paths
from roadwork.synthesize.models import models_description
from roadwork.synthesize.plan import PlanError, plan_children

WHAT = {
    "tiny": "tiny random-weight models (the real architectures from small configs): noise images that exercise "
    "the code path; not the validators' images and not a measurement",
    "hub": "the validators' models (synthesize.*_model ids and revisions), drawn the validators' way",
}


def main() -> None:
    started = time.monotonic()
    config = params().synthesize
    work = RUNS / "synthesize" / config.backend
    try:
        children = plan_children(read_csv(SPLITS_CSV), config)
        counts, rows = run(children, source_paths(RAW), work, config)
    except (SynthesizeError, PlanError) as error:
        sys.exit(f"synthesize failed: {error}")
    if rows is None:  # not rank 0: rank 0 publishes
        return
    publish(rows, work, SYNTHETIC)
    finish(
        "synthesize",
        {
            "what_this_is": WHAT[config.backend],
            "synthetic_backend": config.backend,
            "models": models_description(config),
            "images": len(rows),
            "drawn_now": counts["drawn"],
            "reused": counts["skipped"],
            "counts": counts_by(rows),
            "seconds": round(time.monotonic() - started, 1),
        },
        started,
        SYNTHETIC_METRICS,
    )


if __name__ == "__main__":
    main()

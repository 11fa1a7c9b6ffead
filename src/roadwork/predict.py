"""Inference over an exported bundle: single view, multi-view tiles, flip TTA, and the
``roadwork predict`` command.

The bundle (``roadwork.export.bundle``) is a timm model in Hugging Face layout whose 2-class head
already holds the temperature and the tuned threshold: the "Roadwork" probability is
sigmoid((z - t) / T), so the decision is simply ``probability > 0.5``, as the validators'
``np.round`` makes it.

Preprocessing is the bundle's own: ``timm.data.create_transform`` from the ``pretrained_cfg``
in config.json, resolved exactly as transformers' ``TimmWrapperImageProcessor`` resolves it
(resize the short side to S / crop_pct with bicubic, centre crop S, normalise). So the single
view is what the miner's ``image-classification`` pipeline computes for the same image.

Multi-view: the whole image plus a g x g grid of overlapping tiles, each through the same
preprocessing, all views of a batch of images in one forward pass. The views are aggregated as
the mean of the k highest **roadwork probabilities**. Not by confidence: with confidence
ranking, tiles that are surely *not* roadwork (probability ~0, confidence ~1) outrank the one
tile that shows the cones, and the image is called negative (see
:func:`topk_by_confidence`, kept only to show the difference). Flip TTA is part of multi-view:
each view's probability averaged with that of its horizontal mirror; the single view is never
flipped. All of it is computed by the miner's detector (:class:`Predictor` wraps it), the bundle's
multi-view threshold folded in when the settings are the ones it was fitted for
(:func:`bundle_multiview_threshold`).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
import torch
from PIL import Image

from roadwork.config import PredictParams
from roadwork.data.images import IMAGE_SUFFIXES, to_rgb
from roadwork.data.walk import open_regular, walk

log = logging.getLogger(__name__)

CSV_COLUMNS = ["path", "probability", "decision", "error"]
_DEFAULTS = PredictParams()


# ------------------------------------------------------------------------------ aggregation
def topk_mean(probabilities: np.ndarray | torch.Tensor, k: int) -> np.ndarray:
    """Mean of the k highest roadwork probabilities per row of an (images, views) array (a 1-D array:
    one image). Not shared with ``roadwork.miner.detector.topk_mean``, which takes and returns a 2-D
    torch tensor (the detector needs no numpy); tests/test_miner.py checks that the two agree."""
    p = np.asarray(probabilities, dtype=np.float64)
    if p.ndim == 1:
        p = p[None, :]
    k = max(1, min(int(k), p.shape[1]))
    return -np.mean(np.sort(-p, axis=1)[:, :k], axis=1)


def topk_by_confidence(probabilities: np.ndarray, k: int) -> np.ndarray:
    """The flawed aggregation (mean probability of the k most *confident* views); for tests
    and comparison only: sure negatives outvote the one view that shows roadwork."""
    p = np.asarray(probabilities, dtype=np.float64)
    if p.ndim == 1:
        p = p[None, :]
    k = max(1, min(int(k), p.shape[1]))
    order = np.argsort(-np.maximum(p, 1 - p), axis=1, kind="stable")[:, :k]
    return np.take_along_axis(p, order, axis=1).mean(axis=1)


# ---------------------------------------------------------------------------------- images
def load_image(path: str | os.PathLike) -> Image.Image:
    """Open an image as the transformers pipeline does (``load_image``): EXIF orientation
    applied, converted to RGB. Raises on unreadable files; a FIFO, socket or device is refused
    from its ``stat`` without being opened (it could block forever)."""
    with open_regular(path) as handle, Image.open(handle) as image:
        return to_rgb(image, plain=True)


def iter_image_paths(paths: Iterable[str | os.PathLike], skipped: list[dict] | None = None) -> Iterator[Path]:
    """Files as given (whatever their suffix) and, for folders, every image file below them
    (recursively, by suffix, sorted; symlinked folders are followed once, loops are not). A path
    that does not exist is yielded too, so that it is reported as an error rather than silently
    skipped. Entries of a folder that cannot be images are listed in `skipped` as CSV rows with
    the reason (a FIFO, socket or device, a symlink loop, a dangling symlink, an unlistable
    folder), never opened; without a `skipped` list they are yielded, and reading them fails with
    the reason. Regular files without an image suffix are not images and not listed."""
    for raw in paths:
        path = Path(raw)
        if not path.is_dir():
            yield path
            continue
        found, problems = [], []
        for entry in walk([(path, "")], Path(os.path.realpath(path)), allow_outside_root=True):
            if not entry.problem:
                if entry.path.suffix.lower() in IMAGE_SUFFIXES:
                    found.append(entry.path)
            elif skipped is None:
                found.append(entry.path)
            else:
                problems.append({"path": str(entry.path), "probability": "", "decision": "", "error": entry.problem})
        yield from sorted(found)
        if skipped is not None:
            skipped += sorted(problems, key=lambda row: row["path"])


# ------------------------------------------------------------------------------- predictor
def bundle_multiview_threshold(
    bundle_dir: str | os.PathLike, grid: int, overlap: float, topk: int, flip_tta: bool
) -> float | None:
    """The multi-view threshold of the bundle's inference.json when it was fitted for exactly these
    settings (grid, overlap, top-k, flip TTA), else None."""
    from roadwork.miner.detector import read_inference_config

    fitted = (read_inference_config(bundle_dir) or {}).get("multiview") or {}
    if fitted.get("threshold") is None or [fitted.get(k) for k in ("grid", "overlap", "topk", "flip_tta")] != [
        int(grid),
        float(overlap),
        int(topk),
        bool(flip_tta),
    ]:
        return None
    return float(fitted["threshold"])


class Predictor:
    """Roadwork probabilities from an exported bundle, computed by the miner's detector
    (:class:`roadwork.miner.detector.RoadworkTimmDetector`: the one inference engine, its loader and
    its preprocessing), so that ``roadwork predict`` and the export measure what a miner answers.

    ``predict(images, multiview=False)`` takes PIL images and returns probabilities (numpy,
    float64); ``predict_paths`` reads files (errors reported per file). ``multiview_*`` and
    ``flip_tta`` are the ``predict`` section of params.yaml. Flip TTA belongs to multi-view: each
    view's probability averaged with its mirror's; the single view is the bundle's own output,
    whatever ``flip_tta`` says (its threshold, folded into the head, was tuned for exactly that).
    Multi-view returns the top-k mean with ``multiview_threshold`` folded in (> 0.5 exactly when the
    mean is above it: what the miner answers), or the raw top-k mean when it is None (what the
    export fits that threshold on).
    """

    def __init__(
        self,
        bundle_dir: str | os.PathLike,
        multiview_overlap: float = _DEFAULTS.multiview_overlap,
        multiview_topk: int = _DEFAULTS.multiview_topk,
        multiview_grid: int = _DEFAULTS.multiview_grid,
        flip_tta: bool = _DEFAULTS.flip_tta,
        *,
        multiview_threshold: float | None = None,
        device: str | torch.device | None = None,
        model: torch.nn.Module | None = None,
    ):
        from roadwork.miner.detector import RoadworkTimmDetector

        self.bundle_dir = Path(bundle_dir)
        if not 0 <= multiview_overlap < 1 or multiview_grid < 1 or multiview_topk < 1:
            raise ValueError("multiview_overlap must be in [0, 1), multiview_grid and multiview_topk >= 1")
        self.multiview_overlap = float(multiview_overlap)
        self.multiview_topk = int(multiview_topk)
        self.multiview_grid = int(multiview_grid)
        self.flip_tta = bool(flip_tta)
        self.multiview_threshold = multiview_threshold
        settings = {
            "grid": self.multiview_grid,
            "overlap": self.multiview_overlap,
            "topk": self.multiview_topk,
            "flip_tta": self.flip_tta,
            "threshold": multiview_threshold,
        }
        self.detector = RoadworkTimmDetector(
            config_name=None,
            device=str(device) if device is not None else "auto",
            model=model,
            require_threshold=False,
            bundle=str(self.bundle_dir),
            views="single",
            multiview=settings,
        )
        self.device, self.model = self.detector.device, self.detector.model
        self.data_config, self.transform = self.detector.data_config, self.detector.transform

    @classmethod
    def from_params(cls, bundle_dir, params: PredictParams, **kwargs) -> "Predictor":
        return cls(
            bundle_dir,
            params.multiview_overlap,
            params.multiview_topk,
            params.multiview_grid,
            params.flip_tta,
            **kwargs,
        )

    @property
    def views_per_image(self) -> int:
        return 1 + self.multiview_grid**2

    def views(self, image: Image.Image, multiview: bool) -> torch.Tensor:
        """(V, 3, S, S): the whole image, then (multi-view) the tiles in row-major order."""
        return self.detector.preprocess(image, multiview)

    def view_probabilities(self, views: torch.Tensor, multiview: bool = False) -> torch.Tensor:
        """Roadwork probability of each view (multi-view with flip TTA: the mean with its mirror's)."""
        return self.detector.view_probabilities(views, flip=multiview and self.flip_tta)

    def predict_views(self, views: Sequence[torch.Tensor], multiview: bool) -> np.ndarray:
        """Probabilities for pre-computed per-image view stacks (all in one forward pass)."""
        return np.asarray(self.detector.answers(list(views), multiview), dtype=np.float64)

    def predict(self, images: Sequence[Image.Image], multiview: bool = False) -> np.ndarray:
        """Roadwork probability per image; all views of all ``images`` in one forward pass."""
        return np.asarray(self.detector.batch(list(images), multiview), dtype=np.float64)

    def predict_paths(
        self,
        paths: Sequence[str | os.PathLike],
        multiview: bool = False,
        batch_size: int = 16,
        workers: int | None = None,
        progress: bool = True,
    ) -> Iterator[dict]:
        """Rows ``{path, probability, decision, error}`` in input order. Decoding and
        preprocessing run in a thread pool; an unreadable file gets an ``error`` and no score."""
        from tqdm import tqdm

        paths = [Path(p) for p in paths]
        workers = workers or min(4, os.cpu_count() or 1)

        def prepare(path: Path):
            try:
                return self.views(load_image(path), multiview), ""
            except Exception as error:  # any decoding failure is reported, never fatal
                return None, f"{type(error).__name__}: {error}".strip()

        with (
            ThreadPoolExecutor(workers) as pool,
            tqdm(total=len(paths), unit="img", disable=not progress, desc="predict", file=sys.stderr) as bar,
        ):
            # bounded read-ahead (Executor.map would decode every file up front)
            pending = [pool.submit(prepare, p) for p in paths[: 2 * batch_size]]
            submitted = len(pending)
            for start in range(0, len(paths), batch_size):
                chunk = paths[start : start + batch_size]
                results = [future.result() for future in pending[: len(chunk)]]
                pending = pending[len(chunk) :]
                ahead = paths[submitted : submitted + len(chunk)]
                pending += [pool.submit(prepare, p) for p in ahead]
                submitted += len(ahead)
                ok = [i for i, (views, _) in enumerate(results) if views is not None]
                probs = self.predict_views([results[i][0] for i in ok], multiview)
                scored = dict(zip(ok, probs))
                for i, path in enumerate(chunk):
                    if i in scored:
                        p = float(scored[i])
                        yield {"path": str(path), "probability": p, "decision": int(p > 0.5), "error": ""}
                    else:
                        yield {"path": str(path), "probability": "", "decision": "", "error": results[i][1]}
                bar.update(len(chunk))


# ------------------------------------------------------------------------------------- CLI
def build_parser(prog: str = "roadwork predict") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Roadwork probability for image files and folders (recursive), written to a CSV "
        "(path, probability, decision, error); decision = probability > 0.5 (the tuned "
        "threshold is folded into the bundle).",
    )
    parser.add_argument("paths", nargs="+", metavar="PATH", help="image files and/or folders")
    parser.add_argument("--bundle", required=True, help="exported bundle directory (e.g. data/bundle)")
    parser.add_argument("--out", default="predictions.csv", help="output CSV (default: %(default)s)")
    parser.add_argument(
        "--multiview",
        action="store_true",
        help="whole image + overlapping tiles, mean of the top-k roadwork probabilities, with the "
        "bundle's multi-view threshold folded in when it was fitted for these settings",
    )
    parser.add_argument(
        "--flip-tta", action="store_true", help="with --multiview: average each view with its horizontal mirror"
    )
    parser.add_argument("--batch-size", type=int, default=16, help="images per forward pass (default: %(default)s)")
    parser.add_argument(
        "--grid", type=int, default=_DEFAULTS.multiview_grid, help="tiles per side (default: %(default)s)"
    )
    parser.add_argument(
        "--overlap",
        type=float,
        default=_DEFAULTS.multiview_overlap,
        help="tile overlap fraction (default: %(default)s)",
    )
    parser.add_argument(
        "--topk", type=int, default=_DEFAULTS.multiview_topk, help="views averaged in multi-view (default: %(default)s)"
    )
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    parser.add_argument("--workers", type=int, default=None, help="decoding threads (default: min(4, cores))")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


# exit codes of `roadwork predict` (docs/pipeline.md, "predict")
EXIT_OK = 0  # every file scored
EXIT_NOTHING_SCORED = 1  # no image file found, or none could be read
EXIT_USAGE = 2  # bad arguments, or --bundle is not a bundle
EXIT_SOME_UNREADABLE = 3  # the readable files were scored; the others have their error in the CSV


def main(argv: Sequence[str] | None = None, prog: str = "roadwork predict") -> int:
    from roadwork.io import format_csv
    from roadwork.log import setup as setup_logging

    setup_logging()
    args = build_parser(prog).parse_args(argv)
    if args.batch_size < 1:
        print("error: --batch-size must be >= 1", file=sys.stderr)
        return EXIT_USAGE
    if not (Path(args.bundle) / "config.json").is_file():
        print(
            f"error: {args.bundle} is not a bundle directory (no config.json); build one with the export stage",
            file=sys.stderr,
        )
        return EXIT_USAGE
    if args.flip_tta and not args.multiview:
        print(
            "error: --flip-tta is part of multi-view (the single view is the bundle's own output): add --multiview",
            file=sys.stderr,
        )
        return EXIT_USAGE
    try:
        threshold = None
        if args.multiview:
            threshold = bundle_multiview_threshold(args.bundle, args.grid, args.overlap, args.topk, args.flip_tta)
            if threshold is None:
                log.warning(
                    "%s has no multi-view threshold fitted for these settings (inference.json): "
                    "the probability is the raw top-k mean and its decision at 0.5 is not a tuned one",
                    args.bundle,
                )
        predictor = Predictor(
            args.bundle,
            args.overlap,
            args.topk,
            args.grid,
            args.flip_tta,
            device=args.device,
            multiview_threshold=threshold,
        )
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    skipped: list[dict] = []  # folder entries that cannot be images (FIFOs, loops...): a row each, never opened
    paths = list(iter_image_paths(args.paths, skipped))
    if not paths and not skipped:
        print("error: no image files found under the given paths", file=sys.stderr)
        return EXIT_NOTHING_SCORED
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f".{out.name}.partial")
    n_errors = n_positive = 0
    with open(partial, "w", encoding="utf-8", newline="") as handle:
        handle.write(format_csv([], CSV_COLUMNS))
        for row in predictor.predict_paths(
            paths, args.multiview, args.batch_size, args.workers, progress=not args.quiet
        ):
            n_errors += bool(row["error"])
            n_positive += row["decision"] == 1
            handle.write(format_csv([row], CSV_COLUMNS).split("\n", 1)[1])
        handle.write(format_csv(skipped, CSV_COLUMNS).split("\n", 1)[1])
    os.replace(partial, out)
    n_errors += len(skipped)
    total = len(paths) + len(skipped)
    print(
        f"{total} file(s): {n_positive} roadwork, {total - n_positive - n_errors} not, {n_errors} unreadable -> {out}",
        file=sys.stderr,
    )
    if n_errors == total:
        print("error: no file could be scored (every one is unreadable; see the error column)", file=sys.stderr)
        return EXIT_NOTHING_SCORED
    return EXIT_SOME_UNREADABLE if n_errors else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())

"""Per-query latency of the miner's detector against the validators' 9 s deadline.

The validator waits 9 s for an answer (``natix/validator/forward.py``, ``timeout=9``) and sends one
224 x 224 JPEG per query; the miner's default device is the CPU. :func:`measure_latency` times the
detector end to end (decoded image in, probability out: preprocessing, all views in one forward
pass) at one view and at the configured multi-view setting, beside a plain timm forward of one
preprocessed image through the same model in the same run (the ratio shows the detector's own
overhead), and the budget left under 9 s.
"""

from __future__ import annotations

import io
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

VALIDATOR_TIMEOUT_S = 9.0
QUERY_SIZE = 224


def query_image(seed: int = 0, size: int = QUERY_SIZE) -> Image.Image:
    """A decoded 224 x 224 JPEG (default quality), as the validator sends a challenge."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, size=(6, 6, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(coarse).resize((size, size), Image.BICUBIC).save(buffer, format="JPEG")
    return Image.open(io.BytesIO(buffer.getvalue()))


def _median_seconds(fn, repeats: int) -> float:
    fn()  # warm-up (allocator, thread pool, lazy inits)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure_latency(
    bundle_dir: str | Path,
    *,
    grid: int,
    overlap: float,
    topk: int,
    flip_tta: bool,
    repeats: int = 3,
    threads: int | None = None,
    device: str = "cpu",
    timeout_s: float = VALIDATOR_TIMEOUT_S,
) -> dict:
    """Median seconds per query of :class:`RoadworkTimmDetector` on ``bundle_dir`` at one view and
    at the multi-view setting (1 + grid**2 views, twice that with flip TTA), with a plain timm forward
    of one image through the same model for comparison. ``threads`` sets torch's CPU threads for
    the measurement (restored afterwards). JSON-ready."""
    from roadwork.miner.detector import RoadworkTimmDetector

    previous_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(int(threads))
    try:
        image = query_image()
        multiview = {"grid": grid, "overlap": overlap, "topk": topk, "flip_tta": flip_tta, "threshold": 0.5}
        single = RoadworkTimmDetector(config_name=None, device=device, bundle=str(bundle_dir), views="single")
        multi = RoadworkTimmDetector(
            config_name=None,
            device=device,
            bundle=str(bundle_dir),
            views="multi",
            multiview=multiview,
            model=single.model,
        )  # one copy of the weights
        size = single.data_config["input_size"][-1]
        pixels = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0)).to(single.device)

        def plain_forward():
            with torch.no_grad():
                single.model(pixels)

        plain = _median_seconds(plain_forward, repeats)
        out = {
            "device": str(single.device),
            "threads": torch.get_num_threads(),
            "repeats": repeats,
            "input_size": size,
            "timeout_s": timeout_s,
            "timm_forward_1_image_s": plain,
            "views": {},
        }
        for detector in (single, multi):
            seconds = _median_seconds(lambda detector=detector: detector(image), repeats)
            out["views"][str(detector.views_per_query)] = {
                "detector_s": seconds,
                "ratio_to_timm_forward": seconds / plain,
                "budget_left_s": timeout_s - seconds,
                "multiview": detector.multiview,
            }
        out["configured_views"] = multi.views_per_query
        return out
    finally:
        torch.set_num_threads(previous_threads)


def latency_warning(
    latency: dict, budget_s: float, *, configured_views: int | None = None, setting: str = "export.latency_budget_s"
) -> str | None:
    """A warning naming the settings when the configured views take longer per query than
    ``budget_s`` on this machine (None when they fit)."""
    views = configured_views if configured_views is not None else latency["configured_views"]
    seconds = latency["views"][str(views)]["detector_s"]
    if seconds <= budget_s:
        return None
    return (
        f"warning: the detector takes {seconds:.2f} s per query at {views} views on {latency['device']} "
        f"({latency['threads']} threads) here, over {setting} = {budget_s:g} s (validators wait "
        f"{latency['timeout_s']:g} s): lower predict.multiview_grid / turn off predict.flip_tta, or set views: "
        f"single in the detector's YAML"
    )

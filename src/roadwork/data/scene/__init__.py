"""Procedural street scenes: one picture per random stream, roadwork (label 1) or not (label 0).

`render_scene(rng, width, height, label)` draws one scene and returns it with its roadwork
description. The dataset made of these scenes (seeds, planted copies, file formats) is
`roadwork.data.synthetic`.

The scene is one object (`_Scene`) assembled from what each module draws: `canvas` (random stream,
camera, ground-plane geometry, the far-to-near object list), `background` (sky, skyline, road,
markings, facades, trees, lamps), `street` (traffic signs, bins, how much street life),
`vehicles`, `people`, `roadwork` (the zone's plan and its elements) with `describe` (its
description), `decoys` (the plan as innocent look-alikes), `camera` (light, blur, grain, the
final image); `palette` holds the colours.

Design notes
- Scenes are drawn in resolution-independent units (1.0 = image height; x runs over
  [0, width/height]) with a pinhole ground-plane model: a camera at height ``hc`` metres, a
  horizon at ``yh``; an object at depth ``d`` (1.0 = bottom edge of the frame) has its base at
  ``yh + d * (1 - yh)`` and ``d * (1 - yh) / hc`` height units per metre. Objects are drawn in
  metres and sorted far to near, so nearer things occlude farther ones.
- Pixels must not depend on the machine: geometry is Python floats rounded to integer pixels
  (no libm-dependent pixel maths; the camera roll uses a rational parametrisation of cos/sin),
  Pillow only rasterises integer polygons/ellipses (no text, so no FreeType), supersampling
  uses ``Image.reduce`` (integer box filter), blur and noise are integer numpy code. Pinned
  Pillow and numpy (PCG64 streams) then give identical pixels.
- Colour alone must not decide the label. Negative scenes re-use the roadwork *plan* (how many
  elements, where, how big, which safety colours) and render each element as an innocent
  object of the same colours (an orange bin for a cone, a pedestrian in an orange or lime
  shirt for a worker, a stop sign or an orange shop sign for a road-work sign, a bench or an
  orange car for a barrier...). What is left to tell them apart is shape: cones are tapered with
  white bands, barriers striped, signs triangular/diamond with a worker pictogram, vests carry
  reflective stripes and workers hard hats.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from roadwork.data.scene.background import Background
from roadwork.data.scene.camera import Camera
from roadwork.data.scene.decoys import Decoys
from roadwork.data.scene.people import People
from roadwork.data.scene.roadwork import Roadwork
from roadwork.data.scene.street import StreetLife
from roadwork.data.scene.vehicles import Vehicles

__all__ = ["DECOY_PLAN_P", "EXTRA_DECOYS_P", "render_scene"]

# Colour distractors. A negative draws the roadwork plan as innocent look-alikes with probability
# DECOY_PLAN_P; any scene gets a few extra safety-coloured objects with EXTRA_DECOYS_P[label].
# Tuned so that the colour-histogram baseline (evaluate/baseline.py) stays far below MCC 0.6.
DECOY_PLAN_P = 0.35
EXTRA_DECOYS_P = (0.45, 0.3)


def render_scene(rng: np.random.Generator, width: int, height: int, label: int) -> tuple[Image.Image, str]:
    """One street scene as an RGB image of `width` x `height`, and its roadwork description
    (non-empty iff `label` is 1)."""
    scene = _Scene(rng, width, height)
    scene.background()
    scene.street_life()
    plan = scene.roadwork_plan(single=rng.random() < 0.15)
    description = ""
    if label:
        description = scene.draw_roadwork(plan)
    elif rng.random() < DECOY_PLAN_P:
        scene.draw_decoys(plan)
    scene.extra_decoys(rng.random() < EXTRA_DECOYS_P[label])
    image = scene.finish()
    assert bool(description) == bool(label)
    return image, description


class _Scene(Background, StreetLife, Vehicles, People, Roadwork, Decoys, Camera):
    """One scene: the canvas (`canvas.Canvas`) with what each module draws."""

"""Procedural street scenes: one picture per random stream, roadwork (label 1) or not (label 0).

`render_scene(rng, width, height, label)` draws one scene and returns it with its roadwork
description. The dataset made of these scenes (seeds, planted copies, file formats) is
`roadwork.data.synthetic`.

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

from typing import Callable, Optional

import numpy as np
from PIL import Image, ImageDraw

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


# ============================================================================== colours
Colour = tuple[int, int, int]

_SAFETY_ORANGE = ((255, 96, 0), (250, 118, 18), (236, 78, 14), (255, 140, 26), (245, 105, 40))
_HIVIS_YELLOW = ((222, 246, 0), (250, 226, 0), (200, 236, 40), (255, 200, 0))
_SAFETY_RED = ((214, 30, 26), (190, 22, 34), (230, 50, 40))
_CAR_COLOURS = (
    ((235, 235, 235), 0.20), ((20, 20, 24), 0.13), ((150, 152, 156), 0.17), ((40, 60, 130), 0.09),
    ((170, 25, 25), 0.09), ((25, 70, 40), 0.04), ((240, 110, 20), 0.06), ((245, 200, 10), 0.05),
    ((140, 110, 80), 0.04), ((90, 30, 60), 0.03), ((200, 220, 235), 0.05), ((120, 150, 60), 0.05),
)
_VEHICLE_BOX = {"car": (0.9, 1.45), "van": (1.0, 2.2), "truck": (1.25, 3.4), "bus": (1.27, 3.1)}
_SKIN = ((245, 205, 170), (225, 170, 130), (190, 130, 90), (140, 90, 60), (95, 60, 40))
_CLOTHES = (
    (30, 30, 35), (60, 70, 90), (25, 40, 90), (120, 120, 125), (230, 230, 230), (140, 30, 30),
    (90, 60, 40), (40, 90, 60), (200, 170, 130), (110, 50, 120), (70, 130, 190), (190, 60, 110),
)
_BUILDING = (
    ((200, 190, 170), 0.18), ((225, 220, 210), 0.14), ((150, 150, 150), 0.14), ((170, 80, 55), 0.14),
    ((150, 70, 45), 0.08), ((215, 180, 120), 0.08), ((110, 115, 125), 0.08), ((190, 205, 215), 0.06),
    ((230, 200, 150), 0.05), ((120, 90, 70), 0.05),
)


def _clip8(v: float) -> int:
    return 0 if v < 0 else 255 if v > 255 else int(v)


# ============================================================================== the scene
class _Scene:
    """State of one scene being drawn. Units: 1.0 = image height; metres for objects."""

    def __init__(self, rng: np.random.Generator, width: int, height: int):
        self.rng = rng
        self.width, self.height = width, height
        self.ss = 2 if max(width, height) <= 512 else 1
        self.scale = height * self.ss  # pixels per unit
        self.aspect = width / height
        self.cx, self.cy = self.aspect / 2, 0.5
        t = self.u(-0.035, 0.035) if rng.random() < 0.7 else 0.0
        self.cos, self.sin = (1 - t * t) / (1 + t * t), 2 * t / (1 + t * t)  # roll, no libm
        self.tod = self.pick(("day", "overcast", "dusk", "night"), (0.42, 0.22, 0.2, 0.16))
        self.yh = self.u(0.28, 0.62)
        self.hc = self.u(1.2, 2.8)  # camera height, metres
        self.f = self.u(0.75, 1.35)  # focal length, units
        self.vx = self.aspect * self.u(0.3, 0.7)
        self.bend = 0.0 if rng.random() < 0.55 else self.u(-0.35, 0.35) * self.aspect
        self.hw = self.u(3.0, 9.0)  # road half width, metres
        self.centre = self.u(-0.75, 0.75) * self.hw  # road centre line, metres right of camera
        self.lanes = max(1, min(5, round(2 * self.hw / 3.4)))
        self.walk = self.u(1.5, 4.0)  # sidewalk width
        self.z1 = self.f * self.hc / (1 - self.yh)  # ground distance at the bottom edge
        # (z, sequence, draw, box, protected): box = (m, left, right, height) in metres
        self.objects: list[tuple[float, int, Callable[[], None], Optional[tuple], bool]] = []
        self.protected: list[tuple[float, tuple]] = []  # roadwork elements / their decoys
        self.lights: list[Callable[[], None]] = []
        self.image: Image.Image
        self.draw: ImageDraw.ImageDraw

    # ---------------------------------------------------------------- random helpers
    def u(self, a: float, b: float) -> float:
        return float(self.rng.uniform(a, b))

    def chance(self, p: float) -> bool:
        return bool(self.rng.random() < p)

    def pick(self, options, weights=None):
        if weights is None:
            return options[int(self.rng.integers(len(options)))]
        total = float(sum(weights))
        return options[int(self.rng.choice(len(options), p=[w / total for w in weights]))]

    def jitter(self, colour: Colour, amount: int = 12) -> Colour:
        d = self.rng.integers(-amount, amount + 1, size=3)
        return (_clip8(colour[0] + int(d[0])), _clip8(colour[1] + int(d[1])), _clip8(colour[2] + int(d[2])))

    def shade(self, colour: Colour, factor: float) -> Colour:
        return (_clip8(colour[0] * factor), _clip8(colour[1] * factor), _clip8(colour[2] * factor))

    def safety_colour(self) -> Colour:
        family = self.pick((_SAFETY_ORANGE, _HIVIS_YELLOW, _SAFETY_RED), (0.58, 0.3, 0.12))
        return self.jitter(self.pick(family), 14)

    def weighted_colour(self, table) -> Colour:
        return self.jitter(self.pick([c for c, _ in table], [w for _, w in table]), 14)

    # ---------------------------------------------------------------- geometry
    def px(self, x: float, y: float) -> tuple[int, int]:
        dx, dy = x - self.cx, y - self.cy
        return (
            int(round((self.cos * dx - self.sin * dy + self.cx) * self.scale)),
            int(round((self.sin * dx + self.cos * dy + self.cy) * self.scale)),
        )

    def poly(self, points, fill: Colour) -> None:
        self.draw.polygon([self.px(x, y) for x, y in points], fill=fill)

    def ellipse(self, x: float, y: float, rx: float, ry: float, fill: Colour) -> None:
        cx, cy = self.px(x, y)
        rx_px, ry_px = max(0, int(round(rx * self.scale))), max(0, int(round(ry * self.scale)))
        self.draw.ellipse((cx - rx_px, cy - ry_px, cx + rx_px, cy + ry_px), fill=fill)

    def ppm(self, d: float) -> float:
        return d * (1 - self.yh) / self.hc

    def d_of_z(self, z: float) -> float:
        return self.z1 / z

    def ground(self, d: float, m: float) -> tuple[float, float]:
        """Image point of the ground at depth d, `m` metres right of the road centre."""
        far = max(0.0, 1.0 - d)
        curve = self.bend * far * far
        return self.vx + (self.centre + m) * self.ppm(d) + curve, self.yh + d * (1 - self.yh)

    def at(self, z: float, m: float) -> "_At":
        d = self.d_of_z(z)
        x, y = self.ground(d, m)
        return _At(self, x, y, self.ppm(d))

    def ground_quad(self, z0: float, z1: float, m0: float, m1: float, fill: Colour) -> None:
        d0, d1 = self.d_of_z(z0), self.d_of_z(z1)
        self.poly([self.ground(d0, m0), self.ground(d0, m1), self.ground(d1, m1), self.ground(d1, m0)], fill)

    def ground_strip(self, m0: float, m1: float, fill: Colour, z_near: float = 0.0, z_far: float = 0.0) -> None:
        """A band of ground between two lateral offsets, from near the camera to the horizon."""
        ds = [1.6, 1.2, 1.0, 0.8, 0.6, 0.45, 0.33, 0.24, 0.17, 0.12, 0.08, 0.05, 0.03, 0.015, 0.0]
        if z_near:
            ds = [d for d in ds if d < self.d_of_z(z_near)]
            ds.insert(0, self.d_of_z(z_near))
        if z_far:
            ds = [d for d in ds if d > self.d_of_z(z_far)] + [self.d_of_z(z_far)]
        left = [self.ground(d, m0) for d in ds]
        right = [self.ground(d, m1) for d in reversed(ds)]
        self.poly(left + right, fill)

    def add(self, z: float, draw: Callable[[], None], box: Optional[tuple] = None, protected: bool = False) -> None:
        self.objects.append((z, len(self.objects), draw, box, protected))

    def screen_box(self, z: float, box: tuple) -> tuple[float, float, float, float]:
        m, left, right, height = box
        d = self.d_of_z(z)
        x, y = self.ground(d, m)
        p = self.ppm(d)
        return x + left * p, y - height * p, x + right * p, y

    def covered(self, z_front: float, front: tuple, z_back: float, back: tuple) -> float:
        """Share of `back`'s screen box hidden by `front`'s (boxes only, roll ignored)."""
        a, b = self.screen_box(z_front, front), self.screen_box(z_back, back)
        w = min(a[2], b[2]) - max(a[0], b[0])
        h = min(a[3], b[3]) - max(a[1], b[1])
        area = (b[2] - b[0]) * (b[3] - b[1])
        return 0.0 if w <= 0 or h <= 0 or area <= 0 else w * h / area

    def visible_m(self, d: float, margin: float) -> tuple[float, float]:
        """Lateral offsets (metres) whose ground point at depth d lies inside the frame."""
        far = max(0.0, 1.0 - d)
        curve = self.bend * far * far
        p = self.ppm(d)
        lo = (margin - self.vx - curve) / p - self.centre
        hi = (self.aspect - margin - self.vx - curve) / p - self.centre
        return lo, hi

    def z_range(self, near_d: float, far_d: float) -> float:
        """A random ground distance whose depth lies in [far_d, near_d] (uniform in depth)."""
        return self.z1 / self.u(far_d, near_d)

    # ---------------------------------------------------------------- background
    def background(self) -> None:
        self._sky()
        self.draw = ImageDraw.Draw(self.image)
        self._sky_things()
        self._skyline()
        self._ground_and_road()
        self._roadside()

    def _sky(self) -> None:
        tod = self.tod
        if tod == "day":
            top = self.jitter((60, 120, 205), 25)
            horizon = self.jitter((185, 210, 235), 15)
        elif tod == "overcast":
            g = int(self.rng.integers(140, 190))
            top = self.jitter((g, g + 4, g + 10), 6)
            horizon = self.jitter((g + 35, g + 38, g + 42), 6)
        elif tod == "dusk":
            top = self.jitter((50, 50, 115), 20)
            horizon = self.jitter(self.pick(((245, 140, 70), (240, 110, 90), (235, 170, 110), (200, 120, 140))), 18)
        else:
            top = self.jitter((8, 12, 30), 6)
            horizon = self.jitter(self.pick(((40, 40, 65), (75, 50, 35), (30, 35, 50))), 10)
        gamma = self.u(0.6, 1.6)
        w, h = self.width * self.ss, self.height * self.ss
        # Position along the (rolled) vertical, quantised to 1024 steps, then a colour lookup.
        steps = 1023
        xs = ((np.arange(w, dtype=np.float64) + 0.5) / self.scale - self.cx) * (-self.sin * steps / self.yh)
        ys = ((np.arange(h, dtype=np.float64) + 0.5) / self.scale - self.cy) * (self.cos * steps / self.yh)
        level = np.rint(np.clip(ys[:, None] + (xs[None, :] + self.cy * steps / self.yh), 0, steps)).astype(np.int16)
        t = np.arange(steps + 1, dtype=np.float64) / steps
        t = t * t if gamma > 1.1 else (np.sqrt(t) if gamma < 0.8 else t)
        top_a, hor_a = np.array(top, dtype=np.float64), np.array(horizon, dtype=np.float64)
        lut = np.rint(top_a + (hor_a - top_a) * t[:, None]).astype(np.uint8)
        self.sky_horizon = horizon
        self.image = Image.fromarray(lut[level], "RGB")

    def _sky_things(self) -> None:
        tod, yh = self.tod, self.yh
        if tod == "dusk" and self.chance(0.5):
            r = self.u(0.02, 0.06)
            self.ellipse(self.aspect * self.u(0.05, 0.95), yh - self.u(0.0, 0.12), r, r,
                         self.jitter((255, 170, 60), 15))
        if tod == "day" and self.chance(0.15):
            r = self.u(0.02, 0.04)
            self.ellipse(self.aspect * self.u(0.05, 0.95), self.u(0.03, yh * 0.6), r, r, (255, 250, 225))
        if tod == "night" and self.chance(0.3):
            r = self.u(0.015, 0.03)
            self.ellipse(self.aspect * self.u(0.05, 0.95), self.u(0.03, yh * 0.6), r, r, (225, 225, 205))
        clouds = {"day": (0, 6), "overcast": (3, 10), "dusk": (0, 4), "night": (0, 2)}[tod]
        base = {"day": (245, 245, 248), "overcast": (205, 207, 212), "dusk": (200, 150, 150), "night": (40, 40, 55)}[tod]
        for _ in range(int(self.rng.integers(*clouds))):
            x, y = self.aspect * self.u(-0.1, 1.1), self.u(0.0, yh * 0.85)
            colour = self.jitter(base, 12)
            for _ in range(int(self.rng.integers(2, 5))):
                self.ellipse(x + self.u(-0.06, 0.06), y + self.u(-0.015, 0.015), self.u(0.03, 0.1),
                             self.u(0.012, 0.03), colour)

    def _skyline(self) -> None:
        yh, haze = self.yh, self.sky_horizon
        style = self.pick(("city", "trees", "hills", "open"), (0.45, 0.25, 0.15, 0.15))
        if style == "open":
            return
        if style == "hills":
            colour = self.jitter(self.pick(((90, 110, 90), (110, 120, 140), (80, 90, 70))), 15)
            colour = tuple((c * 2 + hz) // 3 for c, hz in zip(colour, haze))
            xs = [self.aspect * (k / 8) - 0.1 for k in range(10)]
            pts = [(x, yh - self.u(0.0, 0.09)) for x in xs]
            self.poly([(-0.3, yh + 0.02)] + pts + [(self.aspect + 0.3, yh + 0.02)], colour)
            return
        x = -0.2
        while x < self.aspect + 0.2:
            wdt = self.u(0.02, 0.12)
            if style == "city":
                hgt = self.u(0.01, 0.22) * (1 - yh + 0.3)
                colour = self.weighted_colour(_BUILDING)
                mix = self.u(0.2, 0.6)  # atmospheric haze
                colour = tuple(int(c * (1 - mix) + hz * mix) for c, hz in zip(colour, haze))
                self.poly([(x, yh + 0.005), (x + wdt, yh + 0.005), (x + wdt, yh - hgt), (x, yh - hgt)], colour)
            else:
                r = wdt * self.u(0.5, 0.9)
                colour = self.jitter(self.pick(((40, 80, 40), (60, 95, 50), (35, 60, 40))), 12)
                self.ellipse(x, yh - r * 0.6, r, r * self.u(0.6, 1.1), colour)
            x += wdt * self.u(0.6, 1.3)

    def _ground_and_road(self) -> None:
        ground = self.pick(((85, 120, 60), (120, 110, 80), (130, 130, 125), (150, 135, 100), (225, 228, 232)),
                           (0.35, 0.2, 0.25, 0.12, 0.08))
        self.ground_colour = ground = self.jitter(ground, 15)
        if self.tod == "night":
            ground = self.shade(ground, 0.8)
        self.poly([(-1.0, self.yh), (self.aspect + 1.0, self.yh), (self.aspect + 1.0, 2.5), (-1.0, 2.5)], ground)
        hw = self.hw
        walk_colour = self.jitter((175, 172, 165), 18)
        for side in (-1, 1):
            if self.chance(0.7):
                self.ground_strip(side * hw, side * (hw + self.walk), walk_colour)
                self.ground_strip(side * hw, side * (hw + 0.25), self.shade(walk_colour, 1.12))
        g = int(self.rng.integers(55, 125))
        asphalt = self.jitter((g, g, g + 3), 6)
        self.asphalt = asphalt
        self.ground_strip(-hw, hw, asphalt)
        if self.chance(0.2):  # a cross street
            zi = self.u(self.z1 * 2.5, 45.0)
            self.ground_quad(zi, zi + self.u(7, 12), -80, 80, asphalt)
            self.cross_z = zi
            self.ground_quad(zi - 0.6, zi - 0.2, -hw, 0, (230, 230, 230))  # stop line
        else:
            self.cross_z = 0.0
        self._markings()

    def _markings(self) -> None:
        hw, lanes = self.hw, self.lanes
        white = self.jitter((232, 232, 228), 10)
        yellow = self.jitter((235, 190, 30), 12)
        if self.chance(0.6):
            for side in (-1, 1):
                self.ground_strip(side * (hw - 0.35), side * (hw - 0.2), white)
        lane = 2 * hw / lanes
        period, dash = self.u(9.0, 15.0), self.u(3.0, 5.0)
        phase = self.u(0.0, period)
        for k in range(1, lanes):
            m = -hw + k * lane
            centre = abs(m) < 0.5 * lane and self.chance(0.3)
            colour = yellow if centre and self.chance(0.5) else white
            if centre:  # continuous (double) line
                self.ground_strip(m - 0.2, m - 0.08, colour)
                self.ground_strip(m + 0.08, m + 0.2, colour)
                continue
            z = self.z1 * 0.6 - phase
            while z < 160.0:
                if z + dash > self.z1 * 0.55:
                    self.ground_quad(max(z, self.z1 * 0.55), z + dash, m - 0.08, m + 0.08, colour)
                z += period
        if self.chance(0.25) or (self.cross_z and self.chance(0.5)):
            zc = self.cross_z - 4.5 if self.cross_z else self.u(self.z1 * 1.5, 30.0)
            m = -hw + 0.3
            while m < hw - 0.5:
                self.ground_quad(zc, zc + 3.0, m, m + 0.5, white)
                m += 1.0
            self.zebra_z = zc
        else:
            self.zebra_z = 0.0

    def _roadside(self) -> None:
        hw, walk = self.hw, self.walk
        for side in (-1, 1):
            kind = self.pick(("buildings", "trees", "none"), (0.5, 0.25, 0.25))
            if kind == "buildings":
                self._facades(side, hw + walk + self.u(0.0, 2.5))
            elif kind == "trees":
                self._tree_row(side, hw + walk * self.u(0.4, 1.6))
        if self.chance(0.5):
            self._lamps()

    def _facades(self, side: int, m: float) -> None:
        z = self.z1 * self.u(0.3, 1.0)
        far = self.u(60.0, 250.0)
        while z < far:
            length = self.u(8.0, 30.0)
            self._facade(side, m, z, z + length, self.u(5.0, 24.0))
            z += length + (self.u(1.0, 10.0) if self.chance(0.25) else 0.0)

    def _facade(self, side: int, m: float, z0: float, z1: float, height: float) -> None:
        colour = self.weighted_colour(_BUILDING)
        brick = colour[0] > colour[1] + 50
        if self.tod == "night":
            colour = self.shade(colour, 0.9)
        a0, a1 = self.at(z0, side * m), self.at(z1, side * m)
        self.poly([(a0.x, a0.y), (a1.x, a1.y), (a1.x, a1.y - height * a1.p), (a0.x, a0.y - height * a0.p)], colour)
        floors = int(height // 3.2)
        # a floor's window spacing in pixels at the near end decides how much detail is worth drawing
        if a0.p * self.scale * 1.2 < 1.0:
            return
        if brick:
            mortar = self.shade(colour, 0.78)
            step = 0.9 if a0.p * self.scale * 0.9 > 4 else 3.2
            hgt = step
            while hgt < height:
                self.poly([(a0.x, a0.y - hgt * a0.p), (a1.x, a1.y - hgt * a1.p),
                           (a1.x, a1.y - (hgt + 0.12) * a1.p), (a0.x, a0.y - (hgt + 0.12) * a0.p)], mortar)
                hgt += step
        glass = self.jitter(self.pick(((60, 70, 85), (110, 130, 150), (40, 45, 50), (150, 170, 190))), 12)
        lit = self.jitter((255, 205, 120), 15)
        spacing = self.u(2.5, 4.0)
        z = z0 + spacing * 0.5
        shop = self.chance(0.3)
        while z + 1.4 < z1:
            if self.at(z, side * m).p * self.scale * 1.4 < 1.0:
                break
            for floor in range(1 if shop else 0, floors):
                y0, y1 = floor * 3.2 + 1.0, floor * 3.2 + 2.4
                self._wall_quad(side, m, z, z + 1.4, y0, y1, glass)
                if self.tod in ("night", "dusk") and self.chance(0.35):
                    self.lights.append(self._window_light(side, m, z, y0, y1, lit))
            z += spacing
        if shop:  # ground floor: shop window and a shop sign (sometimes orange/red: a colour decoy)
            sign = self.safety_colour() if self.chance(0.4) else self.weighted_colour(_CAR_COLOURS)
            zs = z0 + self.u(0.5, 2.0)
            ze = min(z1 - 0.5, zs + self.u(4.0, 10.0))
            self._wall_quad(side, m, zs, ze, 0.2, 2.4, glass)
            self._wall_quad(side, m, zs, ze, 2.6, 3.2, sign)

    def _wall_quad(self, side, m, z0, z1, y0, y1, colour) -> None:
        a0, a1 = self.at(z0, side * m), self.at(z1, side * m)
        self.poly([(a0.x, a0.y - y0 * a0.p), (a1.x, a1.y - y0 * a1.p), (a1.x, a1.y - y1 * a1.p),
                   (a0.x, a0.y - y1 * a0.p)], colour)

    def _window_light(self, side, m, z, y0, y1, colour):
        return lambda: self._wall_quad(side, m, z, z + 1.4, y0, y1, colour)

    def _tree_row(self, side: int, m: float) -> None:
        z = self.z1 * self.u(0.6, 2.0)
        gap = self.u(7.0, 16.0)
        crown = self.pick(((45, 100, 45), (70, 120, 50), (35, 80, 45), (210, 120, 30), (200, 170, 40)),
                          (0.35, 0.25, 0.25, 0.1, 0.05))
        while z < 150.0:
            mt = side * (m + self.u(-0.3, 0.3))
            self.add(z, self._tree(z, mt, self.jitter(crown, 15)), box=(mt, -1.9, 1.9, 6.1))
            z += gap * self.u(0.8, 1.2)

    def _tree(self, z, m, crown):
        def draw():
            a = self.at(z, m)
            a.rect(-0.18, 0.0, 0.18, 3.0, (90, 65, 45))
            a.ellipse(0.0, 4.2, 1.9, 1.9, crown)
            a.ellipse(0.6, 3.6, 1.3, 1.2, self.shade(crown, 0.85))
        return draw

    def _lamps(self) -> None:
        sides = self.pick(((-1,), (1,), (-1, 1)))
        gap = self.u(22.0, 35.0)
        sodium = self.chance(0.6)
        glow = (255, 170, 60) if sodium else (240, 240, 220)
        for side in sides:
            z = self.z1 * self.u(0.8, 2.5)
            while z < 200.0:
                self.add(z, self._lamp(z, side, glow))
                z += gap

    def _lamp(self, z, side, glow):
        m = side * (self.hw + 0.6)

        def draw():
            a = self.at(z, m)
            grey = (110, 112, 115)
            a.rect(-0.08, 0.0, 0.08, 8.0, grey)
            a.poly([(0.0, 8.0), (-side * 1.6, 8.2), (-side * 1.6, 8.05), (0.0, 7.85)], grey)
            a.rect(-side * 1.9, 7.95, -side * 1.3, 8.15, (70, 70, 70))
            if self.tod in ("dusk", "night"):
                self.lights.append(lambda: a.ellipse(-side * 1.6, 7.95, 0.5, 0.25, glow))
        return draw

    # ---------------------------------------------------------------- street life (both classes)
    def street_life(self) -> None:
        for _ in range(int(self.pick((0, 1, 2, 3, 4, 5), (0.15, 0.25, 0.22, 0.18, 0.12, 0.08)))):
            self.add_vehicle(self.weighted_colour(_CAR_COLOURS))
        for _ in range(int(self.pick((0, 1, 2, 3, 4), (0.35, 0.25, 0.2, 0.12, 0.08)))):
            self.add_pedestrian(self.jitter(self.pick(_CLOTHES), 15))
        for _ in range(int(self.pick((0, 1, 2, 3), (0.4, 0.35, 0.18, 0.07)))):
            z = self.z_range(0.7, 0.08)
            side = self.pick((-1, 1), (0.3, 0.7))
            m = side * (self.hw + self.u(0.4, 1.5))
            self.add(z, self._other_sign(z, m, self.pick(
                ("speed", "no_entry", "stop", "blue_round", "parking", "give_way", "priority", "warning",
                 "street_name", "bus_stop"),
                (0.2, 0.08, 0.1, 0.12, 0.12, 0.1, 0.08, 0.07, 0.08, 0.05))), box=(m, -0.45, 0.45, 3.4))
        if self.chance(0.2):
            z = self.z_range(0.6, 0.1)
            m = self.pick((-1, 1)) * (self.hw + self.u(0.3, 1.2))
            self.add(z, self._bin(z, m, self.jitter(self.pick(((40, 90, 50), (60, 60, 65), (30, 60, 120))), 12)),
                     box=(m, -0.33, 0.33, 1.1))

    def add_vehicle(self, colour: Colour, z: float = 0.0, m: Optional[float] = None, kind: str = "",
                    protected: bool = False) -> float:
        lane = 2 * self.hw / self.lanes
        if m is None:
            k = int(self.rng.integers(self.lanes))
            m = -self.hw + (k + 0.5) * lane + self.u(-0.3, 0.3)
            if self.chance(0.2):
                m = self.pick((-1, 1)) * (self.hw - 1.1)
        if not z:
            z = self.z_range(0.8, 0.06)
        kind = kind or self.pick(("car", "car", "car", "van", "truck", "bus"), (0.3, 0.25, 0.2, 0.12, 0.08, 0.05))
        facing = "front" if (m < -0.3 and self.chance(0.6)) else "rear"
        half, height = _VEHICLE_BOX[kind]
        self.add(z, self._vehicle(z, m, colour, kind, facing), box=(m, -half, half, height), protected=protected)
        return m

    def _vehicle(self, z, m, colour, kind, facing):
        dark, glass = (25, 25, 28), self.jitter((60, 75, 90), 12)
        light_colour = (255, 60, 50) if facing == "rear" else (255, 250, 220)
        shaded = self.shade(colour, 0.8)
        night = self.tod in ("night", "dusk")

        def draw():
            a = self.at(z, m)
            if kind == "car":
                a.rect(-0.85, 0.08, -0.55, 0.4, dark)
                a.rect(0.55, 0.08, 0.85, 0.4, dark)
                a.rect(-0.9, 0.3, 0.9, 1.0, colour)
                a.poly([(-0.8, 1.0), (0.8, 1.0), (0.62, 1.45), (-0.62, 1.45)], shaded)
                a.poly([(-0.68, 1.04), (0.68, 1.04), (0.55, 1.38), (-0.55, 1.38)], glass)
                a.rect(-0.9, 0.3, 0.9, 0.44, self.shade(colour, 0.6))
                a.rect(-0.22, 0.46, 0.22, 0.6, (235, 235, 235))
                lights = ((-0.85, 0.72, -0.58, 0.88), (0.58, 0.72, 0.85, 0.88))
            elif kind == "van":
                a.rect(-0.9, 0.08, -0.6, 0.42, dark)
                a.rect(0.6, 0.08, 0.9, 0.42, dark)
                a.rect(-1.0, 0.32, 1.0, 2.2, colour)
                if facing == "front":
                    a.poly([(-0.9, 1.35), (0.9, 1.35), (0.8, 2.0), (-0.8, 2.0)], glass)
                else:
                    a.rect(-0.02, 0.45, 0.02, 2.1, shaded)
                lights = ((-0.95, 0.8, -0.7, 1.05), (0.7, 0.8, 0.95, 1.05))
            elif kind == "truck":
                a.rect(-1.0, 0.08, -0.6, 0.5, dark)
                a.rect(0.6, 0.08, 1.0, 0.5, dark)
                a.rect(-1.25, 0.45, 1.25, 3.4, colour)
                a.rect(-1.25, 0.45, 1.25, 0.7, self.shade(colour, 0.55))
                lights = ((-1.2, 0.75, -0.95, 0.95), (0.95, 0.75, 1.2, 0.95))
            else:  # bus
                a.rect(-1.0, 0.08, -0.6, 0.5, dark)
                a.rect(0.6, 0.08, 1.0, 0.5, dark)
                a.rect(-1.27, 0.3, 1.27, 3.1, colour)
                a.rect(-1.15, 1.4, 1.15, 2.7, glass)
                a.rect(-0.8, 2.8, 0.8, 3.0, (20, 20, 20))
                lights = ((-1.2, 0.6, -0.95, 0.85), (0.95, 0.6, 1.2, 0.85))
            for x0, y0, x1, y1 in lights:
                a.rect(x0, y0, x1, y1, light_colour if not night else self.shade(light_colour, 0.7))
                if night:
                    self.lights.append(self._lamp_glow(a, x0, y0, x1, y1, light_colour))
        return draw

    def _lamp_glow(self, a, x0, y0, x1, y1, colour):
        return lambda: a.rect(x0, y0, x1, y1, colour)

    def add_pedestrian(self, shirt: Colour, z: float = 0.0, m: Optional[float] = None, protected: bool = False) -> None:
        if not z:
            z = self.z_range(0.8, 0.08)
        if m is None:
            side = self.pick((-1, 1))
            m = side * (self.hw + self.u(0.3, max(0.4, self.walk - 0.3)))
            if self.zebra_z and self.chance(0.4):
                z, m = self.zebra_z + 1.5, self.u(-self.hw, self.hw)
        trousers = self.jitter(self.pick(_CLOTHES), 12)
        skin = self.pick(_SKIN)
        hair = self.pick(((30, 25, 20), (80, 55, 30), (150, 120, 70), (200, 200, 200)))
        extra = self.pick(("", "bag", "umbrella", "cap", "skirt"), (0.5, 0.15, 0.1, 0.15, 0.1))
        extra_colour = self.safety_colour() if self.chance(0.3) else self.jitter(self.pick(_CLOTHES), 15)
        height = self.u(0.85, 1.1)
        self.add(z, lambda: self._figure(self.at(z, m), height, shirt, trousers, skin, hair, extra, extra_colour,
                                         worker=None), box=(m, -0.3 * height, 0.3 * height, 1.75 * height),
                 protected=protected)

    def _figure(self, a, s, shirt, trousers, skin, hair, extra, extra_colour, worker):
        """A standing person, `s` x 1.75 m tall. `worker` = (vest, stripe, helmet, tool) or None."""
        a = _At(a.scene, a.x, a.y, a.p * s)
        if extra == "skirt":
            a.poly([(-0.2, 0.45), (0.2, 0.45), (0.16, 0.9), (-0.16, 0.9)], trousers)
            a.rect(-0.13, 0.0, -0.05, 0.5, skin)
            a.rect(0.05, 0.0, 0.13, 0.5, skin)
        else:
            a.rect(-0.16, 0.0, -0.02, 0.9, trousers)
            a.rect(0.02, 0.0, 0.16, 0.9, trousers)
        a.rect(-0.2, 0.85, 0.2, 1.48, shirt)
        sleeve = shirt if worker is None else worker[4]
        a.rect(-0.29, 0.9, -0.2, 1.45, sleeve)
        a.rect(0.2, 0.9, 0.29, 1.45, sleeve)
        a.ellipse(0.0, 1.6, 0.1, 0.12, skin)
        if worker is not None:
            vest, stripe, helmet, tool, _ = worker
            a.rect(-0.21, 0.86, 0.21, 1.47, vest)
            a.rect(-0.21, 0.98, 0.21, 1.05, stripe)
            a.rect(-0.21, 1.16, 0.21, 1.23, stripe)
            a.rect(-0.15, 1.23, -0.09, 1.47, stripe)
            a.rect(0.09, 1.23, 0.15, 1.47, stripe)
            a.poly([(-0.15, 1.66), (-0.1, 1.75), (0.1, 1.75), (0.15, 1.66)], helmet)
            a.rect(-0.17, 1.64, 0.17, 1.67, helmet)
            if tool == "shovel":
                a.poly([(0.27, 1.3), (0.31, 1.3), (0.5, 0.2), (0.46, 0.2)], (120, 90, 60))
                a.poly([(0.38, 0.22), (0.58, 0.22), (0.55, 0.0), (0.41, 0.0)], (90, 90, 95))
            elif tool == "paddle":  # STOP/SLOW paddle
                a.rect(0.3, 0.9, 0.33, 1.7, (60, 60, 60))
                a.ellipse(0.315, 1.85, 0.17, 0.17, (200, 30, 30))
            return
        a.ellipse(0.0, 1.67, 0.1, 0.06, hair)
        if extra == "bag":
            a.rect(0.22, 0.75, 0.4, 1.0, extra_colour)
        elif extra == "umbrella":
            a.rect(0.24, 1.1, 0.27, 2.0, (40, 40, 40))
            a.poly([(-0.35, 1.95), (0.85, 1.95), (0.6, 2.2), (0.25, 2.28), (-0.1, 2.2)], extra_colour)
        elif extra == "cap":
            a.rect(-0.12, 1.66, 0.12, 1.74, extra_colour)
            a.rect(0.0, 1.66, 0.2, 1.69, extra_colour)

    def _other_sign(self, z, m, kind):
        """Traffic signs that are not roadwork signs (shape and colour distractors)."""
        red, white, blue, black = (205, 30, 35), (240, 240, 240), (30, 80, 170), (20, 20, 20)
        yellow = (245, 200, 20)
        height = self.u(1.8, 2.6)
        r = self.u(0.3, 0.45)

        def draw():
            a = self.at(z, m)
            a.rect(-0.04, 0.0, 0.04, height, (130, 130, 130))
            c = height + r
            if kind == "speed":
                a.ellipse(0, c, r, r, red)
                a.ellipse(0, c, r * 0.75, r * 0.75, white)
                a.rect(-0.35 * r, c - 0.35 * r, -0.1 * r, c + 0.35 * r, black)
                a.rect(0.05 * r, c - 0.35 * r, 0.35 * r, c + 0.35 * r, black)
                a.rect(0.12 * r, c - 0.2 * r, 0.28 * r, c + 0.2 * r, white)
            elif kind == "no_entry":
                a.ellipse(0, c, r, r, red)
                a.rect(-0.7 * r, c - 0.15 * r, 0.7 * r, c + 0.15 * r, white)
            elif kind == "stop":
                k = r * 0.414
                a.poly([(-k, c + r), (k, c + r), (r, c + k), (r, c - k), (k, c - r), (-k, c - r), (-r, c - k),
                        (-r, c + k)], red)
                a.rect(-0.6 * r, c - 0.12 * r, 0.6 * r, c + 0.12 * r, white)
            elif kind == "blue_round":
                a.ellipse(0, c, r, r, blue)
                a.poly([(-0.1 * r, c - 0.6 * r), (0.1 * r, c - 0.6 * r), (0.1 * r, c + 0.2 * r), (0.35 * r, c + 0.2 * r),
                        (0.0, c + 0.65 * r), (-0.35 * r, c + 0.2 * r), (-0.1 * r, c + 0.2 * r)], white)
            elif kind == "parking":
                a.rect(-r, c - r, r, c + r, blue)
                a.rect(-0.35 * r, c - 0.6 * r, -0.1 * r, c + 0.6 * r, white)
                a.rect(-0.1 * r, c + 0.1 * r, 0.35 * r, c + 0.6 * r, white)
                a.rect(0.05 * r, c + 0.25 * r, 0.2 * r, c + 0.45 * r, blue)
            elif kind == "give_way":  # inverted triangle
                a.poly([(-r, c + 0.8 * r), (r, c + 0.8 * r), (0.0, c - 0.9 * r)], red)
                a.poly([(-0.62 * r, c + 0.58 * r), (0.62 * r, c + 0.58 * r), (0.0, c - 0.5 * r)], white)
            elif kind == "priority":  # yellow diamond with a white border
                a.poly([(0, c + r), (r, c), (0, c - r), (-r, c)], white)
                a.poly([(0, c + 0.65 * r), (0.65 * r, c), (0, c - 0.65 * r), (-0.65 * r, c)], yellow)
            elif kind == "warning":  # triangle with "!" (not a worker)
                a.poly([(-r, c - 0.8 * r), (r, c - 0.8 * r), (0.0, c + 0.9 * r)], red)
                a.poly([(-0.7 * r, c - 0.62 * r), (0.7 * r, c - 0.62 * r), (0.0, c + 0.6 * r)], white)
                a.rect(-0.07 * r, c - 0.2 * r, 0.07 * r, c + 0.35 * r, black)
                a.rect(-0.07 * r, c - 0.5 * r, 0.07 * r, c - 0.35 * r, black)
            elif kind == "street_name":
                colour = self.pick(((30, 110, 60), (30, 80, 170), (240, 240, 240)))
                a.rect(-1.6 * r, c - 0.45 * r, 1.6 * r, c + 0.45 * r, colour)
                a.rect(-1.3 * r, c - 0.1 * r, 1.3 * r, c + 0.1 * r, black if colour[0] > 200 else white)
            else:  # bus stop: yellow/green round sign
                a.ellipse(0, c, r, r, self.pick(((250, 205, 30), (40, 130, 60))))
                a.ellipse(0, c, r * 0.6, r * 0.6, white)
        return draw

    def _bin(self, z, m, colour):
        def draw():
            a = self.at(z, m)
            a.rect(-0.3, 0.0, 0.3, 1.0, colour)
            a.rect(-0.33, 1.0, 0.33, 1.1, self.shade(colour, 0.75))
            a.rect(-0.25, 0.0, -0.15, 0.08, (20, 20, 20))
        return draw

    # ---------------------------------------------------------------- roadwork
    def roadwork_plan(self, single: bool) -> list[dict]:
        """Where roadwork elements would go and what colours they would have.

        Positives draw it; negatives draw the same plan as innocent look-alikes in the same
        colours (see `draw_decoys`), so that colour statistics do not give the label away.
        The nearest element's scale (units per metre) is drawn first, skewed to small, and the zone is
        put where it is in frame.
        """
        hw, lane = self.hw, 2 * self.hw / self.lanes
        # metres -> units at the nearest element; skewed to small (u*u), products only (no pow/exp)
        u = self.u(0.0, 1.0)
        scale = 0.13 + 0.45 * u * u if not single else 0.08 + 0.28 * u * u
        near = min(0.97, scale * self.hc / (1 - self.yh))
        z0 = self.z1 / near
        lo, hi = self.visible_m(near, 0.08 * self.aspect)
        lo, hi = max(lo, -hw - 1.0), min(hi, hw + 1.0)
        if lo >= hi:  # the road is out of frame at that depth: take the middle of the frame
            lo = hi = (lo + hi) / 2
        centre = self.u(lo, hi)
        side = 1 if centre >= 0 else -1
        elements: list[dict] = []
        if single:
            kind = self.pick(("cone", "sign", "worker", "barrier", "drum"), (0.35, 0.25, 0.2, 0.12, 0.08))
            return self._keep_visible([self._element(kind, z0, centre, side)])
        length = self.u(8.0, 40.0)
        if self.chance(0.75):
            n = int(self.pick((1, 2, 3, 4, 5, 6, 8, 10), (0.1, 0.15, 0.2, 0.15, 0.15, 0.1, 0.1, 0.05)))
            kind = "drum" if self.chance(0.2) else "cone"
            taper = self.u(0.5, 1.0) * lane * self.pick((-1, 1))
            for k in range(n):
                t = k / max(1, n - 1)
                elements.append(self._element(kind, z0 + t * length * 0.7, centre + (t - 0.5) * taper, side))
        if self.chance(0.45):
            for _ in range(int(self.pick((1, 2), (0.75, 0.25)))):
                elements.append(self._element("barrier", z0 + self.u(0.0, 0.6) * length,
                                              centre + self.u(-0.6, 0.6), side))
        if self.chance(0.5):
            elements.append(self._element("sign", z0 + self.u(0.0, 0.3) * length,
                                          centre + side * self.u(0.5, 2.0), side))
        if self.chance(0.45):
            for _ in range(int(self.pick((1, 2, 3, 4), (0.45, 0.3, 0.15, 0.1)))):
                elements.append(self._element("worker", z0 + self.u(0.0, 0.8) * length,
                                              centre + self.u(-lane * 0.6, lane * 0.6), side))
        if self.chance(0.12):
            elements.append(self._element("excavator", z0 + self.u(0.2, 1.0) * length, centre, side))
        if self.chance(0.1):
            elements.append(self._element("arrow_board", z0 + length * self.u(0.5, 1.0), centre, side))
        if self.chance(0.25):
            elements.append(self._element("dig", z0 + self.u(0.1, 0.6) * length, centre, side))
        if not any(e["kind"] != "dig" for e in elements):
            elements.append(self._element("cone", z0, centre, side))
        return self._keep_visible(elements)

    def _keep_visible(self, elements: list[dict]) -> list[dict]:
        """Drop elements whose foot point falls outside the frame (keep at least the first)."""
        kept = []
        for e in elements:
            lo, hi = self.visible_m(self.d_of_z(e["z"]), 0.03 * self.aspect)
            if lo <= e["m"] <= hi:
                kept.append(e)
        if not any(e["kind"] != "dig" for e in kept):
            first = next(e for e in elements if e["kind"] != "dig")
            lo, hi = self.visible_m(self.d_of_z(first["z"]), 0.08 * self.aspect)
            first["m"] = min(max(first["m"], lo), hi)
            first["box"] = (first["m"],) + first["box"][1:]
            kept.insert(0, first)
        return kept

    def _element(self, kind: str, z: float, m: float, side: int) -> dict:
        """One planned element: its kind, place, size, (safety) colours and screen box."""
        s = self.u(0.8, 1.25)
        e = {"kind": kind, "z": z, "m": m, "side": side, "colour": self.safety_colour(),
             "white": self.jitter((238, 238, 238), 12), "size": s, "style": int(self.rng.integers(4))}
        if kind == "worker":
            e["colour"] = self.jitter(self.pick(_HIVIS_YELLOW + _SAFETY_ORANGE[:2]), 14)
            e["helmet"] = self.jitter(self.pick(((245, 245, 240), (250, 215, 0), (250, 120, 10), (40, 90, 200))), 10)
            e["sleeve"] = self.jitter(self.pick(_CLOTHES), 15) if self.chance(0.6) else e["colour"]
            e["trousers"] = self.jitter(self.pick(((30, 30, 40), (40, 50, 90), (60, 60, 60))), 10)
        if kind == "excavator":
            e["colour"] = self.jitter(self.pick(((245, 190, 0), (250, 160, 0), (240, 210, 40))), 12)
        e["width"] = self.u(1.4, 2.8) * s
        half, height = {
            "cone": (0.22 * s, 0.7 * s), "drum": (0.36 * s, 1.05 * s), "barrier": (e["width"] / 2, 1.05 * s),
            "sign": (0.6 * s, 2.4 * s), "worker": (0.3 * s, 1.75 * s), "excavator": (1.6 * s, 3.5 * s),
            "arrow_board": (1.1, 2.7), "dig": (2.0 * s, 0.1),
        }[kind]
        e["box"] = (m, -half, half if kind != "excavator" else 3.5 * s, height)
        return e

    def draw_roadwork(self, plan: list[dict]) -> str:
        counts: dict[str, int] = {}
        for e in plan:
            counts[e["kind"]] = counts.get(e["kind"], 0) + 1
            if e["kind"] == "dig":
                self._dig(e)
            else:
                self.add(e["z"], self._roadwork_element(e), box=e["box"], protected=True)
                self.protected.append((e["z"], e["box"]))
        occluded = False
        targets = [e for e in plan if e["kind"] != "dig"]
        if self.chance(0.3):  # a vehicle in front hides part (not all) of one element
            target = targets[int(self.rng.integers(len(targets)))]
            z = max(self.z1 * 1.02, target["z"] - self.u(2.0, 8.0))
            kind = self.pick(("car", "car", "van"))
            half, height = _VEHICLE_BOX[kind]
            for _ in range(6):
                m = target["m"] + self.pick((-1, 1)) * self.u(0.3, 2.0) * half
                box = (m, -half, half, height)
                hidden = self.covered(z, box, target["z"], target["box"])
                if 0.15 <= hidden <= 0.6:
                    self.add_vehicle(self.weighted_colour(_CAR_COLOURS), z=z, m=m, kind=kind, protected=True)
                    occluded = True
                    break
        return _describe(counts, occluded, len(plan) == 1)

    def _dig(self, e: dict) -> None:
        z, m = e["z"], e["m"]
        earth = self.jitter(self.pick(((110, 80, 50), (90, 70, 55), (40, 38, 36))), 10)
        pts = []
        for k in range(7):
            dz, dm = self.u(-2.5, 2.5) * e["size"], self.u(-1.0, 1.0) * e["size"]
            pts.append(self.ground(self.d_of_z(max(self.z1 * 0.9, z + dz)), m + dm))
        pts.sort(key=lambda p: (p[0], p[1]))
        self.poly(_convexish(pts), earth)

    def _roadwork_element(self, e: dict):
        kind, z, m, s = e["kind"], e["z"], e["m"], e["size"]
        colour, white = e["colour"], e["white"]
        black = (22, 22, 22)

        def draw():
            a = self.at(z, m)
            if kind == "cone":
                h = 0.7 * s
                a.rect(-0.22 * s, 0.0, 0.22 * s, 0.05 * s, black if e["style"] else colour)
                a.poly([(-0.17 * s, 0.05 * s), (0.17 * s, 0.05 * s), (0.035 * s, h), (-0.035 * s, h)], colour)
                bands = ((0.45, 0.62),) if e["style"] % 2 else ((0.28, 0.4), (0.55, 0.68))
                for b0, b1 in bands:
                    w0, w1 = 0.17 - 0.135 * b0, 0.17 - 0.135 * b1
                    a.poly([(-w0 * s, b0 * h), (w0 * s, b0 * h), (w1 * s, b1 * h), (-w1 * s, b1 * h)], white)
            elif kind == "drum":
                a.rect(-0.36 * s, 0.0, 0.36 * s, 0.07 * s, black)
                a.rect(-0.3 * s, 0.07 * s, 0.3 * s, 1.0 * s, colour)
                a.ellipse(0.0, 1.0 * s, 0.3 * s, 0.05 * s, colour)
                for b0 in (0.3, 0.62):
                    a.rect(-0.3 * s, b0 * s, 0.3 * s, (b0 + 0.14) * s, white)
            elif kind == "barrier":
                self._barrier(a, e)
            elif kind == "sign":
                self._roadwork_sign(a, e)
            elif kind == "worker":
                tool = self.pick(("", "shovel", "paddle"), (0.5, 0.35, 0.15))
                stripe = self.jitter((215, 215, 210), 15)
                self._figure(a, s * 0.95, e["colour"], e["trousers"], self.pick(_SKIN), (30, 25, 20), "", (0, 0, 0),
                             worker=(e["colour"], stripe, e["helmet"], tool, e["sleeve"]))
            elif kind == "excavator":
                self._excavator(a, e)
            elif kind == "arrow_board":
                a.rect(-0.05, 0.0, 0.05, 1.5, (80, 80, 80))
                a.rect(-1.1, 1.5, 1.1, 2.7, black)
                lamp = (255, 190, 40)
                for k in range(5):
                    a.ellipse(-0.8 + k * 0.32, 2.1, 0.09, 0.09, lamp)
                a.ellipse(0.5, 2.4, 0.09, 0.09, lamp)
                a.ellipse(0.5, 1.8, 0.09, 0.09, lamp)
        return draw

    def _barrier(self, a: "_At", e: dict) -> None:
        s, colour, white = e["size"], e["colour"], e["white"]
        width = e["width"]
        style = e["style"]
        legs = (60, 60, 60) if style % 2 else white
        for x in (-width * 0.42, width * 0.42):
            a.poly([(x - 0.2 * s, 0.0), (x - 0.12 * s, 0.0), (x + 0.04 * s, 1.05 * s), (x - 0.04 * s, 1.05 * s)], legs)
            a.poly([(x + 0.12 * s, 0.0), (x + 0.2 * s, 0.0), (x + 0.04 * s, 1.05 * s), (x - 0.04 * s, 1.05 * s)], legs)
        boards = ((0.75, 1.05),) if style < 2 else ((0.35, 0.6), (0.78, 1.03))
        for y0, y1 in boards:
            x0, x1 = -width / 2, width / 2
            y0, y1 = y0 * s, y1 * s
            a.rect(x0, y0, x1, y1, white)
            step = (y1 - y0) * 1.4
            lean = (y1 - y0) * (1 if style % 2 else -1)
            x = x0 - abs(lean)
            while x < x1:
                quad = [(x, y0), (x + step * 0.5, y0), (x + step * 0.5 + lean, y1), (x + lean, y1)]
                clipped = _clip_box(quad, x0, y0, x1, y1)
                if len(clipped) >= 3:
                    a.poly(clipped, colour)
                x += step

    def _roadwork_sign(self, a: "_At", e: dict) -> None:
        s, colour, white = e["size"], e["colour"], e["white"]
        black = (20, 20, 20)
        style = e["style"]
        r = 0.5 * s
        post = 1.3 * s
        if style == 3:  # on a tripod stand
            post = 0.8 * s
            a.poly([(-0.45 * s, 0), (-0.38 * s, 0), (0.02, post), (-0.02, post)], (70, 70, 70))
            a.poly([(0.38 * s, 0), (0.45 * s, 0), (0.02, post), (-0.02, post)], (70, 70, 70))
        else:
            a.rect(-0.04, 0.0, 0.04, post, (130, 130, 130))
        c = post + r
        if style in (0, 3):  # red-bordered triangle with a worker pictogram
            a.poly([(-r, c - 0.75 * r), (r, c - 0.75 * r), (0.0, c + r)], (210, 30, 30))
            inner = white if colour[1] < 180 or self.chance(0.5) else (250, 215, 20)
            a.poly([(-0.72 * r, c - 0.58 * r), (0.72 * r, c - 0.58 * r), (0.0, c + 0.62 * r)], inner)
            _pictogram(a, 0.0, c - 0.12 * r, 0.45 * r, black)
        elif style == 1:  # safety-coloured diamond with a worker pictogram
            a.poly([(0, c + r), (r, c), (0, c - r), (-r, c)], black)
            a.poly([(0, c + 0.9 * r), (0.9 * r, c), (0, c - 0.9 * r), (-0.9 * r, c)], colour)
            _pictogram(a, 0.0, c, 0.5 * r, black)
        else:  # rectangular "ROAD WORK AHEAD" board: text as bars
            a.rect(-1.2 * r, c - 0.8 * r, 1.2 * r, c + 0.8 * r, colour)
            for row, n in ((0.35, 3), (-0.05, 2), (-0.45, 3)):
                x = -0.95 * r
                for k in range(n):
                    wdt = (0.45 + 0.2 * ((k + n) % 2)) * r
                    a.rect(x, c + (row - 0.12) * r, x + wdt, c + (row + 0.12) * r, black)
                    x += wdt + 0.15 * r

    def _excavator(self, a: "_At", e: dict) -> None:
        s, colour = e["size"], e["colour"]
        dark = (35, 35, 35)
        a.rect(-1.6 * s, 0.0, 1.6 * s, 0.7 * s, dark)  # tracks
        a.rect(-1.3 * s, 0.7 * s, 1.1 * s, 1.7 * s, colour)  # body
        a.rect(-1.2 * s, 1.7 * s, -0.1 * s, 3.0 * s, colour)  # cab
        a.rect(-1.05 * s, 1.95 * s, -0.25 * s, 2.8 * s, (70, 90, 110))
        a.poly([(0.8 * s, 1.4 * s), (1.1 * s, 1.6 * s), (2.6 * s, 3.3 * s), (2.4 * s, 3.5 * s)], colour)  # boom
        a.poly([(2.4 * s, 3.5 * s), (2.6 * s, 3.3 * s), (3.2 * s, 1.2 * s), (3.0 * s, 1.1 * s)], colour)  # stick
        a.poly([(2.8 * s, 1.2 * s), (3.5 * s, 1.2 * s), (3.3 * s, 0.4 * s), (2.9 * s, 0.6 * s)], dark)  # bucket

    # ---------------------------------------------------------------- decoys (negatives)
    def draw_decoys(self, plan: list[dict]) -> None:
        """The roadwork plan rendered as innocent objects in the same colours and places."""
        for e in plan:
            kind, z, m, colour = e["kind"], e["z"], e["m"], e["colour"]
            if kind != "dig":
                self.protected.append((z, e["box"]))
            if kind in ("cone", "drum"):
                what = self.pick(("bin", "hydrant", "box", "child"), (0.35, 0.25, 0.2, 0.2))
                lo, hi = self.visible_m(self.d_of_z(z), 0.03 * self.aspect)
                kerb = e["side"] * (self.hw + self.u(0.3, 1.0))
                if abs(m) < self.hw and what != "child" and lo <= kerb <= hi:
                    m = kerb  # bins and hydrants stand on the sidewalk, not in the lane
                self.add(z, self._small_decoy(z, m, colour, e["white"], what, e["size"]), box=(m,) + e["box"][1:],
                         protected=True)
            elif kind == "worker":
                self.add_pedestrian(colour, z=z, m=m, protected=True)
            elif kind == "barrier":
                if self.chance(0.5):
                    self.add_vehicle(colour, z=z, m=m, kind=self.pick(("car", "van")), protected=True)
                else:
                    self.add(z, self._bench(z, m, colour, e["white"]), box=e["box"], protected=True)
            elif kind == "sign":
                if self.chance(0.5):
                    self.add(z, self._shop_sign(z, m, colour, e["white"]), box=e["box"], protected=True)
                else:
                    self.add(z, self._other_sign(z, m, self.pick(("stop", "speed", "no_entry", "priority"))),
                             box=e["box"], protected=True)
            elif kind == "excavator":
                self.add_vehicle(colour, z=z, m=m, kind=self.pick(("bus", "truck", "van")), protected=True)
            elif kind == "arrow_board":
                self.add(z, self._shop_sign(z, m, (25, 25, 25), (255, 190, 40)), box=e["box"], protected=True)
            elif kind == "dig":
                self._dig(e)  # a dark asphalt repair / a patch of dirt, no roadwork around it

    def extra_decoys(self, on: bool) -> None:
        """More safety-coloured innocent things (in both classes, more often in negatives)."""
        if not on:
            return
        for _ in range(int(self.pick((1, 2, 3), (0.5, 0.3, 0.2)))):
            what = self.pick(("vehicle", "pedestrian", "bin"), (0.4, 0.4, 0.2))
            if what == "vehicle":
                self.add_vehicle(self.safety_colour())
            elif what == "pedestrian":
                self.add_pedestrian(self.safety_colour())
            else:
                z = self.z_range(0.7, 0.15)
                m = self.pick((-1, 1)) * (self.hw + self.u(0.3, 1.2))
                self.add(z, self._bin(z, m, self.safety_colour()), box=(m, -0.33, 0.33, 1.1))

    def _small_decoy(self, z, m, colour, white, what, s):
        def draw():
            a = self.at(z, m)
            if what == "bin":
                a.rect(-0.28 * s, 0.0, 0.28 * s, 0.9 * s, colour)
                a.rect(-0.31 * s, 0.9 * s, 0.31 * s, 1.0 * s, self.shade(colour, 0.7))
                a.rect(-0.15 * s, 0.55 * s, 0.15 * s, 0.7 * s, white)  # a label
            elif what == "hydrant":
                a.rect(-0.12 * s, 0.0, 0.12 * s, 0.6 * s, colour)
                a.ellipse(0.0, 0.6 * s, 0.12 * s, 0.1 * s, colour)
                a.rect(-0.2 * s, 0.35 * s, 0.2 * s, 0.45 * s, colour)
                a.rect(-0.16 * s, 0.0, 0.16 * s, 0.05 * s, white)
            elif what == "box":  # a parcel/post box
                a.rect(-0.3 * s, 0.0, 0.3 * s, 0.55 * s, colour)
                a.rect(-0.3 * s, 0.55 * s, 0.3 * s, 0.62 * s, white)
            else:  # a child in a bright jacket
                skin = self.pick(_SKIN)
                a.rect(-0.1 * s, 0.0, 0.1 * s, 0.45 * s, (40, 50, 90))
                a.rect(-0.14 * s, 0.45 * s, 0.14 * s, 0.85 * s, colour)
                a.ellipse(0.0, 0.95 * s, 0.08 * s, 0.09 * s, skin)
        return draw

    def _bench(self, z, m, colour, white):
        def draw():
            a = self.at(z, m)
            a.rect(-0.8, 0.0, -0.7, 0.45, (60, 60, 60))
            a.rect(0.7, 0.0, 0.8, 0.45, (60, 60, 60))
            a.rect(-0.9, 0.4, 0.9, 0.5, colour)
            a.rect(-0.9, 0.6, 0.9, 0.7, colour)
            a.rect(-0.9, 0.78, 0.9, 0.88, colour)
        return draw

    def _shop_sign(self, z, m, colour, white):
        def draw():
            a = self.at(z, m)
            a.rect(-0.05, 0.0, 0.05, 2.0, (120, 120, 120))
            a.rect(-0.6, 2.0, 0.6, 2.8, colour)
            a.ellipse(0.0, 2.4, 0.22, 0.22, white)
        return draw

    # ---------------------------------------------------------------- finishing
    def finish(self) -> Image.Image:
        for z, _, draw, box, protected in sorted(self.objects, key=lambda item: (-item[0], item[1])):
            if not protected and box is not None and any(
                z < z_back and self.covered(z, box, z_back, back) > 0.5 for z_back, back in self.protected
            ):
                continue  # would hide most of a roadwork element (or of its decoy)
            draw()
        # Global light: a per-channel gain (time of day, exposure, white balance) as a lookup table.
        gain = {"day": (256, 256, 256), "overcast": (225, 228, 235), "dusk": (210, 175, 160),
                "night": (105, 100, 115)}[self.tod]
        scale = self.u(0.85, 1.12)
        tint = [int(g * scale * self.u(0.94, 1.06)) for g in gain]
        self.image = self.image.point([min(255, (v * t) >> 8) for t in tint for v in range(256)])
        self.draw = ImageDraw.Draw(self.image)
        for light in self.lights:
            light()
        image = self.image.reduce(self.ss) if self.ss > 1 else self.image
        pixels = np.asarray(image, dtype=np.int16)
        blur = self.pick(("none", "soft", "motion"), (0.5, 0.35, 0.15))
        if blur == "soft":
            pixels = _blur(_blur(pixels, 0), 1)
        elif blur == "motion":
            pixels = _blur(pixels, 1, long=True)
        noise = int(self.pick((0, 2, 4, 6, 9), (0.2, 0.3, 0.25, 0.15, 0.1)))
        if self.tod == "night":
            noise += 3
        if noise:
            shape = pixels.shape if self.chance(0.5) else pixels.shape[:2] + (1,)
            grain = self.rng.integers(-noise, noise + 1, size=shape, dtype=np.int16)
            grain += self.rng.integers(-noise, noise + 1, size=shape, dtype=np.int16)
            grain //= 2
            pixels = pixels + grain
        return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")


class _At:
    """An anchor on the ground with its metres-to-units scale; y in metres points up."""

    __slots__ = ("scene", "x", "y", "p")

    def __init__(self, scene: _Scene, x: float, y: float, p: float):
        self.scene, self.x, self.y, self.p = scene, x, y, p

    def pt(self, mx: float, my: float) -> tuple[float, float]:
        return self.x + mx * self.p, self.y - my * self.p

    def poly(self, points, fill: Colour) -> None:
        self.scene.poly([(self.x + mx * self.p, self.y - my * self.p) for mx, my in points], fill)

    def rect(self, x0: float, y0: float, x1: float, y1: float, fill: Colour) -> None:
        self.poly([(x0, y0), (x1, y0), (x1, y1), (x0, y1)], fill)

    def ellipse(self, cx: float, cy: float, rx: float, ry: float, fill: Colour) -> None:
        self.scene.ellipse(self.x + cx * self.p, self.y - cy * self.p, rx * self.p, ry * self.p, fill)


# ============================================================================== helpers
def _pictogram(a: _At, cx: float, cy: float, k: float, colour: Colour) -> None:
    """The 'men at work' pictogram: a digging figure and a pile, inside a box of half-size k."""
    a.ellipse(cx - 0.25 * k, cy + 0.55 * k, 0.13 * k, 0.13 * k, colour)  # head
    a.poly([(cx - 0.38 * k, cy + 0.4 * k), (cx - 0.18 * k, cy + 0.42 * k), (cx + 0.05 * k, cy - 0.15 * k),
            (cx - 0.15 * k, cy - 0.2 * k)], colour)  # leaning body
    a.poly([(cx - 0.15 * k, cy - 0.2 * k), (cx + 0.02 * k, cy - 0.15 * k), (cx - 0.05 * k, cy - 0.75 * k),
            (cx - 0.2 * k, cy - 0.75 * k)], colour)  # leg
    a.poly([(cx + 0.02 * k, cy - 0.1 * k), (cx + 0.3 * k, cy - 0.7 * k), (cx + 0.42 * k, cy - 0.75 * k),
            (cx + 0.1 * k, cy - 0.05 * k)], colour)  # leg
    a.poly([(cx - 0.3 * k, cy + 0.2 * k), (cx + 0.45 * k, cy - 0.35 * k), (cx + 0.5 * k, cy - 0.28 * k),
            (cx - 0.25 * k, cy + 0.27 * k)], colour)  # shovel handle
    a.poly([(cx + 0.35 * k, cy - 0.75 * k), (cx + 0.9 * k, cy - 0.75 * k), (cx + 0.65 * k, cy - 0.4 * k)], colour)  # pile


def _clip_box(points, x0: float, y0: float, x1: float, y1: float):
    """Sutherland-Hodgman clipping of a polygon to an axis-aligned box."""

    def clip(pts, inside, cut):
        out = []
        for k, cur in enumerate(pts):
            prev = pts[k - 1]
            if inside(cur):
                if not inside(prev):
                    out.append(cut(prev, cur))
                out.append(cur)
            elif inside(prev):
                out.append(cut(prev, cur))
        return out

    def at_x(x):
        return lambda p, q: (x, p[1] + (q[1] - p[1]) * (x - p[0]) / (q[0] - p[0]))

    def at_y(y):
        return lambda p, q: (p[0] + (q[0] - p[0]) * (y - p[1]) / (q[1] - p[1]), y)

    pts = list(points)
    for inside, cut in ((lambda p: p[0] >= x0, at_x(x0)), (lambda p: p[0] <= x1, at_x(x1)),
                        (lambda p: p[1] >= y0, at_y(y0)), (lambda p: p[1] <= y1, at_y(y1))):
        pts = clip(pts, inside, cut)
        if not pts:
            break
    return pts


def _convexish(points):
    """Order points around their centroid (a star-shaped outline, no libm: pseudo-angle)."""
    cx = sum(p[0] for p in points) / len(points)
    cy = sum(p[1] for p in points) / len(points)

    def pseudo_angle(p):
        dx, dy = p[0] - cx, p[1] - cy
        r = abs(dx) + abs(dy)
        if r == 0:
            return 0.0
        t = dy / r
        return (1 - t) if dx >= 0 else (3 + t)

    return sorted(points, key=pseudo_angle)


def _blur(pixels: np.ndarray, axis: int, long: bool = False) -> np.ndarray:
    """Integer [1, 2, 1]/4 (or [1, 1, 1, 1]/4 when `long`) blur along axis 0 or 1, edges repeated.
    `pixels` is int16 (values 0..255), so sums cannot overflow."""
    p = np.moveaxis(pixels, axis, 0)
    n = p.shape[0]
    if long:
        q = np.concatenate([p[:1], p[:1], p, p[-1:]])
        out = q[0:n] + q[1 : n + 1]
        out += q[2 : n + 2]
        out += q[3 : n + 3]
    else:
        q = np.concatenate([p[:1], p, p[-1:]])
        out = q[1 : n + 1] * 2
        out += q[0:n]
        out += q[2 : n + 2]
    out += 2
    out //= 4
    return np.moveaxis(out, 0, axis)


_NUMBER_WORDS = {1: "a", 2: "two", 3: "three", 4: "four", 5: "five", 6: "six", 7: "seven", 8: "eight", 9: "nine",
                 10: "ten"}
_NOUNS = {
    "cone": ("traffic cone", "traffic cones"),
    "drum": ("traffic drum", "traffic drums"),
    "barrier": ("striped barrier", "striped barriers"),
    "sign": ("road work warning sign", "road work warning signs"),
    "worker": ("worker in a high-visibility vest and hard hat", "workers in high-visibility vests and hard hats"),
    "excavator": ("excavator", "excavators"),
    "arrow_board": ("flashing arrow board", "flashing arrow boards"),
    "dig": ("dug-up patch of road", "dug-up patches of road"),
}
_ORDER = ("cone", "drum", "barrier", "sign", "worker", "excavator", "arrow_board", "dig")


def _describe(counts: dict[str, int], occluded: bool, single: bool) -> str:
    parts = []
    for kind in _ORDER:
        n = counts.get(kind, 0)
        if n:
            noun = _NOUNS[kind][0 if n == 1 else 1]
            word = _NUMBER_WORDS.get(n, str(n))
            if n == 1 and noun[0] in "aeiou":
                word = "an"
            parts.append(f"{word} {noun}")
    text = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    head = "Road work: a single element, " if single else "Road work zone with "
    sentence = head + text
    if occluded:
        sentence += ", partly hidden behind a vehicle"
    return sentence + "."

"""The drawing surface of one scene: its random stream, camera and ground-plane geometry, and the
list of objects to draw far to near (`Canvas`); `At`, an anchor on the ground in metres."""

from __future__ import annotations

from typing import Callable, Optional

import numpy as np
from PIL import Image, ImageDraw

from roadwork.data.scene.palette import HIVIS_YELLOW, SAFETY_ORANGE, SAFETY_RED, Colour, clip8


class Canvas:
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
        return (clip8(colour[0] + int(d[0])), clip8(colour[1] + int(d[1])), clip8(colour[2] + int(d[2])))

    def shade(self, colour: Colour, factor: float) -> Colour:
        return (clip8(colour[0] * factor), clip8(colour[1] * factor), clip8(colour[2] * factor))

    def safety_colour(self) -> Colour:
        family = self.pick((SAFETY_ORANGE, HIVIS_YELLOW, SAFETY_RED), (0.58, 0.3, 0.12))
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

    def at(self, z: float, m: float) -> "At":
        d = self.d_of_z(z)
        x, y = self.ground(d, m)
        return At(self, x, y, self.ppm(d))

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


class At:
    """An anchor on the ground with its metres-to-units scale; y in metres points up."""

    __slots__ = ("scene", "x", "y", "p")

    def __init__(self, scene: Canvas, x: float, y: float, p: float):
        self.scene, self.x, self.y, self.p = scene, x, y, p

    def pt(self, mx: float, my: float) -> tuple[float, float]:
        return self.x + mx * self.p, self.y - my * self.p

    def poly(self, points, fill: Colour) -> None:
        self.scene.poly([(self.x + mx * self.p, self.y - my * self.p) for mx, my in points], fill)

    def rect(self, x0: float, y0: float, x1: float, y1: float, fill: Colour) -> None:
        self.poly([(x0, y0), (x1, y0), (x1, y1), (x0, y1)], fill)

    def ellipse(self, cx: float, cy: float, rx: float, ry: float, fill: Colour) -> None:
        self.scene.ellipse(self.x + cx * self.p, self.y - cy * self.p, rx * self.p, ry * self.p, fill)

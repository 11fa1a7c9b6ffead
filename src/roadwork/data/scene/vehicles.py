"""Vehicles: cars, vans, trucks and buses seen from the front or the rear, lit at night."""

from __future__ import annotations

from typing import Optional

from roadwork.data.scene.canvas import Canvas
from roadwork.data.scene.palette import VEHICLE_BOX, Colour


class Vehicles(Canvas):
    """Places and draws vehicles."""

    def add_vehicle(
        self, colour: Colour, z: float = 0.0, m: Optional[float] = None, kind: str = "", protected: bool = False
    ) -> float:
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
        half, height = VEHICLE_BOX[kind]
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

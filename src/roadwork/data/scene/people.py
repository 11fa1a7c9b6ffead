"""People: pedestrians, and the standing figure that workers share with them."""

from __future__ import annotations

from typing import Optional

from roadwork.data.scene.canvas import At, Canvas
from roadwork.data.scene.palette import CLOTHES, SKIN, Colour


class People(Canvas):
    """Places and draws people."""

    def add_pedestrian(self, shirt: Colour, z: float = 0.0, m: Optional[float] = None, protected: bool = False) -> None:
        if not z:
            z = self.z_range(0.8, 0.08)
        if m is None:
            side = self.pick((-1, 1))
            m = side * (self.hw + self.u(0.3, max(0.4, self.walk - 0.3)))
            if self.zebra_z and self.chance(0.4):
                z, m = self.zebra_z + 1.5, self.u(-self.hw, self.hw)
        trousers = self.jitter(self.pick(CLOTHES), 12)
        skin = self.pick(SKIN)
        hair = self.pick(((30, 25, 20), (80, 55, 30), (150, 120, 70), (200, 200, 200)))
        extra = self.pick(("", "bag", "umbrella", "cap", "skirt"), (0.5, 0.15, 0.1, 0.15, 0.1))
        extra_colour = self.safety_colour() if self.chance(0.3) else self.jitter(self.pick(CLOTHES), 15)
        height = self.u(0.85, 1.1)
        self.add(
            z,
            lambda: self._figure(self.at(z, m), height, shirt, trousers, skin, hair, extra, extra_colour, worker=None),
            box=(m, -0.3 * height, 0.3 * height, 1.75 * height),
            protected=protected,
        )

    def _figure(self, a, s, shirt, trousers, skin, hair, extra, extra_colour, worker):
        """A standing person, `s` x 1.75 m tall. `worker` = (vest, stripe, helmet, tool) or None."""
        a = At(a.scene, a.x, a.y, a.p * s)
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

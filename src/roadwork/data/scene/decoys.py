"""Colour decoys: the roadwork plan drawn as innocent look-alikes in the same colours (negatives), and
extra safety-coloured objects (both classes)."""

from __future__ import annotations

from roadwork.data.scene.canvas import Canvas
from roadwork.data.scene.palette import SKIN


class Decoys(Canvas):
    """Innocent objects in safety colours."""

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
                self.add(
                    z,
                    self._small_decoy(z, m, colour, e["white"], what, e["size"]),
                    box=(m,) + e["box"][1:],
                    protected=True,
                )
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
                    self.add(
                        z,
                        self._other_sign(z, m, self.pick(("stop", "speed", "no_entry", "priority"))),
                        box=e["box"],
                        protected=True,
                    )
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
                skin = self.pick(SKIN)
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

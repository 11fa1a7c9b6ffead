"""Street life in both classes: how many vehicles and pedestrians, traffic signs that are not roadwork
signs (shape and colour distractors), litter bins."""

from __future__ import annotations

from roadwork.data.scene.canvas import Canvas
from roadwork.data.scene.palette import CAR_COLOURS, CLOTHES


class StreetLife(Canvas):
    """The ordinary street: traffic, passers-by, signs and bins."""

    def street_life(self) -> None:
        for _ in range(int(self.pick((0, 1, 2, 3, 4, 5), (0.15, 0.25, 0.22, 0.18, 0.12, 0.08)))):
            self.add_vehicle(self.weighted_colour(CAR_COLOURS))
        for _ in range(int(self.pick((0, 1, 2, 3, 4), (0.35, 0.25, 0.2, 0.12, 0.08)))):
            self.add_pedestrian(self.jitter(self.pick(CLOTHES), 15))
        for _ in range(int(self.pick((0, 1, 2, 3), (0.4, 0.35, 0.18, 0.07)))):
            z = self.z_range(0.7, 0.08)
            side = self.pick((-1, 1), (0.3, 0.7))
            m = side * (self.hw + self.u(0.4, 1.5))
            self.add(
                z,
                self._other_sign(
                    z,
                    m,
                    self.pick(
                        (
                            "speed",
                            "no_entry",
                            "stop",
                            "blue_round",
                            "parking",
                            "give_way",
                            "priority",
                            "warning",
                            "street_name",
                            "bus_stop",
                        ),
                        (0.2, 0.08, 0.1, 0.12, 0.12, 0.1, 0.08, 0.07, 0.08, 0.05),
                    ),
                ),
                box=(m, -0.45, 0.45, 3.4),
            )
        if self.chance(0.2):
            z = self.z_range(0.6, 0.1)
            m = self.pick((-1, 1)) * (self.hw + self.u(0.3, 1.2))
            self.add(
                z,
                self._bin(z, m, self.jitter(self.pick(((40, 90, 50), (60, 60, 65), (30, 60, 120))), 12)),
                box=(m, -0.33, 0.33, 1.1),
            )

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
                a.poly(
                    [
                        (-k, c + r),
                        (k, c + r),
                        (r, c + k),
                        (r, c - k),
                        (k, c - r),
                        (-k, c - r),
                        (-r, c - k),
                        (-r, c + k),
                    ],
                    red,
                )
                a.rect(-0.6 * r, c - 0.12 * r, 0.6 * r, c + 0.12 * r, white)
            elif kind == "blue_round":
                a.ellipse(0, c, r, r, blue)
                a.poly(
                    [
                        (-0.1 * r, c - 0.6 * r),
                        (0.1 * r, c - 0.6 * r),
                        (0.1 * r, c + 0.2 * r),
                        (0.35 * r, c + 0.2 * r),
                        (0.0, c + 0.65 * r),
                        (-0.35 * r, c + 0.2 * r),
                        (-0.1 * r, c + 0.2 * r),
                    ],
                    white,
                )
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

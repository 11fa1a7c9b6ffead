"""Sky, skyline, ground, road and its markings, and the roadside: facades, trees, street lamps."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from roadwork.data.scene.canvas import Canvas
from roadwork.data.scene.palette import BUILDING, CAR_COLOURS


class Background(Canvas):
    """Everything behind the street life, drawn first."""

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
            self.ellipse(
                self.aspect * self.u(0.05, 0.95), yh - self.u(0.0, 0.12), r, r, self.jitter((255, 170, 60), 15)
            )
        if tod == "day" and self.chance(0.15):
            r = self.u(0.02, 0.04)
            self.ellipse(self.aspect * self.u(0.05, 0.95), self.u(0.03, yh * 0.6), r, r, (255, 250, 225))
        if tod == "night" and self.chance(0.3):
            r = self.u(0.015, 0.03)
            self.ellipse(self.aspect * self.u(0.05, 0.95), self.u(0.03, yh * 0.6), r, r, (225, 225, 205))
        clouds = {"day": (0, 6), "overcast": (3, 10), "dusk": (0, 4), "night": (0, 2)}[tod]
        base = {"day": (245, 245, 248), "overcast": (205, 207, 212), "dusk": (200, 150, 150), "night": (40, 40, 55)}[
            tod
        ]
        for _ in range(int(self.rng.integers(*clouds))):
            x, y = self.aspect * self.u(-0.1, 1.1), self.u(0.0, yh * 0.85)
            colour = self.jitter(base, 12)
            for _ in range(int(self.rng.integers(2, 5))):
                self.ellipse(
                    x + self.u(-0.06, 0.06), y + self.u(-0.015, 0.015), self.u(0.03, 0.1), self.u(0.012, 0.03), colour
                )

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
                colour = self.weighted_colour(BUILDING)
                mix = self.u(0.2, 0.6)  # atmospheric haze
                colour = tuple(int(c * (1 - mix) + hz * mix) for c, hz in zip(colour, haze))
                self.poly([(x, yh + 0.005), (x + wdt, yh + 0.005), (x + wdt, yh - hgt), (x, yh - hgt)], colour)
            else:
                r = wdt * self.u(0.5, 0.9)
                colour = self.jitter(self.pick(((40, 80, 40), (60, 95, 50), (35, 60, 40))), 12)
                self.ellipse(x, yh - r * 0.6, r, r * self.u(0.6, 1.1), colour)
            x += wdt * self.u(0.6, 1.3)

    def _ground_and_road(self) -> None:
        ground = self.pick(
            ((85, 120, 60), (120, 110, 80), (130, 130, 125), (150, 135, 100), (225, 228, 232)),
            (0.35, 0.2, 0.25, 0.12, 0.08),
        )
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
        colour = self.weighted_colour(BUILDING)
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
                self.poly(
                    [
                        (a0.x, a0.y - hgt * a0.p),
                        (a1.x, a1.y - hgt * a1.p),
                        (a1.x, a1.y - (hgt + 0.12) * a1.p),
                        (a0.x, a0.y - (hgt + 0.12) * a0.p),
                    ],
                    mortar,
                )
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
            sign = self.safety_colour() if self.chance(0.4) else self.weighted_colour(CAR_COLOURS)
            zs = z0 + self.u(0.5, 2.0)
            ze = min(z1 - 0.5, zs + self.u(4.0, 10.0))
            self._wall_quad(side, m, zs, ze, 0.2, 2.4, glass)
            self._wall_quad(side, m, zs, ze, 2.6, 3.2, sign)

    def _wall_quad(self, side, m, z0, z1, y0, y1, colour) -> None:
        a0, a1 = self.at(z0, side * m), self.at(z1, side * m)
        self.poly(
            [(a0.x, a0.y - y0 * a0.p), (a1.x, a1.y - y0 * a1.p), (a1.x, a1.y - y1 * a1.p), (a0.x, a0.y - y1 * a0.p)],
            colour,
        )

    def _window_light(self, side, m, z, y0, y1, colour):
        return lambda: self._wall_quad(side, m, z, z + 1.4, y0, y1, colour)

    def _tree_row(self, side: int, m: float) -> None:
        z = self.z1 * self.u(0.6, 2.0)
        gap = self.u(7.0, 16.0)
        crown = self.pick(
            ((45, 100, 45), (70, 120, 50), (35, 80, 45), (210, 120, 30), (200, 170, 40)), (0.35, 0.25, 0.25, 0.1, 0.05)
        )
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

"""Roadwork: the plan of a zone (elements, places, sizes, safety colours) and its elements drawn:
cones, drums, barriers, road-work signs, workers, excavators, arrow boards, dug-up road."""

from __future__ import annotations

from roadwork.data.scene.canvas import At, Canvas
from roadwork.data.scene.describe import describe
from roadwork.data.scene.palette import CAR_COLOURS, CLOTHES, HIVIS_YELLOW, SAFETY_ORANGE, SKIN, VEHICLE_BOX, Colour


class Roadwork(Canvas):
    """Plans a roadwork zone and draws it (positives) or hands the plan to the decoys (negatives)."""

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
                elements.append(
                    self._element("barrier", z0 + self.u(0.0, 0.6) * length, centre + self.u(-0.6, 0.6), side)
                )
        if self.chance(0.5):
            elements.append(
                self._element("sign", z0 + self.u(0.0, 0.3) * length, centre + side * self.u(0.5, 2.0), side)
            )
        if self.chance(0.45):
            for _ in range(int(self.pick((1, 2, 3, 4), (0.45, 0.3, 0.15, 0.1)))):
                elements.append(
                    self._element(
                        "worker", z0 + self.u(0.0, 0.8) * length, centre + self.u(-lane * 0.6, lane * 0.6), side
                    )
                )
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
        e = {
            "kind": kind,
            "z": z,
            "m": m,
            "side": side,
            "colour": self.safety_colour(),
            "white": self.jitter((238, 238, 238), 12),
            "size": s,
            "style": int(self.rng.integers(4)),
        }
        if kind == "worker":
            e["colour"] = self.jitter(self.pick(HIVIS_YELLOW + SAFETY_ORANGE[:2]), 14)
            e["helmet"] = self.jitter(self.pick(((245, 245, 240), (250, 215, 0), (250, 120, 10), (40, 90, 200))), 10)
            e["sleeve"] = self.jitter(self.pick(CLOTHES), 15) if self.chance(0.6) else e["colour"]
            e["trousers"] = self.jitter(self.pick(((30, 30, 40), (40, 50, 90), (60, 60, 60))), 10)
        if kind == "excavator":
            e["colour"] = self.jitter(self.pick(((245, 190, 0), (250, 160, 0), (240, 210, 40))), 12)
        e["width"] = self.u(1.4, 2.8) * s
        half, height = {
            "cone": (0.22 * s, 0.7 * s),
            "drum": (0.36 * s, 1.05 * s),
            "barrier": (e["width"] / 2, 1.05 * s),
            "sign": (0.6 * s, 2.4 * s),
            "worker": (0.3 * s, 1.75 * s),
            "excavator": (1.6 * s, 3.5 * s),
            "arrow_board": (1.1, 2.7),
            "dig": (2.0 * s, 0.1),
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
            half, height = VEHICLE_BOX[kind]
            for _ in range(6):
                m = target["m"] + self.pick((-1, 1)) * self.u(0.3, 2.0) * half
                box = (m, -half, half, height)
                hidden = self.covered(z, box, target["z"], target["box"])
                if 0.15 <= hidden <= 0.6:
                    self.add_vehicle(self.weighted_colour(CAR_COLOURS), z=z, m=m, kind=kind, protected=True)
                    occluded = True
                    break
        return describe(counts, occluded, len(plan) == 1)

    def _dig(self, e: dict) -> None:
        z, m = e["z"], e["m"]
        earth = self.jitter(self.pick(((110, 80, 50), (90, 70, 55), (40, 38, 36))), 10)
        pts = []
        for _ in range(7):
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
                self._figure(
                    a,
                    s * 0.95,
                    e["colour"],
                    e["trousers"],
                    self.pick(SKIN),
                    (30, 25, 20),
                    "",
                    (0, 0, 0),
                    worker=(e["colour"], stripe, e["helmet"], tool, e["sleeve"]),
                )
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

    def _barrier(self, a: "At", e: dict) -> None:
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

    def _roadwork_sign(self, a: "At", e: dict) -> None:
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

    def _excavator(self, a: "At", e: dict) -> None:
        s, colour = e["size"], e["colour"]
        dark = (35, 35, 35)
        a.rect(-1.6 * s, 0.0, 1.6 * s, 0.7 * s, dark)  # tracks
        a.rect(-1.3 * s, 0.7 * s, 1.1 * s, 1.7 * s, colour)  # body
        a.rect(-1.2 * s, 1.7 * s, -0.1 * s, 3.0 * s, colour)  # cab
        a.rect(-1.05 * s, 1.95 * s, -0.25 * s, 2.8 * s, (70, 90, 110))
        a.poly([(0.8 * s, 1.4 * s), (1.1 * s, 1.6 * s), (2.6 * s, 3.3 * s), (2.4 * s, 3.5 * s)], colour)  # boom
        a.poly([(2.4 * s, 3.5 * s), (2.6 * s, 3.3 * s), (3.2 * s, 1.2 * s), (3.0 * s, 1.1 * s)], colour)  # stick
        a.poly([(2.8 * s, 1.2 * s), (3.5 * s, 1.2 * s), (3.3 * s, 0.4 * s), (2.9 * s, 0.6 * s)], dark)  # bucket


def _pictogram(a: At, cx: float, cy: float, k: float, colour: Colour) -> None:
    """The 'men at work' pictogram: a digging figure and a pile, inside a box of half-size k."""
    a.ellipse(cx - 0.25 * k, cy + 0.55 * k, 0.13 * k, 0.13 * k, colour)  # head
    a.poly(
        [
            (cx - 0.38 * k, cy + 0.4 * k),
            (cx - 0.18 * k, cy + 0.42 * k),
            (cx + 0.05 * k, cy - 0.15 * k),
            (cx - 0.15 * k, cy - 0.2 * k),
        ],
        colour,
    )  # leaning body
    a.poly(
        [
            (cx - 0.15 * k, cy - 0.2 * k),
            (cx + 0.02 * k, cy - 0.15 * k),
            (cx - 0.05 * k, cy - 0.75 * k),
            (cx - 0.2 * k, cy - 0.75 * k),
        ],
        colour,
    )  # leg
    a.poly(
        [
            (cx + 0.02 * k, cy - 0.1 * k),
            (cx + 0.3 * k, cy - 0.7 * k),
            (cx + 0.42 * k, cy - 0.75 * k),
            (cx + 0.1 * k, cy - 0.05 * k),
        ],
        colour,
    )  # leg
    a.poly(
        [
            (cx - 0.3 * k, cy + 0.2 * k),
            (cx + 0.45 * k, cy - 0.35 * k),
            (cx + 0.5 * k, cy - 0.28 * k),
            (cx - 0.25 * k, cy + 0.27 * k),
        ],
        colour,
    )  # shovel handle
    a.poly(
        [(cx + 0.35 * k, cy - 0.75 * k), (cx + 0.9 * k, cy - 0.75 * k), (cx + 0.65 * k, cy - 0.4 * k)], colour
    )  # pile


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
    for inside, cut in (
        (lambda p: p[0] >= x0, at_x(x0)),
        (lambda p: p[0] <= x1, at_x(x1)),
        (lambda p: p[1] >= y0, at_y(y0)),
        (lambda p: p[1] <= y1, at_y(y1)),
    ):
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

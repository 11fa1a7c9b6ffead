"""The camera's finish: objects drawn far to near, global light, lamps, downsampling, blur and grain."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from roadwork.data.scene.canvas import Canvas


class Camera(Canvas):
    """Turns the drawn scene into the final RGB image."""

    def finish(self) -> Image.Image:
        for z, _, draw, box, protected in sorted(self.objects, key=lambda item: (-item[0], item[1])):
            if (
                not protected
                and box is not None
                and any(z < z_back and self.covered(z, box, z_back, back) > 0.5 for z_back, back in self.protected)
            ):
                continue  # would hide most of a roadwork element (or of its decoy)
            draw()
        # Global light: a per-channel gain (time of day, exposure, white balance) as a lookup table.
        gain = {"day": (256, 256, 256), "overcast": (225, 228, 235), "dusk": (210, 175, 160), "night": (105, 100, 115)}[
            self.tod
        ]
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

"""Small pictures for tests: PIL images and encoded bytes."""

import io

import numpy as np
from PIL import Image


def jpeg_bytes(seed: int, size=(48, 40), quality=90) -> bytes:
    """A small, distinct, natural-ish picture (smooth random blobs), JPEG-encoded."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, size=(4, 5, 3), dtype=np.uint8)
    image = Image.fromarray(coarse).resize(size, Image.BICUBIC)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def encode(image: Image.Image, fmt: str = "JPEG", **kwargs) -> bytes:
    """`image` saved as `fmt` (PIL's format name), as bytes."""
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def pictures(n: int, seed: int = 0) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        w, h = (int(v) for v in rng.integers(24, 90, 2))
        coarse = rng.integers(0, 256, (4, 5, 3), dtype=np.uint8)
        out.append(Image.fromarray(coarse).resize((w, h), Image.BICUBIC))
    return out

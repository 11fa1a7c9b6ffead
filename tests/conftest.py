import io

import numpy as np
import pytest
from PIL import Image


def jpeg_bytes(seed: int, size=(48, 40), quality=90) -> bytes:
    """A small, distinct, natural-ish picture (smooth random blobs), JPEG-encoded."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, size=(4, 5, 3), dtype=np.uint8)
    image = Image.fromarray(coarse).resize(size, Image.BICUBIC)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


@pytest.fixture
def make_jpeg():
    return jpeg_bytes

"""Image files: which suffixes count as images, and the project's lossless PNG encoding.

Kept apart from :mod:`roadwork.data.decode` on purpose: importing that module lifts Pillow's
process-global decompression-bomb limit (it enforces ``data.max_pixels`` itself), and code that
only needs these helpers (the ``predict`` command opening user files) must keep Pillow's guard.
"""

from __future__ import annotations

import io

from PIL import Image

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"})


def encode_png(image: Image.Image) -> bytes:
    """Lossless, deterministic PNG bytes (zlib level 6, no optimizer pass)."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False, compress_level=6)
    return buffer.getvalue()

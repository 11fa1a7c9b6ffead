"""Image files: which suffixes count as images, and the project's lossless PNG encoding.

Kept apart from :mod:`roadwork.data.decode` on purpose: importing that module lifts Pillow's
process-global decompression-bomb limit (it enforces ``data.max_pixels`` itself), and code that
only needs these helpers (the ``predict`` command opening user files) must keep Pillow's guard.
"""

from __future__ import annotations

import io

from PIL import Image

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"})
# leading bytes of the image formats above (WebP: "RIFF....WEBP")
IMAGE_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"BM", b"II*\x00", b"MM\x00*")


def looks_like_image(name: str, data: bytes) -> bool:
    """Whether a file claims to be an image, by its suffix or its first bytes (not whether it
    decodes): the download stage keeps the bytes of a quarantined file only when it does."""
    suffix = "." + name.rsplit(".", 1)[-1].lower() if "." in name else ""
    webp = data[:4] == b"RIFF" and data[8:12] == b"WEBP"
    return suffix in IMAGE_SUFFIXES or webp or data.startswith(IMAGE_MAGIC)


def encode_png(image: Image.Image) -> bytes:
    """Lossless, deterministic PNG bytes (zlib level 6, no optimizer pass)."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False, compress_level=6)
    return buffer.getvalue()

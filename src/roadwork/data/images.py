"""Image files: which suffixes count as images, the one conversion of an opened image to upright
RGB (`to_rgb`), and the project's lossless PNG encoding.

Kept apart from :mod:`roadwork.data.decode` on purpose: importing that module lifts Pillow's
process-global decompression-bomb limit (it enforces ``data.max_pixels`` itself), and code that
only needs these helpers (the ``predict`` command opening user files) must keep Pillow's guard.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageOps

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"})
# leading bytes of the image formats above (WebP: "RIFF....WEBP")
IMAGE_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"BM", b"II*\x00", b"MM\x00*")
EXIF_ORIENTATION = 0x0112


class UnsupportedImageMode(ValueError):
    """A Pillow mode that `to_rgb` has no faithful RGB reading of (e.g. 32-bit float "F")."""


def is_rotated(image: Image.Image) -> bool:
    """Whether the EXIF orientation changes the pixel layout (anything but 1, or 0 = unset)."""
    return image.getexif().get(EXIF_ORIENTATION, 1) not in (0, 1)


def to_rgb(image: Image.Image, plain: bool = False) -> Image.Image:
    """`image` upright (EXIF orientation applied) and in RGB: the one place the project does this.

    Default, the normalisation of the training data (`roadwork.data.decode`): palette and alpha
    images are composited over white (as a browser shows them), 16/32-bit grayscale is scaled to
    8 bits (16-bit by 65535, 32-bit by its maximum), L/1/CMYK/YCbCr/LAB/HSV go through Pillow's
    conversion; any other mode raises `UnsupportedImageMode`.

    ``plain=True``: Pillow's ``convert("RGB")`` for every mode, as the transformers pipeline's
    ``load_image`` (and so the validators) does: alpha dropped, not composited. `roadwork.predict`
    reads user files this way; ``miner/detector.py`` keeps its own copy of this line because it
    ships to the miner alone.

    The result may be `image` itself (an upright RGB image, default mode): copy it before closing
    the file it was opened from.
    """
    if is_rotated(image):
        image = ImageOps.exif_transpose(image)
    if plain:
        return image.convert("RGB")
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in ("P", "PA"):
        image = image.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "RGBa", "La"):
        # Transparent pixels become white, as a browser would show them.
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        array = np.asarray(image, dtype=np.uint32 if mode == "I" else np.uint16).astype(np.float64)
        peak = 65535.0 if mode != "I" else max(float(array.max()), 1.0)
        gray = np.clip(np.round(array / peak * 255.0), 0, 255).astype(np.uint8)
        return Image.fromarray(gray).convert("RGB")
    if mode in ("L", "1", "CMYK", "YCbCr", "LAB", "HSV"):
        return image.convert("RGB")
    raise UnsupportedImageMode(f"unsupported image mode {mode!r}")


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

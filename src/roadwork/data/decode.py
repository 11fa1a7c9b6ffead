"""Decode untrusted image bytes once, safely, into normalised RGB.

Broken input never raises out of `decode_image` as an unexpected error: it raises
`QuarantineError` with a reason string that the download stage records next to the file.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

from roadwork.data.images import UnsupportedImageMode, is_rotated, to_rgb
from roadwork.io import sha256_bytes

# Pillow's own bomb guard uses a process-global limit; we enforce ours (from params) instead.
Image.MAX_IMAGE_PIXELS = None


class QuarantineError(Exception):
    """The bytes cannot become a training image; `reason` says why."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class DecodedImage:
    image: Image.Image  # RGB, EXIF orientation applied
    source_format: str  # JPEG, PNG, ...
    source_mode: str  # mode before conversion (P, RGBA, CMYK, I;16, L, RGB, ...)
    rotated: bool  # EXIF orientation changed the pixel layout
    pixel_sha256: str  # hash of size + RGB pixels: equal for the same picture in any encoding

    @property
    def unchanged(self) -> bool:
        """The stored bytes can be the original file: an RGB JPEG that needed no rotation."""
        return self.source_format == "JPEG" and self.source_mode == "RGB" and not self.rotated


def decode_image(data: bytes, max_pixels: int) -> DecodedImage:
    """Fully decode `data`; apply EXIF orientation; convert to RGB; hash the pixels."""
    if len(data) == 0:
        raise QuarantineError("empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > max_pixels:
                raise QuarantineError(
                    f"decompression bomb: {width}x{height} = {width * height} pixels > data.max_pixels={max_pixels}"
                )
            image.load()  # full decode: truncated or corrupt data fails here
            source_format, source_mode = image.format or "unknown", image.mode
            rotated = is_rotated(image)
            rgb = to_rgb(image)
    except QuarantineError:
        raise
    except UnsupportedImageMode as error:
        raise QuarantineError(str(error)) from None
    except UnidentifiedImageError:
        raise QuarantineError("not an image (no decoder recognises the bytes)") from None
    except Image.DecompressionBombError as error:
        raise QuarantineError(f"decompression bomb: {error}") from None
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        raise QuarantineError(f"corrupt or truncated image: {error}") from None
    pixel_sha256 = sha256_bytes(f"{rgb.width}x{rgb.height}:".encode() + rgb.tobytes())
    return DecodedImage(rgb, source_format, source_mode, rotated, pixel_sha256)


def load_rgb(path, max_side: int | None = None) -> Image.Image:
    """Load a stored (already validated) image as upright RGB (`roadwork.data.images.to_rgb`),
    decoding JPEGs at reduced size.

    `path` is a file path or a binary file object (``io.BytesIO(data)``).

    With `max_side`, JPEG draft mode lets libjpeg scale by 1/2, 1/4 or 1/8 in the DCT domain
    so that the shorter side stays >= `max_side`: a 4032x3024 photo needed at 256 px is never
    decoded at full size.
    """
    with Image.open(path) as image:
        if max_side is not None and image.format == "JPEG":
            scale = min(image.size) / max_side
            if scale >= 2:
                image.draft("RGB", (max(1, int(image.width / scale)), max(1, int(image.height / scale))))
        try:
            return to_rgb(image).copy()
        except UnsupportedImageMode as error:
            raise QuarantineError(str(error)) from None

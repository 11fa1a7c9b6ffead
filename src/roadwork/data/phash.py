"""64-bit perceptual hash (pHash) of a decoded image, and its 16-hex-digit text form.

The hash is ``imagehash.phash`` (imagehash 4.3.2, pinned), the classic DCT pHash:

1. Grayscale: ``image.convert("L")`` (ITU-R 601-2 luma; the alpha channel is ignored).
2. Resize to 32x32 with LANCZOS (imagehash's ``ANTIALIAS``).
3. 2-D DCT-II without normalisation (``scipy.fftpack.dct`` along rows, then columns).
4. Keep the top-left 8x8 block (the 64 lowest frequencies).
5. Bit = coefficient > median of those 64 coefficients (the DC term included), packed **MSB
   first in row-major order**: bit 63 of the integer is coefficient (0, 0), bit 0 is (7, 7).
   That is the order of imagehash's hex string, so :func:`phash_hex` of a hash is exactly
   ``str(imagehash.phash(image))``.

The caller decodes once and passes the decoded image. If it used PIL's JPEG draft mode
(DCT-domain downscale) the pixels differ slightly from a full decode; hash either way, but the
same way for every image of one dataset.
"""

from __future__ import annotations

import imagehash
from PIL import Image

from roadwork.data.hamming import HASH_BITS


def phash64(image: Image.Image) -> int:
    """64-bit perceptual hash of a decoded PIL image, as a Python int in [0, 2**64).

    Store it as ``numpy.uint64`` (or as 16 hex digits: :func:`phash_hex`) for
    :func:`roadwork.data.hamming.find_near_duplicate_pairs`.
    """
    if not isinstance(image, Image.Image):
        raise TypeError(f"phash64 expects a decoded PIL image, got {type(image).__name__}")
    return int(str(imagehash.phash(image)), 16)


def phash_hex(value: int) -> str:
    """Fixed-width hex form of a hash (16 digits), for CSV/JSON files."""
    return f"{int(value):016x}"


def phash_from_hex(text: str) -> int:
    value = int(text, 16)
    if value >> HASH_BITS:
        raise ValueError(f"not a 64-bit hash: {text!r}")
    return value

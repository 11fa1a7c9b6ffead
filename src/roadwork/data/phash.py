"""64-bit perceptual hash (pHash) of a decoded image, and its 16-hex-digit text form.

Algorithm (the classic DCT pHash, as in imagehash and imagededup):

1. Grayscale: ``image.convert("L")`` (ITU-R 601-2 luma, ``L = R*299/1000 + G*587/1000 +
   B*114/1000``). Modes other than L/RGB (palette, RGBA, CMYK, ...) go through RGB first, so the
   alpha channel is ignored rather than composited.
2. Resize to 32x32 with **LANCZOS** (PIL's ``Image.Resampling.LANCZOS``, the filter imagehash
   uses under its old name ANTIALIAS), no ``reducing_gap`` shortcut, so the result does not
   depend on how the caller decoded the image (draft mode aside, see below).
3. 2-D DCT type II with ``norm="ortho"`` (``scipy.fft.dct`` along rows then columns) of the
   32x32 float64 pixels.
4. Keep the top-left 8x8 block (the 64 lowest frequencies).
5. Bit = coefficient > median, packed **MSB first in row-major order**: bit 63 of the integer is
   coefficient (0, 0) (the DC term), bit 0 is coefficient (7, 7). This is the same bit order as
   imagehash's hex string.

The DC term and the median (decision)
-------------------------------------
The median is taken over the **63 AC coefficients only** (imagededup's choice; imagehash puts the
DC term into the median). The DC coefficient is 32 x the mean brightness: it measures
brightness, not structure, and is almost always the largest of the 64 coefficients, so its bit is
(nearly) always 1. Keeping it out of the median makes the threshold depend on image structure
only: adding a constant to every pixel changes only the DC coefficient of an orthonormal DCT, so
with DC excluded all 63 AC bits are unchanged by a pure brightness offset (up to clipping and
rounding), whereas with DC included a dark image whose DC falls among the AC values moves the
median. The comparison is strict ``>`` (imagehash's; imagededup uses ``>=``). With ``>`` and DC
being the largest coefficient, both median conventions give the *same* 64 bits (the median of
the 64 values is the mean of the 32nd and 33rd largest, the median of the 63 AC values is the
32nd largest AC value, and no coefficient lies strictly between them), so in practice the
choice only matters for very dark images and ties. The DC bit itself is kept (``DC > median``)
so the hash has 64 bits; it is ~constant and carries almost no information.

Compatibility
-------------
``norm="ortho"`` scales the first row and column of the DCT by 1/sqrt(2) relative to the
unnormalized DCT that imagehash uses (scipy.fftpack.dct without norm), which changes their rank
against the other coefficients. The orthonormal DCT is the principled one (every basis function
has unit norm, so coefficients of different frequencies are comparable against one median), but
it means these hashes are **not bit-compatible with imagehash.phash** (typically a few bits
differ). They are only ever compared with each other.

The caller decodes once and passes the decoded image. If it used PIL's JPEG draft mode
(DCT-domain downscale) the pixels differ slightly from a full decode; hash either way, but the
same way for every image of one dataset.
"""

from __future__ import annotations

import numpy as np
from PIL import Image
from scipy.fft import dct

HASH_SIZE = 8  # 8x8 low-frequency block -> 64 bits
IMAGE_SIZE = 32  # resize target before the DCT (4x the hash size, as imagehash)
RESAMPLE = Image.Resampling.LANCZOS
HASH_BITS = HASH_SIZE * HASH_SIZE
_BIT_WEIGHTS = [1 << (HASH_BITS - 1 - k) for k in range(HASH_BITS)]


def grayscale_32(image: Image.Image) -> np.ndarray:
    """Steps 1-2: the 32x32 float64 grayscale array the DCT is applied to."""
    if not isinstance(image, Image.Image):
        raise TypeError(f"phash64 expects a decoded PIL image, got {type(image).__name__}")
    if image.mode not in ("L", "RGB"):
        image = image.convert("RGB")
    gray = image.convert("L").resize((IMAGE_SIZE, IMAGE_SIZE), RESAMPLE)
    return np.asarray(gray, dtype=np.float64)


def dct_lowfreq(pixels: np.ndarray) -> np.ndarray:
    """Steps 3-4: the top-left 8x8 block of the orthonormal 2-D DCT-II."""
    coefficients = dct(dct(pixels, type=2, axis=0, norm="ortho"), type=2, axis=1, norm="ortho")
    return coefficients[:HASH_SIZE, :HASH_SIZE]


def bits_to_int(bits: np.ndarray) -> int:
    """Pack 64 booleans (row-major, first = most significant) into a Python int."""
    flat = np.asarray(bits, dtype=bool).ravel()
    if flat.size != HASH_BITS:
        raise ValueError(f"expected {HASH_BITS} bits, got {flat.size}")
    return sum(weight for weight, bit in zip(_BIT_WEIGHTS, flat.tolist()) if bit)


def phash64(image: Image.Image) -> int:
    """64-bit perceptual hash of a decoded PIL image, as a Python int in [0, 2**64).

    Store it as ``numpy.uint64`` (or as 16 hex digits: ``f"{h:016x}"``) for
    :func:`roadwork.data.hamming.find_near_duplicate_pairs`.
    """
    low = dct_lowfreq(grayscale_32(image))
    ac = low.ravel()[1:]  # DC term (0, 0) excluded from the median: see the module docstring
    median = float(np.median(ac))
    return bits_to_int(low > median)


def phash_hex(value: int) -> str:
    """Fixed-width hex form of a hash (16 digits), for CSV/JSON files."""
    return f"{int(value):016x}"


def phash_from_hex(text: str) -> int:
    value = int(text, 16)
    if value >> HASH_BITS:
        raise ValueError(f"not a 64-bit hash: {text!r}")
    return value

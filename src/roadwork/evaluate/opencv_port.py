"""numpy port of the three OpenCV calls the validators' augmentation makes.

The validators' DeeperForensics distortions (natixnetwork/streetvision-subnet,
``natix/utils/image_transforms.py``; see :mod:`roadwork.evaluate.validator_aug`) call
``cv2.cvtColor`` (float32 BGR <-> YCrCb), ``cv2.resize`` (INTER_LINEAR, uint8) and
``cv2.GaussianBlur`` (uint8). They are re-implemented here from OpenCV's source (4.x:
``color_yuv.simd.hpp``, ``resize.cpp``, ``smooth.simd.hpp``) so that the project runs
without OpenCV:

* :func:`cvt_bgr2ycrcb` / :func:`cvt_ycrcb2bgr`: OpenCV's float32 coefficients and its SIMD
  operation order (fused multiply-adds, emulated with one float64 product and one rounding).
* :func:`resize_linear`: the 8-bit fixed-point path (Q11 weights, SIMD vertical pass).
* :func:`gaussian_blur`: the 8-bit bit-exact path (Q8 kernel with error diffusion,
  BORDER_REFLECT_101).

``tests/test_validator_aug.py`` compares them with real OpenCV (opencv-python-headless, a
development requirement, the 4.x line the validators pin) on random images of several
shapes: resize and blur are identical; the colour conversions are identical on x86-64 and
within one float32 ulp (2**-16 at 0..255) where another SIMD path could round differently.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "cvt_bgr2ycrcb",
    "cvt_ycrcb2bgr",
    "resize_linear",
    "gaussian_kernel_q8",
    "gaussian_blur",
]

# OpenCV color_yuv.simd.hpp constants (float32)
_R2YF, _G2YF, _B2YF = np.float32(0.299), np.float32(0.587), np.float32(0.114)
_YCRF, _YCBF = np.float32(0.713), np.float32(0.564)
_CR2RF, _CR2GF, _CB2GF, _CB2BF = np.float32(1.403), np.float32(-0.714), np.float32(-0.344), np.float32(1.773)
_HALF = np.float32(0.5)


def _fma(a, b, c) -> np.ndarray:
    """float32 fused multiply-add a*b + c (single rounding), emulated in float64."""
    return (np.asarray(a, np.float64) * np.float64(b) + np.asarray(c, np.float64)).astype(np.float32)


def cvt_bgr2ycrcb(x: np.ndarray) -> np.ndarray:
    """``cv2.cvtColor(x, cv2.COLOR_BGR2YCrCb)`` for float32 (..., 3) BGR: SIMD path (FMA),
    delta 0.5 (values in 0..255 stay in that scale)."""
    b, g, r = x[..., 0], x[..., 1], x[..., 2]
    y = _fma(b, _B2YF, _fma(g, _G2YF, r * _R2YF))
    cr = _fma(r - y, _YCRF, _HALF)
    cb = _fma(b - y, _YCBF, _HALF)
    return np.stack([y, cr, cb], axis=-1)


def cvt_ycrcb2bgr(x: np.ndarray) -> np.ndarray:
    """``cv2.cvtColor(x, cv2.COLOR_YCrCb2BGR)`` for float32 (..., 3) YCrCb: SIMD path (FMA),
    delta 0.5; not clipped."""
    y, cr, cb = x[..., 0], x[..., 1] - _HALF, x[..., 2] - _HALF
    b = _fma(cb, _CB2BF, y)
    g = _fma(cr, _CR2GF, _fma(cb, _CB2GF, y))
    r = _fma(cr, _CR2RF, y)
    return np.stack([b, g, r], axis=-1)


def _resize_coeffs(src: int, dst: int, clamp_weights: bool):
    """Source indices and Q11 weights of cv2 INTER_LINEAR along one axis."""
    scale = 1.0 / (dst / src)  # cv::resize: inv_scale = dst/src; scale = 1/inv_scale
    d = np.arange(dst, dtype=np.float64)
    f = ((d + 0.5) * scale - 0.5).astype(np.float32)
    s = np.floor(f).astype(np.int64)
    f = (f - s.astype(np.float32)).astype(np.float32)
    if clamp_weights:  # x direction: fx = 0 outside the image
        lo = s < 0
        f[lo] = 0
        s[lo] = 0
        hi = s >= src - 1
        f[hi] = 0
        s[hi] = src - 1
    w0 = np.rint((np.float32(1) - f) * np.float32(2048)).astype(np.int64)
    w1 = np.rint(f * np.float32(2048)).astype(np.int64)
    i0 = np.clip(s, 0, src - 1)
    i1 = np.clip(s + 1, 0, src - 1)
    return i0, i1, w0, w1


def resize_linear(img: np.ndarray, dsize: tuple[int, int]) -> np.ndarray:
    """``cv2.resize(img, (w, h))`` with INTER_LINEAR for uint8 HxWxC images.

    Emulates OpenCV's fixed-point path: Q11 weights, horizontal pass in integers, vertical
    pass as its SIMD kernel does it: ((r0 >> 4) * b0 >> 16) + ((r1 >> 4) * b1 >> 16),
    then (t + 2) >> 2 saturated. (For an exact 2x downscale OpenCV switches to INTER_AREA,
    which gives the same numbers: (a + b + c + d + 2) >> 2.)
    """
    img = np.asarray(img)
    if img.dtype != np.uint8:
        raise TypeError(f"resize_linear expects uint8, got {img.dtype}")
    dw, dh = int(dsize[0]), int(dsize[1])
    sh, sw = img.shape[:2]
    if (dw, dh) == (sw, sh):
        return img.copy()
    xi0, xi1, a0, a1 = _resize_coeffs(sw, dw, clamp_weights=True)
    yi0, yi1, b0, b1 = _resize_coeffs(sh, dh, clamp_weights=False)
    src = img.astype(np.int64)
    if src.ndim == 2:
        src = src[..., None]
    a0 = a0[None, :, None]
    a1 = a1[None, :, None]
    rows = src[:, xi0] * a0 + src[:, xi1] * a1  # (sh, dw, C), Q11
    r0 = rows[yi0] >> 4
    r1 = rows[yi1] >> 4
    t = ((r0 * b0[:, None, None]) >> 16) + ((r1 * b1[:, None, None]) >> 16)
    out = np.clip((t + 2) >> 2, 0, 255).astype(np.uint8)
    return out if img.ndim == 3 else out[..., 0]


def gaussian_kernel_q8(ksize: int, sigma: float) -> np.ndarray:
    """OpenCV's 8-bit GaussianBlur kernel: exp(-x^2 / (2 sigma^2)) normalised, then
    quantised to multiples of 1/256 with error diffusion and the centre tap set so that
    the taps sum to exactly 256 (``getGaussianKernelFixedPoint_ED``). Returns int64 taps."""
    if ksize % 2 != 1 or ksize < 1:
        raise ValueError("ksize must be odd and positive")
    x = np.arange(ksize, dtype=np.float64) - (ksize - 1) / 2.0
    k = np.exp(-0.125 * (2 * x) ** 2 / (sigma * sigma))  # -0.5 * 0.25 * (2x)^2 / s^2
    k = k / (2 * k[: ksize // 2].sum() + 1.0) if ksize > 1 else np.ones(1)
    out = np.zeros(ksize, dtype=np.int64)
    err = 0.0
    total = 0
    for i in range(ksize // 2):
        adj = k[i] * 256.0 + err
        v = int(np.rint(adj))
        err = adj - v
        out[i] = out[ksize - 1 - i] = v
        total += v
    out[ksize // 2] = 256 - 2 * total
    return out


def _reflect101_index(n: int, pad: int) -> np.ndarray:
    idx = np.arange(-pad, n + pad)
    if n == 1:
        return np.zeros_like(idx)
    period = 2 * (n - 1)
    idx = np.mod(idx, period)
    return np.where(idx >= n, period - idx, idx)


def gaussian_blur(img: np.ndarray, ksize: int, sigma: float) -> np.ndarray:
    """``cv2.GaussianBlur(img, (ksize, ksize), sigma)`` for uint8 images: OpenCV's bit-exact
    8-bit path, a separable Q8 kernel (:func:`gaussian_kernel_q8`) in both directions,
    BORDER_REFLECT_101, exact integer sums, result rounded half up: (sum + 2**15) >> 16."""
    img = np.asarray(img)
    if img.dtype != np.uint8:
        raise TypeError(f"gaussian_blur expects uint8, got {img.dtype}")
    k = gaussian_kernel_q8(int(ksize), sigma)
    pad = k.size // 2
    h, w = img.shape[:2]
    src = img.astype(np.int64)
    xi = _reflect101_index(w, pad)
    yi = _reflect101_index(h, pad)
    rows = np.zeros((h, w) + img.shape[2:], dtype=np.int64)
    padded = src[:, xi]
    for t, kv in enumerate(k):
        rows += kv * padded[:, t : t + w]
    padded = rows[yi]
    acc = np.zeros_like(rows)
    for t, kv in enumerate(k):
        acc += kv * padded[t : t + h]
    return np.clip((acc + (1 << 15)) >> 16, 0, 255).astype(np.uint8)

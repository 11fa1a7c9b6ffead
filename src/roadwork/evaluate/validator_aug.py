"""Reproduction of the NATIX StreetVision validators' challenge augmentation.

Source: natixnetwork/streetvision-subnet, ``natix/utils/image_transforms.py``
(``apply_augmentation_by_level``; DeeperForensics distortion functions copied there) and
``natix/protocol.py`` (``prepare_synapse``: float tensor -> ``ToPILImage`` -> JPEG with
PIL's default quality). Every random draw here comes from the ``numpy.random.Generator``
passed in; global ``random``/``numpy``/``torch`` state is never used, so results are
deterministic given the generator. The validators draw from the global states
(``np.random`` for the level, ``torch`` for rotation/crop, ``random`` for distortion
levels, ``np.random.randn`` for noise), so only the *distributions* match theirs.

Pipeline (as the validator code executes it):

* level 0: ``convert("RGB")`` -> ``CenterCrop(min(w, h))`` -> ``Resize(size)`` (PIL
  bilinear) -> ``ToTensor``.
* level 1: ``convert("RGB")`` -> ``ToTensor`` -> rotation by U(-20, 20) degrees of the
  *full-size* tensor (``expand=False``, black fill) -> ``RandomResizedCrop(size,
  scale=(0.2, 1), ratio=(1, 1))`` (bilinear, antialias) -> flips (see below).
* level 2: level 1, then colour saturation (CS), colour contrast (CC) and "JPEG"
  down/up-sampling, each at a level drawn uniformly from {0, 1} (``random.randint(0, 1)``;
  0 = not applied).
* level 3: level 1, then CS, CC, JPEG, colour Gaussian noise (GNC) and Gaussian blur (GB),
  each at a level drawn uniformly from {0, 1, 2}, in that order.
* Each distortion converts the float RGB tensor to a BGR uint8 array with
  ``(x * 255).astype(uint8)`` (truncation), applies the DeeperForensics function and
  converts back with ``/ 255``. The final tensor becomes a PIL image with torchvision's
  ``to_pil_image`` (``* 255`` then truncation), which the validator JPEG-encodes.

Two places where the validator code does not do what its arguments say (``variant``):

* ``RandomRotationWithParams.forward`` calls ``F.rotate(img, angle)`` without the
  interpolation given to the constructor, so the rotation is **nearest**, not bilinear.
* ``RandomHorizontalFlipWithParams``/``RandomVerticalFlipWithParams`` set
  ``self.params = {}`` in ``__init__``; ``forward`` then always takes the branch that
  reads ``self.params.get("do_flip", False)``, so **no flip is ever applied**.

``variant="code"`` (default) reproduces what the validator code executes (nearest
rotation, no flips); ``variant="documented"`` follows the constructor arguments and the
domain notes (bilinear rotation, horizontal and vertical flips with p = 0.5).

OpenCV is not a runtime dependency: the ``cv2.cvtColor`` (float BGR<->YCrCb), ``cv2.resize``
(INTER_LINEAR) and ``cv2.GaussianBlur`` calls come from :mod:`roadwork.evaluate.opencv_port`,
a numpy port that the tests compare with real OpenCV (resize and blur identical, colour
conversion identical on x86-64, within one float32 ulp elsewhere).
"""

from __future__ import annotations

import io
import math
import os
from typing import Sequence

import numpy as np
import torch
import torchvision.transforms.functional as F
from PIL import Image
from torchvision.transforms import InterpolationMode

from roadwork.evaluate import opencv_port as cv2_port

__all__ = [
    "TARGET_IMAGE_SIZE",
    "LEVEL_PROBS",
    "DISTORTION_PARAMS",
    "LEVEL_DISTORTIONS",
    "draw_level",
    "center_crop_resize",
    "random_resized_crop_params",
    "bgr2ycbcr",
    "ycbcr2bgr",
    "color_saturation",
    "color_contrast",
    "jpeg_compression",
    "gaussian_noise_color",
    "gaussian_blur",
    "apply_distortion",
    "apply_validator_augmentation",
    "jpeg_roundtrip",
    "validator_challenge",
    "ValidatorAugment",
]

TARGET_IMAGE_SIZE = 224  # natix/validator/config.py
LEVEL_PROBS = (0.25, 0.25, 0.25, 0.25)  # apply_augmentation_by_level default

# get_distortion_parameter: values for distortion levels 1..5
DISTORTION_PARAMS = {
    "CS": (0.4, 0.3, 0.2, 0.1, 0.0),  # colour saturation: chroma scale
    "CC": (0.85, 0.725, 0.6, 0.475, 0.35),  # colour contrast: pixel multiplier
    "JPEG": (2, 3, 4, 5, 6),  # down-sampling factor
    "GNC": (0.001, 0.002, 0.005, 0.01, 0.05),  # Gaussian noise variance
    "GB": (7, 9, 13, 17, 21),  # Gaussian blur kernel size, sigma = k / 6
}

# augmentation level -> ((distortion, max distortion level), ...) in application order
LEVEL_DISTORTIONS = {
    0: (),
    1: (),
    2: (("CS", 1), ("CC", 1), ("JPEG", 1)),
    3: (("CS", 2), ("CC", 2), ("JPEG", 2), ("GNC", 2), ("GB", 2)),
}

VARIANTS = ("code", "documented")


# ------------------------------------------------------------------------ level draw


def draw_level(rng: np.random.Generator, level_probs: Sequence[float] = LEVEL_PROBS) -> int:
    """Augmentation level as the validator draws it: u = U[0, 1), first level whose
    cumulative probability is >= u (levels 0..len-1)."""
    probs = np.asarray(level_probs, dtype=np.float64)
    if not math.isclose(float(probs.sum()), 1.0, rel_tol=1e-9):
        raise ValueError("Probabilities of levels must sum to 1.0")
    u = rng.random()
    cum = 0.0
    for level, p in enumerate(probs):
        cum += p
        if u <= cum:
            return level
    return len(probs) - 1


# ------------------------------------------------------------------------ geometry


def center_crop_resize(image: Image.Image, size: int = TARGET_IMAGE_SIZE) -> Image.Image:
    """Level-0 geometry: RGB, centre crop to the largest square, resize to ``size``."""
    img = image.convert("RGB")
    m = min(img.size)
    img = F.center_crop(img, [m, m])
    return F.resize(img, size, interpolation=InterpolationMode.BILINEAR, antialias=True)


def random_resized_crop_params(
    height: int,
    width: int,
    rng: np.random.Generator,
    scale: tuple[float, float] = (0.2, 1.0),
    ratio: tuple[float, float] = (1.0, 1.0),
) -> tuple[int, int, int, int]:
    """``torchvision.transforms.RandomResizedCrop.get_params`` with draws from ``rng``.

    Same algorithm: 10 attempts of area ~ U(scale) * H * W and log-uniform aspect ratio,
    offsets uniform over valid positions; otherwise the central fallback crop.
    Returns (top, left, h, w).
    """
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * rng.uniform(scale[0], scale[1])
        aspect_ratio = math.exp(rng.uniform(log_ratio[0], log_ratio[1]))
        w = int(round(math.sqrt(target_area * aspect_ratio)))
        h = int(round(math.sqrt(target_area / aspect_ratio)))
        if 0 < w <= width and 0 < h <= height:
            i = int(rng.integers(0, height - h + 1))
            j = int(rng.integers(0, width - w + 1))
            return i, j, h, w
    in_ratio = float(width) / float(height)
    if in_ratio < min(ratio):
        w = width
        h = int(round(w / min(ratio)))
    elif in_ratio > max(ratio):
        h = height
        w = int(round(h * max(ratio)))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def bgr2ycbcr(img_bgr: np.ndarray) -> np.ndarray:
    """DeeperForensics ``bgr2ycbcr``: cv2 YCrCb of the (0..255) BGR values, reordered to
    Y, Cb, Cr and mapped with Y*(235-16)+16 and C*(240-16)+16, all divided by 255."""
    x = np.asarray(img_bgr).astype(np.float32)
    ycrcb = cv2_port.cvt_bgr2ycrcb(x)
    out = ycrcb[..., (0, 2, 1)].astype(np.float32)
    out[..., 0] = (out[..., 0] * (235 - 16) + 16) / 255.0
    out[..., 1:] = (out[..., 1:] * (240 - 16) + 16) / 255.0
    return out


def ycbcr2bgr(img_ycbcr: np.ndarray) -> np.ndarray:
    """Inverse of :func:`bgr2ycbcr` (float32 BGR output, not clipped)."""
    x = np.asarray(img_ycbcr).astype(np.float32)  # always a copy
    x[..., 0] = (x[..., 0] * 255.0 - 16) / (235 - 16)
    x[..., 1:] = (x[..., 1:] * 255.0 - 16) / (240 - 16)
    ycrcb = x[..., (0, 2, 1)].astype(np.float32)
    return cv2_port.cvt_ycrcb2bgr(ycrcb)


def _float_to_u8_like_numpy_cast(x: np.ndarray) -> np.ndarray:
    """``x.astype(np.uint8)`` as it behaves on x86 for the values reachable here:
    truncation toward zero, then the low byte (so -0.3 -> 0)."""
    return np.trunc(x).astype(np.int64).astype(np.uint8)


# ------------------------------------------------------------------------ distortions
# All take and return HxWx3 uint8 BGR arrays (the DeeperForensics convention).


def color_saturation(img: np.ndarray, param: float) -> np.ndarray:
    """CS: scale both chroma channels about 0.5 by ``param`` in YCbCr; truncate to uint8."""
    ycbcr = bgr2ycbcr(img)
    ycbcr[:, :, 1] = 0.5 + (ycbcr[:, :, 1] - 0.5) * param
    ycbcr[:, :, 2] = 0.5 + (ycbcr[:, :, 2] - 0.5) * param
    return _float_to_u8_like_numpy_cast(ycbcr2bgr(ycbcr))


def color_contrast(img: np.ndarray, param: float) -> np.ndarray:
    """CC: multiply pixel values by ``param`` (no re-centring); truncate to uint8."""
    return (np.asarray(img).astype(np.float32) * param).astype(np.uint8)


def jpeg_compression(img: np.ndarray, param: int) -> np.ndarray:
    """ "JPEG": bilinear down-sampling to (h // param, w // param) and back up (cv2
    INTER_LINEAR both ways; no actual JPEG coding)."""
    h, w = img.shape[:2]
    small = cv2_port.resize_linear(img, (w // param, h // param))
    return cv2_port.resize_linear(small, (w, h))


def gaussian_noise_color(img: np.ndarray, param: float, rng: np.random.Generator) -> np.ndarray:
    """GNC: i.i.d. N(0, param) noise added to the (DeeperForensics-scaled) YCbCr values /
    255, back to BGR, clipped to [0, 255], truncated to uint8.

    Because ``bgr2ycbcr`` is fed 0..255 values, the noise std in BGR grey levels is
    sqrt(param) * 255 * 255/219 on luma (255 * 255/224 on chroma), i.e. the variance is
    ``param`` in units of the studio range (219 or 224 levels), not of 0..255.
    """
    ycbcr = bgr2ycbcr(img) / 255
    noise = rng.standard_normal(ycbcr.shape)
    b = (ycbcr + math.sqrt(param) * noise) * 255
    b = ycbcr2bgr(b)
    return np.clip(b, 0, 255).astype(np.uint8)


def gaussian_blur(img: np.ndarray, param: int) -> np.ndarray:
    """GB: ``cv2.GaussianBlur(img, (k, k), k / 6)`` with k = ``param``."""
    return cv2_port.gaussian_blur(img, int(param), param * 1.0 / 6)


_DISTORTION_FUNCS = {
    "CS": color_saturation,
    "CC": color_contrast,
    "JPEG": jpeg_compression,
    "GNC": gaussian_noise_color,
    "GB": gaussian_blur,
}


def apply_distortion(tensor: torch.Tensor, name: str, level: int, rng: np.random.Generator) -> torch.Tensor:
    """``ApplyDeeperForensicsDistortion`` on a float RGB CxHxW tensor in [0, 1].

    level 0 returns the input unchanged; otherwise RGB->BGR, HWC, ``(x * 255)`` truncated
    to uint8, the distortion with parameter ``DISTORTION_PARAMS[name][level - 1]``, then
    ``/ 255`` back to a float RGB tensor.
    """
    if level == 0:
        return tensor
    param = DISTORTION_PARAMS[name][level - 1]
    arr = tensor[[2, 1, 0], ...].permute(1, 2, 0).cpu().numpy()
    arr = (arr * 255).astype(np.uint8)
    func = _DISTORTION_FUNCS[name]
    arr = func(arr, param, rng) if name == "GNC" else func(arr, param)
    out = torch.from_numpy(arr.astype(np.float32) / 255.0).permute(2, 0, 1)
    return out[[2, 1, 0], ...]


# ------------------------------------------------------------------------ public API


def apply_validator_augmentation(
    image: Image.Image,
    level: int,
    rng: np.random.Generator,
    size: int = TARGET_IMAGE_SIZE,
    *,
    variant: str = "code",
    return_params: bool = False,
):
    """Apply validator augmentation ``level`` (0..3) to ``image``; returns a ``size`` x
    ``size`` RGB PIL image (what the validator JPEG-encodes), and the drawn parameters
    when ``return_params`` is true. See the module docstring for ``variant``."""
    if level not in (0, 1, 2, 3):
        raise ValueError(f"level must be 0..3, got {level}")
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}")
    params: dict = {"level": level, "variant": variant}
    if level == 0:
        out = F.to_pil_image(F.to_tensor(center_crop_resize(image, size)))
        return (out, params) if return_params else out

    t = F.to_tensor(image.convert("RGB"))
    angle = float(rng.uniform(-20.0, 20.0))
    interp = InterpolationMode.NEAREST if variant == "code" else InterpolationMode.BILINEAR
    t = F.rotate(t, angle, interpolation=interp)
    i, j, h, w = random_resized_crop_params(t.shape[-2], t.shape[-1], rng)
    t = F.resized_crop(t, i, j, h, w, [size, size], InterpolationMode.BILINEAR, antialias=True)
    params.update(angle=angle, crop=(i, j, h, w))
    if variant == "documented":
        hflip = bool(rng.random() < 0.5)
        vflip = bool(rng.random() < 0.5)
        if hflip:
            t = F.hflip(t)
        if vflip:
            t = F.vflip(t)
        params.update(hflip=hflip, vflip=vflip)
    else:
        params.update(hflip=False, vflip=False)
    dist = {}
    for name, max_level in LEVEL_DISTORTIONS[level]:
        lv = int(rng.integers(0, max_level + 1))
        dist[name] = lv
        t = apply_distortion(t, name, lv, rng)
    params["distortions"] = dist
    out = F.to_pil_image(t)
    return (out, params) if return_params else out


def jpeg_roundtrip(image: Image.Image, quality: int | None = None) -> Image.Image:
    """Encode as the validator does (``save(format="JPEG")``, PIL's default quality 75
    unless ``quality`` is given) and decode again."""
    buf = io.BytesIO()
    if quality is None:
        image.save(buf, format="JPEG")
    else:
        image.save(buf, format="JPEG", quality=quality)
    buf.seek(0)
    out = Image.open(buf)
    out.load()
    return out.convert("RGB")


def validator_challenge(
    image: Image.Image,
    rng: np.random.Generator,
    size: int = TARGET_IMAGE_SIZE,
    *,
    variant: str = "code",
    level_probs: Sequence[float] = LEVEL_PROBS,
) -> tuple[Image.Image, int]:
    """What a miner receives: level drawn like the validator (25% each by default), the
    augmentation, then a JPEG round trip at PIL's default quality. Returns (image, level)."""
    level = draw_level(rng, level_probs)
    out = apply_validator_augmentation(image, level, rng, size, variant=variant)
    return jpeg_roundtrip(out), level


class ValidatorAugment:
    """Training-pipeline transform: PIL image -> validator-style challenge (PIL image).

    Draws the level uniformly from ``levels``, applies :func:`apply_validator_augmentation`
    and (if ``jpeg``) the validators' JPEG round trip. Chain ``ToTensor``/``Normalize``
    after it. Randomness: a ``numpy.random.Generator`` per process and DataLoader worker,
    seeded from ``SeedSequence([seed, worker_id + 1])`` (fresh OS entropy when ``seed`` is
    None), created lazily on first use in each worker; :meth:`set_rng` overrides it.
    ``last_level`` holds the level of the last call.
    """

    def __init__(
        self,
        levels: Sequence[int] = (0, 1, 2, 3),
        size: int = TARGET_IMAGE_SIZE,
        seed: int | None = None,
        jpeg: bool = True,
        variant: str = "code",
    ):
        levels = tuple(int(v) for v in levels)
        if not levels or any(v not in (0, 1, 2, 3) for v in levels):
            raise ValueError("levels must be a non-empty subset of 0..3")
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}")
        self.levels = levels
        self.size = int(size)
        self.seed = seed
        self.jpeg = bool(jpeg)
        self.variant = variant
        self.last_level: int | None = None
        self._rng: np.random.Generator | None = None
        self._rng_key = None

    def set_rng(self, rng: np.random.Generator) -> None:
        self._rng = rng
        self._rng_key = self._key()

    @staticmethod
    def _key():
        info = torch.utils.data.get_worker_info()
        return (os.getpid(), -1 if info is None else info.id)

    def _get_rng(self) -> np.random.Generator:
        key = self._key()
        if self._rng is None or key != self._rng_key:
            wid = key[1]
            entropy = None if self.seed is None else [int(self.seed), wid + 1]
            self._rng = np.random.default_rng(entropy)
            self._rng_key = key
        return self._rng

    def __call__(self, img: Image.Image) -> Image.Image:
        rng = self._get_rng()
        level = self.levels[int(rng.integers(0, len(self.levels)))]
        self.last_level = level
        out = apply_validator_augmentation(img, level, rng, self.size, variant=self.variant)
        return jpeg_roundtrip(out) if self.jpeg else out

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(levels={self.levels}, size={self.size}, seed={self.seed}, "
            f"jpeg={self.jpeg}, variant={self.variant!r})"
        )

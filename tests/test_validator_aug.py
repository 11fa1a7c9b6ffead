import io
import random

import cv2
import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage

from roadwork.evaluate import opencv_port as cv2_port
from roadwork.evaluate import validator_aug as va


def _img(w=150, h=100, seed=0, mode="RGB"):
    rng = np.random.default_rng(seed)
    # smooth-ish content so that resampling differences are small but non-trivial
    base = rng.integers(0, 256, size=(h // 10 + 1, w // 10 + 1, 3), dtype=np.uint8)
    img = Image.fromarray(base).resize((w, h), Image.BILINEAR)
    noise = rng.integers(-20, 21, size=(h, w, 3))
    arr = np.clip(np.asarray(img).astype(int) + noise, 0, 255).astype(np.uint8)
    return Image.fromarray(arr).convert(mode)


# ---------------------------------------------------------------- geometry / API


@pytest.mark.parametrize("variant", ["code", "documented"])
@pytest.mark.parametrize("level", [0, 1, 2, 3])
def test_output_is_224_rgb_for_all_levels(level, variant):
    rng = np.random.default_rng(level)
    for mode in ("RGB", "RGBA", "L"):
        out = va.apply_validator_augmentation(_img(150, 100, mode=mode), level, rng, variant=variant)
        assert out.size == (224, 224)
        assert out.mode == "RGB"


def test_size_parameter_and_challenge_output():
    rng = np.random.default_rng(0)
    for level in range(4):
        assert va.apply_validator_augmentation(_img(90, 60), level, rng, size=48).size == (48, 48)
    out, level = va.validator_challenge(_img(120, 200), rng)
    assert out.size == (224, 224) and out.mode == "RGB" and level in (0, 1, 2, 3)


@pytest.mark.parametrize("wh", [(300, 200), (201, 305), (224, 224)])
def test_level0_equals_manual_center_crop_resize(wh):
    w, h = wh
    img = _img(w, h)
    m = min(w, h)
    left, top = int(round((w - m) / 2.0)), int(round((h - m) / 2.0))
    manual = img.crop((left, top, left + m, top + m)).resize((224, 224), Image.BILINEAR)
    out = va.apply_validator_augmentation(img, 0, np.random.default_rng(0))
    np.testing.assert_array_equal(np.asarray(out), np.asarray(manual))


def test_determinism_same_seed():
    img = _img(160, 120)
    for level in range(4):
        a = va.apply_validator_augmentation(img, level, np.random.default_rng(42))
        b = va.apply_validator_augmentation(img, level, np.random.default_rng(42))
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    a = va.validator_challenge(img, np.random.default_rng(7))
    b = va.validator_challenge(img, np.random.default_rng(7))
    assert a[1] == b[1]
    np.testing.assert_array_equal(np.asarray(a[0]), np.asarray(b[0]))
    c = va.apply_validator_augmentation(img, 3, np.random.default_rng(43))
    d = va.apply_validator_augmentation(img, 3, np.random.default_rng(42))
    assert not np.array_equal(np.asarray(c), np.asarray(d))


def test_global_random_state_untouched():
    torch.manual_seed(0)
    np.random.seed(0)
    t_before = torch.rand(1)
    n_before = np.random.random()
    torch.manual_seed(0)
    np.random.seed(0)
    va.validator_challenge(_img(), np.random.default_rng(1))
    va.apply_validator_augmentation(_img(), 3, np.random.default_rng(1))
    assert torch.rand(1) == t_before
    assert np.random.random() == n_before


def test_level_frequencies_uniform():
    rng = np.random.default_rng(0)
    levels = np.array([va.draw_level(rng) for _ in range(40000)])
    freq = np.bincount(levels, minlength=4) / levels.size
    np.testing.assert_allclose(freq, 0.25, atol=0.01)
    # the challenge uses exactly this draw
    for seed in range(5):
        _, level = va.validator_challenge(_img(40, 30), np.random.default_rng(seed), size=32)
        assert level == va.draw_level(np.random.default_rng(seed))
    with pytest.raises(ValueError):
        va.draw_level(rng, (0.5, 0.6))


def test_distortion_levels_drawn_in_range_and_order():
    rng = np.random.default_rng(3)
    seen = {2: set(), 3: set()}
    for _ in range(30):
        for level in (2, 3):
            _, p = va.apply_validator_augmentation(_img(40, 30), level, rng, size=32, return_params=True)
            names = [n for n, _ in va.LEVEL_DISTORTIONS[level]]
            assert list(p["distortions"]) == names
            seen[level].update(p["distortions"].values())
    assert seen[2] == {0, 1}
    assert seen[3] == {0, 1, 2}


def test_flips_code_vs_documented():
    rng = np.random.default_rng(5)
    flips = []
    for _ in range(60):
        _, p = va.apply_validator_augmentation(_img(40, 30), 1, rng, size=16, return_params=True)
        assert p["hflip"] is False and p["vflip"] is False  # validator code never flips
        _, p = va.apply_validator_augmentation(_img(40, 30), 1, rng, size=16, variant="documented", return_params=True)
        flips.append((p["hflip"], p["vflip"]))
    f = np.array(flips, dtype=float).mean(axis=0)
    assert np.all((f > 0.3) & (f < 0.7))


def test_rotation_angle_and_crop_params():
    rng = np.random.default_rng(9)
    angles = []
    for _ in range(200):
        i, j, h, w = va.random_resized_crop_params(100, 150, rng)
        assert h == w and 0 < h <= 100 and 0 <= i <= 100 - h and 0 <= j <= 150 - w
        angles.append(va.apply_validator_augmentation(_img(20, 16), 1, rng, size=8, return_params=True)[1]["angle"])
    angles = np.array(angles)
    assert angles.min() >= -20 and angles.max() <= 20 and angles.min() < -15 and angles.max() > 15


def test_jpeg_roundtrip_default_quality_is_75():
    img = _img(64, 64)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=75)
    ref = Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
    np.testing.assert_array_equal(np.asarray(va.jpeg_roundtrip(img)), np.asarray(ref))


# ---------------------------------------------------------------- distortion formulas


@pytest.mark.parametrize("param", va.DISTORTION_PARAMS["CC"])
def test_contrast_multiplies_pixel_values(param):
    arr = np.arange(256, dtype=np.uint8).reshape(16, 16, 1).repeat(3, axis=2)
    out = va.color_contrast(arr, param).astype(float)
    exact = arr.astype(float) * param
    # truncation toward zero, exact up to float32 rounding near integers
    assert np.all(out <= exact + 1e-3)
    assert np.all(out > exact - 1)
    near_int = np.abs(exact - np.round(exact)) < 1e-3
    np.testing.assert_array_equal(out[~near_int], np.floor(exact[~near_int]))


@pytest.mark.parametrize("param", va.DISTORTION_PARAMS["CS"])
def test_saturation_scales_chroma_in_ycbcr(param):
    rng = np.random.default_rng(0)
    bgr = rng.integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
    out = va.color_saturation(bgr, param).astype(float)

    def ycc(a):  # BT.601 full-range luma/chroma
        b, g, r = a[..., 0], a[..., 1], a[..., 2]
        y = 0.299 * r + 0.587 * g + 0.114 * b
        return y, 0.564 * (b - y), 0.713 * (r - y)

    y0, cb0, cr0 = ycc(bgr.astype(float))
    # expected: luma kept, chroma scaled -> BGR = Y + param * (BGR - Y)
    expect = y0[..., None] + param * (bgr.astype(float) - y0[..., None])
    assert np.all(out <= expect + 0.15)  # cv2 coefficient round-off (0.713 * 1.403 != 1)
    assert np.all(out >= expect - 1.15)  # truncation to uint8
    y1, cb1, cr1 = ycc(out)
    assert np.max(np.abs(y1 - y0)) < 1.2
    assert np.max(np.abs(cb1 - param * cb0)) < 1.2
    assert np.max(np.abs(cr1 - param * cr0)) < 1.2
    if param == 0.0:
        assert np.max(out.max(axis=-1) - out.min(axis=-1)) <= 1  # grey


def test_ycbcr_roundtrip_matches_deeperforensics_scaling():
    rng = np.random.default_rng(1)
    bgr = rng.integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
    ycbcr = va.bgr2ycbcr(bgr)
    b, g, r = (bgr[..., k].astype(float) for k in range(3))
    y = 0.299 * r + 0.587 * g + 0.114 * b
    np.testing.assert_allclose(ycbcr[..., 0], (y * 219 + 16) / 255, atol=1e-3)
    np.testing.assert_allclose(ycbcr[..., 1], ((0.564 * (b - y) + 0.5) * 224 + 16) / 255, atol=1e-3)
    np.testing.assert_allclose(ycbcr[..., 2], ((0.713 * (r - y) + 0.5) * 224 + 16) / 255, atol=1e-3)
    np.testing.assert_allclose(va.ycbcr2bgr(ycbcr), bgr, atol=0.1)


@pytest.mark.parametrize("level,param", list(enumerate(va.DISTORTION_PARAMS["GB"], start=1)))
def test_blur_kernel_size_and_sigma(level, param):
    k = cv2_port.gaussian_kernel_q8(param, param / 6)
    assert k.size == param  # kernel size by level: 7, 9, 13, 17, 21
    assert k.sum() == 256 and np.array_equal(k, k[::-1])
    x = np.arange(param) - (param - 1) / 2
    g = np.exp(-(x**2) / (2 * (param / 6) ** 2))
    g /= g.sum()
    # Q8 quantisation with error diffusion: running error stays below one unit
    assert np.max(np.abs(np.cumsum(k / 256 - g))) <= 1 / 256 + 1e-9
    # impulse response is the rounded separable kernel
    img = np.zeros((45, 45, 3), np.uint8)
    img[22, 22] = 255
    out = va.gaussian_blur(img, param)
    expect = np.zeros((45, 45), np.int64)
    h = param // 2
    expect[22 - h : 22 + h + 1, 22 - h : 22 + h + 1] = (255 * np.outer(k, k) + (1 << 15)) >> 16
    np.testing.assert_array_equal(out[..., 0], expect)
    # constant image unchanged (taps sum to exactly 1)
    const = np.full((20, 30, 3), 137, np.uint8)
    np.testing.assert_array_equal(va.gaussian_blur(const, param), const)


def test_blur_border_is_reflect101():
    rng = np.random.default_rng(2)
    img = rng.integers(0, 256, size=(30, 25, 3), dtype=np.uint8)
    k = cv2_port.gaussian_kernel_q8(9, 1.5).astype(float)
    out = va.gaussian_blur(img, 9)
    for c in range(3):
        # scipy's "mirror" mode is OpenCV's BORDER_REFLECT_101 (d c b | a b c d | c b a)
        acc = ndimage.correlate(img[..., c].astype(float), np.outer(k, k), mode="mirror")
        expect = (acc.astype(np.int64) + (1 << 15)) >> 16  # integer sums, exact in float64
        np.testing.assert_array_equal(out[..., c], expect)


def test_resize_matches_known_opencv_results():
    np.testing.assert_array_equal(cv2_port.resize_linear(np.array([[0, 255]], np.uint8), (4, 1)), [[0, 64, 191, 255]])
    rng = np.random.default_rng(3)
    a = rng.integers(0, 256, size=(8, 12, 3), dtype=np.uint8)
    # exact 2x down: OpenCV uses INTER_AREA: (a + b + c + d + 2) >> 2
    blocks = a.reshape(4, 2, 6, 2, 3).astype(int).sum(axis=(1, 3))
    np.testing.assert_array_equal(cv2_port.resize_linear(a, (6, 4)), (blocks + 2) >> 2)


def _float_bilinear(img, dw, dh):
    """Reference half-pixel bilinear (cv2 convention, no antialias) in float."""
    sh, sw = img.shape[:2]

    def coords(src, dst):
        f = (np.arange(dst) + 0.5) * (src / dst) - 0.5
        f = np.clip(f, 0, src - 1)
        i0 = np.floor(f).astype(int)
        i1 = np.minimum(i0 + 1, src - 1)
        return i0, i1, f - i0

    y0, y1, fy = coords(sh, dh)
    x0, x1, fx = coords(sw, dw)
    a = img.astype(float)
    top = a[y0][:, x0] * (1 - fx)[None, :, None] + a[y0][:, x1] * fx[None, :, None]
    bot = a[y1][:, x0] * (1 - fx)[None, :, None] + a[y1][:, x1] * fx[None, :, None]
    return top * (1 - fy)[:, None, None] + bot * fy[:, None, None]


@pytest.mark.parametrize("level,param", list(enumerate(va.DISTORTION_PARAMS["JPEG"], start=1)))
def test_jpeg_style_down_up_sampling(level, param):
    img = np.asarray(_img(60, 45, seed=level))[..., ::-1].copy()
    out = va.jpeg_compression(img, param)
    assert out.shape == img.shape and out.dtype == np.uint8
    small = cv2_port.resize_linear(img, (60 // param, 45 // param))
    assert small.shape == (45 // param, 60 // param, 3)
    assert np.max(np.abs(small.astype(float) - _float_bilinear(img, 60 // param, 45 // param))) <= 1.01
    assert np.max(np.abs(out.astype(float) - _float_bilinear(small, 60, 45))) <= 1.01
    const = np.full((45, 60, 3), 77, np.uint8)
    np.testing.assert_array_equal(va.jpeg_compression(const, param), const)


@pytest.mark.parametrize("param", va.DISTORTION_PARAMS["GNC"][:3])
def test_colour_noise_variance(param):
    grey = np.full((200, 200, 3), 128, np.uint8)
    out = va.gaussian_noise_color(grey, param, np.random.default_rng(0)).astype(float)
    y = 0.299 * out[..., 2] + 0.587 * out[..., 1] + 0.114 * out[..., 0]
    # noise of variance `param` on the DeeperForensics-scaled YCbCr values / 255:
    # luma std in grey levels = sqrt(param) * 255 * 255 / 219
    expect_std = np.sqrt(param) * 255 * 255 / 219
    assert y.std() == pytest.approx(expect_std, rel=0.06)
    assert y.mean() == pytest.approx(128 - 0.5, abs=0.5)  # truncation bias only
    # deterministic given the generator
    again = va.gaussian_noise_color(grey, param, np.random.default_rng(0))
    np.testing.assert_array_equal(out, again)


def test_apply_distortion_wrapper_keeps_rgb_order():
    rng = np.random.default_rng(0)
    t = torch.rand(3, 10, 12)
    assert va.apply_distortion(t, "CC", 0, rng) is t
    out = va.apply_distortion(t, "CC", 1, rng)
    u8 = (t.permute(1, 2, 0).numpy() * 255).astype(np.uint8)
    expect = (u8.astype(np.float32) * 0.85).astype(np.uint8).astype(np.float32) / 255.0
    np.testing.assert_array_equal(out.permute(1, 2, 0).numpy(), expect)


# ---------------------------------------------------------------- training transform


def test_validator_augment_transform():
    img = _img(80, 60)
    aug = va.ValidatorAugment(seed=3, size=32)
    a = [np.asarray(aug(img)) for _ in range(4)]
    aug2 = va.ValidatorAugment(seed=3, size=32)
    b = [np.asarray(aug2(img)) for _ in range(4)]
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
        assert x.shape == (32, 32, 3)
    assert aug.last_level in (0, 1, 2, 3)
    # levels=(0,) without JPEG is exactly level 0
    aug0 = va.ValidatorAugment(levels=(0,), size=32, seed=0, jpeg=False)
    np.testing.assert_array_equal(np.asarray(aug0(img)), np.asarray(va.center_crop_resize(img, 32)))
    # composes with torchvision
    from torchvision import transforms

    tf = transforms.Compose([va.ValidatorAugment(seed=1, size=32), transforms.ToTensor()])
    x = tf(img)
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32
    aug.set_rng(np.random.default_rng(5))
    aug(img)
    with pytest.raises(ValueError):
        va.ValidatorAugment(levels=(4,))
    assert "ValidatorAugment" in repr(aug)


def test_validator_augment_worker_seeding():
    from torch.utils.data import DataLoader, Dataset

    img = _img(40, 30)

    class DS(Dataset):
        def __init__(self):
            self.tf = va.ValidatorAugment(seed=11, size=16, jpeg=False)

        def __len__(self):
            return 4

        def __getitem__(self, i):
            return torch.from_numpy(np.asarray(self.tf(img)).copy())

    def run():
        dl = DataLoader(DS(), batch_size=1, num_workers=2, shuffle=False)
        return [x.numpy() for x in dl]

    r1, r2 = run(), run()
    for x, y in zip(r1, r2):
        np.testing.assert_array_equal(x, y)  # reproducible across runs
    # the two workers use different streams: their first items differ
    assert not np.array_equal(r1[0], r1[1])


# ---------------------------------------------------------------- the OpenCV port against real OpenCV
# (opencv-python-headless from requirements-dev.txt; the validators run real OpenCV)

PARITY_SHAPES = [(224, 224), (100, 150), (45, 60), (37, 53), (7, 3), (1, 1), (2, 9), (301, 17)]


def _random_bgr(shape, seed):
    return np.random.default_rng(seed).integers(0, 256, size=(*shape, 3), dtype=np.uint8)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("shape", PARITY_SHAPES)
def test_port_resize_is_cv2_resize(shape, seed):
    img = _random_bgr(shape, seed)
    h, w = shape
    sizes = [(w // p, h // p) for p in va.DISTORTION_PARAMS["JPEG"] if w // p and h // p]
    sizes += [(224, 224), (w * 3 + 1, h * 2), (max(1, w - 1), h + 5)]
    for dsize in sizes:
        np.testing.assert_array_equal(cv2_port.resize_linear(img, dsize), cv2.resize(img, dsize), err_msg=str(dsize))
        np.testing.assert_array_equal(cv2_port.resize_linear(img[..., 0], dsize), cv2.resize(img[..., 0], dsize))
    for param in va.DISTORTION_PARAMS["JPEG"]:  # the JPEG distortion: two cv2.resize calls
        if w // param and h // param:
            expect = cv2.resize(cv2.resize(img, (w // param, h // param)), (w, h))
            np.testing.assert_array_equal(va.jpeg_compression(img, param), expect)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("shape", PARITY_SHAPES)
def test_port_gaussian_blur_is_cv2_gaussian_blur(shape, seed):
    img = _random_bgr(shape, seed)
    for param in va.DISTORTION_PARAMS["GB"]:  # the GB distortion: GaussianBlur((k, k), k / 6)
        expect = cv2.GaussianBlur(img, (param, param), param * 1.0 / 6)
        np.testing.assert_array_equal(va.gaussian_blur(img, param), expect, err_msg=f"k={param}")
    for ksize, sigma in [(3, 0.8), (5, 1.0), (11, 10.0), (15, 0.5)]:
        expect = cv2.GaussianBlur(img, (ksize, ksize), sigma)
        np.testing.assert_array_equal(cv2_port.gaussian_blur(img, ksize, sigma), expect, err_msg=f"k={ksize}")


ONE_ULP_AT_255 = 2.0**-16  # float32 spacing in [128, 256): 1.53e-5


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("shape", PARITY_SHAPES)
def test_port_ycrcb_is_cv2_cvtcolor(shape, seed):
    rng = np.random.default_rng(seed)
    pixels = _random_bgr(shape, seed).astype(np.float32)  # what bgr2ycbcr feeds cv2
    smooth = (rng.random((*shape, 3)) * 255).astype(np.float32)
    for x in (pixels, smooth):
        forward = cv2.cvtColor(x, cv2.COLOR_BGR2YCrCb)
        np.testing.assert_allclose(cv2_port.cvt_bgr2ycrcb(x), forward, rtol=0, atol=ONE_ULP_AT_255)
        back = cv2.cvtColor(forward, cv2.COLOR_YCrCb2BGR)
        np.testing.assert_allclose(cv2_port.cvt_ycrcb2bgr(forward), back, rtol=0, atol=ONE_ULP_AT_255)
    # the colour-noise distortion feeds YCrCb values outside 0..255 back to BGR (one ulp of
    # larger values is more than 2**-16: allow one float32 epsilon relative on top)
    noisy = (rng.normal(128, 90, size=(*shape, 3))).astype(np.float32)
    np.testing.assert_allclose(
        cv2_port.cvt_ycrcb2bgr(noisy),
        cv2.cvtColor(noisy, cv2.COLOR_YCrCb2BGR),
        rtol=np.finfo(np.float32).eps,
        atol=ONE_ULP_AT_255,
    )


def test_mix_mode_draws_standard_and_validator_images_reproducibly():
    """train.augment.mode: mix sends each image through the standard or the validator pipeline
    with equal odds, drawn from torch's seeded RNG."""
    from roadwork.config import AugmentParams
    from roadwork.train.augment import EitherOf, standard_transform, train_transform

    picks = EitherOf(lambda image: "standard", lambda image: "validator")
    torch.manual_seed(0)
    first = [picks(None) for _ in range(400)]
    torch.manual_seed(0)
    assert first == [picks(None) for _ in range(400)]
    assert 160 < first.count("standard") < 240

    img = _img(96, 96)
    mean, std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
    mix = train_transform(AugmentParams(mode="mix"), 32, mean, std)
    standard = standard_transform(AugmentParams(mode="standard"), 32, mean, std)
    validator = train_transform(AugmentParams(mode="validator"), 32, mean, std)
    kinds = set()
    for seed in range(12):
        torch.manual_seed(seed)
        random.seed(seed)  # timm's RandomResizedCrop draws from Python's random
        out = mix(img)
        torch.manual_seed(seed)
        random.seed(seed)
        chose_standard = bool(torch.rand(()) < 0.5)
        expected = (standard if chose_standard else validator)(img)
        assert torch.equal(out, expected)
        kinds.add(chose_standard)
    assert kinds == {True, False}

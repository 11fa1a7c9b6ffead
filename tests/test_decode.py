"""decode_image: every broken input is quarantined with a reason; odd modes become RGB."""

import numpy as np
import pytest
from kit.images import encode
from PIL import Image

from roadwork.data.decode import QuarantineError, decode_image, load_rgb

MAX = 10_000_000


def gradient(width=40, height=30) -> Image.Image:
    x = np.linspace(0, 255, width, dtype=np.uint8)[None, :].repeat(height, 0)
    y = np.linspace(0, 255, height, dtype=np.uint8)[:, None].repeat(width, 1)
    return Image.fromarray(np.stack([x, y, 255 - x], axis=-1))


@pytest.mark.parametrize(
    "make, mode",
    [
        (lambda: encode(gradient().convert("P"), "PNG"), "P"),
        (lambda: encode(gradient().convert("RGBA"), "PNG"), "RGBA"),
        (lambda: encode(gradient().convert("CMYK"), "JPEG"), "CMYK"),
        (lambda: encode(gradient().convert("L"), "JPEG"), "L"),
        (lambda: encode(Image.fromarray((np.arange(1200, dtype=np.uint16) * 50).reshape(30, 40)), "PNG"), "I;16"),
        (lambda: encode(gradient().convert("LA"), "PNG"), "LA"),
    ],
)
def test_odd_modes_become_rgb(make, mode):
    result = decode_image(make(), MAX)
    assert result.source_mode == mode
    assert result.image.mode == "RGB" and result.image.size == (40, 30)
    assert not result.unchanged  # converted images are re-stored losslessly


def test_sixteen_bit_keeps_its_range():
    values = (np.arange(1200, dtype=np.uint16) * 50).reshape(30, 40)
    result = decode_image(encode(Image.fromarray(values), "PNG"), MAX)
    gray = np.asarray(result.image)[..., 0]
    assert gray.max() > 200 and gray.min() == 0  # scaled, not clipped to 255 or truncated to the low byte


def test_transparent_pixels_become_white():
    rgba = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    result = decode_image(encode(rgba, "PNG"), MAX)
    assert result.image.getpixel((0, 0)) == (255, 255, 255)


def test_exif_orientation_is_applied():
    image = gradient(40, 30)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to view
    result = decode_image(encode(image, "JPEG", exif=exif), MAX)
    assert result.rotated and not result.unchanged
    assert result.image.size == (30, 40)


def test_plain_rgb_jpeg_is_kept_as_is():
    result = decode_image(encode(gradient(), "JPEG"), MAX)
    assert result.unchanged and result.source_format == "JPEG"


def test_same_pixels_different_bytes_share_pixel_hash():
    png = encode(gradient(), "PNG")
    png_other = encode(gradient(), "PNG", compress_level=1)
    assert png != png_other
    assert decode_image(png, MAX).pixel_sha256 == decode_image(png_other, MAX).pixel_sha256


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"", "empty file"),
        (b"this is a text file, not a picture\n" * 10, "not an image"),
        (encode(gradient(200, 200), "JPEG")[:400], "corrupt or truncated"),
        (encode(Image.new("F", (10, 10)), "TIFF"), "unsupported image mode 'F'"),
    ],
)
def test_broken_inputs_are_quarantined_with_a_reason(data, reason):
    with pytest.raises(QuarantineError) as caught:
        decode_image(data, MAX)
    assert reason in caught.value.reason


def test_decompression_bomb_is_refused_before_decoding():
    with pytest.raises(QuarantineError) as caught:
        decode_image(encode(gradient(200, 100), "PNG"), max_pixels=19_999)
    assert "decompression bomb" in caught.value.reason and "200x100" in caught.value.reason
    assert decode_image(encode(gradient(200, 100), "PNG"), max_pixels=20_000).image.size == (200, 100)


def test_load_rgb_uses_draft_mode_for_large_jpegs(tmp_path):
    path = tmp_path / "big.jpg"
    path.write_bytes(encode(gradient(1600, 1200), "JPEG"))
    small = load_rgb(path, max_side=256)
    assert min(small.size) >= 256 and small.size[0] < 1600  # decoded at 1/4 scale in the DCT domain
    assert load_rgb(path).size == (1600, 1200)

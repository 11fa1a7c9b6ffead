"""The embedded default dataset: street scenes plus planted copies, deterministic from a seed.

`generate(params)` yields `params.count` original scenes (label 1: roadwork, 0: none; drawn by
`roadwork.data.scene.render_scene`) followed by planted copies whose provenance is known (exact,
pixel and near duplicates, broken files), so that the dedup stage's recall can be measured
against the truth.

Design notes
- Every scene has its own random stream, ``SeedSequence([seed, 0, i])``: scene ``i`` is the same
  picture whatever ``count`` is. Planted copies draw from ``SeedSequence([seed, 1, count])``.
  No `random`, no `hash()`, no clock.
- Bytes must not depend on the machine: the scene pixels are integer-exact (see
  `roadwork.data.scene`) and pinned Pillow (libjpeg-turbo, zlib-ng) encodes them at fixed
  settings.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Iterator, Optional

import numpy as np
from PIL import Image

from roadwork.config import SyntheticParams
from roadwork.data.decode import load_rgb
from roadwork.data.images import encode_png
from roadwork.data.scene import render_scene

KINDS = ("original", "exact_duplicate", "pixel_duplicate", "near_duplicate", "broken")

# Originals in odd storage formats, at fixed positions modulo ODD_PERIOD (index-stable).
ODD_PERIOD = 500
ODD_FORMATS = {5: "palette_png", 11: "rgba_png", 17: "grayscale_jpeg", 23: "cmyk_jpeg", 29: "exif_rotated_jpeg"}
BROKEN_VARIANTS = ("zero_byte", "truncated", "not_an_image", "html_page", "truncated_png", "truncated_early")
NEAR_VARIANTS = ("jpeg", "resize", "crop", "brighter", "darker")
PIXEL_VARIANTS = ("jpeg_comment", "jpeg_app_marker", "png_lossless")

_STREAM_SCENE = 0
_STREAM_PLANT = 1


@dataclass(frozen=True)
class SyntheticItem:
    ref: str  # stable name, e.g. "synthetic/000123.jpg"
    data: bytes  # encoded file bytes
    label: int  # 1 roadwork, 0 not
    scene_description: str  # non-empty iff label == 1 (the NATIX validators' rule)
    kind: str  # one of KINDS
    parent: Optional[str]  # ref of the original a planted copy derives from
    variant: str  # "" for standard originals; the odd format or the transform otherwise


# ============================================================================== public API
def scene_rng(seed: int, index: int) -> np.random.Generator:
    """The random stream of original scene `index` (independent of the scene count)."""
    return np.random.default_rng(np.random.SeedSequence([_seed_entropy(seed), _STREAM_SCENE, index]))


def scene_label(rng: np.random.Generator, positive_fraction: float) -> int:
    return int(rng.random() < positive_fraction)


def original_ref(index: int, fmt: str = "") -> str:
    suffix = ".png" if fmt.endswith("_png") else ".jpg"
    return f"synthetic/{index:06d}{suffix}"


def generate(params: SyntheticParams) -> Iterator[SyntheticItem]:
    """`params.count` originals (index order), then the planted copies, then broken files."""
    count = params.count
    plan_rng = np.random.default_rng(np.random.SeedSequence([_seed_entropy(params.seed), _STREAM_PLANT, count]))
    plan = _plan_copies(plan_rng, params)
    wanted = {parent for parent, _, _ in plan}
    kept: dict[int, SyntheticItem] = {}
    for index in range(count):
        item = _original(params, index)
        if index in wanted:
            kept[index] = item
        yield item
    counters: dict[tuple[int, str], int] = {}
    broken_number = 0
    for parent_index, kind, variant in plan:
        parent = kept[parent_index]
        if kind == "broken":
            yield _broken(parent, variant, broken_number)
            broken_number += 1
            continue
        key = (parent_index, kind)
        counters[key] = counters.get(key, 0) + 1
        yield _copy(parent, kind, variant, counters[key], params, plan_rng)


def encode_jpeg(image: Image.Image, quality: int) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality, subsampling=2, optimize=False, progressive=False)
    return buffer.getvalue()


# ============================================================================== originals
def _seed_entropy(seed: int) -> int:
    """SeedSequence wants non-negative entropy: zig-zag the (possibly negative) seed."""
    return 2 * seed if seed >= 0 else -2 * seed - 1


def _original(params: SyntheticParams, index: int) -> SyntheticItem:
    rng = scene_rng(params.seed, index)
    label = scene_label(rng, params.positive_fraction)
    image, description = render_scene(rng, params.width, params.height, label)
    fmt = ODD_FORMATS.get(index % ODD_PERIOD, "")
    return SyntheticItem(
        ref=original_ref(index, fmt),
        data=_encode_original(image, fmt, params.jpeg_quality),
        label=label,
        scene_description=description,
        kind="original",
        parent=None,
        variant=fmt,
    )


def _encode_original(image: Image.Image, fmt: str, quality: int) -> bytes:
    if fmt == "":
        return encode_jpeg(image, quality)
    if fmt == "palette_png":
        return encode_png(image.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE))
    if fmt == "rgba_png":
        rgba = image.convert("RGBA")  # fully opaque: the decoder's RGBA path must not change pixels
        return encode_png(rgba)
    if fmt == "grayscale_jpeg":
        return encode_jpeg(image.convert("L"), quality)
    if fmt == "cmyk_jpeg":
        return encode_jpeg(image.convert("CMYK"), quality)
    if fmt == "exif_rotated_jpeg":
        # Orientation 6 = "rotate 90 degrees clockwise to display": store it turned the other way.
        exif = Image.Exif()
        exif[0x0112] = 6
        buffer = io.BytesIO()
        image.transpose(Image.Transpose.ROTATE_90).save(
            buffer, format="JPEG", quality=quality, subsampling=2, exif=exif.tobytes()
        )
        return buffer.getvalue()
    raise ValueError(f"unknown odd format {fmt!r}")


# ============================================================================== planted copies
def _plan_copies(rng: np.random.Generator, params: SyntheticParams) -> list[tuple[int, str, str]]:
    """(parent index, kind, variant) for every planted copy, in output order."""
    eligible = [i for i in range(params.count) if (i % ODD_PERIOD) not in ODD_FORMATS]

    def parents(n: int) -> list[int]:
        if n == 0:
            return []
        picked = rng.choice(len(eligible), size=n, replace=n > len(eligible))
        return [eligible[int(k)] for k in picked]

    plan: list[tuple[int, str, str]] = []
    for parent in parents(params.exact_duplicates):
        plan.append((parent, "exact_duplicate", "byte_copy"))
    for k, parent in enumerate(parents(params.pixel_duplicates)):
        plan.append((parent, "pixel_duplicate", PIXEL_VARIANTS[k % len(PIXEL_VARIANTS)]))
    for k, parent in enumerate(parents(params.near_duplicates)):
        plan.append((parent, "near_duplicate", NEAR_VARIANTS[k % len(NEAR_VARIANTS)]))
    for k, parent in enumerate(parents(params.broken_files)):
        plan.append((parent, "broken", BROKEN_VARIANTS[k % len(BROKEN_VARIANTS)]))
    return plan


def _stem(ref: str) -> str:
    return ref.rsplit(".", 1)[0]


def _insert_segment(jpeg: bytes, marker: int, payload: bytes) -> bytes:
    """Insert a JPEG marker segment right after SOI: metadata only, same decoded pixels."""
    assert jpeg[:2] == b"\xff\xd8"
    segment = bytes([0xFF, marker]) + (len(payload) + 2).to_bytes(2, "big") + payload
    return jpeg[:2] + segment + jpeg[2:]


def _copy(
    parent: SyntheticItem, kind: str, variant: str, number: int, params: SyntheticParams, rng: np.random.Generator
) -> SyntheticItem:
    stem = _stem(parent.ref)
    suffix = ".jpg"
    if kind == "exact_duplicate":
        data, name, how = parent.data, f"{stem}_dup{number}", "byte_copy"
    elif kind == "pixel_duplicate":
        name, how = f"{stem}_pix{number}", variant
        if variant == "jpeg_comment":
            data = _insert_segment(parent.data, 0xFE, f"re-saved copy {number}".encode())
        elif variant == "jpeg_app_marker":
            data = _insert_segment(parent.data, 0xEF, b"roadwork-synthetic\x00" + bytes([number % 256]))
        else:
            data, suffix = encode_png(load_rgb(io.BytesIO(parent.data))), ".png"
    else:
        name = f"{stem}_near{number}"
        data, how = _near_duplicate(parent.data, variant, params.jpeg_quality, rng)
    return SyntheticItem(
        ref=name + suffix,
        data=data,
        label=parent.label,
        scene_description=parent.scene_description,
        kind=kind,
        parent=parent.ref,
        variant=how,
    )


def _near_duplicate(data: bytes, variant: str, quality: int, rng: np.random.Generator) -> tuple[bytes, str]:
    """A modest re-upload style transform; returns (jpeg bytes, variant name)."""
    image = load_rgb(io.BytesIO(data))
    w, h = image.size
    if variant == "jpeg":
        q = int(rng.choice([50, 55, 60, 65, 70, 75]))
        if q == quality:
            q -= 5
        return encode_jpeg(image, q), f"jpeg_q{q}"
    if variant == "resize":
        f = int(rng.integers(12, 19)) * 5  # 60..90 percent
        size = (max(8, (w * f + 50) // 100), max(8, (h * f + 50) // 100))
        return encode_jpeg(image.resize(size, Image.Resampling.BILINEAR), quality), f"resize_0.{f:02d}"
    if variant == "crop":
        f = int(rng.integers(92, 98))  # keep 92..97 percent of each side
        cw, ch = (w * f + 50) // 100, (h * f + 50) // 100
        x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        return encode_jpeg(image.crop((x0, y0, x0 + cw, y0 + ch)), quality), f"crop_0.{f:02d}"
    if variant in ("brighter", "darker"):
        f = int(rng.integers(110, 121)) if variant == "brighter" else int(rng.integers(80, 91))
        array = (np.asarray(image, dtype=np.uint32) * f + 50) // 100
        out = Image.fromarray(np.minimum(array, 255).astype(np.uint8))
        return encode_jpeg(out, quality), f"{variant}_{f // 100}.{f % 100:02d}"
    raise ValueError(f"unknown near-duplicate variant {variant!r}")


def _broken(parent: SyntheticItem, variant: str, number: int) -> SyntheticItem:
    """A file that must fail to decode. Truncated ones keep their parent's label/description."""
    label, description, source = 0, "", None
    suffix = ".jpg"
    if variant == "zero_byte":
        data = b""
    elif variant == "truncated":
        data, source = parent.data[: len(parent.data) // 2], parent
    elif variant == "truncated_early":
        data, source = parent.data[: max(4, len(parent.data) // 6)], parent
    elif variant == "truncated_png":
        png = encode_png(load_rgb(io.BytesIO(parent.data)))
        data, source, suffix = png[: len(png) // 2], parent, ".png"
    elif variant == "not_an_image":
        data = b"This is not an image. It is a text file that was saved with a .jpg name.\n" * 4
    elif variant == "html_page":
        data = (
            b"<!DOCTYPE html>\n<html><head><title>404 Not Found</title></head>\n"
            b"<body><h1>Not Found</h1><p>The requested image was not found.</p></body></html>\n"
        )
    else:
        raise ValueError(f"unknown broken variant {variant!r}")
    if source is not None:
        label, description = source.label, source.scene_description
    return SyntheticItem(
        ref=f"synthetic/broken_{number:03d}{suffix}",
        data=data,
        label=label,
        scene_description=description,
        kind="broken",
        parent=source.ref if source is not None else None,
        variant=variant,
    )

"""The procedural street scenes (data/scene.py), the synthetic dataset (data/synthetic.py) and the colour baseline."""

import io
from collections import Counter

import imagehash
import numpy as np
import pytest
from PIL import Image, ImageOps
from sklearn.metrics import matthews_corrcoef

from roadwork.config import SyntheticParams
from roadwork.data.scene import render_scene
from roadwork.data.synthetic import BROKEN_VARIANTS, ODD_FORMATS, SyntheticItem, generate, scene_rng
from roadwork.evaluate.baseline import colour_features, colour_histogram_features, colour_scorer, fit_colour_baseline

NO_COPIES = dict(exact_duplicates=0, pixel_duplicates=0, near_duplicates=0, broken_files=0)


def decode(data: bytes) -> Image.Image:
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        return ImageOps.exif_transpose(image).convert("RGB")


def as_tuple(item: SyntheticItem):
    return (item.ref, item.data, item.label, item.scene_description, item.kind, item.parent, item.variant)


@pytest.fixture(scope="module")
def default_items() -> list[SyntheticItem]:
    """The default's settings (planted copies included) on 1,500 scenes (the default renders more)."""
    return list(generate(SyntheticParams(count=1500)))


@pytest.fixture(scope="module")
def originals(default_items):
    return [item for item in default_items if item.kind == "original"]


# ------------------------------------------------------------------------------ determinism
def test_two_runs_give_identical_bytes():
    params = SyntheticParams(count=40, exact_duplicates=3, pixel_duplicates=3, near_duplicates=5, broken_files=6)
    first = [as_tuple(item) for item in generate(params)]
    second = [as_tuple(item) for item in generate(params)]
    assert first == second
    assert len(first) == 40 + 3 + 3 + 5 + 6


def test_scene_i_does_not_depend_on_count():
    few = [item for item in generate(SyntheticParams(count=12, **NO_COPIES))]
    many = [item for item in generate(SyntheticParams(count=45, near_duplicates=4))][:12]
    assert [as_tuple(item) for item in few] == [as_tuple(item) for item in many]
    # the public per-scene stream reproduces the same picture
    image_a, text_a = render_scene(scene_rng(0, 7), 96, 96, 1)
    image_b, text_b = render_scene(scene_rng(0, 7), 96, 96, 1)
    assert text_a == text_b and image_a.tobytes() == image_b.tobytes()


def test_seed_changes_every_scene():
    a = list(generate(SyntheticParams(count=10, seed=0, **NO_COPIES)))
    b = list(generate(SyntheticParams(count=10, seed=1, **NO_COPIES)))
    c = list(generate(SyntheticParams(count=10, seed=-1, **NO_COPIES)))
    for x, y, z in zip(a, b, c):
        assert len({x.data, y.data, z.data}) == 3


# ------------------------------------------------------------------------------ labels
def test_descriptions_follow_the_validators_rule(default_items):
    for item in default_items:
        assert item.label in (0, 1)
        assert bool(item.scene_description.strip()) == (item.label == 1), item.ref
    positives = [item.scene_description for item in default_items if item.label == 1 and item.kind == "original"]
    assert all(text.startswith("Road work") for text in positives)
    assert len(set(positives)) > 50  # descriptions follow the scene, not one template


def test_class_ratio_near_positive_fraction(originals):
    share = np.mean([item.label for item in originals])
    assert abs(share - SyntheticParams().positive_fraction) < 0.035  # binomial sd at n=1500 is at most 0.013
    half = [item.label for item in generate(SyntheticParams(count=200, positive_fraction=0.5, **NO_COPIES))]
    assert 0.38 < np.mean(half) < 0.62


# ------------------------------------------------------------------------------ planted copies
def test_planted_kinds_in_requested_numbers(default_items):
    params = SyntheticParams(count=1500)
    kinds = Counter(item.kind for item in default_items)
    assert kinds == {
        "original": params.count,
        "exact_duplicate": params.exact_duplicates,
        "pixel_duplicate": params.pixel_duplicates,
        "near_duplicate": params.near_duplicates,
        "broken": params.broken_files,
    }
    refs = [item.ref for item in default_items]
    assert len(set(refs)) == len(refs)
    originals = {item.ref: item for item in default_items if item.kind == "original"}
    for item in default_items:
        if item.kind == "original":
            assert item.parent is None
        elif item.kind in ("exact_duplicate", "pixel_duplicate", "near_duplicate"):
            parent = originals[item.parent]  # exists
            assert (item.label, item.scene_description) == (parent.label, parent.scene_description)
            assert item.variant
        elif item.parent is not None:
            assert item.parent in originals


def test_exact_duplicates_are_byte_identical(default_items):
    by_ref = {item.ref: item for item in default_items}
    copies = [item for item in default_items if item.kind == "exact_duplicate"]
    assert copies
    for item in copies:
        assert item.data == by_ref[item.parent].data


def test_pixel_duplicates_decode_to_the_same_pixels(default_items):
    by_ref = {item.ref: item for item in default_items}
    copies = [item for item in default_items if item.kind == "pixel_duplicate"]
    assert {item.variant for item in copies} >= {"jpeg_comment", "png_lossless"}
    for item in copies:
        parent = by_ref[item.parent]
        assert item.data != parent.data
        assert np.array_equal(np.asarray(decode(item.data)), np.asarray(decode(parent.data))), item.ref


def test_near_duplicates_differ_but_stay_close_by_phash(default_items):
    by_ref = {item.ref: item for item in default_items}
    copies = [item for item in default_items if item.kind == "near_duplicate"]
    families = {item.variant.split("_")[0] for item in copies}
    assert families == {"jpeg", "resize", "crop", "brighter", "darker"}
    distances = []
    for item in copies:
        parent = by_ref[item.parent]
        assert item.data != parent.data
        mine, theirs = decode(item.data), decode(parent.data)
        assert mine.size != theirs.size or not np.array_equal(np.asarray(mine), np.asarray(theirs))
        distances.append(imagehash.phash(mine) - imagehash.phash(theirs))
    recall = np.mean(np.array(distances) <= 10)
    assert recall >= 0.85, sorted(distances)


def test_broken_files_fail_to_decode(default_items):
    broken = [item for item in default_items if item.kind == "broken"]
    assert {item.variant for item in broken} == set(BROKEN_VARIANTS)
    for item in broken:
        with pytest.raises((OSError, SyntaxError, ValueError)):
            with Image.open(io.BytesIO(item.data)) as image:
                image.load()
    assert any(item.data == b"" for item in broken)


def test_odd_formats_are_present_and_decodable():
    items = list(generate(SyntheticParams(count=30, width=64, height=48, **NO_COPIES)))
    modes = {}
    for item in items:
        with Image.open(io.BytesIO(item.data)) as image:
            image.load()
            modes[item.variant] = (image.format, image.mode, image.getexif().get(0x0112))
            assert ImageOps.exif_transpose(image).size == (64, 48), item.ref
    assert set(modes) == {""} | set(ODD_FORMATS.values())
    assert modes["palette_png"][:2] == ("PNG", "P")
    assert modes["rgba_png"][:2] == ("PNG", "RGBA")
    assert modes["grayscale_jpeg"][:2] == ("JPEG", "L")
    assert modes["cmyk_jpeg"][:2] == ("JPEG", "CMYK")
    assert modes["exif_rotated_jpeg"] == ("JPEG", "RGB", 6)
    assert modes[""][:2] == ("JPEG", "RGB")


# ------------------------------------------------------------------------------ sizes
def test_width_and_height_are_respected():
    items = list(
        generate(
            SyntheticParams(
                count=8, width=80, height=48, near_duplicates=5, exact_duplicates=1, pixel_duplicates=1, broken_files=0
            )
        )
    )
    for item in items:
        size = decode(item.data).size
        if item.kind == "near_duplicate" and not item.variant.startswith(("jpeg", "brighter", "darker")):
            assert size[0] < 80 and size[1] < 48
        else:
            assert size == (80, 48), item.ref


def test_full_size_scene_renders():
    image, text = render_scene(scene_rng(0, 3), 4032, 3024, 1)
    assert image.mode == "RGB" and image.size == (4032, 3024)
    assert text.startswith("Road work")
    small = np.asarray(image.reduce(16), dtype=np.float64)
    assert small.std() > 10  # a picture, not a blank


# ------------------------------------------------------------------------------ content
def test_distinct_scenes_rarely_share_a_phash(originals):
    hashes = np.array([int(str(imagehash.phash(decode(item.data))), 16) for item in originals[:400]], dtype=np.uint64)
    distance = np.bitwise_count(hashes[:, None] ^ hashes[None, :])
    pairs = distance[np.triu_indices(len(hashes), 1)]
    assert np.mean(pairs <= 10) < 0.001


def test_colour_baseline_reaches_full_mcc_when_colour_does_decide():
    rng = np.random.default_rng(0)
    images, labels = [], []
    for k in range(60):
        label = k % 2
        base = np.array([200, 80, 20]) if label else np.array([40, 90, 200])
        pixels = np.clip(base + rng.integers(-25, 26, size=(16, 16, 3)), 0, 255).astype(np.uint8)
        images.append(Image.fromarray(pixels))
        labels.append(label)
    model = fit_colour_baseline(images[:40], labels[:40])
    assert matthews_corrcoef(labels[40:], model.predict(images[40:])) == 1.0
    features = colour_histogram_features(images[:3], bins=4)
    assert features.shape == (3, 64) and np.allclose(features.sum(axis=1), 1.0)


def test_colour_features_of_a_large_photo_are_read_from_a_reduction():
    rng = np.random.default_rng(1)
    blocks = rng.integers(0, 256, size=(8, 10, 3), dtype=np.uint8)  # 8 x 10 flat colour blocks
    large = Image.fromarray(np.kron(blocks, np.ones((100, 100, 1), dtype=np.uint8)))  # 1000 x 800
    small = Image.fromarray(np.kron(blocks, np.ones((20, 20, 1), dtype=np.uint8)))  # 200 x 160, unreduced
    reduced, full = colour_features([large, small]), colour_histogram_features([large])
    other = colour_histogram_features([Image.fromarray(np.roll(blocks, 1, axis=2))])[0]  # other colours
    # the same colours up to the blocks' edges (blended by the resize; ~17% of pixels at 22 px blocks)
    assert np.abs(reduced[0] - full[0]).sum() < 0.25 < 1.0 < np.abs(other - full[0]).sum()
    assert np.array_equal(reduced[1], colour_histogram_features([small])[0])  # at most 224 px: as it is
    images = [Image.fromarray(np.full((30, 30, 3), c, dtype=np.uint8)) for c in ((200, 80, 20), (40, 90, 200))] * 4
    model = fit_colour_baseline(colour_features(images), [1, 0] * 4, C=1.0)
    assert np.all((colour_scorer(model)(images) > 0.5) == np.array([True, False] * 4))


def test_colour_alone_does_not_decide_the_label(originals):
    images = [decode(item.data) for item in originals]
    labels = np.array([item.label for item in originals])
    features = colour_histogram_features(images)
    order = np.random.default_rng(0).permutation(len(labels))
    train, test = order[: int(0.6 * len(order))], order[int(0.6 * len(order)) :]
    model = fit_colour_baseline(features[train], labels[train], seed=0)
    mcc = matthews_corrcoef(labels[test], model.predict(features[test]))
    assert mcc < 0.6, f"colour-histogram baseline reaches MCC {mcc:.3f}: the negatives need stronger distractors"

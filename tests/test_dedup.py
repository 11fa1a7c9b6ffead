"""pHash, near-duplicate pair search, and deduplication (exact, near, chains, label conflicts)."""

from __future__ import annotations

import hashlib
import io
import random

import numpy as np
import pytest
from kit.images import encode
from PIL import Image, ImageDraw, ImageFilter
from scipy.fft import dctn

from roadwork.data.dedup import DedupResult, ImageRecord, UnionFind, conflict_warnings, deduplicate, diameter
from roadwork.data.hamming import find_near_duplicate_pairs, hamming_distance
from roadwork.data.phash import phash64, phash_from_hex, phash_hex
from roadwork.data.recall import (
    chaining_report,
    false_pair_rate,
    false_pairs,
    pair_metrics,
    pair_recall,
    planted_pairs,
    planted_truth,
)


# ------------------------------------------------------------------------------ image helpers
def street_scene(seed: int, width: int = 256, height: int = 192) -> Image.Image:
    """A procedural 'street': sky gradient, road trapezoid, buildings, blobs, sensor noise."""
    rng = np.random.default_rng(seed)
    y = np.linspace(0, 1, height)[:, None, None]
    top, bottom = rng.integers(80, 220, 3), rng.integers(20, 160, 3)
    sky = (top * (1 - y) + bottom * y) * np.ones((1, width, 1))
    image = Image.fromarray(sky.astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(image)
    horizon = int(height * rng.uniform(0.35, 0.6))
    road = [
        (int(width * rng.uniform(0.3, 0.5)), horizon),
        (int(width * rng.uniform(0.5, 0.7)), horizon),
        (width, height),
        (0, height),
    ]
    draw.polygon(road, fill=tuple(int(v) for v in rng.integers(40, 110, 3)))
    for _ in range(int(rng.integers(4, 9))):
        x0, y0 = int(rng.integers(0, width - 20)), int(rng.integers(0, horizon))
        draw.rectangle(
            [x0, y0, x0 + int(rng.integers(10, 80)), horizon], fill=tuple(int(v) for v in rng.integers(0, 256, 3))
        )
    for _ in range(int(rng.integers(2, 6))):
        x0, y0, r = int(rng.integers(0, width - 20)), int(rng.integers(horizon, height - 10)), int(rng.integers(5, 25))
        draw.ellipse([x0, y0, x0 + r, y0 + 2 * r], fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
    noisy = np.asarray(image, dtype=float) + rng.normal(0, 6, (height, width, 3))
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8), "RGB").filter(ImageFilter.GaussianBlur(1))


def decode(data: bytes) -> Image.Image:
    with Image.open(io.BytesIO(data)) as image:
        return image.convert("RGB")


def record_from_bytes(rid: str, data: bytes, label: int) -> dict:
    image = decode(data)
    pixels = hashlib.sha256(f"{image.size}".encode() + image.tobytes()).hexdigest()
    return {
        "id": rid,
        "file_sha256": hashlib.sha256(data).hexdigest(),
        "pixel_sha256": pixels,
        "phash": phash64(image),
        "label": label,
    }


def slow_phash(image: Image.Image) -> int:
    """Independent recomputation of the documented algorithm: explicit (unnormalised) DCT-II sums
    for the 8x8 block, checked against dctn; bit = coefficient > median of all 64."""
    gray = np.asarray(image.convert("L").resize((32, 32), Image.Resampling.LANCZOS), dtype=np.float64)
    n = 32
    k = np.arange(n)
    basis = np.cos(np.pi * (2 * k[None, :] + 1) * k[:, None] / (2 * n))  # basis[u, x]
    coefficients = np.zeros((8, 8))
    for u in range(8):
        for v in range(8):
            coefficients[u, v] = 4 * np.sum(gray * np.outer(basis[u], basis[v]))  # 2 per axis
    np.testing.assert_allclose(coefficients, dctn(gray, type=2)[:8, :8], rtol=1e-9, atol=1e-6)
    flat = coefficients.ravel()
    median = np.median(flat)
    value = 0
    for bit in flat > median:
        value = (value << 1) | int(bit)
    return value


# ----------------------------------------------------------------------------------- phash64
@pytest.fixture(scope="module")
def scenes():
    return [street_scene(seed) for seed in range(16)]


def test_phash_is_deterministic_and_64_bit(scenes):
    image = scenes[0]
    value = phash64(image)
    assert isinstance(value, int) and 0 <= value < 2**64
    assert phash64(image.copy()) == value
    assert phash64(decode(encode(image, "PNG"))) == value  # lossless round trip: same pixels
    assert phash_from_hex(phash_hex(value)) == value and len(phash_hex(value)) == 16
    # pixel-identical images in other modes hash the same
    assert phash64(image.convert("RGBA")) == value


def orthonormal_dct_phash(image: Image.Image) -> int:
    """The same hash with an orthonormal DCT (scales row and column 0 by 1/sqrt(2)): NOT ours."""
    gray = np.asarray(image.convert("L").resize((32, 32), Image.Resampling.LANCZOS), dtype=np.float64)
    flat = dctn(gray, type=2, norm="ortho")[:8, :8].ravel()
    return int("".join("1" if c else "0" for c in flat > np.median(flat)), 2)


def test_phash_matches_slow_recomputation(scenes):
    # scenes 59 and 62 are ones where an orthonormal DCT would set other bits: the test tells
    # the two conventions apart (it agrees on most images, e.g. all of scenes[:16])
    tricky = [street_scene(59), street_scene(62)]
    for image in tricky:
        assert orthonormal_dct_phash(image) != slow_phash(image)
    for image in scenes[:3] + tricky:
        assert phash64(image) == slow_phash(image)


def test_phash_small_distance_for_resized_reencoded_copy(scenes):
    for image in scenes[:8]:
        original = phash64(image)
        smaller = phash64(decode(encode(image.resize((128, 96), Image.Resampling.BILINEAR), quality=60)))
        larger = phash64(decode(encode(image.resize((400, 300), Image.Resampling.BICUBIC), quality=40)))
        assert hamming_distance(original, smaller) <= 4
        assert hamming_distance(original, larger) <= 4


def test_phash_large_distance_for_unrelated_images(scenes):
    hashes = [phash64(image) for image in scenes]
    distances = [hamming_distance(a, b) for k, a in enumerate(hashes) for b in hashes[k + 1 :]]
    assert min(distances) > 12  # well above the default near-duplicate threshold of 10
    assert 24 <= float(np.median(distances)) <= 40  # unrelated hashes differ in ~half the bits


def test_phash_brightness_offset_keeps_ac_bits(scenes):
    # adding a constant changes only the DC coefficient of the DCT; the DC term stays the largest
    # coefficient, so the median and the AC bits do not move (no clipping in this range)
    gray = scenes[1].convert("L")
    pixels = np.asarray(gray, dtype=np.int16)
    pixels = 40 + (pixels - pixels.min()) * 150 // max(1, int(pixels.max() - pixels.min()))
    base = Image.fromarray(pixels.astype(np.uint8), "L")
    brighter = Image.fromarray((pixels + 50).astype(np.uint8), "L")
    assert hamming_distance(phash64(base), phash64(brighter)) <= 1


def test_phash_hex_is_imagehash_string(scenes):
    import imagehash

    for image in scenes[:6]:  # the stored text form is imagehash's own: other tools can compare
        assert phash_hex(phash64(image)) == str(imagehash.phash(image))


def test_hamming_distance():
    assert hamming_distance(0, 0) == 0
    assert hamming_distance(0, 2**64 - 1) == 64
    assert hamming_distance(np.uint64(0b1011), 0b0001) == 2
    with pytest.raises(ValueError):
        hamming_distance(-1, 0)
    with pytest.raises(ValueError):
        hamming_distance(2**64, 0)


def test_phash_rejects_non_images():
    with pytest.raises(TypeError):
        phash64(np.zeros((32, 32)))


# ---------------------------------------------------------------------- near-duplicate pairs
def brute_pairs(hashes, max_distance):
    values = [int(h) for h in hashes]
    out = []
    for i in range(len(values)):
        for j in range(i + 1, len(values)):
            if (values[i] ^ values[j]).bit_count() <= max_distance:
                out.append((i, j))
    return out


def flip(value: int, k: int, rng: random.Random) -> int:
    for bit in rng.sample(range(64), k):
        value ^= 1 << bit
    return value


@pytest.fixture(scope="module")
def planted_hashes():
    rng = random.Random(7)
    values = [rng.getrandbits(64) for _ in range(260)]
    # planted pairs at every distance 0..12 (several of each)
    for distance in list(range(13)) * 3:
        values.append(flip(rng.choice(values[:260]), distance, rng))
    # a family: many copies of one parent, a few bits each -> dense cross pairs
    parent = rng.getrandbits(64)
    values += [flip(parent, rng.randint(0, 6), rng) for _ in range(25)]
    # chain a~b~c with distance 6 steps
    a = rng.getrandbits(64)
    b = flip(a, 6, rng)
    values += [a, b, flip(b, 6, rng)]
    # hashes concentrated in the low bits (skewed chunks), including values >= 2**63
    values += [rng.getrandbits(12) for _ in range(30)]
    values += [2**64 - 1 - rng.getrandbits(12) for _ in range(20)]
    rng.shuffle(values)
    return values


@pytest.mark.parametrize("max_distance", [0, 1, 3, 5, 8, 10, 12, 16])
def test_pairs_equal_brute_force(planted_hashes, max_distance):
    expected = brute_pairs(planted_hashes, max_distance)
    assert len(expected) > 0
    for kwargs in (
        {},
        {"method": "blocked"},
        {"method": "blocked", "block_rows": 1},
        {"method": "blocked", "block_rows": 7},
        {"method": "blocked", "block_elements": 500},
        {"method": "mih"},
        {"method": "mih", "block_elements": 1},
        {"method": "mih", "block_elements": 97},
    ):
        got = find_near_duplicate_pairs(np.array(planted_hashes, dtype=np.uint64), max_distance, **kwargs)
        assert got.dtype == np.int64 and got.ndim == 2 and got.shape[1] == 2, kwargs
        assert [tuple(p) for p in got.tolist()] == expected, (max_distance, kwargs)


def test_pairs_input_forms_and_edge_cases():
    assert find_near_duplicate_pairs(np.array([], dtype=np.uint64), 10).shape == (0, 2)
    assert find_near_duplicate_pairs([5], 10).shape == (0, 2)
    big = [2**64 - 1, 2**64 - 2, 0]
    assert find_near_duplicate_pairs(big, 1).tolist() == [[0, 1]]  # Python ints >= 2**63
    assert find_near_duplicate_pairs(np.array([3, 1, 3], dtype=np.int64), 0).tolist() == [[0, 2]]
    assert find_near_duplicate_pairs([1, 2, 4], 64).tolist() == [[0, 1], [0, 2], [1, 2]]
    with pytest.raises(ValueError):
        find_near_duplicate_pairs(np.array([-1, 2], dtype=np.int64), 3)
    with pytest.raises(ValueError):
        find_near_duplicate_pairs([1, 2], -1)
    with pytest.raises(ValueError):
        find_near_duplicate_pairs([1, 2], 3, method="bogus")


def test_pairs_many_identical_hashes_stay_exact():
    # concentrated data: auto must still be exact (and choose brute force when cheaper)
    rng = random.Random(3)
    values = [rng.choice([0, 1, 3, 2**40]) for _ in range(300)]
    expected = [list(p) for p in brute_pairs(values, 2)]
    for method in ("auto", "mih", "blocked"):
        assert find_near_duplicate_pairs(values, 2, method=method).tolist() == expected, method


def test_mih_chunk_radii_satisfy_pigeonhole():
    from roadwork.data.hamming import _chunk_layout, _chunk_radii

    for m in range(1, 20):
        layout = _chunk_layout(m)
        assert sum(width for _, width in layout) == 64 and layout[0][0] == 0
        for d in range(0, 40):
            radii = _chunk_radii(m, d)
            assert sum(r + 1 for r in radii) > d and min(radii) >= 0


def test_pairs_random_larger_sample_mih_vs_blocked():
    rng = np.random.default_rng(11)
    hashes = rng.integers(0, 2**64, size=3000, dtype=np.uint64)
    hashes[1500:1600] = hashes[:100] ^ np.uint64(0b1011_0000_0001)  # 100 planted at distance 4
    mih = find_near_duplicate_pairs(hashes, 10, method="mih")
    blocked = find_near_duplicate_pairs(hashes, 10, method="blocked")
    assert np.array_equal(mih, blocked)
    assert {(i, i + 1500) for i in range(100)} <= {tuple(p) for p in mih.tolist()}


# ------------------------------------------------------------------------------- union-find
def test_union_find_components():
    uf = UnionFind(6)
    uf.union_pairs([(0, 3), (3, 5), (1, 2)])
    assert uf.components() == [[0, 3, 5], [1, 2], [4]]


# ------------------------------------------------------------------------------------ dedup
def rec(rid, label=0, phash=None, file=None, pixel=None):
    """A synthetic record; unique digests unless given."""
    return {
        "id": rid,
        "file_sha256": file or f"file-{rid}",
        "pixel_sha256": pixel or f"pix-{rid}",
        "phash": random.Random(rid).getrandbits(64) if phash is None else phash,
        "label": label,
    }


def test_exact_and_pixel_duplicates_removed_with_reason():
    records = [
        rec("b", phash=0xAAAA, file="F1", pixel="P1"),
        rec("a", phash=0xAAAA, file="F1", pixel="P1"),  # byte-identical to b
        rec("c", phash=0xAAAA, file="F2", pixel="P1"),  # same pixels, other bytes
        rec("d"),
    ]
    result = deduplicate(records, max_hamming=10)
    assert [r.id for r in result.kept] == ["a", "d"]
    assert result.removed_reasons() == {"b": "exact_duplicate_of:a", "c": "exact_duplicate_of:a"}
    assert result.counts["removed_exact_duplicate"] == 2
    assert result.counts["input"] == 4 and result.counts["kept"] == 2
    assert result.near_pairs == ()  # exact copies are not reported as near pairs
    assert all(r.cluster == r.id for r in result.kept)


def test_near_duplicates_grouped_and_chains_form_one_cluster():
    a = 0x0123_4567_89AB_CDEF
    b = a ^ 0b111111  # 6 bits from a
    c = b ^ (0b111111 << 20)  # 6 from b, 12 from a
    far = ~a & (2**64 - 1)
    records = [rec("n3", 0, c), rec("n1", 0, a), rec("n2", 0, b), rec("x", 0, far), rec("y", 1)]
    result = deduplicate(records, max_hamming=10)
    clusters = result.cluster_of()
    assert clusters["n1"] == clusters["n2"] == clusters["n3"] == "n1"
    assert clusters["x"] == "x" and clusters["y"] == "y"
    assert result.removed == ()
    assert set(result.near_pairs) == {("n1", "n2", 6), ("n2", "n3", 6)}
    assert result.counts["kept_clusters_with_near_duplicates"] == 1

    dropped = deduplicate(records, max_hamming=10, near_duplicates="drop")
    assert [r.id for r in dropped.kept] == ["n1", "x", "y"]
    assert dropped.removed_reasons() == {"n2": "near_duplicate_of:n1", "n3": "near_duplicate_of:n1"}
    # at max_hamming 5 nothing is near
    assert all(r.cluster == r.id for r in deduplicate(records, max_hamming=5).kept)


def test_label_conflict_drop_removes_whole_cluster():
    records = [
        rec("p1", 1, 0xF0F0),
        rec("p2", 0, 0xF0F1),  # near p1, other label
        rec("p3", 1, 0xF0F0, file="F", pixel="P"),
        rec("p4", 1, 0xF0F0, file="F", pixel="P"),  # exact copy of p3 inside the same cluster
        rec("q", 1),
    ]
    result = deduplicate(records, max_hamming=4, label_conflict="drop")
    assert [r.id for r in result.kept] == ["q"]
    assert result.removed_reasons() == {f"p{k}": "label_conflict" for k in range(1, 5)}
    (conflict,) = result.conflicts
    assert conflict.cluster == "p1"
    assert conflict.ids == ("p1", "p2", "p3", "p4") and conflict.labels == (1, 0, 1, 1)
    assert conflict.resolution == "dropped"
    assert result.counts["label_conflicts"] == 1 and result.counts["removed_label_conflict"] == 4


def test_label_conflict_majority_and_tie():
    records = [
        rec("m1", 0, 0xF0F0),
        rec("m2", 1, 0xF0F1),
        rec("m3", 1, 0xF0F3),
        rec("t1", 0, 0xFF00_0000_0000_0000),
        rec("t2", 1, 0xFF00_0000_0000_0001),
        # byte-identical image labelled both ways: a conflict inside an exact group
        rec("e1", 1, 0x0F0F_0000_0000_0000, file="E", pixel="EP"),
        rec("e2", 1, 0x0F0F_0000_0000_0000, file="E", pixel="EP"),
        rec("e3", 0, 0x0F0F_0000_0000_0000, file="E", pixel="EP"),
    ]
    result = deduplicate(records, max_hamming=4, label_conflict="majority")
    kept = {r.id: r for r in result.kept}
    assert set(kept) == {"m1", "m2", "m3", "e1"}
    assert kept["m1"].label == 1 and kept["m1"].original_label == 0 and kept["m1"].relabelled
    assert kept["m2"].label == 1 and not kept["m2"].relabelled
    assert kept["e1"].label == 1  # exact copies vote: 2 x 1 against 1 x 0
    reasons = result.removed_reasons()
    assert reasons == {
        "t1": "label_conflict",
        "t2": "label_conflict",
        "e2": "exact_duplicate_of:e1",
        "e3": "exact_duplicate_of:e1",
    }
    resolutions = {c.cluster: c.resolution for c in result.conflicts}
    assert resolutions == {"e1": "majority:1", "m1": "majority:1", "t1": "dropped_tie"}
    assert result.counts["relabelled"] == 1


def test_dedup_is_order_independent():
    rng = random.Random(5)
    records = []
    for k in range(200):
        parent = rng.getrandbits(64)
        records.append(rec(f"img{k:03d}", rng.random() < 0.3, parent))
        if k % 10 == 0:
            records.append(rec(f"near{k:03d}", rng.random() < 0.3, flip(parent, rng.randint(0, 8), rng)))
        if k % 17 == 0:
            records.append(rec(f"copy{k:03d}", records[-1]["label"], records[-1]["phash"], file=f"F{k}", pixel=f"P{k}"))
            records.append(
                rec(f"copyb{k:03d}", records[-2]["label"], records[-2]["phash"], file=f"F{k}", pixel=f"P{k}")
            )
    for policy in ("drop", "majority"):
        for near in ("group", "drop"):
            reference = deduplicate(records, 10, policy, near)
            assert reference.counts["kept"] + reference.counts["removed"] == len(records)
            for trial in range(3):
                shuffled = records[:]
                random.Random(trial).shuffle(shuffled)
                assert deduplicate(shuffled, 10, policy, near) == reference


def test_dedup_accepts_dataclass_records_and_validates():
    records = [ImageRecord("a", "f1", "p1", 1, 0), ImageRecord("b", "f2", "p2", 1, 0)]
    result = deduplicate(records, 0)
    assert isinstance(result, DedupResult)
    assert [r.cluster for r in result.kept] == ["a", "a"]
    assert result.kept[0].record is records[0]
    with pytest.raises(ValueError, match="duplicate record id"):
        deduplicate([rec("a"), rec("a")])
    with pytest.raises(ValueError, match="label"):
        deduplicate([rec("a", label=2)])
    with pytest.raises(ValueError):
        deduplicate([rec("a")], label_conflict="vote")


def test_dedup_end_to_end_on_real_images(scenes):
    """Decode-hash-dedup on encoded images: byte copies, pixel copies, near copies, distinct."""
    records, planted = [], []
    for k, image in enumerate(scenes[:10]):
        label = int(k % 3 == 0)
        data = encode(image, quality=90)
        records.append(record_from_bytes(f"s{k:02d}", data, label))
        if k < 3:
            records.append(record_from_bytes(f"s{k:02d}_bytes", data, label))
        if 3 <= k < 6:  # same pixels, different file bytes: PNG of the decoded JPEG
            records.append(record_from_bytes(f"s{k:02d}_png", encode(decode(data), "PNG"), label))
        if k >= 6:  # near duplicate: resized and re-encoded
            small = decode(data).resize((160, 120), Image.Resampling.BILINEAR)
            records.append(record_from_bytes(f"s{k:02d}_near", encode(small, quality=50), label))
            planted.append((f"s{k:02d}_near", f"s{k:02d}"))
    result = deduplicate(records, max_hamming=10)
    reasons = result.removed_reasons()
    assert {rid: reasons[rid] for rid in reasons} == {
        **{f"s{k:02d}_bytes": f"exact_duplicate_of:s{k:02d}" for k in range(3)},
        **{f"s{k:02d}_png": f"exact_duplicate_of:s{k:02d}" for k in range(3, 6)},
    }
    clusters = result.cluster_of()
    for near, parent in planted:
        assert clusters[near] == clusters[parent] == parent
    assert result.counts["kept_clusters"] == 10
    found = [(a, b) for a, b, _ in result.near_pairs]
    assert pair_recall(found, planted) == 1.0
    assert false_pair_rate(found, planted, len(records)) == 0.0


# ---------------------------------------------------------------------- measurement helpers
def test_pair_recall_and_false_pair_rate():
    true = [("c1", "p"), ("c2", "p")]
    found = [("p", "c1"), ("c1", "c2"), ("x", "y")]
    assert pair_recall(found, true) == 0.5
    # c1~c2 are copies of the same parent: a true duplicate pair, not a false one
    assert false_pairs(found, true) == [("x", "y")]
    assert false_pair_rate(found, true, n=5) == pytest.approx(1 / 10)
    assert pair_recall([], []) == 1.0
    assert false_pair_rate([], [], n=1) == 0.0
    # index pairs from find_near_duplicate_pairs work directly
    pairs = find_near_duplicate_pairs([0, 1, 2**40 + 2**41 + 7], 1)
    metrics = pair_metrics(pairs, [(1, 0)], n=3)
    assert metrics["recall"] == 1.0 and metrics["false_pairs"] == 0 and metrics["found_pairs"] == 1


def test_planted_pairs_skip_originals_and_broken_files():
    rows = [
        {"ref": "a.jpg", "kind": "original", "parent": ""},
        {"ref": "a_dup1.jpg", "kind": "exact_duplicate", "parent": "a.jpg"},
        {"ref": "a_near1.jpg", "kind": "near_duplicate", "parent": "a.jpg"},
        {"ref": "broken_000.jpg", "kind": "broken", "parent": "a.jpg"},
        {"ref": "b.jpg", "kind": "original", "parent": None},
    ]
    planted, near = planted_pairs(rows)
    assert planted == [("a_dup1.jpg", "a.jpg"), ("a_near1.jpg", "a.jpg")]
    assert near == [("a_near1.jpg", "a.jpg")]


def test_planted_truth_measures_the_synthetic_plants(tmp_path):
    from roadwork.config import parse_params
    from roadwork.data.ingest import ingest
    from roadwork.stages.dedup import manifest_records

    synthetic = dict(count=120, exact_duplicates=3, pixel_duplicates=3, near_duplicates=10, broken_files=2)
    ingest(parse_params({"data": {"synthetic": synthetic}}).data, tmp_path / "raw")
    records = manifest_records(tmp_path / "raw")
    truth = planted_truth(tmp_path / "raw", records, max_hamming=12)
    assert truth["planted_near_duplicates"] == 10
    assert truth["near_duplicate_recall"] >= 0.8  # mild transforms (re-encode, resize, crop, brightness)
    assert truth["false_pairs"] <= 2 and truth["false_pair_rate"] < 1e-3
    # distance 0 finds only the copies whose pHash did not move (60% here): recall drops
    assert (
        planted_truth(tmp_path / "raw", records, max_hamming=0)["near_duplicate_recall"]
        < truth["near_duplicate_recall"]
    )
    (tmp_path / "raw" / "truth.csv").unlink()
    assert planted_truth(tmp_path / "raw", records, max_hamming=12) is None


# ------------------------------------------------------------------- cluster shape and warnings
def test_diameter_is_the_largest_pairwise_distance():
    rng = np.random.default_rng(3)
    hashes = rng.integers(0, 2**63, size=700, dtype=np.uint64)  # more than one block of 512
    brute = max(hamming_distance(int(a), int(b)) for a in hashes[:60] for b in hashes[:60])
    assert diameter(hashes[:60]) == brute
    assert diameter(hashes, block=64) == diameter(hashes)
    assert diameter(np.array([5], dtype=np.uint64)) == 0 and diameter(np.array([], dtype=np.uint64)) == 0


def test_counts_report_largest_and_chained_clusters():
    a = 0x0123_4567_89AB_CDEF
    chain = [a, a ^ 0b111111, a ^ 0b111111 ^ (0b111111 << 20)]  # ends 12 bits apart: linked only via the middle
    tight = [0xFFFF_0000_FFFF_0000, 0xFFFF_0000_FFFF_0001, 0xFFFF_0000_FFFF_0003]  # all within 2 bits
    records = [rec(f"c{k}", 0, h) for k, h in enumerate(chain)] + [rec(f"t{k}", 0, h) for k, h in enumerate(tight)]
    records += [rec(f"s{k}", 0, 0x5555_5555_5555_5555 ^ (k << 40)) for k in range(12)]  # one cluster of 12
    counts = deduplicate(records, max_hamming=10).counts
    assert counts["largest_cluster"] == 12 and counts["images_in_clusters_over_10"] == 12
    assert counts["chained_clusters"] == 1  # the chain; the tight triple and the 12 (<= 8 bits apart) are not
    assert deduplicate(records, max_hamming=12).counts["chained_clusters"] == 0  # now the ends are linked


def test_conflict_share_warning():
    records = [rec("p1", 1, 0xF0F0), rec("p2", 0, 0xF0F1)] + [rec(f"q{k}", k % 2) for k in range(18)]
    counts = deduplicate(records, max_hamming=4).counts
    assert counts["removed_label_conflict"] == 2  # 10% of 20
    (warning,) = conflict_warnings(counts, 0.05)
    assert "dropped 2 of 20 images (10.0%)" in warning and "dedup.max_conflict_share=0.05" in warning
    assert "label_conflicts.csv" in warning and "dedup.max_hamming" in warning
    assert conflict_warnings(counts, 0.1) == []  # at the share: no warning
    assert conflict_warnings(deduplicate(records[2:], max_hamming=4).counts, 0.0) == []


def test_dedup_stage_writes_the_warning_to_metrics_and_stderr(tmp_path):
    import json
    import os
    import subprocess
    import sys

    from roadwork.io import format_csv

    rows = [
        {
            "id": f"i{k}",
            "sha256": f"s{k}",
            "file_sha256": f"f{k}",
            "pixel_sha256": f"p{k}",
            "phash": phash_hex(0xF0F0 if k < 2 else random.Random(k).getrandbits(64)),
            "label": k % 2,
        }
        for k in range(10)
    ]
    (tmp_path / "data" / "raw").mkdir(parents=True)
    (tmp_path / "data" / "raw" / "manifest.csv").write_text(format_csv(rows, list(rows[0])))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    for share, warned in ((0.1, True), (0.2, False)):
        (tmp_path / "params.yaml").write_text(f"dedup: {{max_conflict_share: {share}}}\n")
        run = subprocess.run(
            [sys.executable, "-m", "roadwork.stages.dedup"], cwd=tmp_path, env=env, capture_output=True, text=True
        )
        assert run.returncode == 0, run.stderr
        metrics = json.loads((tmp_path / "metrics" / "dedup.json").read_text())
        assert metrics["removed_label_conflict"] == 2
        assert (
            len(metrics["warnings"]) == warned
            and ("WARNING roadwork.stages.dedup: label conflicts dropped 2 of 10" in run.stderr) == warned
        )
        if warned:
            assert "dedup.max_conflict_share=0.1" in metrics["warnings"][0]


def test_chaining_report_against_true_families():
    family = {"a": "A", "a2": "A", "b": "B", "c": "C", "c2": "C", "d": "D"}
    cluster = {"a": "a", "a2": "a", "b": "a", "c": "c", "c2": "c2", "d": "d"}  # b merged into A's; C split
    report = chaining_report(cluster, family)
    assert report["clusters"] == 4 and report["largest_cluster"] == 3
    assert report["merged_clusters"] == 1 and report["images_in_merged_clusters"] == 3
    assert report["most_families_in_one_cluster"] == 2 and report["families_split"] == 1
    assert report["images_in_clusters_over_10"] == 0


def chained_scenes():
    """Scene L (label 0: l1, l2, l3 within 4 bits) and scene R (label 1: r1, r2), joined by one
    false pair l3~r1 (8 bits); r1 is 10+ bits from l1/l2, r2 is 10 bits from l3."""
    l1 = 0x0123_4567_89AB_CDEF
    l2 = l1 ^ 0b11
    l3 = l2 ^ (0b11 << 10)
    r1 = l3 ^ (0xFF << 20)
    r2 = r1 ^ (0b11 << 40)
    return [rec("l1", 0, l1), rec("l2", 0, l2), rec("l3", 0, l3), rec("r1", 1, r1), rec("r2", 1, r2)]


def test_label_conflict_is_decided_where_the_labels_meet_not_along_the_chain():
    records = chained_scenes()
    result = deduplicate(records, max_hamming=8, label_conflict="drop")
    assert result.removed_reasons() == {"l3": "label_conflict", "r1": "label_conflict"}
    assert {r.id: (r.label, r.cluster) for r in result.kept} == {"l1": (0, "l1"), "l2": (0, "l1"), "r2": (1, "l1")}
    (conflict,) = result.conflicts
    assert conflict.ids == ("l3", "r1") and conflict.labels == (0, 1) and conflict.resolution == "dropped"
    # the grouping is untouched: every kept pair within max_hamming shares a cluster (no split leak)
    cluster = result.cluster_of()
    kept = [r for r in records if r["id"] in cluster]
    for a in kept:
        for b in kept:
            if hamming_distance(a["phash"], b["phash"]) <= 8:
                assert cluster[a["id"]] == cluster[b["id"]]

    majority = deduplicate(records, max_hamming=8, label_conflict="majority")
    # voters: l3, r1 and their direct links l1, l2, r2: three 0s against two 1s
    assert {r.id: r.label for r in majority.kept} == {"l1": 0, "l2": 0, "l3": 0, "r1": 0, "r2": 1}
    assert majority.conflicts[0].resolution == "majority:0" and majority.counts["relabelled"] == 1

    near_drop = deduplicate(records, max_hamming=8, near_duplicates="drop")
    assert [r.id for r in near_drop.kept] == ["l1"]
    assert near_drop.removed_reasons()["r2"] == "near_duplicate_of:l1"


def test_label_conflict_takes_exact_copies_along():
    # r1copy: same file as r1 but (as only hand-made input can have) a far pHash: it sees no
    # other label itself and goes with its exact group
    records = chained_scenes() + [rec("r1copy", 1, None, file="file-r1", pixel="pix-r1")]
    assert hamming_distance(records[-1]["phash"], records[2]["phash"]) > 8
    result = deduplicate(records, max_hamming=8)
    assert result.removed_reasons() == {"l3": "label_conflict", "r1": "label_conflict", "r1copy": "label_conflict"}

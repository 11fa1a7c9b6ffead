"""Predictor over an exported bundle: multi-view top-k by probability, batching, flip TTA,
unreadable files, the CSV and the `roadwork predict` command."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import numpy as np
import pytest
import torch
from kit.bundles import make_bundle
from kit.images import pictures
from PIL import Image
from torch import nn

from roadwork.config import PredictParams
from roadwork.io import read_csv
from roadwork.miner.detector import tile_boxes
from roadwork.predict import CSV_COLUMNS, Predictor, topk_by_confidence, topk_mean


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    return make_bundle(tmp_path_factory.mktemp("predict"))


# ------------------------------------------------------------------------------ aggregation
def test_topk_by_probability_finds_the_one_roadwork_tile_that_confidence_ranking_outvotes():
    # whole image unsure-negative, two tiles see the cones, two tiles are sure negatives
    views = np.array([[0.2, 0.9, 0.8, 0.01, 0.02]])
    assert topk_mean(views, 2)[0] == pytest.approx(0.85) and topk_mean(views, 2)[0] > 0.5
    assert topk_by_confidence(views, 2)[0] == pytest.approx(0.015)  # the flawed rule says "no roadwork"
    assert topk_mean(views, 99)[0] == pytest.approx(views.mean())  # k larger than the views: all of them


class BrightPatchModel(nn.Module):
    """Stub 2-class model: the roadwork logit grows with the share of bright pixels in the view."""

    def forward(self, x):
        share = (x[:, 0] > 0).float().mean(dim=(1, 2))
        return torch.stack([torch.zeros_like(share), 40 * share - 4], dim=1)


def test_multiview_top_k_by_probability_on_an_image(bundle):
    image = Image.new("RGB", (64, 64))
    image.paste((255, 255, 255), (24, 0, 40, 16))  # a bright patch at the top, inside the top two tiles only
    predictor = Predictor(bundle, multiview_overlap=0.2, multiview_topk=2, multiview_grid=2, model=BrightPatchModel())
    per_view = predictor.view_probabilities(predictor.views(image, multiview=True)).numpy()[None, :]
    assert per_view.shape == (1, 5)
    whole, top_left, top_right, bottom_left, bottom_right = per_view[0]
    assert whole < 0.5 and top_left > 0.5 and top_right > 0.5 and max(bottom_left, bottom_right) < 0.05
    single = predictor.predict([image])[0]
    multi = predictor.predict([image], multiview=True)[0]
    assert single < 0.5 < multi  # multi-view finds the roadwork the whole image misses...
    assert topk_by_confidence(per_view, 2)[0] < 0.5  # ...which confidence ranking would have missed too
    assert multi == pytest.approx((top_left + top_right) / 2, abs=1e-6)


def test_tile_boxes_cover_the_image_with_the_requested_overlap():
    boxes = tile_boxes(100, 60, 3, 0.25)
    assert len(boxes) == 9
    xs = sorted({(b[0], b[2]) for b in boxes})
    assert xs[0][0] == 0 and xs[-1][1] == 100
    width = xs[0][1] - xs[0][0]
    assert abs((xs[0][1] - xs[1][0]) / width - 0.25) < 0.05  # neighbours share a quarter of a tile
    assert tile_boxes(50, 40, 1, 0.0) == [(0, 0, 50, 40)]


# ------------------------------------------------------------------------------ batching / TTA
@pytest.mark.parametrize("flip", [False, True])
def test_batched_views_equal_one_by_one(bundle, flip):
    predictor = Predictor(bundle, multiview_grid=2, multiview_topk=3, flip_tta=flip)
    images = pictures(7)
    for multiview in (False, True):
        together = predictor.predict(images, multiview=multiview)
        alone = np.array([predictor.predict([image], multiview=multiview)[0] for image in images])
        np.testing.assert_allclose(together, alone, atol=1e-6)
        assert together.std() > 1e-4  # the model does look at the images


def test_flip_tta_averages_the_mirrored_view_in_multi_view_only(bundle):
    plain = Predictor(bundle, multiview_grid=1, multiview_overlap=0.0, multiview_topk=2)
    tta = Predictor(bundle, multiview_grid=1, multiview_overlap=0.0, multiview_topk=2, flip_tta=True, model=plain.model)
    image = pictures(1, seed=3)[0]
    mirrored = image.transpose(Image.FLIP_LEFT_RIGHT)
    # grid 1: the one tile is the whole image, so the top-2 mean is the whole image's probability
    expected = (plain.predict([image])[0] + plain.predict([mirrored])[0]) / 2
    assert tta.predict([image], multiview=True)[0] == pytest.approx(expected, abs=2e-3)  # odd sizes shift 1 px
    assert tta.predict([image], multiview=True)[0] != pytest.approx(plain.predict([image], multiview=True)[0], abs=1e-7)
    assert tta.predict([image])[0] == plain.predict([image])[0]  # the single view is never flipped


def test_flip_tta_without_multiview_is_a_usage_error(bundle, tmp_path, capsys):
    from roadwork.cli import main

    image = tmp_path / "a.png"
    pictures(1)[0].save(image)
    out = tmp_path / "p.csv"
    assert main(["predict", str(image), "--bundle", str(bundle), "--out", str(out), "--flip-tta"]) == 2
    assert "--flip-tta is part of multi-view" in capsys.readouterr().err and not out.exists()


@pytest.mark.parametrize(
    "key,value", [("multiview_overlap", 0.5), ("multiview_topk", 1), ("multiview_grid", 3), ("flip_tta", True)]
)
def test_each_predict_param_changes_the_multiview_output(bundle, key, value):
    images = pictures(4, seed=5)
    base = Predictor.from_params(bundle, PredictParams())
    changed = Predictor.from_params(bundle, PredictParams(**{key: value}), model=base.model)
    assert not np.allclose(base.predict(images, multiview=True), changed.predict(images, multiview=True), atol=1e-7)


# ------------------------------------------------------------------------------ files / CLI
@pytest.fixture
def folder(tmp_path) -> Path:
    root = tmp_path / "images"
    (root / "nested" / "deeper").mkdir(parents=True)
    for i, image in enumerate(pictures(5, seed=9)):
        target = root / ("nested/deeper" if i == 4 else "nested" if i == 3 else "") / f"img{i}.jpg"
        image.save(target, quality=90)
    (root / "not_an_image.jpg").write_text("hello")
    good = (root / "img0.jpg").read_bytes()
    (root / "nested" / "truncated.jpg").write_bytes(good[: len(good) // 3])
    (root / "notes.txt").write_text("ignored: not an image suffix")
    return root


def test_unreadable_files_are_reported_and_the_run_continues(bundle, folder):
    from roadwork.predict import iter_image_paths

    paths = list(iter_image_paths([folder, folder / "missing.jpg"]))
    assert not any(p.name == "notes.txt" for p in paths)
    rows = list(Predictor(bundle).predict_paths(paths, batch_size=3, progress=False))
    assert [r["path"] for r in rows] == [str(p) for p in paths]
    errors = {Path(r["path"]).name: r["error"] for r in rows if r["error"]}
    assert set(errors) == {"not_an_image.jpg", "truncated.jpg", "missing.jpg"}
    assert "not_an_image.jpg" in errors["not_an_image.jpg"]  # the message names the file, not a descriptor
    good = [r for r in rows if not r["error"]]
    assert len(good) == 5
    assert all(0 <= r["probability"] <= 1 and r["decision"] == int(r["probability"] > 0.5) for r in good)
    assert all(r["probability"] == "" and r["decision"] == "" for r in rows if r["error"])
    one_by_one = list(Predictor(bundle).predict_paths(paths, batch_size=1, progress=False))
    for a, b in zip(rows, one_by_one):
        assert a["error"] == b["error"]
        if not a["error"]:
            assert a["probability"] == pytest.approx(b["probability"], abs=1e-6)


@pytest.mark.slow
def test_cli_writes_the_csv(bundle, folder, tmp_path):
    out = tmp_path / "out" / "predictions.csv"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "roadwork.cli",
            "predict",
            str(folder),
            "--bundle",
            str(bundle),
            "--out",
            str(out),
            "--multiview",
            "--flip-tta",
            "--batch-size",
            "2",
        ],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 3, done.stderr[-3000:]  # scored what it could; 2 unreadable files
    rows = read_csv(out)
    assert list(rows[0]) == CSV_COLUMNS
    assert len(rows) == 7
    assert sum(bool(r["error"]) for r in rows) == 2
    for row in rows:
        if not row["error"]:
            assert row["decision"] == str(int(float(row["probability"]) > 0.5))
    assert "predict" in done.stderr  # the tqdm progress bar and the summary go to stderr
    assert "2 unreadable" in done.stderr
    assert not list(out.parent.glob(".*.partial"))

    # the single-view CSV (in-process this time) matches the Predictor
    out1 = tmp_path / "single.csv"
    from roadwork.cli import main
    from roadwork.predict import load_image

    assert main(["predict", str(folder / "img0.jpg"), "--bundle", str(bundle), "--out", str(out1), "--quiet"]) == 0

    expected = Predictor(bundle).predict([load_image(folder / "img0.jpg")])[0]
    assert float(read_csv(out1)[0]["probability"]) == pytest.approx(expected, abs=1e-6)


def test_cli_errors_and_console_script(tmp_path, bundle):
    from roadwork.cli import main

    assert main(["predict", str(tmp_path), "--bundle", str(tmp_path)]) == 2  # not a bundle
    assert (
        main(
            [
                "predict",
                str(tmp_path / "empty_dir_does_not_matter"),
                "--bundle",
                str(bundle),
                "--out",
                str(tmp_path / "x.csv"),
                "--quiet",
            ]
        )
        == 1
    )  # a missing path is an error row: nothing scored
    assert read_csv(tmp_path / "x.csv")[0]["error"]
    (tmp_path / "bad").mkdir()
    for name in ("a.jpg", "b.png"):
        (tmp_path / "bad" / name).write_bytes(b"not an image")
    assert (
        main(["predict", str(tmp_path / "bad"), "--bundle", str(bundle), "--out", str(tmp_path / "y.csv"), "--quiet"])
        == 1
    )  # every input unreadable: non-zero, the CSV says why
    assert all(row["error"] for row in read_csv(tmp_path / "y.csv"))
    assert main(["frobnicate"]) == 2
    scripts = {e.name: e.value for e in entry_points(group="console_scripts")}
    assert scripts.get("roadwork") == "roadwork.cli:main"

"""The synthesize stage and its wiring: the stage resumes after a kill to the same bytes, synthetic children are
examples of their source's split with a kind, training mixes in train children only, every generation key
changes what is drawn, and the per-kind reports weight the validators' mix whatever the counts."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from kit.bundles import EXPORT_A, calibrated_workspace, logits_rows, make_model
from kit.repo import files_of
from kit.train import TINY_MODEL, make_dataset, write_params
from PIL import Image

from roadwork.config import parse_params
from roadwork.data.examples import load_split
from roadwork.evaluate import per_kind
from roadwork.evaluate.threshold import choose_threshold
from roadwork.io import format_csv, read_csv, read_json
from roadwork.stages.threshold import write_threshold_outputs
from roadwork.synthesize.generate import caption, draw, rewrite
from roadwork.synthesize.plan import plan_children
from roadwork.synthesize_params import SynthesizeParams
from roadwork.train.fit import mix_in

ROOT = Path(__file__).resolve().parents[1]
STAGE_PARAMS = {
    "backend": "tiny",
    "num_inference_steps": 4,
    "t2i_width": 64,
    "t2i_height": 64,
    "splits": ["train", "val_test"],
    "sources_per_label": 2,
}


# ------------------------------------------------------------------------------------ the mix
def test_the_mix_weights_each_kind_to_its_share():
    """4 real, 2 i2i, 2 t2i images: the mix weighs real 50%, i2i 25%, t2i 25%, each label 50/50 within its kind;
    the MCC of the mix is the hand-computed weighted MCC, not the pooled one."""
    kinds = np.array(["real"] * 4 + ["i2i"] * 2 + ["t2i"] * 2)
    labels = np.array([0, 0, 0, 1, 0, 1, 0, 1])
    logits = np.array([-1, -1, 1, 2, 0.5, 1, -1, 1.0])
    shares = per_kind.kind_shares(0.5, 0.5)
    weights = per_kind.mix_weights(kinds, labels, shares, 0.5)
    np.testing.assert_allclose(weights, [1 / 12] * 3 + [0.25] + [0.125] * 4)
    result = per_kind.report(per_kind.mcc_statistic(0.0), labels, logits, kinds, shares, 0.5, n_boot=200)
    # TP .5, FP 1/12 + .125, TN 2/12 + .125, FN 0
    tp, fp, tn = 0.5, 1 / 12 + 0.125, 2 / 12 + 0.125
    expected = tp * tn / np.sqrt((tp + fp) * tp * (tn + fp) * tn)
    assert result["mix"]["value"] == pytest.approx(expected, abs=1e-6)
    assert result["i2i"]["value"] == 0.0 and result["t2i"]["value"] == 1.0
    assert result["real"]["value"] == pytest.approx(1 / np.sqrt(2), abs=1e-6)  # 3 negatives 1/3 each vs 1
    for figure in ("real", "i2i", "t2i", "mix"):
        low, high = result[figure]["interval"]
        assert low <= result[figure]["value"] <= high
    assert result["mix"]["shares"] == {"real": 0.5, "i2i": 0.25, "t2i": 0.25}
    # fake_prob and i2i_share move the weights: all synthetic, all t2i
    only_t2i = per_kind.report(
        per_kind.mcc_statistic(0.0), labels, logits, kinds, per_kind.kind_shares(1.0, 0.0), 0.5, n_boot=50
    )
    assert only_t2i["mix"]["value"] == 1.0
    assert (
        per_kind.report(
            per_kind.mcc_statistic(0.0), labels, logits, kinds, per_kind.kind_shares(1.0, 1.0), 0.5, n_boot=50
        )["mix"]["value"]
        == 0.0
    )
    # duplicating the real images changes nothing: the mix weighs kinds, not counts
    twice = np.concatenate([np.arange(4), np.arange(8)])
    again = per_kind.report(
        per_kind.mcc_statistic(0.0), labels[twice], logits[twice], kinds[twice], shares, 0.5, n_boot=50
    )
    assert again["mix"]["value"] == pytest.approx(result["mix"]["value"], abs=1e-6)
    missing = per_kind.report(per_kind.mcc_statistic(0.0), labels[:4], logits[:4], kinds[:4], shares, 0.5, n_boot=20)
    assert "i2i images" in missing["mix"]["missing"] and "i2i" not in missing


def test_threshold_is_fitted_on_real_images_and_reported_per_kind(tmp_path):
    rng = np.random.default_rng(0)
    rows, synthetic = [], []
    for i in range(200):
        y = int(rng.random() < 0.3)
        rows.append({"split": "val_select", "id": f"r{i}", "label": y, "logit": float(rng.normal(2 * y - 1))})
    for kind in ("i2i", "t2i"):
        for i in range(40):
            y = i % 2
            synthetic.append(
                {
                    "split": "val_select",
                    "id": f"{kind}-{i}",
                    "kind": kind,
                    "label": y,
                    "logit": float(rng.normal(0.5 * y)),
                }
            )
    (tmp_path / "logits.csv").write_text(format_csv(rows, ["split", "id", "label", "logit"]))
    real_only = choose_threshold(tmp_path / "logits.csv", 0.5)["threshold"]
    (tmp_path / "logits_synthetic.csv").write_text(format_csv(synthetic, ["split", "id", "kind", "label", "logit"]))
    report = write_threshold_outputs(
        tmp_path / "logits.csv", 0.5, tmp_path / "m.json", tmp_path / "c.csv", per_kind.kind_shares(0.5, 0.5), "tiny"
    )
    assert report["threshold"] == real_only  # the synthetic images do not move the decision
    by_kind = read_json(tmp_path / "m.json")["val_select_by_kind"]
    assert by_kind["synthetic_backend"] == "tiny" and "not a measurement" in by_kind["note"]
    assert set(by_kind["mcc"]) == {"real", "i2i", "t2i", "mix"}
    assert [by_kind["mcc"][k]["n"] for k in ("real", "i2i", "t2i", "mix")] == [200, 40, 40, 280]
    assert by_kind["mcc"]["real"]["value"] > by_kind["mcc"]["i2i"]["value"]  # the synthetic logits separate less


# ------------------------------------------------------------------------------ examples, training
def synthetic_set(root: Path) -> Path:
    """data/synthetic as the stage writes it: an i2i and a t2i child of every source (images are the sources')."""
    out = root / "data" / "synthetic"
    (out / "images").mkdir(parents=True)
    raw = {r["id"]: r for r in read_csv(root / "data" / "raw" / "manifest.csv")}
    rows = []
    for source in read_csv(root / "data" / "split" / "splits.csv"):
        for kind in ("t2i", "i2i"):
            image = Image.open(root / "data" / "raw" / raw[source["id"]]["path"]).convert("RGB")
            if kind == "t2i":
                image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            path = f"images/{kind}-{source['id']}.png"
            image.save(out / path)
            rows.append(
                {
                    "id": f"{kind}-{source['id']}",
                    "source_id": source["id"],
                    "kind": kind,
                    "split": source["split"],
                    "label": source["label"],
                    "cluster": source["cluster"],
                    "prompt": "p",
                    "seed": 0,
                    "path": path,
                    "sha256": "",
                }
            )
    (out / "manifest.csv").write_text(format_csv(rows, list(rows[0])))
    return out


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("mix")
    make_dataset(root, n=64)
    synthetic_set(root)
    return root


def test_children_are_examples_of_their_sources_split_with_a_kind(dataset):
    raw, splits, synthetic = dataset / "data/raw", dataset / "data/split/splits.csv", dataset / "data/synthetic"
    split_of = {r["id"]: r["split"] for r in read_csv(splits)}
    real = load_split(raw, splits, "val_test")
    assert real == load_split(raw, splits, "val_test", ("real",), synthetic)  # the default: real only
    assert {e.kind for e in real} == {"real"}
    children = load_split(raw, splits, "val_test", ("i2i", "t2i"), synthetic)
    assert [e.kind for e in children] == ["i2i"] * len(real) + ["t2i"] * len(real)
    assert {split_of[e.id.split("-", 1)[1]] for e in children} == {"val_test"}
    with pytest.raises(ValueError, match="need synthetic_dir"):
        load_split(raw, splits, "train", ("i2i",))
    with pytest.raises(ValueError, match="subset of"):
        load_split(raw, splits, "train", ("fake",), synthetic)


def test_a_child_claiming_another_split_than_its_source_is_refused(dataset, tmp_path):
    bad = tmp_path / "synthetic"
    (bad / "images").mkdir(parents=True)
    rows = read_csv(dataset / "data/synthetic/manifest.csv")
    moved = next(i for i, r in enumerate(rows) if r["split"] == "val_test")
    rows[moved]["split"] = "train"  # a val_test source's child passed off as training data
    (bad / "manifest.csv").write_text(format_csv(rows, list(rows[0])))
    with pytest.raises(ValueError, match=rf"line {moved + 2} \({rows[moved]['id']}\): source .* is in split val_test"):
        load_split(dataset / "data/raw", dataset / "data/split/splits.csv", "train", ("i2i", "t2i"), bad)


def test_mix_in_is_seeded_and_share_zero_is_the_real_set(dataset):
    raw, splits, synthetic = dataset / "data/raw", dataset / "data/split/splits.csv", dataset / "data/synthetic"
    real = load_split(raw, splits, "train")
    children = load_split(raw, splits, "train", ("i2i", "t2i"), synthetic)
    assert mix_in(real, children, 0.0, 0) is real
    mixed = mix_in(real, children, 0.25, 0)
    assert mixed[: len(real)] == real and len(mixed) - len(real) == round(len(real) / 3)
    assert mixed == mix_in(real, children, 0.25, 0) and mixed != mix_in(real, children, 0.25, 1)
    assert len(mix_in(real, children, 0.9, 0)) == len(real) + len(children)  # capped: all there is


@pytest.mark.slow
def test_training_mixes_in_train_children_only(dataset, tmp_path):
    """fit() with train.synthetic_share 0.5: as many train children as real train images join the training set
    (fit takes them from load_split(..., "train", ...), which never returns another split's child: the tests
    above); the evaluation splits' children get logits with their kind; no synthetic set, no silent fallback."""
    from roadwork.models.classifier import build_model
    from roadwork.train.distributed import Dist, seed_everything
    from roadwork.train.fit import fit
    from roadwork.train.supervised import TrainingDataError

    params = parse_params(write_params(tmp_path, train={"synthetic_share": 0.5, "epochs": 1}))
    dist = Dist(0, 1, torch.device("cpu"))
    split_of = {r["id"]: r["split"] for r in read_csv(dataset / "data/split/splits.csv")}
    seed_everything(0)
    metrics = fit(
        params,
        build_model(params.model),
        dataset / "data/raw",
        dataset / "data/split/splits.csv",
        tmp_path / "out",
        tmp_path / "run",
        dist,
        synthetic_dir=dataset / "data/synthetic",
    )
    assert metrics["synthetic_train_images"] == sum(split == "train" for split in split_of.values())
    rows = read_csv(tmp_path / "out" / "logits_synthetic.csv")
    assert {r["split"] for r in rows} == {"val_select", "val_calib", "val_test"}
    assert all(split_of[r["id"].split("-", 1)[1]] == r["split"] for r in rows)
    assert {r["kind"] for r in rows} == {"i2i", "t2i"}
    with pytest.raises(TrainingDataError, match="synthetic_share is 0.5 but .*manifest.csv does not exist"):
        fit(
            params,
            build_model(params.model),
            dataset / "data/raw",
            dataset / "data/split/splits.csv",
            tmp_path / "out2",
            tmp_path / "run2",
            dist,
            synthetic_dir=tmp_path / "nowhere",
        )


# --------------------------------------------------------------------------- generation keys
@pytest.fixture(scope="module")
def tiny():
    from roadwork.synthesize.models import build_tiny_models

    return build_tiny_models(seed=0)


def test_each_generation_key_changes_what_is_drawn(tiny):
    """Each key that shapes a drawing, changed alone, changes the image (or the prompt) the tiny models give."""
    rng = np.random.default_rng(0)
    source = Image.fromarray(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)).resize((64, 64), Image.BICUBIC)
    base = dict(backend="tiny", num_inference_steps=2, t2i_width=32, t2i_height=32)
    rows = [{"id": "a" * 16, "sha256": "", "label": "1", "cluster": "", "split": "train"}]
    children = {c.kind: c for c in plan_children(rows, SynthesizeParams(**base))}

    def image(kind, **change):
        params = SynthesizeParams(**{**base, **change})
        picture, _ = draw(tiny, children[kind], "a road", source, params)
        return picture.size, np.asarray(picture).tobytes()

    for key, value, kind in [
        ("guidance_scale", 1.0, "t2i"),
        ("num_inference_steps", 3, "t2i"),
        ("negative_prompt_t2i", "sunny", "t2i"),
        ("negative_prompt_i2i", "sunny", "i2i"),
        ("t2i_width", 48, "t2i"),
        ("t2i_height", 48, "t2i"),
        ("i2i_max_width", 32, "i2i"),
        ("i2i_max_height", 32, "i2i"),
    ]:
        change = {
            key: value,
            **({"t2i_height": 32} if key == "t2i_width" else {}),
            **({"t2i_width": 32} if key == "t2i_height" else {}),
        }
        assert image(kind, **change) != image(kind), key

    def prompt(label, **change):
        params = SynthesizeParams(**{**base, **change})
        text = caption(tiny, source, params)
        return text, rewrite(tiny, text, label, params, seed=1)

    assert prompt(1, caption_max_new_tokens=2)[0] != prompt(1)[0]
    assert prompt(1, rewrite_max_new_tokens=2)[1] != prompt(1)[1]
    assert prompt(1, instruction_roadwork="Say cones.")[1] != prompt(1)[1]
    assert prompt(0, instruction_clear="Say road.")[1] != prompt(0)[1]
    assert prompt(0, instruction_roadwork="Say cones.")[1] == prompt(0)[1]  # label 0 uses the clear instruction


# ----------------------------------------------------------------------------------- the stage
def stage_workspace(root: Path) -> Path:
    make_dataset(root, n=16)
    (root / "params.yaml").write_text(yaml.safe_dump({"synthesize": STAGE_PARAMS}))
    return root


def run_stage(root: Path, **popen) -> subprocess.Popen:
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
    }
    env.pop("RANK", None), env.pop("WORLD_SIZE", None)
    return subprocess.Popen(
        [sys.executable, "-m", "roadwork.stages.synthesize"],
        cwd=root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **popen,
    )


@pytest.mark.slow
def test_stage_killed_midway_resumes_to_the_uninterrupted_bytes(tmp_path):
    whole = stage_workspace(tmp_path / "whole")
    done = run_stage(whole)
    out, err = done.communicate(timeout=600)
    assert done.returncode == 0, err[-2000:]
    manifest = read_csv(whole / "data/synthetic/manifest.csv")
    planned = plan_children(read_csv(whole / "data/split/splits.csv"), SynthesizeParams(**STAGE_PARAMS))
    assert [r["id"] for r in manifest] == [c.id for c in planned] and len(planned) >= 8
    assert {r["split"] for r in manifest} == {"train", "val_test"}
    assert {"id", "source_id", "kind", "split", "label", "cluster", "prompt", "seed"} <= set(manifest[0])
    metrics = read_json(whole / "metrics/synthesize.json")
    assert metrics["synthetic_backend"] == "tiny" and "not a measurement" in metrics["what_this_is"]
    for split in ("train", "val_test"):
        for kind in ("t2i", "i2i"):
            assert metrics["counts"][split][kind] == {
                label: sum((c.split, c.kind, str(c.label)) == (split, kind, label) for c in planned) for label in "01"
            }

    killed_root = stage_workspace(tmp_path / "killed")
    records = killed_root / "runs/synthesize/tiny/records"
    stage = run_stage(killed_root)
    deadline = time.monotonic() + 300
    while len(list(records.glob("*.json"))) < 3 and stage.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    stage.send_signal(signal.SIGKILL)
    stage.communicate()
    assert stage.returncode == -signal.SIGKILL, "the stage finished before it could be killed"
    finished_before = len(list(records.glob("*.json")))
    assert 3 <= finished_before < len(planned) and not (killed_root / "data/synthetic").exists()
    resumed = run_stage(killed_root)
    out, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err[-2000:]
    assert read_json(killed_root / "metrics/synthesize.json")["reused"] == finished_before
    assert files_of(killed_root / "data/synthetic") == files_of(whole / "data/synthetic")


def test_stage_names_a_bad_split_table(tmp_path):
    root = stage_workspace(tmp_path)
    splits = root / "data/split/splits.csv"
    splits.write_text(splits.read_text().replace(",val_test\n", ",testing\n", 1))
    stage = run_stage(root)
    _, err = stage.communicate(timeout=300)
    assert stage.returncode == 1 and "synthesize failed: splits row" in err and "unknown split 'testing'" in err
    assert not (root / "data/synthetic").exists()


def test_calibrate_fits_on_real_images_and_reports_ece_and_mcc_per_kind(tmp_path):
    from roadwork.config import CalibrateParams
    from roadwork.stages.calibrate import calibrate, candidates

    model_dir = make_model(tmp_path, "phase1", logits_rows(0))
    settings = CalibrateParams(model="phase1", bootstrap=200)
    shares = per_kind.kind_shares(0.5, 0.5)
    before, before_metrics, _ = calibrate(settings, candidates(tmp_path), shares, "hub")
    assert "val_test_by_kind" not in before_metrics  # no synthetic logits: no per-kind report
    rng = np.random.default_rng(1)
    rows = [
        {
            "split": "val_test",
            "id": f"{kind}-{i}",
            "kind": kind,
            "label": i % 2,
            "logit": float(rng.normal(3 * (i % 2) - 1.5, 2)),
        }
        for kind in ("i2i", "t2i")
        for i in range(60)
    ]
    (model_dir / "logits_synthetic.csv").write_text(format_csv(rows, ["split", "id", "kind", "label", "logit"]))
    after, metrics, _ = calibrate(settings, candidates(tmp_path), shares, "hub")
    assert after == before  # the map and the decision are fitted on real images only
    by_kind = metrics["val_test_by_kind"]
    assert by_kind["synthetic_backend"] == "hub" and "note" not in by_kind
    assert set(by_kind["ece"]) == set(by_kind["mcc"]) == {"real", "i2i", "t2i", "mix"}
    # the real kind's ECE is the headline (val_test, positive class, re-weighted to the target prior)
    assert by_kind["ece"]["real"]["value"] == pytest.approx(metrics["headline"]["ece"], abs=1e-5)
    assert by_kind["ece"]["mix"]["n"] == 600 + 120


def test_protocol_mix_reward_weights_kinds_by_their_shares():
    """The mix's reward is the validators' expected reward of the pooled decisions, each kind weighing its share
    and each label half of its kind: a real set answered perfectly and synthetic sets answered all-positive."""
    from roadwork.evaluate.metrics import expected_reward

    def run(probs):  # one draw, the four levels giving the same answers
        probs = np.asarray(probs, dtype=float)
        return {
            "reward": 0.0,
            "reward_ci95_low": 0.0,
            "reward_ci95_high": 0.0,
            "n_images": probs.size,
            "_probs": {str(level): probs[None] for level in range(4)},
        }

    labels = {"real": np.array([0, 0, 0, 1]), "i2i": np.array([0, 1]), "t2i": np.array([0, 1])}
    runs = {"real": run([0.1, 0.2, 0.3, 0.9]), "i2i": run([0.9, 0.9]), "t2i": run([0.9, 0.9])}
    out = per_kind.protocol_by_kind(runs, labels, per_kind.kind_shares(0.5, 0.5), n_boot=100)
    # weights: real 0.5 (labels 0.25 / 0.25), i2i and t2i 0.25 each (0.125 per image): TP .5, FP .25, TN .25
    tp, fp, tn = 0.5, 0.25, 0.25
    mcc = tp * tn / np.sqrt((tp + fp) * tp * (tn + fp) * tn)
    assert out["mix"]["reward"] == pytest.approx(expected_reward(mcc, tp + tn), abs=1e-9)
    assert out["mix"]["ci95_low"] <= out["mix"]["reward"] <= out["mix"]["ci95_high"]
    assert out["mix"]["n_images"] == 8 and set(out) == {"real", "i2i", "t2i", "mix"}
    real_only = per_kind.protocol_by_kind(runs, labels, per_kind.kind_shares(0.0, 0.5), n_boot=100)
    assert real_only["mix"]["reward"] == pytest.approx(expected_reward(1.0, 1.0))
    del runs["t2i"], labels["t2i"]
    assert "t2i images" in per_kind.protocol_by_kind(runs, labels, per_kind.kind_shares(0.5, 0.5))["mix"]["missing"]


@pytest.mark.slow
def test_evaluate_headline_is_the_mix_and_keeps_the_real_figure(tmp_path, dataset, monkeypatch):

    from roadwork.stages.calibrate import candidates
    from roadwork.stages.evaluate import evaluate, headline
    from roadwork.stages.export import export

    calibrated_workspace(tmp_path, dataset, monkeypatch, folders=("raw", "split", "synthetic"))
    config = parse_params(
        {"model": TINY_MODEL, "export": {**EXPORT_A, "protocol_draws": 1}, "synthesize": {"backend": "tiny"}}
    )
    paths = (Path("data/bundle"), Path("data/calibrate/calibration.json"), Path("data/raw"), Path("data/split"))
    export(config, *paths, Path("dvc.lock"), progress=False)
    real = evaluate(config, *paths, candidates(), progress=False)["protocol"]
    mixed = evaluate(config, *paths, candidates(), synthetic_dir=Path("data/synthetic"), progress=False)
    protocol = mixed["protocol"]
    assert protocol["reward_real"] == real["reward"] and "kinds" not in real  # the real figure, under its own key
    kinds = protocol["kinds"]
    assert kinds["synthetic_backend"] == "tiny" and "not a measurement" in kinds["note"]
    assert protocol["reward"] == kinds["mix"]["reward"] and kinds["real"]["reward"] == real["reward"]
    n_test = sum(e["split"] == "val_test" for e in read_csv(Path("data/split/splits.csv")))
    assert kinds["i2i"]["n_images"] == kinds["t2i"]["n_images"] == n_test
    assert "not a measurement" in protocol["headline"] and "protocol.reward_real [95% CI]" in headline(mixed)


def test_share_zero_trains_the_same_bytes_with_or_without_the_synthetic_set(dataset, tmp_path):
    """train.synthetic_share 0 (the embedded default): weights and logits.csv are byte-identical to a run without
    data/synthetic; only logits_synthetic.csv is added."""
    from roadwork.models.classifier import build_model
    from roadwork.train.distributed import Dist, seed_everything
    from roadwork.train.fit import fit

    params = parse_params(write_params(tmp_path, train={"epochs": 1}))
    outputs = {}
    for name, synthetic in (("without", None), ("with", dataset / "data/synthetic")):
        seed_everything(0)
        fit(
            params,
            build_model(params.model),
            dataset / "data/raw",
            dataset / "data/split/splits.csv",
            tmp_path / name,
            tmp_path / f"run_{name}",
            Dist(0, 1, torch.device("cpu")),
            synthetic_dir=synthetic,
        )
        outputs[name] = {p.name: p.read_bytes() for p in (tmp_path / name).iterdir()}
    assert set(outputs["with"]) - set(outputs["without"]) == {"logits_synthetic.csv"}
    for file, data in outputs["without"].items():
        assert outputs["with"][file] == data, file

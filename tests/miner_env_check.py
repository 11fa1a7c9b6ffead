"""The detector inside the NATIX miner's own pinned environment (transformers 4.45.2, timm 1.0.22,
Pillow 10.4.0; built by scripts/miner_env.sh), loaded the way the miner loads it.

Not collected by the plain ``pytest -q`` (the file name does not start with ``test_``): building
the environment takes minutes and needs the package index. .ci/run builds it and runs

    MINER_VENV=/path/to/miner-venv pytest -q tests/miner_env_check.py

This file runs in *our* environment: it exports a fresh bundle (a tiny trained model through the
real ``build_bundle``, inference.json through ``write_inference_config``; and, for the last test,
the bundle of a fresh clone's ``dvc repro`` of a tiny configuration, on that run's val_test images
as level-1 validator challenges), computes our
Predictor's probabilities on val_test-like images (synthetic street scenes, JPEG as the validators
send them), lays out a ``base_miner`` package with our detector added as a miner adds it, and runs
the miner's steps in the miner's interpreter:

(a) ``import base_miner.detectors``; ``DETECTOR_REGISTRY["RoadworkTimm"](config_name=..., device="cpu")``;
    ``detector(Image.open(BytesIO(jpeg)))`` equals our Predictor to 1e-5 (single view and multi-view);
(b) the stock path (what the subnet's stock ``ViT`` detector does: ``AutoModelForImageClassification``
    and ``AutoImageProcessor(use_fast=True)`` in an ``image-classification`` pipeline, the score of
    label ``Roadwork``) fails on the same bundle, and the error is the one a miner would see;
(c) the lowest transformers release where the stock path works is 4.53.0, not 4.48.0: TimmWrapper
    appeared in 4.48.0 but until 4.52.x builds ``timm.create_model(architecture)`` without
    config.json's ``model_args``, i.e. the stock-sized network, and loading our weights fails on the
    shapes (candidates at each boundary; overlays built by scripts/miner_env.sh). In 4.53.0 the stock
    path's score equals our Predictor's single view.

``base_miner``: by default a small harness package of our own writing (:func:`write_harness`), with
only the interface our detector relies on, as the subnet documents it (its docs/Mining.md, "Deploy
Your Model"; summarised in the project notes, domain.md section 10): the registry (``base_miner.registry.DETECTOR_REGISTRY``) and the ``FeatureDetector`` base class. No
code of the subnet is in this repository. To check against the real code, point ``ROADWORK_SUBNET``
at a checkout of natixnetwork/streetvision-subnet and build the environment with bittensor (its
``FeatureDetector`` imports it)::

    MINER_WITH_BITTENSOR=1 scripts/miner_env.sh /tmp/miner-venv
    ROADWORK_SUBNET=/path/to/streetvision-subnet MINER_VENV=/tmp/miner-venv pytest -q tests/miner_env_check.py

The checkout is copied to a temporary folder and our detector added to its ``base_miner/detectors/``
as a miner adds it; (b) and (c) then go through the subnet's own ``ViT`` detector
(``DETECTOR_REGISTRY["ViT"]``) instead of the stock steps written here.
"""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import yaml

from roadwork.data.synthetic import encode_jpeg, render_scene, scene_rng
from roadwork.evaluate.protocol import validator_resize
from roadwork.export.bundle import build_bundle
from roadwork.miner.decision import inference_config, write_inference_config
from roadwork.miner.detector import fold_threshold
from roadwork.predict import Predictor, load_image
from test_export import make_model_dir

ROOT = Path(__file__).resolve().parents[1]
REAL_SUBNET = os.environ.get("ROADWORK_SUBNET")  # a checkout of natixnetwork/streetvision-subnet, or None
MULTIVIEW = {"grid": 2, "overlap": 0.2, "topk": 3, "flip_tta": True}
# 4.45.2: the pinned one (no overlay); 4.47.1 the last release without TimmWrapper, 4.48.0 the first with it,
# 4.52.4 the last whose TimmWrapper drops config.json's model_args, 4.53.0 the first that passes them on
STOCK_CANDIDATES = ["4.45.2", "4.47.1", "4.48.0", "4.52.4", "4.53.0"]
TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def miner_python() -> Path:
    venv = os.environ.get("MINER_VENV")
    assert venv, "set MINER_VENV to an environment built by scripts/miner_env.sh (see the module docstring)"
    python = Path(venv).resolve() / "bin" / "python"
    assert python.is_file(), f"{python} not found: build it with scripts/miner_env.sh {venv}"
    return python


# The harness: written by us from the subnet's documented interface (not copied from its code).
HARNESS = {
    "base_miner/__init__.py": '''
        """Test harness standing in for the NATIX subnet's base_miner package (written for
        tests/miner_env_check.py from the documented interface; not the subnet's code)."""
        ''',
    "base_miner/registry.py": '''
        """Name -> detector class, filled by ``@DETECTOR_REGISTRY.register_module(module_name=NAME)``."""


        class Registry:
            def __init__(self):
                self.classes = {}

            def register_module(self, module_name=None):
                def register(cls):
                    self.classes[module_name or cls.__name__] = cls
                    return cls
                return register

            def __getitem__(self, name):
                if name not in self.classes:
                    raise KeyError(f"no detector registered as {name!r}; registered: {sorted(self.classes)}")
                return self.classes[name]


        DETECTOR_REGISTRY = Registry()
        ''',
    "base_miner/detectors/__init__.py": '''
        from .feature_detector import FeatureDetector
        ''',
    "base_miner/detectors/feature_detector.py": '''
        """The base class a miner's detector derives from: built once with
        ``(model_name, config_name, device)``, then called with a PIL image, returning a float in [0, 1]."""
        import abc


        class FeatureDetector(abc.ABC):
            def __init__(self, model_name, config_name=None, device="cpu"):
                self.model_name, self.config_name, self.device = model_name, config_name, device
                self.load_model()

            @abc.abstractmethod
            def load_model(self):
                """Load the weights named by the config."""

            @abc.abstractmethod
            def __call__(self, image):
                """The roadwork probability of one PIL image."""
        ''',
}


def write_harness(root: Path) -> None:
    """Our ``base_miner`` harness under ``root`` (see the module docstring)."""
    for name, text in HARNESS.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip())
    (root / "base_miner/detectors/configs").mkdir()


@pytest.fixture(scope="module")
def deployed(tmp_path_factory):
    """A base_miner (our harness, or a copy of ROADWORK_SUBNET) with our detector installed and a
    freshly exported bundle as its weights."""
    root = tmp_path_factory.mktemp("deployed")
    subnet = root / "subnet"
    if REAL_SUBNET:
        assert (Path(REAL_SUBNET) / "base_miner/registry.py").is_file(), \
            f"ROADWORK_SUBNET={REAL_SUBNET}: not a streetvision-subnet checkout (no base_miner/registry.py)"
        shutil.copytree(REAL_SUBNET, subnet, ignore=shutil.ignore_patterns(".git"))
    else:
        write_harness(subnet)
    detectors = subnet / "base_miner" / "detectors"
    shutil.copyfile(ROOT / "src/roadwork/miner/detector.py", detectors / "roadwork_detector_timm.py")
    with open(detectors / "__init__.py", "a") as handle:
        handle.write("from .roadwork_detector_timm import RoadworkTimmDetector\n")
    shutil.copyfile(ROOT / "src/roadwork/miner/configs/roadwork_timm.yaml", detectors / "configs/roadwork_timm.yaml")
    for views in ("single", "multi"):
        config = yaml.safe_load((detectors / "configs/roadwork_timm.yaml").read_text()) | {"views": views}
        (detectors / f"configs/roadwork_timm_{views}.yaml").write_text(yaml.safe_dump(config))
    bundle = subnet / "base_miner" / "RoadworkTimm" / "weights"  # the YAML's default, relative to the miner's cwd
    model_dir = make_model_dir(root / "model", "linear")
    build_bundle(model_dir, 1.3, 0.05, bundle, model_name="roadwork-ci", version="1.0.0", submitted_by="5Key",
                 metrics={}, provenance={}, onnx=False)
    if REAL_SUBNET:  # the subnet's stock ViT detector reads hf_repo from its YAML
        (detectors / "configs/ViT_bundle.yaml").write_text(yaml.safe_dump({"hf_repo": str(bundle), "config_name": "none"}))

    images = root / "images"
    images.mkdir()
    for i in range(12):  # val_test-like: scenes of both labels at camera size and at the validators' 224 x 224
        rng = scene_rng(7, i)
        image, _ = render_scene(rng, 320, 240, label=i % 2)
        if i % 3 == 0:
            image = validator_resize(image)
        (images / f"{i:02d}.jpg").write_bytes(encode_jpeg(image, 75))
    paths = sorted(images.iterdir())
    pictures = [load_image(p) for p in paths]

    single = Predictor(bundle, device="cpu").predict(pictures)
    aggregate = Predictor(bundle, MULTIVIEW["overlap"], MULTIVIEW["topk"], MULTIVIEW["grid"], MULTIVIEW["flip_tta"],
                          device="cpu").predict(pictures, multiview=True)
    tau = float(np.median(aggregate))
    decision = {"threshold": tau, "use_multiview": True, "val_test": {}, "val_select": {}}
    write_inference_config(bundle, inference_config(decision, **MULTIVIEW))
    multi = np.array([fold_threshold(a, tau) for a in aggregate])
    return {"subnet": subnet, "bundle": bundle, "paths": [str(p) for p in paths], "single": single, "multi": multi}


MINER_SCRIPT = textwrap.dedent("""
    import io, json, sys
    from PIL import Image
    sys.path.insert(0, ".")
    import base_miner.detectors                      # as neurons/miner.py does
    from base_miner.registry import DETECTOR_REGISTRY
    from base_miner.detectors import FeatureDetector
    kind, name, config, paths, result_file = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4]), sys.argv[5]
    import transformers, timm, PIL
    out = {"versions": {"transformers": transformers.__version__, "timm": timm.__version__, "pillow": PIL.__version__}}
    try:
        if kind == "registry":  # the miner: DETECTOR_REGISTRY[IMAGE_DETECTOR](config_name=..., device=...)
            detector = DETECTOR_REGISTRY[name](config_name=config, device="cpu")
            out["is_feature_detector"] = isinstance(detector, FeatureDetector)
        else:  # the stock ViT detector's steps, written here; name is the bundle folder (its hf_repo)
            from transformers import AutoImageProcessor, AutoModelForImageClassification, pipeline
            classify = pipeline("image-classification", model=AutoModelForImageClassification.from_pretrained(name),
                                feature_extractor=AutoImageProcessor.from_pretrained(name, use_fast=True))
            detector = lambda image: {r["label"]: r["score"] for r in classify(image)}["Roadwork"]
        scores = []
        for path in paths:
            with open(path, "rb") as handle:
                scores.append(float(detector(Image.open(io.BytesIO(handle.read())))))   # as forward_image does
        out["scores"] = scores
    except Exception as error:
        out["error"] = f"{type(error).__name__}: {error}"
    with open(result_file, "w") as handle:  # not stdout: the subnet's logger (bittensor) may write there too
        json.dump(out, handle)
""")


def run_in_miner(python: Path, deployed: dict, name: str, config: str, overlay: Path | None = None,
                 kind: str = "registry") -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["HF_HUB_OFFLINE"] = "1"
    if overlay is not None:
        env["PYTHONPATH"] = str(overlay)
    result_file = deployed["subnet"].parent / "result.json"
    result_file.unlink(missing_ok=True)
    done = subprocess.run([str(python), "-c", MINER_SCRIPT, kind, name, config, json.dumps(deployed["paths"]), str(result_file)],
                          cwd=deployed["subnet"], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0 and result_file.is_file(), \
        f"miner process failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return json.loads(result_file.read_text())


@pytest.mark.parametrize("views", ["single", "multi"])
def test_our_detector_in_the_miner_equals_our_predictor(miner_python, deployed, views):
    result = run_in_miner(miner_python, deployed, "RoadworkTimm", f"roadwork_timm_{views}.yaml")
    assert result["versions"] == {"transformers": "4.45.2", "timm": "1.0.22", "pillow": "10.4.0"}
    assert "error" not in result, result.get("error")
    assert result["is_feature_detector"]
    got, expected = np.array(result["scores"]), deployed[views]
    assert np.abs(got - expected).max() < TOLERANCE, np.abs(got - expected).max()
    assert ((got > 0.5) == (expected > 0.5)).all() and 0 < (got > 0.5).sum() < len(got)


def test_views_from_the_bundle_and_the_shipped_yaml(miner_python, deployed):
    """The YAML as shipped (views: bundle): inference.json says multi-view."""
    result = run_in_miner(miner_python, deployed, "RoadworkTimm", "roadwork_timm.yaml")
    assert np.abs(np.array(result["scores"]) - deployed["multi"]).max() < TOLERANCE


def stock_result(miner_python, deployed, version: str) -> dict:
    overlay = None
    if version != "4.45.2":
        overlay = Path(miner_python).parents[1] / "overlays" / f"transformers-{version}"
        assert overlay.is_dir(), f"{overlay} missing: scripts/miner_env.sh builds it"
    if REAL_SUBNET:  # the subnet's own ViT detector, its YAML's hf_repo pointing at our bundle
        result = run_in_miner(miner_python, deployed, "ViT", "ViT_bundle.yaml", overlay)
    else:
        result = run_in_miner(miner_python, deployed, str(deployed["bundle"]), "", overlay, kind="stock")
    assert result["versions"]["transformers"] == version
    return result


def test_stock_vit_detector_fails_in_the_pinned_environment(miner_python, deployed):
    result = stock_result(miner_python, deployed, "4.45.2")
    assert "scores" not in result
    # what a miner sees: the timm config.json has no model_type transformers 4.45 knows
    assert result["error"].startswith("ValueError: Unrecognized model in"), result["error"]
    assert "model_type" in result["error"]


def test_lowest_transformers_for_the_stock_path_is_4_53_0(miner_python, deployed):
    outcomes = {version: stock_result(miner_python, deployed, version) for version in STOCK_CANDIDATES}
    working = [version for version, result in outcomes.items() if "scores" in result]
    assert working == ["4.53.0"], {v: r.get("error", "works") for v, r in outcomes.items()}
    for version in ("4.45.2", "4.47.1"):  # no TimmWrapper: the config is not recognised
        assert outcomes[version]["error"].startswith("ValueError: Unrecognized model in"), outcomes[version]["error"]
    # TimmWrapper without model_args: the stock-sized network does not take our weights (4.48.0), or
    # fails before that (4.52.4: "'Eva' object has no attribute '_initialize_weights'")
    assert "size mismatch" in outcomes["4.48.0"]["error"], outcomes["4.48.0"]["error"]
    assert "Unrecognized model" not in outcomes["4.52.4"]["error"], outcomes["4.52.4"]["error"]
    got = np.array(outcomes["4.53.0"]["scores"])
    assert np.abs(got - deployed["single"]).max() < TOLERANCE  # the stock pipeline scores one view


@pytest.fixture(scope="module")
def repro_deployed(tmp_path_factory):
    """The harness (or ROADWORK_SUBNET) with our detector and, as its weights, the bundle of a fresh
    clone's `dvc repro` (a tiny configuration of the real pipeline), scored on that run's val_test
    images (as the validators send them: 224 x 224 JPEG) by our Predictor with the bundle's views."""
    from e2e import TINY, dvc, make_clean_repo, merge
    from roadwork.data.examples import load_split
    from roadwork.evaluate.protocol import validator_challenge_image, query_rng
    from roadwork.miner.detector import read_inference_config

    root = tmp_path_factory.mktemp("repro_deployed")
    repo = make_clean_repo(root / "repo", merge(TINY, {"explora": {"epochs": 1, "warmup_epochs": 0},
                                                         "export": {"bootstrap": 100, "protocol_draws": 1}}))
    dvc(repo, "repro", "export")
    subnet = root / "subnet"
    write_harness(subnet) if not REAL_SUBNET else shutil.copytree(REAL_SUBNET, subnet,
                                                                  ignore=shutil.ignore_patterns(".git"))
    detectors = subnet / "base_miner" / "detectors"
    shutil.copyfile(ROOT / "src/roadwork/miner/detector.py", detectors / "roadwork_detector_timm.py")
    with open(detectors / "__init__.py", "a") as handle:
        handle.write("from .roadwork_detector_timm import RoadworkTimmDetector\n")
    shutil.copyfile(ROOT / "src/roadwork/miner/configs/roadwork_timm.yaml", detectors / "configs/roadwork_timm.yaml")
    bundle = subnet / "base_miner" / "RoadworkTimm" / "weights"
    shutil.copytree(repo / "data" / "bundle", bundle)

    examples = load_split(repo / "data" / "raw", repo / "data" / "split" / "splits.csv", "val_test")
    images = root / "images"
    images.mkdir()
    for i, example in enumerate(examples):  # level-1 challenges: rotated, cropped, 224 x 224 JPEG
        challenge = validator_challenge_image(load_image(example.path), 1, query_rng(0, 1, i))
        challenge.save(images / f"{i:03d}.jpg", format="JPEG")
    paths = sorted(images.iterdir())
    pictures = [load_image(p) for p in paths]
    inference = read_inference_config(bundle)
    if inference["views"] == "single":
        expected = Predictor(bundle, device="cpu").predict(pictures)
    else:
        views = inference["multiview"]
        aggregate = Predictor(bundle, views["overlap"], views["topk"], views["grid"], views["flip_tta"],
                              device="cpu").predict(pictures, multiview=True)
        expected = np.array([fold_threshold(a, views["threshold"]) for a in aggregate])
    return {"subnet": subnet, "bundle": bundle, "paths": [str(p) for p in paths], "expected": expected,
            "views": inference["views"]}


def test_a_bundle_from_a_fresh_clones_dvc_repro_equals_our_predictor_in_the_miner(miner_python, repro_deployed):
    """The shipped YAML (views as the export decided), the whole val_test of the run."""
    result = run_in_miner(miner_python, repro_deployed, "RoadworkTimm", "roadwork_timm.yaml")
    assert result["versions"] == {"transformers": "4.45.2", "timm": "1.0.22", "pillow": "10.4.0"}
    assert "error" not in result, result.get("error")
    got = np.array(result["scores"])
    assert len(got) == len(repro_deployed["expected"]) > 10
    assert np.abs(got - repro_deployed["expected"]).max() < TOLERANCE

"""The detector inside the NATIX miner's own pinned environment (transformers 4.45.2, timm 1.0.22,
Pillow 10.4.0, torch 2.6.0, torchvision 0.21.0; built by scripts/miner_env.sh), installed and loaded
the way a miner does it.

Not collected by the plain ``pytest -q`` (the file name does not start with ``test_``): building
the environment takes minutes and needs the package index. .ci/run builds it and runs

    MINER_VENV=/path/to/miner-venv pytest -q tests/miner_env_check.py

This file runs in *our* environment: it exports a fresh bundle (a tiny trained model through the
real ``build_bundle``, inference.json through ``write_inference_config``; and, for the last test,
the bundle of a fresh clone's ``dvc repro`` of a tiny configuration), publishes it with
``roadwork publish``'s folder writer, installs it in a fresh subnet layout by running the README's
Route 1 commands with bash as they are written (the ``<!-- route1 -->`` block: ``cp``, ``echo >>
__init__.py``, ``mkdir -p``), computes the project's scores on validator challenges (the
validators' augmentation at levels 0-3, 224 x 224 JPEG), and runs the miner's steps in the miner's
interpreter:

(a) miner.env (the README's ``<!-- route1-env -->`` block) sourced as start_miner.sh sources it, the
    device as it passes it (``${IMAGE_DETECTOR_DEVICE:-None}``: a missing line is the string "None",
    the CPU), "auto" resolved as Miner.load_image_detector does; ``import base_miner.detectors``;
    ``DETECTOR_REGISTRY["RoadworkTimm"](config_name=..., device=...)``;
    ``detector(Image.open(BytesIO(jpeg)))`` equals the project's scores to 1e-5 (single view and
    multi-view); timm 1.0.22's own ``local-dir:`` loading fails there with ``UnpicklingError``;
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

The checkout is copied to a temporary folder and Route 1 run in it; (b) and (c) then go through the subnet's own ``ViT`` detector
(``DETECTOR_REGISTRY["ViT"]``) instead of the stock steps written here.
"""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import json
import shutil
import subprocess
import textwrap
from pathlib import Path

import numpy as np
import pytest
import yaml
from kit.bundles import make_model_dir

from roadwork.data.synthetic import render_scene, scene_rng
from roadwork.evaluate.protocol import query_rng, validator_challenge_image
from roadwork.export.bundle import build_bundle
from roadwork.miner import publish
from roadwork.miner.decision import inference_config, write_inference_config
from roadwork.predict import Predictor, load_image

ROOT = Path(__file__).resolve().parents[1]
REAL_SUBNET = os.environ.get("ROADWORK_SUBNET")  # a checkout of natixnetwork/streetvision-subnet, or None
MULTIVIEW = {"grid": 2, "overlap": 0.2, "topk": 3, "flip_tta": True}
# 4.45.2: the pinned one (no overlay); 4.47.1 the last release without TimmWrapper, 4.48.0 the first with it,
# 4.52.4 the last whose TimmWrapper drops config.json's model_args, 4.53.0 the first that passes them on
STOCK_CANDIDATES = ["4.45.2", "4.47.1", "4.48.0", "4.52.4", "4.53.0"]
TOLERANCE = 1e-5
HOTKEY = "5GrwvaEF5zXb26Fz9rcQpDWS57CtERHpNehXCPcNoHGKutQY"  # Substrate's dev account "Alice": a valid SS58 hotkey


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
    "base_miner/detectors/__init__.py": """
        from .feature_detector import FeatureDetector
        """,
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


def readme_block(marker: str) -> str:
    """The fenced block that follows ``<!-- marker -->`` in the README (Route 1's commands, its miner.env)."""
    text = (ROOT / "README.md").read_text()
    start = text.index(f"<!-- {marker} -->\n```bash\n") + len(f"<!-- {marker} -->\n```bash\n")
    return text[start : text.index("```", start)]


def install_route1(subnet: Path, bundle: Path, root: Path) -> Path:
    """What a miner does, literally: ``roadwork publish`` of the bundle, then the README's Route 1 commands
    run by bash in the subnet checkout (``PUBLISH`` = that folder). Returns the publish folder."""
    folder = root / "publish"
    publish.write_publish_folder(bundle, folder, hotkey=HOTKEY, version="1.0.0", hf_repo="you/roadwork")
    commands = readme_block("route1")
    for name in (publish.DETECTOR_FILE, publish.CONFIG_FILE):  # the README copies what publish writes
        assert f'"$PUBLISH/{name}"' in commands, f"README Route 1 does not copy {name}"
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", commands],
        cwd=subnet,
        capture_output=True,
        text=True,
        env={**os.environ, "PUBLISH": str(folder)},
        timeout=300,
    )
    assert done.returncode == 0, f"README Route 1 commands failed in {subnet}:\n{commands}\n{done.stderr}"
    return folder


def fresh_subnet(root: Path) -> Path:
    """Our harness, or a copy of ROADWORK_SUBNET (a fresh checkout: no base_miner/RoadworkTimm)."""
    subnet = root / "subnet"
    if REAL_SUBNET:
        assert (Path(REAL_SUBNET) / "base_miner/registry.py").is_file(), (
            f"ROADWORK_SUBNET={REAL_SUBNET}: not a streetvision-subnet checkout (no base_miner/registry.py)"
        )
        shutil.copytree(REAL_SUBNET, subnet, ignore=shutil.ignore_patterns(".git", "RoadworkTimm"))
    else:
        write_harness(subnet)
    return subnet


def challenges(images: list, root: Path, seed: int = 0) -> list[Path]:
    """What the validators send for each image: its augmentation at levels 0-3 in turn, 224 x 224, JPEG."""
    folder = root / "challenges"
    folder.mkdir()
    for i, image in enumerate(images):
        level = i % 4
        challenge = validator_challenge_image(image, level, query_rng(seed, level, i))
        challenge.save(folder / f"{i:03d}.jpg", format="JPEG")
    return sorted(folder.iterdir())


def project_scores(bundle: Path, paths: list[Path], multiview: dict | None) -> np.ndarray:
    """The project's scores (our environment: its torch and timm): Predictor, single view, or multi-view
    with the bundle's settings and threshold."""
    pictures = [load_image(p) for p in paths]
    if multiview is None:
        return Predictor(bundle, device="cpu").predict(pictures)
    return Predictor(
        bundle,
        multiview["overlap"],
        multiview["topk"],
        multiview["grid"],
        multiview["flip_tta"],
        multiview_threshold=multiview["threshold"],
        device="cpu",
    ).predict(pictures, multiview=True)


@pytest.fixture(scope="module")
def deployed(tmp_path_factory):
    """A fresh subnet (our harness, or a copy of ROADWORK_SUBNET) with a freshly exported bundle published and
    installed by the README's Route 1 commands, and the project's scores on validator challenges."""
    root = tmp_path_factory.mktemp("deployed")
    subnet = fresh_subnet(root)
    bundle = root / "bundle"
    model_dir = make_model_dir(root / "model", "linear")
    build_bundle(
        model_dir,
        1.3,
        0.05,
        bundle,
        model_name="roadwork-ci",
        version="1.0.0",
        submitted_by=HOTKEY,
        metrics={},
        provenance={},
        onnx=False,
    )
    scenes = [render_scene(scene_rng(7, i), 320, 240, label=i % 2)[0] for i in range(16)]
    paths = challenges(scenes, root)
    pictures = [load_image(p) for p in paths]
    aggregate = Predictor(
        bundle, MULTIVIEW["overlap"], MULTIVIEW["topk"], MULTIVIEW["grid"], MULTIVIEW["flip_tta"], device="cpu"
    ).predict(pictures, multiview=True)
    tau = float(np.median(aggregate))  # stands in for the export's fit on val_select
    decision = {"threshold": tau, "use_multiview": True, "val_select": {}}
    write_inference_config(bundle, inference_config(decision, **MULTIVIEW))
    install_route1(subnet, bundle, root)
    detectors = subnet / "base_miner" / "detectors"
    for views in ("single", "multi"):  # the shipped YAML with views forced
        config = yaml.safe_load((detectors / "configs" / publish.CONFIG_FILE).read_text()) | {"views": views}
        (detectors / f"configs/roadwork_timm_{views}.yaml").write_text(yaml.safe_dump(config))
    weights = subnet / "base_miner" / "RoadworkTimm" / "weights"  # where Route 1 put the bundle
    if REAL_SUBNET:  # the subnet's stock ViT detector reads hf_repo from its YAML
        (detectors / "configs/ViT_bundle.yaml").write_text(
            yaml.safe_dump({"hf_repo": str(weights), "config_name": "none"})
        )
    return {
        "subnet": subnet,
        "bundle": weights,
        "paths": [str(p) for p in paths],
        "single": project_scores(bundle, paths, None),
        "multi": project_scores(bundle, paths, {**MULTIVIEW, "threshold": tau}),
    }


MINER_SCRIPT = textwrap.dedent("""
    import io, json, sys
    from PIL import Image
    sys.path.insert(0, ".")
    import base_miner.detectors                      # as neurons/miner.py does
    from base_miner.registry import DETECTOR_REGISTRY
    from base_miner.detectors import FeatureDetector
    kind, name, config, device, paths, result_file = sys.argv[1:5] + [json.loads(sys.argv[5]), sys.argv[6]]
    import transformers, timm, PIL, torch, torchvision
    out = {"versions": {"transformers": transformers.__version__, "timm": timm.__version__, "pillow": PIL.__version__,
                        "torch": torch.__version__.split("+")[0], "torchvision": torchvision.__version__.split("+")[0]}}
    try:
        if kind == "registry":  # the miner (Miner.load_image_detector): "auto" resolved first, then the registry
            if device == "auto":
                device = "cuda" if torch.cuda.is_available() else "cpu"
            detector = DETECTOR_REGISTRY[name](config_name=config, device=device)
            out["is_feature_detector"] = isinstance(detector, FeatureDetector)
            out["device"] = str(detector.device)
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


def miner_env(config: str | None = None, device: str | None = "as written") -> str:
    """The README's miner.env lines, with IMAGE_DETECTOR_CONFIG replaced (``config``) and the
    IMAGE_DETECTOR_DEVICE line replaced (``device``) or left out (None)."""
    lines = []
    for line in readme_block("route1-env").splitlines():
        if config is not None and line.startswith("IMAGE_DETECTOR_CONFIG="):
            line = f"IMAGE_DETECTOR_CONFIG={config}"
        if device != "as written" and line.startswith("IMAGE_DETECTOR_DEVICE="):
            if device is None:
                continue
            line = f"IMAGE_DETECTOR_DEVICE={device}"
        lines.append(line)
    return "\n".join(lines) + "\n"


# start_miner.sh's steps: source miner.env, then the detector settings with its defaults ("None")
START_MINER = """set -a; source miner.env; set +a
"$MINER_PYTHON" -c "$MINER_SCRIPT" registry "${IMAGE_DETECTOR:-None}" "${IMAGE_DETECTOR_CONFIG:-None}" \\
    "${IMAGE_DETECTOR_DEVICE:-None}" "$MINER_PATHS" "$MINER_RESULT"
"""


def run_in_miner(
    python: Path,
    deployed: dict,
    name: str = "",
    config: str = "",
    overlay: Path | None = None,
    kind: str = "registry",
    env_file: str | None = None,
) -> dict:
    """``kind="registry"``: our detector as the miner loads it, from ``env_file`` (miner.env; default: the
    README's) through start_miner.sh's steps; ``kind="stock"``: the stock steps on the bundle folder ``name``."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["HF_HUB_OFFLINE"] = "1"
    if overlay is not None:
        env["PYTHONPATH"] = str(overlay)
    result_file = deployed["subnet"].parent / "result.json"
    result_file.unlink(missing_ok=True)
    paths = json.dumps(deployed["paths"])
    if kind == "registry" and env_file is not None:
        (deployed["subnet"] / "miner.env").write_text(env_file)
        env.update(
            MINER_PYTHON=str(python), MINER_SCRIPT=MINER_SCRIPT, MINER_PATHS=paths, MINER_RESULT=str(result_file)
        )
        command = ["bash", "-c", START_MINER]
    else:
        command = [str(python), "-c", MINER_SCRIPT, kind, name, config, "cpu", paths, str(result_file)]
    done = subprocess.run(command, cwd=deployed["subnet"], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0 and result_file.is_file(), (
        f"miner process failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    )
    return json.loads(result_file.read_text())


# the lock's; MINER_TORCH=TORCH:TORCHVISION: the pair the environment was built with instead (scripts/miner_env.sh)
PINNED = {
    "transformers": "4.45.2",
    "timm": "1.0.22",
    "pillow": "10.4.0",
    **dict(zip(("torch", "torchvision"), os.environ.get("MINER_TORCH", "2.6.0:0.21.0").split(":"))),
}


@pytest.mark.parametrize("device", ["as written", None, "None", "auto"], ids=["readme", "missing", "None", "auto"])
@pytest.mark.parametrize("views", ["single", "multi"])
def test_our_detector_in_the_miner_equals_the_projects_scores(miner_python, deployed, views, device):
    """Route 1 as the README writes it, miner.env read as start_miner.sh reads it (a missing device line
    gives the string "None": the CPU), on validator challenges, in the lock's torch 2.6.0."""
    result = run_in_miner(miner_python, deployed, env_file=miner_env(f"roadwork_timm_{views}.yaml", device))
    assert result["versions"] == PINNED
    assert "error" not in result, result.get("error")
    assert result["is_feature_detector"] and result["device"] in ("cpu", "cuda")
    got, expected = np.array(result["scores"]), deployed[views]
    assert np.abs(got - expected).max() < TOLERANCE, np.abs(got - expected).max()
    assert ((got > 0.5) == (expected > 0.5)).all() and 0 < (got > 0.5).sum() < len(got)


def test_route1_literally_with_the_shipped_yaml(miner_python, deployed):
    """The README's miner.env and the published YAML as they are (views: bundle): inference.json says multi-view."""
    result = run_in_miner(miner_python, deployed, env_file=miner_env())
    assert "error" not in result, result.get("error")
    assert np.abs(np.array(result["scores"]) - deployed["multi"]).max() < TOLERANCE


def test_timms_own_local_dir_loading_fails_on_the_pinned_torch(miner_python, deployed):
    """Why the detector reads the weights with safetensors: timm 1.0.22's ``local-dir:`` loading goes through
    torch.load, which cannot read model.safetensors on torch 2.6.0 (the miner would exit at start-up)."""
    code = "import sys, timm; timm.create_model('local-dir:' + sys.argv[1], pretrained=True)"
    done = subprocess.run(
        [str(miner_python), "-c", code, str(deployed["bundle"])],
        capture_output=True,
        text=True,
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
        timeout=300,
    )
    assert done.returncode != 0 and "UnpicklingError" in done.stderr, done.stderr[-2000:]


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
    """A fresh subnet (harness or ROADWORK_SUBNET) with, installed by the README's Route 1 commands, the
    published bundle of a fresh clone's `dvc repro` (a tiny configuration of the real pipeline), scored
    by the project on that run's val_test images as validator challenges (levels 0-3) with the bundle's views."""
    from kit.repo import TINY, dvc, make_clean_repo, merge

    from roadwork.data.examples import load_split
    from roadwork.miner.detector import read_inference_config

    root = tmp_path_factory.mktemp("repro_deployed")
    repo = make_clean_repo(
        root / "repo",
        merge(TINY, {"explora": {"epochs": 1, "warmup_epochs": 0}, "export": {"bootstrap": 100, "protocol_draws": 1}}),
    )
    dvc(repo, "repro", "export")
    subnet = fresh_subnet(root)
    bundle = repo / "data" / "bundle"
    install_route1(subnet, bundle, root)
    examples = load_split(repo / "data" / "raw", repo / "data" / "split" / "splits.csv", "val_test")
    paths = challenges([load_image(e.path) for e in examples], root)
    inference = read_inference_config(bundle)
    expected = project_scores(bundle, paths, inference["multiview"] if inference["views"] == "multi" else None)
    return {"subnet": subnet, "paths": [str(p) for p in paths], "expected": expected, "views": inference["views"]}


def test_a_bundle_from_a_fresh_clones_dvc_repro_equals_the_projects_scores_in_the_miner(miner_python, repro_deployed):
    """Route 1 literally (the README's commands and miner.env, the published YAML: views as the export
    decided), the whole val_test of the run."""
    result = run_in_miner(miner_python, repro_deployed, env_file=miner_env())
    assert result["versions"] == PINNED
    assert "error" not in result, result.get("error")
    got = np.array(result["scores"])
    assert len(got) == len(repro_deployed["expected"]) > 10
    assert np.abs(got - repro_deployed["expected"]).max() < TOLERANCE

"""The miner bundle: a Hugging Face model directory the stock NATIX miner loads as it is.

Layout of a bundle directory::

    config.json         timm's Hugging Face config (architecture, num_classes=2, label_names
                        ["None", "Roadwork"], model_args, pretrained_cfg = eval preprocessing)
    model.safetensors   weights of a *stock* timm model (state-dict keys as timm's)
    model.onnx          the same model for onnxruntime (optional; ``model.onnx.data`` if > 2 GiB)
    model_card.json     what miner registration asks for + our metrics
    manifest.json       sha256 of every other file, provenance, metrics, the folded decision rule

How the miner sees it: ``AutoModelForImageClassification.from_pretrained(dir)`` resolves to
transformers' ``TimmWrapperForImageClassification``, which calls
``timm.create_model(architecture, pretrained=False, num_classes=config.num_labels, **model_args)``;
``AutoImageProcessor.from_pretrained(dir, use_fast=True)`` resolves to ``TimmWrapperImageProcessor``,
which builds timm's eval transform from ``pretrained_cfg`` (there is no "fast" variant; it warns and
uses the same class). The ``image-classification`` pipeline applies softmax over the two logits.

The decision is folded into the head. Our classifier outputs one roadwork logit ``z``; calibration
gives a temperature ``T`` and threshold selection a threshold ``t`` (raw logit space, roadwork iff
``z > t``). The exported head is a 2-row Linear::

    row 0 ("None")     = 0,        bias 0
    row 1 ("Roadwork") = w / T,    bias (b - t) / T          (w, b from ``head.as_linear()``)

so ``softmax(logits)[1] = sigmoid((z - t) / T)``: the calibrated probability, shifted so that the
tuned threshold sits at 0.5. Validators label ``np.round(p)``: p > 0.5 is roadwork and exactly 0.5
is not, matching ``z > t`` (up to float32 rounding for images within ~1e-6 of the threshold).
If a threshold was chosen in the calibrated space (``z / T > t_c``), pass ``threshold_logit = T * t_c``.

The model card's ``submission_time`` is the export time (UTC, ISO 8601) unless given explicitly
(or ``SOURCE_DATE_EPOCH`` is set); the manifest hashes the card like every other file, and
``model_sha256`` is a digest of every file *except* the card and the manifest, so it identifies
the exported model independently of when it was exported.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import timm
import torch
from timm.models import save_for_hf
from torch import nn

from roadwork.io import atomic_path, dumps_json, sha256_file

# the one loader and eval transform: the miner's detector file's (read with safetensors, never torch.load)
from roadwork.miner.detector import bundle_data_config, bundle_transform, load_bundle_model  # noqa: F401

# the manifest's names and checks, shared with the miner's tools (publish, inference.json)
from roadwork.miner.manifest import MANIFEST, MODEL_CARD, submission_time_now, verify_manifest  # noqa: F401
from roadwork.miner.manifest import model_sha256 as _model_sha256
from roadwork.models.adapters import has_adapters, merge_adapters
from roadwork.models.classifier import RoadworkClassifier
from roadwork.models.model_dir import eval_data_config, load_trained

LABEL_NAMES = ["None", "Roadwork"]
ROADWORK_INDEX = 1
ONNX_NAME = "model.onnx"
DEFAULT_DESCRIPTION = (
    "Binary roadwork classifier (NATIX StreetVision): a DINOv3 ViT from timm fine-tuned on "
    "natix-network-org/roadwork; temperature-calibrated, decision threshold folded into the head "
    "so that the 'Roadwork' score is > 0.5 exactly when the tuned decision is roadwork."
)
# Drop from timm's exported pretrained_cfg: the pretrained tag names upstream weights, not ours.
_DROP_PRETRAINED_CFG = ("tag",)


class BundleError(RuntimeError):
    """The exported bundle does not reproduce the source classifier's decision."""


# ------------------------------------------------------------------------------ head folding
@torch.no_grad()
def folded_head(head: nn.Module, temperature: float, threshold_logit: float) -> nn.Linear:
    """A 2-class Linear equal to ``[0, (head(x) - t) / T]`` (computed in float64, stored fp32)."""
    if not (math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be a finite positive number, got {temperature!r}")
    if not math.isfinite(threshold_logit):
        raise ValueError(f"threshold_logit must be finite, got {threshold_logit!r}")
    linear = head.as_linear()
    if linear.out_features != 1:
        raise ValueError(f"expected a single-logit head, got out_features={linear.out_features}")
    w = linear.weight.detach().double().cpu()[0]
    b = float(linear.bias.detach().double().cpu()[0]) if linear.bias is not None else 0.0
    out = nn.Linear(linear.in_features, 2)
    weight = torch.zeros(2, linear.in_features, dtype=torch.float64)
    bias = torch.zeros(2, dtype=torch.float64)
    weight[ROADWORK_INDEX] = w / temperature
    bias[ROADWORK_INDEX] = (b - threshold_logit) / temperature
    out.weight.copy_(weight.float())
    out.bias.copy_(bias.float())
    return out


def stock_model(classifier: RoadworkClassifier, temperature: float, threshold_logit: float) -> nn.Module:
    """The classifier as a stock timm model with ``num_classes=2`` and the folded head.

    Mutates ``classifier.backbone`` (adapters merged, classifier reset); returns that module."""
    backbone = classifier.backbone
    if has_adapters(backbone):
        merge_adapters(backbone)
    head = folded_head(classifier.head, temperature, threshold_logit)
    backbone.reset_classifier(2)
    backbone.head.load_state_dict(head.state_dict())
    return backbone.float().cpu().eval().requires_grad_(False)


# ------------------------------------------------------------------------------ loading
def read_config(bundle_dir: str | Path) -> dict:
    return json.loads((Path(bundle_dir) / "config.json").read_text())


def roadwork_probability(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """P(Roadwork) = softmax(logits)[:, 1] for preprocessed images (B, 3, S, S) -> (B,)."""
    with torch.no_grad():
        logits = model(images)
    return torch.softmax(logits.float(), dim=-1)[:, ROADWORK_INDEX]


# ------------------------------------------------------------------------------ building
def _write_hf_layout(model: nn.Module, description: dict, out_dir: Path) -> None:
    save_for_hf(
        model,
        str(out_dir),
        model_config={"label_names": list(LABEL_NAMES)},
        safe_serialization=True,
        data_config=eval_data_config(description),
    )
    config_path = out_dir / "config.json"
    config = json.loads(config_path.read_text())
    # timm records num_classes in model_args, while transformers' TimmWrapper passes
    # num_classes=config.num_labels *and* **model_args to timm.create_model: "got multiple values for
    # keyword argument 'num_classes'". num_classes stays at the root (both readers take it there).
    config.get("model_args", {}).pop("num_classes", None)
    for key in _DROP_PRETRAINED_CFG:
        config["pretrained_cfg"].pop(key, None)
    config_path.write_text(json.dumps(config, indent=2) + "\n")


def _check_against_source(
    exported: nn.Module,
    reference_logit: torch.Tensor,
    images: torch.Tensor,
    temperature: float,
    threshold_logit: float,
    what: str,
) -> float:
    with torch.no_grad():
        logits = exported(images).double()
    expected = (reference_logit.double() - threshold_logit) / temperature
    difference = float(((logits[:, 1] - logits[:, 0]) - expected).abs().max())
    scale = max(1.0, float(expected.abs().max()))
    if not difference <= 1e-4 * scale:
        raise BundleError(f"{what} does not reproduce (z - t) / T: max difference {difference:.3g}")
    return difference


def _check_transformers(bundle_dir: Path, exported: nn.Module, images: torch.Tensor) -> float:
    """Load the bundle exactly as the stock miner does and compare logits with ``exported``."""
    from roadwork.evaluate.protocol import load_miner_model

    hf_model, _ = load_miner_model(bundle_dir)
    if hf_model.config.id2label.get(ROADWORK_INDEX) != "Roadwork":
        raise BundleError(f"transformers reads id2label={hf_model.config.id2label}")
    with torch.no_grad():
        difference = float((hf_model(pixel_values=images).logits - exported(images)).abs().max())
    if not difference <= 1e-5:
        raise BundleError(f"transformers' TimmWrapper output differs from timm's by {difference:.3g}")
    return difference


def build_bundle(
    model_dir: Path,
    temperature: float,
    threshold_logit: float,
    out_dir: Path,
    *,
    model_name: str,
    version: str,
    submitted_by: str,
    metrics: dict,
    provenance: dict,
    onnx: bool = True,
    description: str = DEFAULT_DESCRIPTION,
    submission_time: str | None = None,
    onnx_tolerance: float = 1e-4,
    check_transformers: bool = True,
) -> dict:
    """Write the miner bundle for the trained model in ``model_dir`` to ``out_dir`` (atomically:
    a failed or killed build leaves ``out_dir`` as it was). Returns the manifest (as written).

    ``temperature`` T > 0 and ``threshold_logit`` t (raw logit space, roadwork iff z > t) are folded
    into the head. ``metrics`` go to the card and the manifest; ``provenance`` (e.g. DVC hashes of
    the splits and params) to the manifest. With ``check_transformers`` the bundle is reloaded through
    ``AutoModelForImageClassification`` / ``AutoImageProcessor(use_fast=True)`` before it is published.
    Raises :class:`BundleError` / ``OnnxParityError`` when a check fails.
    """
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    temperature, threshold_logit = float(temperature), float(threshold_logit)
    classifier, source = load_trained(model_dir)
    classifier = classifier.float().cpu().eval()
    img_size = int(source["img_size"])
    adapter = source.get("adapter") or None

    # Reference: our classifier's logit z on fixed random inputs, before anything is folded.
    images = torch.randn(2, 3, img_size, img_size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        reference = classifier(images)
    exported = stock_model(classifier, temperature, threshold_logit)
    _check_against_source(exported, reference, images, temperature, threshold_logit, "the folded model")
    del classifier  # exported is its (mutated) backbone; the reloaded copy below replaces both

    checks: dict = {}
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        _write_hf_layout(exported, source, tmp)
        del exported
        reloaded = load_bundle_model(tmp)
        checks["reload_max_abs_diff"] = _check_against_source(
            reloaded, reference, images, temperature, threshold_logit, "config.json + model.safetensors"
        )
        if check_transformers:
            checks["transformers_max_abs_diff"] = _check_transformers(tmp, reloaded, images)
        onnx_record = None
        if onnx:
            from roadwork.export.onnx_export import export_and_check

            onnx_record = export_and_check(reloaded, tmp / ONNX_NAME, img_size, tolerance=onnx_tolerance)

        card = {
            "model_name": model_name,
            "description": description,
            "version": version,
            "submitted_by": submitted_by,
            "submission_time": submission_time or submission_time_now(),
            "backbone": source["backbone"],
            "img_size": img_size,
            "labels": list(LABEL_NAMES),
            "temperature": temperature,
            "threshold_logit": threshold_logit,
            "metrics": metrics,
        }
        (tmp / MODEL_CARD).write_text(dumps_json(card))

        for path in tmp.iterdir():
            path.chmod(0o644)  # safetensors writes 0600; a published artifact is world-readable
        files = {p.name: sha256_file(p) for p in sorted(tmp.iterdir()) if p.is_file()}
        manifest = {
            "files": files,
            "model_sha256": _model_sha256(files),
            "source": {
                "model_dir": model_dir.as_posix(),
                "model.safetensors": sha256_file(model_dir / "model.safetensors"),
                "model.json": sha256_file(model_dir / "model.json"),
                "adapter_merged": adapter,
            },
            "decision": {
                "temperature": temperature,
                "threshold_logit": threshold_logit,
                "roadwork_index": ROADWORK_INDEX,
                "rule": "P(Roadwork) = softmax(logits)[1] = sigmoid((z - threshold_logit) / temperature); "
                "roadwork iff P > 0.5",
            },
            "checks": checks,
            "onnx": onnx_record,
            "provenance": provenance,
            "metrics": metrics,
            "versions": {"timm": timm.__version__, "torch": torch.__version__},
        }
        (tmp / MANIFEST).write_text(dumps_json(manifest))
    return manifest

"""A trained model directory: what phase 1 and phase 4 write and every later stage reads.

    model.safetensors   the weights (the best checkpoint's), keys of :class:`RoadworkClassifier`
    model.json          how to rebuild the module (:data:`ARCHITECTURE` keys, the fine-tuning
                        ``adapter`` if any) and its evaluation preprocessing (mean, std,
                        interpolation; resize the short side to img_size, centre crop)
    logits.csv          split, id, label, logit for val_select, val_calib and val_test, computed
                        from exactly those weights
    logits_synthetic.csv  (when the synthesize stage ran) split, id, kind, label, logit of the
                        synthetic (i2i, t2i) children of those splits' sources

Written by :func:`save_model_dir` (atomically), read by :func:`load_trained` (the one way to
rebuild a trained classifier: export, evaluation and tests call it) and :func:`backbone_weights`.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from roadwork.io import atomic_path, dumps_json, format_csv
from roadwork.models.classifier import ARCHITECTURE, RoadworkClassifier, architecture, build_classifier, data_config

WEIGHTS = "model.safetensors"
DESCRIPTION = "model.json"
LOGITS = "logits.csv"
LOGIT_COLUMNS = ["split", "id", "label", "logit"]
SYNTHETIC_LOGITS = "logits_synthetic.csv"
SYNTHETIC_LOGIT_COLUMNS = ["split", "id", "kind", "label", "logit"]


def model_description(model, classifier: RoadworkClassifier, **extra) -> dict:
    """model.json: the architecture of the ``model`` params section (``build_classifier``'s
    arguments), the evaluation preprocessing of ``classifier`` (timm's data config) and ``extra``
    (best_epoch, adapter, ...)."""
    cfg = data_config(classifier)
    return {
        **architecture(model),
        "mean": list(cfg["mean"]),
        "std": list(cfg["std"]),
        "interpolation": cfg["interpolation"],
        **extra,
    }


def eval_data_config(description: dict) -> dict:
    """The evaluation preprocessing a model.json records, as a timm data config (what
    ``timm.data.create_transform(**cfg, is_training=False)`` and the exported bundle use)."""
    size = int(description["img_size"])
    return {
        "input_size": (3, size, size),
        "mean": tuple(float(v) for v in description["mean"]),
        "std": tuple(float(v) for v in description["std"]),
        "interpolation": description.get("interpolation", "bicubic"),
        "crop_pct": 1.0,
        "crop_mode": "center",
    }


def save_model_dir(
    out_dir: Path,
    classifier: RoadworkClassifier,
    description: dict,
    logit_rows: list[dict],
    synthetic_rows: list[dict] | None = None,
) -> None:
    """Write the three files (four with ``synthetic_rows``) into ``out_dir`` atomically (a killed write
    leaves the old directory)."""
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        save_file({k: v.detach().cpu().contiguous() for k, v in classifier.state_dict().items()}, tmp / WEIGHTS)
        (tmp / DESCRIPTION).write_text(dumps_json(description))
        (tmp / LOGITS).write_text(format_csv(logit_rows, LOGIT_COLUMNS))
        if synthetic_rows is not None:
            (tmp / SYNTHETIC_LOGITS).write_text(format_csv(synthetic_rows, SYNTHETIC_LOGIT_COLUMNS))


def read_description(model_dir: Path) -> dict:
    path = Path(model_dir) / DESCRIPTION
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: {model_dir} is not a trained model directory")
    return json.loads(path.read_text())


def load_trained(model_dir: Path) -> tuple[RoadworkClassifier, dict]:
    """Rebuild a saved classifier in eval mode (no network: the weights come from the directory),
    with its unmerged fine-tuning adapters if model.json records some. Returns (model, description)."""
    model_dir = Path(model_dir)
    description = read_description(model_dir)
    model = build_classifier(**{key: description[key] for key in ARCHITECTURE}, pretrained=None)
    adapter = description.get("adapter")
    if adapter:  # phase-4 fine-tuning may carry unmerged adapters
        from roadwork.models.adapters import add_qv_adapters

        add_qv_adapters(model.backbone, **adapter)
    model.load_state_dict(load_file(model_dir / WEIGHTS))
    return model.eval(), description


def backbone_weights(model_dir: Path) -> dict[str, torch.Tensor]:
    """The backbone's tensors of a saved classifier, with timm's keys (``backbone.`` removed)."""
    state = load_file(Path(model_dir) / WEIGHTS)
    return {k.removeprefix("backbone."): v for k, v in state.items() if k.startswith("backbone.")}

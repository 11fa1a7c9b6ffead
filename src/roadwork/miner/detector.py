"""A NATIX miner detector for our exported bundle that needs only timm, torch, safetensors,
Pillow and PyYAML: what the subnet's pinned environment (transformers ~4.45, timm 1.0.22) has, where
the stock ``ViT`` detector cannot load a timm-layout bundle (why: docs/deploy.md).

This file is self-contained (no ``roadwork`` import) so that a miner can copy it into the
subnet's ``base_miner/detectors/`` as it is and select it in ``miner.env`` (README, "Deploying into
the miner": Route 1's commands and miner.env, run as written by tests/miner_env_check.py). The miner then calls
``DETECTOR_REGISTRY["RoadworkTimm"](config_name=..., device=...)`` once and
``detector(pil_image) -> float`` per query. Where the subnet's ``base_miner`` package is importable,
the class subclasses its ``FeatureDetector`` and registers itself in ``DETECTOR_REGISTRY``;
elsewhere (our tests, our environment) it is a plain class.

This file is also the project's one inference engine: ``roadwork.predict.Predictor``, the export's
evaluation, the bundle build's reload and ONNX parity check all load and score through it
(:func:`load_bundle_model`, :func:`bundle_transform`, :class:`RoadworkTimmDetector`), so what a miner
answers and what the project measures are computed by the same lines. What it computes:

* the model: ``timm.create_model(architecture, pretrained=False, num_classes=..., **model_args)``
  from config.json (what transformers' ``TimmWrapper`` builds), weights read with
  ``safetensors.torch.load_file`` (never ``torch.load``: timm 1.0.22's ``local-dir:`` loading
  reads model.safetensors through ``torch.load``, which unpickles and fails on the subnet's torch
  2.6.0 with ``UnpicklingError``); the decision threshold and temperature are folded into its head;
* preprocessing: timm's eval transform from the bundle's ``pretrained_cfg`` (what transformers'
  ``TimmWrapperImageProcessor`` builds); EXIF orientation applied, RGB;
* single view: ``softmax(logits)[1]`` of the whole image, > 0.5 exactly when our tuned decision is
  roadwork; flip TTA does not apply (the folded threshold was tuned for exactly this score);
* multi-view (when the bundle's ``inference.json`` says the export measured that it helps, or
  ``views: multi``): the whole image plus a grid x grid set of overlapping tiles, each view's
  probability averaged with its mirror's when ``flip_tta`` is on, all in one forward pass; the mean
  of the top-k roadwork probabilities, whose own decision threshold ``tau`` (fitted on val_select at
  the export for exactly these settings) is folded in the same way as the single-view one:
  ``sigmoid(logit(a) - logit(tau))``, > 0.5 exactly when ``a > tau``.
"""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import torch
import yaml
from PIL import Image, ImageOps

DETECTOR_NAME = "RoadworkTimm"
DEFAULT_CONFIG = "roadwork_timm.yaml"
INFERENCE_JSON = "inference.json"
ROADWORK_INDEX = 1
VIEWS = ("bundle", "single", "multi")
_EPS = 1e-12

if importlib.util.find_spec("base_miner") is not None:  # inside the subnet's repository
    from base_miner.detectors.feature_detector import FeatureDetector as _Base
    from base_miner.registry import DETECTOR_REGISTRY
else:
    _Base, DETECTOR_REGISTRY = object, None


class DetectorConfigError(ValueError):
    """The detector's YAML or the bundle's inference.json is missing something or holds a bad value."""


# ------------------------------------------------------------------------ pure functions
def tile_boxes(width: int, height: int, grid: int, overlap: float) -> list[tuple[int, int, int, int]]:
    """(left, top, right, bottom) of grid x grid tiles covering the image, neighbours overlapping by
    ``overlap`` of a tile's side, row-major (the same boxes as ``roadwork.predict.tile_boxes``)."""
    if grid < 1 or not 0 <= overlap < 1:
        raise ValueError(f"grid must be >= 1 and overlap in [0, 1), got {grid}, {overlap}")

    def spans(size: int) -> list[tuple[int, int]]:
        tile = size / (grid - (grid - 1) * overlap)
        step = tile * (1 - overlap)
        out = []
        for i in range(grid):
            lo = int(round(i * step))
            hi = size if i == grid - 1 else int(round(i * step + tile))
            out.append((lo, max(hi, lo + 1)))
        return out

    return [(x0, y0, x1, y1) for (y0, y1) in spans(height) for (x0, x1) in spans(width)]


def topk_mean(probabilities: torch.Tensor, k: int) -> torch.Tensor:
    """Mean of the k highest values per row of an (images, views) float64 tensor."""
    k = max(1, min(int(k), probabilities.shape[1]))
    return torch.topk(probabilities, k, dim=1).values.mean(dim=1)


def fold_threshold(aggregate: float, threshold: float) -> float:
    """``sigmoid(logit(a) - logit(tau))``: a monotone map of [0, 1] onto [0, 1] that puts the
    threshold ``tau`` at 0.5, so that the validators' ``np.round(p)`` decides ``a > tau``."""
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"a probability threshold must lie in (0, 1), got {threshold!r}")
    a = min(max(float(aggregate), _EPS), 1.0 - _EPS)
    shift = (math.log(a) - math.log1p(-a)) - (math.log(threshold) - math.log1p(-threshold))
    return 1.0 / (1.0 + math.exp(-shift)) if shift >= 0 else math.exp(shift) / (1.0 + math.exp(shift))


def read_inference_config(bundle_dir: str | Path) -> dict | None:
    """The bundle's inference.json (views measured at export), or None if the bundle has none."""
    path = Path(bundle_dir) / INFERENCE_JSON
    if not path.is_file():
        return None
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise DetectorConfigError(f"{path}: cannot read the bundle's views ({error})") from None
    if not isinstance(config, dict):
        raise DetectorConfigError(f"{path}: expected a JSON object, got {type(config).__name__}")
    return config


def resolve_device(device: str | None) -> torch.device:
    """``cpu`` | ``cuda`` | ``cuda:N`` | ``auto``; CUDA only where it is available, else the CPU, as the
    subnet's FeatureDetector does. No device (``None``, ``""`` or the string ``"None"``, which the
    subnet's start_miner.sh passes when miner.env has no ``IMAGE_DETECTOR_DEVICE``) is the CPU."""
    name = "cpu" if device is None or str(device).strip().lower() in ("", "none") else str(device).strip().lower()
    if name == "auto":
        name = "cuda"
    if name != "cpu" and not name.startswith("cuda"):
        raise DetectorConfigError(f"device must be cpu, cuda, cuda:N or auto, got {device!r}")
    if name.startswith("cuda") and torch.cuda.is_available():
        return torch.device(name)
    return torch.device("cpu")


# --------------------------------------------------------------------------- loading a bundle
def read_bundle_config(bundle_dir: str | Path) -> dict:
    """The bundle's config.json."""
    path = Path(bundle_dir) / "config.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise DetectorConfigError(f"{path}: cannot read the bundle's config ({error})") from None


def load_bundle_model(bundle_dir: str | Path, device: str | torch.device = "cpu") -> torch.nn.Module:
    """The bundle's timm model in eval mode: ``timm.create_model(architecture, pretrained=False,
    num_classes=..., **model_args)`` (as transformers' TimmWrapper builds it), weights from
    model.safetensors through safetensors (no pickle, no ``torch.load``), every key matched."""
    import timm
    from safetensors.torch import load_file

    bundle_dir = Path(bundle_dir)
    config = read_bundle_config(bundle_dir)
    model_args = dict(config.get("model_args") or {})
    model_args.pop("num_classes", None)
    try:
        architecture, num_classes = config["architecture"], config["num_classes"]
    except KeyError as missing:
        raise DetectorConfigError(f"{bundle_dir / 'config.json'}: {missing.args[0]} is missing") from None
    model = timm.create_model(architecture, pretrained=False, num_classes=num_classes, **model_args)
    model.load_state_dict(load_file(str(bundle_dir / "model.safetensors"), device="cpu"))
    return model.to(device).eval().requires_grad_(False)


def bundle_data_config(bundle_dir: str | Path) -> dict:
    """The eval preprocessing recorded in config.json's ``pretrained_cfg``, resolved the way
    transformers' ``TimmWrapperImageProcessor`` resolves it."""
    import timm.data

    return timm.data.resolve_data_config(read_bundle_config(bundle_dir)["pretrained_cfg"], model=None, verbose=False)


def bundle_transform(bundle_dir: str | Path):
    """PIL image -> (3, S, S) tensor: timm's eval transform from :func:`bundle_data_config`."""
    import timm.data

    return timm.data.create_transform(**bundle_data_config(bundle_dir), is_training=False)


# ------------------------------------------------------------------------------- detector
class RoadworkTimmDetector(_Base):
    """``RoadworkTimmDetector(config_name="roadwork_timm.yaml", device="cpu")``, then
    ``detector(pil_image) -> float`` in [0, 1] (the roadwork probability).

    The YAML (``config_name``: a path, or a file name in the ``configs/`` folder beside this
    file) holds ``bundle`` (a local bundle folder) and/or ``hf_repo`` (a Hugging Face model repo
    with the bundle, downloaded to ``weights_dir`` when ``bundle`` is not there), ``views``
    (bundle | single | multi), ``threads`` (CPU threads, 0 = torch's default), optionally
    ``device`` (overrides the miner's ``IMAGE_DETECTOR_DEVICE`` when set) and ``multiview`` (keys
    grid, overlap, topk, flip_tta, threshold over the bundle's inference.json). Keyword arguments
    override the YAML (``config_name=None`` with ``bundle=...`` needs no YAML at all).

    For the project's own use (``roadwork.predict.Predictor``, the export), not the miner's:
    ``model`` uses an already loaded model instead of the bundle's weights, ``require_threshold=False``
    lets multi-view run without a fitted threshold (the answer is then the raw top-k mean, which the
    export needs to fit that threshold), and :meth:`batch` takes ``multiview`` per call.
    """

    def __init__(
        self,
        model_name: str = DETECTOR_NAME,
        config_name: str | None = DEFAULT_CONFIG,
        device: str | None = "cpu",
        *,
        model: torch.nn.Module | None = None,
        require_threshold: bool = True,
        **overrides,
    ):
        self.model_name = model_name
        settings = {
            "bundle": None,
            "hf_repo": None,
            "weights_dir": None,
            "views": "bundle",
            "threads": 0,
            "device": None,
            "multiview": None,
        }
        self.config_path = self._find_config(config_name) if config_name else None
        if self.config_path is not None:
            loaded = yaml.safe_load(self.config_path.read_text()) or {}
            if not isinstance(loaded, dict):
                raise DetectorConfigError(f"{self.config_path}: expected a mapping, got {type(loaded).__name__}")
            settings.update(loaded)
        unknown = set(overrides) - set(settings)
        if unknown:
            raise DetectorConfigError(f"unknown setting(s) {sorted(unknown)}; known: {sorted(settings)}")
        settings.update({k: v for k, v in overrides.items() if v is not None})
        self.multiview_settings = settings.pop("multiview")
        for key, value in settings.items():  # as FeatureDetector.set_class_attrs does
            setattr(self, key, value)
        if self.views not in VIEWS:
            raise DetectorConfigError(f"{self._where('views')} must be one of {VIEWS}, got {self.views!r}")
        self.device = resolve_device(settings["device"] or device)
        self.require_threshold = require_threshold
        self._given_model = model
        if int(self.threads or 0) > 0:
            torch.set_num_threads(int(self.threads))
        self.load_model()

    # -- configuration
    @staticmethod
    def _find_config(config_name: str) -> Path:
        candidates = [Path(config_name), Path(__file__).resolve().parent / "configs" / config_name]
        for path in candidates:
            if path.is_file():
                return path
        raise DetectorConfigError(
            f"detector config {config_name!r} not found (looked at {', '.join(str(p) for p in candidates)})"
        )

    def _where(self, key: str) -> str:
        return f"{self.config_path}: {key}" if self.config_path else f"setting {key!r}"

    def bundle_dir(self) -> Path:
        """The local bundle folder: ``bundle`` if it holds a config.json (as given, or relative to
        the YAML's folder), else ``hf_repo`` downloaded to ``weights_dir`` (or ``bundle``)."""
        if self.bundle:
            for path in (Path(self.bundle), *([self.config_path.parent / self.bundle] if self.config_path else [])):
                if (path / "config.json").is_file():
                    return path
        if not self.hf_repo:
            raise DetectorConfigError(
                f"{self._where('bundle')}: no bundle (config.json) at {self.bundle!r} and no "
                f"hf_repo to download it from"
            )
        from huggingface_hub import snapshot_download  # a dependency of timm; in the miner's lock

        target = Path(
            self.weights_dir or self.bundle or Path(__file__).resolve().parent.parent / self.model_name / "weights"
        )
        return Path(snapshot_download(self.hf_repo, local_dir=str(target)))

    # -- FeatureDetector interface
    def load_model(self) -> None:
        bundle = self.bundle_dir()
        self.bundle_path = bundle
        if self._given_model is not None:
            self.model = self._given_model.to(self.device).eval()
        else:
            self.model = load_bundle_model(bundle, self.device)
        self.data_config = bundle_data_config(bundle)
        self.transform = bundle_transform(bundle)
        self._configure_views(read_inference_config(bundle))

    def load_model_config(self) -> None:
        """No separate training config: everything is in the bundle (FeatureDetector hook)."""

    def _configure_views(self, inference: dict | None) -> None:
        views = self.views
        if views == "bundle":
            views = (inference or {}).get("views", "single")
        if views not in ("single", "multi"):
            raise DetectorConfigError(
                f"{self.bundle_path / INFERENCE_JSON}: views must be single or multi, got {views!r}"
            )
        self.multiview = views == "multi"
        settings = {**((inference or {}).get("multiview") or {}), **(self.multiview_settings or {})}
        self.grid, self.overlap, self.topk = settings.get("grid"), settings.get("overlap"), settings.get("topk")
        self.flip_tta, self.threshold = settings.get("flip_tta"), settings.get("threshold")
        if self.multiview:
            self._check_multiview()

    def _check_multiview(self) -> None:
        """Multi-view needs grid, overlap, topk, flip_tta and (for the miner) its fitted threshold."""
        where = self.bundle_path / INFERENCE_JSON
        for key in ("grid", "overlap", "topk", "flip_tta"):
            if getattr(self, key) is None:
                raise DetectorConfigError(
                    f"{where}: multiview.{key} is missing (write it with "
                    f"roadwork.miner.write_inference_config, or set multiview.{key} in the YAML)"
                )
        self.grid, self.overlap, self.topk = int(self.grid), float(self.overlap), int(self.topk)
        self.flip_tta = bool(self.flip_tta)
        if self.grid < 1 or not 0 <= self.overlap < 1 or self.topk < 1:
            raise DetectorConfigError(
                f"{where}: multiview.grid and topk must be >= 1 and overlap in [0, 1), got "
                f"{self.grid}, {self.topk}, {self.overlap}"
            )
        if self.threshold is None:
            if self.require_threshold:
                raise DetectorConfigError(
                    f"{where}: multiview.threshold is missing: multi-view needs the threshold "
                    f"fitted for it at the export"
                )
        elif not 0 < float(self.threshold) < 1:
            raise DetectorConfigError(f"{where}: multiview.threshold must be in (0, 1), got {self.threshold!r}")
        else:
            self.threshold = float(self.threshold)

    def _multiview(self, multiview: bool | None) -> bool:
        if multiview is None:
            return self.multiview
        if multiview and not self.multiview:
            self._check_multiview()
        return bool(multiview)

    @property
    def views_per_query(self) -> int:
        """Images in the one forward pass of a query."""
        return (1 + self.grid**2) * (2 if self.flip_tta else 1) if self.multiview else 1

    # -- the engine
    def preprocess(self, image: Image.Image, multiview: bool | None = None) -> torch.Tensor:
        """(V, 3, S, S): the whole image, then (multi-view) the tiles in row-major order."""
        image = ImageOps.exif_transpose(image).convert("RGB")
        tensors = [self.transform(image)]
        if self._multiview(multiview):
            tensors += [
                self.transform(image.crop(box))
                for box in tile_boxes(image.width, image.height, self.grid, self.overlap)
            ]
        return torch.stack(tensors)

    @torch.inference_mode()
    def view_probabilities(self, views: torch.Tensor, flip: bool = False) -> torch.Tensor:
        """Roadwork probability of each view (float32), in one pass; ``flip``: the mean with its mirror's."""
        x = views.to(self.device)
        if flip:
            x = torch.cat([x, torch.flip(x, dims=[-1])])
        probs = torch.softmax(self.model(x).float(), dim=-1)[:, ROADWORK_INDEX]
        if flip:
            n = len(views)
            probs = (probs[:n] + probs[n:]) / 2
        return probs.float().cpu()

    def _answer(self, probs: torch.Tensor, multiview: bool) -> float:
        """One query's answer from its views' probabilities: the single view's, or the top-k mean with
        the multi-view threshold folded in (the raw mean where there is none: ``require_threshold=False``)."""
        if not multiview:
            return float(probs[0])
        aggregate = float(topk_mean(probs.double()[None, :], self.topk)[0])
        return aggregate if self.threshold is None else fold_threshold(aggregate, self.threshold)

    def __call__(self, image: Image.Image) -> float:
        views = self.preprocess(image)
        return self._answer(self.view_probabilities(views, flip=self.multiview and self.flip_tta), self.multiview)

    def batch(self, images: list[Image.Image], multiview: bool | None = None) -> list[float]:
        """``[detector(image) for image in images]`` in one forward pass (for evaluations; the miner
        asks one image at a time). ``multiview``: single (False) or multi-view (True) for this call
        instead of the configured views (None)."""
        multiview = self._multiview(multiview)
        return self.answers([self.preprocess(image, multiview) for image in images], multiview)

    def answers(self, views: list[torch.Tensor], multiview: bool | None = None) -> list[float]:
        """The answers for per-image view stacks from :meth:`preprocess`, in one forward pass."""
        multiview = self._multiview(multiview)
        if not views:
            return []
        probs = self.view_probabilities(torch.cat(views), flip=multiview and self.flip_tta)
        bounds = torch.tensor([0] + [len(v) for v in views]).cumsum(0).tolist()
        return [self._answer(probs[a:b], multiview) for a, b in zip(bounds[:-1], bounds[1:])]


if DETECTOR_REGISTRY is not None:
    DETECTOR_REGISTRY.register_module(module_name=DETECTOR_NAME)(RoadworkTimmDetector)

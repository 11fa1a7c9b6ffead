"""DINOv3 ViT backbones from timm (``timm.models.eva.Eva``).

Only DINOv3 architectures are accepted (``timm.list_models('*dinov3*')``). ``overrides``
(``embed_dim``, ``depth``, ``num_heads``, ...) build a smaller model of the same architecture
through the same timm code path, which is what the CPU tests and the embedded default use.

Pretrained weights (``pretrained``):

* ``None`` / ``False`` / ``"none"`` / ``""``: random init.
* ``True``: timm's default tag for the architecture (``lvd1689m`` for the DINOv3 ViTs).
* a timm hub id ``"<name>.<tag>"`` (also ``"timm/<name>.<tag>"`` or ``"hf-hub:timm/<name>.<tag>"``),
  e.g. ``"vit_huge_plus_patch16_dinov3.lvd1689m"``: downloaded by timm from ``timm/<name>.<tag>``.
* a local file (``.safetensors``, or ``.pth``/``.bin``/``.pt`` holding a plain state dict in timm
  or Meta layout): loaded by timm through ``pretrained_cfg_overlay=dict(file=path)``, which runs
  timm's DINOv3 ``checkpoint_filter_fn`` (converts Meta checkpoints) and loads strictly.
  ``.pth`` files are read with ``torch.load(weights_only=True)`` inside timm (no unsafe unpickling).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

import timm
import torch
from timm.models import get_pretrained_cfg
from torch import nn

from .adapters import QVAdapterQKV

POOLINGS = ("token", "avg", "max")
FREEZE_POLICIES = ("frozen", "last_n", "full")
WEIGHT_SUFFIXES = (".safetensors", ".pth", ".bin", ".pt")
_NO_WEIGHTS = {"", "none", "null", "false", "random"}


class ParamCounts(NamedTuple):
    trainable: int
    total: int


def allowed_backbones() -> list[str]:
    """All timm DINOv3 ViT architecture names."""
    return timm.list_models("*dinov3*")


def check_backbone_name(name: str) -> str:
    allowed = allowed_backbones()
    if name not in allowed:
        hint = ""
        if "." in name:
            hint = (
                f" (give the architecture name here and the pretrained tag via `pretrained`, e.g. pretrained='{name}')"
            )
        raise ValueError(
            f"Unsupported backbone {name!r}{hint}: only timm DINOv3 ViTs are allowed: {', '.join(allowed)}"
        )
    return name


def _timm_kwargs(pooling: str, img_size: int, overrides: dict | None) -> dict:
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
    overrides = dict(overrides or {})
    reserved = {"num_classes", "global_pool", "img_size", "pretrained", "pretrained_cfg_overlay"} & overrides.keys()
    if reserved:
        raise ValueError(f"overrides may not set {sorted(reserved)}; these are separate arguments")
    return dict(num_classes=0, global_pool=pooling, img_size=img_size, **overrides)


def _parse_pretrained(name: str, pretrained) -> tuple[str, str | None]:
    """Return ("none"|"file"|"hub", location)."""
    if pretrained is None or pretrained is False:
        return "none", None
    if pretrained is True:  # timm's default pretrained tag for this architecture
        cfg = get_pretrained_cfg(name)
        if cfg is None or not cfg.tag:
            raise ValueError(f"{name} has no default pretrained weights in timm; pass '<name>.<tag>' or a file")
        return "hub", f"{name}.{cfg.tag}"
    spec = str(pretrained).strip()
    if spec.lower() in _NO_WEIGHTS:
        return "none", None
    is_hub_prefixed = spec.startswith(("hf-hub:", "timm/"))
    looks_like_file = (
        os.path.exists(spec) or spec.lower().endswith(WEIGHT_SUFFIXES) or (os.sep in spec and not is_hub_prefixed)
    )
    if looks_like_file:
        return "file", spec
    model_id = spec.removeprefix("hf-hub:").removeprefix("timm/")
    arch, _, tag = model_id.partition(".")
    if arch != name or not tag:
        raise ValueError(
            f"pretrained={spec!r} is neither a local weights file nor a timm hub id '<name>.<tag>' for "
            f"backbone {name!r} (e.g. {name}.lvd1689m); available tags: {timm.list_pretrained(name + '.*')}"
        )
    return "hub", model_id


def create_backbone(
    name: str,
    pretrained: str | os.PathLike | bool | None = None,
    overrides: dict | None = None,
    pooling: str = "token",
    img_size: int = 224,
) -> nn.Module:
    """Build a DINOv3 backbone with no classifier (``num_classes=0``): forward returns pooled features
    of size ``model.num_features``. ``pooling='token'`` is the CLS token (upstream DINOv3);
    ``'avg'`` is timm's default mean over patch tokens; ``'max'`` is their element-wise maximum
    (a feature fires if any patch shows it: the embedded default uses it, see docs/params.md, model.pooling)."""
    check_backbone_name(name)
    kwargs = _timm_kwargs(pooling, img_size, overrides)
    source, loc = _parse_pretrained(name, pretrained)

    if source == "none":
        return timm.create_model(name, pretrained=False, **kwargs)

    if source == "file":
        path = Path(loc).expanduser()
        if not path.is_file():
            raise FileNotFoundError(
                f"Pretrained weights file for {name} not found: {str(path)!r}. Supply weights as a local "
                f".safetensors/.pth file (timm or Meta DINOv3 layout), or as a hub id such as "
                f"'{name}.lvd1689m' (download first with `huggingface-cli download timm/{name}.lvd1689m`)."
            )
        try:
            return timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=str(path)), **kwargs)
        except RuntimeError as e:
            raise RuntimeError(
                f"Could not load weights file {str(path)!r} into {name} (overrides={overrides}): {e}"
            ) from e

    # hub
    try:
        return timm.create_model(loc, pretrained=True, **kwargs)
    except Exception as e:  # noqa: BLE001 - narrowed below
        if not _is_download_error(e):
            raise
        raise RuntimeError(
            f"Could not download pretrained weights timm/{loc} for {name} ({type(e).__name__}: {e}). "
            f"Without network access, fetch them beforehand with `huggingface-cli download timm/{loc}` "
            f"(they are then read from the Hugging Face cache), or pass a local weights file path "
            f"(.safetensors or .pth) as `pretrained`."
        ) from e


def _is_download_error(e: BaseException) -> bool:
    if isinstance(e, (OSError, ConnectionError, TimeoutError)):
        return True
    try:
        from huggingface_hub.errors import HfHubHTTPError

        if isinstance(e, HfHubHTTPError):
            return True
    except ImportError:  # pragma: no cover
        pass
    return type(e).__module__.split(".")[0] in {"huggingface_hub", "httpx", "requests", "urllib3"}


def count_trainable(module: nn.Module) -> ParamCounts:
    params = list(module.parameters())
    return ParamCounts(
        trainable=sum(p.numel() for p in params if p.requires_grad),
        total=sum(p.numel() for p in params),
    )


def apply_freeze_policy(backbone: nn.Module, policy: str, n: int = 0) -> ParamCounts:
    """Set ``requires_grad`` on the backbone's own weights.

    * ``frozen``: no backbone parameter is trained.
    * ``last_n``: the last ``n`` blocks and the final norm (and ``fc_norm`` if any) are trainable.
    * ``full``: everything is trainable.

    Parameters of q/v adapters (``roadwork.models.adapters``) stay trainable under every policy;
    the policy applies to the pretrained weights only. Returns ``ParamCounts(trainable, total)``.
    """
    if policy not in FREEZE_POLICIES:
        raise ValueError(f"freeze policy must be one of {FREEZE_POLICIES}, got {policy!r}")
    blocks = backbone.blocks
    backbone.requires_grad_(policy == "full")
    if policy == "last_n":
        if not 0 <= n <= len(blocks):
            raise ValueError(f"last_n needs 0 <= n <= depth ({len(blocks)}), got {n}")
        for blk in blocks[len(blocks) - n :]:
            blk.requires_grad_(True)
        for norm_name in ("norm", "fc_norm"):
            norm = getattr(backbone, norm_name, None)
            if norm is not None:
                norm.requires_grad_(True)

    for m in backbone.modules():
        if isinstance(m, QVAdapterQKV):
            m.adapter_requires_grad_(True)
    return count_trainable(backbone)


def count_parameters(name: str, overrides: dict | None = None) -> int:
    """Parameter count of a backbone (``num_classes=0``), built on the meta device: no memory is
    allocated, so even ``vit_huge_plus_patch16_dinov3`` (840,509,440 parameters) or 7B is instant."""
    check_backbone_name(name)
    with torch.device("meta"):
        model = timm.create_model(name, pretrained=False, num_classes=0, **dict(overrides or {}))
    return sum(p.numel() for p in model.parameters())

"""ONNX export of the bundle's stock timm model, with a parity check run by onnxruntime.

Exporter: torch's legacy TorchScript-based exporter (``torch.onnx.export(..., dynamo=False)``).
The default torch.export-based exporter of torch >= 2.9 needs the ``onnxscript`` package, which
this environment does not have (``ModuleNotFoundError: onnxscript``); the legacy one runs
offline with torch alone. It is deprecated upstream (a ``DeprecationWarning`` is silenced here).

Two facts that shaped the code:

* timm's Eva ``forward(x, attn_mask=None, is_causal=False)``: the legacy exporter fills in the
  defaults of the exported module's forward and traces them as tensors, and
  ``F.scaled_dot_product_attention`` then rejects ``is_causal`` as a Tensor. Exporting a tiny
  wrapper whose forward takes only the images avoids that.
* Models over protobuf's 2 GiB limit (the real ``vit_huge_plus`` at fp32 is ~3.4 GB) are written
  by the exporter with one external-data file *per tensor*; the export happens in a scratch folder
  and such a model is re-saved as ``model.onnx`` + one ``model.onnx.data``.

Input ``pixel_values`` (B, 3, S, S) float32, output ``logits`` (B, num_classes); the batch axis is
dynamic, the spatial size is fixed at ``img_size`` (RoPE tables are traced as constants).
"""

from __future__ import annotations

import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

INPUT_NAME = "pixel_values"
OUTPUT_NAME = "logits"
OPSET = 17
PARITY_TOLERANCE = 1e-4
EXTERNAL_DATA_NAME_SUFFIX = ".data"


class OnnxParityError(RuntimeError):
    """onnxruntime's output differs from PyTorch's by more than the tolerance."""


class _ImagesOnly(nn.Module):
    """``forward(images)`` only: keeps keyword defaults (``is_causal=False``) out of the trace."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)


def export_onnx(model: nn.Module, path: str | Path, img_size: int, opset: int = OPSET) -> list[Path]:
    """Export ``model`` (eval mode, fp32, CPU) to ``path``; returns the files written (the .onnx
    file, plus ``<path>.data`` for models over 2 GiB)."""
    path = Path(path)
    model = model.eval()
    device = next(model.parameters()).device
    example = torch.zeros(2, 3, img_size, img_size, device=device)
    with tempfile.TemporaryDirectory(prefix=".onnx-export-", dir=path.parent) as scratch:
        scratch_file = Path(scratch) / "model.onnx"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            with torch.no_grad():
                torch.onnx.export(
                    _ImagesOnly(model),
                    (example,),
                    str(scratch_file),
                    dynamo=False,
                    input_names=[INPUT_NAME],
                    output_names=[OUTPUT_NAME],
                    dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
                    opset_version=opset,
                    do_constant_folding=True,
                )
        return consolidate(scratch_file, path)


def consolidate(exported: Path, path: Path) -> list[Path]:
    """Move an exported ``model.onnx`` to ``path``; if the exporter wrote external data (one file per
    tensor, models over 2 GiB), re-save it as ``path`` + a single ``<path>.data``."""
    exported, path = Path(exported), Path(path)
    others = [p for p in exported.parent.iterdir() if p != exported]
    if not others:
        shutil.move(str(exported), path)
        return [path]
    import onnx

    proto = onnx.load(str(exported), load_external_data=True)
    data_name = path.name + EXTERNAL_DATA_NAME_SUFFIX
    onnx.save_model(
        proto,
        str(path),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location=data_name,
        size_threshold=1024,
    )
    return [path, path.with_name(data_name)]


def onnx_parity(
    model: nn.Module,
    onnx_path: str | Path,
    img_size: int,
    batch_sizes: tuple[int, ...] = (1, 3),
    seed: int = 0,
) -> float:
    """Max absolute difference between PyTorch's and onnxruntime's (CPU, fp32) outputs on seeded
    random inputs, over several batch sizes (exercises the dynamic batch axis)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(onnx_path), sess_options=options, providers=["CPUExecutionProvider"])
    generator = torch.Generator().manual_seed(seed)
    model = model.eval()
    device = next(model.parameters()).device
    worst = 0.0
    for batch in batch_sizes:
        images = torch.randn(batch, 3, img_size, img_size, generator=generator)
        with torch.no_grad():
            reference = model(images.to(device)).float().cpu().numpy()
        (output,) = session.run([OUTPUT_NAME], {INPUT_NAME: images.numpy()})
        if output.shape != reference.shape:
            raise OnnxParityError(f"ONNX output shape {output.shape} != PyTorch {reference.shape}")
        worst = max(worst, float(np.max(np.abs(output.astype(np.float64) - reference.astype(np.float64)))))
    return worst


def export_and_check(model: nn.Module, path: str | Path, img_size: int, tolerance: float = PARITY_TOLERANCE) -> dict:
    """Export, then check parity; raises :class:`OnnxParityError` above ``tolerance``."""
    files = export_onnx(model, path, img_size)
    difference = onnx_parity(model, path, img_size)
    if not difference <= tolerance:  # also catches NaN
        raise OnnxParityError(
            f"ONNX export differs from PyTorch by {difference:.3g} (max |logit difference|, tolerance {tolerance:g})"
        )
    return {
        "files": [p.name for p in files],
        "exporter": "torch.onnx (TorchScript, dynamo=False)",
        "opset": OPSET,
        "input": INPUT_NAME,
        "output": OUTPUT_NAME,
        "dynamic_axes": {"input": [0], "output": [0]},
        "max_abs_logit_diff": difference,
        "tolerance": tolerance,
        "onnxruntime": _ort_version(),
        "torch": torch.__version__,
    }


def _ort_version() -> str:
    import onnxruntime as ort

    return ort.__version__

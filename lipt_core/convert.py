"""`lipt convert`: fold any LIPT checkpoint into the inference form, verified, as safetensors."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from lipt_core.checkpoint import load_checkpoint, save_model
from lipt_core.errors import UsageError, VerificationError
from lipt_core.files import replacing
from lipt_core.models.config import LIPTConfig
from lipt_core.models.lipt import LIPT
from lipt_core.reparam import reparameterize

DEFAULT_TOLERANCE = 1e-4
# onnxruntime's kernels sum in other orders, and LIPT's unscaled softmax magnifies that.
ONNX_TOLERANCE = 1e-3
TASKS = ("sr", "denoise", "car")


@dataclass(frozen=True)
class Agreement:
    """How closely two outputs agree: max |a - b| in pixel units, and ||a - b|| / ||b||."""

    max_abs_error: float
    relative_error: float

    @classmethod
    def between(cls, ours: Tensor, reference: Tensor) -> Agreement:
        difference = ours.double() - reference.double()
        return cls(
            max_abs_error=float(difference.abs().max()),
            relative_error=float(difference.norm() / reference.double().norm().clamp_min(1e-12)),
        )


@dataclass
class ConversionReport:
    source: Path
    output: Path
    config: LIPTConfig
    source_form: str
    task: str | None
    check_shape: tuple[int, ...]
    agreement: Agreement
    tolerance: float
    written: bool
    onnx_output: Path | None = None
    onnx_agreement: list[tuple[tuple[int, ...], Agreement]] = field(default_factory=list)


def check_inputs(config: LIPTConfig, *, seed: int = 0) -> list[Tensor]:
    """Random images in [0, rgb_range] whose sizes are not multiples of the window, so padding
    and every border are exercised; two sizes, to show a dynamic-size export works."""
    generator = torch.Generator().manual_seed(seed)
    w = config.window_size
    shapes = [(1, config.colors, 2 * w + 3, 3 * w + 1), (2, config.colors, w + 1, 2 * w + 7)]
    return [torch.rand(shape, generator=generator) * config.rgb_range for shape in shapes]


def convert_checkpoint(
    source: str | os.PathLike,
    output: str | os.PathLike,
    *,
    window_size: int | None = None,
    task: str | None = None,
    force: bool = False,
    overwrite: bool = False,
    tolerance: float = DEFAULT_TOLERANCE,
    onnx_output: str | os.PathLike | None = None,
) -> ConversionReport:
    """Read `source` (ours or the published layout), fold it, check both forms agree on a random
    input, and write the inference form to `output` as safetensors with metadata.

    Refuses (VerificationError) when the relative error exceeds `tolerance`, unless `force`.
    """
    source, output = Path(source), Path(output)
    if task is not None and task not in TASKS:
        raise UsageError(f"unknown task {task!r}; valid: {', '.join(TASKS)}")
    if output.suffix != ".safetensors":
        raise UsageError(f"{output}: the output must be a .safetensors file")
    for target in (output, Path(onnx_output) if onnx_output else None):
        if target is None:
            continue
        if target.exists() and target.resolve() == source.resolve():
            raise UsageError(f"{target}: refusing to overwrite the input")
        if target.exists() and not overwrite:
            raise UsageError(f"{target}: already exists (use --overwrite to replace it)")

    model, metadata = load_checkpoint(source, window_size=window_size)
    task = task or metadata.get("task") or ("sr" if model.config.scale > 1 else None)
    fused = reparameterize(model)
    inputs = check_inputs(model.config)
    with torch.no_grad():
        agreement = Agreement.between(fused(inputs[0]), model(inputs[0]))
    report = ConversionReport(
        source=source,
        output=output,
        config=model.config,
        source_form=model.form,
        task=task,
        check_shape=tuple(inputs[0].shape),
        agreement=agreement,
        tolerance=tolerance,
        written=False,
    )
    if not agreement.relative_error <= tolerance and not force:
        raise VerificationError(
            f"{source}: the folded model differs from the original by "
            f"{agreement.relative_error:.2e} relative (max {agreement.max_abs_error:.3g}), "
            f"above {tolerance:.0e}; nothing written (--force writes it anyway)"
        )
    extra = {"source": source.name, "converted_from_form": model.form}
    for key in ("training_data", "steps", "name"):
        if key in metadata:
            extra[key] = metadata[key]
    if onnx_output is not None:
        report.onnx_output = Path(onnx_output)
        report.onnx_agreement = _export_and_check(fused, report.onnx_output, inputs, force)
    save_model(fused, output, task=task, **extra)
    report.written = True
    return report


def _export_and_check(
    fused: LIPT, path: Path, inputs: list[Tensor], force: bool
) -> list[tuple[tuple[int, ...], Agreement]]:
    from lipt_core.export import export_onnx, run_onnx

    path.parent.mkdir(parents=True, exist_ok=True)
    with replacing(path) as temp:
        export_onnx(fused, temp, example=inputs[0])
        results = []
        for image in inputs:
            with torch.no_grad():
                expected = fused(image)
            results.append((tuple(image.shape), Agreement.between(run_onnx(temp, image), expected)))
        worst = max(agreement.relative_error for _, agreement in results)
        if not worst <= ONNX_TOLERANCE and not force:
            raise VerificationError(
                f"{path}: the ONNX model differs from PyTorch by {worst:.2e} relative, above "
                f"{ONNX_TOLERANCE:.0e}; nothing written (--force writes it anyway)"
            )
    return results

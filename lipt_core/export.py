"""ONNX export of an inference-form LIPT, with dynamic batch, height and width."""

from __future__ import annotations

import io
import logging
import os
import warnings
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import torch
from torch import Tensor, nn

from lipt_core.errors import UsageError

ONNX_INPUT = "image"
ONNX_OUTPUT = "restored"


def _require_onnx() -> None:
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as error:
        raise UsageError(
            f"ONNX export needs the optional extra: pip install 'lipt[onnx]' ({error.name} is "
            "missing)"
        ) from None


def export_onnx(model: nn.Module, path: str | os.PathLike, *, example: Tensor) -> None:
    """Write `model` (eval mode) as ONNX; batch, height and width stay dynamic."""
    _require_onnx()
    from torch.export import Dim

    path = Path(path)
    dynamic = {0: Dim.DYNAMIC, 2: Dim.DYNAMIC, 3: Dim.DYNAMIC}
    # The exporter reports its progress on stdout/stderr and through warnings; a library keeps
    # quiet and lets errors speak.
    quiet = io.StringIO()
    with warnings.catch_warnings(), redirect_stdout(quiet), redirect_stderr(quiet):
        warnings.simplefilter("ignore")
        logging.getLogger("torch.onnx").setLevel(logging.ERROR)
        program = torch.onnx.export(
            model.eval(),
            (example,),
            dynamo=True,
            dynamic_shapes=(dynamic,),
            input_names=[ONNX_INPUT],
            output_names=[ONNX_OUTPUT],
            verbose=False,
        )
        program.save(str(path))


def run_onnx(path: str | os.PathLike, image: Tensor) -> Tensor:
    """Run an exported model with onnxruntime on the CPU."""
    _require_onnx()
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (output,) = session.run([ONNX_OUTPUT], {ONNX_INPUT: image.detach().cpu().numpy()})
    return torch.from_numpy(output)

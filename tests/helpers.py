"""Test helpers: where `../shared` is, well-conditioned random models, error measures."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path
from types import ModuleType

import torch
from safetensors import safe_open
from safetensors.torch import load_file

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = REPO_ROOT.parent / "shared"


def randomize_batchnorm(model: torch.nn.Module, *, seed: int = 0) -> torch.nn.Module:
    """Give every BatchNorm random (but well-conditioned) statistics and affine parameters,
    so that folding it is not trivial.

    LIPT's attention has no 1/sqrt(d) scaling: with random weights on 0..255 images its logits
    reach thousands, the softmax is a hard argmax, and float rounding can flip near-ties into
    large local differences. Trained models do not live there; so the attention's input
    projection is scaled down to keep its logits moderate (well-conditioned random weights).
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, module in model.named_modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                n = module.num_features
                gain = 0.05 if "project_inp" in name else 1.0
                module.running_mean.copy_(torch.rand(n, generator=generator) - 0.5)
                module.running_var.copy_(0.5 + 1.5 * torch.rand(n, generator=generator))
                module.weight.copy_(gain * (0.5 + torch.rand(n, generator=generator)))
                module.bias.copy_(0.2 * (torch.rand(n, generator=generator) - 0.5))
    return model


def relative_error(ours: torch.Tensor, reference: torch.Tensor) -> float:
    return float((ours.double() - reference.double()).norm() / reference.double().norm())


def read_reference(path: Path) -> tuple[dict, torch.Tensor, torch.Tensor, dict]:
    """A published-equivalence vector: (state dict in the published layout, input, output,
    configuration)."""
    tensors = load_file(str(path))
    with safe_open(str(path), framework="pt") as handle:
        config = json.loads(handle.metadata()["config"])
    state = {k[len("sd.") :]: v for k, v in tensors.items() if k.startswith("sd.")}
    return state, tensors["input"], tensors["output"], config


def load_benchmark(stem: str, *, folder_name: str = "benchmarks") -> ModuleType:
    """A script of `benchmarks/` (or another folder of scripts, not a package, such as `tools/`),
    imported once as a module. Its folder is on sys.path while it loads, as when it is run, so it
    can import its sibling scripts."""
    name = f"_lipt_{folder_name}_{stem}"
    if name not in sys.modules:
        folder = REPO_ROOT / folder_name
        spec = importlib.util.spec_from_file_location(name, folder / f"{stem}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        sys.path.insert(0, str(folder))
        try:
            spec.loader.exec_module(module)
        finally:
            sys.path.remove(str(folder))
    return sys.modules[name]


def new_file_mode() -> int:
    """The permission bits a newly created file gets here (0o666 less the umask)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask

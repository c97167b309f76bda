"""Fold a training-form model into its inference form, once."""

from __future__ import annotations

import copy

import torch
from torch import nn

from lipt_core.models.hrm import Fusable


def _fuse_children(module: nn.Module) -> None:
    for name, child in module.named_children():
        if isinstance(child, Fusable):
            setattr(module, name, child.to_conv())
        else:
            _fuse_children(child)


@torch.no_grad()
def reparameterize(model: nn.Module) -> nn.Module:
    """Return the inference form of `model` as a new module; `model` itself is left unchanged.

    Every `Fusable` submodule (the multi-branch HRM convolutions, project_inp's conv + BatchNorm)
    is replaced by the single convolution it equals in eval mode. The result is in eval mode.
    A model that is already in inference form is returned as an equal copy.
    """
    fused = copy.deepcopy(model).eval()
    _fuse_children(fused)
    if hasattr(fused, "inference"):
        fused.inference = True
    return fused

"""lipt_core: the LIPT network, its reparameterization, weights, and restoration tools.

The public names below are imported lazily, so importing a light submodule (errors, image I/O)
does not pay for importing torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "LIPTConfig": "lipt_core.models.config",
    "PRESETS": "lipt_core.models.config",
    "create_model": "lipt_core.models.config",
    "LIPT": "lipt_core.models.lipt",
    "reparameterize": "lipt_core.reparam",
    "load_published": "lipt_core.checkpoint",
    "load_checkpoint": "lipt_core.checkpoint",
    "save_model": "lipt_core.checkpoint",
    "LiptError": "lipt_core.errors",
    "UsageError": "lipt_core.errors",
    "InputError": "lipt_core.errors",
    "CheckpointError": "lipt_core.errors",
    "VerificationError": "lipt_core.errors",
    "Restorer": "lipt_core.restore",
    "RestoreRequest": "lipt_core.batch",
    "restore_files": "lipt_core.batch",
}

__all__ = [*_EXPORTS, "__version__"]

if TYPE_CHECKING:
    from lipt_core.batch import RestoreRequest, restore_files
    from lipt_core.checkpoint import load_checkpoint, load_published, save_model
    from lipt_core.errors import (
        CheckpointError,
        InputError,
        LiptError,
        UsageError,
        VerificationError,
    )
    from lipt_core.models.config import PRESETS, LIPTConfig, create_model
    from lipt_core.models.lipt import LIPT
    from lipt_core.reparam import reparameterize
    from lipt_core.restore import Restorer


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'lipt_core' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)

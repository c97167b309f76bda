"""Reference peers for ``lipt bench``: published lightweight SR transformers, random weights.

Each peer is re-implemented in-tree from its paper so that LIPT can be timed against it
without third-party code or checkpoints:

* ``swinir-light``: :class:`~lipt_core.peers.swinir.SwinIRLight` (Liang et al., ICCVW 2021).
* ``elan-light``: :class:`~lipt_core.peers.elan.ELANLight` (Zhang et al., ECCV 2022).

All take N x 3 x H x W images in 0..255 (LIPT's convention) and return
N x 3 x H*scale x W*scale. Their self-attention lives in modules whose class name contains
``Attention`` and SwinIR's feed-forward network in a class whose name contains ``Mlp``, so that
a profiler can attribute time by module type; ELAN's feed-forward part, the convolutional
:class:`~lipt_core.peers.elan.LFE`, counts as convolution.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from lipt_core.errors import UsageError
from lipt_core.peers.elan import ELANLight
from lipt_core.peers.swinir import SwinIRLight

__all__ = ["PEERS", "ELANLight", "SwinIRLight", "create_peer"]

#: Peer name to constructor; each constructor takes the upscaling factor as ``scale=``.
PEERS: dict[str, Callable[..., nn.Module]] = {
    "swinir-light": SwinIRLight,
    "elan-light": ELANLight,
}


def create_peer(name: str, *, scale: int) -> nn.Module:
    """Build the peer called ``name`` (see :data:`PEERS`) for ``scale``, with random weights.

    Raises:
        UsageError: ``name`` is not a known peer, or ``scale`` is not a positive integer.
    """
    key = name.strip().lower()
    if key not in PEERS:
        valid = ", ".join(sorted(PEERS))
        raise UsageError(f"unknown peer model {name!r}; valid peers: {valid}")
    if not isinstance(scale, int) or isinstance(scale, bool) or scale < 1:
        raise UsageError(f"scale must be a positive integer, got {scale!r}")
    return PEERS[key](scale=scale)

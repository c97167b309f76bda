"""Growing a trained LIPT wider without losing what it has learnt.

`widen` turns a trained network of C channels into one of C' > C that computes (almost exactly)
the same function, so training a wider model can start from the narrow one's quality instead of
from noise. The new channels of the residual stream start at zero: every weight that *writes*
into them (head, each HRM's second conv, each project_out) is zero there, and every weight that
*reads* from a new channel or hidden unit into an old one is zero too. The weights that read from
the zero-valued new channels, and the new hidden units' own inputs, keep a fresh random
initialisation; they change nothing at first but give the zero weights their gradients, so the
new capacity is used as soon as training starts.

One exception: in NVSM-SA the query is also the key (A = softmax(q q^T)), so a new query
dimension that starts at zero gets a zero gradient forever. New query rows are therefore small
(`query_scale` times a fresh initialisation); they move the attention logits by a second-order
amount (measured on the shipped gray JPEG model widened from 24 to 32 or 48 channels: outputs change
by 5e-5 relative, 2e-4 grey levels at most, with the default 1e-3).
"""

from __future__ import annotations

import torch
from torch import Tensor

from lipt_core.errors import UsageError
from lipt_core.models.lipt import LIPT

__all__ = ["widen"]


def widen(donor: LIPT, channels: int, *, query_scale: float = 1e-3, seed: int = 0) -> LIPT:
    """An inference-form copy of `donor` with `channels` channels and (almost) the same output.

    Args:
        donor: a LIPT in the inference form (`lipt_core.reparameterize` gives it).
        channels: the new width C'; even and at least the donor's C (attention splits the
            channels into two halves).
        query_scale: size of the new attention-query weights relative to a fresh
            initialisation; 0 would freeze them at zero.
        seed: seeds the fresh initialisation of the new weights.

    Returns:
        A new LIPT (eval mode) with the donor's other hyperparameters; the donor is unchanged.
    """
    if not donor.inference:
        raise UsageError("widening needs the inference form; reparameterize the model first")
    old = donor.config.channels
    if channels < old or channels % 2:
        raise UsageError(
            f"cannot widen {old} channels to {channels}: the new width must be even and >= {old}"
        )
    config = donor.config.replace(channels=channels)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        wide = LIPT(config, inference=True)
    maps = _ChannelMaps(old, channels, donor.config.r_expand)
    state = wide.state_dict()
    for key, value in donor.state_dict().items():
        state[key] = _widened(key, value, state[key], maps, query_scale)
    wide.load_state_dict(state)
    return wide.eval()


class _ChannelMaps:
    """Where each old channel of each kind of feature map sits in the wider network."""

    def __init__(self, old: int, new: int, r_expand: int) -> None:
        self.new = new
        half_old, half_new = old // 2, new // 2
        self.stream = torch.arange(old)
        self.hidden = torch.arange(old * r_expand)
        # project_inp of a stage computing maps: per half, C/2 query then C/2 value channels.
        per_half = torch.arange(half_old)
        self.query_value = torch.cat(
            [h * new + offset + per_half for h in (0, 1) for offset in (0, half_new)]
        )
        self.new_queries = torch.cat([h * new + torch.arange(half_old, half_new) for h in (0, 1)])
        # project_inp of a stage reusing maps, and the attention output: per half, C/2 values.
        self.values = torch.cat([h * half_new + per_half for h in (0, 1)])

    @staticmethod
    def new_positions(size: int, old_positions: Tensor | None) -> Tensor:
        """A mask of the positions (of `size`) that hold no old channel; None: all are old."""
        mask = torch.ones(size, dtype=torch.bool)
        mask[slice(None) if old_positions is None else old_positions] = False
        return mask


def _widened(
    key: str, old: Tensor, fresh: Tensor, maps: _ChannelMaps, query_scale: float
) -> Tensor:
    """The donor's tensor `key` placed into the wider network's `fresh` one (see the module)."""
    module, _, kind = key.rpartition(".")
    leaf = module.rpartition(".")[2]
    computes_maps = leaf == "project_inp" and fresh.shape[0] == 2 * maps.new
    if leaf == "head":
        rows, cols, writes_stream = maps.stream, None, True
    elif leaf == "tail":
        rows, cols, writes_stream = None, maps.stream, False
    elif leaf == "conv0":
        rows, cols, writes_stream = maps.hidden, maps.stream, False
    elif leaf == "conv1":
        rows, cols, writes_stream = maps.stream, maps.hidden, True
    elif leaf == "project_inp":
        rows = maps.query_value if computes_maps else maps.values
        cols, writes_stream = maps.stream, False
    elif leaf == "project_out":
        rows, cols, writes_stream = maps.stream, maps.values, True
    else:
        raise UsageError(f"cannot widen {key}: no rule for this layer")

    new_queries = maps.new_queries if computes_maps else None
    out = fresh.clone()
    if kind == "bias":
        if writes_stream:
            out[maps.new_positions(out.shape[0], maps.stream)] = 0
        if new_queries is not None:
            out[new_queries] = 0
        out[slice(None) if rows is None else rows] = old
        return out
    if writes_stream:
        # Nothing flows into the new stream channels, and nothing from new inputs into old outputs.
        out[maps.new_positions(out.shape[0], maps.stream)] = 0
        out[:, maps.new_positions(out.shape[1], cols)] = 0
    if new_queries is not None:
        out[new_queries] *= query_scale
    row_index = torch.arange(out.shape[0]) if rows is None else rows
    col_index = torch.arange(out.shape[1]) if cols is None else cols
    out[row_index[:, None], col_index[None, :]] = old
    return out

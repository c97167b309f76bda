"""NVSM-SA (non-volatile sparse masking self-attention): the kernel, and the module of its weights.

The published code moves pixels around with `torch.roll`, circular padding, unfolding 2w x 2w
windows and boolean masks, then several reshapes. Every one of those steps is a fixed permutation
of pixel positions for a given image size, so here each direction is ONE cached gather index:
(roll, sparse resampling, window partition) in, and (window merge, roll back) out.
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor, nn

from lipt_core.models.hrm import ConvBN


def sparse_offsets(window_size: int) -> list[int]:
    """Row (and column) offsets, inside a 2w span, that the sparse half's windows gather.

    off(k) = 2k for k < w/2 and 2k + 1 after: for w = 8, [0, 2, 4, 6, 9, 11, 13, 15].
    """
    half = window_size // 2
    return [2 * k if k < half else 2 * k + 1 for k in range(window_size)]


def window_indices(
    height: int, width: int, window_size: int, shifted: bool, device: torch.device
) -> tuple[Tensor, Tensor, Tensor]:
    """`compute_window_indices`, cached per size: computed once, reused by every block.

    While tracing for export the sizes are symbolic, so the indices become part of the graph.
    """
    if torch.compiler.is_compiling():
        return compute_window_indices(height, width, window_size, shifted, device)
    # Cached indices must be ordinary tensors: made under inference_mode they would be
    # "inference tensors", and a later training forward of the same size could not save them
    # for backward.
    with torch.inference_mode(False):
        return _cached_window_indices(height, width, window_size, shifted, device)


def compute_window_indices(
    height: int, width: int, window_size: int, shifted: bool, device: torch.device
) -> tuple[Tensor, Tensor, Tensor]:
    """Gather indices for an (height x width) map, both multiples of `window_size`.

    Token order is window-major: l = (window_row * windows_per_row + window_col) * w*w + dy*w + dx.
    Pixels are p = row * width + col, and the two attention halves are interleaved as p*2 + half
    (a channels-last tensor viewed with the half as an extra axis).

    Returns, as int64 tensors on `device`:
      gather_qv (2*L,): for the stage that computes attention, half 0 (dense) and half 1 (sparse,
          resampled) tokens, half-major;
      gather_v (2*L,): for stages reusing the maps, both halves dense (the published code does not
          resample v there);
      scatter_out (2*H*W,): from the half-major token layout back to pixels p*2 + half. The sparse
          half is put back through the same map as the dense one: as published, its output stays
          in the resampled layout.
    """
    w = window_size
    shift = w // 2 if shifted else 0

    def wrap(positions: Tensor, size: int) -> Tensor:
        # positions mod size; a tensor divisor keeps this exportable with a symbolic size.
        return positions.remainder(torch.full((), size, dtype=positions.dtype, device=device))

    rows = torch.arange(height, device=device)
    cols = torch.arange(width, device=device)

    # Spatial position, in the rolled frame, of each window token.
    def token_grid(n: int) -> Tensor:  # (n // w, w): position in the frame of block b, element k
        return torch.arange(n, device=device).view(n // w, w)

    grid_rows, grid_cols = token_grid(height), token_grid(width)
    offsets = torch.tensor(sparse_offsets(w), device=device)
    sparse_rows = wrap(grid_rows[:, :1] + offsets, height)
    sparse_cols = wrap(grid_cols[:, :1] + offsets, width)

    def tokens_to_pixels(row_of: Tensor, col_of: Tensor) -> Tensor:
        # row_of: (nh, w), col_of: (nw, w) positions in the rolled frame -> pixel index, (L,)
        r = wrap(row_of + shift, height)
        c = wrap(col_of + shift, width)
        pix = r[:, None, :, None] * width + c[None, :, None, :]  # (nh, nw, w, w)
        return pix.reshape(-1)

    dense = tokens_to_pixels(grid_rows, grid_cols)
    sparse = tokens_to_pixels(sparse_rows, sparse_cols)
    gather_qv = torch.cat([dense * 2, sparse * 2 + 1])
    gather_v = torch.cat([dense * 2, dense * 2 + 1])

    # Where pixel (y, x) reads its output: rolled-frame position ((y - s) % H, (x - s) % W).
    frame_rows = wrap(rows - shift, height)
    frame_cols = wrap(cols - shift, width)
    windows_per_row = width // w
    token = (
        ((frame_rows[:, None] // w) * windows_per_row + frame_cols[None, :] // w) * (w * w)
        + (frame_rows[:, None] % w) * w
        + frame_cols[None, :] % w
    ).reshape(-1)
    num_tokens = height * width
    scatter_out = torch.stack([token, token + num_tokens], dim=1).reshape(-1)
    return gather_qv, gather_v, scatter_out


_cached_window_indices = functools.lru_cache(maxsize=32)(compute_window_indices)


def nvsm_attention(
    projected: Tensor, *, window_size: int, shifted: bool, maps: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Windowed self-attention of LIPT's two halves, dense and sparse.

    Within each w x w window, out = A v with A = softmax(q q^T): the query is also the key and,
    as published, there is no 1/sqrt(d) scaling. A block's first stage computes A from its own
    q; later stages apply that A to their own v.

    The maps are materialised (w^2 floats per pixel and half) because, on CPU, batched matrix
    products and softmax use every core while PyTorch's fused attention kernel did not: measured
    on 2 cores, 8.5 ms for a computing stage and 3.5 ms for a reusing one, against 15-19 ms each
    fused. The maps live only until the block ends.

    Args:
        projected: (N, K, H, W), the output of project_inp; H and W multiples of `window_size`.
            Without `maps`, K = 2C: half 0 then half 1, each C channels of q (first C/2) then v.
            With `maps`, K = C: half 0 then half 1, each C/2 channels of v.
        window_size: w; attention runs inside non-overlapping w x w windows.
        shifted: roll by -w/2 before and +w/2 after (odd blocks).
        maps: the attention maps of the block's first stage, as it returned them; None to
            compute them from this stage's q.

    Returns:
        (N, C, H, W), the attended values, channels-last in memory (before project_out); and
        the maps, (N * 2 * H*W / w^2, w^2, w^2) ordered (image, half, window), for the block's
        later stages.
    """
    n, k, h, w = projected.shape
    gather_qv, gather_v, scatter_out = window_indices(h, w, window_size, shifted, projected.device)
    area = window_size * window_size
    # (N, H, W, K) viewed with the half as its own row: (N, H*W*2, K/2).
    tokens = projected.permute(0, 2, 3, 1).reshape(n, h * w * 2, k // 2)
    if maps is None:
        qv = tokens.index_select(1, gather_qv).view(-1, area, k // 2)
        q, v = qv.chunk(2, dim=-1)
        maps = torch.bmm(q, q.transpose(1, 2))
        if torch.is_grad_enabled() and maps.requires_grad:
            maps = torch.softmax(maps, dim=-1)
        else:  # in place: one buffer of w^2 floats per pixel is enough
            maps = torch._softmax(maps, -1, False, out=maps)
    else:
        v = tokens.index_select(1, gather_v).view(-1, area, k // 2)
    out = torch.bmm(maps, v)  # (N*2*nW, w^2, c)
    c = out.shape[-1]
    out = out.view(n, -1, c).index_select(1, scatter_out)  # (N, H*W*2, c)
    return out.view(n, h, w, 2 * c).permute(0, 3, 1, 2), maps


class NVSMSA(nn.Module):
    """The weights of one NVSM-SA: project_inp (conv + BatchNorm when training) and project_out.

    The first stage of a block computes attention maps (project_inp: C -> 2C, q and v); later
    stages reuse them (project_inp: C -> C, v only).
    """

    def __init__(
        self,
        channels: int,
        *,
        window_size: int,
        shifted: bool,
        computes_maps: bool,
        inference: bool,
    ) -> None:
        super().__init__()
        self.window_size = window_size
        self.shifted = shifted
        self.computes_maps = computes_maps
        projected = 2 * channels if computes_maps else channels
        self.project_inp: nn.Module = (
            nn.Conv2d(channels, projected, 1) if inference else ConvBN(channels, projected)
        )
        self.project_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: Tensor, maps: Tensor | None = None) -> tuple[Tensor, Tensor]:
        y, maps = nvsm_attention(
            self.project_inp(x),
            window_size=self.window_size,
            shifted=self.shifted,
            maps=None if self.computes_maps else maps,
        )
        return self.project_out(y), maps


__all__ = ["NVSMSA", "compute_window_indices", "nvsm_attention", "sparse_offsets", "window_indices"]

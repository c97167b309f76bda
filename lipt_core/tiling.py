"""The tiling engine: run an image-to-image network over an image of any size, tile by tile.

A network whose receptive field is local (LIPT: convolutions and windowed attention) can be run
on overlapping tiles whose outputs are blended; done right, the result matches whole-image
inference to well beyond 8-bit precision and no seam is visible. How it is done here:

* **Window-aligned tiles.** Tile sizes and tile starts are multiples of the attention window, so
  every tile's attention windows coincide with the windows whole-image inference uses. The last
  tile of a row (or column) ends at the image edge and may be up to ``window - 1`` pixels longer
  than the others; the network pads it exactly as it pads the whole image.
* **Overlap and feathering.** Neighbouring tiles overlap by at least ``overlap`` input pixels.
  Across each overlap the two tiles' outputs are cross-faded with linear ramps (weights summing
  to one) over the middle half of the overlap; the outer quarter next to each tile's edge, where
  the missing context makes its output least reliable, gets no weight at all.
* **One output buffer, one weight buffer, no per-tile list.** Each tile's weighted output is
  added into the output buffer as soon as it is computed. Because the tiles form a grid and each
  tile's weight is a product of a row ramp and a column ramp, the accumulated weight is itself a
  product, ``row_weight[y] * column_weight[x]``: the weight buffer is two vectors, not a second
  image, and one in-place division normalises the output at the end.

What remains different from whole-image inference is at the image's own edges, not at seams:
LIPT's sparse attention windows reach up to two windows past a pixel and wrap around the image,
so whole-image inference mixes the bottom and right edges with the top and left ones, while a
tile at the image edge wraps onto itself. (Giving edge tiles the opposite edge as extra context
was tried: it is worse, since the convolutions then see pixels where whole-image inference sees
zero padding.)

The engine is a pure function over a tensor and a callable; devices, precision, memory budgets
and retries are the caller's business (`lipt_core.restore`).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from lipt_core.errors import UsageError

DEFAULT_OVERLAP = 16
"""Default overlap between neighbouring tiles, in input pixels."""

Span = tuple[int, int]


@dataclass(frozen=True)
class TileGrid:
    """Where the tiles of an image lie: a grid of row spans x column spans (input pixels)."""

    height: int
    width: int
    rows: tuple[Span, ...]
    cols: tuple[Span, ...]

    @property
    def count(self) -> int:
        return len(self.rows) * len(self.cols)

    @property
    def whole(self) -> bool:
        """True when the grid is one tile covering the whole image."""
        return self.count == 1

    @property
    def largest_tile(self) -> tuple[int, int]:
        """(height, width) of the largest tile."""
        return max(e - s for s, e in self.rows), max(e - s for s, e in self.cols)

    def tiles(self) -> Iterator[tuple[int, int, Span, Span]]:
        """(row index, column index, row span, column span) in raster order."""
        for (i, rows), (j, cols) in itertools.product(enumerate(self.rows), enumerate(self.cols)):
            yield i, j, rows, cols


def axis_spans(size: int, tile: int | None, overlap: int, window: int = 1) -> tuple[Span, ...]:
    """Split ``range(size)`` into spans of about ``tile`` that overlap by at least ``overlap``.

    Every span starts at a multiple of ``window``; all but the last are ``tile`` long, and the
    last ends at ``size`` (between ``tile`` and ``tile + window - 1`` long). ``tile=None`` or a
    tile not smaller than ``size`` gives one span.
    """
    if size < 1:
        raise ValueError(f"size must be positive, got {size}")
    if tile is None or tile >= size:
        return ((0, size),)
    check_tiling(tile, overlap, window)
    step = (tile - overlap) // window * window
    spans: list[Span] = []
    start = 0
    while start + tile < size:
        spans.append((start, start + tile))
        start += step
    last = (size - tile) // window * window  # >= the previous start, both being aligned
    if spans and last <= spans[-1][0]:
        spans[-1] = (spans[-1][0], size)
    else:
        spans.append((last, size))
    return tuple(spans)


def check_tiling(tile: int, overlap: int, window: int = 1) -> None:
    """Raise UsageError unless ``tile`` and ``overlap`` can tile with this window."""
    if tile < window or tile % window:
        raise UsageError(
            f"tile size must be a positive multiple of the window {window}, got {tile}"
        )
    if overlap < 0:
        raise UsageError(f"tile overlap must be >= 0, got {overlap}")
    if tile - overlap < window:
        raise UsageError(
            f"tile overlap {overlap} leaves no step for tile {tile}: the overlap must be at most "
            f"{tile - window} (tile minus the window {window})"
        )


def plan_tiles(
    height: int, width: int, *, tile: int | None, overlap: int = DEFAULT_OVERLAP, window: int = 1
) -> TileGrid:
    """The tile grid for an image; ``tile=None`` means one tile, the whole image."""
    return TileGrid(
        height=height,
        width=width,
        rows=axis_spans(height, tile, overlap, window),
        cols=axis_spans(width, tile, overlap, window),
    )


def span_weights(spans: tuple[Span, ...], index: int, scale: int) -> Tensor:
    """The feathering weights of span ``index`` at output resolution (float32, 1-D).

    1 inside. Across an overlap of length L with the previous (next) span: 0 on the outer L/4
    (the pixels nearest the tile's edge, which lack context and can be far off), a linear ramp
    over the middle L/2, sampled at pixel centres, and 1 on the inner L/4. Two overlapping
    spans' weights sum to one across their overlap.
    """
    start, end = spans[index]
    weights = torch.ones((end - start) * scale)
    if index > 0:
        length = (spans[index - 1][1] - start) * scale
        if length > 0:
            weights[:length] *= _ramp(length)
    if index + 1 < len(spans):
        length = (end - spans[index + 1][0]) * scale
        if length > 0:
            weights[-length:] *= _ramp(length).flip(0)
    return weights


def _ramp(length: int) -> Tensor:
    """Rising weights over an overlap of ``length``: 0, then linear, then 1 (see span_weights)."""
    margin = length // 4
    rise = length - 2 * margin
    ramp = torch.zeros(length)
    ramp[margin : margin + rise] = (torch.arange(rise) + 0.5) / rise
    ramp[margin + rise :] = 1.0
    return ramp


def axis_weight_sum(spans: tuple[Span, ...], size: int, scale: int) -> Tensor:
    """The sum of every span's ramp at each output position: one factor of the weight buffer."""
    total = torch.zeros(size * scale)
    for index, (start, end) in enumerate(spans):
        total[start * scale : end * scale] += span_weights(spans, index, scale)
    return total


def tiled_forward(
    x: Tensor,
    fn: Callable[[Tensor], Tensor],
    *,
    scale: int,
    grid: TileGrid,
    out: Tensor | None = None,
    out_channels: int | None = None,
    batch_size: int = 1,
    on_tile: Callable[[int, int], None] | None = None,
) -> Tensor:
    """Apply ``fn`` to ``x`` tile by tile and blend the tiles into one output.

    Args:
        x: (N, C, H, W) input, on any device; tiles are sliced from it and given to ``fn`` as is
            (moving them to the network's device is ``fn``'s business).
        fn: the network, (B, C, h, w) -> (B, C_out, h * scale, w * scale).
        scale: the network's upscaling factor.
        grid: the tiles, from :func:`plan_tiles` (``grid.height, grid.width == H, W``).
        out: where to accumulate, (N, C_out, H * scale, W * scale) float32 on the CPU, of any
            memory layout (e.g. a view of an (H, W, C) array); zeroed first. Allocated if None.
        out_channels: C_out when ``out`` is None (default: C).
        batch_size: how many tiles of the same shape go through ``fn`` at once (only when
            ``x`` holds one image).
        on_tile: called as ``on_tile(done, total)`` after each batch of tiles.

    Returns:
        ``out``, holding the blended output.
    """
    n, _, height, width = x.shape
    if (height, width) != (grid.height, grid.width):
        raise ValueError(f"grid is for {grid.height}x{grid.width}, input is {height}x{width}")
    shape = (n, out_channels or x.shape[1], height * scale, width * scale)
    if out is None:
        out = torch.zeros(shape)
    else:
        if tuple(out.shape) != shape:
            raise ValueError(f"out has shape {tuple(out.shape)}, expected {shape}")
        out.zero_()
    total = grid.count
    if grid.whole:
        out.copy_(fn(x))
        if on_tile:
            on_tile(1, total)
        return out

    row_weights = [span_weights(grid.rows, i, scale) for i in range(len(grid.rows))]
    col_weights = [span_weights(grid.cols, j, scale) for j in range(len(grid.cols))]
    batch_size = max(1, batch_size if n == 1 else 1)
    done = 0
    pending: list[tuple[int, int]] = []

    def flush() -> None:
        nonlocal done
        if not pending:
            return
        tiles = [x[:, :, slice(*grid.rows[i]), slice(*grid.cols[j])] for i, j in pending]
        result = fn(tiles[0] if len(tiles) == 1 else torch.cat(tiles))
        del tiles
        for k, (i, j) in enumerate(pending):
            (r0, r1), (c0, c1) = grid.rows[i], grid.cols[j]
            piece = result[k * n : (k + 1) * n].to("cpu", torch.float32)
            weight = row_weights[i].view(-1, 1) * col_weights[j].view(1, -1)
            out[:, :, r0 * scale : r1 * scale, c0 * scale : c1 * scale].addcmul_(piece, weight)
        done += len(pending)
        pending.clear()
        if on_tile:
            on_tile(done, total)

    def size(i: int, j: int) -> tuple[int, int]:
        return grid.rows[i][1] - grid.rows[i][0], grid.cols[j][1] - grid.cols[j][0]

    for i, j, _, _ in grid.tiles():
        if pending and (len(pending) >= batch_size or size(*pending[0]) != size(i, j)):
            flush()
        pending.append((i, j))
    flush()

    # Normalise by the separable weight sum, in place (no temporary the size of the output).
    out.div_(axis_weight_sum(grid.rows, height, scale).view(1, 1, -1, 1))
    out.div_(axis_weight_sum(grid.cols, width, scale).view(1, 1, 1, -1))
    return out


__all__ = [
    "DEFAULT_OVERLAP",
    "TileGrid",
    "axis_spans",
    "axis_weight_sum",
    "check_tiling",
    "plan_tiles",
    "span_weights",
    "tiled_forward",
]

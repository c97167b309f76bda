"""The tiling engine: tile placement, feathering weights, and agreement with whole-image runs."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from restore_helpers import pattern, tiny_model, well_conditioned

from lipt_core.errors import UsageError
from lipt_core.tiling import (
    axis_spans,
    axis_weight_sum,
    check_tiling,
    plan_tiles,
    span_weights,
    tiled_forward,
)


@pytest.mark.parametrize("window", [1, 8, 16])
def test_spans_cover_align_and_overlap(window):
    for size in [*range(1, 70), 127, 128, 129, 255, 300, 511, 512, 513, 1000]:
        for tile in (2 * window, 4 * window, 64, 128):
            tile = max(tile // window * window, window)
            for overlap in (0, window, 16, 32):
                if tile - overlap < window:
                    continue
                spans = axis_spans(size, tile, overlap, window)
                assert spans[0][0] == 0 and spans[-1][1] == size
                for start, end in spans:
                    assert start % window == 0
                    assert end - start <= max(tile + window - 1, size if size <= tile else 0)
                for (s0, e0), (s1, e1) in itertools.pairwise(spans):
                    assert s0 < s1 and e0 < e1
                    assert e0 - s1 >= overlap, (size, tile, overlap, spans)


def test_whole_image_when_the_tile_is_large():
    assert axis_spans(100, None, 16, 8) == ((0, 100),)
    assert axis_spans(100, 128, 16, 8) == ((0, 100),)
    grid = plan_tiles(100, 300, tile=128, overlap=16, window=8)
    assert len(grid.rows) == 1 and len(grid.cols) == 3 and not grid.whole


def test_bad_tilings_are_usage_errors():
    with pytest.raises(UsageError, match="multiple of the window"):
        check_tiling(100, 16, 8)
    with pytest.raises(UsageError, match="overlap"):
        check_tiling(64, 60, 8)
    with pytest.raises(UsageError, match=">= 0"):
        check_tiling(64, -1, 8)


@pytest.mark.parametrize("scale", [1, 2, 4])
def test_feather_weights_sum_to_one_and_are_positive(scale):
    for size, tile, overlap, window in [(512, 128, 32, 8), (500, 128, 16, 8), (77, 24, 8, 8)]:
        spans = axis_spans(size, tile, overlap, window)
        total = axis_weight_sum(spans, size, scale)
        assert float(total.min()) > 0
        for index in range(len(spans)):
            weights = span_weights(spans, index, scale)
            assert float(weights.min()) >= 0 and float(weights.max()) <= 1
        # Where only two spans meet, their weights sum to one exactly.
        if all(s2 >= e0 for (_, e0), (s2, _) in zip(spans, spans[2:], strict=False)):
            assert torch.allclose(total, torch.ones_like(total))


def test_edge_pixels_of_a_tile_get_no_weight():
    spans = axis_spans(256, 128, 32, 8)
    weights = span_weights(spans, 1, 2)
    # the outer quarter of each overlap is left to the neighbour
    assert float(weights[: 32 * 2 // 4].max()) == 0.0
    assert float(weights[-(32 * 2 // 4) :].max()) == 0.0


def test_a_pointwise_function_is_reproduced_exactly():
    x = torch.rand(1, 3, 77, 131)
    grid = plan_tiles(77, 131, tile=32, overlap=8, window=8)
    assert grid.count > 4

    def upscale(t):
        return t.repeat_interleave(2, dim=-2).repeat_interleave(2, dim=-1) * 3

    calls = []
    out = tiled_forward(
        x, upscale, scale=2, grid=grid, batch_size=3, on_tile=lambda d, t: calls.append((d, t))
    )
    assert torch.allclose(out, upscale(x), atol=1e-6)
    assert calls[-1] == (grid.count, grid.count)


def test_accumulates_into_a_strided_output_buffer():
    x = torch.rand(1, 3, 40, 56)
    grid = plan_tiles(40, 56, tile=16, overlap=8, window=8)
    hwc = np.full((80, 112, 3), np.nan, dtype=np.float32)
    view = torch.from_numpy(hwc).permute(2, 0, 1).unsqueeze(0)

    def fn(t):
        return torch.nn.functional.interpolate(t, scale_factor=2, mode="nearest")

    tiled_forward(x, fn, scale=2, grid=grid, out=view)
    assert np.allclose(hwc, fn(x)[0].permute(1, 2, 0).numpy(), atol=1e-6)


def _psnr(a: torch.Tensor, b: torch.Tensor, peak: float) -> float:
    mse = float(((a.double() - b.double()) ** 2).mean())
    return math.inf if mse == 0 else 10 * math.log10(peak**2 / mse)


def _seam_stats(model, size: int, tile: int, overlap: int) -> tuple[float, float]:
    """(PSNR of tiled vs whole, error on tile-edge rows/columns / mean error)."""
    scale = model.config.scale
    image = torch.from_numpy(pattern(size, size, seed=3)).permute(2, 0, 1)[None].float() * 255
    grid = plan_tiles(size, size, tile=tile, overlap=overlap, window=model.config.window_size)
    with torch.inference_mode():
        whole = model(image).clamp(0, 255)
        tiled = tiled_forward(image, lambda t: model(t).clamp(0, 255), scale=scale, grid=grid)
    error = (tiled - whole).abs().mean(dim=(0, 1))
    edges = sorted(
        {s * scale for s, _ in grid.rows[1:]} | {e * scale - 1 for _, e in grid.rows[:-1]}
    )
    on_edges = torch.cat([error[edges, :].flatten(), error[:, edges].flatten()]).mean()
    return _psnr(tiled, whole, 255.0), float(on_edges / error.mean())


def test_tiled_matches_whole_image_on_512_at_x4():
    """The issue's criterion, with a reduced LIPT (fast): PSNR >= 45 dB, no seam."""
    model = tiny_model(scale=4, channels=16, num_stages=4)
    psnr, edge_ratio = _seam_stats(model, 512, 128, overlap=max(16, 4 * 8))
    assert psnr >= 45, psnr
    assert edge_ratio <= 2, edge_ratio


@pytest.mark.slow
def test_tiled_matches_whole_image_with_lipt_tiny():
    from lipt_core import create_model

    torch.manual_seed(0)
    model = well_conditioned(create_model("lipt-tiny", scale=4, inference=True)).eval()
    psnr, edge_ratio = _seam_stats(model, 512, 128, overlap=32)
    assert psnr >= 45, psnr
    assert edge_ratio <= 2, edge_ratio

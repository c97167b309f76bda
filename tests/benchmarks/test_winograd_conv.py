"""The Winograd convolution the benchmark times is a correct 3x3 convolution."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from helpers import load_benchmark, relative_error

winograd = load_benchmark("winograd_conv")


@pytest.mark.parametrize(("height", "width", "band_rows"), [(8, 8, 1), (13, 10, 2), (5, 23, 4)])
def test_winograd_equals_direct_convolution(height, width, band_rows):
    generator = torch.Generator().manual_seed(height * width)
    x = torch.randn(2, 6, height, width, generator=generator)
    weight = torch.randn(5, 6, 3, 3, generator=generator)
    bias = torch.randn(5, generator=generator)
    conv = winograd.WinogradConv3x3(weight, bias, band_rows=band_rows)
    ours = conv(x.permute(0, 2, 3, 1).contiguous()).permute(0, 3, 1, 2)
    exact = F.conv2d(x.double(), weight.double(), bias.double(), padding=1)
    assert ours.shape == exact.shape
    assert relative_error(ours, exact) < 1e-5

"""Is Winograd convolution worth it for LIPT on the CPU? oneDNN's direct 3x3 against F(4x4, 3x3).

lipt-small spends about 90% of its time in 64-channel 3x3 convolutions that already run near this
CPU's peak, so the only way left to make them much faster in fp32 is to do fewer multiplications.
Winograd F(4x4, 3x3) does 4x fewer in its channel products, at the price of transforming every
6x6 input tile and 4x4 output tile. PyTorch exposes no Winograd convolution on x86 (oneDNN's is
not selectable, and NNPACK fails to run on some CPUs), so this measures one written with PyTorch
operations: tile gather, input transform, 36 channel products as one batched matrix product,
output transform, processed in bands of tile rows so that the buffers stay in cache.

    python benchmarks/winograd_conv.py --channels 64 --threads 2

Prints, per configuration, the median time of each and the relative error against float64.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time

import torch
import torch.nn.functional as F
from torch import Tensor

from lipt_core.bench import parse_size

# Lavin and Gray's F(4x4, 3x3) transforms (interpolation points 0, +-1, +-2 and infinity).
_INPUT_T = [
    [4, 0, -5, 0, 1, 0],
    [0, -4, -4, 1, 1, 0],
    [0, 4, -4, -1, 1, 0],
    [0, -2, -1, 2, 1, 0],
    [0, 2, -1, -2, 1, 0],
    [0, 4, 0, -5, 0, 1],
]
_KERNEL = [
    [1 / 4, 0, 0],
    [-1 / 6, -1 / 6, -1 / 6],
    [-1 / 6, 1 / 6, -1 / 6],
    [1 / 24, 1 / 12, 1 / 6],
    [1 / 24, -1 / 12, 1 / 6],
    [0, 0, 1],
]
_OUTPUT_T = [[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]]


class WinogradConv3x3:
    """A 3x3, stride 1, padding 1 convolution of channels-last (N, H, W, C) float32 input."""

    def __init__(self, weight: Tensor, bias: Tensor, *, band_rows: int) -> None:
        input_t = torch.tensor(_INPUT_T, dtype=torch.float64)
        kernel_t = torch.tensor(_KERNEL, dtype=torch.float64)
        output_t = torch.tensor(_OUTPUT_T, dtype=torch.float64)
        # Both 2-D transforms as one matrix over the flattened tile (Kronecker product).
        self.input_transform = torch.kron(input_t, input_t).float()  # (36, 36)
        self.output_transform = torch.kron(output_t, output_t).float()  # (16, 36)
        out_channels, in_channels = weight.shape[:2]
        transformed = torch.einsum("ak,oikl,bl->abio", kernel_t, weight.double(), kernel_t)
        self.kernel = transformed.reshape(36, in_channels, out_channels).float().contiguous()
        self.bias = bias
        self.band_rows = band_rows

    def __call__(self, x: Tensor) -> Tensor:
        n, h, w, c = x.shape
        out_channels = self.kernel.shape[2]
        tile_rows, tile_cols = -(-h // 4), -(-w // 4)
        padded = F.pad(x, (0, 0, 1, tile_cols * 4 + 1 - w, 1, tile_rows * 4 + 1 - h))
        padded_h, padded_w = tile_rows * 4 + 2, tile_cols * 4 + 2
        out = torch.empty(n, tile_rows * 4, tile_cols * 4, out_channels)
        out_tiles = out.view(n, tile_rows, 4, tile_cols, 4, out_channels)
        for first in range(0, tile_rows, self.band_rows):
            rows = min(self.band_rows, tile_rows - first)
            band = padded[:, first * 4 : (first + rows) * 4 + 2]
            # (6, 6, N, rows, cols, C): element (i, j) of every 6x6 tile, tiles 4 px apart.
            tiles = band.as_strided(
                (6, 6, n, rows, tile_cols, c),
                (padded_w * c, c, padded_h * padded_w * c, 4 * padded_w * c, 4 * c, 1),
            ).reshape(36, -1)
            spectra = (self.input_transform @ tiles).view(36, -1, c)
            products = torch.bmm(spectra, self.kernel)
            result = self.output_transform @ products.view(36, -1)
            result = result.view(4, 4, n, rows, tile_cols, out_channels)
            out_tiles[:, first : first + rows].copy_(result.permute(2, 3, 0, 4, 1, 5))
        return out[:, :h, :w].add_(self.bias)


def median_ms(fn, runs: int, warmup: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--channels", type=int, nargs="+", default=[24, 64])
    parser.add_argument("--size", default="320x184", help="WIDTHxHEIGHT of the feature map")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--bands", type=int, nargs="+", default=[4, 8, 46])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    width, height = parse_size(args.size)
    print(f"3x3 convolution, {width}x{height}, {args.threads} threads, median of {args.runs} (ms)")
    for channels in args.channels:
        x = torch.randn(1, channels, height, width).contiguous(memory_format=torch.channels_last)
        weight = torch.randn(channels, channels, 3, 3) / (3 * channels**0.5)
        bias = torch.randn(channels)
        exact = F.conv2d(x.double(), weight.double(), bias.double(), padding=1)
        direct_conv = functools.partial(F.conv2d, x, weight, bias, padding=1)
        direct = median_ms(direct_conv, args.runs, args.warmup)
        error = (direct_conv().double() - exact).norm() / exact.norm()
        print(f"C={channels}: oneDNN direct {direct:.2f} ms (relative error {error:.1e})")
        tokens = x.permute(0, 2, 3, 1)  # the channels-last memory, viewed as (N, H, W, C)
        for band_rows in args.bands:
            conv = WinogradConv3x3(weight, bias, band_rows=band_rows)
            ms = median_ms(functools.partial(conv, tokens), args.runs, args.warmup)
            error = (conv(tokens).permute(0, 3, 1, 2).double() - exact).norm() / exact.norm()
            print(
                f"C={channels}: Winograd F(4x4,3x3), bands of {band_rows} tile rows "
                f"{ms:.2f} ms ({ms / direct:.2f}x direct; relative error {error:.1e})"
            )


if __name__ == "__main__":
    main()

"""The LIPT network: head, blocks of (HRM, HRM, NVSM-SA, HRM) stages, tail."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lipt_core.models.attention import NVSMSA
from lipt_core.models.config import LIPTConfig
from lipt_core.models.hrm import HRM


def reflect_indices(size: int, padded: int, device: torch.device) -> Tensor:
    """Indices 0..padded-1 into a length-`size` axis, mirrored without repeating the edge.

    Equal to reflect padding wherever that is defined (padding < size); beyond, the mirror
    repeats (period 2*(size-1)), and a length-1 axis is repeated as is.
    """
    positions = torch.arange(padded, device=device)
    period = max(2 * (size - 1), 1)
    # A tensor divisor keeps this exportable with a symbolic size.
    folded = positions.remainder(torch.full((), period, dtype=positions.dtype, device=device))
    return torch.where(folded < size, folded, period - folded)


def pad_to_multiple(x: Tensor, multiple: int) -> Tensor:
    """Pad the bottom and right of (N, C, H, W) up to multiples of `multiple`.

    Reflect padding, as published, done as one gather per axis. The published code fails when
    the image is not larger than the padding (e.g. a 3-pixel-high image and window 8); there the
    mirror keeps going back and forth (a 1-pixel axis is repeated), which continues the
    reflection smoothly. One code path for every size also keeps the graph free of
    shape-dependent branches, so it exports with dynamic height and width.
    """
    h, w = x.shape[-2:]
    x = x.index_select(-2, reflect_indices(h, h + (-h % multiple), x.device))
    return x.index_select(-1, reflect_indices(w, w + (-w % multiple), x.device))


class TailConv(nn.Conv2d):
    """The tail's 3x3 convolution, C -> colors * scale^2, which also adds the pixel mean back.

    Adding the mean through the bias (each output colour is scale^2 channels before the pixel
    shuffle) saves a pass over the largest tensor of the network. Its weights are a plain conv's.
    """

    def __init__(
        self, channels: int, colors: int, *, scale: int, offset: tuple[float, ...]
    ) -> None:
        super().__init__(channels, colors * scale * scale, 3, padding=1)
        per_channel = torch.tensor(offset).repeat_interleave(scale * scale)
        self.register_buffer("offset", per_channel, persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        return self._conv_forward(x, self.weight, self.bias + self.offset)


class LIPTStage(nn.Module):
    """One stage: x += HRM_a(x); x += HRM_c(x); x += NVSM-SA(x); x += HRM_b(x)."""

    def __init__(
        self, config: LIPTConfig, *, shifted: bool, computes_maps: bool, inference: bool
    ) -> None:
        super().__init__()
        c = config.channels
        self.hrm_a = HRM(c, r_expand=config.r_expand, inference=inference)
        self.hrm_c = HRM(c, r_expand=config.r_expand, inference=inference)
        self.attn = NVSMSA(
            c,
            window_size=config.window_size,
            shifted=shifted,
            computes_maps=computes_maps,
            inference=inference,
        )
        self.hrm_b = HRM(c, r_expand=config.r_expand, inference=inference)

    def forward(self, x: Tensor, maps: Tensor | None) -> tuple[Tensor, Tensor]:
        # In-place adds onto fresh conv outputs: safe for autograd (a convolution's backward does
        # not need its output) and they save an allocation per residual.
        x = self.hrm_a(x).add_(x)
        x = self.hrm_c(x).add_(x)
        y, maps = self.attn(x, maps)
        x = y.add_(x)
        x = self.hrm_b(x).add_(x)
        return x, maps


class LIPTBlock(nn.Module):
    """1 + n_share stages; the first computes the attention maps, the others reuse them."""

    def __init__(self, config: LIPTConfig, *, shifted: bool, inference: bool) -> None:
        super().__init__()
        self.stages = nn.ModuleList(
            LIPTStage(config, shifted=shifted, computes_maps=(j == 0), inference=inference)
            for j in range(1 + config.n_share)
        )

    def forward(self, x: Tensor) -> Tensor:
        maps = None
        for stage in self.stages:
            x, maps = stage(x, maps)
        return x


class LIPT(nn.Module):
    """LIPT, the Latency-aware Image Processing Transformer (Qiao et al., IEEE TIP 2025).

    Input (N, colors, H, W) with pixel values in [0, rgb_range]; output (N, colors, H*scale,
    W*scale) in the same range. Any H, W >= 1.

    `inference=False` builds the training form, `inference=True` the plain-convolution form;
    `lipt_core.reparameterize` turns the first into the second.
    """

    def __init__(self, config: LIPTConfig, *, inference: bool = False) -> None:
        super().__init__()
        self.config = config
        self.inference = inference
        c = config.channels
        self.register_buffer(
            "pixel_mean", torch.tensor(config.pixel_mean).view(1, -1, 1, 1), persistent=False
        )
        self.head = nn.Conv2d(config.colors, c, 3, padding=1)
        self.body = nn.ModuleList(
            LIPTBlock(config, shifted=(i % 2 == 1), inference=inference)
            for i in range(config.num_blocks)
        )
        self.tail = TailConv(c, config.colors, scale=config.scale, offset=config.pixel_mean)
        self.upsample = nn.PixelShuffle(config.scale) if config.scale > 1 else nn.Identity()

    @property
    def form(self) -> str:
        return "inference" if self.inference else "training"

    def forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        s = self.config.scale
        # Channels-last is what oneDNN's CPU convolutions run fastest on, and it makes the
        # attention's token view free.
        x = pad_to_multiple(x, self.config.window_size).contiguous(
            memory_format=torch.channels_last
        )
        features = self.head(x - self.pixel_mean)
        x = features
        for block in self.body:
            x = block(x)
        out = self.upsample(self.tail(x.add_(features)))
        # Channels-last output: the HWC layout image code wants, without another copy.
        return out[:, :, : h * s, : w * s]

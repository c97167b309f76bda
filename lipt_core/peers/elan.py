"""ELAN-light, a reference peer for latency comparisons.

A from-the-paper re-implementation of the lightweight model of

    X. Zhang, H. Zeng, S. Guo, L. Zhang,
    "Efficient Long-Range Attention Network for Image Super-Resolution", ECCV 2022.

It is built with random weights and exists so that ``lipt bench`` can time LIPT against the
architecture it is compared with in the LIPT paper. The network is a 3x3 head conv, a body of
efficient long-range attention blocks (ELAB) with a global skip, and a 3x3 conv + PixelShuffle
tail. Each ELAB is a stack of 1 + n_share (LFE, GMSA) pairs:

* LFE, local feature extraction: shift-conv (expand by r_expand), ReLU, shift-conv (reduce),
  where a shift-conv shifts four fifths of the channels by one pixel (left, right, up, down)
  and then mixes channels with a 1x1 conv.
* GMSA, group-wise multi-scale self-attention: a 1x1 projection (its BatchNorm folded in, as
  at inference), the channels split into one group per window size (4, 8, 16), accelerated
  self-attention (ASA: q = k, no scaling) inside windows, windows shifted by half their size
  on every second ELAB (no mask), and a 1x1 output projection. Only the first GMSA of an ELAB
  computes attention maps; the n_share following ones reuse them on their own values.

For profiling, the GMSA is :class:`ELANAttention` (projections included, as SwinIR's qkv/proj
are in its ``WindowAttention``) and the LFE, ELAN's feed-forward part, is :class:`LFE`. The LFE
takes the place of a transformer's MLP but is built from convolutions (shift-conv + 1x1 convs),
like LIPT's HRM in the same place; ``lipt bench`` therefore counts it as Conv, not MLP, just as
the LIPT paper counts its HRM as Conv.

Parameter count: 597,168 at x4 and 577,692 at x2. The paper's 601K / 582K also count the
BatchNorm affine parameters of the training-time projections (4,320 in all), which folding
into the 1x1 convs removes; the fixed shift kernels and the mean are buffers, not parameters.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from lipt_core.models.lipt import pad_to_multiple

__all__ = ["ELAB", "LFE", "ELANAttention", "ELANLight", "ShiftConv2d"]

#: Per-channel RGB mean of the DIV2K training set, in 0..1, used by ELAN's mean shift.
DIV2K_RGB_MEAN: tuple[float, float, float] = (0.4488, 0.4371, 0.4040)


def _to_windows(x: torch.Tensor, window_size: int) -> torch.Tensor:
    """B x C x H x W to (B * nW) x (ws * ws) x C windows (H, W multiples of ws)."""
    b, c, h, w = x.shape
    x = x.view(b, c, h // window_size, window_size, w // window_size, window_size)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(-1, window_size * window_size, c)


def _from_windows(windows: torch.Tensor, window_size: int, h: int, w: int) -> torch.Tensor:
    """Inverse of :func:`_to_windows`: (B * nW) x (ws * ws) x C back to B x C x H x W."""
    c = windows.shape[-1]
    x = windows.view(-1, h // window_size, w // window_size, window_size, window_size, c)
    return x.permute(0, 5, 1, 3, 2, 4).reshape(-1, c, h, w)


class ShiftConv2d(nn.Module):
    """ELAN's shift-conv: a fixed one-pixel spatial shift of channel groups, then a 1x1 conv.

    The input channels are cut into five equal groups (the last takes any remainder); the first
    four are shifted by one pixel, towards the left, right, top and bottom, with zero fill, and
    the fifth is left in place. The shift has no parameters (a depthwise 3x3 conv with a fixed
    one-hot kernel, kept as a buffer); the 1x1 conv is the learnable part.

    Args:
        in_channels: input channels.
        out_channels: output channels of the 1x1 conv.
    """

    def __init__(self, *, in_channels: int, out_channels: int):
        super().__init__()
        g = in_channels // 5
        kernel = torch.zeros(in_channels, 1, 3, 3)
        kernel[0 * g : 1 * g, 0, 1, 2] = 1.0  # out(y, x) = in(y, x + 1)
        kernel[1 * g : 2 * g, 0, 1, 0] = 1.0  # out(y, x) = in(y, x - 1)
        kernel[2 * g : 3 * g, 0, 2, 1] = 1.0  # out(y, x) = in(y + 1, x)
        kernel[3 * g : 4 * g, 0, 0, 1] = 1.0  # out(y, x) = in(y - 1, x)
        kernel[4 * g :, 0, 1, 1] = 1.0  # identity
        self.register_buffer("shift_kernel", kernel, persistent=False)
        self.in_channels = in_channels
        self.conv = nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kernel = self.shift_kernel.to(x.dtype)
        x = F.conv2d(x, kernel, padding=1, groups=self.in_channels)
        return self.conv(x)


class LFE(nn.Module):
    """Local feature extraction (LFE), the feed-forward part of an ELAB (Zhang et al. 2022).

    Shift-conv to ``channels * r_expand``, ReLU, shift-conv back to ``channels``: a pointwise
    two-layer MLP whose inputs are shifted channel groups, run as convolutions. It is named
    after the paper, without ``Mlp``: a profiler that files modules by class name counts it
    with the convolutions (as LIPT's HRM, which sits in the same place), not with the token
    MLPs of SwinIR.

    Args:
        channels: input and output channels (ELAN-light: 60).
        r_expand: hidden width relative to ``channels`` (ELAN-light: 2).
    """

    def __init__(self, *, channels: int, r_expand: int):
        super().__init__()
        self.conv0 = ShiftConv2d(in_channels=channels, out_channels=channels * r_expand)
        self.act = nn.ReLU()
        self.conv1 = ShiftConv2d(in_channels=channels * r_expand, out_channels=channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv1(self.act(self.conv0(x)))


class ELANAttention(nn.Module):
    """Group-wise multi-scale self-attention (GMSA) with accelerated self-attention (ASA).

    From ELAN (Zhang et al., ECCV 2022). A 1x1 projection (the paper's conv + BatchNorm, here
    folded into one conv, as at inference) produces, for each of the ``len(window_sizes)``
    channel groups, a query (also used as the key: q = k) and a value when
    ``compute_attention`` is set, or only a value when the block reuses the attention maps of
    the previous block. Each group attends within square windows of its own size, without
    the 1/sqrt(d) scaling; with ``shift`` the windows are cyclically shifted by half their size
    (no mask). A 1x1 conv projects the concatenated groups back.

    With random weights there are no BatchNorm statistics to keep the projections near unit
    scale, so the unscaled logits are large and the softmax close to one-hot; that changes the
    values, not the cost, which is what the peer is for.

    Args:
        channels: input and output channels (ELAN-light: 60), divisible by the group count.
        window_sizes: window side of each channel group (ELAN-light: (4, 8, 16)).
        shift: shift the windows by half their size (ELAN: every second ELAB).
        compute_attention: compute attention maps (True) or take them from the caller (False).
    """

    def __init__(
        self,
        *,
        channels: int,
        window_sizes: tuple[int, ...],
        shift: bool,
        compute_attention: bool,
    ):
        super().__init__()
        groups = len(window_sizes)
        if channels % groups:
            raise ValueError(f"channels {channels} not divisible into {groups} window groups")
        self.window_sizes = tuple(window_sizes)
        self.shift = shift
        self.compute_attention = compute_attention
        self.group_channels = channels // groups
        inner = channels * 2 if compute_attention else channels
        self.project_inp = nn.Conv2d(channels, inner, 1)
        self.project_out = nn.Conv2d(channels, channels, 1)

    def forward(
        self, x: torch.Tensor, shared_attention: list[torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Attend over B x C x H x W features (H, W multiples of every window size).

        Returns the output and the attention maps (one per group, (B * nW) x ws^2 x ws^2),
        computed here or passed through from ``shared_attention``.
        """
        if self.compute_attention == (shared_attention is not None):
            raise ValueError("pass shared_attention exactly when compute_attention is False")
        h, w = x.shape[-2:]
        gc = self.group_channels
        per_group = 2 * gc if self.compute_attention else gc
        groups = torch.split(self.project_inp(x), per_group, dim=1)
        outputs: list[torch.Tensor] = []
        maps: list[torch.Tensor] = []
        for idx, (part, ws) in enumerate(zip(groups, self.window_sizes, strict=True)):
            if self.shift:
                part = torch.roll(part, shifts=(-(ws // 2), -(ws // 2)), dims=(2, 3))
            tokens = _to_windows(part, ws)  # (B * nW) x ws^2 x per_group
            if shared_attention is None:
                q, v = tokens[..., :gc], tokens[..., gc:]
                attn = (q @ q.transpose(-2, -1)).softmax(dim=-1)
            else:
                v, attn = tokens, shared_attention[idx]
            y = _from_windows(attn @ v, ws, h, w)
            if self.shift:
                y = torch.roll(y, shifts=(ws // 2, ws // 2), dims=(2, 3))
            outputs.append(y)
            maps.append(attn)
        return self.project_out(torch.cat(outputs, dim=1)), maps


class ELAB(nn.Module):
    """Efficient long-range attention block: 1 + n_share residual (LFE, GMSA) pairs.

    The first GMSA computes the attention maps; the ``n_share`` following ones reuse them.

    Args:
        channels: feature channels.
        r_expand: LFE expansion ratio.
        window_sizes: GMSA window side per channel group.
        shift: shift the GMSA windows (every second ELAB).
        n_share: how many following (LFE, GMSA) pairs share the first pair's attention maps.
    """

    def __init__(
        self,
        *,
        channels: int,
        r_expand: int,
        window_sizes: tuple[int, ...],
        shift: bool,
        n_share: int,
    ):
        super().__init__()
        self.lfes = nn.ModuleList(
            LFE(channels=channels, r_expand=r_expand) for _ in range(1 + n_share)
        )
        self.attns = nn.ModuleList(
            ELANAttention(
                channels=channels,
                window_sizes=window_sizes,
                shift=shift,
                compute_attention=i == 0,
            )
            for i in range(1 + n_share)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shared: list[torch.Tensor] | None = None
        for lfe, attn in zip(self.lfes, self.attns, strict=True):
            x = lfe(x) + x
            y, shared = attn(x, shared)
            x = y + x
        return x


class ELANLight(nn.Module):
    """ELAN-light, the lightweight efficient long-range attention network (Zhang et al. 2022).

    Takes N x 3 x H x W images in 0..``rgb_range`` (0..255, like LIPT) and returns
    N x 3 x (H*scale) x (W*scale) in the same range. Any H, W >= 1 are accepted: the input is
    padded to a multiple of the least common multiple of the window sizes (reflection) and
    the output cropped back.

    All hyperparameters are keyword-only; the defaults are the paper's ELAN-light.

    Args:
        scale: super-resolution factor (the paper: 2, 3, 4).
        m_elan: number of (LFE, GMSA) pairs in the body (24), a multiple of 1 + n_share.
        c_elan: feature channels (60).
        n_share: pairs that reuse the attention maps of the pair before them (1).
        r_expand: LFE expansion ratio (2).
        window_sizes: GMSA window side per channel group ((4, 8, 16)).
        rgb_range: the range of the input and output images (255).
        rgb_mean: the mean, in 0..1, subtracted before and added after the network.
    """

    def __init__(
        self,
        *,
        scale: int,
        m_elan: int = 24,
        c_elan: int = 60,
        n_share: int = 1,
        r_expand: int = 2,
        window_sizes: tuple[int, ...] = (4, 8, 16),
        rgb_range: float = 255.0,
        rgb_mean: tuple[float, float, float] = DIV2K_RGB_MEAN,
    ):
        super().__init__()
        if not isinstance(scale, int) or isinstance(scale, bool) or scale < 1:
            raise ValueError(f"scale must be a positive integer, got {scale!r}")
        if n_share < 0 or m_elan < 1 or m_elan % (1 + n_share):
            raise ValueError(f"m_elan ({m_elan}) must be a positive multiple of 1 + n_share")
        self.scale = scale
        self.window_sizes = tuple(window_sizes)
        self.pad_multiple = math.lcm(*self.window_sizes)
        self.register_buffer(
            "mean",
            rgb_range * torch.tensor(rgb_mean, dtype=torch.float32).view(1, 3, 1, 1),
            persistent=False,
        )
        self.head = nn.Conv2d(3, c_elan, 3, padding=1)
        self.body = nn.Sequential(
            *(
                ELAB(
                    channels=c_elan,
                    r_expand=r_expand,
                    window_sizes=self.window_sizes,
                    shift=i % 2 == 1,
                    n_share=n_share,
                )
                for i in range(m_elan // (1 + n_share))
            )
        )
        self.tail = nn.Sequential(
            nn.Conv2d(c_elan, 3 * scale * scale, 3, padding=1), nn.PixelShuffle(scale)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """N x 3 x H x W in 0..rgb_range to N x 3 x H*scale x W*scale in 0..rgb_range."""
        h, w = x.shape[-2:]
        x = pad_to_multiple(x, self.pad_multiple)
        mean = self.mean.to(x.dtype)
        x = self.head(x - mean)
        x = self.tail(self.body(x) + x) + mean
        return x[..., : h * self.scale, : w * self.scale]

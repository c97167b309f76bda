"""SwinIR-light, a reference peer for latency comparisons.

A from-the-paper re-implementation of the lightweight super-resolution setting of

    J. Liang, J. Cao, G. Sun, K. Zhang, L. Van Gool, R. Timofte,
    "SwinIR: Image Restoration Using Swin Transformer", ICCV Workshops 2021.

It is built with random weights and exists so that ``lipt bench`` can time LIPT against the
architecture it is compared with in the LIPT paper. The structure follows the paper's
lightweight SR model: a 3x3 shallow-feature conv, four residual Swin Transformer blocks (RSTB)
of six Swin Transformer layers each (window multi-head self-attention with relative position
bias, shifted windows with the attention mask on every second layer, a 2x MLP), a 3x3 conv at
the end of each RSTB and after the body, and the "pixelshuffledirect" upsampler.

For profiling, all self-attention work that the paper calls MSA (qkv projection, attention,
output projection) lives in :class:`WindowAttention`, and the feed-forward network in
:class:`Mlp`; window partitioning, cyclic shifts and LayerNorms stay in the enclosing block.

Parameter count: the model has 929,628 parameters at x4 and 910,152 at x2, every tensor
counted. The figures in the SwinIR paper (897K at x4, 878K at x2) leave out the 24 relative
position bias tables (24 x 225 x 6 = 32,400 parameters); :func:`paper_parameter_count` reproduces
that convention.
"""

from __future__ import annotations

import torch
from torch import nn

from lipt_core.models.lipt import pad_to_multiple

__all__ = [
    "DIV2K_RGB_MEAN",
    "RSTB",
    "Mlp",
    "SwinIRLight",
    "SwinTransformerBlock",
    "UpsampleOneStep",
    "WindowAttention",
    "paper_parameter_count",
    "shifted_window_mask",
]

#: Per-channel RGB mean of the DIV2K training set, in 0..1, used by SwinIR's mean shift.
DIV2K_RGB_MEAN: tuple[float, float, float] = (0.4488, 0.4371, 0.4040)


def _window_partition(x: torch.Tensor, window_size: int) -> torch.Tensor:
    """Split B x H x W x C into (B * nW) x (ws * ws) x C non-overlapping windows."""
    b, h, w, c = x.shape
    x = x.view(b, h // window_size, window_size, w // window_size, window_size, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window_size * window_size, c)


def _window_reverse(windows: torch.Tensor, window_size: int, h: int, w: int) -> torch.Tensor:
    """Inverse of :func:`_window_partition`: (B * nW) x (ws * ws) x C back to B x H x W x C."""
    c = windows.shape[-1]
    x = windows.view(-1, h // window_size, w // window_size, window_size, window_size, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, h, w, c)


def _relative_position_index(window_size: int) -> torch.Tensor:
    """Index into a (2ws-1)^2 bias table for every (query, key) pair of a window (ws^2 x ws^2)."""
    coords = torch.stack(
        torch.meshgrid(torch.arange(window_size), torch.arange(window_size), indexing="ij")
    ).flatten(1)  # 2 x ws^2
    rel = coords[:, :, None] - coords[:, None, :]  # 2 x ws^2 x ws^2, each in [-(ws-1), ws-1]
    rel = rel + (window_size - 1)
    return rel[0] * (2 * window_size - 1) + rel[1]


def shifted_window_mask(
    height: int, width: int, *, window_size: int, shift_size: int, device: torch.device
) -> torch.Tensor:
    """The attention mask of shifted-window attention (Swin Transformer, Liu et al. 2021).

    After a cyclic shift by ``shift_size``, a window can hold pixels from up to four regions
    that were not adjacent in the image; the mask (nW x ws^2 x ws^2, 0 or -100) stops them from
    attending to each other. ``height`` and ``width`` must be multiples of ``window_size``.
    """
    region = torch.zeros(1, height, width, 1, device=device)
    bounds = (slice(0, -window_size), slice(-window_size, -shift_size), slice(-shift_size, None))
    label = 0
    for hs in bounds:
        for ws in bounds:
            region[:, hs, ws, :] = label
            label += 1
    windows = _window_partition(region, window_size).squeeze(-1)  # nW x ws^2
    diff = windows[:, None, :] - windows[:, :, None]
    return torch.zeros_like(diff).masked_fill(diff != 0, -100.0)


class WindowAttention(nn.Module):
    """Window multi-head self-attention (W-MSA / SW-MSA) with relative position bias.

    From the Swin Transformer (Liu et al., ICCV 2021) as used by SwinIR. Holds the fused qkv
    Linear, the relative position bias table and the output projection, so that a profiler that
    attributes time by module type sees the whole of MSA here.

    Args:
        dim: channels of the tokens (SwinIR-light: 60).
        window_size: side of the square attention window (SwinIR-light: 8).
        num_heads: attention heads (SwinIR-light: 6).
        qkv_bias: whether the qkv projection has a bias (SwinIR: True).
    """

    def __init__(self, *, dim: int, window_size: int, num_heads: int, qkv_bias: bool = True):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.dim = dim
        self.window_size = window_size
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(
            torch.zeros((2 * window_size - 1) ** 2, num_heads)
        )
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        self.register_buffer(
            "relative_position_index", _relative_position_index(window_size), persistent=False
        )
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Attend within windows.

        Args:
            x: (B * nW) x N x C tokens, N = window_size^2.
            mask: nW x N x N additive mask for shifted windows, or None.
        """
        b_, n, c = x.shape
        qkv = self.qkv(x).reshape(b_, n, 3, self.num_heads, c // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each B_ x heads x N x hd
        attn = (q * self.scale) @ k.transpose(-2, -1)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        attn = attn + bias.view(n, n, -1).permute(2, 0, 1).unsqueeze(0)
        if mask is not None:
            nw = mask.shape[0]
            attn = attn.view(b_ // nw, nw, self.num_heads, n, n) + mask[None, :, None]
            attn = attn.view(b_, self.num_heads, n, n)
        attn = attn.softmax(dim=-1)
        x = (attn @ v).transpose(1, 2).reshape(b_, n, c)
        return self.proj(x)


class Mlp(nn.Module):
    """The transformer feed-forward network: Linear, GELU, Linear.

    Args:
        dim: input and output channels.
        hidden_dim: hidden channels (SwinIR-light: mlp_ratio 2 x dim = 120).
    """

    def __init__(self, *, dim: int, hidden_dim: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class SwinTransformerBlock(nn.Module):
    """One Swin Transformer layer: LN, (shifted) window attention, residual, LN, MLP, residual.

    Args:
        dim: token channels.
        num_heads: attention heads.
        window_size: attention window side.
        shift_size: cyclic shift of the windows (0 for W-MSA, window_size // 2 for SW-MSA).
        mlp_ratio: hidden width of the MLP relative to ``dim``.
        qkv_bias: bias in the qkv projection.
    """

    def __init__(
        self,
        *,
        dim: int,
        num_heads: int,
        window_size: int,
        shift_size: int,
        mlp_ratio: float,
        qkv_bias: bool = True,
    ):
        super().__init__()
        if not 0 <= shift_size < window_size:
            raise ValueError(f"shift_size must be in [0, {window_size}), got {shift_size}")
        self.window_size = window_size
        self.shift_size = shift_size
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(
            dim=dim, window_size=window_size, num_heads=num_heads, qkv_bias=qkv_bias
        )
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim=dim, hidden_dim=int(dim * mlp_ratio))

    def forward(
        self, x: torch.Tensor, x_size: tuple[int, int], attn_mask: torch.Tensor | None
    ) -> torch.Tensor:
        """Apply the layer to B x (H*W) x C tokens; ``attn_mask`` is used only when shifted."""
        h, w = x_size
        b, _, c = x.shape
        shortcut = x
        x = self.norm1(x).view(b, h, w, c)
        if self.shift_size:
            x = torch.roll(x, shifts=(-self.shift_size, -self.shift_size), dims=(1, 2))
        windows = _window_partition(x, self.window_size)
        windows = self.attn(windows, mask=attn_mask if self.shift_size else None)
        x = _window_reverse(windows, self.window_size, h, w)
        if self.shift_size:
            x = torch.roll(x, shifts=(self.shift_size, self.shift_size), dims=(1, 2))
        x = shortcut + x.reshape(b, h * w, c)
        return x + self.mlp(self.norm2(x))


class RSTB(nn.Module):
    """Residual Swin Transformer Block: ``depth`` Swin layers, a 3x3 conv, and a skip.

    Shifted windows are used on every second layer (odd indices), as in the paper.

    Args:
        dim: channels.
        depth: Swin Transformer layers in the group (SwinIR-light: 6).
        num_heads: attention heads per layer.
        window_size: attention window side.
        mlp_ratio: MLP hidden width relative to ``dim``.
        qkv_bias: bias in the qkv projections.
    """

    def __init__(
        self,
        *,
        dim: int,
        depth: int,
        num_heads: int,
        window_size: int,
        mlp_ratio: float,
        qkv_bias: bool = True,
    ):
        super().__init__()
        self.blocks = nn.ModuleList(
            SwinTransformerBlock(
                dim=dim,
                num_heads=num_heads,
                window_size=window_size,
                shift_size=0 if i % 2 == 0 else window_size // 2,
                mlp_ratio=mlp_ratio,
                qkv_bias=qkv_bias,
            )
            for i in range(depth)
        )
        self.conv = nn.Conv2d(dim, dim, 3, padding=1)

    def forward(
        self, x: torch.Tensor, x_size: tuple[int, int], attn_mask: torch.Tensor | None
    ) -> torch.Tensor:
        """B x (H*W) x C tokens in, same shape out."""
        shortcut = x
        for block in self.blocks:
            x = block(x, x_size, attn_mask)
        b, _, c = x.shape
        x = x.transpose(1, 2).reshape(b, c, *x_size)  # patch un-embed
        x = self.conv(x)
        return x.flatten(2).transpose(1, 2) + shortcut  # patch embed


class UpsampleOneStep(nn.Module):
    """SwinIR's "pixelshuffledirect" upsampler: one 3x3 conv to out_ch * scale^2, PixelShuffle.

    Args:
        scale: upscaling factor.
        dim: input channels.
        out_channels: output channels (3 for RGB).
    """

    def __init__(self, *, scale: int, dim: int, out_channels: int = 3):
        super().__init__()
        self.conv = nn.Conv2d(dim, out_channels * scale * scale, 3, padding=1)
        self.shuffle = nn.PixelShuffle(scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shuffle(self.conv(x))


class SwinIRLight(nn.Module):
    """SwinIR in the lightweight super-resolution setting (Liang et al., ICCVW 2021).

    Takes N x 3 x H x W images in 0..``rgb_range`` (0..255 by default, like LIPT) and returns
    N x 3 x (H*scale) x (W*scale) in the same range. Any H, W >= 1 are accepted: the input is
    padded to a multiple of ``window_size`` (reflection) and the output cropped back.

    All hyperparameters are keyword-only; the defaults are the paper's SwinIR-light.

    Args:
        scale: super-resolution factor (the paper: 2, 3, 4).
        embed_dim: feature channels (60).
        depths: Swin Transformer layers per RSTB ((6, 6, 6, 6)).
        num_heads: attention heads per RSTB ((6, 6, 6, 6)).
        window_size: attention window side (8).
        mlp_ratio: MLP hidden width relative to ``embed_dim`` (2).
        qkv_bias: bias in the qkv projections (True).
        img_range: the range SwinIR works in internally (1.0: images scaled to 0..1).
        rgb_mean: the mean subtracted before and added after the network (DIV2K mean, 0..1).
        rgb_range: the range of the input and output images (255, LIPT's convention).
    """

    def __init__(
        self,
        *,
        scale: int,
        embed_dim: int = 60,
        depths: tuple[int, ...] = (6, 6, 6, 6),
        num_heads: tuple[int, ...] = (6, 6, 6, 6),
        window_size: int = 8,
        mlp_ratio: float = 2.0,
        qkv_bias: bool = True,
        img_range: float = 1.0,
        rgb_mean: tuple[float, float, float] = DIV2K_RGB_MEAN,
        rgb_range: float = 255.0,
    ):
        super().__init__()
        if not isinstance(scale, int) or isinstance(scale, bool) or scale < 1:
            raise ValueError(f"scale must be a positive integer, got {scale!r}")
        if len(depths) != len(num_heads):
            raise ValueError("depths and num_heads must have the same length")
        if window_size < 2:
            raise ValueError(f"window_size must be at least 2, got {window_size}")
        self.scale = scale
        self.window_size = window_size
        self.shift_size = window_size // 2
        self.img_range = img_range
        self.rgb_range = rgb_range
        self.register_buffer(
            "mean", torch.tensor(rgb_mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False
        )

        self.conv_first = nn.Conv2d(3, embed_dim, 3, padding=1)
        self.patch_norm = nn.LayerNorm(embed_dim)
        self.layers = nn.ModuleList(
            RSTB(
                dim=embed_dim,
                depth=depth,
                num_heads=heads,
                window_size=window_size,
                mlp_ratio=mlp_ratio,
                qkv_bias=qkv_bias,
            )
            for depth, heads in zip(depths, num_heads, strict=True)
        )
        self.norm = nn.LayerNorm(embed_dim)
        self.conv_after_body = nn.Conv2d(embed_dim, embed_dim, 3, padding=1)
        self.upsample = UpsampleOneStep(scale=scale, dim=embed_dim, out_channels=3)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        # SwinIR's initialisation: truncated normal Linear weights, zero biases, unit LayerNorms.
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Deep feature extraction: N x C x H x W (H, W multiples of the window) to the same."""
        b, c, h, w = x.shape
        x_size = (h, w)
        # The mask depends only on the (padded) size: build it once per forward, not per layer.
        attn_mask = shifted_window_mask(
            h, w, window_size=self.window_size, shift_size=self.shift_size, device=x.device
        ).to(x.dtype)
        x = self.patch_norm(x.flatten(2).transpose(1, 2))
        for layer in self.layers:
            x = layer(x, x_size, attn_mask)
        x = self.norm(x)
        return x.transpose(1, 2).reshape(b, c, h, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """N x 3 x H x W in 0..rgb_range to N x 3 x H*scale x W*scale in 0..rgb_range."""
        h, w = x.shape[-2:]
        x = pad_to_multiple(x, self.window_size)
        mean = self.mean.to(x.dtype)
        x = (x / self.rgb_range - mean) * self.img_range
        x = self.conv_first(x)
        x = self.conv_after_body(self.forward_features(x)) + x
        x = self.upsample(x)
        x = (x / self.img_range + mean) * self.rgb_range
        return x[..., : h * self.scale, : w * self.scale]


def paper_parameter_count(model: nn.Module) -> int:
    """Parameters counted as the SwinIR paper counts them: without relative position biases.

    The SwinIR paper's Table 3 figures (878K / 886K / 897K for x2 / x3 / x4) equal the model's
    parameters minus its relative position bias tables, to the thousand.
    """
    return sum(
        p.numel()
        for name, p in model.named_parameters()
        if not name.endswith("relative_position_bias_table")
    )

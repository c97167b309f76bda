"""HRM, the high-frequency reparameterization module, and the fusable convolutions it is made of.

Training form: each 3x3 convolution of an HRM is a `RepConv3x3`, a sum of six linear branches
(3x3, 1x1, 1x1 -> average pool, 1x1 -> 3x3, Sobel-x, Sobel-y) with BatchNorm. Every border those
branches pad is filled with the value the preceding affine step gives for a zero input, so the
sum is exactly one 3x3 convolution with bias, borders included; `fused_kernel_bias` returns it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _bn_scale_shift(bn: nn.BatchNorm2d) -> tuple[Tensor, Tensor]:
    """Per-channel (scale, shift) with bn(x) == scale * x + shift in eval mode, in float64."""
    std = (bn.running_var.double() + bn.eps).sqrt()
    scale = bn.weight.double() / std
    return scale, bn.bias.double() - bn.running_mean.double() * scale


def _pad_with(x: Tensor, value: Tensor) -> Tensor:
    """Pad 1 px on every side, filled per channel with `value` (C,)."""
    if torch.compiler.is_compiling() or x.dim() != 4:
        out = F.pad(x, (1, 1, 1, 1))
        border = torch.ones_like(out, dtype=torch.bool)
        border[:, :, 1:-1, 1:-1] = False
        return torch.where(border, value.view(1, -1, 1, 1).to(out.dtype), out)
    return _PadWith.apply(x, value)


def _same_format(x: Tensor) -> torch.memory_format:
    if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        return torch.channels_last
    return torch.contiguous_format


class _PadWith(torch.autograd.Function):
    """`_pad_with` in eager mode, for training speed: one write of the padded tensor (interior
    copied, four border strips filled) instead of pad + mask + where, and a backward that
    slices the interior and sums the border strips only (the where-based one costs about a fifth
    of a training step of the multi-branch form on CPU). The same values and gradients."""

    @staticmethod
    def forward(ctx, x: Tensor, value: Tensor) -> Tensor:
        n, c, h, w = x.shape
        ctx.memory_format = _same_format(x)
        out = torch.empty(
            (n, c, h + 2, w + 2), dtype=x.dtype, device=x.device, memory_format=ctx.memory_format
        )
        out[:, :, 1:-1, 1:-1] = x
        v = value.detach().to(x.dtype).view(1, -1, 1)
        out[:, :, 0, :] = v
        out[:, :, -1, :] = v
        out[:, :, 1:-1, 0] = v
        out[:, :, 1:-1, -1] = v
        return out

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, Tensor | None]:
        grad_x = grad_value = None
        if ctx.needs_input_grad[0]:
            grad_x = grad[:, :, 1:-1, 1:-1].contiguous(memory_format=ctx.memory_format)
        if ctx.needs_input_grad[1]:
            grad_value = (
                grad[:, :, 0, :].sum((0, 2))
                + grad[:, :, -1, :].sum((0, 2))
                + grad[:, :, 1:-1, 0].sum((0, 2))
                + grad[:, :, 1:-1, -1].sum((0, 2))
            )
        return grad_x, grad_value


def _bn_zero_output(bn: nn.BatchNorm2d) -> Tensor:
    """What `bn` gives for a zero input; in training mode the batch statistics are used,
    but the published code pads with the running statistics in both modes."""
    std = (bn.running_var + bn.eps).sqrt()
    return (bn.bias - bn.running_mean * bn.weight / std).detach()


# Sobel kernels (as published: sqrt(2), not 2, in the middle of the edge column/row).
_R2 = math.sqrt(2.0)
SOBEL_X = ((1.0, 0.0, -1.0), (_R2, 0.0, -_R2), (1.0, 0.0, -1.0))
SOBEL_Y = ((1.0, _R2, 1.0), (0.0, 0.0, 0.0), (-1.0, -_R2, -1.0))


class Fusable(nn.Module):
    """A training-time module that is exactly one convolution with bias at inference.

    `reparameterize` replaces every `Fusable` by `nn.Conv2d` carrying `fused_kernel_bias()`.
    """

    in_channels: int
    out_channels: int
    kernel_size: int

    def fused_kernel_bias(self) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def to_conv(self) -> nn.Conv2d:
        kernel, bias = self.fused_kernel_bias()
        conv = nn.Conv2d(
            self.in_channels,
            self.out_channels,
            self.kernel_size,
            padding=self.kernel_size // 2,
            device=kernel.device,
            dtype=self.dtype_of_weights(),
        )
        with torch.no_grad():
            conv.weight.copy_(kernel)
            conv.bias.copy_(bias)
        return conv

    def dtype_of_weights(self) -> torch.dtype:
        return next(self.parameters()).dtype


class ConvBN(Fusable):
    """A bias-carrying convolution followed by BatchNorm (NVSM-SA's project_inp)."""

    def __init__(self, in_channels: int, out_channels: int, *, kernel_size: int = 1) -> None:
        super().__init__()
        self.in_channels, self.out_channels, self.kernel_size = (
            in_channels,
            out_channels,
            kernel_size,
        )
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2)
        self.bn = nn.BatchNorm2d(out_channels)

    def forward(self, x: Tensor) -> Tensor:
        return self.bn(self.conv(x))

    def fused_kernel_bias(self) -> tuple[Tensor, Tensor]:
        scale, shift = _bn_scale_shift(self.bn)
        kernel = self.conv.weight.double() * scale.view(-1, 1, 1, 1)
        bias = self.conv.bias.double() * scale + shift
        return kernel.to(self.conv.weight.dtype), bias.to(self.conv.weight.dtype)


class ConvThenBN(nn.Module):
    """A bias-free convolution then BatchNorm: one branch of `RepConv3x3`."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(
            in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False
        )
        self.bn = nn.BatchNorm2d(out_channels)

    def forward(self, x: Tensor) -> Tensor:
        return self.bn(self.conv(x))

    def folded(self) -> tuple[Tensor, Tensor]:
        scale, shift = _bn_scale_shift(self.bn)
        return self.conv.weight.double() * scale.view(-1, 1, 1, 1), shift


class AvgBranch(nn.Module):
    """1x1 conv -> BN -> pad with BN's zero-input value -> 3x3 average pool -> BN."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)
        self.pool_bn = nn.BatchNorm2d(out_channels)

    def forward(self, x: Tensor) -> Tensor:
        y = _pad_with(self.bn(self.conv(x)), _bn_zero_output(self.bn))
        return self.pool_bn(F.avg_pool2d(y, 3, stride=1))

    def folded(self) -> tuple[Tensor, Tensor]:
        s1, b1 = _bn_scale_shift(self.bn)
        s2, b2 = _bn_scale_shift(self.pool_bn)
        one_by_one = self.conv.weight.double()[:, :, 0, 0] * (s1 * s2).view(-1, 1)
        kernel = (one_by_one / 9.0)[:, :, None, None].expand(-1, -1, 3, 3)
        return kernel, b2 + s2 * b1


class OneByOneThreeByThreeBranch(nn.Module):
    """1x1 conv (identity + trainable delta) -> BN -> pad with BN's zero-input value ->
    3x3 conv without padding -> BN."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        # The delta starts at zero, so the branch starts as BN -> 3x3 conv.
        self.delta = nn.Parameter(torch.zeros(in_channels, in_channels, 1, 1))
        self.register_buffer(
            "identity",
            torch.eye(in_channels).view(in_channels, in_channels, 1, 1),
            persistent=False,
        )
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv = nn.Conv2d(in_channels, out_channels, 3, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)

    def forward(self, x: Tensor) -> Tensor:
        y = self.bn1(F.conv2d(x, self.delta + self.identity))
        return self.bn2(self.conv(_pad_with(y, _bn_zero_output(self.bn1))))

    def folded(self) -> tuple[Tensor, Tensor]:
        s1, b1 = _bn_scale_shift(self.bn1)
        s2, b2 = _bn_scale_shift(self.bn2)
        first = (self.delta + self.identity).double()[:, :, 0, 0] * s1.view(-1, 1)  # (mid, in)
        second = self.conv.weight.double() * s2.view(-1, 1, 1, 1)  # (out, mid, 3, 3)
        kernel = torch.einsum("omhw,mi->oihw", second, first)
        bias = b2 + torch.einsum("omhw,m->o", second, b1)
        return kernel, bias


class SobelBranch(nn.Module):
    """1x1 conv with bias b0 -> pad with b0 -> depthwise 3x3 conv (scale[o] * Sobel) + bias."""

    def __init__(self, in_channels: int, out_channels: int, sobel: tuple) -> None:
        super().__init__()
        probe = nn.Conv2d(in_channels, out_channels, 1)  # borrow its default initialisation
        self.k0 = nn.Parameter(probe.weight.detach().clone())
        self.b0 = nn.Parameter(probe.bias.detach().clone())
        self.scale = nn.Parameter(torch.randn(out_channels, 1, 1, 1) * 1e-3)
        self.bias = nn.Parameter(torch.randn(out_channels) * 1e-3)
        self.register_buffer(
            "mask", torch.tensor(sobel).expand(out_channels, 1, 3, 3).clone(), persistent=False
        )

    def forward(self, x: Tensor) -> Tensor:
        y = _pad_with(F.conv2d(x, self.k0, self.b0), self.b0)
        return F.conv2d(y, self.scale * self.mask, self.bias, groups=y.shape[1])

    def folded(self) -> tuple[Tensor, Tensor]:
        depthwise = (self.scale.double() * self.mask.double())[:, 0]  # (out, 3, 3)
        kernel = depthwise[:, None] * self.k0.double()  # (out, in, 3, 3)
        bias = self.bias.double() + self.b0.double() * depthwise.sum(dim=(1, 2))
        return kernel, bias


class RepConv3x3(Fusable):
    """The training form of one HRM 3x3 convolution: six branches summed, no nonlinearity."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, 3
        self.branch_3x3 = ConvThenBN(in_channels, out_channels, 3)
        self.branch_1x1 = ConvThenBN(in_channels, out_channels, 1)
        self.branch_avg = AvgBranch(in_channels, out_channels)
        self.branch_1x1_3x3 = OneByOneThreeByThreeBranch(in_channels, out_channels)
        self.branch_sobel_x = SobelBranch(in_channels, out_channels, SOBEL_X)
        self.branch_sobel_y = SobelBranch(in_channels, out_channels, SOBEL_Y)

    def forward(self, x: Tensor) -> Tensor:
        # The sum accumulates in place into the first branch's output (neither BatchNorm nor a
        # convolution needs its own output for backward): no new buffer per branch.
        out = self.branch_3x3(x)
        out.add_(self.branch_1x1(x))
        out.add_(self.branch_avg(x))
        out.add_(self.branch_1x1_3x3(x))
        out.add_(self.branch_sobel_x(x))
        return out.add_(self.branch_sobel_y(x))

    def reference_forward(self, x: Tensor) -> Tensor:
        """The six branches one by one, as published (what `forward` computes)."""
        return (
            self.branch_3x3(x)
            + self.branch_1x1(x)
            + self.branch_avg(x)
            + self.branch_1x1_3x3(x)
            + self.branch_sobel_x(x)
            + self.branch_sobel_y(x)
        )

    def fused_kernel_bias(self) -> tuple[Tensor, Tensor]:
        kernel_3x3, bias = self.branch_3x3.folded()
        kernel = kernel_3x3.clone()
        kernel_1x1, bias_1x1 = self.branch_1x1.folded()
        kernel[:, :, 1:2, 1:2] += kernel_1x1
        bias = bias + bias_1x1
        for branch in (
            self.branch_avg,
            self.branch_1x1_3x3,
            self.branch_sobel_x,
            self.branch_sobel_y,
        ):
            k, b = branch.folded()
            kernel = kernel + k
            bias = bias + b
        dtype = self.branch_3x3.conv.weight.dtype
        return kernel.to(dtype), bias.to(dtype)


class HRM(nn.Module):
    """conv3x3(C -> C*r) -> ReLU -> conv3x3(C*r -> C); the block adds the residual."""

    def __init__(self, channels: int, *, r_expand: int, inference: bool) -> None:
        super().__init__()
        hidden = channels * r_expand
        if inference:
            self.conv0: nn.Module = nn.Conv2d(channels, hidden, 3, padding=1)
            self.conv1: nn.Module = nn.Conv2d(hidden, channels, 3, padding=1)
        else:
            self.conv0 = RepConv3x3(channels, hidden)
            self.conv1 = RepConv3x3(hidden, channels)

    def forward(self, x: Tensor) -> Tensor:
        # In place: a fresh buffer per ReLU costs as much as the ReLU itself on CPU.
        return self.conv1(F.relu(self.conv0(x), inplace=True))

"""The training form's fast HRM convolutions against the published computation."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lipt_core.models.hrm import RepConv3x3, _bn_zero_output, input_moments


def test_input_moments_are_the_mean_and_covariance_with_their_gradient():
    x = torch.randn(3, 4, 5, 6, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    moments = input_moments(x)
    flat = x.permute(0, 2, 3, 1).reshape(-1, 4)
    assert moments.count == 90
    torch.testing.assert_close(moments.mean, flat.mean(0))
    torch.testing.assert_close(moments.covariance, torch.cov(flat.T, correction=0))

    def both(t):
        m = input_moments(t)
        return m.mean, m.covariance

    assert torch.autograd.gradcheck(both, (x.clone().requires_grad_(),))


def _pad_filled(x, value):
    """The published border fill: zero pad, then overwrite the 1-px frame with `value` (C,)."""
    out = F.pad(x, (1, 1, 1, 1))
    border = torch.ones_like(out, dtype=torch.bool)
    border[:, :, 1:-1, 1:-1] = False
    return torch.where(border, value.view(1, -1, 1, 1), out)


def _published_repconv(m, x):
    """RepConv3x3 as published: six branches, each padded input materialised, summed."""
    avg, mid = m.branch_avg, m.branch_1x1_3x3
    y = avg.bn(avg.conv(x))
    out_avg = avg.pool_bn(F.avg_pool2d(_pad_filled(y, _bn_zero_output(avg.bn)), 3, stride=1))
    y = mid.bn1(F.conv2d(x, mid.delta + mid.identity))
    out_mid = mid.bn2(mid.conv(_pad_filled(y, _bn_zero_output(mid.bn1))))
    out_sobel = [
        F.conv2d(
            _pad_filled(F.conv2d(x, s.k0, s.b0), s.b0),
            s.scale * s.mask,
            s.bias,
            groups=s.k0.shape[0],
        )
        for s in (m.branch_sobel_x, m.branch_sobel_y)
    ]
    return m.branch_3x3(x) + m.branch_1x1(x) + out_avg + out_mid + out_sobel[0] + out_sobel[1]


@pytest.mark.parametrize("size", [(10, 12), (1, 1), (1, 6), (5, 1), (2, 3)])
@pytest.mark.parametrize("training", [True, False])
def test_fast_training_form_matches_the_published_branches(size, training):
    """RepConv3x3.forward (border corrections instead of padded copies, in-place sum) == the six
    published branches summed: outputs, every gradient, and BatchNorm running statistics."""
    torch.manual_seed(0)
    fast = RepConv3x3(6, 5).train(training)
    with torch.no_grad():  # non-trivial statistics, so the filled borders differ from zero
        for bn in (mod for mod in fast.modules() if isinstance(mod, torch.nn.BatchNorm2d)):
            bn.running_mean.uniform_(-1, 1)
            bn.running_var.uniform_(0.5, 2)
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-1, 1)
        for param in fast.parameters():  # Sobel scales and the 1x1 delta start near zero
            param.add_(torch.randn_like(param) * 0.3)
    reference = RepConv3x3(6, 5).train(training)
    reference.load_state_dict(fast.state_dict())
    x = (torch.randn(3, 6, *size) + 0.5).contiguous(memory_format=torch.channels_last)
    x_fast, x_ref = x.clone().requires_grad_(), x.clone().requires_grad_()
    out_fast, out_ref = fast(x_fast), _published_repconv(reference, x_ref)
    torch.testing.assert_close(out_fast, out_ref, rtol=1e-5, atol=1e-5)
    grad = torch.randn_like(out_ref)
    out_fast.backward(grad)
    out_ref.backward(grad)
    torch.testing.assert_close(x_fast.grad, x_ref.grad, rtol=1e-5, atol=1e-5)
    for (name, a), b in zip(fast.named_parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-4, msg=name)
    for (name, a), b in zip(fast.named_buffers(), reference.buffers(), strict=True):
        torch.testing.assert_close(a, b, msg=name)


def test_batch_statistics_stay_float32_under_autocast():
    """Mixed precision (lipt train on CUDA) must not compute the covariance in half precision:
    its mean-square-minus-squared-mean form would cancel to noise."""
    torch.manual_seed(0)
    full, mixed = RepConv3x3(8, 8).train(), RepConv3x3(8, 8).train()
    mixed.load_state_dict(full.state_dict())
    x = (torch.randn(4, 8, 12, 12) * 0.1 + 3.0).contiguous(memory_format=torch.channels_last)
    full(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = mixed(x)
    out.float().sum().backward()
    folded = ("branch_1x1.bn", "branch_avg.bn", "branch_1x1_3x3.bn1")  # the moments' users
    for name in folded:
        for stat in ("running_mean", "running_var"):
            expected = full.get_buffer(f"{name}.{stat}")
            got = mixed.get_buffer(f"{name}.{stat}")
            torch.testing.assert_close(got, expected, rtol=2e-2, atol=1e-3, msg=name)

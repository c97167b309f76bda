import pytest
import torch
from torch import nn

from lipt_core import create_model, reparameterize
from lipt_core.models.hrm import Fusable, RepConv3x3

from helpers import randomize_batchnorm, relative_error


@pytest.mark.parametrize("colors", [1, 3])
@pytest.mark.parametrize("scale", [1, 2, 3, 4])
@pytest.mark.parametrize("preset", ["lipt-tiny", "lipt-small", "lipt-base"])
def test_inference_form_equals_training_form(preset, scale, colors):
    torch.manual_seed(scale * 10 + colors)
    model = randomize_batchnorm(create_model(preset, scale=scale, colors=colors, channels=8))
    # float64: random BatchNorm statistics drive activations to 1e8, where fp32 rounding alone
    # differs by about 1e-5 between CPUs' kernels; in float64 a correct fusion agrees to 1e-14.
    model = model.double().eval()
    window = model.config.window_size
    # Not a multiple of the window, so padding and every border pixel are exercised.
    x = torch.rand(1, colors, window + 3, 2 * window - 5, dtype=torch.float64) * 255
    fused = reparameterize(model)
    with torch.no_grad():
        expected, ours = model(x), fused(x)
    assert ours.dtype == torch.float64
    assert relative_error(ours, expected) < 1e-10
    assert fused.inference and not model.inference
    assert not any(isinstance(m, Fusable) for m in fused.modules())
    assert any(isinstance(m, Fusable) for m in model.modules()), "argument must stay unchanged"


def test_one_multibranch_conv_is_exactly_one_conv_borders_included():
    torch.manual_seed(1)
    block = randomize_batchnorm(RepConv3x3(5, 7)).eval()
    with torch.no_grad():
        for branch in (block.branch_sobel_x, block.branch_sobel_y):
            branch.scale.normal_()  # make the Sobel branches matter
            branch.bias.normal_()
        block.branch_1x1_3x3.delta.normal_(std=0.3)
    x = torch.randn(2, 5, 6, 9)
    conv = block.to_conv()
    with torch.no_grad():
        expected, ours = block(x), conv(x)
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-5)
    # The borders are where a wrong padding value would show.
    torch.testing.assert_close(ours[..., 0, :], expected[..., 0, :], rtol=1e-5, atol=1e-5)


def test_fused_model_is_plain_convolutions_and_runs_without_batchnorm():
    model = create_model("lipt-tiny", scale=2, channels=8)
    fused = reparameterize(model)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fused.modules())
    assert isinstance(fused.body[0].stages[0].attn.project_inp, nn.Conv2d)
    again = reparameterize(fused)
    x = torch.rand(1, 3, 9, 9) * 255
    with torch.no_grad():
        torch.testing.assert_close(again(x), fused(x))

import itertools

import pytest
import torch

from lipt_core import create_model
from lipt_core.models.lipt import pad_to_multiple, reflect_indices


@pytest.mark.parametrize("inference", [False, True])
@pytest.mark.parametrize(
    ("batch", "height", "width"), [(1, 1, 1), (1, 5, 7), (1, 8, 8), (1, 13, 200), (3, 9, 10)]
)
@pytest.mark.parametrize("scale", [1, 2, 3, 4])
def test_output_is_exactly_scale_times_the_input(batch, height, width, scale, inference):
    torch.manual_seed(0)
    model = create_model(
        "lipt-tiny", scale=scale, channels=8, num_stages=4, inference=inference
    ).eval()
    x = torch.rand(batch, 3, height, width) * 255
    with torch.no_grad():
        y = model(x)
    assert y.shape == (batch, 3, height * scale, width * scale)
    assert torch.isfinite(y).all()


def test_batch_items_are_independent():
    torch.manual_seed(0)
    model = create_model("lipt-tiny", scale=2, channels=8, num_stages=4, inference=True).eval()
    x = torch.rand(3, 3, 13, 11) * 255
    with torch.no_grad():
        together = model(x)
        alone = torch.cat([model(x[i : i + 1]) for i in range(3)])
    # Pixel units of 0..255: far below one grey level.
    torch.testing.assert_close(together, alone, rtol=1e-4, atol=1e-2)


def test_reflect_padding_matches_torch_where_defined_and_extends_beyond():
    x = torch.arange(5.0).view(1, 1, 1, 5)
    ours = pad_to_multiple(x.expand(1, 1, 5, 5), 8)
    reference = torch.nn.functional.pad(x.expand(1, 1, 5, 5), (0, 3, 0, 3), mode="reflect")
    torch.testing.assert_close(ours, reference)
    assert reflect_indices(3, 12, torch.device("cpu")).tolist() == [
        0,
        1,
        2,
        1,
        0,
        1,
        2,
        1,
        0,
        1,
        2,
        1,
    ]
    assert reflect_indices(1, 4, torch.device("cpu")).tolist() == [0, 0, 0, 0]


def test_training_form_trains():
    torch.manual_seed(0)
    model = create_model("lipt-tiny", scale=2, channels=8, num_stages=2).train()
    hr = torch.rand(4, 3, 32, 32) * 255
    lr = torch.nn.functional.avg_pool2d(hr, 2)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    losses = []
    for _ in range(8):
        optimizer.zero_grad()
        loss = torch.nn.functional.l1_loss(model(lr), hr)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.95 * losses[0], losses
    assert all(b < a for a, b in itertools.pairwise(losses)), losses
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None, f"{name} received no gradient"

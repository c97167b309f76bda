"""lipt_core.growth.widen: a wider network that computes what the narrow one did, and can learn."""

from __future__ import annotations

import pytest
import torch

from lipt_core import create_model
from lipt_core.errors import UsageError
from lipt_core.growth import widen

SMALL = {"channels": 8, "num_stages": 4}


def trained_like(scale: int, colors: int, n_share: int) -> torch.nn.Module:
    """An inference-form network whose every weight and bias is non-trivial."""
    with torch.random.fork_rng(devices=[]):  # the same network whatever ran before
        torch.manual_seed(scale)
        model = create_model(
            "lipt-tiny", scale=scale, colors=colors, inference=True, n_share=n_share, **SMALL
        )
    generator = torch.Generator().manual_seed(scale * 10 + colors + n_share)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator))
    return model.eval()


@pytest.mark.parametrize(
    ("scale", "colors", "n_share"), [(1, 1, 1), (1, 3, 0), (2, 3, 1), (3, 1, 1), (4, 3, 1)]
)
@pytest.mark.parametrize("channels", [8, 12, 16])
def test_the_wider_network_computes_the_same(scale, colors, n_share, channels):
    donor = trained_like(scale, colors, n_share)
    before = {k: v.clone() for k, v in donor.state_dict().items()}
    exact, wide = widen(donor, channels, query_scale=0.0), widen(donor, channels)
    assert wide.config == donor.config.replace(channels=channels)
    x = torch.rand(2, colors, 13, 21, generator=torch.Generator().manual_seed(0)) * 255
    with torch.no_grad():
        expected, got, got_exact = donor(x), wide(x), exact(x)
    assert got.shape == expected.shape == (2, colors, 13 * scale, 21 * scale)
    # Without the new queries only float rounding differs (1.2e-5 at most, seen with one thread);
    # with them, a second-order change (up to 4e-3 on random networks, whose unnormalised
    # attention logits are large; 5e-5 on the trained gray JPEG model).
    assert ((got_exact - expected).norm() / expected.norm()).item() < 1e-4
    assert ((got - expected).norm() / expected.norm()).item() < 1e-2
    for key, value in donor.state_dict().items():  # the donor is left as it was
        torch.testing.assert_close(value, before[key], rtol=0, atol=0)


def test_every_new_weight_learns():
    donor = trained_like(2, 3, 1)
    wide = widen(donor, 12).train()
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(1)) * 255
    target = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(2)) * 255
    optimizer = torch.optim.Adam(wide.parameters(), lr=1e-3)
    # The first step moves the zero weights that read the new hidden units and values; from then
    # on gradients reach the weights that write the new stream channels too.
    for _ in range(2):
        optimizer.zero_grad()
        (wide(x) - target).abs().mean().backward()
        optimizer.step()
    grads = {name: p.grad for name, p in wide.named_parameters()}
    new_rows = slice(8, 12)
    assert grads["head.weight"][new_rows].abs().sum() > 0
    assert grads["body.0.stages.0.hrm_a.conv1.weight"][new_rows].abs().sum() > 0
    assert grads["body.0.stages.0.hrm_a.conv1.weight"][:8, new_rows].abs().sum() > 0
    assert grads["body.0.stages.0.attn.project_out.weight"][:8, 4:6].abs().sum() > 0
    # New query rows of each half (4..5 and 16..17 of 2 * 12) are small, not zero: they learn.
    queries = grads["body.0.stages.0.attn.project_inp.weight"][[4, 5, 16, 17]]
    assert queries.abs().sum() > 0


def test_widening_refuses_what_it_cannot_do():
    donor = trained_like(1, 3, 1)
    with pytest.raises(UsageError, match="must be even and >= 8"):
        widen(donor, 6)
    with pytest.raises(UsageError, match="must be even"):
        widen(donor, 11)
    training_form = create_model("lipt-tiny", scale=1, **SMALL)
    with pytest.raises(UsageError, match="inference form"):
        widen(training_form, 12)

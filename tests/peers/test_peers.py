"""Tests of the reference peers (SwinIR-light, ELAN-light) used by ``lipt bench``."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from lipt_core.errors import UsageError
from lipt_core.peers import PEERS, ELANLight, SwinIRLight, create_peer
from lipt_core.peers.elan import LFE, ELANAttention, ShiftConv2d
from lipt_core.peers.swinir import (
    Mlp,
    SwinTransformerBlock,
    WindowAttention,
    _window_partition,
    _window_reverse,
    paper_parameter_count,
    shifted_window_mask,
)

# Published parameter counts (SwinIR Table 3, ELAN Table 2), in parameters.
PUBLISHED = {
    ("swinir-light", 2): 878_000,
    ("swinir-light", 4): 897_000,
    ("elan-light", 2): 582_000,
    ("elan-light", 4): 601_000,
}


def _n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.fixture(scope="module")
def x4_models() -> dict[str, torch.nn.Module]:
    torch.manual_seed(0)
    return {name: create_peer(name, scale=4).eval() for name in PEERS}


def test_registry_names() -> None:
    assert set(PEERS) == {"swinir-light", "elan-light"}
    assert PEERS["swinir-light"] is SwinIRLight
    assert PEERS["elan-light"] is ELANLight


@pytest.mark.parametrize(("name", "scale"), sorted(PUBLISHED))
def test_parameter_count_matches_paper(name: str, scale: int) -> None:
    model = create_peer(name, scale=scale)
    # SwinIR's published figures leave out the relative position bias tables; see swinir.py.
    count = paper_parameter_count(model) if name == "swinir-light" else _n_params(model)
    published = PUBLISHED[(name, scale)]
    assert abs(count - published) / published < 0.03, (name, scale, count)


@pytest.mark.parametrize(("scale", "expected"), [(2, 910_152), (3, 918_267), (4, 929_628)])
def test_swinir_total_parameters(scale: int, expected: int) -> None:
    model = SwinIRLight(scale=scale)
    assert _n_params(model) == expected
    assert _n_params(model) - paper_parameter_count(model) == 24 * 225 * 6  # bias tables


@pytest.mark.parametrize(("scale", "expected"), [(2, 577_692), (3, 585_807), (4, 597_168)])
def test_elan_total_parameters(scale: int, expected: int) -> None:
    assert _n_params(ELANLight(scale=scale)) == expected


@pytest.mark.parametrize("name", sorted(PEERS))
def test_odd_sizes_batch_two(name: str, x4_models: dict[str, torch.nn.Module]) -> None:
    x = torch.rand(2, 3, 13, 21) * 255
    with torch.no_grad():
        y = x4_models[name](x)
    assert y.shape == (2, 3, 52, 84)
    assert y.dtype == torch.float32
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("name", sorted(PEERS))
@pytest.mark.parametrize(("h", "w"), [(1, 1), (7, 2)])
def test_tiny_inputs(name: str, h: int, w: int, x4_models: dict[str, torch.nn.Module]) -> None:
    with torch.no_grad():
        y = x4_models[name](torch.rand(1, 3, h, w) * 255)
    assert y.shape == (1, 3, 4 * h, 4 * w)
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("name", sorted(PEERS))
def test_other_scales_shape(name: str) -> None:
    torch.manual_seed(0)
    model = create_peer(name, scale=3).eval()
    with torch.no_grad():
        y = model(torch.rand(1, 3, 5, 6) * 255)
    assert y.shape == (1, 3, 15, 18)


@pytest.mark.parametrize("name", sorted(PEERS))
def test_forward_is_deterministic(name: str, x4_models: dict[str, torch.nn.Module]) -> None:
    x = torch.rand(1, 3, 8, 8) * 255
    with torch.no_grad():
        a = x4_models[name](x)
        b = x4_models[name](x)
    assert torch.equal(a, b)


@pytest.mark.parametrize(
    "make",
    [
        lambda: SwinIRLight(scale=2, depths=(2,), num_heads=(6,)),
        lambda: ELANLight(scale=2, m_elan=4),
    ],
    ids=["swinir", "elan"],
)
def test_batch_items_are_independent(make: Callable[[], torch.nn.Module]) -> None:
    # Shallow variants, in float64: with random weights and no BatchNorm statistics, ELAN's
    # unscaled q.q^T logits are large, so float32 rounding differences between batch sizes are
    # amplified through the depth of the full model.
    torch.manual_seed(0)
    model = make().double().eval()
    x = torch.rand(2, 3, 8, 12, dtype=torch.float64) * 255
    with torch.no_grad():
        both = model(x)
        second = model(x[1:])
    torch.testing.assert_close(both[1:], second, rtol=1e-9, atol=1e-8)


def test_unknown_name_lists_valid_peers() -> None:
    with pytest.raises(UsageError) as info:
        create_peer("rcan", scale=4)
    message = str(info.value)
    assert "rcan" in message
    for name in PEERS:
        assert name in message


def test_bad_scale_is_a_usage_error() -> None:
    with pytest.raises(UsageError):
        create_peer("elan-light", scale=0)


def test_name_lookup_ignores_case() -> None:
    assert isinstance(create_peer("SwinIR-Light", scale=2), SwinIRLight)


def test_hyperparameters_are_keyword_only() -> None:
    with pytest.raises(TypeError):
        SwinIRLight(4)  # type: ignore[misc]
    with pytest.raises(TypeError):
        ELANLight(4)  # type: ignore[misc]


def test_profiling_module_classes(x4_models: dict[str, torch.nn.Module]) -> None:
    swinir, elan = x4_models["swinir-light"], x4_models["elan-light"]
    swin_attn = [m for m in swinir.modules() if isinstance(m, WindowAttention)]
    assert len(swin_attn) == 24
    assert all(isinstance(m.qkv, torch.nn.Linear) for m in swin_attn)
    assert all(isinstance(m.proj, torch.nn.Linear) for m in swin_attn)
    assert sum(isinstance(m, Mlp) for m in swinir.modules()) == 24
    elan_attn = [m for m in elan.modules() if isinstance(m, ELANAttention)]
    assert len(elan_attn) == 24
    assert sum(m.compute_attention for m in elan_attn) == 12  # n_share = 1
    assert sum(isinstance(m, LFE) for m in elan.modules()) == 24
    for model in (swinir, elan):
        names = {type(m).__name__ for m in model.modules()}
        assert any("Attention" in n for n in names)
    # SwinIR's token MLP is an Mlp; ELAN's convolutional LFE deliberately is not (it counts as
    # Conv in `lipt bench`, like LIPT's HRM in the same place).
    assert any("Mlp" in type(m).__name__ for m in swinir.modules())
    assert not any("Mlp" in type(m).__name__ for m in elan.modules())


def _shifted_window_ids(h: int, w: int, ws: int, shift: int) -> torch.Tensor:
    """Window index of every pixel (row-major) after a cyclic shift by ``shift``."""
    rows = (torch.arange(h) - shift) % h
    cols = (torch.arange(w) - shift) % w
    return ((rows[:, None] // ws) * (w // ws) + cols[None, :] // ws).flatten()


def _shifted_region_ids(h: int, w: int, ws: int, shift: int) -> torch.Tensor:
    """Region label of every pixel: pixels wrapped around by the shift form their own regions."""
    rows = (torch.arange(h) - shift) % h
    cols = (torch.arange(w) - shift) % w
    r = (rows >= h - ws).long() + (rows >= h - shift).long()
    c = (cols >= w - ws).long() + (cols >= w - shift).long()
    return (r[:, None] * 3 + c[None, :]).flatten()


def test_swin_shifted_attention_matches_brute_force() -> None:
    """SW-MSA with the mask equals attention among same-window, same-region pixels."""
    torch.manual_seed(0)
    h = w = 16
    ws, shift, dim, heads = 4, 2, 12, 3
    block = SwinTransformerBlock(
        dim=dim, num_heads=heads, window_size=ws, shift_size=shift, mlp_ratio=2.0
    ).eval()
    torch.nn.init.normal_(block.attn.relative_position_bias_table, std=1.0)
    mask = shifted_window_mask(h, w, window_size=ws, shift_size=shift, device=torch.device("cpu"))
    tokens = torch.randn(1, h * w, dim)
    with torch.no_grad():
        # The block's attention branch, as SwinTransformerBlock.forward runs it.
        normed = block.norm1(tokens)
        x = normed.view(1, h, w, dim)
        x = torch.roll(x, shifts=(-shift, -shift), dims=(1, 2))
        out = block.attn(_window_partition(x, ws), mask=mask)
        out = torch.roll(_window_reverse(out, ws, h, w), shifts=(shift, shift), dims=(1, 2))
        out = out.reshape(h * w, dim)

        attn = block.attn
        qkv = attn.qkv(normed[0]).view(h * w, 3, heads, dim // heads)
        q, k, v = qkv.unbind(1)
        win = _shifted_window_ids(h, w, ws, shift)
        reg = _shifted_region_ids(h, w, ws, shift)
        rows = (torch.arange(h) - shift) % h
        cols = (torch.arange(w) - shift) % w
        pos = torch.stack(torch.meshgrid(rows % ws, cols % ws, indexing="ij")).view(2, -1)
        expected = torch.empty(h * w, heads, dim // heads)
        for i in range(h * w):
            keys = ((win == win[i]) & (reg == reg[i])).nonzero().flatten()
            rel = pos[:, i : i + 1] - pos[:, keys] + (ws - 1)
            bias = attn.relative_position_bias_table[rel[0] * (2 * ws - 1) + rel[1]]  # K x heads
            logits = torch.einsum("hd,khd->hk", q[i] * attn.scale, k[keys]) + bias.T
            expected[i] = torch.einsum("hk,khd->hd", logits.softmax(-1), v[keys])
        expected = attn.proj(expected.reshape(h * w, dim))
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("shift", [False, True])
def test_elan_attention_matches_brute_force(shift: bool) -> None:
    """ASA (q = k, unscaled) in per-group windows, shared maps reused on new values."""
    torch.manual_seed(0)
    h = w = 16
    sizes = (4, 8, 16)
    first = ELANAttention(channels=12, window_sizes=sizes, shift=shift, compute_attention=True)
    second = ELANAttention(channels=12, window_sizes=sizes, shift=shift, compute_attention=False)
    x, x2 = torch.randn(2, 1, 12, h, w).unbind(0)
    with torch.no_grad():
        y, maps = first(x)
        y2, maps2 = second(x2, maps)
        assert all(a is b for a, b in zip(maps2, maps, strict=True))
        proj, proj2 = first.project_inp(x)[0], second.project_inp(x2)[0]
        expected, expected2 = [], []
        for g, ws in enumerate(sizes):
            q = proj[8 * g : 8 * g + 4].flatten(1).T  # pixels x 4
            v = proj[8 * g + 4 : 8 * g + 8].flatten(1).T
            v2 = proj2[4 * g : 4 * g + 4].flatten(1).T
            win = _shifted_window_ids(h, w, ws, ws // 2 if shift else 0)
            same = win[:, None] == win[None, :]
            logits = (q @ q.T).masked_fill(~same, float("-inf"))
            a = logits.softmax(-1)
            expected.append((a @ v).T.reshape(4, h, w))
            expected2.append((a @ v2).T.reshape(4, h, w))
        expected = first.project_out(torch.cat(expected)[None])
        expected2 = second.project_out(torch.cat(expected2)[None])
    torch.testing.assert_close(y, expected, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(y2, expected2, rtol=1e-4, atol=1e-4)


def test_shift_conv_shifts_four_fifths_of_the_channels() -> None:
    conv = ShiftConv2d(in_channels=5, out_channels=5)
    with torch.no_grad():
        conv.conv.weight.copy_(torch.eye(5).view(5, 5, 1, 1))
        conv.conv.bias.zero_()
        x = torch.arange(5 * 4 * 4, dtype=torch.float32).view(1, 5, 4, 4)
        y = conv(x)[0]
    zero_col, zero_row = torch.zeros(4, 1), torch.zeros(1, 4)
    torch.testing.assert_close(y[0], torch.cat([x[0, 0, :, 1:], zero_col], 1))  # from the right
    torch.testing.assert_close(y[1], torch.cat([zero_col, x[0, 1, :, :-1]], 1))  # from the left
    torch.testing.assert_close(y[2], torch.cat([x[0, 2, 1:], zero_row], 0))  # from below
    torch.testing.assert_close(y[3], torch.cat([zero_row, x[0, 3, :-1]], 0))  # from above
    torch.testing.assert_close(y[4], x[0, 4])

"""The cached gather indices against a direct transcription of the published data movement
(roll, circular padding + every-other-pixel selection, window partition)."""

import pytest
import torch

from lipt_core.models.attention import nvsm_attention, sparse_offsets


def test_sparse_offsets_match_the_published_masks():
    assert sparse_offsets(8) == [0, 2, 4, 6, 9, 11, 13, 15]
    assert sparse_offsets(16) == [*range(0, 16, 2), *range(17, 32, 2)]


def _partition(x, w):  # (N, C, H, W) -> (N * nW, w*w, C)
    n, c, h, wd = x.shape
    x = x.view(n, c, h // w, w, wd // w, w).permute(0, 2, 4, 3, 5, 1)
    return x.reshape(-1, w * w, c)


def _merge(y, n, h, wd, w):  # inverse of _partition
    c = y.shape[-1]
    y = y.view(n, h // w, wd // w, w, w, c).permute(0, 5, 1, 3, 2, 4)
    return y.reshape(n, c, h, wd)


def _resample(x, w):
    """Every other pixel of each 2w x 2w area, the way the published masks pick them."""
    h, wd = x.shape[-2:]
    offsets = torch.tensor(sparse_offsets(w))
    rows = (torch.arange(h).view(h // w, w)[:, :1] + offsets).reshape(-1) % h
    cols = (torch.arange(wd).view(wd // w, w)[:, :1] + offsets).reshape(-1) % wd
    return x[:, :, rows][:, :, :, cols]


def _naive(projected, w, shifted, maps=None):
    n, _, h, wd = projected.shape
    s = w // 2 if shifted else 0
    halves = projected.chunk(2, dim=1)
    outs, new_maps = [], []
    for index, half in enumerate(halves):
        half = torch.roll(half, shifts=(-s, -s), dims=(2, 3))
        if maps is None:
            if index == 1:
                half = _resample(half, w)
            q, v = _partition(half, w).chunk(2, dim=-1)
            attn = torch.softmax(q @ q.transpose(1, 2), dim=-1)
            new_maps.append(attn)
        else:
            v = _partition(half, w)
            attn = maps[index]
        y = _merge(attn @ v, n, h, wd, w)
        outs.append(torch.roll(y, shifts=(s, s), dims=(2, 3)))
    return torch.cat(outs, dim=1), new_maps


@pytest.mark.parametrize("shifted", [False, True])
@pytest.mark.parametrize(("h", "wd", "w"), [(8, 8, 8), (16, 24, 8), (32, 16, 16), (12, 8, 4)])
def test_gather_indices_equal_the_published_data_movement(h, wd, w, shifted):
    torch.manual_seed(0)
    n, c = 2, 6
    projected = torch.randn(n, 2 * c, h, wd) * 0.5
    ours, maps = nvsm_attention(projected, window_size=w, shifted=shifted)
    expected, expected_maps = _naive(projected, w, shifted)
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-5)

    # A later stage reuses the maps on v that is not resampled.
    values = torch.randn(n, c, h, wd)
    reused, _ = nvsm_attention(values, window_size=w, shifted=shifted, maps=maps)
    expected_reused, _ = _naive(values, w, shifted, maps=expected_maps)
    torch.testing.assert_close(reused, expected_reused, rtol=1e-5, atol=1e-5)

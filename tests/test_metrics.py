"""PSNR, SSIM and PSNR-B as the restoration literature computes them."""

import math

import numpy as np
import pytest

from lipt_core.degradations import imresize, jpeg_compress
from lipt_core.errors import UsageError
from lipt_core.metrics import (
    blocking_effect_factor,
    gaussian_window,
    psnr,
    psnr_b,
    rgb_to_y,
    ssim,
)


def random_pair(shape=(32, 40, 3), noise=8.0, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 256, shape).astype(np.uint8)
    b = np.clip(a + rng.normal(0, noise, shape), 0, 255).round().astype(np.uint8)
    return a, b


def direct_ssim(a, b):
    """SSIM of two 2-D float images, window by window (the definition, no tricks)."""
    window = np.outer(gaussian_window(11, 1.5), gaussian_window(11, 1.5))
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    values = []
    for i in range(a.shape[0] - 10):
        for j in range(a.shape[1] - 10):
            x, y = a[i : i + 11, j : j + 11], b[i : i + 11, j : j + 11]
            mx, my = (window * x).sum(), (window * y).sum()
            vx = (window * (x - mx) ** 2).sum()
            vy = (window * (y - my) ** 2).sum()
            cov = (window * (x - mx) * (y - my)).sum()
            values.append(
                ((2 * mx * my + c1) * (2 * cov + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
            )
    return float(np.mean(values))


def test_bt601_luma():
    rgb = np.array([[[0, 0, 0], [255, 255, 255], [255, 0, 0]]], np.uint8)
    y = rgb_to_y(rgb)
    np.testing.assert_allclose(y[0], [16.0, 235.0, 16 + 65.481], atol=1e-9)
    np.testing.assert_allclose(rgb_to_y(rgb / 255.0, data_range=1.0), y / 255.0, atol=1e-12)
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4, 1)
    np.testing.assert_array_equal(rgb_to_y(gray), gray[:, :, 0])  # gray is luma already
    with pytest.raises(UsageError):
        rgb_to_y(np.zeros((2, 2, 2)))


def test_gaussian_window():
    g = gaussian_window()
    assert g.shape == (11,) and math.isclose(g.sum(), 1.0)
    assert g.argmax() == 5 and np.allclose(g, g[::-1])


def test_psnr_known_values():
    a = np.zeros((10, 10, 3), np.uint8)
    assert psnr(a, a) == math.inf
    b = a + 1
    assert math.isclose(psnr(a, b), 20 * math.log10(255), rel_tol=1e-12)
    b2 = a.copy()
    b2[0, :, :] = 50  # only in the border
    assert psnr(a, b2, crop_border=1) == math.inf
    assert psnr(a, b2) < 30
    # On Y: an error of 10 in R only is 10 * 65.481 / 255 in Y.
    c = a.copy()
    c[..., 0] = 10
    expected = 10 * math.log10(255**2 / (10 * 65.481 / 255) ** 2)
    assert math.isclose(psnr(a, c, y_channel=True), expected, rel_tol=1e-12)


def test_metrics_reject_mismatched_or_tiny_inputs():
    a, b = random_pair()
    with pytest.raises(UsageError):
        psnr(a, b[:-1])
    with pytest.raises(UsageError):
        psnr(a, b, crop_border=20)
    with pytest.raises(UsageError):
        ssim(a[:8], b[:8])


def test_ssim_identical_is_one_and_symmetric():
    a, b = random_pair()
    assert math.isclose(ssim(a, a), 1.0, abs_tol=1e-12)
    assert math.isclose(ssim(a, b), ssim(b, a), rel_tol=1e-12)
    assert 0 < ssim(a, b) < 1


def test_ssim_matches_a_direct_implementation():
    a, b = random_pair((24, 27, 1), noise=20, seed=4)
    expected = direct_ssim(a[:, :, 0].astype(float), b[:, :, 0].astype(float))
    assert math.isclose(ssim(a, b), expected, rel_tol=1e-9)
    assert math.isclose(ssim(a[:, :, 0], b[:, :, 0]), expected, rel_tol=1e-9)


def test_ssim_of_colour_is_the_mean_over_channels():
    a, b = random_pair((30, 30, 3), noise=15, seed=5)
    per_channel = [ssim(a[:, :, c], b[:, :, c]) for c in range(3)]
    assert math.isclose(ssim(a, b), np.mean(per_channel), rel_tol=1e-12)


def test_ssim_on_y_with_border():
    a, b = random_pair((40, 36, 3), noise=10, seed=6)
    ya, yb = rgb_to_y(a), rgb_to_y(b)
    expected = direct_ssim(ya[3:-3, 3:-3], yb[3:-3, 3:-3])
    assert math.isclose(ssim(a, b, crop_border=3, y_channel=True), expected, rel_tol=1e-9)


def test_blocking_effect_factor_of_a_block_edge():
    # Two flat 8-column halves: one vertical block boundary with a step of 10, nothing else.
    image = np.zeros((16, 16), np.float64)
    image[:, 8:] = 10
    # Boundary pairs: 16 rows x 1 + 16 columns x 1 = 32, squared steps 16 x 100; no other
    # differences; scaled by log2(8) / log2(16).
    assert math.isclose(float(blocking_effect_factor(image)[0]), 0.75 * 1600 / 32)
    # A step between blocks' interiors is not blocking.
    shifted = np.zeros((16, 16))
    shifted[:, 5:] = 10
    assert float(blocking_effect_factor(shifted)[0]) == 0.0


def test_psnr_b_equals_psnr_without_blocking_and_is_lower_with_it():
    rng = np.random.default_rng(7)
    reference = rng.integers(60, 200, (64, 64)).astype(np.uint8)
    flat = np.full_like(reference, 128)  # no differences at all: BEF 0
    assert math.isclose(psnr_b(flat, reference), psnr(flat, reference), rel_tol=1e-12)
    smooth = (np.add.outer(np.arange(64), np.arange(64)) + 40).astype(np.uint8)
    blocky = jpeg_compress(smooth, 5)
    assert float(blocking_effect_factor(blocky)[0]) > 0
    assert psnr_b(blocky, smooth) < psnr(blocky, smooth)


def test_psnr_b_on_jpeg_images():
    rng = np.random.default_rng(8)
    coarse = rng.uniform(30, 220, (9, 9, 3))
    clean = np.clip(imresize(coarse, 8.0), 0, 255).round().astype(np.uint8)
    for quality in (10, 30):
        jpeg = jpeg_compress(clean, quality)
        assert psnr_b(jpeg, clean) <= psnr(jpeg, clean)
        value = psnr_b(jpeg, clean, y_channel=True)
        assert value <= psnr(jpeg, clean, y_channel=True)

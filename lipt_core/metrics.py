"""Image quality metrics as the restoration literature computes them (float64 numpy).

Conventions, those of the common SR evaluation code (EDSR/BasicSR/SwinIR, and the MATLAB
scripts they reproduce):

* Images are arrays in **0..255 units** (normally the ``uint8`` outputs: the protocol quantizes
  a restored image before scoring it), (H, W) or (H, W, C) with C = 1 or 3.
* ``y_channel=True`` scores the BT.601 luma of an RGB image, computed from the 0..255 values
  without rounding: ``Y = 16 + (65.481 R + 128.553 G + 24.966 B) / 255`` (Y in [16, 235]). A
  one-channel image is already luma and is scored as it is.
* ``crop_border=b`` drops b pixels from every border before scoring (SR: b = scale).
* PSNR uses the peak 255; with several channels, one MSE over all of them.
* SSIM is Wang et al. (2004): 11x11 gaussian window with sigma 1.5, K1 = 0.01, K2 = 0.03,
  L = 255, statistics over the 'valid' part only (no padding), the mean of the SSIM map; with
  several channels, the mean of the per-channel SSIMs.
* PSNR-B is Yim & Bovik (2011): the MSE plus the blocking effect factor of the *test* image on
  the 8x8 grid, so it is not symmetric: pass the restored (or compressed) image first.
"""

from __future__ import annotations

import numpy as np

from lipt_core.errors import UsageError

__all__ = [
    "BT601_Y",
    "blocking_effect_factor",
    "gaussian_window",
    "psnr",
    "psnr_b",
    "rgb_to_y",
    "ssim",
]

BT601_Y = (65.481, 128.553, 24.966)
"""ITU-R BT.601 luma weights for R, G, B in [0, 1], giving Y in 16..235 after the offset 16."""

_PEAK = 255.0


def rgb_to_y(image: np.ndarray, *, data_range: float = 255.0) -> np.ndarray:
    """The BT.601 luma (H, W) of an RGB image (H, W, 3), float64, not rounded.

    With the default ``data_range=255`` the RGB values are 0..255 and Y lies in [16, 235]
    (``16 + (65.481 R + 128.553 G + 24.966 B) / 255``); with ``data_range=1`` they are in
    [0, 1] and Y lies in [16/255, 235/255]. A gray image, (H, W) or (H, W, 1), is returned as
    it is: it is luma already.
    """
    array = np.asarray(image, dtype=np.float64)
    if array.ndim == 2:
        return array
    if array.ndim == 3 and array.shape[2] == 1:
        return array[:, :, 0]
    if array.ndim != 3 or array.shape[2] != 3:
        raise UsageError(f"expected an RGB image (H, W, 3), got shape {array.shape}")
    weights = np.asarray(BT601_Y, dtype=np.float64) / 255.0
    return array @ weights + 16.0 * data_range / 255.0


def _prepare(
    a: np.ndarray, b: np.ndarray, crop_border: int, y_channel: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Both images as float64 (H, W, C), luma if asked, borders cropped."""
    a = np.asarray(a)
    b = np.asarray(b)
    if a.shape != b.shape:
        raise UsageError(f"images differ in shape: {a.shape} and {b.shape}")
    if crop_border < 0:
        raise UsageError(f"crop_border must be >= 0, got {crop_border}")
    if y_channel:
        a, b = rgb_to_y(a), rgb_to_y(b)
    a = a.astype(np.float64, copy=False)
    b = b.astype(np.float64, copy=False)
    if a.ndim == 2:
        a, b = a[:, :, None], b[:, :, None]
    if crop_border:
        a = a[crop_border:-crop_border, crop_border:-crop_border]
        b = b[crop_border:-crop_border, crop_border:-crop_border]
    if a.size == 0:
        raise UsageError(f"nothing left to score after cropping {crop_border} pixels per border")
    return a, b


def _psnr_from_mse(mse: float) -> float:
    return float("inf") if mse == 0 else float(10.0 * np.log10(_PEAK**2 / mse))


def psnr(a: np.ndarray, b: np.ndarray, *, crop_border: int = 0, y_channel: bool = False) -> float:
    """Peak signal-to-noise ratio in dB of two images in 0..255 units (peak 255); inf if equal."""
    x, y = _prepare(a, b, crop_border, y_channel)
    return _psnr_from_mse(float(np.mean((x - y) ** 2)))


def gaussian_window(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    """The normalised 1-D gaussian of SSIM (its outer product is the 2-D window)."""
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2
    g = np.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def _filter_valid(image: np.ndarray, window: np.ndarray) -> np.ndarray:
    """Separable 'valid' correlation of (H, W, ...) with the outer product of `window`."""
    size = window.size
    height, width = image.shape[:2]
    rows = window[0] * image[: height - size + 1]
    for k in range(1, size):
        rows += window[k] * image[k : height - size + 1 + k]
    out = window[0] * rows[:, : width - size + 1]
    for k in range(1, size):
        out += window[k] * rows[:, k : width - size + 1 + k]
    return out


def ssim(a: np.ndarray, b: np.ndarray, *, crop_border: int = 0, y_channel: bool = False) -> float:
    """Structural similarity (Wang et al. 2004) of two images in 0..255 units.

    11x11 gaussian window (sigma 1.5), K1 = 0.01, K2 = 0.03, L = 255, 'valid' statistics, mean
    of the map; several channels: mean of the per-channel values. 1.0 for identical images.
    """
    x, y = _prepare(a, b, crop_border, y_channel)
    window = gaussian_window()
    if min(x.shape[:2]) < window.size:
        raise UsageError(f"SSIM needs at least {window.size}x{window.size} pixels after cropping")
    c1 = (0.01 * _PEAK) ** 2
    c2 = (0.03 * _PEAK) ** 2
    # The five local statistics of every channel, filtered in one pass.
    stats = _filter_valid(np.concatenate([x, y, x * x, y * y, x * y], axis=2), window)
    mu_x, mu_y, xx, yy, xy = np.split(stats, 5, axis=2)
    var_x = xx - mu_x**2
    var_y = yy - mu_y**2
    cov = xy - mu_x * mu_y
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / (
        (mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2)
    )
    return float(np.mean(ssim_map.mean(axis=(0, 1))))


def blocking_effect_factor(image: np.ndarray, *, block_size: int = 8) -> np.ndarray:
    """Yim & Bovik's blocking effect factor of each channel of `image` (0..255 units, (H, W, C)).

    The mean squared difference across the block boundaries of the `block_size` grid minus that
    across the other neighbour pairs (0 when not larger), times log2(block) / log2(min(H, W)).
    Returned in 0..255 units squared, one value per channel.
    """
    x = np.asarray(image, dtype=np.float64)
    if x.ndim == 2:
        x = x[:, :, None]
    height, width = x.shape[:2]
    dx = (x[:, 1:] - x[:, :-1]) ** 2  # neighbours (j, j + 1): boundaries at j = 7, 15, ...
    dy = (x[1:] - x[:-1]) ** 2
    on_x = (np.arange(width - 1) % block_size) == block_size - 1
    on_y = (np.arange(height - 1) % block_size) == block_size - 1
    boundary = dx[:, on_x].sum(axis=(0, 1)) + dy[on_y].sum(axis=(0, 1))
    other = dx[:, ~on_x].sum(axis=(0, 1)) + dy[~on_y].sum(axis=(0, 1))
    n_boundary = height * on_x.sum() + width * on_y.sum()
    n_other = height * (~on_x).sum() + width * (~on_y).sum()
    mean_boundary = boundary / max(n_boundary, 1)
    mean_other = other / max(n_other, 1)
    scaler = np.log2(block_size) / np.log2(min(height, width))
    bef = scaler * (mean_boundary - mean_other)
    return np.where(mean_boundary > mean_other, bef, 0.0)


def psnr_b(
    test: np.ndarray,
    reference: np.ndarray,
    *,
    crop_border: int = 0,
    y_channel: bool = False,
) -> float:
    """PSNR-B (Yim & Bovik 2011) in dB: PSNR with the MSE plus the blocking effect factor of
    `test` (the compressed or restored image; the argument order matters), per channel, then
    averaged over channels. Never above the PSNR of the same channel."""
    x, y = _prepare(test, reference, crop_border, y_channel)
    mse = np.mean((x - y) ** 2, axis=(0, 1))
    bef = blocking_effect_factor(x)
    values = [_psnr_from_mse(float(m + e)) for m, e in zip(mse, bef, strict=True)]
    return float(np.mean(values))

"""The degradations of the restoration benchmarks, exactly as their protocols make them.

Published numbers are only comparable under the published protocol, and small deviations cost
whole decibels (OpenCV's ``INTER_CUBIC`` instead of MATLAB's antialiased bicubic for the
low-resolution images costs 7-8 dB at x4). This module is numpy-only, so training can reuse it.

* **Super-resolution**: :func:`imresize` is MATLAB's ``imresize(A, scale, 'bicubic')``: cubic
  kernel with a = -0.5, antialiasing when shrinking (the kernel widened by 1/scale), MATLAB's
  symmetric boundary, the dimension with the smaller scale resized first, and, for ``uint8``
  input, a ``uint8`` result rounded half away from zero and saturated after each pass, as
  MATLAB's ``imresizemex`` does. :func:`bicubic_downscale` makes the standard LR images (EDSR
  benchmark, published tables): ``imresize(modcrop(HR), 1/scale)`` on the ``uint8`` HR.
* **Denoising**: :func:`add_gaussian_noise` adds white gaussian noise of standard deviation
  ``sigma`` (0..255 units) to an image in [0, 1], unclipped and unquantized, as the DnCNN /
  SwinIR test protocol does, from a seeded generator.
* **JPEG artifacts**: :func:`jpeg_compress` encodes with Pillow (libjpeg's standard tables
  scaled by quality, 4:2:0 chroma subsampling for colour, as OpenCV and most papers) and
  decodes again.

For training: :func:`sample_sigma` and :func:`sample_quality` draw random strengths, and every
function takes a ``numpy.random.Generator``.
"""

from __future__ import annotations

import io
import math
import zlib
from collections.abc import Sequence

import numpy as np
from PIL import Image as PILImage

from lipt_core.errors import UsageError

__all__ = [
    "add_gaussian_noise",
    "bicubic_downscale",
    "bicubic_upscale",
    "contributions",
    "cubic",
    "image_rng",
    "imresize",
    "jpeg_compress",
    "jpeg_encode",
    "modcrop",
    "resize_weights",
    "sample_quality",
    "sample_sigma",
    "to_uint8",
]


# ---------------------------------------------------------------------------------------------
# MATLAB imresize (bicubic)


def cubic(x: np.ndarray) -> np.ndarray:
    """Keys' cubic convolution kernel with a = -0.5, as MATLAB's ``imresize`` defines it."""
    absx = np.abs(x)
    absx2 = absx * absx
    absx3 = absx2 * absx
    return (1.5 * absx3 - 2.5 * absx2 + 1) * (absx <= 1) + (
        -0.5 * absx3 + 2.5 * absx2 - 4 * absx + 2
    ) * ((absx > 1) & (absx <= 2))


def contributions(
    in_length: int, out_length: int, scale: float, *, antialiasing: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """MATLAB ``imresize``'s ``contributions``: (weights, indices), both (out_length, taps).

    Output sample k is ``sum(weights[k] * input[indices[k]])``: ``u = x / scale + 0.5 * (1 -
    1 / scale)``, ``ceil(width) + 2`` taps from ``floor(u - width / 2)``, weights normalised to
    sum 1, 0-based indices beyond the edges folded back by MATLAB's symmetric boundary
    (``[1:n, n:-1:1]``, repeating), tap columns whose weights are all zero removed.
    """
    if in_length < 1 or out_length < 1:
        raise UsageError(f"cannot resize a length of {in_length} to {out_length}")
    kernel_width = 4.0
    if scale < 1 and antialiasing:
        kernel_width /= scale

        def kernel(x: np.ndarray) -> np.ndarray:
            return scale * cubic(scale * x)
    else:
        kernel = cubic
    x = np.arange(1, out_length + 1, dtype=np.float64)[:, None]
    u = x / scale + 0.5 * (1 - 1 / scale)
    left = np.floor(u - kernel_width / 2)
    taps = math.ceil(kernel_width) + 2
    indices = left + np.arange(taps, dtype=np.float64)[None, :]  # 1-based, as MATLAB
    weights = kernel(u - indices)
    weights /= weights.sum(axis=1, keepdims=True)
    mirror = np.concatenate([np.arange(in_length), np.arange(in_length - 1, -1, -1)])
    indices = mirror[np.mod(indices.astype(np.int64) - 1, mirror.size)]
    keep = np.any(weights != 0, axis=0)
    return weights[:, keep], indices[:, keep]


def resize_weights(
    in_length: int, out_length: int, scale: float, *, antialiasing: bool = True
) -> np.ndarray:
    """The dense (out_length, in_length) matrix of :func:`contributions`: resizing one axis is
    this matrix times the input (taps folded onto the same input sample add up)."""
    weights, indices = contributions(in_length, out_length, scale, antialiasing=antialiasing)
    matrix = np.zeros((out_length, in_length), dtype=np.float64)
    rows = np.broadcast_to(np.arange(out_length)[:, None], indices.shape)
    np.add.at(matrix, (rows, indices), weights)
    return matrix


def _resize_axis(
    image: np.ndarray, axis: int, out_length: int, scale: float, antialiasing: bool
) -> np.ndarray:
    """Resize float64 `image` along `axis`: a gather of the taps and a weighted sum."""
    weights, indices = contributions(
        image.shape[axis], out_length, scale, antialiasing=antialiasing
    )
    moved = np.moveaxis(image, axis, 0)
    flat = moved.reshape(moved.shape[0], -1)
    out = np.einsum("ot,otr->or", weights, flat[indices])
    return np.moveaxis(out.reshape((out_length, *moved.shape[1:])), 0, axis)


def _round_uint8(x: np.ndarray) -> np.ndarray:
    """MATLAB's conversion of doubles to uint8: round half away from zero, then saturate."""
    return np.clip(np.floor(x + 0.5), 0, 255).astype(np.uint8)


def imresize(
    image: np.ndarray,
    scale: float | None = None,
    *,
    output_shape: Sequence[int] | None = None,
    antialiasing: bool = True,
    round_each_pass: bool = True,
) -> np.ndarray:
    """MATLAB's ``imresize(image, scale, 'bicubic')`` (or to ``output_shape``, (height, width)).

    `image` is (H, W) or (H, W, C). The arithmetic is float64. A ``uint8`` image gives a ``uint8``
    result: MATLAB works class-preserving, so the intermediate image after the first axis is
    rounded (half away from zero) and saturated to ``uint8`` too (this reproduces the EDSR
    benchmark's X2/X3/X4 LR files bit for bit; its X8 files were made without that intermediate
    rounding: ``round_each_pass=False``). Any other dtype gives float64, neither rounded nor
    clipped. With `scale` alone the output is ``ceil(scale * size)``; with
    `output_shape` alone the scale of each axis is out / in; with both (the safest way to get
    an exact 1/3) the weights use `scale` and the size is `output_shape`, as in MATLAB.
    The axis with the smaller scale is resized first (height first on ties), as MATLAB does.
    """
    array = np.asarray(image)
    if array.ndim not in (2, 3):
        raise UsageError(f"imresize expects an (H, W) or (H, W, C) array, got {array.shape}")
    if scale is None and output_shape is None:
        raise UsageError("imresize needs a scale or an output shape")
    in_shape = array.shape[:2]
    if output_shape is None:
        assert scale is not None
        scales = (float(scale), float(scale))
        out_shape = tuple(math.ceil(scale * n) for n in in_shape)
    else:
        out_shape = tuple(int(n) for n in output_shape)
        if len(out_shape) != 2:
            raise UsageError(f"output_shape must be (height, width), got {output_shape}")
        scales = (
            (float(scale), float(scale))
            if scale is not None
            else (out_shape[0] / in_shape[0], out_shape[1] / in_shape[1])
        )
    if min(scales) <= 0 or min(out_shape) < 1:
        raise UsageError(f"cannot resize {in_shape} by {scale} to {out_shape}")
    as_uint8 = array.dtype == np.uint8
    out = array.astype(np.float64)
    order = sorted(range(2), key=lambda axis: scales[axis])  # stable: height first on ties
    for axis in order:
        if out_shape[axis] == out.shape[axis] and scales[axis] == 1:
            continue
        out = _resize_axis(out, axis, out_shape[axis], scales[axis], antialiasing)
        if as_uint8 and round_each_pass:
            out = _round_uint8(out).astype(np.float64)
    return _round_uint8(out) if as_uint8 else out


def modcrop(image: np.ndarray, scale: int) -> np.ndarray:
    """The top-left part of `image` whose height and width are multiples of `scale`."""
    height, width = image.shape[:2]
    cropped = image[: height - height % scale, : width - width % scale]
    if cropped.size == 0:
        raise UsageError(f"an image of {width}x{height} is smaller than the scale {scale}")
    return cropped


def bicubic_downscale(image: np.ndarray, scale: int) -> np.ndarray:
    """The standard low-resolution image: MATLAB ``imresize(modcrop(HR), 1/scale, 'bicubic')``.

    Give the ``uint8`` HR (as the published protocol does) to get the ``uint8`` LR of the
    benchmark tables; a float image gives the unquantized float64 result. The HR is mod-cropped
    to a multiple of `scale` first, so the LR is exactly 1/scale of it.
    """
    hr = modcrop(np.asarray(image), scale)
    shape = (hr.shape[0] // scale, hr.shape[1] // scale)
    return imresize(hr, 1.0 / scale, output_shape=shape)


def bicubic_upscale(image: np.ndarray, scale: int) -> np.ndarray:
    """MATLAB ``imresize(LR, scale, 'bicubic')``: the bicubic baseline of SR tables."""
    lr = np.asarray(image)
    shape = (lr.shape[0] * scale, lr.shape[1] * scale)
    return imresize(lr, float(scale), output_shape=shape)


# ---------------------------------------------------------------------------------------------
# Noise


def image_rng(seed: int, name: str) -> np.random.Generator:
    """A generator for one image: seeded with (seed, CRC-32 of its name), so an image gets the
    same noise whatever else is evaluated with it and in whatever order."""
    return np.random.default_rng([int(seed), zlib.crc32(name.encode("utf-8"))])


def add_gaussian_noise(
    image: np.ndarray,
    sigma: float,
    *,
    seed: int | None = None,
    rng: np.random.Generator | None = None,
    clip: bool = False,
) -> np.ndarray:
    """`image` (floats in [0, 1]) plus white gaussian noise of std ``sigma / 255``.

    `sigma` is in 0..255 units, as the literature quotes it (15, 25, 50). The result is float32,
    neither clipped nor quantized unless `clip` (the standard test protocol feeds the network
    the unclipped noisy image). Pass `seed` or a `rng` (exactly one) so the noise is reproducible.
    """
    if sigma < 0:
        raise UsageError(f"sigma must be >= 0, got {sigma}")
    if (seed is None) == (rng is None):
        raise UsageError("add_gaussian_noise needs exactly one of seed= and rng=")
    generator = rng if rng is not None else np.random.default_rng(seed)
    clean = np.asarray(image, dtype=np.float64)
    noisy = clean + generator.standard_normal(clean.shape) * (sigma / 255.0)
    if clip:
        noisy = np.clip(noisy, 0.0, 1.0)
    return noisy.astype(np.float32)


def sample_sigma(rng: np.random.Generator, low: float, high: float) -> float:
    """A noise level drawn uniformly from [low, high] (0..255 units), for blind training."""
    if not 0 <= low <= high:
        raise UsageError(f"need 0 <= low <= high for a sigma range, got {low}..{high}")
    return float(rng.uniform(low, high))


# ---------------------------------------------------------------------------------------------
# JPEG


def to_uint8(image: np.ndarray) -> np.ndarray:
    """An image in [0, 1] (float) as uint8, rounded half up and clipped; uint8 passes through."""
    array = np.asarray(image)
    if array.dtype == np.uint8:
        return array
    return np.clip(np.floor(array.astype(np.float64) * 255.0 + 0.5), 0, 255).astype(np.uint8)


def _as_pil(image: np.ndarray) -> PILImage.Image:
    samples = to_uint8(image)
    if samples.ndim == 3 and samples.shape[2] == 1:
        samples = samples[:, :, 0]
    if samples.ndim == 2:
        return PILImage.fromarray(np.ascontiguousarray(samples), mode="L")
    if samples.ndim == 3 and samples.shape[2] == 3:
        return PILImage.fromarray(np.ascontiguousarray(samples), mode="RGB")
    raise UsageError(f"JPEG needs a gray (H, W[, 1]) or RGB (H, W, 3) image, got {samples.shape}")


def _check_quality(quality: int) -> None:
    if not 1 <= int(quality) <= 100 or int(quality) != quality:
        raise UsageError(f"JPEG quality must be an integer in 1..100, got {quality}")


def jpeg_encode(image: np.ndarray, quality: int) -> bytes:
    """The JPEG file Pillow (libjpeg) writes for `image` at `quality` (standard IJG tables
    scaled by quality; 4:2:0 chroma subsampling for colour; baseline, not optimised).

    `image` is uint8, or floats in [0, 1] (rounded to uint8 first); gray or RGB."""
    _check_quality(quality)
    buffer = io.BytesIO()
    _as_pil(image).save(buffer, format="JPEG", quality=int(quality), subsampling=2)
    return buffer.getvalue()


def jpeg_compress(image: np.ndarray, quality: int) -> np.ndarray:
    """`image` after a JPEG round trip at `quality`, in the input's layout and convention:
    uint8 in gives uint8 out; floats in [0, 1] give float32 in [0, 1]."""
    array = np.asarray(image)
    with PILImage.open(io.BytesIO(jpeg_encode(array, quality))) as pil:
        decoded = np.asarray(pil.convert("L" if pil.mode == "L" else "RGB"))
    if array.ndim == 3 and decoded.ndim == 2:
        decoded = decoded[:, :, None]
    if array.dtype == np.uint8:
        return decoded
    return decoded.astype(np.float32) / 255.0


def sample_quality(rng: np.random.Generator, low: int, high: int, *, power: float = 1.0) -> int:
    """A JPEG quality drawn from the integers low..high, for blind training.

    `power` 1 draws uniformly; above 1 it favours the low qualities, where the artifacts are
    worst and a small model has the most to learn, without dropping the high ones: the quality
    is ``low + floor((high - low + 1) * u**power)`` for u uniform in [0, 1), so with 10..90 and
    power 2 half the draws fall at 30 or below (a quarter with power 1)."""
    _check_quality(low)
    _check_quality(high)
    if low > high:
        raise UsageError(f"need low <= high for a quality range, got {low}..{high}")
    if power <= 0:
        raise UsageError(f"the quality sampling power must be > 0, got {power}")
    if power == 1.0:
        return int(rng.integers(low, high + 1))
    offset = int((high - low + 1) * float(rng.random()) ** power)
    return low + min(offset, high - low)

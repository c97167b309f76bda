"""The benchmark degradations: MATLAB bicubic, gaussian noise, JPEG."""

import io
import math

import numpy as np
import pytest
from PIL import Image, JpegImagePlugin

from lipt_core.degradations import (
    add_gaussian_noise,
    bicubic_downscale,
    bicubic_upscale,
    contributions,
    cubic,
    image_rng,
    imresize,
    jpeg_compress,
    jpeg_encode,
    modcrop,
    resize_weights,
    sample_quality,
    sample_sigma,
    to_uint8,
)
from lipt_core.errors import UsageError
from lipt_core.imageio import IJG_LUMA

SET5 = ("baby", "bird", "butterfly", "head", "woman")

IJG_CHROMA = np.full((8, 8), 99)
IJG_CHROMA[:4, :4] = [[17, 18, 24, 47], [18, 21, 26, 66], [24, 26, 56, 99], [47, 66, 99, 99]]
IJG_CHROMA = IJG_CHROMA.ravel()


def ijg_table(base, quality):
    """libjpeg's jpeg_quality_scaling and jpeg_add_quant_table (baseline: clipped to 1..255)."""
    scale = 5000 // quality if quality < 50 else 200 - 2 * quality
    return np.clip((base * scale + 50) // 100, 1, 255)


def read_rgb(path):
    return np.asarray(Image.open(path).convert("RGB"))


def smooth_image(height=48, width=40, channels=3, seed=0):
    """A smooth-ish random uint8 image (random blocks, bicubically enlarged)."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0, 255, (height // 4 + 1, width // 4 + 1, channels))
    big = imresize(coarse, 4.0)[:height, :width]
    return np.clip(np.round(big), 0, 255).astype(np.uint8)


# ---------------------------------------------------------------------------------------------
# MATLAB imresize


def matlab_imresize_reference(image, out_shape, scale):
    """A direct, loop-by-loop transcription of MATLAB's imresize.m (bicubic, antialiasing),
    float in, float out: the oracle for the vectorised implementation."""

    def kernel_for(s):
        if s < 1:
            return (lambda x: s * cubic(s * x)), 4.0 / s
        return cubic, 4.0

    out = np.asarray(image, dtype=np.float64)
    order = [0, 1] if scale[0] <= scale[1] else [1, 0]
    for axis in order:
        n_in, n_out, s = out.shape[axis], out_shape[axis], scale[axis]
        h, width = kernel_for(s)
        moved = np.moveaxis(out, axis, 0)
        result = np.zeros((n_out, *moved.shape[1:]))
        for k in range(1, n_out + 1):
            u = k / s + 0.5 * (1 - 1 / s)
            left = math.floor(u - width / 2)
            taps = [left + j for j in range(math.ceil(width) + 2)]
            weights = np.array([float(h(np.array(u - t))) for t in taps])
            weights /= weights.sum()
            for t, w in zip(taps, weights, strict=True):
                i = t - 1  # 0-based; MATLAB's symmetric extension [1:n, n:-1:1]
                i %= 2 * n_in
                i = i if i < n_in else 2 * n_in - 1 - i
                result[k - 1] += w * moved[i]
        out = np.moveaxis(result, 0, axis)
    return out


def test_cubic_kernel_values():
    x = np.array([0.0, 0.5, 1.0, 1.5, 2.0, 2.5, -0.5])
    expected = [1.0, 0.5625, 0.0, -0.0625, 0.0, 0.0, 0.5625]
    np.testing.assert_allclose(cubic(x), expected, atol=1e-15)


@pytest.mark.parametrize(("n_in", "n_out", "scale"), [(12, 6, 0.5), (9, 3, 1 / 3), (5, 20, 4.0)])
def test_contributions_are_normalised_and_in_range(n_in, n_out, scale):
    weights, indices = contributions(n_in, n_out, scale)
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, atol=1e-12)
    assert indices.min() >= 0 and indices.max() < n_in
    np.testing.assert_allclose(resize_weights(n_in, n_out, scale).sum(axis=1), 1.0, atol=1e-12)


@pytest.mark.parametrize(
    ("shape", "out_shape"),
    [
        ((13, 11), (7, 6)),
        ((12, 9), (3, 3)),
        ((6, 5), (24, 20)),
        ((10, 8), (5, 16)),
        ((9, 12), (18, 4)),
    ],
)
def test_imresize_matches_a_direct_transcription_of_matlab(shape, out_shape):
    rng = np.random.default_rng(1)
    image = rng.uniform(0, 1, (*shape, 2))
    ours = imresize(image, output_shape=out_shape)
    scale = (out_shape[0] / shape[0], out_shape[1] / shape[1])
    reference = matlab_imresize_reference(image, out_shape, scale)
    np.testing.assert_allclose(ours, reference, atol=1e-12)


def test_imresize_shapes_dtypes_and_constants():
    flat = np.full((10, 7), 0.25)
    out = imresize(flat, 0.5)
    assert out.shape == (5, 4) and out.dtype == np.float64  # ceil(0.5 * 7) = 4, as MATLAB
    np.testing.assert_allclose(out, 0.25, atol=1e-12)
    gray8 = np.full((9, 9), 200, np.uint8)
    out8 = imresize(gray8, 1 / 3, output_shape=(3, 3))
    assert out8.dtype == np.uint8 and (out8 == 200).all()
    rgb = np.zeros((8, 6, 3))
    assert imresize(rgb, 2.0).shape == (16, 12, 3)


def test_imresize_rejects_bad_requests():
    with pytest.raises(UsageError):
        imresize(np.zeros((4, 4)))
    with pytest.raises(UsageError):
        imresize(np.zeros((2, 3, 4, 5)), 0.5)


def test_uint8_results_are_rounded_and_saturated():
    rng = np.random.default_rng(2)
    noise = rng.integers(0, 256, (16, 16, 3)).astype(np.uint8)  # overshoots both ends
    out = imresize(noise, 2.0)
    assert out.dtype == np.uint8 and (out == 0).any() and (out == 255).any()
    # Mid-range: no saturation, so one rounding per pass keeps it within one level.
    smooth = (smooth_image(seed=2) * 0.5 + 64).astype(np.uint8)
    exact = imresize(smooth.astype(np.float64), 0.5)
    assert exact.min() >= 0 and exact.max() <= 255
    assert np.abs(imresize(smooth, 0.5) - exact).max() <= 1.0


def test_modcrop_and_bicubic_shapes():
    image = smooth_image(50, 43)
    assert modcrop(image, 4).shape == (48, 40, 3)
    lr = bicubic_downscale(image, 4)
    assert lr.shape == (12, 10, 3) and lr.dtype == np.uint8
    assert bicubic_upscale(lr, 4).shape == (48, 40, 3)
    lr_float = bicubic_downscale(image / 255.0, 3)
    assert lr_float.dtype == np.float64 and lr_float.shape == (16, 14, 3)
    with pytest.raises(UsageError):
        modcrop(np.zeros((3, 3)), 4)


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_bicubic_lr_equals_the_shared_set5_lr_files(shared_dir, scale):
    """The EDSR-benchmark LR images (MATLAB imresize on the uint8 HR): within one grey level,
    as required, and in fact identical."""
    folder = shared_dir / "data" / "Set5"
    for name in SET5:
        hr = read_rgb(folder / "HR" / f"{name}.png")
        expected = read_rgb(folder / "LR_bicubic" / f"X{scale}" / f"{name}x{scale}.png")
        ours = bicubic_downscale(hr, scale)
        assert ours.shape == expected.shape, name
        difference = np.abs(ours.astype(int) - expected)
        assert difference.max() <= 1, name
        assert np.count_nonzero(difference) <= difference.size // 10_000, name


def test_the_shared_x8_lr_files_were_made_without_intermediate_rounding(shared_dir):
    folder = shared_dir / "data" / "Set5"
    for name in SET5:
        hr = modcrop(read_rgb(folder / "HR" / f"{name}.png"), 8)
        expected = read_rgb(folder / "LR_bicubic" / "X8" / f"{name}x8.png")
        shape = (hr.shape[0] // 8, hr.shape[1] // 8)
        ours = imresize(hr, 1 / 8, output_shape=shape, round_each_pass=False)
        assert np.abs(ours.astype(int) - expected).max() <= 1, name


def test_opencv_style_bicubic_is_not_the_protocol(shared_dir):
    """The degradation matters: no antialiasing (OpenCV's INTER_CUBIC-like) is far off."""
    hr = modcrop(read_rgb(shared_dir / "data" / "Set5" / "HR" / "baby.png"), 4)
    expected = read_rgb(shared_dir / "data" / "Set5" / "LR_bicubic" / "X4" / "babyx4.png")
    aliased = imresize(hr, 0.25, antialiasing=False)
    assert np.abs(aliased.astype(int) - expected).mean() > 1.0


# ---------------------------------------------------------------------------------------------
# Noise


def test_gaussian_noise_statistics():
    clean = np.full((256, 256, 3), 0.5, np.float32)
    noisy = add_gaussian_noise(clean, 25, seed=0)
    noise = (noisy.astype(np.float64) - clean) * 255
    assert noisy.dtype == np.float32 and noisy.shape == clean.shape
    assert abs(noise.std() - 25) < 0.25  # std error of the std: 25 / sqrt(2 N) = 0.04
    assert abs(noise.mean()) < 0.25
    # White: neighbouring samples uncorrelated.
    assert abs(np.corrcoef(noise[:, :-1].ravel(), noise[:, 1:].ravel())[0, 1]) < 0.02


def test_gaussian_noise_is_seeded_unclipped_and_optionally_clipped():
    clean = np.zeros((64, 64), np.float32)
    a = add_gaussian_noise(clean, 15, seed=3)
    assert np.array_equal(a, add_gaussian_noise(clean, 15, seed=3))
    assert not np.array_equal(a, add_gaussian_noise(clean, 15, seed=4))
    assert a.min() < 0  # unclipped, as the test protocol feeds it
    clipped = add_gaussian_noise(clean, 15, seed=3, clip=True)
    assert clipped.min() >= 0 and clipped.max() <= 1
    assert np.array_equal(add_gaussian_noise(clean, 0, seed=1), clean)
    rng = np.random.default_rng(3)
    assert np.array_equal(add_gaussian_noise(clean, 15, rng=rng), a)
    with pytest.raises(UsageError):
        add_gaussian_noise(clean, 15)
    with pytest.raises(UsageError):
        add_gaussian_noise(clean, -1, seed=0)


def test_per_image_generators():
    first = image_rng(0, "baby.png").standard_normal(4)
    assert np.array_equal(first, image_rng(0, "baby.png").standard_normal(4))
    assert not np.array_equal(first, image_rng(0, "bird.png").standard_normal(4))
    assert not np.array_equal(first, image_rng(1, "baby.png").standard_normal(4))


def test_random_strengths_for_training():
    rng = np.random.default_rng(0)
    sigmas = [sample_sigma(rng, 5, 50) for _ in range(200)]
    assert min(sigmas) >= 5 and max(sigmas) <= 50 and np.std(sigmas) > 5
    qualities = [sample_quality(rng, 10, 12) for _ in range(200)]
    assert set(qualities) == {10, 11, 12}
    with pytest.raises(UsageError):
        sample_sigma(rng, 10, 5)
    with pytest.raises(UsageError):
        sample_quality(rng, 0, 10)
    with pytest.raises(UsageError):
        sample_quality(rng, 10, 90, power=0)


def test_quality_power_favours_low_qualities_and_keeps_the_whole_range():
    rng = np.random.default_rng(0)
    uniform = np.array([sample_quality(rng, 10, 90) for _ in range(4000)])
    favoured = np.array([sample_quality(rng, 10, 90, power=2.0) for _ in range(4000)])
    assert uniform.min() == favoured.min() == 10 and uniform.max() == favoured.max() == 90
    # P(q <= 30) is 21/81 uniformly and sqrt(21/81) = 0.51 with power 2
    assert abs(np.mean(uniform <= 30) - 21 / 81) < 0.03
    assert abs(np.mean(favoured <= 30) - np.sqrt(21 / 81)) < 0.03
    assert set(np.unique(favoured)) == set(range(10, 91))


# ---------------------------------------------------------------------------------------------
# JPEG


@pytest.mark.parametrize("quality", [10, 40, 75, 95])
def test_jpeg_quality_is_applied(quality):
    """The file carries libjpeg's standard tables scaled from `quality` (the IJG formula)."""
    rgb = smooth_image()
    with Image.open(io.BytesIO(jpeg_encode(rgb, quality))) as jpeg:
        tables = jpeg.quantization
        assert JpegImagePlugin.get_sampling(jpeg) == 2  # 4:2:0
    assert sorted(tables) == [0, 1]
    np.testing.assert_array_equal(tables[0], ijg_table(IJG_LUMA, quality))
    np.testing.assert_array_equal(tables[1], ijg_table(IJG_CHROMA, quality))
    with Image.open(io.BytesIO(jpeg_encode(rgb[:, :, 0], quality))) as gray:
        assert gray.mode == "L" and sorted(gray.quantization) == [0]
        np.testing.assert_array_equal(gray.quantization[0], ijg_table(IJG_LUMA, quality))


def test_jpeg_compress_layouts_and_monotonic_quality():
    gray = smooth_image(channels=1)
    out = jpeg_compress(gray, 30)
    assert out.shape == gray.shape and out.dtype == np.uint8
    out2d = jpeg_compress(gray[:, :, 0], 30)
    assert out2d.shape == gray.shape[:2]
    as_float = jpeg_compress(gray / 255.0, 30)
    assert as_float.dtype == np.float32 and np.array_equal(to_uint8(as_float), out)
    rgb = smooth_image(seed=5)
    errors = [np.abs(jpeg_compress(rgb, q).astype(int) - rgb).mean() for q in (10, 50, 90)]
    assert errors[0] > errors[1] > errors[2] > 0
    with pytest.raises(UsageError):
        jpeg_compress(rgb, 0)
    with pytest.raises(UsageError):
        jpeg_compress(np.zeros((8, 8, 2), np.uint8), 50)


def test_to_uint8_rounds_half_up_and_clips():
    values = np.array([-0.1, 0.5 / 255, 1.49 / 255, 1.5 / 255, 1.2])
    assert to_uint8(values).tolist() == [0, 1, 1, 2, 255]

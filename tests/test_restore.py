"""The Restorer: colours, alpha, depth, metadata, tasks, devices, memory and precision fallbacks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from restore_helpers import pattern, srgb_icc, tiny_model

from lipt_core import create_model
from lipt_core.errors import UsageError
from lipt_core.imageio import Image
from lipt_core.restore import (
    JPEG_GRID,
    NonFiniteOutput,
    OutOfMemory,
    Restorer,
    activation_bytes_per_pixel,
    check_condition,
    cpu_has_native_bf16,
    dihedral_average,
    resolve_device,
    resolve_precision,
)


def _image(h=40, w=56, channels=3, **fields) -> Image:
    pixels = pattern(h, w, channels).astype(np.float32)
    return Image(pixels=pixels, mode="gray" if channels == 1 else "rgb", **fields)


def test_sr_output_size_depth_and_metadata_carried():
    icc, exif = srgb_icc(), b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\x00\x00"
    image = _image(bit_depth=16, icc_profile=icc, exif=exif, source_format="PNG")
    out = Restorer(tiny_model(scale=2), task="sr").restore(image)
    assert out.pixels.shape == (80, 112, 3) and out.pixels.dtype == np.float32
    assert out.bit_depth == 16 and out.mode == "rgb"
    assert out.icc_profile == icc and out.exif == exif and out.path is None
    assert out.pixels.min() >= 0.0 and out.pixels.max() <= 1.0


def test_restore_matches_the_model_on_the_pixel_range():
    model = tiny_model(scale=2)
    image = _image()
    out = Restorer(model, tile=0).restore(image)
    x = torch.from_numpy(image.pixels).permute(2, 0, 1)[None] * 255
    with torch.inference_mode():
        expected = (model(x) / 255).clamp(0, 1)[0].permute(1, 2, 0).numpy()
    assert np.allclose(out.pixels, expected, atol=1e-5)


def test_rgb_model_on_gray_input_gives_gray():
    model = tiny_model(scale=2)
    out = Restorer(model).restore(_image(channels=1))
    assert out.mode == "gray" and out.pixels.shape == (80, 112, 1)
    # the same as running the replicated image and taking its luma
    rgb = Restorer(model).restore(Image(pixels=np.repeat(_image(channels=1).pixels, 3, axis=2)))
    luma = rgb.pixels @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    assert np.allclose(out.pixels[..., 0], luma, atol=1e-5)


def test_gray_model_on_rgb_restores_luma_and_keeps_chroma():
    model = tiny_model(scale=1, colors=1)
    image = _image()
    out = Restorer(model, task="denoise").restore(image)
    assert out.mode == "rgb" and out.pixels.shape == image.pixels.shape
    weights = np.array([0.299, 0.587, 0.114], dtype=np.float32)
    # chroma (B - Y, R - Y) unchanged where nothing clipped
    y_in, y_out = image.pixels @ weights, out.pixels @ weights
    inside = (out.pixels > 0.01).all(axis=2) & (out.pixels < 0.99).all(axis=2)
    for c in (0, 2):
        diff = (out.pixels[..., c] - y_out) - (image.pixels[..., c] - y_in)
        assert np.abs(diff[inside]).max() < 1e-4
    gray = Restorer(model).restore(Image(pixels=y_in[..., None], mode="gray"))
    assert np.allclose(y_out[inside], gray.pixels[..., 0][inside], atol=1e-4)


def test_alpha_is_upscaled_for_sr_and_passed_through_otherwise():
    alpha = np.tile(np.linspace(0, 1, 56, dtype=np.float32), (40, 1))
    sr = Restorer(tiny_model(scale=2)).restore(_image(alpha=alpha))
    assert sr.alpha.shape == (80, 112) and sr.alpha.min() >= 0 and sr.alpha.max() <= 1
    assert abs(float(sr.alpha.mean()) - float(alpha.mean())) < 0.01
    denoised = Restorer(tiny_model(scale=1), task="denoise").restore(_image(alpha=alpha))
    assert np.array_equal(denoised.alpha, alpha)


def test_training_form_is_folded():
    model = tiny_model(scale=2, inference=False)
    restorer = Restorer(model)
    assert restorer.model.inference and restorer.info.form == "inference"


def test_task_and_scale_are_checked():
    with pytest.raises(UsageError, match="denoise weights, not sr"):
        Restorer(tiny_model(scale=1), {"task": "denoise"}, task="sr")
    with pytest.raises(UsageError, match="x1 model cannot do super-resolution"):
        Restorer(tiny_model(scale=1), task="sr")
    with pytest.raises(UsageError, match="x2 model is for super-resolution"):
        Restorer(tiny_model(scale=2), task="car")
    restorer = Restorer(tiny_model(scale=1), task="car")
    assert restorer.info.task == "car"


def test_sigma_and_quality_are_checked_against_the_metadata():
    info = Restorer(tiny_model(scale=1), {"task": "denoise", "sigma": "25"}).info
    assert check_condition(info, "sigma", 25) is None
    assert check_condition(info, "sigma", None) is None
    with pytest.raises(UsageError, match="noise level sigma 25, not 50"):
        check_condition(info, "sigma", 50)
    info = Restorer(tiny_model(scale=1), {"task": "car", "quality": "10-40"}).info
    assert check_condition(info, "quality", 20) is None
    with pytest.raises(UsageError, match="10 to 40"):
        check_condition(info, "quality", 90)
    blind = Restorer(tiny_model(scale=1), {"task": "denoise", "sigma": "blind"}).info
    assert check_condition(blind, "sigma", 70) is None


def test_devices_and_precisions():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type in ("cpu", "cuda", "mps")
    with pytest.raises(UsageError, match="unknown device"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(UsageError, match="CUDA is not available"):
            resolve_device("cuda:0")
    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu) == torch.float32
    assert resolve_precision("fp32", cpu) == torch.float32
    with pytest.raises(UsageError, match="needs a CUDA device"):
        resolve_precision("fp16", cpu)
    if cpu_has_native_bf16():
        assert resolve_precision("bf16", cpu) == torch.bfloat16
    else:
        with pytest.raises(UsageError, match="would be emulated"):
            resolve_precision("bf16", cpu)
    with pytest.raises(UsageError, match="unknown precision"):
        resolve_precision("fp8", cpu)


@pytest.mark.parametrize(
    ("machine", "avx512_bf16", "amx", "onednn", "native"),
    [
        # oneDNN says yes on any AVX-512 x86 CPU, where bf16 is emulated: it must not decide there.
        ("x86_64", False, False, True, False),
        ("x86_64", True, False, True, True),
        ("AMD64", False, True, True, True),
        ("aarch64", False, False, True, True),
        ("aarch64", False, False, False, False),
    ],
)
def test_native_bf16_on_x86_needs_avx512_bf16_or_amx(
    monkeypatch, machine, avx512_bf16, amx, onednn, native
):
    monkeypatch.setattr("lipt_core.restore.platform.machine", lambda: machine)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
    onednn_ops = torch.ops.mkldnn
    monkeypatch.setattr(onednn_ops, "_is_mkldnn_bf16_supported", lambda: onednn, raising=False)
    assert cpu_has_native_bf16() is native
    if not native:
        with pytest.raises(UsageError, match="would be emulated"):
            resolve_precision("bf16", torch.device("cpu"))


@pytest.mark.skipif(not cpu_has_native_bf16(), reason="this CPU has no native bf16")
def test_cpu_bf16_is_mixed_precision_close_to_fp32():
    image = _image()
    model = tiny_model(scale=2, channels=16, num_stages=4)
    exact = Restorer(model, precision="fp32").restore(image).pixels
    restorer = Restorer(model, precision="bf16")
    assert restorer.precision == "bf16"
    fast = restorer.restore(image).pixels
    assert fast.dtype == np.float32
    difference = np.abs(fast - exact)
    # bf16 keeps 8 significant bits: a grey level or so where fp32 is exact, never more.
    assert 0 < difference.mean() < 0.5 / 255 and difference.max() < 4 / 255


def test_dihedral_average_turns_each_estimate_back():
    x = torch.rand(2, 3, 5, 7)
    upscale = lambda t: t.repeat_interleave(2, -2).repeat_interleave(2, -1)  # noqa: E731
    # an equivariant function is its own average
    assert torch.allclose(dihedral_average(upscale, x), upscale(x))

    # a column ramp seen in the 8 orientations: widths 7 and 5, so its mean is (6 + 4) / 4
    def add_column_index(t):
        return t + torch.arange(t.shape[-1], dtype=t.dtype)

    average = dihedral_average(add_column_index, x)
    assert average.shape == x.shape
    assert torch.allclose(average, x + 2.5, atol=1e-6)


def test_dihedral_average_keeps_a_block_grid_in_place():
    x = torch.rand(1, 1, 6, 7)

    def mark_block_edges(t):
        # responds to the first and last row and column of each 4-px block from the top-left,
        # as a JPEG network responds to its 8x8 block edges
        def edge(size):
            index = torch.arange(size) % 4
            return ((index == 0) | (index == 3)).to(t.dtype)

        return t + edge(t.shape[-2])[:, None] + edge(t.shape[-1])[None, :]

    expected = mark_block_edges(x)
    aligned = dihedral_average(mark_block_edges, x, align=4)
    assert aligned.shape == x.shape
    assert torch.allclose(aligned, expected, atol=1e-6)
    # without the alignment, flipping 6 rows and 7 columns moves the edges
    assert (dihedral_average(mark_block_edges, x) - expected).abs().max() > 0.2


def test_ensemble_averages_the_model_over_flips_and_rotations():
    model = tiny_model(scale=2)
    image = _image(h=24, w=40)
    plain = Restorer(model, tile=0).restore(image).pixels
    restorer = Restorer(model, tile=0, ensemble=True)
    assert restorer.describe()["ensemble"] is True
    averaged = restorer.restore(image).pixels
    x = torch.from_numpy(image.pixels).permute(2, 0, 1)[None] * 255
    with torch.inference_mode():
        expected = dihedral_average(model, x).div(255).clamp(0, 1)[0].permute(1, 2, 0).numpy()
    assert np.allclose(averaged, expected, atol=1e-5)
    # a random network is far from equivariant: the ensemble is another result
    assert np.abs(averaged - plain).mean() > 1e-3
    # tiled: each tile averaged, then blended as without the ensemble
    tiled = Restorer(model, tile=16, tile_overlap=8, ensemble=True).restore(image).pixels
    assert np.abs(tiled - averaged).max() < 0.05


def test_car_ensemble_keeps_the_jpeg_grid():
    model = tiny_model(scale=1)
    image = _image(h=20, w=30)  # neither side a multiple of 16
    averaged = Restorer(model, task="car", tile=0, ensemble=True).restore(image).pixels
    x = torch.from_numpy(image.pixels).permute(2, 0, 1)[None] * 255
    with torch.inference_mode():
        aligned = dihedral_average(model, x, align=JPEG_GRID)
        unaligned = dihedral_average(model, x)
    as_image = lambda t: t.div(255).clamp(0, 1)[0].permute(1, 2, 0).numpy()  # noqa: E731
    assert np.allclose(averaged, as_image(aligned), atol=1e-5)
    assert np.abs(averaged - as_image(unaligned)).mean() > 1e-4


def test_tile_options_are_validated():
    model = tiny_model(scale=2)
    assert Restorer(model, tile=100).tile == 96  # down to a multiple of the window
    assert Restorer(model, tile=0).tile is None
    assert Restorer(model).tile_overlap == 32  # 4 windows of 8
    assert Restorer(model, tile=128).tile_overlap == 32
    assert Restorer(model, tile=64).tile_overlap == 16  # a quarter of a small tile
    assert Restorer(model, tile=16).tile_overlap == 8
    with pytest.raises(UsageError):
        Restorer(model, tile=4)
    with pytest.raises(UsageError, match="overlap"):
        Restorer(model, tile=64, tile_overlap=60)


def test_auto_tile_follows_the_memory_budget(monkeypatch):
    model = tiny_model(scale=2)
    restorer = Restorer(model)
    per_pixel = restorer.bytes_per_pixel
    restorer.memory_budget = 10_000 * per_pixel
    assert restorer.tile_for(50, 50) is None  # 2500 pixels fit: whole image
    tile = restorer.tile_for(1000, 1000)
    assert tile is not None and tile % 8 == 0 and (tile + 8) ** 2 <= 10_000
    # from the RAM available when no budget is given
    restorer.memory_budget = None
    import lipt_core.restore as restore_module

    monkeypatch.setattr(restore_module, "available_memory", lambda device: 2 * 64 * 64 * per_pixel)
    assert restorer.tile_for(2000, 2000) < 128
    monkeypatch.setattr(restore_module, "available_memory", lambda device: 1 << 40)
    # the CPU cap keeps tiles bounded even with plenty of RAM
    assert restorer.tile_for(20000, 20000) ** 2 * per_pixel <= restore_module.CPU_MEMORY_CAP


def test_activation_estimate_grows_with_the_model():
    small = activation_bytes_per_pixel(create_model("lipt-tiny", scale=4, inference=True))
    base = activation_bytes_per_pixel(create_model("lipt-small", scale=4, inference=True))
    assert 0 < small < base


def test_out_of_memory_retries_with_smaller_tiles():
    model = tiny_model(scale=2)
    warnings = []
    restorer = Restorer(model, tile=0, on_warning=warnings.append)
    real = model.forward
    seen = []

    def forward(x):
        seen.append(tuple(x.shape[-2:]))
        if x.shape[-2] * x.shape[-1] > 80 * 80:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")
        return real(x)

    model.forward = forward
    image = _image(150, 140)
    out = restorer.restore(image)
    assert out.pixels.shape == (300, 280, 3)
    assert any("retrying with" in w for w in warnings)
    assert max(h * w for h, w in seen[-4:]) <= 80 * 80
    reference = Restorer(tiny_model(scale=2), tile=72, tile_overlap=32).restore(image)
    assert np.abs(out.pixels - reference.pixels).max() < 1e-4
    # the smaller tile sticks for later images
    seen.clear()
    restorer.restore(image)
    assert all(h * w <= 80 * 80 for h, w in seen)


def test_out_of_memory_at_the_floor_is_a_clear_error():
    model = tiny_model(scale=2)
    restorer = Restorer(model)

    def forward(x):
        raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate")

    model.forward = forward
    with pytest.raises(OutOfMemory, match="out of memory on cpu even with"):
        restorer.restore(_image(300, 300))


def test_non_finite_tile_is_redone_in_fp32(monkeypatch):
    model = tiny_model(scale=2)
    warnings = []
    restorer = Restorer(model, on_warning=warnings.append)
    restorer.dtype = torch.bfloat16  # CPU autocast stands in for CUDA half precision here
    real = model.forward

    def forward(x):
        y = real(x)
        if torch.is_autocast_enabled("cpu"):
            y = y.clone()
            y[..., 0, 0] = float("nan")
        return y

    model.forward = forward
    out = restorer.restore(_image())
    assert np.isfinite(out.pixels).all()
    assert warnings and "redone in fp32" in warnings[0]
    expected = Restorer(tiny_model(scale=2)).restore(_image())
    assert np.abs(out.pixels - expected.pixels).max() < 1e-5


def test_non_finite_in_fp32_is_an_error():
    model = tiny_model(scale=2)
    with torch.no_grad():
        model.tail.bias.fill_(float("nan"))
    with pytest.raises(NonFiniteOutput):
        Restorer(model).restore(_image())


def test_from_weights_reads_metadata(tmp_path):
    from restore_helpers import tiny_weights

    path = tiny_weights(tmp_path / "d.safetensors", task="denoise", scale=1, sigma="15-50")
    restorer = Restorer.from_weights(path, task="denoise")
    assert restorer.info.task == "denoise" and restorer.info.sigma == "15-50"
    assert restorer.describe()["device"] == "cpu" or torch.cuda.is_available()
    with pytest.raises(UsageError, match="denoise weights, not car"):
        Restorer.from_weights(path, task="car")

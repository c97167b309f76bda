"""Tests for lipt_core.imageio: lossless round trips, metadata, orientation, bad inputs."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image as PILImage
from PIL import ImageCms, ImageOps

from lipt_core import imageio as lio
from lipt_core.errors import InputError, UsageError

from helpers import new_file_mode

# ------------------------------------------------------------------------------------------
# Test images
# ------------------------------------------------------------------------------------------


def _pattern(h: int = 48, w: int = 64, channels: int = 3) -> np.ndarray:
    """Float pattern in [0, 1]: gradients, hard-edged 'text' strokes and a little noise."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    base = [xx / (w - 1), yy / (h - 1), 0.5 + 0.5 * np.sin(xx / 5.0) * np.cos(yy / 7.0)]
    img = np.stack(base[:channels], axis=-1)
    strokes = ((xx.astype(int) // 3) % 4 == 0) & ((yy.astype(int) // 6) % 3 == 0)
    img[strokes] = 0.05
    img += np.random.default_rng(h * 10_000 + w * 10 + channels).normal(0.0, 0.01, img.shape)
    return np.clip(img, 0.0, 1.0)


def _u8(h: int = 48, w: int = 64, channels: int = 3) -> np.ndarray:
    return np.rint(_pattern(h, w, channels) * 255).astype(np.uint8)


def _gray8(h: int = 48, w: int = 64) -> np.ndarray:
    return _u8(h, w, 1)[:, :, 0]


def _u16(h: int = 48, w: int = 64, channels: int = 3) -> np.ndarray:
    arr = np.rint(_pattern(h, w, channels) * 65535).astype(np.uint16)
    arr[0, 0] = 1  # values that 8 bits cannot hold
    arr[0, 1] = 65534
    return arr


def _as_u8(img: lio.Image) -> np.ndarray:
    return np.rint(img.pixels * 255).astype(np.uint8)


def _as_u16(img: lio.Image) -> np.ndarray:
    return np.rint(img.pixels * 65535).astype(np.uint16)


def _srgb_icc() -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def _exif_bytes(orientation: int | None = None, make: str = "LiptCam") -> bytes:
    exif = PILImage.Exif()
    exif[0x010F] = make  # Make
    if orientation is not None:
        exif[0x0112] = orientation
    exif.get_ifd(0x8769)[0x9003] = "2024:01:02 03:04:05"  # DateTimeOriginal
    return exif.tobytes()


def _file_orientation(path: Path) -> int:
    with PILImage.open(path) as im:
        return int(im.getexif().get(0x0112, 1))


# The stored pixels for orientation o are the upright image transformed by the inverse of o.
_INVERSE = {
    1: None,
    2: PILImage.Transpose.FLIP_LEFT_RIGHT,
    3: PILImage.Transpose.ROTATE_180,
    4: PILImage.Transpose.FLIP_TOP_BOTTOM,
    5: PILImage.Transpose.TRANSPOSE,
    6: PILImage.Transpose.ROTATE_90,  # undone by a 90-degree clockwise turn
    7: PILImage.Transpose.TRANSVERSE,
    8: PILImage.Transpose.ROTATE_270,
}


def _stored_for(upright: PILImage.Image, orientation: int) -> PILImage.Image:
    method = _INVERSE[orientation]
    return upright.copy() if method is None else upright.transpose(method)


# ------------------------------------------------------------------------------------------
# Lossless round trips
# ------------------------------------------------------------------------------------------


def test_png_8bit_rgb_round_trip_exact(tmp_path: Path) -> None:
    src = _u8()
    PILImage.fromarray(src).save(tmp_path / "in.png")
    img = lio.read_image(tmp_path / "in.png")
    assert (img.mode, img.bit_depth, img.source_format, img.alpha) == ("rgb", 8, "PNG", None)
    assert img.pixels.dtype == np.float32 and img.pixels.shape == (48, 64, 3)
    np.testing.assert_array_equal(_as_u8(img), src)
    lio.write_image(img, tmp_path / "out.png")
    np.testing.assert_array_equal(np.asarray(PILImage.open(tmp_path / "out.png")), src)
    np.testing.assert_array_equal(lio.read_image(tmp_path / "out.png").pixels, img.pixels)


def test_png_16bit_rgb_round_trip_exact(tmp_path: Path) -> None:
    src = _u16()
    cv2.imwrite(str(tmp_path / "in.png"), src[:, :, ::-1])
    img = lio.read_image(tmp_path / "in.png")
    assert (img.mode, img.bit_depth) == ("rgb", 16)
    np.testing.assert_array_equal(_as_u16(img), src)
    lio.write_image(img, tmp_path / "out.png")
    raw = cv2.imread(str(tmp_path / "out.png"), cv2.IMREAD_UNCHANGED)
    assert raw.dtype == np.uint16
    np.testing.assert_array_equal(raw[:, :, ::-1], src)
    back = lio.read_image(tmp_path / "out.png")
    assert back.bit_depth == 16
    np.testing.assert_array_equal(back.pixels, img.pixels)


def test_png_16bit_gray_round_trip_exact(tmp_path: Path) -> None:
    src = _u16(channels=1)[:, :, 0]
    PILImage.fromarray(src).save(tmp_path / "in.png")  # Pillow writes I;16 gray PNG
    img = lio.read_image(tmp_path / "in.png")
    assert (img.mode, img.bit_depth, img.pixels.shape) == ("gray", 16, (48, 64, 1))
    np.testing.assert_array_equal(_as_u16(img)[:, :, 0], src)
    lio.write_image(img, tmp_path / "out.png")
    raw = cv2.imread(str(tmp_path / "out.png"), cv2.IMREAD_UNCHANGED)
    assert raw.dtype == np.uint16 and raw.ndim == 2
    np.testing.assert_array_equal(raw, src)
    back = lio.read_image(tmp_path / "out.png")
    assert (back.mode, back.bit_depth) == ("gray", 16)
    np.testing.assert_array_equal(back.pixels, img.pixels)


@pytest.mark.parametrize("channels", [1, 3])
def test_png_16bit_with_alpha_round_trip_exact(tmp_path: Path, channels: int) -> None:
    color = _u16(channels=channels).astype(np.float32) / 65535
    alpha = _u16(channels=1)[:, :, 0].astype(np.float32)[::-1] / 65535
    mode = "gray" if channels == 1 else "rgb"
    img = lio.Image(pixels=color, alpha=alpha, bit_depth=16, mode=mode)
    lio.write_image(img, tmp_path / "out.png")
    colour_type = (tmp_path / "out.png").read_bytes()[25]  # IHDR: 4 gray+alpha, 6 RGBA
    assert (colour_type, (tmp_path / "out.png").read_bytes()[24]) == (
        4 if channels == 1 else 6,
        16,
    )
    back = lio.read_image(tmp_path / "out.png")
    assert (back.mode, back.bit_depth) == (mode, 16)
    np.testing.assert_array_equal(_as_u16(back), np.rint(color * 65535).astype(np.uint16))
    np.testing.assert_array_equal(back.alpha, img.alpha)


def test_rgba_png_alpha_preserved(tmp_path: Path) -> None:
    rgba = np.dstack([_u8(), _gray8()[::-1, ::-1]])
    PILImage.fromarray(rgba).save(tmp_path / "in.png")
    img = lio.read_image(tmp_path / "in.png")
    assert img.mode == "rgb" and img.alpha is not None and img.alpha.dtype == np.float32
    np.testing.assert_array_equal(np.rint(img.alpha * 255).astype(np.uint8), rgba[:, :, 3])
    lio.write_image(img, tmp_path / "out.png")
    np.testing.assert_array_equal(np.asarray(PILImage.open(tmp_path / "out.png")), rgba)


def test_la_png_is_gray_plus_alpha(tmp_path: Path) -> None:
    la = np.dstack([_gray8(), _gray8()[::-1]])
    PILImage.fromarray(la).save(tmp_path / "la.png")
    img = lio.read_image(tmp_path / "la.png")
    assert img.mode == "gray" and img.alpha is not None
    np.testing.assert_array_equal(_as_u8(img)[:, :, 0], la[:, :, 0])
    lio.write_image(img, tmp_path / "out.png")
    assert PILImage.open(tmp_path / "out.png").mode == "LA"


def test_palette_png_with_transparency(tmp_path: Path) -> None:
    idx = (np.arange(48 * 64).reshape(48, 64) // 7 % 4).astype(np.uint8)
    pal = PILImage.fromarray(idx, mode="L").convert("P")
    palette = [255, 0, 0, 0, 255, 0, 0, 0, 255, 10, 20, 30]
    pal.putpalette(palette + [0] * (768 - len(palette)))
    pal.save(tmp_path / "pal.png", transparency=2)
    img = lio.read_image(tmp_path / "pal.png")
    assert img.mode == "rgb" and img.bit_depth == 8 and img.alpha is not None
    expected = np.array(palette, np.uint8).reshape(4, 3)[idx]
    np.testing.assert_array_equal(_as_u8(img), expected)
    np.testing.assert_array_equal(img.alpha, np.where(idx == 2, 0.0, 1.0).astype(np.float32))


def test_palette_png_without_transparency_is_rgb(tmp_path: Path) -> None:
    PILImage.fromarray(_u8()).convert("P").save(tmp_path / "p.png")
    img = lio.read_image(tmp_path / "p.png")
    assert img.mode == "rgb" and img.alpha is None


def test_bilevel_is_gray_8bit(tmp_path: Path) -> None:
    PILImage.fromarray(_gray8()).convert("1").save(tmp_path / "bw.png")
    img = lio.read_image(tmp_path / "bw.png")
    assert (img.mode, img.bit_depth) == ("gray", 8)
    assert set(np.unique(img.pixels)) <= {0.0, 1.0}


def test_gray_jpeg_stays_gray(tmp_path: Path) -> None:
    PILImage.fromarray(_gray8()).save(tmp_path / "g.jpg", quality=95)
    img = lio.read_image(tmp_path / "g.jpg")
    assert (img.mode, img.pixels.shape, img.source_format) == ("gray", (48, 64, 1), "JPEG")
    lio.write_image(img, tmp_path / "out.jpg")
    assert PILImage.open(tmp_path / "out.jpg").mode == "L"
    lio.write_image(img, tmp_path / "out.png")
    assert PILImage.open(tmp_path / "out.png").mode == "L"


def test_cmyk_jpeg_becomes_rgb(tmp_path: Path) -> None:
    cmyk = np.zeros((32, 32, 4), np.uint8)
    cmyk[:, :16] = (0, 255, 255, 0)  # red
    cmyk[:, 16:] = (255, 255, 0, 0)  # blue
    PILImage.fromarray(cmyk, mode="CMYK").save(tmp_path / "cmyk.jpg", quality=95)
    img = lio.read_image(tmp_path / "cmyk.jpg")
    assert img.mode == "rgb" and img.pixels.shape == (32, 32, 3)
    assert np.allclose(img.pixels[16, 4], (1, 0, 0), atol=0.05)
    assert np.allclose(img.pixels[16, 28], (0, 0, 1), atol=0.05)


def test_cmyk_with_unusable_profile_falls_back_and_drops_it(tmp_path: Path) -> None:
    cmyk = np.full((16, 16, 4), (0, 255, 255, 0), np.uint8)
    PILImage.fromarray(cmyk, mode="CMYK").save(tmp_path / "c.jpg", icc_profile=_srgb_icc())
    img = lio.read_image(tmp_path / "c.jpg")  # an RGB profile on CMYK data
    assert img.mode == "rgb" and img.icc_profile is None
    assert np.allclose(img.pixels[8, 8], (1, 0, 0), atol=0.05)


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("with_alpha", [False, True])
def test_tiff_round_trips_8_and_16_bit(tmp_path: Path, channels: int, with_alpha: bool) -> None:
    mode = "gray" if channels == 1 else "rgb"
    alpha = _pattern(channels=1)[:, :, 0][::-1] if with_alpha else None
    for bits in (8, 16):
        src = lio.Image(pixels=_pattern(channels=channels), alpha=alpha, bit_depth=bits, mode=mode)
        target = tmp_path / f"out{bits}.tif"
        lio.write_image(src, target)
        back = lio.read_image(target)
        # 16-bit gray+alpha goes out as RGBA: no common reader takes a 2-sample 16-bit TIFF.
        widened = bits == 16 and with_alpha and channels == 1
        assert (back.mode, back.bit_depth, back.source_format) == (
            "rgb" if widened else mode,
            bits,
            "TIFF",
        )
        q = lio._quantize
        expected = np.repeat(src.pixels, 3, axis=2) if widened else src.pixels
        np.testing.assert_array_equal(q(back.pixels, bits), q(expected, bits))
        if with_alpha:
            np.testing.assert_array_equal(q(back.alpha, bits), q(src.alpha, bits))
        else:
            assert back.alpha is None
        raw = cv2.imread(str(target), cv2.IMREAD_UNCHANGED)  # a second, independent reader
        assert raw.dtype == (np.uint8 if bits == 8 else np.uint16)


def _plain_tiff(samples: np.ndarray, photometric: int, extra_samples: int = 0) -> bytes:
    """An uncompressed little-endian TIFF written by hand (an independent writer)."""
    import struct

    height, width, spp = samples.shape
    data = samples.astype("<u2").tobytes()
    entries = [
        (256, 4, 1, width),
        (257, 4, 1, height),
        (258, 3, 1, 16),  # one value: fine while spp <= 2 fits the entry
        (259, 3, 1, 1),
        (262, 3, 1, photometric),
        (273, 4, 1, 0),  # patched below
        (277, 3, 1, spp),
        (278, 4, 1, height),
        (279, 4, 1, len(data)),
    ]
    if extra_samples:
        entries.append((338, 3, 1, extra_samples))
    ifd_size = 2 + 12 * len(entries) + 4
    bits_offset = 8 + ifd_size
    data_offset = bits_offset + 2 * spp
    out = bytearray(b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", len(entries)))
    for tag, typ, count, value in entries:
        if tag == 258:
            out += struct.pack("<HHII", tag, typ, spp, bits_offset if spp > 2 else 16 | 16 << 16)
        elif tag == 273:
            out += struct.pack("<HHII", tag, typ, count, data_offset)
        elif typ == 3:
            out += struct.pack("<HHIHH", tag, typ, count, value, 0)
        else:
            out += struct.pack("<HHII", tag, typ, count, value)
    out += struct.pack("<I", 0) + struct.pack("<" + "H" * spp, *([16] * spp)) + data
    return bytes(out)


def test_tiff_16bit_gray_alpha_refused_rather_than_truncated(tmp_path: Path) -> None:
    la = np.dstack([_u16(channels=1), _u16(channels=1)[::-1]])
    (tmp_path / "la16.tif").write_bytes(_plain_tiff(la, photometric=1, extra_samples=2))
    with pytest.raises(InputError, match=r"la16\.tif.*16-bit"):
        lio.read_image(tmp_path / "la16.tif")
    rgb = _u16()
    (tmp_path / "rgb16.tif").write_bytes(_plain_tiff(rgb, photometric=2))
    np.testing.assert_array_equal(_as_u16(lio.read_image(tmp_path / "rgb16.tif")), rgb)


def test_tiff_16bit_read_written_by_opencv(tmp_path: Path) -> None:
    src = _u16()
    cv2.imwrite(str(tmp_path / "in.tif"), src[:, :, ::-1])
    img = lio.read_image(tmp_path / "in.tif")
    assert (img.mode, img.bit_depth) == ("rgb", 16)
    np.testing.assert_array_equal(_as_u16(img), src)


def test_tiff_gray_16bit_read_by_pillow(tmp_path: Path) -> None:
    src = _u16(channels=1)[:, :, 0]
    PILImage.fromarray(src).save(tmp_path / "g16.tif")
    img = lio.read_image(tmp_path / "g16.tif")
    assert (img.mode, img.bit_depth) == ("gray", 16)
    np.testing.assert_array_equal(_as_u16(img)[:, :, 0], src)


def test_float_tiff_kept_in_float_and_clipped(tmp_path: Path) -> None:
    src = _pattern().astype(np.float32)
    src[0, 0] = (1.5, -0.25, 0.5)
    cv2.imwrite(str(tmp_path / "f.tif"), src[:, :, ::-1])  # Pillow cannot open float RGB
    img = lio.read_image(tmp_path / "f.tif")
    assert (img.mode, img.bit_depth) == ("rgb", 16)
    np.testing.assert_array_equal(img.pixels[0, 0], np.float32([1.0, 0.0, 0.5]))
    np.testing.assert_array_equal(img.pixels[1:], src[1:])
    gray = src[:, :, 1].copy()
    PILImage.fromarray(gray, mode="F").save(tmp_path / "fg.tif")
    img = lio.read_image(tmp_path / "fg.tif")
    assert (img.mode, img.bit_depth) == ("gray", 16)
    np.testing.assert_allclose(img.pixels[:, :, 0], np.clip(gray, 0, 1))


def test_multi_page_tiff_refused(tmp_path: Path) -> None:
    frames = [PILImage.fromarray(_u8()) for _ in range(3)]
    frames[0].save(tmp_path / "pages.tif", save_all=True, append_images=frames[1:])
    with pytest.raises(InputError, match=r"pages\.tif.*3 pages"):
        lio.read_image(tmp_path / "pages.tif")


def test_webp_round_trip_keeps_alpha(tmp_path: Path) -> None:
    rgba = np.dstack([_u8(), _gray8()[::-1]])
    PILImage.fromarray(rgba).save(tmp_path / "in.webp", lossless=True, exact=True)
    img = lio.read_image(tmp_path / "in.webp")
    assert img.source_format == "WEBP" and img.alpha is not None
    np.testing.assert_array_equal(_as_u8(img), rgba[:, :, :3])
    lio.write_image(img, tmp_path / "out.webp", quality=90)
    back = lio.read_image(tmp_path / "out.webp")
    assert back.alpha is not None and back.mode == "rgb"
    assert np.abs(back.pixels - img.pixels).mean() < 0.03
    assert np.abs(back.alpha - img.alpha).mean() < 0.01


def test_webp_from_gray_has_three_equal_channels(tmp_path: Path) -> None:
    img = lio.Image(pixels=_pattern(channels=1), mode="gray")
    lio.write_image(img, tmp_path / "g.webp")
    back = lio.read_image(tmp_path / "g.webp")
    assert back.mode == "rgb" and np.abs(back.pixels - img.pixels).mean() < 0.03


@pytest.mark.parametrize("channels", [1, 3])
def test_bmp_round_trip_exact(tmp_path: Path, channels: int) -> None:
    mode = "gray" if channels == 1 else "rgb"
    src = _u8(channels=channels)
    img = lio.Image(
        pixels=src.astype(np.float32) / 255, mode=mode, alpha=_pattern(channels=1)[..., 0]
    )
    lio.write_image(img, tmp_path / "out.bmp")
    back = lio.read_image(tmp_path / "out.bmp")
    assert back.source_format == "BMP" and back.alpha is None  # alpha dropped for BMP
    assert back.mode == mode
    np.testing.assert_array_equal(_as_u8(back), src)


def test_jpeg_drops_alpha_and_16bit_goes_8bit(tmp_path: Path) -> None:
    img = lio.Image(pixels=_pattern(), alpha=_pattern(channels=1)[..., 0], bit_depth=16)
    lio.write_image(img, tmp_path / "out.jpg")
    with PILImage.open(tmp_path / "out.jpg") as check:
        assert check.mode == "RGB"
    back = lio.read_image(tmp_path / "out.jpg")
    assert back.bit_depth == 8 and back.alpha is None


def test_rounding_and_clipping(tmp_path: Path) -> None:
    values = np.array([-0.5, 0.0, 0.4 / 255, 0.6 / 255, 127.5 / 255, 1.0, 2.0], np.float32)
    img = lio.Image(pixels=values.reshape(1, -1, 1), mode="gray")
    lio.write_image(img, tmp_path / "r.png")
    got = np.asarray(PILImage.open(tmp_path / "r.png"))[0]
    np.testing.assert_array_equal(got, [0, 0, 0, 1, 128, 255, 255])  # rint: 127.5 -> 128


# ------------------------------------------------------------------------------------------
# Orientation and metadata
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("orientation", range(1, 9))
def test_all_exif_orientations_match_pillow(tmp_path: Path, orientation: int) -> None:
    upright = PILImage.fromarray(_u8(24, 40))
    stored = _stored_for(upright, orientation)
    path = tmp_path / f"o{orientation}.png"
    stored.save(path, exif=_exif_bytes(orientation))
    img = lio.read_image(path)
    np.testing.assert_array_equal(_as_u8(img), np.asarray(upright))
    reference = ImageOps.exif_transpose(PILImage.open(path))
    np.testing.assert_array_equal(_as_u8(img), np.asarray(reference))
    loaded = PILImage.Exif()
    loaded.load(img.exif)
    assert loaded.get(0x0112) == 1 and loaded.get(0x010F) == "LiptCam"


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_exif_rotated_jpeg_is_upright_and_written_with_orientation_1(
    tmp_path: Path, orientation: int
) -> None:
    upright_arr = _u8(48, 80)
    upright = PILImage.fromarray(upright_arr)
    path = tmp_path / f"rot{orientation}.jpg"
    _stored_for(upright, orientation).save(path, quality=97, exif=_exif_bytes(orientation))
    img = lio.read_image(path)
    assert img.pixels.shape == (48, 80, 3)
    got = _as_u8(img).astype(int)
    err = np.abs(got - upright_arr).mean()
    assert err < 8  # JPEG loss only
    assert np.abs(got[::-1, ::-1] - upright_arr).mean() > 4 * err  # a wrong turn is far off
    out = tmp_path / "out.jpg"
    lio.write_image(img, out)
    assert _file_orientation(out) == 1
    with PILImage.open(out) as check:
        assert check.size == (80, 48)
        assert check.getexif().get(0x010F) == "LiptCam"  # the rest of the EXIF travels
        assert check.getexif().get_ifd(0x8769).get(0x9003) == "2024:01:02 03:04:05"
    assert np.abs(lio.read_image(out).pixels - img.pixels).mean() < 0.02


@pytest.mark.parametrize("bits", [8, 16])
def test_exif_rotated_tiff_is_upright(tmp_path: Path, monkeypatch, bits: int) -> None:
    upright = _u8(24, 40) if bits == 8 else _u16(24, 40)
    stored = np.ascontiguousarray(np.rot90(upright, 1))  # orientation 6 stores it turned left
    path = tmp_path / f"rot{bits}.tif"
    if bits == 8:  # Pillow decodes it (and, from Pillow 11, turns it itself while loading)
        PILImage.fromarray(stored).save(path, exif=_exif_bytes(6))
    else:  # OpenCV decodes it; our writer normally never writes an orientation tag
        monkeypatch.setattr(lio, "_TIFF_LAYOUT_TAGS", lio._TIFF_LAYOUT_TAGS - {0x0112})
        img = lio.Image(pixels=stored.astype(np.float32) / 65535, bit_depth=16)
        img.exif = _exif_bytes(6)
        lio.write_image(img, path)
        monkeypatch.undo()
    assert _file_orientation(path) == 6
    img = lio.read_image(path)
    conv = _as_u8 if bits == 8 else _as_u16
    np.testing.assert_array_equal(conv(img), upright)
    lio.write_image(img, tmp_path / "out.tif")
    assert _file_orientation(tmp_path / "out.tif") == 1
    np.testing.assert_array_equal(conv(lio.read_image(tmp_path / "out.tif")), upright)


def test_orientation_in_16bit_png_read_by_opencv(tmp_path: Path) -> None:
    upright = _u16(24, 40)
    stored = np.ascontiguousarray(np.rot90(upright, 1))  # orientation 6
    img = lio.Image(pixels=stored.astype(np.float32) / 65535, bit_depth=16)
    img.exif = _exif_bytes(6)
    lio.write_image(img, tmp_path / "rot.png")  # the eXIf chunk carries orientation 6
    assert _file_orientation(tmp_path / "rot.png") == 6
    back = lio.read_image(tmp_path / "rot.png")
    np.testing.assert_array_equal(_as_u16(back), upright)
    assert back.exif is not None
    lio.write_image(back, tmp_path / "out.png")
    assert _file_orientation(tmp_path / "out.png") == 1


@pytest.mark.parametrize(
    ("name", "bits"),
    [("a.png", 8), ("a.png", 16), ("a.jpg", 8), ("a.webp", 8), ("a.tif", 8), ("a.tif", 16)],
)
def test_icc_and_exif_carried(tmp_path: Path, name: str, bits: int) -> None:
    icc = _srgb_icc()
    img = lio.Image(pixels=_pattern(), bit_depth=bits, icc_profile=icc, exif=_exif_bytes(1))
    lio.write_image(img, tmp_path / name)
    back = lio.read_image(tmp_path / name)
    assert back.icc_profile == icc
    assert back.exif is not None
    parsed = PILImage.Exif()
    parsed.load(back.exif)
    assert parsed.get(0x010F) == "LiptCam"
    assert parsed.get_ifd(0x8769).get(0x9003) == "2024:01:02 03:04:05"
    assert back.bit_depth == bits


def test_gray_icc_not_put_on_rgb_samples(tmp_path: Path) -> None:
    gray_icc = bytearray(_srgb_icc())
    gray_icc[16:20] = b"GRAY"  # only the header field matters to the writer
    img = lio.Image(pixels=_pattern(channels=1), mode="gray", icc_profile=bytes(gray_icc))
    lio.write_image(img, tmp_path / "g.png")
    assert lio.read_image(tmp_path / "g.png").icc_profile == bytes(gray_icc)
    lio.write_image(img, tmp_path / "g.webp")  # WebP has no gray: RGB samples
    assert lio.read_image(tmp_path / "g.webp").icc_profile is None


def test_icc_preserved_png_to_png_and_jpeg_to_jpeg(tmp_path: Path) -> None:
    icc = _srgb_icc()
    PILImage.fromarray(_u8()).save(tmp_path / "in.png", icc_profile=icc)
    PILImage.fromarray(_u8()).save(tmp_path / "in.jpg", icc_profile=icc, quality=90)
    for ext in ("png", "jpg"):
        img = lio.read_image(tmp_path / f"in.{ext}")
        assert img.icc_profile == icc
        lio.write_image(img, tmp_path / f"out.{ext}")
        with PILImage.open(tmp_path / f"out.{ext}") as check:
            assert check.info.get("icc_profile") == icc


def test_exif_from_jpeg_is_byte_identical_except_orientation(tmp_path: Path) -> None:
    raw = _exif_bytes(6)
    PILImage.fromarray(_u8()).save(tmp_path / "in.jpg", exif=raw)
    img = lio.read_image(tmp_path / "in.jpg")
    assert img.exif is not None and len(img.exif) == len(raw)
    diff = [i for i, (a, b) in enumerate(zip(img.exif, raw, strict=True)) if a != b]
    assert len(diff) == 1  # just the orientation value


# ------------------------------------------------------------------------------------------
# Refusals and bad inputs
# ------------------------------------------------------------------------------------------


def test_animated_gif_refused(tmp_path: Path) -> None:
    frames = [PILImage.fromarray(_u8(16, 16)).convert("P") for _ in range(3)]
    frames[1] = PILImage.fromarray(255 - _u8(16, 16)).convert("P")
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:], duration=50)
    with pytest.raises(InputError, match=r"anim\.gif.*animated.*3 frames"):
        lio.read_image(tmp_path / "anim.gif")


@pytest.mark.parametrize("name", ["anim.png", "anim.webp"])
def test_animated_png_and_webp_refused(tmp_path: Path, name: str) -> None:
    frames = [PILImage.fromarray(_u8(16, 16)), PILImage.fromarray(255 - _u8(16, 16))]
    frames[0].save(tmp_path / name, save_all=True, append_images=frames[1:], duration=50)
    with pytest.raises(InputError, match=name.replace(".", r"\.") + r".*animated.*2 frames"):
        lio.read_image(tmp_path / name)


def test_multi_picture_jpeg_reads_its_primary_image(tmp_path: Path) -> None:
    src = _u8()
    primary, extra = PILImage.fromarray(src), PILImage.fromarray(255 - src)
    primary.save(
        tmp_path / "phone.jpg", format="MPO", save_all=True, append_images=[extra], quality=95
    )
    with PILImage.open(tmp_path / "phone.jpg") as check:
        assert check.format == "MPO" and check.n_frames == 2
    img = lio.read_image(tmp_path / "phone.jpg")
    assert img.source_format == "JPEG"
    assert np.abs(_as_u8(img).astype(int) - src).mean() < 8


def test_single_frame_gif_is_read(tmp_path: Path) -> None:
    PILImage.fromarray(_u8(16, 16)).convert("P").save(tmp_path / "still.gif")
    assert lio.read_image(tmp_path / "still.gif").source_format == "GIF"


def test_pixel_limit_refused_before_decoding(tmp_path: Path, monkeypatch) -> None:
    PILImage.fromarray(_u8()).save(tmp_path / "big.png")
    cv2.imwrite(str(tmp_path / "big16.png"), _u16())

    def boom(*args, **kwargs):
        raise AssertionError("decoded")

    from PIL import ImageFile

    monkeypatch.setattr(PILImage.Image, "load", boom)
    monkeypatch.setattr(ImageFile.ImageFile, "load", boom)
    monkeypatch.setattr(lio.cv2, "imdecode", boom)
    for name in ("big.png", "big16.png"):
        with pytest.raises(InputError, match=name + r".*64x48.*3,072.*limit of 1,000"):
            lio.read_image(tmp_path / name, max_pixels=1000)


def test_decompression_bomb_header_refused_with_default_limit(tmp_path: Path) -> None:
    # A PNG header claiming 200000 x 200000 pixels with almost no data behind it.
    import struct
    import zlib

    def chunk(kind: bytes, payload: bytes) -> bytes:
        crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", 200_000, 200_000, 8, 2, 0, 0, 0)
    data = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
    (tmp_path / "bomb.png").write_bytes(data + chunk(b"IEND", b""))
    with pytest.raises(InputError, match=r"bomb\.png.*200000x200000.*limit of 100,000,000"):
        lio.read_image(tmp_path / "bomb.png")
    assert PILImage.MAX_IMAGE_PIXELS is not None  # Pillow's own limit is restored


def _truncated(tmp_path: Path, name: str, fmt: str) -> Path:
    buf = io.BytesIO()
    PILImage.fromarray(_u8(64, 64)).save(buf, fmt)
    data = buf.getvalue()
    path = tmp_path / name
    path.write_bytes(data[: len(data) * 2 // 3])
    return path


def _bad_input(tmp_path: Path, kind: str) -> Path:
    if kind == "missing":
        return tmp_path / "missing.png"
    if kind == "directory":
        (tmp_path / "folder.png").mkdir()
        return tmp_path / "folder.png"
    if kind == "empty":
        (tmp_path / "empty.png").write_bytes(b"")
        return tmp_path / "empty.png"
    if kind == "text":
        (tmp_path / "notes.png").write_text("this is not an image\n" * 20)
        return tmp_path / "notes.png"
    if kind == "truncated_png":
        return _truncated(tmp_path, "cut.png", "PNG")
    if kind == "truncated_jpeg":
        return _truncated(tmp_path, "cut.jpg", "JPEG")
    if kind == "truncated_png16":
        _ok, buf = cv2.imencode(".png", _u16(64, 64))
        (tmp_path / "cut16.png").write_bytes(buf.tobytes()[: len(buf) // 2])
        return tmp_path / "cut16.png"
    if kind == "truncated_tiff16":
        _ok, buf = cv2.imencode(".tiff", _u16(64, 64))
        (tmp_path / "cut16.tif").write_bytes(buf.tobytes()[: len(buf) // 2])
        return tmp_path / "cut16.tif"
    if kind == "header_only_png":
        buf = io.BytesIO()
        PILImage.fromarray(_u8()).save(buf, "PNG")
        (tmp_path / "head.png").write_bytes(buf.getvalue()[:40])
        return tmp_path / "head.png"
    raise AssertionError(kind)


@pytest.mark.parametrize(
    "kind",
    [
        "missing",
        "directory",
        "empty",
        "text",
        "truncated_png",
        "truncated_jpeg",
        "truncated_png16",
        "truncated_tiff16",
        "header_only_png",
    ],
)
def test_bad_inputs_give_input_error_naming_the_file(tmp_path: Path, capfd, kind: str) -> None:
    path = _bad_input(tmp_path, kind)
    with warnings.catch_warnings(record=True) as leaked, pytest.raises(InputError) as info:
        warnings.simplefilter("always")
        lio.read_image(path)
    message = str(info.value)
    assert path.name in message and "\n" not in message
    captured = capfd.readouterr()
    assert captured.out == "" and captured.err == ""  # the library never prints
    assert [str(w.message) for w in leaked] == []  # nor lets Pillow warn the user


def test_bad_input_messages_say_what_is_wrong(tmp_path: Path) -> None:
    expectations = {
        "missing": "not found",
        "directory": "directory",
        "empty": "empty",
        "text": "not a recognised image",
        "truncated_png": "truncated",
        "truncated_jpeg": "truncated",
    }
    for kind, words in expectations.items():
        with pytest.raises(InputError, match=words):
            lio.read_image(_bad_input(tmp_path, kind))


def test_truncated_jpeg_refused_even_if_pillow_is_lenient(tmp_path: Path, monkeypatch) -> None:
    from PIL import ImageFile

    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    with pytest.raises(InputError, match=r"cut\.jpg"):
        lio.read_image(_truncated(tmp_path, "cut.jpg", "JPEG"))
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # restored afterwards


# ------------------------------------------------------------------------------------------
# Writing: atomicity and safety
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("exc_type", [RuntimeError, KeyboardInterrupt, OSError])
@pytest.mark.parametrize("target_exists", [False, True])
def test_atomic_write_leaves_nothing_partial(
    tmp_path: Path, monkeypatch, exc_type: type[BaseException], target_exists: bool
) -> None:
    target = tmp_path / "out.png"
    if target_exists:
        target.write_bytes(b"previous contents")

    def failing_encoder(image: lio.Image, fp, quality: int) -> None:
        fp.write(b"\x89PNG\r\n\x1a\n" + b"\0" * 1000)
        fp.flush()
        raise exc_type("encoder failed mid-write")

    monkeypatch.setitem(lio._ENCODERS, "PNG", failing_encoder)
    expected = InputError if exc_type is OSError else exc_type
    with pytest.raises(expected):
        lio.write_image(lio.Image(pixels=_pattern()), target)
    if target_exists:
        assert target.read_bytes() == b"previous contents"
    else:
        assert not target.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == (["out.png"] if target_exists else [])


def test_successful_write_leaves_no_temp_files_and_normal_permissions(tmp_path: Path) -> None:
    for ext in ("png", "jpg", "webp", "tif", "bmp"):
        lio.write_image(lio.Image(pixels=_pattern()), tmp_path / f"out.{ext}")
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["out.bmp", "out.jpg", "out.png", "out.tif", "out.webp"]
    assert (tmp_path / "out.png").stat().st_mode & 0o777 == new_file_mode()


def test_refuses_to_overwrite_the_input(tmp_path: Path) -> None:
    src = tmp_path / "photo.png"
    PILImage.fromarray(_u8()).save(src)
    before = src.read_bytes()
    img = lio.read_image(src)
    with pytest.raises(InputError, match=r"photo\.png.*input"):
        lio.write_image(img, src)
    with pytest.raises(InputError, match="input"):
        lio.write_image(img, tmp_path / "." / "photo.png")
    (tmp_path / "link.png").symlink_to(src)
    with pytest.raises(InputError, match="input"):
        lio.write_image(img, tmp_path / "link.png")
    assert src.read_bytes() == before


def test_write_errors(tmp_path: Path) -> None:
    img = lio.Image(pixels=_pattern())
    with pytest.raises(UsageError, match="output format"):
        lio.write_image(img, tmp_path / "out.xyz")
    with pytest.raises(UsageError, match="unknown output format"):
        lio.write_image(img, tmp_path / "out.png", format="heic")
    with pytest.raises(UsageError, match="quality"):
        lio.write_image(img, tmp_path / "out.jpg", quality=0)
    with pytest.raises(InputError, match="does not exist"):
        lio.write_image(img, tmp_path / "nowhere" / "out.png")
    (tmp_path / "dir.png").mkdir()
    with pytest.raises(InputError, match="directory"):
        lio.write_image(img, tmp_path / "dir.png")
    wide = lio.Image(pixels=np.zeros((1, 16384, 3), np.float32))
    with pytest.raises(UsageError, match="too large for WEBP"):
        lio.write_image(wide, tmp_path / "wide.webp")
    lio.write_image(img, tmp_path / "noext", format="jpg")
    assert PILImage.open(tmp_path / "noext").format == "JPEG"


def test_image_validates_its_fields() -> None:
    with pytest.raises(ValueError, match="shape"):
        lio.Image(pixels=np.zeros((4, 4, 2), np.float32))
    with pytest.raises(ValueError, match="mode"):
        lio.Image(pixels=np.zeros((4, 4, 1), np.float32), mode="rgb")
    with pytest.raises(ValueError, match="alpha"):
        lio.Image(pixels=np.zeros((4, 4, 3), np.float32), alpha=np.zeros((3, 4)))
    with pytest.raises(ValueError, match="bit_depth"):
        lio.Image(pixels=np.zeros((4, 4, 3), np.float32), bit_depth=12)
    img = lio.Image(pixels=np.zeros((4, 5, 3), np.float64))
    assert img.pixels.dtype == np.float32 and (img.height, img.width) == (4, 5)
    assert repr(img).startswith("Image(5x4 rgb, 8-bit")


# ------------------------------------------------------------------------------------------
# JPEG quality estimate and extensions
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("quality", [10, 30, 50, 75, 90])
def test_estimate_jpeg_quality(tmp_path: Path, quality: int) -> None:
    path = tmp_path / f"q{quality}.jpg"
    PILImage.fromarray(_u8()).save(path, quality=quality)
    estimate = lio.estimate_jpeg_quality(path)
    assert estimate is not None and abs(estimate - quality) <= 2


def test_estimate_jpeg_quality_of_gray_and_non_jpeg(tmp_path: Path) -> None:
    PILImage.fromarray(_gray8()).save(tmp_path / "g.jpg", quality=40)
    assert abs(lio.estimate_jpeg_quality(tmp_path / "g.jpg") - 40) <= 2
    PILImage.fromarray(_u8()).save(tmp_path / "a.png")
    assert lio.estimate_jpeg_quality(tmp_path / "a.png") is None
    (tmp_path / "t.jpg").write_text("no image here")
    assert lio.estimate_jpeg_quality(tmp_path / "t.jpg") is None
    with pytest.raises(InputError, match=r"missing\.jpg"):
        lio.estimate_jpeg_quality(tmp_path / "missing.jpg")


def test_supported_extensions() -> None:
    for ext in (".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp"):
        assert ext in lio.SUPPORTED_EXTENSIONS
        assert ext in lio.WRITE_FORMATS
    assert all(ext == ext.lower() and ext.startswith(".") for ext in lio.SUPPORTED_EXTENSIONS)

"""Image input and output that loses nothing.

Reading turns any supported file into an :class:`Image`: float32 pixels in ``[0, 1]`` that are
upright (EXIF orientation applied), plus what is needed to write the result back faithfully:
the bit depth (16-bit sources keep their full precision), gray versus colour, the alpha channel,
the ICC profile and the EXIF block (with its orientation reset to 1).

Which library does which job:

* **Pillow** identifies files and reads their headers (size, frame count, metadata) without
  decoding, decodes every 8-bit and gray 16-bit image (palette, CMYK, bilevel, ... included),
  converts CMYK through the embedded ICC profile with ``PIL.ImageCms``, and encodes 8-bit PNG,
  JPEG, WebP and BMP with their metadata.
* **OpenCV** decodes what Pillow would truncate to 8 bits (16-bit RGB/RGBA PNG and TIFF) or
  cannot open at all (float RGB TIFF), and encodes 16-bit PNG (libpng, fast and compact); the
  ICC profile and EXIF are then added as PNG chunks here, since OpenCV 4.x cannot write them.
* **numpy + zlib** (here): 16-bit gray+alpha PNG (OpenCV cannot write two channels) and every
  TIFF (Deflate with horizontal predictor), the IFD being serialised by Pillow's
  ``ImageFileDirectory_v2`` so that the ICC profile and EXIF go in at any bit depth.

imageio is not needed: for these formats its plugins are Pillow and OpenCV themselves.

Every failure a user can cause raises :class:`lipt_core.errors.InputError` with a one-line
message that starts with the file name. Writing is atomic: the target is either the complete
new file or untouched.
"""

from __future__ import annotations

import contextlib
import io
import os
import stat
import struct
import threading
import warnings
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import cv2
import numpy as np
from PIL import Image as PILImage
from PIL import ImageFile, TiffImagePlugin

from lipt_core.errors import InputError, UsageError
from lipt_core.files import replacing

try:  # LittleCMS bindings are optional in Pillow builds
    from PIL import ImageCms
except ImportError:  # pragma: no cover - depends on the Pillow build
    ImageCms = None  # type: ignore[assignment]

__all__ = [
    "DEFAULT_JPEG_QUALITY",
    "DEFAULT_MAX_PIXELS",
    "SUPPORTED_EXTENSIONS",
    "WRITE_FORMATS",
    "Image",
    "estimate_jpeg_quality",
    "read_image",
    "write_image",
]


def _pillow_has_module(name: str) -> bool:
    """Whether this Pillow build decodes an optional format (AVIF needs Pillow >= 11.2)."""
    try:
        from PIL import features

        return bool(features.check_module(name))
    except Exception:
        return False


DEFAULT_MAX_PIXELS = 100_000_000
"""Largest image (width x height) :func:`read_image` decodes unless told otherwise."""

DEFAULT_JPEG_QUALITY = 95
"""Quality used for JPEG and WebP output when none is given."""

SUPPORTED_EXTENSIONS: frozenset[str] = frozenset(
    {
        ".png",
        ".jpg",
        ".jpeg",
        ".jpe",
        ".jfif",
        ".webp",
        ".tif",
        ".tiff",
        ".bmp",
        ".dib",
        ".gif",
        ".tga",
        ".ppm",
        ".pgm",
        ".pbm",
        ".pnm",
        ".jp2",
        ".j2k",
        ".qoi",
    }
    | ({".avif"} if _pillow_has_module("avif") else set())
)
"""Lower-case file extensions (with the dot) that folder scanning picks up as images."""

WRITE_FORMATS: dict[str, str] = {
    ".png": "PNG",
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".webp": "WEBP",
    ".tif": "TIFF",
    ".tiff": "TIFF",
    ".bmp": "BMP",
}
"""Output extension -> format name understood by :func:`write_image`."""

_MAX_SIDE = {"JPEG": 65500, "WEBP": 16383}  # libjpeg-turbo, libwebp

_FORMAT_ALIASES = {"PNG": "PNG", "JPG": "JPEG", "JPEG": "JPEG", "WEBP": "WEBP", "TIF": "TIFF"}
_FORMAT_ALIASES.update({"TIFF": "TIFF", "BMP": "BMP"})

# Formats whose extra frames are auxiliary (MPO: depth maps and previews behind the primary
# JPEG; PSD: layers behind the composite; ICO/ICNS: the same icon at other sizes).
_MULTI_FRAME_OK = frozenset({"MPO", "PSD", "ICO", "ICNS"})

_EXIF_PREFIX = b"Exif\x00\x00"
_ORIENTATION_TAG = 0x0112
_EXIF_IFD_TAG = 0x8769
_GPS_IFD_TAG = 0x8825
_ICC_TAG = 34675
_JPEG_MAX_EXIF = 65533 - len(_EXIF_PREFIX)  # one APP1 segment

# TIFF IFD0 tags that describe the pixel layout of a file. They must not travel in an EXIF
# block taken from a TIFF, nor be copied from EXIF into a TIFF we write.
_TIFF_LAYOUT_TAGS = frozenset(
    {254, 255, 256, 257, 258, 259, 262, 263, 266, 273, 274, 277, 278, 279, 280, 281, 284}
    | {292, 293, 317, 318, 319, 320, 322, 323, 324, 325, 330, 338, 339, 340, 341, 347}
    | {513, 514, 529, 530, 531, 532, _ICC_TAG}
)

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_MAGIC = (
    (_PNG_SIGNATURE, "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"II+\x00", "TIFF"),
    (b"MM\x00+", "TIFF"),
    (b"BM", "BMP"),
)

# libjpeg's standard (IJG, Annex K) quantisation tables, natural order, quality 50.
IJG_LUMA = np.array(
    [
        [16, 11, 10, 16, 24, 40, 51, 61],
        [12, 12, 14, 19, 26, 58, 60, 55],
        [14, 13, 16, 24, 40, 57, 69, 56],
        [14, 17, 22, 29, 51, 87, 80, 62],
        [18, 22, 37, 56, 68, 109, 103, 77],
        [24, 35, 55, 64, 81, 104, 113, 92],
        [49, 64, 78, 87, 103, 121, 120, 101],
        [72, 92, 95, 98, 112, 100, 103, 99],
    ],
    dtype=np.int64,
).ravel()
_IJG_CHROMA = np.full((8, 8), 99, dtype=np.int64)
_IJG_CHROMA[:4, :4] = [[17, 18, 24, 47], [18, 21, 26, 66], [24, 26, 56, 99], [47, 66, 99, 99]]
_IJG_CHROMA = _IJG_CHROMA.ravel()


@dataclass(eq=False)  # numpy fields: element-wise ==, so no generated __eq__
class Image:
    """A decoded image with what is needed to write it back without loss.

    Attributes:
        pixels: float32 array of shape (H, W, C), C = 1 (gray) or 3 (RGB), values in [0, 1].
        alpha: float32 array of shape (H, W) in [0, 1], or None when the image is opaque.
        bit_depth: 8 or 16, the precision of the source (float sources count as 16); writers
            use 16 bits where the format allows it.
        mode: "gray" or "rgb", matching the channel count of ``pixels``.
        icc_profile: the embedded ICC profile, or None (sRGB is assumed then).
        exif: the EXIF block as stored in a JPEG APP1 segment (starting ``b"Exif\\0\\0"``),
            with its orientation tag reset to 1 because ``pixels`` are already upright.
        source_format: the format the pixels were read from, e.g. "PNG", "JPEG", "TIFF".
        path: the file the image was read from; :func:`write_image` refuses to write over it.
    """

    pixels: np.ndarray
    alpha: np.ndarray | None = None
    bit_depth: int = 8
    mode: str = "rgb"
    icc_profile: bytes | None = None
    exif: bytes | None = None
    source_format: str = ""
    path: Path | None = None

    def __post_init__(self) -> None:
        pixels = np.asarray(self.pixels)
        if pixels.dtype != np.float32:
            pixels = pixels.astype(np.float32)
        if pixels.ndim != 3 or pixels.shape[2] not in (1, 3):
            raise ValueError(f"pixels must have shape (H, W, 1) or (H, W, 3), got {pixels.shape}")
        self.pixels = pixels
        if self.alpha is not None:
            alpha = np.asarray(self.alpha)
            if alpha.dtype != np.float32:
                alpha = alpha.astype(np.float32)
            if alpha.shape != pixels.shape[:2]:
                raise ValueError(f"alpha shape {alpha.shape} does not match pixels {pixels.shape}")
            self.alpha = alpha
        expected_mode = "gray" if pixels.shape[2] == 1 else "rgb"
        if self.mode != expected_mode:
            raise ValueError(f"mode {self.mode!r} does not match {pixels.shape[2]} channel(s)")
        if self.bit_depth not in (8, 16):
            raise ValueError(f"bit_depth must be 8 or 16, got {self.bit_depth}")
        if self.path is not None:
            self.path = Path(self.path)

    def __repr__(self) -> str:
        alpha = "" if self.alpha is None else "+alpha"
        return (
            f"Image({self.width}x{self.height} {self.mode}{alpha}, {self.bit_depth}-bit, "
            f"{self.source_format or 'in memory'}, icc={len(self.icc_profile or b'')}B, "
            f"exif={len(self.exif or b'')}B, path={str(self.path) if self.path else None!r})"
        )

    @property
    def height(self) -> int:
        """Height in pixels."""
        return int(self.pixels.shape[0])

    @property
    def width(self) -> int:
        """Width in pixels."""
        return int(self.pixels.shape[1])


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------


def read_image(path: str | os.PathLike[str], *, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image:
    """Read an image file into an upright :class:`Image`, keeping depth, alpha and metadata.

    Reads PNG, JPEG, WebP, TIFF, BMP and every other still-image format Pillow identifies
    (GIF, TGA, PNM, JPEG 2000, ...), plus TIFFs that only OpenCV decodes (float RGB).

    Args:
        path: the file to read.
        max_pixels: largest width x height accepted. It is checked against the header before
            any pixel is decoded, so an oversized or malicious file never allocates its image.

    Raises:
        InputError: the file is missing, a directory, empty, not an image, truncated or
            corrupt, animated or multi-page, of an unsupported pixel kind, or too large.
    """
    p = Path(path)
    _check_readable_file(p)
    with _pillow_guard():
        try:
            pil = PILImage.open(p)
        except PILImage.UnidentifiedImageError:
            return _read_unidentified(p, max_pixels)
        except PermissionError as exc:
            raise InputError(f"{p}: permission denied") from exc
        except InputError:
            raise
        except Exception as exc:
            raise InputError(f"{p}: corrupt image header ({_reason(exc)})") from exc
        with pil:
            try:
                return _read_pillow(p, pil, max_pixels)
            except InputError:
                raise
            except MemoryError as exc:
                raise InputError(f"{p}: not enough memory to decode this image") from exc
            except Exception as exc:
                raise InputError(
                    f"{p}: image data is truncated or corrupt ({_reason(exc)})"
                ) from exc


def _check_readable_file(p: Path) -> None:
    try:
        st = p.stat()
    except (FileNotFoundError, NotADirectoryError) as exc:
        raise InputError(f"{p}: file not found") from exc
    except PermissionError as exc:
        raise InputError(f"{p}: permission denied") from exc
    except OSError as exc:
        raise InputError(f"{p}: cannot access file ({exc.strerror or exc})") from exc
    if stat.S_ISDIR(st.st_mode):
        raise InputError(f"{p}: is a directory, not an image file")
    if not stat.S_ISREG(st.st_mode):
        raise InputError(f"{p}: is not a regular file")
    if st.st_size == 0:
        raise InputError(f"{p}: file is empty (0 bytes)")


def _reason(exc: BaseException) -> str:
    """A short one-line description of a library exception."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 160 else text[:157] + "..."


_guard_lock = threading.Lock()
_guard_depth = 0
_guard_saved: tuple[int | None, bool] = (None, False)
_guard_warnings: warnings.catch_warnings | None = None


@contextlib.contextmanager
def _pillow_guard() -> Iterator[None]:
    """Within the block, Pillow refuses truncated files and leaves size limits to us.

    ``max_pixels`` replaces Pillow's own decompression-bomb limit (a warning above ~89 MP, an
    error above ~179 MP, whatever the caller asked for); ``LOAD_TRUNCATED_IMAGES`` must be False
    so that a truncated file raises instead of decoding to partly grey pixels. Pillow's own
    warnings (such as "Corrupt EXIF data") are silenced: a file that still decodes is fine, one
    that does not raises an :class:`InputError`, and either way the user sees one line, not a
    Python warning. All three are process globals: they are set while any read is in progress
    and restored after the last one.
    """
    global _guard_depth, _guard_saved, _guard_warnings
    with _guard_lock:
        if _guard_depth == 0:
            _guard_saved = (PILImage.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES)
            PILImage.MAX_IMAGE_PIXELS = None
            ImageFile.LOAD_TRUNCATED_IMAGES = False
            _guard_warnings = warnings.catch_warnings()
            _guard_warnings.__enter__()
            warnings.filterwarnings("ignore", module=r"PIL\.")
        _guard_depth += 1
    try:
        yield
    finally:
        with _guard_lock:
            _guard_depth -= 1
            if _guard_depth == 0:
                PILImage.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES = _guard_saved
                if _guard_warnings is not None:
                    _guard_warnings.__exit__(None, None, None)
                    _guard_warnings = None


def _sniff(p: Path) -> str | None:
    """The format named by the file's magic bytes, or None."""
    try:
        with p.open("rb") as fh:
            head = fh.read(16)
    except OSError:
        return None
    for magic, name in _MAGIC:
        if head.startswith(magic):
            return name
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    return None


def _check_size(p: Path, width: int, height: int, max_pixels: int) -> None:
    if width <= 0 or height <= 0:
        raise InputError(f"{p}: corrupt image header (it gives the size {width}x{height})")
    if width * height > max_pixels:
        raise InputError(
            f"{p}: image is {width}x{height} = {width * height:,} pixels, "
            f"over the limit of {max_pixels:,} pixels"
        )


def _read_pillow(p: Path, pil: PILImage.Image, max_pixels: int) -> Image:
    fmt = (pil.format or "").upper()
    width, height = pil.size
    _check_size(p, width, height, max_pixels)
    if fmt == "TIFF":
        pages = _count_tiff_pages(p)
        if pages > 1:
            raise InputError(f"{p}: multi-page TIFF with {pages} pages; one image per file only")
    elif fmt not in _MULTI_FRAME_OK:
        frames = int(getattr(pil, "n_frames", 1) or 1)
        if frames > 1:
            raise InputError(f"{p}: animated image with {frames} frames; only still images")
    source_format = "JPEG" if fmt == "MPO" else fmt

    use_opencv = _needs_opencv(pil)  # decided first: getexif() may decode a PNG
    if use_opencv:
        if fmt == "PNG":
            _verify_png(p)
    else:
        pil.load()  # truncation and corruption surface here, before anything else decodes

    icc = pil.info.get("icc_profile") or None
    exif_obj: PILImage.Exif | None
    if use_opencv and fmt == "PNG":
        # Only an eXIf chunk before the image data: looking further would decode the PNG.
        exif = _normalise_exif(pil.info.get("exif"))
        exif_obj = PILImage.Exif()
        if exif:
            exif_obj.load(exif)
    else:
        # Read after loading: from Pillow 11, loading a TIFF applies its orientation and
        # deletes the tag, so what is left is what remains to be done (older versions: all).
        try:
            exif_obj = pil.getexif()
        except Exception:  # corrupt EXIF must not make the pixels unreadable
            exif_obj = None
        if fmt == "TIFF":
            exif = _exif_from_tiff_tags(exif_obj) if exif_obj is not None else None
        else:
            exif = _normalise_exif(pil.info.get("exif"))
    orientation = 1
    if exif_obj is not None:
        with contextlib.suppress(Exception):
            orientation = _valid_orientation(exif_obj.get(_ORIENTATION_TAG))

    if use_opencv:
        # Pillow shows a 16-bit gray+alpha PNG as "RGBA"; its raw mode tells the truth.
        gray_hint = pil.mode in ("L", "LA", "La") or pil.mode.startswith("I")
        gray_hint = gray_hint or _tile_rawmode(pil).startswith(("L;", "LA;", "I;"))
        header_bits = 16
        if fmt == "TIFF":
            tags = getattr(pil, "tag_v2", {})
            gray_hint = int(tags.get(262, 2)) in (0, 1)
            header_bits = _max_bits(tags.get(258, 8))
        data = p.read_bytes()
        if fmt == "TIFF":
            data = _tiff_bytes_for_opencv(p, data, orientation)
        color, alpha, depth = _decode_opencv(p, data, gray_hint, header_bits)
    else:
        color, alpha, depth, icc = _decode_pillow(p, pil, icc)
    return _finish(p, color, alpha, depth, icc, exif, orientation, source_format)


def _max_bits(bits: object) -> int:
    """The largest BitsPerSample value of a TIFF tag (an int or a tuple)."""
    values = bits if isinstance(bits, tuple) else (bits,)
    try:
        return max(int(b) for b in values) if values else 8
    except (TypeError, ValueError):
        return 8


def _valid_orientation(value: object) -> int:
    try:
        orientation = int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return 1
    return orientation if 1 <= orientation <= 8 else 1


def _tile_rawmode(pil: PILImage.Image) -> str:
    tiles = getattr(pil, "tile", None) or []
    if not tiles:
        return ""
    args = tiles[0].args if hasattr(tiles[0], "args") else tiles[0][3]
    if isinstance(args, tuple):
        args = args[0] if args else ""
    return args if isinstance(args, str) else ""


def _needs_opencv(pil: PILImage.Image) -> bool:
    """True when Pillow would reduce the samples to 8 bits (16-bit RGB/RGBA/LA PNG or TIFF)."""
    if pil.mode in ("I", "F") or pil.mode.startswith("I;16"):
        return False
    if pil.format == "PNG":
        return ";16" in _tile_rawmode(pil)
    if pil.format == "TIFF":
        return _max_bits(getattr(pil, "tag_v2", {}).get(258, 8)) > 8
    return False


def _verify_png(p: Path) -> None:
    """Check a PNG's chunk structure and CRCs before handing it to OpenCV.

    OpenCV returns None for a truncated PNG, but libpng prints to stderr first; this check
    catches truncation and corruption without decoding, and without printing.
    """
    with PILImage.open(p) as check:
        check.verify()


def _decode_opencv(
    p: Path, data: bytes, gray_hint: bool, header_bits: int = 8
) -> tuple[np.ndarray, np.ndarray | None, int]:
    """Decode with OpenCV (IMREAD_UNCHANGED: alpha and depth kept, EXIF not applied).

    TIFF bytes must come through :func:`_tiff_bytes_for_opencv`, since OpenCV's TIFF decoder
    applies the orientation tag regardless of the flags.

    ``header_bits`` is the sample size the file header declares; OpenCV silently falls back
    to 8-bit RGBA for layouts it does not handle (16-bit gray+alpha TIFF), which is refused.
    """
    level = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    try:
        arr = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error as exc:
        raise InputError(f"{p}: image data is truncated or corrupt ({_reason(exc)})") from exc
    finally:
        cv2.utils.logging.setLogLevel(level)
    if arr is None or arr.size == 0:
        raise InputError(f"{p}: image data is truncated, corrupt or of an unsupported kind")
    if arr.ndim == 2:
        arr = arr[:, :, None]
    channels = arr.shape[2]
    alpha = None
    if channels == 1:
        color = arr
    elif channels == 2:
        color, alpha = arr[:, :, :1], arr[:, :, 1]
    elif channels == 3:
        color = arr[:, :, ::-1]
    elif channels == 4:
        color, alpha = arr[:, :, 2::-1], arr[:, :, 3]
    else:
        raise InputError(f"{p}: unsupported image with {channels} channels")
    if gray_hint and color.shape[2] == 3:
        color = color[:, :, :1]
    if arr.dtype.itemsize * 8 < header_bits:
        raise InputError(
            f"{p}: unsupported {header_bits}-bit layout ({arr.shape[2]} channel(s) decoded "
            f"as {arr.dtype}); convert it to 16-bit RGB or RGBA"
        )
    if arr.dtype == np.uint8:
        depth = 8
    elif arr.dtype == np.uint16 or arr.dtype.kind == "f":
        depth = 16
    else:
        raise InputError(f"{p}: unsupported sample type {arr.dtype} (need 8/16-bit or float)")
    return _to_unit(color), None if alpha is None else _to_unit(alpha), depth


def _decode_pillow(
    p: Path, pil: PILImage.Image, icc: bytes | None
) -> tuple[np.ndarray, np.ndarray | None, int, bytes | None]:
    """Decode with Pillow; returns (color, alpha, bit_depth, icc_profile)."""
    pil.load()  # decode errors (truncation included) surface here
    mode = pil.mode
    has_transparency = "transparency" in pil.info
    if mode == "1":
        pil = pil.convert("L")
    elif mode == "P" or mode == "PA":
        palette_alpha = pil.palette is not None and "A" in pil.palette.mode
        want = "RGBA" if (has_transparency or palette_alpha or mode == "PA") else "RGB"
        pil = pil.convert(want)
    elif mode == "L" and has_transparency:
        pil = pil.convert("LA")
    elif mode == "RGB" and has_transparency:
        pil = pil.convert("RGBA")
    elif mode == "La":
        pil = pil.convert("LA")
    elif mode == "RGBa":
        pil = pil.convert("RGBA")
    elif mode in ("RGBX", "YCbCr", "HSV"):
        pil = pil.convert("RGB")
    elif mode == "CMYK":
        pil, icc = _cmyk_to_rgb(pil, icc)
    elif mode == "LAB":
        pil, icc = _lab_to_rgb(p, pil), None

    mode = pil.mode
    if mode in ("L", "RGB"):
        arr = np.asarray(pil)
        return _to_unit(arr.reshape(arr.shape[0], arr.shape[1], -1)), None, 8, icc
    if mode in ("LA", "RGBA"):
        arr = np.asarray(pil)
        return _to_unit(arr[:, :, :-1]), _to_unit(arr[:, :, -1]), 8, icc
    if mode.startswith("I;16"):
        arr = np.asarray(pil).astype(np.uint16)
        return _to_unit(arr[:, :, None]), None, 16, icc
    if mode == "I":
        arr = np.asarray(pil)
        if arr.size and (int(arr.min()) < 0 or int(arr.max()) > 65535):
            raise InputError(f"{p}: 32-bit integer samples outside the 16-bit range")
        return _to_unit(arr.astype(np.uint16)[:, :, None]), None, 16, icc
    if mode == "F":
        return _to_unit(np.asarray(pil)[:, :, None]), None, 16, icc
    raise InputError(f"{p}: unsupported pixel mode {mode!r}")


def _cmyk_to_rgb(pil: PILImage.Image, icc: bytes | None) -> tuple[PILImage.Image, None]:
    """CMYK -> sRGB through the embedded profile when possible, else Pillow's naive formula.

    The result is sRGB, so the CMYK profile no longer applies and is dropped.
    """
    if icc and ImageCms is not None:
        try:
            source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            srgb = ImageCms.createProfile("sRGB")
            converted = ImageCms.profileToProfile(pil, source, srgb, outputMode="RGB")
            if converted is not None:
                return converted, None
        except Exception:  # a broken or non-CMYK profile: fall back below
            pass
    return pil.convert("RGB"), None


def _lab_to_rgb(p: Path, pil: PILImage.Image) -> PILImage.Image:
    if ImageCms is None:
        raise InputError(f"{p}: Lab images need Pillow with LittleCMS support")
    lab = ImageCms.createProfile("LAB")
    srgb = ImageCms.createProfile("sRGB")
    converted = ImageCms.profileToProfile(pil, lab, srgb, outputMode="RGB")
    if converted is None:  # pragma: no cover - profileToProfile returns an image here
        raise InputError(f"{p}: cannot convert Lab to RGB")
    return converted


def _to_unit(arr: np.ndarray) -> np.ndarray:
    """Integer or float samples -> float32 in [0, 1], full precision, computed in float."""
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) / np.float32(255)
    if arr.dtype.kind == "u" and arr.dtype.itemsize == 2:  # any byte order
        return arr.astype(np.float32) / np.float32(65535)
    if arr.dtype.kind == "f":
        out = np.nan_to_num(arr.astype(np.float32), nan=0.0, posinf=1.0, neginf=0.0)
        return np.clip(out, 0.0, 1.0)
    raise ValueError(f"unsupported sample type {arr.dtype}")


def _read_unidentified(p: Path, max_pixels: int) -> Image:
    """A file Pillow cannot identify: a TIFF that only OpenCV decodes, or not an image."""
    kind = _sniff(p)
    if kind != "TIFF":
        if kind is not None:
            raise InputError(f"{p}: corrupt or truncated {kind} file")
        raise InputError(f"{p}: not a recognised image file")
    try:
        data = p.read_bytes()
        ifds = _tiff_ifds(io.BytesIO(data))
    except InputError:
        raise
    except Exception as exc:
        raise InputError(f"{p}: corrupt TIFF file ({_reason(exc)})") from exc
    if not ifds:
        raise InputError(f"{p}: corrupt TIFF file (no image directory)")
    ifd0 = ifds[0]
    _check_size(p, int(ifd0.get(256, 0)), int(ifd0.get(257, 0)), max_pixels)
    pages = sum(1 for ifd in ifds if not int(ifd.get(254, 0)) & 1)
    if pages > 1:
        raise InputError(f"{p}: multi-page TIFF with {pages} pages; one image per file only")
    icc = ifd0.get(_ICC_TAG) or None
    icc = bytes(icc) if icc else None
    orientation = _valid_orientation(ifd0.get(274, 1))
    try:
        exif_obj = PILImage.Exif()
        exif_obj.load(data)
        exif = _exif_from_tiff_tags(exif_obj)
    except Exception:
        exif = None
    gray_hint = int(ifd0.get(262, 2)) in (0, 1)
    try:
        data = _tiff_bytes_for_opencv(p, data, orientation)
        color, alpha, depth = _decode_opencv(p, data, gray_hint, _max_bits(ifd0.get(258, 8)))
    except InputError:
        raise
    except MemoryError as exc:
        raise InputError(f"{p}: not enough memory to decode this image") from exc
    except Exception as exc:
        raise InputError(f"{p}: image data is truncated or corrupt ({_reason(exc)})") from exc
    return _finish(p, color, alpha, depth, icc, exif, orientation, "TIFF")


def _tiff_ifds(fp: BinaryIO) -> list[TiffImagePlugin.ImageFileDirectory_v2]:
    """Every image directory (page) of a TIFF, read without decoding anything."""
    ifh = fp.read(8)
    if len(ifh) < 8:
        raise InputError("truncated TIFF header")
    first = TiffImagePlugin.ImageFileDirectory_v2(ifh)
    ifds = []
    offset, seen = first.next, set()
    while offset and offset not in seen and len(ifds) < 10_000:
        seen.add(offset)
        ifd = TiffImagePlugin.ImageFileDirectory_v2(ifh)
        fp.seek(offset)
        ifd.load(fp)
        ifds.append(ifd)
        offset = ifd.next
    return ifds


def _count_tiff_pages(p: Path) -> int:
    """Full-resolution pages of a TIFF; reduced-resolution ones (thumbnails) do not count."""
    with p.open("rb") as fh:
        ifds = _tiff_ifds(fh)
    return sum(1 for ifd in ifds if not int(ifd.get(254, 0)) & 1)


def _finish(
    p: Path,
    color: np.ndarray,
    alpha: np.ndarray | None,
    depth: int,
    icc: bytes | None,
    exif: bytes | None,
    orientation: int,
    source_format: str,
) -> Image:
    color = np.ascontiguousarray(_orient(color, orientation))
    if alpha is not None:
        alpha = np.ascontiguousarray(_orient(alpha, orientation))
    return Image(
        pixels=color,
        alpha=alpha,
        bit_depth=depth,
        mode="gray" if color.shape[2] == 1 else "rgb",
        icc_profile=bytes(icc) if icc else None,
        exif=_reset_orientation(exif) if exif else None,
        source_format=source_format,
        path=p,
    )


def _orient(arr: np.ndarray, orientation: int) -> np.ndarray:
    """Make an (H, W, ...) array upright for an EXIF orientation 1..8 (as Pillow does)."""
    if orientation == 2:
        return arr[:, ::-1]
    if orientation == 3:
        return arr[::-1, ::-1]
    if orientation == 4:
        return arr[::-1]
    if orientation == 5:
        return arr.swapaxes(0, 1)
    if orientation == 6:
        return np.rot90(arr, -1)
    if orientation == 7:
        return arr.swapaxes(0, 1)[::-1, ::-1]
    if orientation == 8:
        return np.rot90(arr, 1)
    return arr


# --------------------------------------------------------------------------------------------
# EXIF
# --------------------------------------------------------------------------------------------


def _normalise_exif(raw: object) -> bytes | None:
    """EXIF bytes as in a JPEG APP1 segment: ``b"Exif\\0\\0"`` then the TIFF structure."""
    if not isinstance(raw, (bytes, bytearray)) or len(raw) < 8:
        return None
    raw = bytes(raw)
    body = raw[len(_EXIF_PREFIX) :] if raw.startswith(_EXIF_PREFIX) else raw
    if body[:4] not in (b"II*\x00", b"MM\x00*"):
        return None
    return _EXIF_PREFIX + body


def _patch_tiff_orientation(body: bytearray) -> None:
    """Set the orientation entry of IFD0 of a classic TIFF structure to 1, in place.

    Works on an EXIF block (without its ``Exif\\0\\0`` prefix) and on a whole TIFF file alike;
    nothing else moves. Raises KeyError, ValueError or struct.error on an unexpected layout.
    """
    endian = {b"II": "<", b"MM": ">"}[bytes(body[:2])]
    magic, ifd0 = struct.unpack_from(endian + "HI", body, 2)
    if magic != 42:  # BigTIFF (43) or not TIFF at all
        raise ValueError("not a classic TIFF structure")
    (count,) = struct.unpack_from(endian + "H", body, ifd0)
    for i in range(count):
        entry = ifd0 + 2 + 12 * i
        tag, typ, n = struct.unpack_from(endian + "HHI", body, entry)
        if tag == _ORIENTATION_TAG:
            if typ != 3 or n != 1:  # not the single SHORT the standard prescribes
                raise ValueError("unusual orientation entry")
            struct.pack_into(endian + "H", body, entry + 8, 1)
            return


def _reset_orientation(exif: bytes) -> bytes | None:
    """The EXIF block with its IFD0 orientation set to 1, patched in place (nothing moves).

    Falls back to re-serialising with Pillow if the block is not laid out as expected, and
    drops the EXIF (returns None) if even that fails.
    """
    body = bytearray(exif[len(_EXIF_PREFIX) :] if exif.startswith(_EXIF_PREFIX) else exif)
    try:
        _patch_tiff_orientation(body)
        return _EXIF_PREFIX + bytes(body)
    except (KeyError, ValueError, struct.error):
        pass
    try:
        parsed = PILImage.Exif()
        parsed.load(bytes(body))
        if _ORIENTATION_TAG in parsed:
            parsed[_ORIENTATION_TAG] = 1
        return parsed.tobytes()
    except Exception:
        return None


def _tiff_bytes_for_opencv(p: Path, data: bytes, orientation: int) -> bytes:
    """The TIFF file's bytes with orientation 1, so that OpenCV does not turn the pixels.

    OpenCV's TIFF decoder applies the orientation tag itself, even with IMREAD_UNCHANGED and
    IMREAD_IGNORE_ORIENTATION (seen with OpenCV 5.0; ``cv2.imread`` even fails outright on
    90-degree ones). Orientation is applied here, once, for every format alike.
    """
    if orientation == 1:
        return data
    body = bytearray(data)
    try:
        _patch_tiff_orientation(body)
    except (KeyError, ValueError, struct.error) as exc:
        raise InputError(f"{p}: unsupported TIFF layout for orientation {orientation}") from exc
    return bytes(body)


def _exif_from_tiff_tags(tags: PILImage.Exif) -> bytes | None:
    """An EXIF block from a TIFF's IFD0: descriptive tags and the EXIF/GPS sub-IFDs only."""
    try:
        out = PILImage.Exif()
        for tag in list(tags):
            if tag in _TIFF_LAYOUT_TAGS or tag in (_EXIF_IFD_TAG, _GPS_IFD_TAG):
                continue
            if tag in (700, 33723, 34377):  # XMP, IPTC, Photoshop: not EXIF
                continue
            out[tag] = tags[tag]
        for group in (_EXIF_IFD_TAG, _GPS_IFD_TAG):
            if group in tags:
                sub = dict(tags.get_ifd(group))
                if sub:
                    out[group] = sub
        return out.tobytes() if len(out) else None
    except Exception:
        return None


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


def write_image(
    image: Image,
    path: str | os.PathLike[str],
    *,
    format: str | None = None,
    quality: int | None = None,
) -> None:
    """Write ``image`` to ``path`` atomically, as faithfully as the format allows.

    * 16-bit images are written with 16 bits in PNG and TIFF, with 8 bits elsewhere.
    * Gray stays gray (WebP has no gray: it gets three equal channels; a 16-bit gray+alpha
      TIFF is written as RGBA, since neither OpenCV nor Pillow reads two-sample 16-bit TIFF).
    * Alpha is kept in PNG, WebP and TIFF, and dropped in JPEG and BMP.
    * The ICC profile goes into PNG, JPEG, WebP and TIFF, unless its colour space (gray or
      RGB) does not match the samples written; EXIF into the same (a JPEG takes at most one
      64 KiB segment of EXIF: a longer block is left out).
    * JPEG uses 4:4:4 chroma at quality >= 90 and 4:2:0 below; WebP keeps the colour under
      fully transparent pixels (``exact``).

    The file is written to a hidden temporary file beside the target (``.<name>.<random>.tmp``),
    flushed and fsynced, then renamed over the target, so the target is never partial; on any
    error, or an interrupt, the temporary file is removed.

    Args:
        image: the image; sample values are rounded with ``clip(rint(x * max), 0, max)``.
        path: the output file.
        format: "png", "jpeg"/"jpg", "webp", "tiff"/"tif" or "bmp"; default: from the extension.
        quality: 1..100 for JPEG and WebP (default 95); ignored by the lossless formats.

    Raises:
        UsageError: unknown output format, a quality outside 1..100, or an image too large
            for the format (JPEG: 65500 pixels a side, WebP: 16383).
        InputError: the target is the image's own source file, a directory, in a folder that
            does not exist, or cannot be written.
    """
    target = Path(path)
    fmt = _resolve_format(target, format)
    if quality is None:
        quality = DEFAULT_JPEG_QUALITY
    if isinstance(quality, bool) or not isinstance(quality, int) or not 1 <= quality <= 100:
        raise UsageError(f"JPEG/WebP quality must be an integer from 1 to 100, got {quality!r}")
    limit = _MAX_SIDE.get(fmt)
    if limit is not None and max(image.width, image.height) > limit:
        raise UsageError(
            f"{target}: {image.width}x{image.height} is too large for {fmt} "
            f"(at most {limit} pixels a side); use PNG or TIFF"
        )
    _check_target(image, target)
    encoder = _ENCODERS[fmt]

    def write(fp: BinaryIO) -> None:
        encoder(image, fp, quality)

    _atomic_write(target, write)


def _resolve_format(target: Path, format: str | None) -> str:
    if format is not None:
        name = _FORMAT_ALIASES.get(format.strip().lstrip(".").upper())
        if name is None:
            known = ", ".join(sorted({k.lower() for k in _FORMAT_ALIASES}))
            raise UsageError(f"unknown output format {format!r} (known: {known})")
        return name
    ext = target.suffix.lower()
    if ext not in WRITE_FORMATS:
        known = ", ".join(sorted(WRITE_FORMATS))
        raise UsageError(
            f"{target}: cannot tell the output format from {ext or 'no extension'!r}"
            f" (use one of {known})"
        )
    return WRITE_FORMATS[ext]


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.abspath(a) == os.path.abspath(b)


def _check_target(image: Image, target: Path) -> None:
    if image.path is not None and target.exists() and _same_file(image.path, target):
        raise InputError(f"{target}: refusing to write over the input file")
    if target.is_dir():
        raise InputError(f"{target}: is a directory")
    folder = target.parent
    if not folder.is_dir():
        raise InputError(f"{target}: output folder {folder} does not exist")


def _atomic_write(target: Path, write: Callable[[BinaryIO], None]) -> None:
    """Run ``write`` on a temporary file beside ``target``, then rename it onto ``target``."""
    try:
        with replacing(target) as temp, open(temp, "wb") as fp:
            write(fp)
    except (OSError, ValueError, cv2.error) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else _reason(exc)
        raise InputError(f"{target}: cannot write ({reason})") from exc


_QUANTIZE_CHUNK = 1 << 22  # samples per block: the float temporaries stay ~16 MB


def _quantize(x: np.ndarray, bits: int) -> np.ndarray:
    """Float in [0, 1] -> unsigned integers of ``bits`` bits: ``clip(rint(x * max), 0, max)``.

    Done in blocks of rows into the integer result, so a large image needs no float
    temporaries the size of the image (an 8000 x 8000 RGB result is 768 MB as float32).
    """
    maxval = (1 << bits) - 1
    dtype = np.uint8 if bits == 8 else np.uint16
    x = np.asarray(x, dtype=np.float32)
    out = np.empty(x.shape, dtype=dtype)
    if x.ndim == 0 or x.size == 0:
        flat = [(x, out)]
    else:
        rows = max(1, _QUANTIZE_CHUNK // max(1, x[0].size))
        flat = [(x[i : i + rows], out[i : i + rows]) for i in range(0, x.shape[0], rows)]
    for block, target in flat:
        with np.errstate(invalid="ignore"):
            scaled = np.rint(block * np.float32(maxval))
        np.nan_to_num(scaled, copy=False, nan=0.0)
        np.clip(scaled, 0, maxval, out=scaled)
        target[...] = scaled
    return out


def _samples(image: Image, bits: int, *, alpha: bool, rgb: bool = False) -> np.ndarray:
    """(H, W, S) integer samples: gray or RGB, then alpha if requested and present."""
    color = image.pixels
    if rgb and color.shape[2] == 1:
        color = np.repeat(color, 3, axis=2)
    planes = [_quantize(color, bits)]
    if alpha and image.alpha is not None:
        planes.append(_quantize(image.alpha, bits)[:, :, None])
    return np.ascontiguousarray(np.concatenate(planes, axis=2) if len(planes) > 1 else planes[0])


def _pil_from_samples(samples: np.ndarray) -> PILImage.Image:
    if samples.shape[2] == 1:
        return PILImage.fromarray(samples[:, :, 0])
    return PILImage.fromarray(samples)


def _icc_for(image: Image, *, rgb: bool) -> bytes | None:
    """The image's ICC profile if it describes the samples written (gray or RGB), else None.

    A gray image written as RGB (WebP) must not carry a gray profile, nor RGB data one
    for gray; readers reject or misrender such files. Bytes 16..20 of an ICC header name
    its colour space.
    """
    icc = image.icc_profile
    if not icc or len(icc) < 20:
        return None
    space = icc[16:20]
    if (rgb and space == b"GRAY") or (not rgb and space == b"RGB "):
        return None
    return icc


def _pil_metadata(image: Image, *, rgb: bool, exif_limit: int | None = None) -> dict[str, bytes]:
    meta: dict[str, bytes] = {}
    icc = _icc_for(image, rgb=rgb)
    if icc:
        meta["icc_profile"] = icc
    if image.exif and (exif_limit is None or len(image.exif) <= exif_limit + len(_EXIF_PREFIX)):
        meta["exif"] = image.exif
    return meta


def _encode_png(image: Image, fp: BinaryIO, quality: int) -> None:
    if image.bit_depth == 8:
        pil = _pil_from_samples(_samples(image, 8, alpha=True))
        pil.save(fp, format="PNG", **_pil_metadata(image, rgb=image.mode == "rgb"))
        return
    samples = _samples(image, 16, alpha=True)
    channels = samples.shape[2]
    if channels == 2:  # gray + alpha: OpenCV cannot write it
        data = _png16_gray_alpha(samples)
    else:
        if channels == 3:
            samples = samples[:, :, ::-1]
        elif channels == 4:
            samples = samples[:, :, [2, 1, 0, 3]]
        ok, buf = cv2.imencode(".png", np.ascontiguousarray(samples))
        if not ok:
            raise OSError("OpenCV could not encode the PNG")
        data = buf.tobytes()
    fp.write(_png_add_metadata(data, _icc_for(image, rgb=image.mode == "rgb"), image.exif))


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)


def _png16_gray_alpha(samples: np.ndarray) -> bytes:
    """A 16-bit gray+alpha PNG (colour type 4), rows filtered with Sub."""
    height, width, _ = samples.shape
    raw = samples.astype(">u2").view(np.uint8).reshape(height, width * 4)
    filtered = raw.copy()
    filtered[:, 4:] = raw[:, 4:] - raw[:, :-4]  # uint8 arithmetic wraps modulo 256
    rows = np.concatenate([np.ones((height, 1), np.uint8), filtered], axis=1)
    header = struct.pack(">IIBBBBB", width, height, 16, 4, 0, 0, 0)
    return (
        _PNG_SIGNATURE
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", zlib.compress(rows.tobytes(), 6))
        + _png_chunk(b"IEND", b"")
    )


def _png_add_metadata(data: bytes, icc: bytes | None, exif: bytes | None) -> bytes:
    """Insert iCCP and eXIf chunks right after IHDR (before any image data)."""
    extra = b""
    if icc:
        extra += _png_chunk(b"iCCP", b"ICC Profile\x00\x00" + zlib.compress(icc))
    if exif:
        body = exif[len(_EXIF_PREFIX) :] if exif.startswith(_EXIF_PREFIX) else exif
        extra += _png_chunk(b"eXIf", body)
    if not extra:
        return data
    (ihdr_len,) = struct.unpack_from(">I", data, len(_PNG_SIGNATURE))
    end_of_ihdr = len(_PNG_SIGNATURE) + 12 + ihdr_len
    return data[:end_of_ihdr] + extra + data[end_of_ihdr:]


def _encode_jpeg(image: Image, fp: BinaryIO, quality: int) -> None:
    pil = _pil_from_samples(_samples(image, 8, alpha=False))
    pil.save(
        fp,
        format="JPEG",
        quality=quality,
        subsampling=0 if quality >= 90 else 2,
        optimize=True,
        **_pil_metadata(image, rgb=image.mode == "rgb", exif_limit=_JPEG_MAX_EXIF),
    )


def _encode_webp(image: Image, fp: BinaryIO, quality: int) -> None:
    pil = _pil_from_samples(_samples(image, 8, alpha=True, rgb=True))
    meta = _pil_metadata(image, rgb=True)
    pil.save(fp, format="WEBP", quality=quality, method=4, exact=True, **meta)


def _encode_bmp(image: Image, fp: BinaryIO, quality: int) -> None:
    _pil_from_samples(_samples(image, 8, alpha=False)).save(fp, format="BMP")


def _encode_tiff(image: Image, fp: BinaryIO, quality: int) -> None:
    """Baseline TIFF, one IFD, Deflate with horizontal predictor, 8 or 16 bits per sample."""
    bits = image.bit_depth
    # 16-bit gray+alpha is valid TIFF, but neither OpenCV nor Pillow reads it back: it is
    # written as RGBA (three equal channels) so that it stays readable, losslessly.
    as_rgb = bits == 16 and image.alpha is not None and image.pixels.shape[2] == 1
    samples = _samples(image, bits, alpha=True, rgb=as_rgb)
    height, width, spp = samples.shape
    # Predictor 2: each sample minus its left neighbour, modulo 2**bits.
    diff = samples.copy()
    diff[:, 1:] = samples[:, 1:] - samples[:, :-1]
    row_bytes = width * spp * (bits // 8)
    rows_per_strip = max(1, min(height, (1 << 18) // max(1, row_bytes)))
    little = diff.astype("<u2") if bits == 16 else diff
    strips = [
        zlib.compress(little[r : r + rows_per_strip].tobytes(), 6)
        for r in range(0, height, rows_per_strip)
    ]

    ifd = TiffImagePlugin.ImageFileDirectory_v2(prefix=b"II")
    if image.exif:
        _tiff_add_exif(ifd, image.exif)
    short, long_, undefined = 3, 4, 7
    relative_offsets = np.concatenate([[0], np.cumsum([len(s) for s in strips])[:-1]])
    tags: list[tuple[int, object, int]] = [
        (256, width, long_),
        (257, height, long_),
        (258, (bits,) * spp, short),
        (259, 8, short),  # Adobe Deflate
        (262, 2 if spp >= 3 else 1, short),  # RGB / BlackIsZero
        # Pillow stores strip offsets relative to the end of the IFD (checked below).
        (273, tuple(int(o) for o in relative_offsets), long_),
        (277, spp, short),
        (278, rows_per_strip, long_),
        (279, tuple(len(s) for s in strips), long_),
        (284, 1, short),  # contiguous samples
        (317, 2, short),  # horizontal differencing
        (339, (1,) * spp, short),  # unsigned integers
    ]
    if image.alpha is not None:
        tags.append((338, (2,), short))  # unassociated (straight) alpha
    icc = _icc_for(image, rgb=spp >= 3)
    if icc:
        tags.append((_ICC_TAG, icc, undefined))
    for tag, value, typ in tags:
        ifd[tag] = value
        ifd.tagtype[tag] = typ
    header = b"II*\x00" + struct.pack("<I", 8)
    directory = ifd.tobytes(8)
    data_start = len(header) + len(directory)

    check = TiffImagePlugin.ImageFileDirectory_v2(header)
    buffer = io.BytesIO(header + directory)
    buffer.seek(len(header))
    check.load(buffer)
    offsets = check.get(273)
    offsets = offsets if isinstance(offsets, tuple) else (offsets,)
    if tuple(int(o) for o in offsets) != tuple(int(o) + data_start for o in relative_offsets):
        raise RuntimeError("TIFF writer: unexpected strip offsets from Pillow's IFD serialiser")

    fp.write(header)
    fp.write(directory)
    for strip in strips:
        fp.write(strip)


def _tiff_add_exif(ifd: TiffImagePlugin.ImageFileDirectory_v2, exif: bytes) -> None:
    """Copy EXIF into a TIFF IFD the way Pillow's TIFF writer does (descriptive tags only)."""
    entries: list[tuple[int, object]] = []
    try:
        parsed = PILImage.Exif()
        parsed.load(exif)
        for tag in list(parsed):
            if tag in _TIFF_LAYOUT_TAGS:
                continue
            if tag in (_EXIF_IFD_TAG, _GPS_IFD_TAG):
                sub = dict(parsed.get_ifd(tag))
                if sub:
                    entries.append((tag, sub))
            else:
                entries.append((tag, parsed[tag]))
    except Exception:  # unreadable EXIF is left out rather than failing the write
        return
    for tag, value in entries:
        ifd[tag] = value
        if isinstance(value, dict):
            ifd.tagtype[tag] = 4  # LONG: offset of a sub-IFD


_ENCODERS: dict[str, Callable[[Image, BinaryIO, int], None]] = {
    "PNG": _encode_png,
    "JPEG": _encode_jpeg,
    "WEBP": _encode_webp,
    "TIFF": _encode_tiff,
    "BMP": _encode_bmp,
}


# --------------------------------------------------------------------------------------------
# JPEG quality
# --------------------------------------------------------------------------------------------


def _ijg_table(base: np.ndarray, quality: int, ceiling: int) -> np.ndarray:
    scale = 5000 // quality if quality < 50 else 200 - 2 * quality
    return np.clip((base * scale + 50) // 100, 1, ceiling)


def estimate_jpeg_quality(path: str | os.PathLike[str]) -> int | None:
    """Estimate the libjpeg quality (1..100) a JPEG was saved at; None for other formats.

    Compares the file's quantisation tables with the standard IJG tables scaled by libjpeg's
    quality formula and returns the closest quality (sum of absolute differences over the
    luminance table, plus the chrominance table when present). Files saved with non-IJG
    tables (some cameras and editors) get the nearest IJG equivalent.

    Raises:
        InputError: the file is missing, a directory, empty or an unreadable image.
    """
    p = Path(path)
    _check_readable_file(p)
    with _pillow_guard():
        try:
            with PILImage.open(p) as pil:
                if pil.format not in ("JPEG", "MPO"):
                    return None
                tables = dict(getattr(pil, "quantization", None) or {})
        except PILImage.UnidentifiedImageError:
            return None
        except Exception as exc:
            raise InputError(f"{p}: cannot read JPEG header ({_reason(exc)})") from exc
    if 0 not in tables:
        return None
    luma = np.asarray(tables[0], dtype=np.int64).ravel()
    chroma = np.asarray(tables[1], dtype=np.int64).ravel() if 1 in tables else None
    if luma.size != 64 or (chroma is not None and chroma.size != 64):
        return None
    ceiling = 255 if luma.max() <= 255 and (chroma is None or chroma.max() <= 255) else 32767
    best_quality, best_error = 0, None
    for quality in range(1, 101):
        error = int(np.abs(luma - _ijg_table(IJG_LUMA, quality, ceiling)).sum())
        if chroma is not None:
            error += int(np.abs(chroma - _ijg_table(_IJG_CHROMA, quality, ceiling)).sum())
        if best_error is None or error <= best_error:  # ties: the higher quality
            best_quality, best_error = quality, error
    return best_quality

"""Test images, tiny weights files and a local HTTP server for the restore tests."""

from __future__ import annotations

import functools
import http.server
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from PIL import Image as PILImage
from PIL import ImageCms, ImageDraw

from lipt_core import create_model, save_model


def pattern(h: int = 48, w: int = 64, channels: int = 3, seed: int = 0) -> np.ndarray:
    """Float (h, w, channels) in [0, 1]: gradients, a sine texture, text and a little noise."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    base = [xx / max(w - 1, 1), yy / max(h - 1, 1), 0.5 + 0.5 * np.sin(xx / 5.0) * np.cos(yy / 7.0)]
    img = np.stack(base[:channels], axis=-1)
    text = PILImage.new("L", (w, h), 0)
    ImageDraw.Draw(text).text((2, 2), "LIPT 42", fill=255)
    img[np.asarray(text) > 127] = 0.05
    img += np.random.default_rng(seed).normal(0.0, 0.01, img.shape)
    return np.clip(img, 0.0, 1.0)


def u8(h: int = 48, w: int = 64, channels: int = 3) -> np.ndarray:
    arr = np.rint(pattern(h, w, channels) * 255).astype(np.uint8)
    return arr[:, :, 0] if channels == 1 else arr


def srgb_icc() -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def make_images(folder: Path, h: int = 48, w: int = 64) -> dict[str, Path]:
    """One file of each kind the restore path must keep: depth, gray, alpha, EXIF, ICC."""
    import cv2

    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    paths["rgb8"] = folder / "rgb8.png"
    PILImage.fromarray(u8(h, w)).save(paths["rgb8"])
    paths["rgb16"] = folder / "rgb16.png"
    arr16 = np.rint(pattern(h, w) * 65535).astype(np.uint16)
    cv2.imwrite(str(paths["rgb16"]), arr16[:, :, ::-1])
    paths["gray8"] = folder / "gray8.png"
    PILImage.fromarray(u8(h, w, 1)).save(paths["gray8"])
    paths["rgba"] = folder / "rgba.png"
    alpha = np.tile(np.linspace(0, 255, w).astype(np.uint8), (h, 1))
    PILImage.fromarray(np.dstack([u8(h, w), alpha])).save(paths["rgba"])
    paths["rotated"] = folder / "rotated.jpg"
    exif = PILImage.Exif()
    exif[0x0112] = 6  # stored sideways: upright is the stored image rotated 90 degrees clockwise
    exif[0x010F] = "LiptCam"
    PILImage.fromarray(u8(w, h)).save(paths["rotated"], quality=95, exif=exif.tobytes())
    paths["icc"] = folder / "icc.png"
    PILImage.fromarray(u8(h, w)).save(paths["icc"], icc_profile=srgb_icc())
    return paths


def tiny_model(
    *, scale: int = 2, colors: int = 3, seed: int = 0, inference: bool = True, **overrides
) -> torch.nn.Module:
    """A small, fast LIPT with well-conditioned random weights (see `well_conditioned`)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        options = {"channels": 8, "num_stages": 2, **overrides}
        model = create_model(
            "lipt-tiny", scale=scale, colors=colors, inference=inference, **options
        )
    return well_conditioned(model).eval()


def well_conditioned(model: torch.nn.Module, gain: float = 0.05) -> torch.nn.Module:
    """Scale the attention's input projection down, so random weights give moderate attention
    logits (LIPT has no 1/sqrt(d) scaling: unscaled random logits make a hard, chaotic argmax,
    which trained models do not have)."""
    with torch.no_grad():
        for name, module in model.named_modules():
            if name.endswith("project_inp") and isinstance(module, torch.nn.Conv2d):
                module.weight.mul_(gain)
                module.bias.mul_(gain)
    return model


def tiny_weights(path: Path, *, task: str = "sr", scale: int = 2, colors: int = 3, **extra) -> Path:
    save_model(tiny_model(scale=scale, colors=colors), path, task=task, **extra)
    return path


@contextmanager
def serve_folder(folder: Path) -> Iterator[tuple[str, list[str]]]:
    """An HTTP server on 127.0.0.1 serving ``folder``: (base URL, list of requested paths)."""
    requests: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def do_GET(self) -> None:
            requests.append(self.path)
            super().do_GET()

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Handler, directory=str(folder))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", requests
    finally:
        server.shutdown()
        server.server_close()
        thread.join()

"""Restore real images with a LIPT model: super-resolution, denoising, JPEG artifact removal.

A :class:`Restorer` wraps a model with what its weights say about it (task, scale, colours,
window, form) and restores an :class:`lipt_core.imageio.Image` of any size; one object serves
``sr``, ``denoise`` and ``car`` (this LIPT has no noise-level or quality input: a model is
trained for one task, and its metadata may name the sigma or JPEG quality it was trained for).

What it takes care of:

* **Size.** Through the tiling engine (`lipt_core.tiling`): the whole image at once when it
  fits the memory budget, else window-aligned, overlapping, feathered tiles. The tile size is
  chosen from the memory available (RAM on the CPU, free memory on CUDA); on out-of-memory the
  image is redone with tiles half as large, down to a floor, then a clear error.
* **Colours.** An RGB model given a gray image runs on the gray replicated into R, G and B; the
  result is turned back into gray (BT.601 luma), so gray stays gray. A gray model given an RGB
  image restores the luma (BT.601 Y) and keeps the chroma (Cb, Cr), upscaled with bicubic
  interpolation for super-resolution: the usual way to apply a luma-trained model to colour.
  An RGB restorer may carry a gray companion (:meth:`Restorer.attach_gray`, a 1-channel model of
  the same task and scale, trained on gray photos); gray images then go to it instead.
* **Alpha.** Super-resolution upscales it with bicubic interpolation (clipped to [0, 1]);
  denoising and artifact removal pass it through untouched.
* **Precision.** Pixels stay float from reading to writing, so 16-bit images keep their
  precision; [0, 1] is mapped to the model's [0, rgb_range] and back. The CPU computes in fp32,
  or in bf16 mixed precision when asked and the CPU has native bf16; CUDA in bf16 where supported
  (``precision="auto"``), or as asked. A tile whose output is not finite is redone in fp32, with
  a warning.
* **Self-ensemble.** ``ensemble=True`` restores each tile in its 8 flips and rotations and
  averages the 8 results, turned back (:func:`dihedral_average`): 8 times the compute for a
  cleaner result, the "+" of the EDSR and SwinIR papers. For JPEG artifact removal each tile is
  first extended to whole 16-pixel blocks, so that every orientation keeps the JPEG grid where
  the network learnt it.
* **Metadata.** Bit depth, gray/colour, ICC profile and EXIF travel to the output image.
"""

from __future__ import annotations

import math
import os
import platform
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from lipt_core.errors import LiptError, UsageError
from lipt_core.imageio import Image
from lipt_core.models.config import LUMA_BT601
from lipt_core.tiling import TileGrid, check_tiling, plan_tiles, tiled_forward

if TYPE_CHECKING:
    from lipt_core.models.lipt import LIPT

TASKS = ("sr", "denoise", "car")
PRECISIONS = ("auto", "fp32", "fp16", "bf16")
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}

CPU_MEMORY_CAP = 1 << 30
"""Most memory a tile's activations may take on the CPU (bytes). Larger tiles are no faster
there, and the cap keeps a large image's peak memory predictable (the output itself comes on
top: 4 bytes per output sample)."""

MIN_TILE = 64
"""Smallest tile (input pixels, rounded up to the window) the out-of-memory retry goes down to."""

MAX_TILE_BATCH = 8
"""Most tiles batched through the network at once on CUDA."""


Warn = Callable[[str], None]
TileCallback = Callable[[int, int], None]


JPEG_GRID = 16
"""JPEG's coding grid in pixels: 8x8 luma blocks, 16x16 for 4:2:0 chroma (a multiple of both)."""


def dihedral_average(fn: Callable[[Tensor], Tensor], x: Tensor, *, align: int = 1) -> Tensor:
    """The mean of ``fn`` over the 8 flips and 90-degree rotations of ``x``, each turned back.

    Args:
        fn: (N, C, H, W) -> (N, C', H*s, W*s), for any H and W (a rotation swaps them) and
            equivariant in layout: what ``fn`` does to a rotated image, rotated back, is another
            estimate of ``fn(x)``, as for any image restoration network.
        x: (N, C, H, W).
        align: first extend the bottom and right edges (replicated) to multiples of this, so
            that a grid of ``align``-pixel blocks anchored at the top-left corner maps onto
            itself under every flip and rotation. JPEG artifact removal needs it
            (:data:`JPEG_GRID`): its network was trained with the 8x8 blocks starting at the
            top-left corner, and flipping a side that is not a multiple of 8 would move them.
            The encoder extends partial blocks the same way. The result is cropped back.

    Returns:
        (N, C', H*s, W*s) float32: the average of the 8 estimates. They run one after another,
        so the peak memory is that of one ``fn`` call plus the running sum.
    """
    height, width = x.shape[-2:]
    pad_bottom, pad_right = -height % align, -width % align
    if pad_bottom or pad_right:
        x = torch.nn.functional.pad(x, (0, pad_right, 0, pad_bottom), mode="replicate")
    total: Tensor | None = None
    for flip in (False, True):
        flipped = x.flip(-1) if flip else x
        for turns in range(4):
            y = fn(torch.rot90(flipped, turns, dims=(-2, -1)) if turns else flipped)
            y = torch.rot90(y, -turns, dims=(-2, -1)) if turns else y
            y = y.flip(-1) if flip else y
            total = y.float() if total is None else total.add_(y)
    assert total is not None
    scale = total.shape[-1] // x.shape[-1]
    return total[..., : height * scale, : width * scale].div_(8.0)


class OutOfMemory(LiptError):
    """The model does not fit the device's memory even with the smallest tiles."""


class NonFiniteOutput(LiptError):
    """The model produced NaN or infinity in fp32 (broken or mismatched weights)."""


# ---------------------------------------------------------------------------------------------
# Devices and precision


def resolve_device(spec: str | torch.device = "auto") -> torch.device:
    """``auto`` (CUDA, else MPS, else CPU), ``cpu``, ``cuda``, ``cuda:N`` or ``mps``."""
    if isinstance(spec, torch.device):
        return spec
    text = str(spec).strip().lower()
    if text == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if text == "cpu":
        return torch.device("cpu")
    if text == "mps":
        if not _mps_available():
            raise UsageError("device mps: Apple MPS is not available here (use cpu or auto)")
        return torch.device("mps")
    match = re.fullmatch(r"cuda(?::(\d+))?", text)
    if match:
        if not torch.cuda.is_available():
            raise UsageError(f"device {spec}: CUDA is not available here (use cpu or auto)")
        index = int(match[1]) if match[1] is not None else torch.cuda.current_device()
        count = torch.cuda.device_count()
        if index >= count:
            raise UsageError(
                f"device {spec}: there {'is' if count == 1 else 'are'} only {count} CUDA "
                f"device{'' if count == 1 else 's'} (cuda:0..cuda:{count - 1})"
            )
        return torch.device("cuda", index)
    raise UsageError(f"unknown device {spec!r}: use auto, cpu, cuda, cuda:N or mps")


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bf16 in hardware (AVX512-BF16 or AMX), which is where oneDNN's
    bf16 convolutions run about twice as fast as fp32 ones; elsewhere bf16 is emulated, slower.

    On x86 this asks for the instructions themselves: oneDNN's own check
    (``torch.ops.mkldnn._is_mkldnn_bf16_supported``) also says yes on plain AVX-512, where a bf16
    training step measured 2.4x slower than fp32. Elsewhere (ARM) oneDNN's check is the native one.
    """
    if platform.machine().lower() in ("x86_64", "amd64", "i386", "i686", "x86"):
        checks = [
            getattr(torch.cpu, name, None)
            for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
        ]
    else:
        checks = [getattr(getattr(torch.ops, "mkldnn", None), "_is_mkldnn_bf16_supported", None)]
    try:
        return any(bool(check()) for check in checks if check is not None)
    except RuntimeError:
        return False


def resolve_precision(precision: str, device: torch.device) -> torch.dtype:
    """The compute dtype. ``auto``: fp32 off CUDA, on CUDA bf16 where supported, else fp32.

    ``bf16`` also runs on a CPU with native bf16 (mixed precision: convolutions and matrix
    products in bf16, softmax and reductions in fp32); it is refused where it would be emulated.
    """
    name = str(precision).strip().lower()
    if name not in PRECISIONS:
        raise UsageError(f"unknown precision {precision!r}: use {', '.join(PRECISIONS)}")
    if device.type != "cuda":
        if name == "bf16" and device.type == "cpu":
            if not cpu_has_native_bf16():
                raise UsageError(
                    "precision bf16 on this CPU would be emulated (it has neither AVX512-BF16 "
                    "nor AMX), slower than fp32; use fp32"
                )
            return torch.bfloat16
        if name in ("fp16", "bf16"):
            raise UsageError(
                f"precision {name} needs a CUDA device; {device.type} computes in fp32"
            )
        return torch.float32
    if name == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    if name == "bf16" and not torch.cuda.is_bf16_supported():
        raise UsageError(f"precision bf16 is not supported by {torch.cuda.get_device_name(device)}")
    return DTYPES[name]


def precision_name(dtype: torch.dtype) -> str:
    return {v: k for k, v in DTYPES.items()}[dtype]


def _is_out_of_memory(error: BaseException) -> bool:
    if isinstance(error, torch.OutOfMemoryError | MemoryError):
        return True
    text = str(error)
    return isinstance(error, RuntimeError) and (
        "out of memory" in text or "can't allocate memory" in text or "MPS backend out" in text
    )


def available_memory(device: torch.device) -> int:
    """Bytes the device can still give: free CUDA memory, else available RAM."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    if device.type == "mps":
        try:
            recommended = int(torch.mps.recommended_max_memory())
            return max(recommended - int(torch.mps.current_allocated_memory()), 0)
        except (AttributeError, RuntimeError):
            pass
    return available_ram()


def available_ram() -> int:
    """MemAvailable from /proc/meminfo where there is one, else physical memory (POSIX)."""
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return 8 << 30


# ---------------------------------------------------------------------------------------------
# The model and what its weights say about it


@dataclass(frozen=True)
class ModelInfo:
    """What a Restorer's model is: from the network's configuration and the weights' metadata."""

    task: str | None
    scale: int
    colors: int
    window: int
    form: str
    rgb_range: float
    channels: int
    num_stages: int
    sigma: str | None = None
    quality: str | None = None
    source: str | None = None
    metadata: Mapping[str, str] = field(default_factory=dict, repr=False)

    @property
    def description(self) -> str:
        return (
            f"LIPT {self.num_stages} stages, {self.channels} channels, window {self.window}, "
            f"x{self.scale}, {'RGB' if self.colors == 3 else 'gray'}"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "scale": self.scale,
            "colors": self.colors,
            "window": self.window,
            "form": self.form,
            "channels": self.channels,
            "num_stages": self.num_stages,
            "sigma": self.sigma,
            "quality": self.quality,
            "source": self.source,
        }


def _task_of(metadata: Mapping[str, str], scale: int) -> str | None:
    task = metadata.get("task")
    if task:
        return task
    if metadata.get("source_layout") == "published" and scale > 1:
        return "sr"  # the published checkpoints are all super-resolution
    return None


def check_task(info: ModelInfo, task: str) -> None:
    """Raise UsageError unless the model can do ``task``."""
    if task not in TASKS:
        raise UsageError(f"unknown task {task!r}: use {', '.join(TASKS)}")
    where = f"{info.source}: " if info.source else ""
    if info.task and info.task != task:
        raise UsageError(
            f"{where}these are {info.task} weights, not {task} weights "
            f"(use `lipt {info.task}`, or {task} weights)"
        )
    if task == "sr" and info.scale == 1:
        raise UsageError(f"{where}a x1 model cannot do super-resolution")
    if task != "sr" and info.scale != 1:
        raise UsageError(f"{where}a x{info.scale} model is for super-resolution, not {task}")


def check_condition(info: ModelInfo, name: str, requested: float | None) -> str | None:
    """Compare a requested noise level / JPEG quality with the one the weights declare.

    The metadata key (``sigma`` or ``quality``) may hold one number (the model was trained for
    that level only), a range ``LOW-HIGH``, or ``blind``; absent means unknown (accepted). Raises
    UsageError when the request is outside what the weights declare; returns a warning when the
    weights declare nothing and a level was requested, else None.
    """
    declared = (info.metadata.get(name) or "").strip().lower()
    if requested is None or declared in ("", "blind", "any"):
        return None
    where = f"{info.source}: " if info.source else ""
    label = {"sigma": "noise level sigma", "quality": "JPEG quality"}.get(name, name)
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(?:-\s*(\d+(?:\.\d+)?))?", declared)
    if not match:
        return f"{where}cannot read the weights' {name} {declared!r}; not checked"
    low = float(match[1])
    high = float(match[2]) if match[2] else low
    if not low <= requested <= high:
        span = f"{low:g}" if low == high else f"{low:g} to {high:g}"
        raise UsageError(
            f"{where}these weights are for {label} {span}, not {requested:g}; "
            f"pass weights trained for {requested:g} (or blind weights)"
        )
    return None


# ---------------------------------------------------------------------------------------------
# Memory


def activation_bytes_per_pixel(model: LIPT, dtype: torch.dtype = torch.float32) -> int:
    """A conservative estimate of peak inference memory per input pixel (bytes).

    Terms: the live feature maps around a stage (about 8 of channels x r_expand floats), the
    attention (up to 4 x w^2 floats per pixel when maps are materialised) and the upsampled
    output with its copies (4 x colors x scale^2). Measured peaks (VmHWM, CPU, fp32) are 1.7,
    3.8 and 7.5 KB per pixel for lipt-tiny, -small and -base at x4; this gives 2.5, 3.8 and 9.5 KB
    before the 1.5x safety factor.
    """
    config = model.config
    floats = (
        8 * config.channels * config.r_expand
        + 4 * config.window_size**2
        + 4 * config.colors * config.scale**2
    )
    item = 4 if dtype == torch.float32 else 2
    # The attention's softmax stays in fp32 under autocast: only the features halve.
    if item == 2:
        floats = 4 * config.channels * config.r_expand + floats // 2
    return int(1.5 * floats * 4)


# ---------------------------------------------------------------------------------------------
# The restorer


class Restorer:
    """A model ready to restore images of any size on one device.

    Args:
        model: a LIPT, either form (a training form is folded into the inference form once).
        metadata: what its checkpoint says (``load_checkpoint``'s second value): task, sigma,
            quality, ... Missing keys are unknown, not errors.
        task: the task this restorer is for; checked against the metadata and the scale.
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:N``, ``mps`` or a torch.device.
        precision: ``auto``, ``fp32``, ``fp16`` or ``bf16`` (half precisions on CUDA only).
        tile: ``"auto"`` (from the memory budget), None or 0 (always the whole image), or a tile
            size in input pixels (rounded down to a multiple of the window).
        tile_overlap: overlap between tiles in input pixels; None: 4 windows, at least 16
            (a quarter of an explicit tile smaller than 4 times that, at least a window).
        batch_size: tiles per forward pass: ``"auto"`` (1 on the CPU, more on CUDA when they
            fit) or a number.
        memory_budget: bytes the activations of one forward pass may use; None: from the
            device (CPU: half the available RAM, at most `CPU_MEMORY_CAP`; CUDA: 80 % of free).
        ensemble: average each tile over its 8 flips and rotations (:func:`dihedral_average`;
            8 times slower).
        on_warning: called with a one-line message (fp32 redo, smaller tiles after OOM, ...).
        source: where the weights came from, for messages.
    """

    def __init__(
        self,
        model: LIPT,
        metadata: Mapping[str, str] | None = None,
        *,
        task: str | None = None,
        device: str | torch.device = "auto",
        precision: str = "auto",
        tile: int | str | None = "auto",
        tile_overlap: int | None = None,
        batch_size: int | str = "auto",
        memory_budget: int | None = None,
        ensemble: bool = False,
        on_warning: Warn | None = None,
        source: str | None = None,
    ) -> None:
        from lipt_core.reparam import reparameterize

        metadata = dict(metadata or {})
        config = model.config
        if not getattr(model, "inference", True):
            model = reparameterize(model)
        self.device = resolve_device(device)
        self.dtype = resolve_precision(precision, self.device)
        self.model = model.eval().to(self.device)
        self.info = ModelInfo(
            task=_task_of(metadata, config.scale),
            scale=config.scale,
            colors=config.colors,
            window=config.window_size,
            form="inference",  # a training form is folded above
            rgb_range=float(config.rgb_range),
            channels=config.channels,
            num_stages=config.num_stages,
            sigma=metadata.get("sigma"),
            quality=metadata.get("quality"),
            source=source,
            metadata=metadata,
        )
        if task is not None:
            check_task(self.info, task)
            if self.info.task is None:
                self.info = _replace(self.info, task=task)
        self.on_warning = on_warning
        self._overlap_given = tile_overlap is not None
        self.tile_overlap = self._check_overlap(tile_overlap)
        self.tile = self._check_tile(tile)
        if batch_size != "auto" and (not isinstance(batch_size, int) or batch_size < 1):
            raise UsageError(f"batch size must be a positive integer or 'auto', got {batch_size!r}")
        self.batch_size = batch_size
        self.memory_budget = memory_budget
        self.ensemble = bool(ensemble)
        self._tile_cap: int | None = None  # lowered after an out-of-memory error
        self.bytes_per_pixel = activation_bytes_per_pixel(self.model, self.dtype)
        self.gray_companion: Restorer | None = None

    @classmethod
    def from_weights(
        cls,
        weights: str | os.PathLike,
        *,
        task: str | None = None,
        window_size: int | None = None,
        download_progress: Callable[[int, int | None], None] | None = None,
        cache_dir: str | os.PathLike | None = None,
        source: str | None = None,
        **options: Any,
    ) -> Restorer:
        """A Restorer from a weights file or an ``https://`` URL (``#sha256=HEX`` to pin it).

        URLs are downloaded once into the cache (`lipt_core.weights`); ``source`` names the
        weights in messages (default: ``weights`` itself); ``options`` are those of the
        constructor.
        """
        from lipt_core.checkpoint import load_checkpoint
        from lipt_core.weights import resolve_weights

        path = resolve_weights(weights, cache_dir=cache_dir, progress=download_progress)
        model, metadata = load_checkpoint(path, window_size=window_size)
        return cls(model, metadata, task=task, source=source or str(weights), **options)

    def attach_gray(self, companion: Restorer) -> None:
        """Send gray images to `companion`, a 1-channel restorer of this one's task and scale."""
        mine, theirs = self.info, companion.info
        if mine.colors != 3 or theirs.colors != 1:
            raise UsageError("a gray companion needs an RGB restorer and a 1-channel model")
        if (mine.task, mine.scale) != (theirs.task, theirs.scale):
            raise UsageError(
                f"gray companion {theirs.source}: {theirs.task} x{theirs.scale}, "
                f"not {mine.task} x{mine.scale}"
            )
        self.gray_companion = companion

    def for_image(self, image: Image) -> Restorer:
        """The restorer that handles `image`: the gray companion for a gray one, if attached."""
        if self.gray_companion is not None and image.pixels.shape[2] == 1:
            return self.gray_companion
        return self

    # -- options --------------------------------------------------------------------------

    def _check_overlap(self, overlap: int | None) -> int:
        if overlap is None:
            return max(16, 4 * self.info.window)
        if isinstance(overlap, bool) or not isinstance(overlap, int) or overlap < 0:
            raise UsageError(f"tile overlap must be an integer >= 0, got {overlap!r}")
        return overlap

    def _check_tile(self, tile: int | str | None) -> int | str | None:
        if tile is None or tile == 0:
            return None
        if tile == "auto":
            return "auto"
        if isinstance(tile, bool) or not isinstance(tile, int) or tile < 0:
            raise UsageError(
                f"tile must be 'auto', 0 (whole image) or a size in pixels, got {tile!r}"
            )
        window = self.info.window
        aligned = tile // window * window
        if aligned < window:
            raise UsageError(f"tile {tile} is smaller than the attention window {window}")
        if not self._overlap_given:
            # The default overlap is a quarter of a small tile (at least a window).
            quarter = max(window, aligned // 4 // window * window)
            self.tile_overlap = min(self.tile_overlap, quarter, max(aligned - window, 0))
        check_tiling(aligned, self.tile_overlap, window)
        return aligned

    @property
    def precision(self) -> str:
        return precision_name(self.dtype)

    # -- planning -------------------------------------------------------------------------

    def budget(self, height: int, width: int, channels: int | None = None) -> int:
        """Bytes one forward pass may use for an image of this size."""
        if self.memory_budget is not None:
            return int(self.memory_budget)
        available = available_memory(self.device)
        if self.device.type == "cuda":
            return int(0.8 * available)
        # On the CPU the output and the input live in the same RAM.
        channels = channels or self.info.colors
        buffers = 4 * channels * height * width * (1 + self.info.scale**2)
        return int(min(CPU_MEMORY_CAP, max(available - buffers, 0) * 0.5))

    def tile_for(self, height: int, width: int) -> int | None:
        """The tile size this restorer uses for an image (None: the whole image at once)."""
        window = self.info.window
        floor = max(MIN_TILE, self.tile_overlap + window)
        floor = -(-floor // window) * window
        if self.tile is None:
            tile = None
        elif self.tile != "auto":
            tile = int(self.tile)
        else:
            padded = (-(-height // window) * window) * (-(-width // window) * window)
            pixels = self.budget(height, width) / self.bytes_per_pixel
            if padded <= pixels:
                tile = None
            else:
                # The last tile of a row may be window - 1 longer.
                tile = max(math.isqrt(int(pixels)) - window, floor) // window * window
        if self._tile_cap is not None:
            tile = self._tile_cap if tile is None else min(tile, self._tile_cap)
        if tile is not None and tile >= max(height, width):
            tile = None
        return tile

    def plan(self, height: int, width: int) -> TileGrid:
        """The tiles an image of this size is restored in."""
        return plan_tiles(
            height,
            width,
            tile=self.tile_for(height, width),
            overlap=self.tile_overlap,
            window=self.info.window,
        )

    def _batch_for(self, grid: TileGrid) -> int:
        if self.batch_size != "auto":
            return int(self.batch_size)
        if self.device.type != "cuda" or grid.whole:
            return 1
        tile_h, tile_w = grid.largest_tile
        per_tile = tile_h * tile_w * self.bytes_per_pixel
        budget = self.budget(grid.height, grid.width)
        return max(1, min(MAX_TILE_BATCH, budget // max(per_tile, 1), grid.count))

    # -- running --------------------------------------------------------------------------

    def _warn(self, message: str) -> None:
        if self.on_warning is not None:
            self.on_warning(message)

    def _forward(self, tile: Tensor) -> Tensor:
        """The network on one batch of tiles: [0, rgb_range] in, [0, 1] out (clipped)."""
        x = tile.to(self.device, torch.float32, non_blocking=True)
        with torch.inference_mode():
            y = self._run(x, self.dtype)
            if not bool(torch.isfinite(y).all()):
                if self.dtype == torch.float32:
                    raise NonFiniteOutput(
                        "the model produced non-finite values (NaN or infinity); "
                        "the weights may be damaged"
                    )
                self._warn(
                    f"a tile gave non-finite values in {precision_name(self.dtype)}; redone in fp32"
                )
                y = self._run(x, torch.float32)
                if not bool(torch.isfinite(y).all()):
                    raise NonFiniteOutput("the model produced non-finite values even in fp32")
            return y.float().div_(self.info.rgb_range).clamp_(0.0, 1.0)

    def _run(self, x: Tensor, dtype: torch.dtype) -> Tensor:
        if dtype == torch.float32:
            network = self.model
        else:

            def network(tile: Tensor) -> Tensor:
                with torch.autocast(device_type=self.device.type, dtype=dtype):
                    return self.model(tile)

        if not self.ensemble:
            return network(x)
        return dihedral_average(network, x, align=JPEG_GRID if self.info.task == "car" else 1)

    def restore_tensor(
        self,
        x: Tensor,
        *,
        out: Tensor | None = None,
        on_tile: TileCallback | None = None,
    ) -> Tensor:
        """Restore (N, colors, H, W) in [0, rgb_range] into (N, colors, H*s, W*s) in [0, 1].

        Tiled as `plan` says; on out-of-memory redone with tiles half as large (down to
        `MIN_TILE`), and later images start from that smaller tile.
        """
        height, width = x.shape[-2:]
        scale = self.info.scale
        window = self.info.window
        floor = -(-max(MIN_TILE, self.tile_overlap + window) // window) * window
        while True:
            grid = self.plan(height, width)
            batch = self._batch_for(grid)
            try:
                return tiled_forward(
                    x,
                    self._forward,
                    scale=scale,
                    grid=grid,
                    out=out,
                    out_channels=self.info.colors,
                    batch_size=batch,
                    on_tile=on_tile,
                )
            except Exception as error:
                if not _is_out_of_memory(error):
                    raise
                self._release_memory()
                if batch > 1:
                    self.batch_size = max(1, batch // 2)
                    self._warn(f"out of memory on {self.device}; batching {self.batch_size} tiles")
                    continue
                current = grid.largest_tile[0] if not grid.whole else max(height, width)
                smaller = (current // 2) // window * window
                if grid.whole:
                    smaller = min(smaller, max(height, width) // 2 // window * window)
                if smaller < floor:
                    raise OutOfMemory(
                        f"out of memory on {self.device} even with {current}-pixel tiles"
                        + (
                            "; try --device cpu or a smaller model"
                            if self.device.type != "cpu"
                            else "; close other programs or use a smaller model"
                        )
                    ) from None
                self._tile_cap = smaller
                self._warn(f"out of memory on {self.device}; retrying with {smaller}-pixel tiles")

    def _release_memory(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        elif self.device.type == "mps":
            torch.mps.empty_cache()

    def restore(self, image: Image, *, on_tile: TileCallback | None = None) -> Image:
        """Restore one image; see the module docstring for colours, alpha and precision.

        The result keeps the image's bit depth, mode, ICC profile and EXIF; its size is the
        input's times the model's scale. It has no ``path`` (it has not been written yet).
        """
        scale = self.info.scale
        pixels = image.pixels
        height, width, channels = pixels.shape
        model_colors = self.info.colors
        chroma = None
        if model_colors == 3 and channels == 1:
            source = np.broadcast_to(pixels, (height, width, 3))
        elif model_colors == 1 and channels == 3:
            luma, chroma = _rgb_to_ycbcr(pixels)
            source = luma
        else:
            source = pixels
        x = torch.from_numpy(np.ascontiguousarray(source)).permute(2, 0, 1).unsqueeze(0)
        x = x.mul(self.info.rgb_range)  # a new tensor; the image is left as is
        del source
        result = np.empty((height * scale, width * scale, model_colors), dtype=np.float32)
        self.restore_tensor(
            x,
            out=torch.from_numpy(result).permute(2, 0, 1).unsqueeze(0),
            on_tile=on_tile,
        )
        del x
        if model_colors == 3 and channels == 1:
            result = _luma(result)
        elif chroma is not None:
            result = _ycbcr_to_rgb(result, _resize(chroma, scale))
        alpha = image.alpha
        if alpha is not None and scale != 1:
            alpha = np.clip(_resize(alpha, scale), 0.0, 1.0)
        return Image(
            pixels=result,
            alpha=alpha,
            bit_depth=image.bit_depth,
            mode=image.mode,
            icc_profile=image.icc_profile,
            exif=image.exif,
            source_format=image.source_format,
        )

    def describe(self) -> dict[str, Any]:
        """Model, device and precision, for reports."""
        return {
            **self.info.to_dict(),
            "device": str(self.device),
            "precision": self.precision,
            "tile": self.tile,
            "tile_overlap": self.tile_overlap,
            "ensemble": self.ensemble,
            "gray_model": None if self.gray_companion is None else self.gray_companion.info.source,
        }


def _replace(info: ModelInfo, **changes: Any) -> ModelInfo:
    import dataclasses

    return dataclasses.replace(info, **changes)


def _resize(plane: np.ndarray, scale: int) -> np.ndarray:
    """Bicubic upscaling of (H, W) or (H, W, C) float32 by an integer factor."""
    import cv2

    if scale == 1:
        return plane
    height, width = plane.shape[:2]
    resized = cv2.resize(plane, (width * scale, height * scale), interpolation=cv2.INTER_CUBIC)
    if plane.ndim == 3 and resized.ndim == 2:
        resized = resized[:, :, None]
    return resized


def _rgb_to_ycbcr(pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(H, W, 3) RGB -> Y (H, W, 1) and CbCr (H, W, 2), BT.601, full range, float32."""
    r, g, b = pixels[..., 0], pixels[..., 1], pixels[..., 2]
    y = LUMA_BT601[0] * r + LUMA_BT601[1] * g + LUMA_BT601[2] * b
    cb = (b - y) / (2 * (1 - LUMA_BT601[2]))
    cr = (r - y) / (2 * (1 - LUMA_BT601[0]))
    return y[..., None].astype(np.float32), np.stack([cb, cr], axis=-1).astype(np.float32)


def _ycbcr_to_rgb(y: np.ndarray, cbcr: np.ndarray) -> np.ndarray:
    luma = y[..., 0]
    r = luma + 2 * (1 - LUMA_BT601[0]) * cbcr[..., 1]
    b = luma + 2 * (1 - LUMA_BT601[2]) * cbcr[..., 0]
    g = (luma - LUMA_BT601[0] * r - LUMA_BT601[2] * b) / LUMA_BT601[1]
    return np.clip(np.stack([r, g, b], axis=-1), 0.0, 1.0).astype(np.float32)


def _luma(rgb: np.ndarray) -> np.ndarray:
    gray = rgb[..., 0] * np.float32(LUMA_BT601[0])
    gray += rgb[..., 1] * np.float32(LUMA_BT601[1])
    gray += rgb[..., 2] * np.float32(LUMA_BT601[2])
    return np.clip(gray, 0.0, 1.0, out=gray)[..., None]


__all__ = [
    "CPU_MEMORY_CAP",
    "MIN_TILE",
    "PRECISIONS",
    "TASKS",
    "ModelInfo",
    "NonFiniteOutput",
    "OutOfMemory",
    "Restorer",
    "activation_bytes_per_pixel",
    "available_memory",
    "check_condition",
    "check_task",
    "dihedral_average",
    "resolve_device",
    "resolve_precision",
]

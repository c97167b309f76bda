"""Benchmark evaluation under the published protocols: `lipt eval`.

For every image of a folder: make the degraded input exactly as the benchmark protocol does,
restore it (with a model, or the trivial baseline), round the result to ``uint8`` as the
protocol does, and score it against the clean image. The degradations are
:mod:`lipt_core.degradations`, the metrics :mod:`lipt_core.metrics`.

**Super-resolution** (``task="sr"``): the HR image is mod-cropped to a multiple of the scale;
the model's LR input is MATLAB ``imresize(HR, 1/scale, 'bicubic')`` on the ``uint8`` RGB HR
(bit-exact with the "EDSR benchmark" LR files); PSNR/SSIM on the BT.601 Y channel with ``scale``
pixels cropped from every border. Two conventions of the published tables are followed:

* The **bicubic baseline** is computed as the tables' bicubic rows were (SRCNN/VDSR era, copied
  by every later paper): on the Y channel, ``rgb2ycbcr`` of the ``uint8`` HR rounded to
  ``uint8``, MATLAB bicubic down and up in floating point, the result rounded. This reproduces
  the table (Set5 x2/x3/x4 33.66/30.39/28.42, Set14 x4 26.00, B100 x4 25.96) to 0.001 dB;
  upscaling the model's ``uint8`` RGB LR instead scores 0.01 dB higher on Set5.
* **One-channel images** (Set14's ``bridge``): the EDSR/ELAN evaluation code that model tables
  come from reads every image as RGB, so a gray image is scored as the luma of three equal
  channels, ``16 + 219/255 * v``. The tables' bicubic rows scored it as it is (``v``), which
  gives 0.09 dB less on Set14. Default: as RGB; ``gray_as_luma=True`` scores gray images as they
  are, for every method, and reproduces the bicubic row of Set14.

**Denoising** (``task="denoise"``): gaussian noise of standard deviation ``sigma`` (0..255
units) added to the clean image in [0, 1], unclipped, from a generator seeded per image with
(seed, file name); the network gets the unclipped noisy image; scored on all channels (RGB or
gray), no border crop.

**JPEG artifact removal** (``task="car"``): the clean image JPEG-compressed by Pillow (libjpeg,
standard tables at ``quality``, 4:2:0 for colour); scored with PSNR, SSIM and PSNR-B on all
channels, no border crop.

Models run through :class:`lipt_core.restore.Restorer` in fp32 (whole image or tiles, as
memory allows). For denoising and JPEG the image is RGB or gray (``gray``): by default the
model's channels, or without a model RGB for denoising and gray for JPEG (the settings of the
usual reference tables). The gray version of an RGB image is its BT.601 Y (16..235), rounded,
as SwinIR's JPEG protocol makes it; a gray source image is replicated for RGB.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from lipt_core.degradations import (
    add_gaussian_noise,
    bicubic_downscale,
    image_rng,
    imresize,
    jpeg_compress,
    modcrop,
)
from lipt_core.errors import InputError, UsageError
from lipt_core.metrics import BT601_Y, psnr, psnr_b, rgb_to_y, ssim

__all__ = [
    "BASELINES",
    "TASKS",
    "EvalConfig",
    "EvalModel",
    "EvalReport",
    "ImageResult",
    "Scores",
    "evaluate",
    "list_images",
    "load_model",
]

TASKS = ("sr", "denoise", "car")
BASELINES = {"sr": "bicubic", "denoise": "identity", "car": "identity"}
"""The trivial method of each task, which every report compares against."""

DEFAULT_SIGMA = 25.0
DEFAULT_QUALITY = 10
DEFAULT_SEED = 0

ProgressCallback = Callable[[int, int, str], None]
"""Called as ``progress(done, total, name)`` after each image."""


# ---------------------------------------------------------------------------------------------
# Configuration and results


@dataclass(frozen=True)
class EvalConfig:
    """What to evaluate, and how.

    Attributes:
        task: "sr", "denoise" or "car".
        data: a folder of clean images (or one image file).
        scale: SR factor (2, 3, 4); default: the model's.
        sigma: noise level for "denoise", 0..255 units (default 25).
        quality: JPEG quality for "car", 1..100 (default 10).
        seed: seed of the noise (each image's generator is seeded with (seed, file name)).
        gray: "denoise"/"car": evaluate gray (True) or RGB (False) images; default: the
            model's channels, else RGB for denoising and gray for JPEG.
        gray_as_luma: "sr": score one-channel images as they are, not as RGB (see the module).
        baseline: "bicubic" (sr) or "identity" (denoise, car); run anyway next to a model.
        weights: checkpoint of the model to evaluate: any file `load_checkpoint` reads, or an
            https URL (see `lipt_core.weights`).
        model: preset name: without `weights`, its bundled trained weights for the task (and
            scale; the bundled gray model, where one ships, when `gray` is True); with
            `weights`, checked against them.
        window_size: attention window for published checkpoints (shapes do not reveal it).
        ensemble: score the model's self-ensemble (the average over the 8 flips and rotations,
            `lipt_core.restore.dihedral_average`), when the model is loaded from `weights` or
            `model` (a model given to :func:`evaluate` runs as it is).
    """

    task: str
    data: Path
    scale: int | None = None
    sigma: float | None = None
    quality: int | None = None
    seed: int = DEFAULT_SEED
    gray: bool | None = None
    gray_as_luma: bool = False
    baseline: str | None = None
    weights: Path | None = None
    model: str | None = None
    window_size: int | None = None
    ensemble: bool = False


@dataclass
class EvalModel:
    """A model wrapped for evaluation (any callable will do: tests pass fakes).

    `run` takes the degraded image as float32 (H, W, colors) in 0..255 (unclipped for noisy
    input) and returns the restored float image (H*scale, W*scale, colors) in 0..255.
    """

    name: str
    scale: int
    colors: int
    run: Callable[[np.ndarray], np.ndarray]
    task: str | None = None


@dataclass
class Scores:
    """The scores of one method on one image (or their means): dB and SSIM in [0, 1]."""

    psnr: float
    ssim: float
    psnr_b: float | None = None

    def to_dict(self) -> dict[str, float | None]:
        return {k: _finite(v) for k, v in asdict(self).items() if v is not None}


@dataclass
class ImageResult:
    """One image: its name, the size scored (after mod-crop), scores per method kind."""

    name: str
    width: int
    height: int
    scores: dict[str, Scores]
    gray: bool = False


@dataclass
class EvalReport:
    """Per-image and mean scores of a baseline and/or a model, with the protocol used.

    `methods` maps the kinds present ("baseline", "model") to their display names;
    `protocol` holds every setting that changes the numbers.
    """

    task: str
    data: str
    dataset: str
    protocol: dict[str, Any]
    methods: dict[str, str]
    images: list[ImageResult]
    metrics: tuple[str, ...]
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    def mean(self, kind: str) -> Scores:
        """The mean of each metric over the images (PSNR: the mean of the per-image dB)."""
        values = {
            metric: float(np.mean([getattr(r.scores[kind], metric) for r in self.images]))
            for metric in self.metrics
        }
        return Scores(**values)

    @property
    def gain(self) -> dict[str, float] | None:
        """Model minus baseline for each mean metric, when both were run."""
        if "model" not in self.methods or "baseline" not in self.methods:
            return None
        model, baseline = self.mean("model"), self.mean("baseline")
        return {m: getattr(model, m) - getattr(baseline, m) for m in self.metrics}

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able data (non-finite values, e.g. the PSNR of identical images, as null)."""
        gain = self.gain
        return {
            "task": self.task,
            "data": self.data,
            "dataset": self.dataset,
            "protocol": self.protocol,
            "methods": self.methods,
            "metrics": list(self.metrics),
            "mean": {kind: self.mean(kind).to_dict() for kind in self.methods},
            "gain": {k: _finite(v) for k, v in gain.items()} if gain else None,
            "images": [
                {
                    "name": r.name,
                    "width": r.width,
                    "height": r.height,
                    "gray": r.gray,
                    "scores": {kind: s.to_dict() for kind, s in r.scores.items()},
                }
                for r in self.images
            ],
            "seconds": round(self.seconds, 3),
            "notes": self.notes,
        }


def _finite(value: float | None) -> float | None:
    return value if value is None or math.isfinite(value) else None


# ---------------------------------------------------------------------------------------------
# Models


def load_model(
    weights: str | Path,
    *,
    model: str | None = None,
    window_size: int | None = None,
    precision: str = "fp32",
    ensemble: bool = False,
) -> EvalModel:
    """A checkpoint (path or URL) as an :class:`EvalModel`, run through
    :class:`lipt_core.restore.Restorer` (any image size: whole or tiled as memory allows;
    a training form folded first) in fp32, so that no reduced precision shifts the scores
    (``precision`` other than fp32: to measure what a reduced one costs); ``ensemble``: its
    average over the 8 flips and rotations.

    `model`, a preset name, must then describe the checkpoint's network.
    """
    import torch

    from lipt_core.models.config import preset_config
    from lipt_core.restore import Restorer

    engine = Restorer.from_weights(
        weights, window_size=window_size, precision=precision, ensemble=ensemble
    )
    config = engine.model.config
    if model is not None:
        preset = preset_config(model, scale=config.scale, colors=config.colors)
        fields = ("num_stages", "channels", "n_share", "r_expand")
        if any(getattr(preset, f) != getattr(config, f) for f in fields):
            found = ", ".join(f"{f} {getattr(config, f)}" for f in fields)
            raise UsageError(f"{weights}: not a {model} network ({found})")
    to_model = engine.info.rgb_range / 255.0

    def run(image: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32))
        y = engine.restore_tensor(x.unsqueeze(0) * to_model)[0]  # [0, 1], clipped
        return (y.float().cpu() * 255.0).permute(1, 2, 0).numpy()

    return EvalModel(
        name=f"{model or 'LIPT'} ({Path(str(weights)).name})"
        + ("" if engine.precision == "fp32" else f" {engine.precision}")
        + (" x8 ensemble" if ensemble else ""),
        scale=config.scale,
        colors=config.colors,
        run=run,
        task=engine.info.task,
    )


# ---------------------------------------------------------------------------------------------
# Images


def list_images(data: str | Path) -> list[Path]:
    """The image files of folder `data` (sorted by name), or `data` itself if it is a file."""
    from lipt_core.imageio import SUPPORTED_EXTENSIONS

    path = Path(data)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise InputError(f"{path}: no such file or folder")
    files = sorted(
        p for p in path.iterdir() if p.is_file() and p.suffix.lower() in SUPPORTED_EXTENSIONS
    )
    if not files:
        raise InputError(f"{path}: no images in this folder")
    return files


def _read_uint8(path: Path) -> np.ndarray:
    """The image as uint8 (H, W, C), C = 1 or 3: the 8-bit samples (alpha dropped; 16-bit
    sources rounded to 8 bits, as the protocols score 8-bit images)."""
    from lipt_core.imageio import read_image

    pixels = read_image(path).pixels
    return np.clip(np.floor(pixels.astype(np.float64) * 255.0 + 0.5), 0, 255).astype(np.uint8)


def _quantize(image: np.ndarray) -> np.ndarray:
    """A 0..255 float result as the protocols score it: rounded and clipped to uint8."""
    return np.clip(np.floor(np.asarray(image, dtype=np.float64) + 0.5), 0, 255).astype(np.uint8)


def _luma_uint8(image: np.ndarray) -> np.ndarray:
    """(H, W, 1) uint8 BT.601 Y (16..235) of an RGB image, rounded (MATLAB's rgb2ycbcr on
    uint8); a gray image as it is."""
    if image.shape[2] == 1:
        return image
    return _quantize(rgb_to_y(image))[:, :, None]


def _full_range_luma(image: np.ndarray) -> np.ndarray:
    """(H, W) BT.601 luma with full range (0.299 R + 0.587 G + 0.114 B), float64."""
    return np.asarray(image, dtype=np.float64) @ (np.asarray(BT601_Y) / sum(BT601_Y))


def _dataset_name(data: Path) -> str:
    path = data.resolve()
    if path.is_file():
        return path.name
    return path.parent.name if path.name.upper() in ("HR", "GT") else path.name


# ---------------------------------------------------------------------------------------------
# The protocols


@dataclass
class _Plan:
    task: str
    scale: int
    sigma: float | None
    quality: int | None
    seed: int
    gray: bool
    gray_as_luma: bool
    baseline: str | None
    restorer: EvalModel | None


def _plan(config: EvalConfig, restorer: EvalModel | None, *, model_pending: bool = False) -> _Plan:
    """Check the request and settle every setting; `model_pending`: a model will be loaded
    (checks that need it are left for the call that has it)."""
    task = config.task
    if task not in TASKS:
        raise UsageError(f"unknown task {task!r}; valid tasks: {', '.join(TASKS)}")
    if config.baseline is not None and config.baseline != BASELINES[task]:
        raise UsageError(
            f"the baseline of --task {task} is {BASELINES[task]!r}, not {config.baseline!r}"
        )
    if task != "denoise" and config.sigma is not None:
        raise UsageError("--sigma applies to --task denoise only")
    if task != "car" and config.quality is not None:
        raise UsageError("--quality applies to --task car only")
    if task == "sr" and config.gray is not None:
        raise UsageError("--color applies to denoise and car (SR is scored on Y)")
    if task != "sr" and config.gray_as_luma:
        raise UsageError("--gray-as-luma applies to --task sr only")
    if config.ensemble and restorer is None and not model_pending:
        raise UsageError("--ensemble needs a model (--model or --weights)")

    if restorer is not None:
        if restorer.task and restorer.task != task:
            raise UsageError(f"{restorer.name} is a {restorer.task!r} model, not {task!r}")
        if task == "sr" and restorer.scale == 1:
            raise UsageError(f"{restorer.name} does not upscale (x1): not an SR model")
        if task != "sr" and restorer.scale != 1:
            raise UsageError(f"{restorer.name} upscales x{restorer.scale}: not a {task} model")

    scale = config.scale
    if task == "sr":
        if scale is None:
            if model_pending:
                scale = 2  # provisional: the model's scale is checked once loaded
            elif restorer is None:
                raise UsageError("--task sr needs --scale (2, 3 or 4)")
            else:
                scale = restorer.scale
        if scale < 2:
            raise UsageError(f"--scale must be 2 or more for super-resolution, got {scale}")
        if restorer is not None and restorer.scale != scale:
            raise UsageError(f"--scale {scale}, but {restorer.name} upscales x{restorer.scale}")
    elif scale not in (None, 1):
        raise UsageError(f"--scale applies to --task sr only (got {scale} for {task})")

    sigma = quality = None
    if task == "denoise":
        sigma = DEFAULT_SIGMA if config.sigma is None else float(config.sigma)
        if not 0 <= sigma <= 255:
            raise UsageError(f"--sigma must be in 0..255, got {sigma:g}")
    if task == "car":
        quality = DEFAULT_QUALITY if config.quality is None else int(config.quality)
        if not 1 <= quality <= 100:
            raise UsageError(f"--quality must be in 1..100, got {quality}")

    if task == "sr":
        gray = restorer is not None and restorer.colors == 1
    elif restorer is not None:
        # An RGB model can be scored on gray images (given as three equal channels, see
        # `_run_model`); a gray model cannot be scored on colour.
        gray = restorer.colors == 1 if config.gray is None else config.gray
        if restorer.colors == 1 and not gray:
            raise UsageError(f"{restorer.name} has 1 channel: not RGB")
    else:
        gray = config.gray if config.gray is not None else task == "car"

    baseline = (
        BASELINES[task] if (config.baseline or restorer is not None or model_pending) else None
    )
    if baseline is None and restorer is None:
        raise UsageError(
            "nothing to evaluate: pass --model lipt-tiny (its bundled weights), --weights FILE,"
            f" or --baseline {BASELINES[task]}"
        )
    return _Plan(
        task, scale or 1, sigma, quality, config.seed, gray, config.gray_as_luma, baseline, restorer
    )


def _protocol(plan: _Plan) -> dict[str, Any]:
    if plan.task == "sr":
        return {
            "scale": plan.scale,
            "lr": "MATLAB imresize bicubic (antialiased) of the uint8 HR, mod-cropped",
            "channel": "Y (BT.601)",
            "crop_border": plan.scale,
            "gray_images": "as they are" if plan.gray_as_luma else "as RGB (Y = 16 + 219/255 v)",
            "bicubic": "tables' protocol: bicubic down/up on the uint8 Y channel"
            if plan.baseline
            else None,
        }
    channel = "gray (BT.601 Y)" if plan.gray else "RGB"
    if plan.task == "denoise":
        return {
            "sigma": plan.sigma,
            "seed": plan.seed,
            "noise": "gaussian, 0..255 units, unclipped, per-image generator (seed, file name)",
            "channel": channel,
            "crop_border": 0,
        }
    return {
        "quality": plan.quality,
        "jpeg": "Pillow (libjpeg), standard tables, 4:2:0 for colour",
        "channel": channel,
        "crop_border": 0,
    }


def _score(
    output: np.ndarray, reference: np.ndarray, *, crop: int = 0, blocking: bool = False
) -> Scores:
    return Scores(
        psnr=psnr(output, reference, crop_border=crop),
        ssim=ssim(output, reference, crop_border=crop),
        psnr_b=psnr_b(output, reference, crop_border=crop) if blocking else None,
    )


def _sr_image(image: np.ndarray, plan: _Plan) -> tuple[np.ndarray, dict[str, Scores]]:
    s = plan.scale
    hr = modcrop(image, s)
    is_gray = hr.shape[2] == 1
    # The luma every method is scored on (float, 0..255 units).
    if not is_gray:
        reference = rgb_to_y(hr)
    elif plan.gray_as_luma:
        reference = hr[:, :, 0].astype(np.float64)
    else:
        reference = rgb_to_y(np.repeat(hr, 3, axis=2))
    scores: dict[str, Scores] = {}
    if plan.baseline:
        # The tables' bicubic rows: MATLAB on the Y channel, uint8 Y in and out, float between.
        y8 = _quantize(reference)
        lr = imresize(y8 / 255.0, 1.0 / s, output_shape=(y8.shape[0] // s, y8.shape[1] // s))
        up = _quantize(imresize(lr, float(s), output_shape=y8.shape) * 255.0)
        scores["baseline"] = _score(up, y8, crop=s)
    if plan.restorer is not None:
        if plan.restorer.colors == 1:
            source = _quantize(reference)[:, :, None]
            out = _quantize(plan.restorer.run(bicubic_downscale(source, s).astype(np.float32)))
            scores["model"] = _score(out[:, :, 0], source[:, :, 0], crop=s)
        else:
            rgb = np.repeat(hr, 3, axis=2) if is_gray else hr
            out = _quantize(plan.restorer.run(bicubic_downscale(rgb, s).astype(np.float32)))
            if is_gray and plan.gray_as_luma:
                luma = _quantize(_full_range_luma(out))
                scores["model"] = _score(luma, hr[:, :, 0], crop=s)
            else:
                scores["model"] = _score(rgb_to_y(out), reference, crop=s)
    return hr, scores


def _clean_image(image: np.ndarray, gray: bool) -> np.ndarray:
    if gray:
        return _luma_uint8(image)
    return np.repeat(image, 3, axis=2) if image.shape[2] == 1 else image


def _run_model(plan: _Plan, degraded: np.ndarray) -> np.ndarray:
    """The model's uint8 result for a degraded (H, W, C) float image. A gray image given to an
    RGB model goes in as three equal channels and its output's BT.601 luma is scored, as
    `lipt car`/`lipt denoise` turn it back into a gray image."""
    assert plan.restorer is not None
    if degraded.shape[2] == 1 and plan.restorer.colors == 3:
        out = plan.restorer.run(np.repeat(degraded, 3, axis=2))
        return _quantize(_full_range_luma(out))[:, :, None]
    return _quantize(plan.restorer.run(degraded))


def _denoise_image(
    image: np.ndarray, name: str, plan: _Plan
) -> tuple[np.ndarray, dict[str, Scores]]:
    assert plan.sigma is not None
    clean = _clean_image(image, plan.gray)
    noisy = add_gaussian_noise(clean / 255.0, plan.sigma, rng=image_rng(plan.seed, name))
    scores: dict[str, Scores] = {}
    if plan.baseline:
        scores["baseline"] = _score(_quantize(noisy * 255.0), clean)
    if plan.restorer is not None:
        scores["model"] = _score(_run_model(plan, (noisy * 255.0).astype(np.float32)), clean)
    return clean, scores


def _car_image(image: np.ndarray, plan: _Plan) -> tuple[np.ndarray, dict[str, Scores]]:
    assert plan.quality is not None
    clean = _clean_image(image, plan.gray)
    compressed = jpeg_compress(clean, plan.quality)
    scores: dict[str, Scores] = {}
    if plan.baseline:
        scores["baseline"] = _score(compressed, clean, blocking=True)
    if plan.restorer is not None:
        restored = _run_model(plan, compressed.astype(np.float32))
        scores["model"] = _score(restored, clean, blocking=True)
    return clean, scores


def evaluate(
    config: EvalConfig,
    *,
    restorer: EvalModel | None = None,
    progress: ProgressCallback | None = None,
) -> EvalReport:
    """Score the baseline and/or a model on every image of `config.data` (see the module).

    The model is `restorer` if given, else the checkpoint `config.weights`. With a model, the
    task's baseline runs too, so the report shows the gain. `config.model` without weights
    evaluates that preset's bundled weights. Raises UsageError for an inconsistent request (or a
    preset with no bundled weights for the task), InputError for unusable data.
    """
    weights = config.weights
    local = weights is not None and "://" not in str(weights)
    if restorer is None and local and not Path(str(weights)).is_file():
        raise InputError(f"{weights}: no such file")
    if restorer is None and config.model is not None and config.weights is None:
        from lipt_core.models.config import preset_config
        from lipt_core.pretrained import gray_entry
        from lipt_core.weights import default_weights

        preset_config(config.model)  # unknown names fail with the list of presets
        scale = config.scale if config.task == "sr" else None
        # Gray images asked for: the bundled gray model where one ships, as `lipt car` uses.
        gray = config.gray and gray_entry(config.task, config.model, scale=scale) is not None
        weights = default_weights(config.task, config.model, scale=scale, colors=1 if gray else 3)
        config = replace(config, weights=weights)
    # Check the request before reading any file or loading a model.
    loading = restorer is None and config.weights is not None
    _plan(config, restorer, model_pending=loading)
    files = list_images(config.data)
    if loading:
        assert config.weights is not None
        restorer = load_model(
            config.weights,
            model=config.model,
            window_size=config.window_size,
            ensemble=config.ensemble,
        )
    plan = _plan(config, restorer)

    start = time.perf_counter()
    results = []
    for index, path in enumerate(files, 1):
        image = _read_uint8(path)
        try:
            if plan.task == "sr":
                scored, scores = _sr_image(image, plan)
            elif plan.task == "denoise":
                scored, scores = _denoise_image(image, path.name, plan)
            else:
                scored, scores = _car_image(image, plan)
        except UsageError as error:  # e.g. too small to score
            raise InputError(f"{path}: {error}") from None
        results.append(
            ImageResult(
                name=path.stem,
                width=scored.shape[1],
                height=scored.shape[0],
                scores=scores,
                gray=image.shape[2] == 1,
            )
        )
        if progress is not None:
            progress(index, len(files), path.name)

    methods = {}
    if plan.baseline:
        methods["baseline"] = plan.baseline
    if plan.restorer is not None:
        methods["model"] = plan.restorer.name
    notes = []
    gray_count = sum(r.gray for r in results)
    if plan.task == "sr" and gray_count:
        notes.append(
            f"{gray_count} gray image(s) scored "
            + (
                "as they are (as the tables' bicubic rows)"
                if plan.gray_as_luma
                else "as RGB with equal channels (as EDSR/ELAN code); --gray-as-luma scores "
                "them as they are, as the tables' bicubic rows"
            )
        )
    return EvalReport(
        task=plan.task,
        data=str(config.data),
        dataset=_dataset_name(Path(config.data)),
        protocol=_protocol(plan),
        methods=methods,
        images=results,
        metrics=("psnr", "ssim", "psnr_b") if plan.task == "car" else ("psnr", "ssim"),
        seconds=time.perf_counter() - start,
        notes=notes,
    )

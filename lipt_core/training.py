"""Training LIPT from folders of HR images: config, data, loop, checkpoints, DDP.

Library code: nothing is printed; progress goes to a callback. The data a step sees is a pure
function of (seed, step, rank, sample), so a resumed run sees exactly the batches an
uninterrupted one would, whatever the number of DataLoader workers.

Checkpoints are `.pt` dicts that `load_checkpoint` reads (weights_only): `lipt_config`,
`state_dict` (the EMA weights, in the form trained), `task`, `step`, `best_psnr`, and `train_state`
(raw weights, EMA, optimizer, RNG) for `resume`. `lipt convert` turns one into the inference form.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import io
import json
import math
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image as PILImage

from lipt_core.errors import CheckpointError, InputError, UsageError
from lipt_core.files import write_bytes
from lipt_core.restore import PRECISIONS, TASKS

FORMS = ("training", "inference")
SCHEDULES = ("cosine", "multistep", "constant")
# Pixel losses. L1 trains faster from scratch; PSNR is a mean squared error, so fine-tuning a
# converged model with L2 aims the last steps at the metric the model card reports.
LOSSES = {"l1": F.l1_loss, "l2": F.mse_loss}
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
CHECKPOINT_FORMAT = "lipt-train"


# ---------------------------------------------------------------------------------------------
# Configuration


@dataclass
class TrainConfig:
    """Everything a training run depends on. Read from TOML/JSON; every field can be overridden."""

    task: str = "sr"
    model: str = "lipt-tiny"
    model_overrides: dict[str, Any] = field(default_factory=dict)
    # Which form of the network is trained: "training" (multi-branch HRM convolutions with
    # BatchNorm, as published) or "inference" (the plain convolutions that are deployed; 3.7x
    # cheaper per step on CPU, so more steps for the same compute).
    form: str = "training"
    # Warm start: weights from this checkpoint (any form `load_checkpoint` reads) wherever name
    # and shape match, e.g. the body of an x4 model for an x2 one. Ignored when resuming.
    init_from: str = ""
    scale: int = 4
    colors: int = 3
    train_dirs: list[str] = field(default_factory=list)
    # Photos whose long side exceeds this are shrunk (box filter) by the smallest integer factor
    # in 2..4 that brings them under it (DIV2K-style clean HR from large JPEG wallpapers).
    hr_max_side: int = 2048
    max_images: int = 0  # 0: all images found
    patch_size: int = 48  # LR (network input) patch side
    batch_size: int = 16
    steps: int = 500_000
    lr: float = 5e-4
    schedule: str = "cosine"
    milestones: list[float] = field(default_factory=lambda: [0.5, 0.8])  # fractions of steps
    gamma: float = 0.5
    warmup_steps: int = 0
    min_lr: float = 1e-7
    ema_decay: float = 0.999  # 0 disables the EMA
    sigma_range: list[float] = field(default_factory=lambda: [0.0, 50.0])
    quality_range: list[int] = field(default_factory=lambda: [10, 90])
    # JPEG qualities drawn as `degradations.sample_quality` does: 1 uniform, > 1 favours the low.
    quality_power: float = 1.0
    loss: str = "l1"
    val_dir: str = ""
    val_every: int = 5000
    val_sigma: float = 25.0
    val_quality: int = 40
    checkpoint_every: int = 1000
    log_every: int = 10
    seed: int = 0
    workers: int = 2
    threads: int = 0  # torch intra-op threads; 0: torch's default
    output: str = "runs/lipt"
    device: str = "auto"
    precision: str = "auto"
    # torch.compile the training forward and backward (inductor; needs a C++ compiler on the
    # CPU): 1.10-1.12x per bf16 step on this project's 2-core CPU after 20-35 s of compiling
    # (benchmarks/train_speed.py --compile). Validation and checkpoints use the plain module.
    compile: bool = False

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        problems = []
        if self.task not in TASKS:
            problems.append(f"task must be one of {', '.join(TASKS)}, got {self.task!r}")
        if self.task in ("denoise", "car") and self.scale != 1:
            self.scale = 1
        if self.form not in FORMS:
            problems.append(f"form must be one of {', '.join(FORMS)}, got {self.form!r}")
        if self.schedule not in SCHEDULES:
            problems.append(f"schedule must be one of {', '.join(SCHEDULES)}")
        if self.loss not in LOSSES:
            problems.append(f"loss must be one of {', '.join(LOSSES)}, got {self.loss!r}")
        if self.precision not in PRECISIONS:
            problems.append(f"precision must be one of {', '.join(PRECISIONS)}")
        for name in ("patch_size", "batch_size", "steps", "checkpoint_every", "log_every"):
            if int(getattr(self, name)) < 1:
                problems.append(f"{name} must be >= 1")
        if self.val_every < 0 or self.workers < 0 or self.max_images < 0:
            problems.append("val_every, workers and max_images must be >= 0")
        if not 0.0 <= self.ema_decay < 1.0:
            problems.append("ema_decay must be in [0, 1)")
        if self.lr <= 0:
            problems.append("lr must be > 0")
        if len(self.sigma_range) != 2 or not 0 <= self.sigma_range[0] <= self.sigma_range[1]:
            problems.append("sigma_range must be [low, high] with 0 <= low <= high")
        q = self.quality_range
        if len(q) != 2 or not 1 <= q[0] <= q[1] <= 100:
            problems.append("quality_range must be [low, high] with 1 <= low <= high <= 100")
        if self.quality_power <= 0:
            problems.append("quality_power must be > 0")
        if not isinstance(self.model_overrides, Mapping):
            problems.append("model_overrides must be a table")
        if problems:
            raise UsageError("invalid training configuration: " + "; ".join(problems))

    @property
    def hr_patch(self) -> int:
        return self.patch_size * self.scale

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> TrainConfig:
        known = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise UsageError(
                f"unknown training setting(s) {', '.join(unknown)}; valid: {', '.join(known)}"
            )
        converted = {k: _coerce(known[k], v) for k, v in values.items()}
        return cls(**converted)

    def model_config(self):
        from lipt_core.models.config import preset_config

        return preset_config(
            self.model, scale=self.scale, colors=self.colors, **dict(self.model_overrides)
        )


def _coerce(f: dataclasses.Field, value: Any) -> Any:
    """Values from TOML/JSON/--set to the field's type (int fields accept 1e5-like floats)."""
    default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
    try:
        if isinstance(default, bool):
            return bool(value)
        if isinstance(default, int):
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            if not isinstance(value, int):
                raise TypeError
            return value
        if isinstance(default, float):
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise TypeError
            return float(value)
        if isinstance(default, str):
            return str(value)
        if isinstance(default, list):
            if isinstance(value, str | int | float):
                value = [value]
            return list(value)
        if isinstance(default, dict):
            return dict(value)
    except (TypeError, ValueError):
        raise UsageError(
            f"training setting {f.name}: expected a {type(default).__name__}, got {value!r}"
        ) from None
    return value


def _parse_toml(text: str, source: str) -> dict[str, Any]:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        try:
            import tomli as tomllib  # type: ignore[no-redef]
        except ModuleNotFoundError:
            raise UsageError(
                f"{source}: reading TOML needs Python >= 3.11 or the tomli package; "
                "use a .json config instead"
            ) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise UsageError(f"{source}: not valid TOML ({error})") from None


def read_config_file(path: str | os.PathLike) -> dict[str, Any]:
    """The settings in a `.toml` or `.json` file (a `[train]` table, if present, is used)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise InputError(f"{path}: cannot read config ({error.strerror or error})") from None
    if path.suffix.lower() == ".json":
        try:
            values = json.loads(text)
        except ValueError as error:
            raise UsageError(f"{path}: not valid JSON ({error})") from None
    else:
        values = _parse_toml(text, str(path))
    if not isinstance(values, dict):
        raise UsageError(f"{path}: a config must be a table of settings")
    if isinstance(values.get("train"), dict) and len(values) == 1:
        values = values["train"]
    return values


def parse_assignment(text: str) -> tuple[str, Any]:
    """`key=value` (value in TOML syntax; a bare word is a string). `a.b=v` sets a table key."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise UsageError(f"--set expects key=value, got {text!r}")
    raw = raw.strip()
    try:
        value = _parse_toml(f"v = {raw}", "--set")["v"]
    except UsageError:
        value = raw
    return key, value


def apply_assignments(values: dict[str, Any], assignments: list[str]) -> dict[str, Any]:
    values = copy.deepcopy(values)
    for text in assignments:
        key, value = parse_assignment(text)
        if "." in key:
            table, _, sub = key.partition(".")
            inner = values.setdefault(table, {})
            if not isinstance(inner, dict):
                raise UsageError(f"--set {key}: {table} is not a table")
            inner[sub] = value
        else:
            values[key] = value
    return values


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else ("nan" if value != value else "inf")
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise UsageError(f"cannot write {value!r} to TOML")


def config_to_toml(config: TrainConfig) -> str:
    """The resolved configuration as TOML (scalars first, then tables), readable by --config."""
    scalars, tables = [], []
    for key, value in config.to_dict().items():
        if isinstance(value, dict):
            tables.append(f"\n[{key}]")
            tables.extend(f"{k} = {_toml_value(v)}" for k, v in value.items())
        else:
            scalars.append(f"{key} = {_toml_value(value)}")
    return "# lipt train: resolved configuration\n" + "\n".join(scalars + tables) + "\n"


# ---------------------------------------------------------------------------------------------
# Data


def find_images(folders: list[str]) -> list[Path]:
    files: list[Path] = []
    for folder in folders:
        path = Path(folder)
        if path.is_file():
            files.append(path)
            continue
        if not path.is_dir():
            raise InputError(f"{path}: no such folder")
        found = sorted(
            p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
        )
        if not found:
            raise InputError(f"{path}: no images in this folder")
        files.extend(found)
    return files


_ORIENT = {
    2: PILImage.Transpose.FLIP_LEFT_RIGHT,
    3: PILImage.Transpose.ROTATE_180,
    4: PILImage.Transpose.FLIP_TOP_BOTTOM,
    5: PILImage.Transpose.TRANSPOSE,
    6: PILImage.Transpose.ROTATE_270,
    7: PILImage.Transpose.TRANSVERSE,
    8: PILImage.Transpose.ROTATE_90,
}


def load_hr(path: Path, *, colors: int, max_side: int) -> np.ndarray:
    """One training image as uint8 (H, W, colors), shrunk by 2..4 (box filter) if too large."""
    try:
        with PILImage.open(path) as pil:
            factor = 1
            while max(pil.size) / factor > max_side and factor < 4:
                factor += 1
            target = (pil.size[0] // factor, pil.size[1] // factor)
            if factor > 1 and pil.format == "JPEG":
                pil.draft(pil.mode, target)  # decode at 1/2, 1/4 or 1/8 size if it can
            image = pil.convert("RGB" if colors == 3 else "L")
            if image.size != target:
                image = image.resize(target, PILImage.Resampling.BOX)
            orientation = pil.getexif().get(0x0112, 1)
    except (OSError, ValueError, PILImage.DecompressionBombError) as error:
        raise InputError(f"{path}: cannot read image ({error})") from None
    if orientation in _ORIENT:
        image = image.transpose(_ORIENT[orientation])
    array = np.asarray(image)
    return array[:, :, None] if array.ndim == 2 else array


class PatchDataset(torch.utils.data.Dataset):
    """Sample `k` is a (low-quality, HR) pair drawn with a generator seeded by (seed, k).

    The image is picked with probability proportional to its number of patch positions, then a
    random crop, one of the 8 flips/rotations, and the task's degradation are applied.
    """

    def __init__(self, images: list[np.ndarray], config: TrainConfig) -> None:
        self.images = images
        self.config = config
        hr = config.hr_patch
        areas = np.array([(i.shape[0] - hr + 1) * (i.shape[1] - hr + 1) for i in images], float)
        self.weights = areas / areas.sum()

    def __len__(self) -> int:
        return 2**62

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        from lipt_core import degradations as deg

        c = self.config
        rng = np.random.default_rng([c.seed, int(index)])
        image = self.images[int(rng.choice(len(self.images), p=self.weights))]
        hr_size = c.hr_patch
        top = int(rng.integers(image.shape[0] - hr_size + 1))
        left = int(rng.integers(image.shape[1] - hr_size + 1))
        patch = image[top : top + hr_size, left : left + hr_size]
        if rng.integers(2):
            patch = patch[:, ::-1]
        patch = np.ascontiguousarray(np.rot90(patch, int(rng.integers(4))))
        if c.task == "sr":
            low = deg.bicubic_downscale(patch, c.scale).astype(np.float32)
        elif c.task == "denoise":
            sigma = deg.sample_sigma(rng, *c.sigma_range)
            low = deg.add_gaussian_noise(patch / 255.0, sigma, rng=rng) * 255.0
        else:
            quality = deg.sample_quality(rng, *c.quality_range, power=c.quality_power)
            low = deg.jpeg_compress(patch, quality).astype(np.float32)
        if low.ndim == 2:
            low = low[:, :, None]
        to_chw = lambda a: torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1)))  # noqa: E731
        return to_chw(low.astype(np.float32)), to_chw(patch.astype(np.float32))


class StepBatches(torch.utils.data.Sampler):
    """Batch of step s on rank r: samples ((s * world + r) * batch + i), i < batch."""

    def __init__(self, start_step: int, batch: int, rank: int, world: int) -> None:
        self.start_step, self.batch, self.rank, self.world = start_step, batch, rank, world

    def __iter__(self) -> Iterator[list[int]]:
        step = self.start_step
        while True:
            base = (step * self.world + self.rank) * self.batch
            yield list(range(base, base + self.batch))
            step += 1


def _ignore_sigint(_: int) -> None:
    # Workers leave Ctrl-C to the main process, which finishes the step and checkpoints.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


# ---------------------------------------------------------------------------------------------
# Schedule, EMA, checkpoints


def learning_rate(config: TrainConfig, step: int) -> float:
    """Learning rate for step `step` (0-based): a pure function of the step, so resume is exact."""
    base = config.lr
    if config.warmup_steps and step < config.warmup_steps:
        return base * (step + 1) / config.warmup_steps
    if config.schedule == "constant":
        return base
    if config.schedule == "multistep":
        passed = sum(step >= m * config.steps for m in config.milestones)
        return base * config.gamma**passed
    span = max(config.steps - config.warmup_steps, 1)
    t = min(max(step - config.warmup_steps, 0) / span, 1.0)
    return config.min_lr + 0.5 * (base - config.min_lr) * (1.0 + math.cos(math.pi * t))


@torch.no_grad()
def update_ema(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    """EMA of the parameters; buffers (BatchNorm statistics) are copied."""
    ema_params = list(ema.parameters())
    params = [p.detach() for p in model.parameters()]
    torch._foreach_lerp_(ema_params, params, 1.0 - decay)
    for e, b in zip(ema.buffers(), model.buffers(), strict=True):
        e.copy_(b)


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """torch.save to a temporary file in the same folder, fsync, then rename over `path`."""
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    write_bytes(path, buffer.getvalue())


def _cpu(state: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v.detach().cpu().clone() if torch.is_tensor(v) else v for k, v in state.items()}


def _optimizer_cpu(state: dict[str, Any]) -> dict[str, Any]:
    return {
        "state": {k: _cpu(v) for k, v in state["state"].items()},
        "param_groups": state["param_groups"],
    }


# ---------------------------------------------------------------------------------------------
# Validation


@torch.no_grad()
def validate(
    model: torch.nn.Module, config: TrainConfig, images: list[np.ndarray], device: torch.device
) -> float:
    """Mean PSNR (Y channel for colour; `scale` pixels shaved for SR) on the validation images."""
    from lipt_core import degradations as deg
    from lipt_core.metrics import psnr
    from lipt_core.reparam import reparameterize

    net = reparameterize(model).to(device).eval()
    scores = []
    for index, hr in enumerate(images):
        if config.task == "sr":
            hr = deg.modcrop(hr, config.scale)
            low = deg.bicubic_downscale(hr, config.scale).astype(np.float32)
        elif config.task == "denoise":
            rng = deg.image_rng(config.seed, f"val{index}")
            low = deg.add_gaussian_noise(hr / 255.0, config.val_sigma, rng=rng) * 255.0
        else:
            low = deg.jpeg_compress(hr, config.val_quality).astype(np.float32)
        if low.ndim == 2:
            low = low[:, :, None]
        x = torch.from_numpy(np.ascontiguousarray(low.transpose(2, 0, 1)))[None].to(device)
        out = net(x.float())[0].clamp(0, 255).round().permute(1, 2, 0).cpu().numpy()
        border = config.scale if config.task == "sr" else 0
        scores.append(psnr(out, hr, crop_border=border, y_channel=hr.shape[2] == 3))
    return float(np.mean(scores))


# ---------------------------------------------------------------------------------------------
# The loop


@dataclass
class TrainEvent:
    """What the progress callback receives. kind: start, step, validation, checkpoint, done,
    interrupted."""

    kind: str
    step: int
    steps: int
    loss: float | None = None
    lr: float | None = None
    steps_per_sec: float | None = None
    val_psnr: float | None = None
    best_psnr: float | None = None
    path: str | None = None
    message: str | None = None


@dataclass
class TrainResult:
    step: int
    losses: list[float]
    best_psnr: float | None
    last_checkpoint: Path | None
    interrupted: bool
    model: torch.nn.Module  # the raw (non-EMA) model, unwrapped, on its device


@dataclass
class _Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def _init_distributed(device_kind: str) -> _Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return _Dist()
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_kind == "cuda" else "gloo")
    return _Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def _pick_device(config: TrainConfig, dist_info: _Dist) -> torch.device:
    name = config.device
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UsageError("device cuda asked for, but no CUDA device is available")
        if dist_info.world > 1:
            name = f"cuda:{dist_info.local_rank}"
        device = torch.device(name)
        torch.cuda.set_device(device)
        return device
    return torch.device(name)


@contextlib.contextmanager
def _compile_errors() -> Iterator[None]:
    """A torch.compile failure (no C++ compiler, an unsupported operation) as one clear line."""
    try:
        yield
    except torch._dynamo.exc.TorchDynamoException as error:
        cause = getattr(error, "inner_exception", None) or error  # the backend's own error
        reason = (str(cause).strip().splitlines() or [type(cause).__name__])[0]
        raise UsageError(
            f"compile = true: torch.compile failed ({reason}); train without it"
        ) from None


def _autocast_dtype(config: TrainConfig, device: torch.device) -> torch.dtype | None:
    """The autocast dtype, None for fp32. As for restoring (bf16 on a CPU only where it is native,
    fp16 only on CUDA), except that auto trains in fp16 with loss scaling on CUDA without bf16."""
    from lipt_core.restore import resolve_precision

    if device.type == "cuda" and (
        config.precision == "fp16"
        or (config.precision == "auto" and not torch.cuda.is_bf16_supported())
    ):
        return torch.float16
    dtype = resolve_precision(config.precision, device)
    return None if dtype == torch.float32 else dtype


class _StopFlag:
    """SIGINT/SIGTERM set a flag: the loop finishes its step, checkpoints, and stops."""

    def __init__(self) -> None:
        self.signal: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _StopFlag:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, sig: int, frame: Any) -> None:
        if self.signal is not None:  # a second Ctrl-C: stop now
            raise KeyboardInterrupt
        self.signal = sig

    def __exit__(self, *exc: object) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)


def train(
    config: TrainConfig,
    *,
    resume: bool | str | os.PathLike = False,
    progress: Callable[[TrainEvent], None] | None = None,
    max_steps_this_run: int | None = None,
) -> TrainResult:
    """Train per `config`, writing `last.pt` (every checkpoint_every steps and at the end),
    `best.pt` (best validation PSNR) and `config.toml` into `config.output`.

    `resume`: True resumes from `output/last.pt` (if there is one), a path from that file.
    `max_steps_this_run` stops early after that many steps (with a checkpoint), as an
    interruption would. Under torchrun (WORLD_SIZE > 1) runs DistributedDataParallel; only
    rank 0 writes files and reports progress.
    """
    emit = progress or (lambda event: None)
    device_kind = (
        "cuda"
        if config.device.startswith("cuda")
        or (config.device == "auto" and torch.cuda.is_available())
        else "cpu"
    )
    dist_info = _init_distributed(device_kind)
    if not dist_info.main:
        emit = lambda event: None  # noqa: E731 - only rank 0 reports
    device = _pick_device(config, dist_info)
    if config.threads:
        torch.set_num_threads(config.threads)
    output = Path(config.output)
    model_config = config.model_config()

    # Data: decoded once, into memory.
    files = find_images(config.train_dirs) if config.train_dirs else []
    if not files:
        raise UsageError("no training images: give train_dirs (--train-dir)")
    if config.max_images:
        files = files[: config.max_images]
    images = []
    for path in files:
        image = load_hr(path, colors=config.colors, max_side=config.hr_max_side)
        if min(image.shape[:2]) >= config.hr_patch:
            images.append(image)
    if not images:
        raise InputError(f"no training image is at least {config.hr_patch} px on each side")
    val_images = []
    if config.val_dir and dist_info.main:
        val_images = [
            load_hr(p, colors=config.colors, max_side=1 << 30)
            for p in find_images([config.val_dir])
        ]

    dataset = PatchDataset(images, config)

    # Model, EMA, optimizer.
    from lipt_core.models.lipt import LIPT

    torch.manual_seed(config.seed)
    # The network makes its activations channels-last itself; the weights stay contiguous
    # (channels-last 1x1 kernels have strides DDP's gradient buckets do not expect).
    model = LIPT(model_config, inference=config.form == "inference").to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, betas=(0.9, 0.99), foreach=True)
    start_step, best_psnr = 0, None

    source = output / "last.pt" if resume is True else Path(resume) if resume else None
    resuming = source is not None and source.exists()
    if resume and resume is not True and not resuming:
        raise CheckpointError(f"{source}: no such checkpoint to resume from")
    start_notes = [f"{len(images)} training images"]
    if config.init_from and not resuming:
        start_notes.append(warm_start(model, config.init_from))
    elif config.form == "inference" and not resuming:
        first = torch.stack([dataset[i][0] for i in range(config.batch_size)])
        normalise_attention_inputs(model, first.to(device))
    ema = copy.deepcopy(model).requires_grad_(False) if config.ema_decay > 0 else None
    if resuming:
        start_step, best_psnr = _restore(source, model_config, model, ema, optimizer)

    net: torch.nn.Module = model
    if dist_info.world > 1:
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    if config.compile:
        # Every batch has one shape: a static graph, compiled at the first step.
        net = torch.compile(net, dynamic=False)

    if dist_info.main:
        output.mkdir(parents=True, exist_ok=True)
        write_bytes(output / "config.toml", config_to_toml(config).encode("utf-8"))

    # More loader processes than cores only slows the training step down (batches follow from
    # the step number, so the count does not change what is trained).
    workers = min(config.workers, os.cpu_count() or 1)
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_sampler=StepBatches(start_step, config.batch_size, dist_info.rank, dist_info.world),
        num_workers=workers,
        pin_memory=device.type == "cuda",
        worker_init_fn=_ignore_sigint if workers else None,
        persistent_workers=False,
        prefetch_factor=4 if workers else None,
    )
    amp_dtype = _autocast_dtype(config, device)
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)

    def payload(step: int) -> dict[str, Any]:
        weights = ema if ema is not None else model
        return {
            "format": CHECKPOINT_FORMAT,
            "lipt_config": model_config.to_dict(),
            "state_dict": _cpu(weights.state_dict()),
            "task": config.task,
            "step": step,
            "steps": step,
            "training_data": ", ".join(config.train_dirs),
            "best_psnr": float(best_psnr) if best_psnr is not None else -1.0,
            "train_config": json.dumps(config.to_dict()),
            "train_state": {
                "step": step,
                "model": _cpu(model.state_dict()),
                "ema": _cpu(ema.state_dict()) if ema is not None else {},
                "optimizer": _optimizer_cpu(optimizer.state_dict()),
                "torch_rng": torch.get_rng_state(),
            },
        }

    def checkpoint(step: int, name: str = "last.pt") -> Path:
        path = output / name
        save_checkpoint(path, payload(step))
        emit(TrainEvent("checkpoint", step, config.steps, path=str(path)))
        return path

    losses: list[float] = []
    pixel_loss = LOSSES[config.loss]
    step = start_step
    last_path: Path | None = None
    stop_at = config.steps
    if max_steps_this_run is not None:
        stop_at = min(stop_at, start_step + max_steps_this_run)
    emit(TrainEvent("start", step, config.steps, message="; ".join(start_notes)))
    interrupted = False
    window_start, window_steps = time.perf_counter(), 0
    with _StopFlag() as stop, contextlib.ExitStack() as stack:
        batches = iter(loader)
        stack.callback(lambda: _shutdown(batches))
        while step < stop_at:
            low, high = next(batches)
            low = low.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
            high = high.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
            lr = learning_rate(config, step)
            for group in optimizer.param_groups:
                group["lr"] = lr
            with _compile_errors():  # compile = true compiles in the first forward and backward
                with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                    loss = pixel_loss(net(low).float(), high)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            if ema is not None:
                update_ema(ema, model, min(config.ema_decay, (1 + step) / (10 + step)))
            step += 1
            window_steps += 1
            value = float(loss.detach())
            losses.append(value)
            if not math.isfinite(value):
                raise UsageError(f"the loss became {value} at step {step}; lower the lr")
            if dist_info.main and (step % config.log_every == 0 or step == stop_at):
                elapsed = time.perf_counter() - window_start
                emit(
                    TrainEvent(
                        "step",
                        step,
                        config.steps,
                        loss=value,
                        lr=lr,
                        steps_per_sec=window_steps / elapsed if elapsed > 0 else None,
                    )
                )
                window_start, window_steps = time.perf_counter(), 0
            if not dist_info.main:
                if stop.signal is not None:
                    interrupted = True
                    break
                continue
            if val_images and config.val_every and step % config.val_every == 0:
                score = validate(ema if ema is not None else model, config, val_images, device)
                improved = best_psnr is None or score > best_psnr
                if improved:
                    best_psnr = score
                emit(
                    TrainEvent(
                        "validation", step, config.steps, val_psnr=score, best_psnr=best_psnr
                    )
                )
                if improved:
                    checkpoint(step, "best.pt")
            if step % config.checkpoint_every == 0:
                last_path = checkpoint(step)
            if stop.signal is not None:
                interrupted = True
                break
        if dist_info.main and (last_path is None or step % config.checkpoint_every):
            if step > start_step or not (output / "last.pt").exists():
                last_path = checkpoint(step)
            else:
                last_path = output / "last.pt"
    emit(
        TrainEvent(
            "interrupted" if interrupted else "done",
            step,
            config.steps,
            best_psnr=best_psnr,
            path=str(last_path) if last_path else None,
        )
    )
    if dist_info.world > 1:
        import torch.distributed as dist

        dist.barrier()
    return TrainResult(step, losses, best_psnr, last_path, interrupted, model)


@torch.no_grad()
def normalise_attention_inputs(model: torch.nn.Module, batch: torch.Tensor) -> None:
    """Rescale every attention input projection so that, on `batch`, each of its output
    channels has mean 0 and standard deviation 1, as the training form's BatchNorm makes them.

    Why: LIPT's attention has no 1/sqrt(d) scaling, and plain convolutions with PyTorch's default
    initialisation on 0..255 images give logits in the tens of thousands: the softmax is a hard
    argmax whose gradient vanishes, and the attention never learns. The training form escapes
    this through its BatchNorm; an inference-form run starts from this equivalent instead.
    Layers are visited in forward order, each seeing the already rescaled layers before it.
    """
    from lipt_core.models.attention import NVSMSA

    def rescale(conv: torch.nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        out = F.conv2d(inputs[0], conv.weight, conv.bias)
        mean = out.mean(dim=(0, 2, 3))
        std = out.std(dim=(0, 2, 3)).clamp_min(1e-6)
        conv.weight.div_(std.view(-1, 1, 1, 1))
        conv.bias.sub_(mean).div_(std)

    hooks = [
        module.project_inp.register_forward_pre_hook(rescale)
        for module in model.modules()
        if isinstance(module, NVSMSA) and isinstance(module.project_inp, torch.nn.Conv2d)
    ]
    try:
        was_training = model.training
        model.eval()
        model(batch.contiguous(memory_format=torch.channels_last))
        model.train(was_training)
    finally:
        for hook in hooks:
            hook.remove()


@torch.no_grad()
def warm_start(model: torch.nn.Module, source: str | os.PathLike) -> str:
    """Copy into `model` every tensor of checkpoint `source` whose name and shape match.

    A training-form checkpoint is folded first when `model` is in inference form, and one with
    fewer channels is widened (`lipt_core.growth.widen`: the wider network starts from the same
    function). What is not taken over (a tail for another scale, a head for other colours) keeps
    its initialisation and is named in the returned summary; a checkpoint that matches nothing is
    an error.
    """
    from lipt_core.checkpoint import load_checkpoint
    from lipt_core.reparam import reparameterize

    donor, _ = load_checkpoint(source)
    if getattr(model, "inference", False) and not getattr(donor, "inference", False):
        donor = reparameterize(donor)
    elif not getattr(model, "inference", False) and getattr(donor, "inference", False):
        raise CheckpointError(
            f"{source}: holds the inference form; a training-form run cannot start from it "
            '(set form = "inference")'
        )
    widened = ""
    donor_channels = getattr(getattr(donor, "config", None), "channels", None)
    channels = getattr(getattr(model, "config", None), "channels", None)
    if donor_channels is not None and channels is not None and donor_channels < channels:
        from lipt_core.growth import widen

        if not getattr(model, "inference", False):
            raise CheckpointError(
                f"{source}: has {donor_channels} channels; widening it to {channels} needs "
                'form = "inference"'
            )
        donor = widen(donor, channels)
        widened = f" (widened from {donor_channels} to {channels} channels)"
    donor_state = donor.state_dict()
    target = model.state_dict()
    converted = _colour_to_gray(donor_state, donor, model)
    donor_state.update(converted)
    taken, fresh = [], []
    for key, value in target.items():
        match = donor_state.get(key)
        if match is not None and match.shape == value.shape:
            value.copy_(match)
            taken.append(key)
        elif not key.endswith("num_batches_tracked"):
            fresh.append(key)
    if not taken:
        raise CheckpointError(f"{source}: no tensor matches this network; cannot warm-start")
    unused = sorted(set(donor_state) - set(target))
    summary = f"warm start from {source}: {len(taken)} tensors taken{widened}"
    if converted:
        summary += f" ({', '.join(sorted(converted))} converted from colour to gray)"
    if fresh:
        summary += f"; newly initialised: {', '.join(fresh)}"
    if unused:
        summary += f"; not used: {', '.join(unused)}"
    return summary


def _colour_to_gray(
    state: Mapping[str, torch.Tensor], donor: torch.nn.Module, model: torch.nn.Module
) -> dict[str, torch.Tensor]:
    """Head and tail of a colour `donor` (its `state` dict) restated for a gray `model` of the
    same scale.

    With them the gray network computes, away from the 1-px image border, the BT.601 luma of what
    the colour one outputs for the gray image repeated in all three channels: the head sums its
    kernels over the colours and moves the mean difference into its bias; the tail is the luma
    combination of the colour rows. A gray run then starts from the colour model's quality on gray
    photos instead of from a random head and tail. Empty when the pair is not colour -> gray.
    """
    donor_config = getattr(donor, "config", None)
    config = getattr(model, "config", None)
    if (
        donor_config is None
        or config is None
        or donor_config.colors != 3
        or config.colors != 1
        or donor_config.scale != config.scale
    ):
        return {}
    from lipt_core.models.config import LUMA_BT601

    head_w, head_b = state["head.weight"], state["head.bias"]
    donor_mean = torch.tensor(donor_config.pixel_mean, dtype=head_w.dtype)
    gray_mean = config.pixel_mean[0]
    kernel_sums = head_w.sum(dim=(2, 3))  # (C, colours)
    gray_head_b = head_b + (kernel_sums * (gray_mean - donor_mean)).sum(dim=1)

    per_colour = config.scale * config.scale
    luma = torch.tensor(LUMA_BT601, dtype=head_w.dtype)
    tail_w = state["tail.weight"].unflatten(0, (3, per_colour))
    tail_b = state["tail.bias"].unflatten(0, (3, per_colour))
    return {
        "head.weight": head_w.sum(dim=1, keepdim=True),
        "head.bias": gray_head_b,
        "tail.weight": torch.einsum("c,ckxyz->kxyz", luma, tail_w),
        "tail.bias": luma @ tail_b,
    }


def _shutdown(batches: Any) -> None:
    shutdown = getattr(batches, "_shutdown_workers", None)
    if shutdown is not None:
        shutdown()


def _restore(
    source: Path,
    model_config: Any,
    model: torch.nn.Module,
    ema: torch.nn.Module | None,
    optimizer: torch.optim.Optimizer,
) -> tuple[int, float | None]:
    from lipt_core.checkpoint import read_tensors

    contents, _ = read_tensors(source)
    state = contents.get("train_state")
    if not isinstance(state, Mapping):
        raise CheckpointError(f"{source}: not a lipt training checkpoint (no train_state)")
    if dict(contents.get("lipt_config", {})) != model_config.to_dict():
        raise CheckpointError(
            f"{source}: was trained with a different network ({contents.get('lipt_config')}); "
            "resume with the same model settings"
        )
    model.load_state_dict(state["model"])
    if ema is not None:
        ema.load_state_dict(state["ema"] or state["model"])
    optimizer.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["torch_rng"])
    best = float(contents.get("best_psnr", -1.0))
    return int(state["step"]), (best if best >= 0 else None)

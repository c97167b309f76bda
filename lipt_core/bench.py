"""``lipt bench``: measured latency of LIPT and its peers, and where the time goes.

The LIPT paper's point is that FLOPs mislead and only measured latency counts (its Figure 1(b)
splits the x2 GPU time of SwinIR-light and LIPT-Small into MSA / MLP / Conv / Other). This module
measures that on the user's own machine, for LIPT presets and for the reference peers of
:mod:`lipt_core.peers`, and returns a :class:`BenchReport`; it never prints.

How it measures:

* **Plain latency.** One forward pass of a batch-one random image (0..255, seeded), under
  ``torch.inference_mode()``, after ``warmup`` untimed passes. CPU: ``time.perf_counter_ns``
  around the call; CUDA: CUDA events around the call, then a synchronisation. The thread count is
  fixed with ``torch.set_num_threads`` (default: every core this process may use) and reported.
  The models of one call are measured in one process and **interleaved**: each round times every
  model once, in a freshly shuffled order, so that a noisy machine slows them all alike and their
  ratios hold. Median, p10 and p90 over ``runs`` rounds are reported.
* **Where the time goes.** Separate *profiled* rounds (hooks add overhead, so they never touch
  the plain timings; the two kinds of round are spread evenly through one sequence, so a change
  of load hits both alike) put forward pre/post hooks, which read ``time.perf_counter_ns`` (after a
  ``torch.cuda.synchronize`` on CUDA), on the outermost module of each category:

  - **MSA**: attention modules, LIPT's :class:`~lipt_core.models.attention.NVSMSA` and every class
    whose name contains ``Attention`` (SwinIR's ``WindowAttention``, ELAN's ``ELANAttention``),
    their input/output projections included;
  - **MLP**: transformer feed-forward networks, classes whose name contains ``Mlp`` (SwinIR);
  - **Conv**: convolution modules outside the two above: LIPT's HRM (its training-form
    multi-branch convolutions included), ELAN's LFE (shift-conv + 1x1 convs: it sits where a
    transformer's MLP sits, but it runs convolutions, exactly as LIPT's HRM, which the paper
    counts as Conv), and every ``nn.Conv*`` such as heads, tails and SwinIR's RSTB convs;
  - **Other**: the rest of the measured total: padding, mean shift, pixel shuffle, residual adds,
    and, for SwinIR, the LayerNorms, cyclic shifts and window (un)partitioning outside
    ``WindowAttention``.

  Per profiled run, Other = total - (MSA + MLP + Conv), so the parts of every run add up to its
  measured total exactly. Across runs, each part's share of its run's total is taken as the
  median over the profiled runs (normalised so the shares add up to 100 %): shares survive a
  run the machine slowed down as a whole, and the median drops a run in which one part alone
  was stalled. Each part is reported as that percentage, as milliseconds of the median profiled
  total (so the parts add up to it), and scaled to the plain median latency; the raw
  milliseconds of every profiled run are kept too. The profiling overhead is the median
  profiled total minus the plain median.
* **FLOPs**: ``torch.utils.flop_counter.FlopCounterMode`` on a copy of the model on the ``meta``
  device (shapes only, no arithmetic, so counting is instant): true FLOPs, 2 per multiply-add,
  of matrix multiplications and convolutions (softmax, normalisation, activations and
  element-wise operations are not counted). The same hooks split them into MSA / MLP / Conv /
  Other. The meta device also matters for LIPT's attention: on a real CPU tensor
  ``scaled_dot_product_attention`` runs a fused kernel the counter has no formula for (it would
  count zero), while on ``meta`` it takes its reference decomposition into matrix products,
  which the counter counts. Should a model not run on ``meta``, one real forward is counted.
* **Peak memory**: CUDA: ``torch.cuda.max_memory_allocated`` during one pass, above what was
  allocated before it. CPU (Linux): the growth of the resident set size during one pass over the
  RSS just before it, sampled from ``/proc/self/statm`` by a background thread every half
  millisecond after ``malloc_trim`` has returned freed heap memory to the system; elsewhere
  unmeasured (``None``). It is taken on the second warm-up pass (the only one with
  ``warmup=1``, one extra pass with ``warmup=0``), never on a timed one.
"""

from __future__ import annotations

import contextlib
import copy
import ctypes
import dataclasses
import datetime
import functools
import gc
import math
import os
import platform
import random
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from lipt_core.errors import LiptError, UsageError
from lipt_core.files import replacing, write_bytes
from lipt_core.models.attention import NVSMSA
from lipt_core.models.config import PRESETS, VALID_SCALES, create_model
from lipt_core.models.hrm import HRM
from lipt_core.peers import PEERS, create_peer
from lipt_core.peers.elan import LFE
from lipt_core.restore import DTYPES, PRECISIONS

__all__ = [
    "CSV_COLUMNS",
    "DEFAULT_MODELS",
    "DEFAULT_OUTPUT_SIZE",
    "FLOP_NOTE",
    "PARTS",
    "PART_LABELS",
    "SCHEMA",
    "BenchConfig",
    "BenchReport",
    "Environment",
    "LatencyStats",
    "ModelResult",
    "PartTime",
    "RestoreResult",
    "categorized_modules",
    "csv_rows",
    "model_names",
    "parse_size",
    "part_of",
    "run_benchmark",
    "write_csv",
    "write_json",
]

SCHEMA = "lipt-bench/1"
DEFAULT_MODELS = ("lipt-tiny", "lipt-small")
DEFAULT_OUTPUT_SIZE = (1280, 720)  # (width, height): the paper's 720p output
PARTS = ("msa", "mlp", "conv", "other")
PART_LABELS = {"msa": "MSA", "mlp": "MLP", "conv": "Conv", "other": "Other"}
FORMS = ("inference", "training", "both")
DEVICES = ("auto", "cpu", "cuda")
FLOP_NOTE = (
    "FLOPs: true floating-point operations (2 per multiply-add) of matrix multiplications and "
    "convolutions, counted by torch.utils.flop_counter; softmax, normalisation, activations and "
    "element-wise operations are not counted. 1 GFLOP = 1e9 FLOPs."
)

#: progress(description, completed, total): called before each step and once at the end.
ProgressFn = Callable[[str, int, int], None]

_CONV_TYPES: tuple[type[nn.Module], ...] = (HRM, LFE, nn.modules.conv._ConvNd)


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BenchConfig:
    """What to measure. Sizes are (width, height).

    Attributes:
        models: LIPT preset names (:data:`~lipt_core.models.config.PRESETS`) and peer names
            (:data:`~lipt_core.peers.PEERS`), in the order to report them.
        scale: upscaling factor of every model (1 = same-size restoration).
        size: the network's input (low-resolution) size; excludes ``output_size``.
        output_size: the output size; the input is ``output_size / scale``, which must divide.
            Neither given: :data:`DEFAULT_OUTPUT_SIZE` (1280x720).
        device: ``auto`` (CUDA when available), ``cpu``, ``cuda`` or ``cuda:N``.
        threads: intra-op CPU threads; ``None``: every core this process may run on.
        precision: ``fp32``, ``fp16`` (CUDA only), ``bf16``, or ``auto`` (CPU: fp32; CUDA: bf16
            where supported, else fp16).
        form: for LIPT, ``inference`` (fused convolutions, as deployed), ``training`` (the
            multi-branch form) or ``both``; peers have a single form.
        runs: timed rounds (each times every model once).
        warmup: untimed rounds before them.
        profile_runs: profiled rounds for the MSA/MLP/Conv/Other split; ``None``: half of
            ``runs``, at least one.
        seed: seeds the random weights, the input image and the order of each round.
        restore: an image to time LIPT's whole restore path on (:class:`lipt_core.restore.
            Restorer`, with the first LIPT preset of ``models``, random weights): once
            untimed, then ``profile_runs`` times in memory and as many times file to file
            (read, restore, write to a temporary file of the same format).
        restore_tile: tile size of the restore path (input pixels, 0: the whole image);
            ``None``: the restorer's choice from the memory available.
    """

    models: tuple[str, ...] = DEFAULT_MODELS
    scale: int = 4
    size: tuple[int, int] | None = None
    output_size: tuple[int, int] | None = None
    device: str = "auto"
    threads: int | None = None
    precision: str = "auto"
    form: str = "inference"
    runs: int = 10
    warmup: int = 3
    profile_runs: int | None = None
    seed: int = 0
    restore: Path | None = None
    restore_tile: int | None = None


def parse_size(text: str, *, what: str = "size") -> tuple[int, int]:
    """``"1280x720"`` to ``(1280, 720)`` (width, height)."""
    match = re.fullmatch(r"\s*(\d+)\s*[xX×]\s*(\d+)\s*", text)
    if not match:
        raise UsageError(f"{what} must be WIDTHxHEIGHT, e.g. 1280x720; got {text!r}")
    width, height = int(match[1]), int(match[2])
    if width < 1 or height < 1:
        raise UsageError(f"{what} must be positive, got {text!r}")
    return width, height


def model_names() -> list[str]:
    """Every name ``--model`` accepts: the LIPT presets, then the peers."""
    return sorted(PRESETS) + sorted(PEERS)


@dataclass(frozen=True)
class _Entry:
    """One model to measure: a name and, for LIPT, a form."""

    name: str
    form: str | None

    @property
    def is_lipt(self) -> bool:
        return self.form is not None

    def label(self, show_form: bool) -> str:
        return f"{self.name} ({self.form})" if show_form and self.form else self.name


def _entries(config: BenchConfig) -> tuple[list[_Entry], bool]:
    names: list[str] = []
    for raw in config.models:
        name = raw.strip().lower()
        if not name:
            continue
        if name not in PRESETS and name not in PEERS:
            raise UsageError(f"unknown model {raw!r}; valid models: {', '.join(model_names())}")
        if name not in names:
            names.append(name)
    if not names:
        raise UsageError(f"no model to measure; valid models: {', '.join(model_names())}")
    if config.form not in FORMS:
        raise UsageError(f"form must be one of {', '.join(FORMS)}, got {config.form!r}")
    forms = ("inference", "training") if config.form == "both" else (config.form,)
    entries = [
        _Entry(name, form)
        for name in names
        for form in (forms if name in PRESETS else (None,))  # type: ignore[arg-type]
    ]
    return entries, config.form != "inference"


def _sizes(config: BenchConfig) -> tuple[tuple[int, int], tuple[int, int]]:
    """(input size, output size), each (width, height)."""
    s = config.scale
    if config.size is not None and config.output_size is not None:
        raise UsageError("give either the input size (--size) or the output size, not both")
    if config.size is not None:
        w, h = config.size
        if w < 1 or h < 1:
            raise UsageError(f"size must be positive, got {w}x{h}")
        return (w, h), (w * s, h * s)
    w, h = config.output_size or DEFAULT_OUTPUT_SIZE
    if w < 1 or h < 1:
        raise UsageError(f"output size must be positive, got {w}x{h}")
    if w % s or h % s:
        raise UsageError(
            f"output size {w}x{h} is not divisible by the scale {s}; pick one that is, "
            f"or give the input size with --size"
        )
    return (w // s, h // s), (w, h)


def _device(name: str) -> torch.device:
    name = name.strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if re.fullmatch(r"cuda(:\d+)?", name):
        if not torch.cuda.is_available():
            raise UsageError("device cuda: CUDA is not available to this torch build / machine")
        device = torch.device(name)
        index = device.index or 0
        if index >= torch.cuda.device_count():
            raise UsageError(
                f"device {name}: only {torch.cuda.device_count()} CUDA device(s) are visible"
            )
        return torch.device("cuda", index)
    raise UsageError(f"device must be auto, cpu, cuda or cuda:N, got {name!r}")


def _precision(name: str, device: torch.device) -> str:
    name = name.strip().lower()
    if name not in PRECISIONS:
        raise UsageError(f"precision must be one of {', '.join(PRECISIONS)}, got {name!r}")
    if device.type == "cpu":
        if name == "fp16":
            raise UsageError("fp16 is not supported on CPU; use fp32 or bf16")
        return "fp32" if name == "auto" else name
    if name == "auto":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return name


def _default_threads() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


# --------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LatencyStats:
    """Statistics of a set of timings, in milliseconds."""

    median: float
    p10: float
    p90: float
    mean: float
    min: float
    max: float
    samples: tuple[float, ...]

    @classmethod
    def of(cls, samples: list[float]) -> LatencyStats:
        values = np.asarray(samples, dtype=np.float64)
        p10, median, p90 = np.percentile(values, [10, 50, 90])
        return cls(
            median=float(median),
            p10=float(p10),
            p90=float(p90),
            mean=float(values.mean()),
            min=float(values.min()),
            max=float(values.max()),
            samples=tuple(float(v) for v in samples),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "median": self.median,
            "p10": self.p10,
            "p90": self.p90,
            "mean": self.mean,
            "min": self.min,
            "max": self.max,
            "runs": len(self.samples),
            "samples": list(self.samples),
        }


@dataclass(frozen=True)
class PartTime:
    """One part of the split.

    Attributes:
        ms: the part's share of the median profiled total, in milliseconds.
        percent: its share, in percent (median over the profiled runs, normalised).
        scaled_ms: the share of the plain median latency, in milliseconds.
        samples: the raw milliseconds of each profiled run, in the order of
            ``ModelResult.profiled_ms.samples``.
    """

    ms: float
    percent: float
    scaled_ms: float
    samples: tuple[float, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "ms": self.ms,
            "percent": self.percent,
            "scaled_ms": self.scaled_ms,
            "samples": list(self.samples),
        }


@dataclass(frozen=True)
class ModelResult:
    """Everything measured for one model (one form of one LIPT preset, or one peer)."""

    label: str
    name: str
    kind: str  # "lipt" or "peer"
    form: str | None  # LIPT: "inference" / "training"; peers: None
    parameters: int
    flops: int
    flops_by_part: dict[str, int]
    latency_ms: LatencyStats
    profiled_ms: LatencyStats
    parts: dict[str, PartTime]
    peak_memory_bytes: int | None
    megapixels_per_s: float

    @property
    def gflop(self) -> float:
        return self.flops / 1e9

    @property
    def parts_sum_ms(self) -> float:
        return sum(part.ms for part in self.parts.values())

    @property
    def profile_overhead_ms(self) -> float:
        """Median profiled total minus median plain latency (noise can make it negative)."""
        return self.profiled_ms.median - self.latency_ms.median

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "name": self.name,
            "kind": self.kind,
            "form": self.form,
            "parameters": self.parameters,
            "flops": self.flops,
            "gflop": self.gflop,
            "flops_by_part": dict(self.flops_by_part),
            "latency_ms": self.latency_ms.to_dict(),
            "profiled_ms": self.profiled_ms.to_dict(),
            "profile_overhead_ms": self.profile_overhead_ms,
            "parts": {name: part.to_dict() for name, part in self.parts.items()},
            "parts_sum_ms": self.parts_sum_ms,
            "peak_memory_bytes": self.peak_memory_bytes,
            "megapixels_per_s": self.megapixels_per_s,
        }


@dataclass(frozen=True)
class Environment:
    """Where the measurement ran."""

    device: str
    device_name: str
    threads: int
    cpu_count: int
    precision: str
    torch_version: str
    python_version: str
    platform: str

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class RestoreResult:
    """The whole restore path timed on a real image."""

    image: str
    model: str
    precision: str
    input_size: tuple[int, int]  # (width, height)
    output_size: tuple[int, int]
    tile: int | None  # input pixels; None: the whole image at once
    tiles: int
    compute_ms: LatencyStats  # tensor in, tensor out (tiling included)
    end_to_end_ms: LatencyStats  # file read, restore, file write
    compute_megapixels_per_s: float
    end_to_end_megapixels_per_s: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "image": self.image,
            "model": self.model,
            "precision": self.precision,
            "input_size": {"width": self.input_size[0], "height": self.input_size[1]},
            "output_size": {"width": self.output_size[0], "height": self.output_size[1]},
            "tile": self.tile,
            "tiles": self.tiles,
            "compute_ms": self.compute_ms.to_dict(),
            "end_to_end_ms": self.end_to_end_ms.to_dict(),
            "compute_megapixels_per_s": self.compute_megapixels_per_s,
            "end_to_end_megapixels_per_s": self.end_to_end_megapixels_per_s,
        }


@dataclass(frozen=True)
class BenchReport:
    """The result of :func:`run_benchmark`; :meth:`to_dict` is its JSON form."""

    created: str
    environment: Environment
    scale: int
    input_size: tuple[int, int]  # (width, height)
    output_size: tuple[int, int]
    form: str
    runs: int
    warmup: int
    profile_runs: int
    seed: int
    memory_method: str | None  # "cuda-max-allocated", "cpu-rss-growth" or None
    models: list[ModelResult]
    restore: RestoreResult | None = None
    notes: list[str] = field(default_factory=list)

    def model(self, label: str) -> ModelResult:
        for result in self.models:
            if result.label == label:
                return result
        raise KeyError(label)

    def to_dict(self) -> dict[str, Any]:
        w, h = self.input_size
        ow, oh = self.output_size
        return {
            "schema": SCHEMA,
            "created": self.created,
            "environment": self.environment.to_dict(),
            "settings": {
                "scale": self.scale,
                "input_size": {"width": w, "height": h},
                "output_size": {"width": ow, "height": oh},
                "batch": 1,
                "form": self.form,
                "runs": self.runs,
                "warmup": self.warmup,
                "profile_runs": self.profile_runs,
                "seed": self.seed,
                "order": "interleaved: every round times each model once, in a shuffled order",
            },
            "units": {
                "time": "ms",
                "flops": "FLOP (2 per multiply-add)",
                "memory": "bytes",
                "throughput": "output megapixels per second",
            },
            "flop_note": FLOP_NOTE,
            "memory_method": self.memory_method,
            "parts": {name: PART_LABELS[name] for name in PARTS},
            "models": [result.to_dict() for result in self.models],
            "restore": self.restore.to_dict() if self.restore else None,
            "notes": list(self.notes),
        }


CSV_COLUMNS = (
    "label",
    "name",
    "kind",
    "form",
    "parameters",
    "gflop",
    *(f"{p}_gflop" for p in PARTS),
    "latency_median_ms",
    "latency_p10_ms",
    "latency_p90_ms",
    "profiled_ms",
    "profile_overhead_ms",
    *(f"{p}_{unit}" for p in PARTS for unit in ("ms", "percent")),
    "peak_memory_bytes",
    "megapixels_per_s",
    "device",
    "precision",
    "threads",
    "scale",
    "input_size",
    "output_size",
)


def csv_rows(report: BenchReport) -> list[dict[str, Any]]:
    """One flat row per model, keyed by :data:`CSV_COLUMNS`."""
    env = report.environment
    rows = []
    for r in report.models:
        row: dict[str, Any] = {
            "label": r.label,
            "name": r.name,
            "kind": r.kind,
            "form": r.form or "",
            "parameters": r.parameters,
            "gflop": round(r.gflop, 6),
            "latency_median_ms": round(r.latency_ms.median, 4),
            "latency_p10_ms": round(r.latency_ms.p10, 4),
            "latency_p90_ms": round(r.latency_ms.p90, 4),
            "profiled_ms": round(r.profiled_ms.median, 4),
            "profile_overhead_ms": round(r.profile_overhead_ms, 4),
            "peak_memory_bytes": "" if r.peak_memory_bytes is None else r.peak_memory_bytes,
            "megapixels_per_s": round(r.megapixels_per_s, 6),
            "device": env.device,
            "precision": env.precision,
            "threads": env.threads,
            "scale": report.scale,
            "input_size": "x".join(map(str, report.input_size)),
            "output_size": "x".join(map(str, report.output_size)),
        }
        for p in PARTS:
            row[f"{p}_gflop"] = round(r.flops_by_part[p] / 1e9, 6)
            row[f"{p}_ms"] = round(r.parts[p].ms, 4)
            row[f"{p}_percent"] = round(r.parts[p].percent, 3)
        rows.append(row)
    return rows


def write_json(report: BenchReport, path: str | os.PathLike[str]) -> None:
    """Write ``report.to_dict()`` as indented JSON, atomically."""
    import json

    try:
        write_bytes(path, (json.dumps(report.to_dict(), indent=2) + "\n").encode("utf-8"))
    except OSError as error:
        raise LiptError(f"{path}: cannot write: {error.strerror or error}") from None


def write_csv(report: BenchReport, path: str | os.PathLike[str]) -> None:
    """Write :func:`csv_rows` with a header of :data:`CSV_COLUMNS`, atomically."""
    import csv

    try:
        with replacing(path) as temp, open(temp, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS)
            writer.writeheader()
            writer.writerows(csv_rows(report))
    except OSError as error:
        raise LiptError(f"{path}: cannot write: {error.strerror or error}") from None


# --------------------------------------------------------------------------------------------
# Attribution
# --------------------------------------------------------------------------------------------


def part_of(module: nn.Module) -> str | None:
    """The part (``msa``, ``mlp``, ``conv``) a module's time counts to, or None (look inside)."""
    name = type(module).__name__
    if isinstance(module, NVSMSA) or "Attention" in name:
        return "msa"
    if "Mlp" in name:
        return "mlp"
    if isinstance(module, _CONV_TYPES):
        return "conv"
    return None


def categorized_modules(model: nn.Module) -> list[tuple[str, nn.Module, str]]:
    """(qualified name, module, part) of the outermost modules that have a part.

    A module inside one that has a part counts to that part (a convolution inside an attention
    module is MSA), so only the outermost are hooked and nothing is counted twice.
    """
    found: list[tuple[str, nn.Module, str]] = []

    def visit(prefix: str, module: nn.Module) -> None:
        part = part_of(module)
        if part is not None:
            found.append((prefix, module, part))
            return
        for name, child in module.named_children():
            visit(f"{prefix}.{name}" if prefix else name, child)

    visit("", model)
    return found


@contextlib.contextmanager
def _part_hooks(
    model: nn.Module, read: Callable[[], int], totals: dict[str, int]
) -> Iterator[None]:
    """While active, add ``read()`` deltas across each categorized module into ``totals``."""
    handles = []
    starts: list[int] = []

    def pre(module: nn.Module, args: Any) -> None:
        starts.append(read())

    def post(part: str, module: nn.Module, args: Any, output: Any) -> None:
        totals[part] += read() - starts.pop()

    try:
        for _, module, part in categorized_modules(model):
            handles.append(module.register_forward_pre_hook(pre))
            handles.append(module.register_forward_hook(functools.partial(post, part)))
        yield
    finally:
        for handle in handles:
            handle.remove()


def _count_flops(model: nn.Module, shape: tuple[int, ...]) -> tuple[int, dict[str, int]]:
    """FLOPs of one forward of ``shape``, total and by part, counted on a meta-device copy."""
    from torch.utils.flop_counter import FlopCounterMode

    def count(model: nn.Module, x: torch.Tensor) -> tuple[FlopCounterMode, dict[str, int]]:
        counter = FlopCounterMode(display=False)
        totals = dict.fromkeys(PARTS[:3], 0)
        with torch.inference_mode(), counter, _part_hooks(model, counter.get_total_flops, totals):
            model(x)
        return counter, totals

    try:
        meta = copy.deepcopy(model).to(device="meta", dtype=torch.float32)
        counter, totals = count(meta, torch.empty(shape, device="meta"))
    except Exception:  # an operation without a meta kernel: count a real forward instead
        counter, totals = count(model, torch.zeros(shape, dtype=torch.float32))
    total = int(counter.get_total_flops())
    by_part = {p: int(totals[p]) for p in PARTS[:3]}
    by_part["other"] = total - sum(by_part.values())
    return total, by_part


# --------------------------------------------------------------------------------------------
# Memory
# --------------------------------------------------------------------------------------------


def _malloc_trim() -> None:
    """Give freed heap memory back to the system (glibc), so RSS growth is not hidden."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None).malloc_trim(0)


class _RssSampler:
    """Samples this process's resident set size from /proc/self/statm in a thread."""

    def __init__(self, interval_s: float = 0.0005) -> None:
        self._interval = interval_s
        self._page = os.sysconf("SC_PAGE_SIZE")
        self._fd = os.open("/proc/self/statm", os.O_RDONLY)
        self._stop = threading.Event()
        self.baseline = self._rss()
        self.peak = self.baseline
        self._thread = threading.Thread(target=self._loop, daemon=True)

    @staticmethod
    def available() -> bool:
        return os.path.exists("/proc/self/statm")

    def _rss(self) -> int:
        return int(os.pread(self._fd, 128, 0).split()[1]) * self._page

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._rss())
            time.sleep(self._interval)

    def __enter__(self) -> _RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())
        os.close(self._fd)

    @property
    def growth(self) -> int:
        return max(0, self.peak - self.baseline)


# --------------------------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------------------------


class _Timer:
    """Plain and profiled timing of one forward on one device."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.cuda = device.type == "cuda"

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)

    def plain(self, model: nn.Module, x: torch.Tensor) -> float:
        """Milliseconds of one forward: CUDA events on GPU, perf_counter on CPU."""
        if self.cuda:
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            self.sync()
            start.record()
            y = model(x)
            end.record()
            end.synchronize()
            del y
            return float(start.elapsed_time(end))
        t0 = time.perf_counter_ns()
        y = model(x)
        elapsed = time.perf_counter_ns() - t0
        del y
        return elapsed / 1e6

    def profiled(self, model: nn.Module, x: torch.Tensor) -> tuple[float, dict[str, float]]:
        """Milliseconds of one forward with hooks, and of its MSA / MLP / Conv / Other parts."""
        totals = dict.fromkeys(PARTS[:3], 0)

        def now() -> int:
            self.sync()
            return time.perf_counter_ns()

        with _part_hooks(model, now, totals):
            t0 = now()
            y = model(x)
            total = now() - t0
        del y
        parts = {p: totals[p] / 1e6 for p in PARTS[:3]}
        parts["other"] = total / 1e6 - sum(parts.values())
        return total / 1e6, parts

    def memory(self, model: nn.Module, x: torch.Tensor) -> int | None:
        """Peak memory of one forward above what was in use before it, in bytes."""
        if self.cuda:
            self.sync()
            torch.cuda.reset_peak_memory_stats(self.device)
            before = torch.cuda.memory_allocated(self.device)
            y = model(x)
            self.sync()
            del y
            return int(torch.cuda.max_memory_allocated(self.device) - before)
        if not _RssSampler.available():
            model(x)
            return None
        gc.collect()
        _malloc_trim()
        with _RssSampler() as sampler:
            y = model(x)
            del y
        return sampler.growth


def _cpu_name() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "CPU"


def _build(entry: _Entry, scale: int) -> nn.Module:
    if entry.is_lipt:
        return create_model(entry.name, scale=scale, inference=entry.form == "inference")
    return create_peer(entry.name, scale=scale)


@contextlib.contextmanager
def _threads(n: int) -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    gc.collect()
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _shares(parts: dict[str, list[float]], totals: list[float]) -> dict[str, float]:
    """Each part's share of its run's total, median over the runs, normalised to sum to one.

    Shares, unlike milliseconds, survive a run that the machine slowed down as a whole, and the
    median drops a run in which one part alone was stalled; the normalised shares times the
    median total then add up to that total exactly.
    """
    medians = {}
    for p in PARTS:
        fractions = [v / t if t > 0 else 0.0 for v, t in zip(parts[p], totals, strict=True)]
        medians[p] = max(0.0, float(np.median(fractions)))
    total = sum(medians.values())
    if total <= 0:
        return dict.fromkeys(PARTS, 0.0)
    return {p: share / total for p, share in medians.items()}


def run_benchmark(config: BenchConfig, progress: ProgressFn | None = None) -> BenchReport:
    """Measure every model of ``config``; see the module documentation for the method.

    Raises:
        UsageError: an unknown model, an invalid size, device, precision or count.
    """
    entries, show_form = _entries(config)
    scale = config.scale
    if scale not in VALID_SCALES:
        raise UsageError(f"scale must be one of {VALID_SCALES}, got {scale}")
    (w, h), (ow, oh) = _sizes(config)
    if config.runs < 1:
        raise UsageError(f"runs must be at least 1, got {config.runs}")
    if config.warmup < 0:
        raise UsageError(f"warmup must be at least 0, got {config.warmup}")
    profile_runs = config.profile_runs
    if profile_runs is None:
        profile_runs = max(1, config.runs // 2)
    if profile_runs < 1:
        raise UsageError(f"profile runs must be at least 1, got {profile_runs}")
    threads = config.threads if config.threads is not None else _default_threads()
    if threads < 1:
        raise UsageError(f"threads must be at least 1, got {threads}")
    device = _device(config.device)
    precision = _precision(config.precision, device)
    dtype = DTYPES[precision]
    restore_plan = (
        _plan_restore(config, entries, device, profile_runs) if config.restore is not None else None
    )

    n = len(entries)
    total_steps = n * (1 + config.warmup + config.runs + profile_runs)
    total_steps += (0 if config.warmup else n) + (restore_plan.steps if restore_plan else 0)
    step = 0

    def advance(description: str) -> None:
        nonlocal step
        if progress is not None:
            progress(description, step, total_steps)
        step += 1

    timer = _Timer(device)
    memory_method = (
        "cuda-max-allocated"
        if timer.cuda
        else ("cpu-rss-growth" if _RssSampler.available() else None)
    )
    rng = random.Random(config.seed)
    labels = [entry.label(show_form) for entry in entries]

    with contextlib.ExitStack() as stack:
        stack.enter_context(_threads(threads))
        stack.enter_context(torch.inference_mode())
        if timer.cuda:  # events and streams of the measured device, not the current one
            stack.enter_context(torch.cuda.device(device))
        environment = Environment(
            device=str(device),
            device_name=torch.cuda.get_device_name(device) if timer.cuda else _cpu_name(),
            threads=torch.get_num_threads(),
            cpu_count=os.cpu_count() or 1,
            precision=precision,
            torch_version=torch.__version__,
            python_version=platform.python_version(),
            platform=platform.platform(),
        )
        models: list[nn.Module] = []
        parameters: list[int] = []
        flops: list[tuple[int, dict[str, int]]] = []
        with torch.random.fork_rng(devices=[]):  # the caller's CPU random state is kept
            torch.default_generator.manual_seed(config.seed)
            for entry, label in zip(entries, labels, strict=True):
                advance(f"building {label}")
                model = _build(entry, scale).eval()
                parameters.append(sum(p.numel() for p in model.parameters()))
                flops.append(_count_flops(model, (1, 3, h, w)))
                models.append(model.to(device=device, dtype=dtype))
            generator = torch.Generator().manual_seed(config.seed)
            image = torch.randint(0, 256, (1, 3, h, w), generator=generator)
        x = image.to(device=device, dtype=dtype)

        memory: list[int | None] = [None] * n

        def one_round(
            description: str, r: int, count: int, run: Callable[[int, int], None]
        ) -> None:
            order = list(range(n))
            rng.shuffle(order)
            for i in order:
                advance(f"{description} {r + 1}/{count}: {labels[i]}")
                run(r, i)

        def rounds(description: str, count: int, run: Callable[[int, int], None]) -> None:
            for r in range(count):
                one_round(description, r, count, run)

        # Memory on the second warm-up round when there is one: past the first pass's one-time
        # set-up, and followed by another warm-up pass, since malloc_trim leaves the allocator
        # cold for the pass after it.
        memory_round = min(1, config.warmup - 1)

        def warm(r: int, i: int) -> None:
            if r == memory_round:
                memory[i] = timer.memory(models[i], x)
            else:
                models[i](x)
                timer.sync()

        if config.warmup:
            rounds("warm-up", config.warmup, warm)
        else:
            rounds("memory", 1, lambda r, i: memory.__setitem__(i, timer.memory(models[i], x)))

        plain: list[list[float]] = [[] for _ in range(n)]
        profiled: list[list[float]] = [[] for _ in range(n)]
        split: list[dict[str, list[float]]] = [{p: [] for p in PARTS} for _ in range(n)]

        def time_plain(r: int, i: int) -> None:
            plain[i].append(timer.plain(models[i], x))

        def time_profiled(r: int, i: int) -> None:
            total, parts = timer.profiled(models[i], x)
            profiled[i].append(total)
            for p in PARTS:
                split[i][p].append(parts[p])

        # Plain and profiled rounds are spread evenly through one sequence, so that a change in
        # the machine's load hits both alike and the overhead (their difference) stays honest.
        kinds = [("timing", config.runs, time_plain), ("profiling", profile_runs, time_profiled)]
        schedule = sorted(
            ((r + 0.5) / count, k, r) for k, (_, count, _) in enumerate(kinds) for r in range(count)
        )
        with _gc_paused():
            for _, k, r in schedule:
                description, count, run = kinds[k]
                one_round(description, r, count, run)

        restore = None
        if restore_plan is not None:
            restore = restore_plan.run(advance)

    results = []
    for i, entry in enumerate(entries):
        latency = LatencyStats.of(plain[i])
        profiled_stats = LatencyStats.of(profiled[i])
        shares = _shares(split[i], profiled[i])
        parts = {
            p: PartTime(
                ms=shares[p] * profiled_stats.median,
                percent=100.0 * shares[p],
                scaled_ms=shares[p] * latency.median,
                samples=tuple(split[i][p]),
            )
            for p in PARTS
        }
        results.append(
            ModelResult(
                label=labels[i],
                name=entry.name,
                kind="lipt" if entry.is_lipt else "peer",
                form=entry.form,
                parameters=parameters[i],
                flops=flops[i][0],
                flops_by_part=flops[i][1],
                latency_ms=latency,
                profiled_ms=profiled_stats,
                parts=parts,
                peak_memory_bytes=memory[i],
                megapixels_per_s=ow * oh / 1e6 / (latency.median / 1e3)
                if latency.median > 0
                else math.inf,
            )
        )
    if progress is not None:
        progress("done", total_steps, total_steps)

    notes = []
    if precision != "fp32":
        notes.append(f"{precision}: weights and input cast to {dtype}; FLOPs counted the same")
    return BenchReport(
        created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        environment=environment,
        scale=scale,
        input_size=(w, h),
        output_size=(ow, oh),
        form=config.form,
        runs=config.runs,
        warmup=config.warmup,
        profile_runs=profile_runs,
        seed=config.seed,
        memory_method=memory_method,
        models=results,
        restore=restore,
        notes=notes,
    )


# --------------------------------------------------------------------------------------------
# The whole restore path
# --------------------------------------------------------------------------------------------


@dataclass
class _RestorePlan:
    """The restore path on one image, prepared (and validated) before anything is timed."""

    path: Path
    model_name: str
    restorer: Any  # lipt_core.restore.Restorer
    image: Any  # lipt_core.imageio.Image
    runs: int

    @property
    def steps(self) -> int:
        return 1 + 2 * self.runs

    def run(self, advance: Callable[[str], None]) -> RestoreResult:
        import tempfile

        from lipt_core.imageio import WRITE_FORMATS, read_image, write_image

        restorer, image = self.restorer, self.image
        suffix = self.path.suffix.lower() if self.path.suffix.lower() in WRITE_FORMATS else ".png"
        grid = restorer.plan(image.height, image.width)
        tile = restorer.tile_for(image.height, image.width)
        sync = _Timer(restorer.device).sync
        advance(f"restore warm-up: {self.path.name}")
        restorer.restore(image)
        sync()
        compute: list[float] = []
        end_to_end: list[float] = []
        with tempfile.TemporaryDirectory(prefix="lipt-bench-") as folder:
            target = Path(folder) / f"restored{suffix}"
            for r in range(self.runs):
                advance(f"restore {r + 1}/{self.runs}: in memory")
                t0 = time.perf_counter_ns()
                restorer.restore(image)
                sync()
                compute.append((time.perf_counter_ns() - t0) / 1e6)
                advance(f"restore {r + 1}/{self.runs}: file to file")
                t0 = time.perf_counter_ns()
                write_image(restorer.restore(read_image(self.path)), target)
                sync()
                end_to_end.append((time.perf_counter_ns() - t0) / 1e6)
        scale = restorer.info.scale
        out_size = (image.width * scale, image.height * scale)
        megapixels = out_size[0] * out_size[1] / 1e6
        compute_stats, e2e_stats = LatencyStats.of(compute), LatencyStats.of(end_to_end)
        return RestoreResult(
            image=str(self.path),
            model=self.model_name,
            precision=restorer.precision,
            input_size=(image.width, image.height),
            output_size=out_size,
            tile=tile,
            tiles=grid.count,
            compute_ms=compute_stats,
            end_to_end_ms=e2e_stats,
            compute_megapixels_per_s=megapixels / (compute_stats.median / 1e3),
            end_to_end_megapixels_per_s=megapixels / (e2e_stats.median / 1e3),
        )


def _plan_restore(
    config: BenchConfig, entries: list[_Entry], device: torch.device, runs: int
) -> _RestorePlan:
    """Build the restorer for the first LIPT model and read the image, before any timing."""
    from lipt_core.imageio import read_image
    from lipt_core.restore import Restorer

    assert config.restore is not None
    lipt = [entry for entry in entries if entry.is_lipt]
    if not lipt:
        raise UsageError(
            "--restore times LIPT's restore path: put a LIPT preset "
            f"({', '.join(sorted(PRESETS))}) in --model"
        )
    name = lipt[0].name
    path = Path(config.restore)
    image = read_image(path)
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(config.seed)
        model = create_model(name, scale=config.scale, inference=True)
    restorer = Restorer(
        model,
        task="sr" if config.scale > 1 else "denoise",
        device=device,
        precision=config.precision,
        tile="auto" if config.restore_tile is None else config.restore_tile,
    )
    return _RestorePlan(path=path, model_name=name, restorer=restorer, image=image, runs=runs)

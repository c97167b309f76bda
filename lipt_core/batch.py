"""Restore many files: inputs, outputs, sharding, and a pipeline that keeps the model busy.

`restore_files` is what ``lipt sr``, ``lipt denoise`` and ``lipt car`` call. In order:

1. **Weights.** ``--weights`` (a file or URL) or the trained weights for the task; there are
   none yet, which is a usage error, never a silent run of random weights.
2. **Inputs** (`expand_inputs`). Files as named (whatever their extension: a bad one is
   reported, not skipped silently); folders scanned for image extensions
   (`lipt_core.imageio.SUPPORTED_EXTENSIONS`), into sub-folders with ``recursive``; globs
   (``*``, ``?``, ``[...]``, and ``**`` with ``recursive``). A folder scan ignores hidden files,
   files that are not images by extension (``Thumbs.db``, ``notes.txt``: listed in the report as
   ignored, not failed), the output folder, and files that are this run's outputs of other
   inputs (so a second run does not restore the first run's results).
3. **Shard** ``K/N``: every N-th input from the K-th (1-based) of the list in a fixed order
   (arguments in order; inside each, paths sorted), so N machines given the same arguments
   share the batch without overlap.
4. **Outputs** (`plan_outputs`). ``-o FILE`` for one input; ``-o FOLDER`` (created if needed)
   mirrors each input's path relative to its folder argument (sub-folders with ``recursive``);
   by default beside the input. Names are ``NAME_x4.EXT`` (sr), ``NAME_denoised.EXT`` and
   ``NAME_car.EXT``, in the input's format when it can be written (PNG otherwise; always PNG
   for car, see `TASK_DEFAULT_FORMATS`) unless a format is given (``-o FILE``'s extension is
   one). Refused before any work: two inputs with the same output, an output that is an input,
   and an existing output unless ``existing`` is ``skip`` or ``overwrite``.
5. **The pipeline.** A reader thread decodes the next image and a writer thread encodes the
   previous result while the model runs in the calling thread. A file that cannot be read,
   restored or written becomes a failed result and the rest go on. On KeyboardInterrupt the
   threads stop (a write in progress completes; writes are atomic, so no partial file is ever
   left) and the interrupt propagates.

Nothing here prints: progress goes through `BatchCallbacks`.
"""

from __future__ import annotations

import contextlib
import glob
import os
import queue
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lipt_core.errors import LiptError, UsageError
from lipt_core.imageio import SUPPORTED_EXTENSIONS, WRITE_FORMATS, Image

TASK_SUFFIXES = {"sr": "_x{scale}", "denoise": "_denoised", "car": "_car"}
FORMAT_EXTENSIONS = {"png": ".png", "jpeg": ".jpg", "webp": ".webp", "tiff": ".tif", "bmp": ".bmp"}
_FORMAT_NAMES = {"png": "png", "jpg": "jpeg", "jpeg": "jpeg", "webp": "webp", "tif": "tiff"}
_FORMAT_NAMES.update({"tiff": "tiff", "bmp": "bmp"})
TASK_DEFAULT_FORMATS = {"car": "png"}
"""Formats results are written in without --format, by task: a JPEG artifact remover that wrote
JPEG again would put compression artifacts back."""
EXISTING_POLICIES = ("error", "skip", "overwrite")
DEFAULT_MODEL = "lipt-tiny"
"""The preset whose bundled weights sr/denoise/car use without --model and --weights."""
WRITE_BUFFER_BYTES = 1 << 30
"""Decoded results waiting for the writer may take this much memory before the model waits."""
_GLOB_CHARS = re.compile(r"[*?\[]")


# ---------------------------------------------------------------------------------------------
# Inputs


@dataclass(frozen=True)
class InputItem:
    """One input: the file, its path relative to the argument it came from, how it was found."""

    path: Path
    rel: Path
    scanned: bool = False  # found by scanning a folder (vs. named, or matched by a glob)
    error: str | None = None  # known before reading: not found, a folder, ...


@dataclass
class Inputs:
    items: list[InputItem]
    ignored: list[Path] = field(default_factory=list)  # non-images met while scanning folders


def _is_image_name(path: Path) -> bool:
    return path.suffix.lower() in SUPPORTED_EXTENSIONS


def _scan_folder(
    folder: Path, *, recursive: bool, exclude: Sequence[Path], ignored: list[Path]
) -> list[InputItem]:
    excluded = {_resolved(p) for p in exclude}
    found: list[InputItem] = []
    for root, dirs, files in os.walk(folder, followlinks=False):
        root_path = Path(root)
        dirs[:] = sorted(
            d
            for d in dirs
            if recursive and not d.startswith(".") and _resolved(root_path / d) not in excluded
        )
        names = sorted(files)
        if not recursive:
            # The directory entries of this folder count too: a folder named x.png is reported.
            names = sorted([*files, *(d for d in os.listdir(root) if (root_path / d).is_dir())])
            dirs[:] = []
        for name in names:
            path = root_path / name
            if name.startswith("."):
                continue
            if not _is_image_name(path):
                if path.is_file():
                    ignored.append(path)
                continue
            found.append(InputItem(path=path, rel=path.relative_to(folder), scanned=True))
    return sorted(found, key=lambda item: item.rel.as_posix())


def _glob_root(pattern: str) -> Path:
    """The folder part of a glob before its first wildcard: what output paths are relative to."""
    parts = Path(pattern).parts
    static = []
    for part in parts[:-1]:
        if _GLOB_CHARS.search(part):
            break
        static.append(part)
    return Path(*static) if static else Path(".")


def expand_inputs(
    inputs: Sequence[str | os.PathLike],
    *,
    recursive: bool = False,
    exclude: Sequence[Path] = (),
) -> Inputs:
    """Turn the INPUT arguments into a list of files (see the module docstring).

    A missing path or a glob matching nothing becomes an item with ``error`` set, so it is
    reported with the others; ``exclude`` lists folders a scan must not enter.
    """
    items: list[InputItem] = []
    ignored: list[Path] = []
    for argument in inputs:
        text = os.fspath(argument)
        path = Path(text).expanduser()
        if path.is_dir():
            scanned = _scan_folder(path, recursive=recursive, exclude=exclude, ignored=ignored)
            if not scanned:
                hint = "" if recursive else " (pass --recursive to look in its sub-folders)"
                scanned = [InputItem(path, Path(path.name), error=f"a folder with no images{hint}")]
            items += scanned
        elif path.exists() or path.is_symlink():
            items.append(InputItem(path=path, rel=Path(path.name)))
        elif _GLOB_CHARS.search(text):
            root = _glob_root(str(path))
            matches = sorted(glob.glob(str(path), recursive=recursive))
            if not matches:
                items.append(InputItem(path=path, rel=Path(path.name), error="no file matches"))
            for match in matches:
                found = Path(match)
                try:
                    rel = found.relative_to(root)
                except ValueError:
                    rel = Path(found.name)
                if found.is_dir():
                    if recursive:
                        for item in _scan_folder(
                            found, recursive=True, exclude=exclude, ignored=ignored
                        ):
                            items.append(
                                InputItem(item.path, rel / item.rel, scanned=True, error=None)
                            )
                    else:
                        items.append(
                            InputItem(
                                found,
                                rel,
                                error="is a directory, not an image file "
                                "(pass --recursive to restore the images in it)",
                            )
                        )
                else:
                    items.append(InputItem(path=found, rel=rel))
        else:
            items.append(InputItem(path=path, rel=Path(path.name), error="file not found"))
    # The same file named twice is restored once.
    seen: set[Path] = set()
    unique = []
    for item in items:
        key = _resolved(item.path)
        if key in seen:
            continue
        seen.add(key)
        unique.append(item)
    return Inputs(unique, ignored)


def _resolved(path: Path) -> Path:
    try:
        return path.resolve()
    except OSError:
        return path.absolute()


def parse_shard(shard: str | tuple[int, int] | None) -> tuple[int, int] | None:
    """``"K/N"`` -> (K, N) with 1 <= K <= N."""
    if shard is None:
        return None
    if isinstance(shard, tuple):
        k, n = shard
    else:
        match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(shard))
        if not match:
            raise UsageError(f"--shard must look like K/N (e.g. 1/4), got {shard!r}")
        k, n = int(match[1]), int(match[2])
    if n < 1 or not 1 <= k <= n:
        raise UsageError(f"--shard K/N needs 1 <= K <= N, got {k}/{n}")
    return k, n


def take_shard(items: Sequence[Any], shard: tuple[int, int] | None) -> list[Any]:
    """Every N-th item from the K-th: a deterministic split into N disjoint parts."""
    if shard is None:
        return list(items)
    k, n = shard
    return list(items[k - 1 :: n])


def parse_tile(tile: str | int | None) -> int | str | None:
    """``auto``, ``0``/``whole`` (no tiling) or a size in pixels."""
    if tile is None or isinstance(tile, int):
        return tile
    text = str(tile).strip().lower()
    if text == "auto":
        return "auto"
    if text in ("0", "whole", "none"):
        return None
    if text.isdigit():
        return int(text)
    raise UsageError(f"--tile must be auto, 0 (whole image) or a size in pixels, got {tile!r}")


def parse_quality(quality: str | int | None) -> int | str | None:
    """``auto`` or a JPEG quality 1..100."""
    if quality is None or isinstance(quality, int):
        return quality
    text = str(quality).strip().lower()
    if text == "auto":
        return "auto"
    if text.isdigit() and 1 <= int(text) <= 100:
        return int(text)
    raise UsageError(f"--quality must be a JPEG quality from 1 to 100, or auto; got {quality!r}")


# ---------------------------------------------------------------------------------------------
# Outputs


def normalise_format(format: str | None) -> str | None:
    if format is None:
        return None
    name = _FORMAT_NAMES.get(format.strip().lstrip(".").lower())
    if name is None:
        raise UsageError(
            f"unknown output format {format!r}: use {', '.join(sorted(FORMAT_EXTENSIONS))}"
        )
    return name


def output_format(task: str, format: str | None, output: Path | None = None) -> str | None:
    """The format results are written in: the one asked for, else None where ``output`` names a
    file (its extension decides), else the task's default, else None (each input's own where it
    can be written)."""
    if format is not None or (output is not None and output_is_file(output)):
        return normalise_format(format)
    return TASK_DEFAULT_FORMATS.get(task)


def output_suffix(task: str, scale: int) -> str:
    return TASK_SUFFIXES[task].format(scale=scale)


def output_name(path: Path, suffix: str, format: str | None) -> str:
    """``NAME{suffix}.EXT``: the input's extension when it can be written, else per format."""
    if format is not None:
        ext = FORMAT_EXTENSIONS[format]
    elif path.suffix.lower() in WRITE_FORMATS:
        ext = path.suffix
    else:
        ext = ".png"
    return f"{path.stem}{suffix}{ext}"


def output_is_file(output: Path) -> bool:
    """Whether ``-o`` names a file (an image extension, not an existing folder)."""
    return not output.is_dir() and output.suffix.lower() in WRITE_FORMATS


def plan_outputs(
    items: Sequence[InputItem],
    *,
    suffix: str,
    output: Path | None = None,
    format: str | None = None,
) -> list[Path]:
    """The output path of each item (see the module docstring)."""
    if output is not None and output_is_file(output):
        if len(items) != 1:
            raise UsageError(
                f"-o {output} names a file, but there are {len(items)} inputs; "
                "give a folder instead"
            )
        if format is not None and WRITE_FORMATS[output.suffix.lower()].lower() != format:
            raise UsageError(f"-o {output} does not match --format {format}")
        return [output]
    if output is not None and output.exists() and not output.is_dir():
        raise UsageError(f"-o {output}: exists and is not a folder")
    planned = []
    for item in items:
        name = output_name(item.path, suffix, format)
        if output is None:
            planned.append(item.path.parent / name)
        else:
            planned.append(output / item.rel.parent / name)
    return planned


def check_outputs(
    items: Sequence[InputItem], outputs: Sequence[Path], all_inputs: Sequence[InputItem]
) -> None:
    """Refuse two inputs writing one output, and an output that is an input."""
    inputs = {_resolved(item.path): item.path for item in all_inputs}
    claimed: dict[Path, Path] = {}
    for item, out in zip(items, outputs, strict=True):
        key = _resolved(out)
        if key in inputs:
            raise UsageError(
                f"{out}: the output for {item.path} would overwrite an input; "
                "choose another -o or --format"
            )
        if key in claimed:
            raise UsageError(
                f"{claimed[key]} and {item.path} would both be written to {out}; "
                "restore them into different folders"
            )
        claimed[key] = item.path


# ---------------------------------------------------------------------------------------------
# Requests and results


@dataclass
class RestoreRequest:
    """Everything ``lipt sr|denoise|car`` asks for; see `restore_files`."""

    task: str
    inputs: Sequence[str | os.PathLike]
    output: Path | None = None
    format: str | None = None
    recursive: bool = False
    existing: str = "error"  # error | skip | overwrite
    shard: str | tuple[int, int] | None = None
    model: str | None = None
    weights: str | None = None
    scale: int | None = None  # sr
    sigma: float | None = None  # denoise
    quality: int | str | None = None  # car: 1..100 or "auto"
    device: str = "auto"
    precision: str = "auto"
    tile: int | str | None = "auto"
    tile_overlap: int | None = None
    ensemble: bool = False  # average the 8 flips and rotations of each tile


@dataclass
class FileResult:
    """What happened to one input."""

    index: int
    input: str
    output: str | None
    status: str  # ok | failed | skipped
    error: str | None = None
    input_size: tuple[int, int] | None = None  # (width, height)
    output_size: tuple[int, int] | None = None
    seconds: float = 0.0  # model time
    read_seconds: float = 0.0
    write_seconds: float = 0.0
    tiles: int = 0
    sigma: float | None = None
    quality: int | None = None
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        def size(value: tuple[int, int] | None) -> dict[str, int] | None:
            return None if value is None else {"width": value[0], "height": value[1]}

        return {
            "input": self.input,
            "output": self.output,
            "status": self.status,
            "error": self.error,
            "input_size": size(self.input_size),
            "output_size": size(self.output_size),
            "seconds": round(self.seconds, 4),
            "read_seconds": round(self.read_seconds, 4),
            "write_seconds": round(self.write_seconds, 4),
            "tiles": self.tiles,
            "sigma": self.sigma,
            "quality": self.quality,
            "warnings": list(self.warnings),
        }


@dataclass
class BatchReport:
    task: str
    results: list[FileResult]
    model: dict[str, Any]
    wall_seconds: float
    ignored: list[Path] = field(default_factory=list)
    earlier_outputs: list[Path] = field(default_factory=list)
    shard: tuple[int, int] | None = None
    warnings: list[str] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(result.status == status for result in self.results)

    @property
    def model_seconds(self) -> float:
        return sum(result.seconds for result in self.results)

    @property
    def exit_code(self) -> int:
        return 1 if self.count("failed") else 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "model": self.model,
            "shard": f"{self.shard[0]}/{self.shard[1]}" if self.shard else None,
            "files": [result.to_dict() for result in self.results],
            "ignored": [str(path) for path in self.ignored],
            "earlier_outputs": [str(path) for path in self.earlier_outputs],
            "succeeded": self.count("ok"),
            "failed": self.count("failed"),
            "skipped": self.count("skipped"),
            "wall_seconds": round(self.wall_seconds, 4),
            "model_seconds": round(self.model_seconds, 4),
            "warnings": list(self.warnings),
        }


@dataclass
class BatchPlan:
    """What is about to run, given to `BatchCallbacks.on_plan`."""

    total: int  # files to restore (after sharding and skipping)
    model: dict[str, Any]
    settled: list[FileResult] = field(default_factory=list)  # failed or skipped before the run


@dataclass
class BatchCallbacks:
    """Progress hooks; each is optional. ``on_file_done`` is called from the writer thread as
    well as the caller's, once for each file of the plan (not for `BatchPlan.settled`)."""

    on_download: Callable[[int, int | None], None] | None = None
    on_plan: Callable[[BatchPlan], None] | None = None
    on_file_start: Callable[[int, Path, tuple[int, int], int], None] | None = None
    on_tile: Callable[[int, int], None] | None = None
    on_file_done: Callable[[FileResult], None] | None = None
    on_warning: Callable[[str], None] | None = None


# ---------------------------------------------------------------------------------------------
# The whole command


def restore_request(
    task: str, inputs: Sequence[str | os.PathLike], **options: Any
) -> RestoreRequest:
    """A RestoreRequest from command-line option values (enums, strings, flags).

    ``skip_existing``/``overwrite`` become ``existing``; ``tile`` and ``quality`` strings are
    parsed; options of the presentation (``json``, ``quiet``) are ignored.
    """

    def value(name: str) -> Any:
        item = options.get(name)
        return getattr(item, "value", item)

    if value("skip_existing") and value("overwrite"):
        raise UsageError("--skip-existing and --overwrite contradict each other; pass one")
    existing = "skip" if value("skip_existing") else "overwrite" if value("overwrite") else "error"
    return RestoreRequest(
        task=task,
        inputs=list(inputs),
        output=value("output"),
        format=value("format"),
        recursive=bool(value("recursive")),
        existing=existing,
        shard=value("shard"),
        model=value("model"),
        weights=value("weights"),
        scale=value("scale"),
        sigma=value("sigma"),
        quality=parse_quality(value("quality")),
        device=value("device") or "auto",
        precision=value("precision") or "auto",
        tile=parse_tile(value("tile") if "tile" in options else "auto"),
        tile_overlap=value("tile_overlap"),
        ensemble=bool(value("ensemble")),
    )


def build_restorer(request: RestoreRequest, callbacks: BatchCallbacks | None = None) -> Any:
    """The Restorer a request asks for: weights found, loaded, checked against the task."""
    from lipt_core.models.config import PRESETS
    from lipt_core.pretrained import gray_entry, verified_path
    from lipt_core.restore import Restorer, check_condition
    from lipt_core.weights import default_weights

    callbacks = callbacks or BatchCallbacks()
    if request.model is not None and request.model not in PRESETS:
        raise UsageError(
            f"unknown model {request.model!r}; valid models: {', '.join(sorted(PRESETS))}"
        )
    model = request.model or DEFAULT_MODEL
    weights = request.weights or default_weights(request.task, model, scale=request.scale)

    def load(path: str | os.PathLike, source: str | None) -> Restorer:
        return Restorer.from_weights(
            path,
            source=source,
            task=request.task,
            download_progress=callbacks.on_download,
            device=request.device,
            precision=request.precision,
            tile=request.tile,
            tile_overlap=request.tile_overlap,
            ensemble=request.ensemble,
            on_warning=callbacks.on_warning,
        )

    restorer = load(weights, None if request.weights else f"{Path(weights).stem} (bundled)")
    gray = None if request.weights else gray_entry(request.task, model, scale=request.scale)
    if gray is not None:
        restorer.attach_gray(load(verified_path(gray), f"{gray.name} (bundled)"))
    info = restorer.info
    if request.model is not None:
        preset = PRESETS[request.model]
        ours = (info.num_stages, info.channels, info.window)
        theirs = (preset.num_stages, preset.channels, preset.window_size)
        if ours != theirs:
            raise UsageError(
                f"{weights}: these weights are {info.description}, not {request.model}"
            )
    if request.task == "sr" and request.scale is not None and request.scale != info.scale:
        raise UsageError(f"{weights}: these weights are x{info.scale}, not x{request.scale}")
    if request.task == "denoise":
        _warn(callbacks, check_condition(info, "sigma", request.sigma))
    if request.task == "car" and isinstance(request.quality, int):
        _warn(callbacks, check_condition(info, "quality", request.quality))
    return restorer


def _warn(callbacks: BatchCallbacks, message: str | None) -> None:
    if message and callbacks.on_warning:
        callbacks.on_warning(message)


def validate_request(request: RestoreRequest) -> None:
    from lipt_core.restore import TASKS

    if request.task not in TASKS:
        raise UsageError(f"unknown task {request.task!r}: use {', '.join(TASKS)}")
    if request.existing not in EXISTING_POLICIES:
        raise UsageError(f"existing must be one of {', '.join(EXISTING_POLICIES)}")
    if request.scale is not None and request.scale not in (2, 3, 4):
        raise UsageError(f"--scale must be 2, 3 or 4, got {request.scale}")
    if request.sigma is not None and not 0 <= request.sigma <= 255:
        raise UsageError(f"--sigma must be between 0 and 255, got {request.sigma:g}")
    quality = request.quality
    if (
        quality is not None
        and quality != "auto"
        and (isinstance(quality, bool) or not isinstance(quality, int) or not 1 <= quality <= 100)
    ):
        raise UsageError(f"--quality must be 1..100 or auto, got {quality!r}")
    if not request.inputs:
        raise UsageError("no INPUT given")
    parse_shard(request.shard)
    normalise_format(request.format)


def restore_files(
    request: RestoreRequest,
    *,
    callbacks: BatchCallbacks | None = None,
    restorer: Any = None,
) -> BatchReport:
    """Restore every input of ``request``; see the module docstring.

    ``restorer`` (a `lipt_core.restore.Restorer`) skips loading weights. Raises UsageError
    (and writes nothing) for a request that cannot run as asked; per-file problems become failed
    results in the report instead.
    """
    start = time.perf_counter()
    callbacks = callbacks or BatchCallbacks()
    validate_request(request)
    output = Path(request.output).expanduser() if request.output is not None else None
    fmt = output_format(request.task, request.format, output)
    shard = parse_shard(request.shard)
    if restorer is None:  # before looking at any file: a missing model is said first
        restorer = build_restorer(request, callbacks)
    info = restorer.info
    suffix = output_suffix(request.task, info.scale)

    exclude = [output] if output is not None and not output_is_file(output) else []
    found = expand_inputs(request.inputs, recursive=request.recursive, exclude=exclude)
    items = found.items
    ignored = list(found.ignored)
    kept, earlier = drop_earlier_outputs(items, suffix, output, fmt)
    items = take_shard(kept, shard)
    if not items:
        raise UsageError("no input images found" + (" in this shard" if shard else ""))
    planned = plan_outputs(items, suffix=suffix, output=output, format=fmt)
    runnable = [(item, out) for item, out in zip(items, planned, strict=True) if not item.error]
    check_outputs([item for item, _ in runnable], [out for _, out in runnable], kept)

    results: list[FileResult] = []
    jobs: list[tuple[int, InputItem, Path]] = []
    existing = [(item, out) for item, out in runnable if out.exists() or out.is_symlink()]
    if existing and request.existing == "error":
        first = existing[0][1]
        more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
        raise UsageError(
            f"{first} already exists{more}; pass --overwrite to replace or --skip-existing to skip"
        )
    existing_outputs = {out for _, out in existing}
    for index, (item, out) in enumerate(zip(items, planned, strict=True)):
        if item.error is not None:
            results.append(
                FileResult(index, str(item.path), None, "failed", f"{item.path}: {item.error}")
            )
        elif request.existing == "skip" and out in existing_outputs:
            results.append(FileResult(index, str(item.path), str(out), "skipped", "exists"))
        else:
            jobs.append((index, item, out))

    model_info = restorer.describe()
    if callbacks.on_plan:
        callbacks.on_plan(BatchPlan(total=len(jobs), model=model_info, settled=list(results)))
    results += run_pipeline(jobs, restorer, request=request, format=fmt, callbacks=callbacks)
    results.sort(key=lambda result: result.index)
    return BatchReport(
        task=request.task,
        results=results,
        model=model_info,
        wall_seconds=time.perf_counter() - start,
        ignored=ignored,
        earlier_outputs=earlier,
        shard=shard,
    )


def drop_earlier_outputs(
    items: Sequence[InputItem], suffix: str, output: Path | None, fmt: str | None
) -> tuple[list[InputItem], list[Path]]:
    """Split off the files a folder scan found that are outputs of other inputs.

    A scanned file is an earlier output when this run would write to it, or when it is named
    ``NAME{suffix}.*`` beside a scanned ``NAME.*`` (what a run without ``-o`` writes, in any
    format). Named files and glob matches are always kept: asked for explicitly.
    """
    planned = {_resolved(p) for p in plan_outputs_loose(items, suffix, output, fmt)}
    stems = {(item.path.parent, item.path.stem) for item in items if item.scanned}
    kept, earlier = [], []
    for item in items:
        stem = item.path.stem
        if item.scanned and (
            _resolved(item.path) in planned
            or (
                stem.endswith(suffix)
                and len(stem) > len(suffix)
                and (item.path.parent, stem[: -len(suffix)]) in stems
            )
        ):
            earlier.append(item.path)
        else:
            kept.append(item)
    return kept, earlier


def plan_outputs_loose(
    items: Sequence[InputItem], suffix: str, output: Path | None, fmt: str | None
) -> list[Path]:
    """The outputs items would get, without the checks (to recognise earlier results)."""
    if output is not None and output_is_file(output):
        return [output]
    return plan_outputs(items, suffix=suffix, output=output, format=fmt)


# ---------------------------------------------------------------------------------------------
# The pipeline

_DONE = object()


class _Stop(Exception):
    pass


def _put(q: queue.Queue, value: Any, abort: threading.Event) -> None:
    while True:
        if abort.is_set():
            raise _Stop
        try:
            q.put(value, timeout=0.1)
            return
        except queue.Full:
            continue


def _get(q: queue.Queue, abort: threading.Event) -> Any:
    while True:
        if abort.is_set():
            raise _Stop
        try:
            return q.get(timeout=0.1)
        except queue.Empty:
            continue


@dataclass
class _Decoded:
    index: int
    item: InputItem
    output: Path
    image: Image | None
    error: str | None
    seconds: float
    quality: int | None = None


def _message(error: BaseException, path: Path) -> str:
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    if isinstance(error, LiptError):
        return text if text.startswith(str(path)) else f"{path}: {text}"
    return f"{path}: unexpected {type(error).__name__}: {text}"


class _WriteBudget:
    """Bytes of results waiting for (or being written by) the writer; the model waits for room."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.pending = 0
        self.condition = threading.Condition()

    def wait_for_room(self, size: int, abort: threading.Event) -> None:
        with self.condition:
            while self.pending and self.pending + size > self.limit:
                if abort.is_set():
                    raise _Stop
                self.condition.wait(timeout=0.1)

    def add(self, size: int) -> None:
        with self.condition:
            self.pending += size

    def release(self, size: int) -> None:
        with self.condition:
            self.pending -= size
            self.condition.notify_all()


def _image_bytes(image: Image) -> int:
    return image.pixels.nbytes + (image.alpha.nbytes if image.alpha is not None else 0)


def run_pipeline(
    jobs: Sequence[tuple[int, InputItem, Path]],
    restorer: Any,
    *,
    request: RestoreRequest,
    format: str | None = None,
    callbacks: BatchCallbacks | None = None,
    write_buffer: int = WRITE_BUFFER_BYTES,
) -> list[FileResult]:
    """Read, restore and write each job, reading and writing in threads beside the model."""
    from lipt_core.imageio import estimate_jpeg_quality, read_image, write_image
    from lipt_core.restore import check_condition

    callbacks = callbacks or BatchCallbacks()
    abort = threading.Event()
    decoded: queue.Queue = queue.Queue(maxsize=2)
    encoded: queue.Queue = queue.Queue()
    budget = _WriteBudget(write_buffer)
    results: list[FileResult] = []
    lock = threading.Lock()
    scale = restorer.info.scale

    def finish(result: FileResult) -> None:
        with lock:
            results.append(result)
        if callbacks.on_file_done:
            callbacks.on_file_done(result)

    def reader() -> None:
        try:
            for index, item, out in jobs:
                if abort.is_set():
                    return
                started = time.perf_counter()
                quality = None
                try:
                    image = read_image(item.path)
                    if request.task == "car" and request.quality == "auto":
                        quality = estimate_jpeg_quality(item.path)
                    error = None
                except Exception as exc:
                    image, error = None, _message(exc, item.path)
                if request.task == "car" and isinstance(request.quality, int):
                    quality = request.quality
                seconds = time.perf_counter() - started
                _put(decoded, _Decoded(index, item, out, image, error, seconds, quality), abort)
        except _Stop:
            return
        finally:
            # Always end the stream, so the model loop never waits for a reader that is gone.
            with contextlib.suppress(_Stop):
                _put(decoded, _DONE, abort)

    def writer() -> None:
        try:
            while True:
                job = _get(encoded, abort)
                if job is _DONE:
                    return
                result, image, size = job
                try:
                    if abort.is_set():
                        return
                    started = time.perf_counter()
                    try:
                        Path(result.output).parent.mkdir(parents=True, exist_ok=True)
                        write_image(image, result.output, format=format)
                        result.status = "ok"
                    except Exception as exc:
                        result.status = "failed"
                        result.error = _message(exc, Path(result.output))
                    result.write_seconds = time.perf_counter() - started
                    del image
                    finish(result)
                finally:
                    budget.release(size)
        except _Stop:
            return

    threads = [
        threading.Thread(target=reader, name="lipt-reader"),
        threading.Thread(target=writer, name="lipt-writer"),
    ]
    for thread in threads:
        thread.start()
    try:
        while True:
            job = _get(decoded, abort)
            if job is _DONE:
                break
            result = FileResult(
                index=job.index,
                input=str(job.item.path),
                output=str(job.output),
                status="failed",
                read_seconds=job.seconds,
                sigma=request.sigma if request.task == "denoise" else None,
                quality=job.quality,
            )
            if job.image is None:
                result.error = job.error
                result.output = None
                finish(result)
                continue
            image = job.image
            job.image = None
            result.input_size = (image.width, image.height)
            chosen = restorer.for_image(image)
            if request.task == "car" and request.quality == "auto" and job.quality is not None:
                try:
                    note = check_condition(chosen.info, "quality", job.quality)
                except UsageError as exc:
                    note = f"{job.item.path}: estimated quality {job.quality}: {exc}"
                if note:
                    result.warnings.append(note)
                    _warn(callbacks, note)
            grid = chosen.plan(image.height, image.width)
            result.tiles = grid.count
            out_bytes = (
                4
                * image.width
                * image.height
                * scale
                * scale
                * (image.pixels.shape[2] + (image.alpha is not None))
            )
            budget.wait_for_room(out_bytes, abort)
            if callbacks.on_file_start:
                callbacks.on_file_start(
                    job.index, job.item.path, (image.width, image.height), grid.count
                )
            started = time.perf_counter()
            try:
                restored = chosen.restore(image, on_tile=callbacks.on_tile)
            except Exception as exc:
                result.seconds = time.perf_counter() - started
                result.error = _message(exc, job.item.path)
                result.output = None
                finish(result)
                continue
            finally:
                del image
            result.seconds = time.perf_counter() - started
            result.output_size = (restored.width, restored.height)
            size = _image_bytes(restored)
            budget.add(size)
            encoded.put((result, restored, size))
            del restored
        encoded.put(_DONE)
        for thread in threads:
            thread.join()
    except BaseException:
        abort.set()
        for thread in threads:
            thread.join()
        raise
    return results


__all__ = [
    "DEFAULT_MODEL",
    "EXISTING_POLICIES",
    "FORMAT_EXTENSIONS",
    "BatchCallbacks",
    "BatchPlan",
    "BatchReport",
    "FileResult",
    "InputItem",
    "Inputs",
    "RestoreRequest",
    "build_restorer",
    "check_outputs",
    "expand_inputs",
    "output_name",
    "output_suffix",
    "parse_quality",
    "parse_shard",
    "parse_tile",
    "plan_outputs",
    "restore_files",
    "restore_request",
    "run_pipeline",
    "take_shard",
    "validate_request",
]

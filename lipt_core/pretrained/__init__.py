"""The trained weights that ship inside the package, and their registry.

Each entry of ``registry.json`` (data, written by ``tools/release_weights.py``, kept apart from
the architecture) names one safetensors file in this folder, in the inference form, with what it
is (task, preset, scale, colours, the noise/quality range it was trained for), its SHA-256 and
size, how it was trained, and its measured quality under the published protocols (`lipt eval`).
The file's hash is checked every time it is used, so a damaged installation is reported instead
of producing wrong images.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lipt_core.errors import CheckpointError, UsageError

FOLDER = Path(__file__).resolve().parent
REGISTRY_FILE = FOLDER / "registry.json"
DEFAULT_SCALE = 4
"""`lipt sr` without --scale (and without --weights) upscales x4."""


@dataclass(frozen=True)
class WeightsEntry:
    """One bundled weights file and what is known about it."""

    name: str
    task: str
    model: str
    scale: int
    colors: int
    file: str
    sha256: str
    size: int
    condition: str = ""
    training: str = ""
    quality: Mapping[str, float] = field(default_factory=dict)

    @property
    def path(self) -> Path:
        return FOLDER / self.file

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def parse_registry(values: Any, *, source: str = str(REGISTRY_FILE)) -> tuple[WeightsEntry, ...]:
    """Entries from the registry's JSON value (a list of objects); malformed data is an error."""
    if not isinstance(values, list):
        raise CheckpointError(f"{source}: the weights registry must be a list of entries")
    entries = []
    for index, item in enumerate(values):
        try:
            entries.append(WeightsEntry(**item))
        except TypeError as error:
            raise CheckpointError(f"{source}: entry {index} is malformed ({error})") from None
    names = [entry.name for entry in entries]
    if len(set(names)) != len(names):
        raise CheckpointError(f"{source}: duplicate weights names")
    return tuple(entries)


@functools.cache
def registry() -> tuple[WeightsEntry, ...]:
    """Every bundled weights entry, in registry order."""
    try:
        values = json.loads(REGISTRY_FILE.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return ()
    except (OSError, ValueError) as error:
        raise CheckpointError(
            f"{REGISTRY_FILE}: cannot read the weights registry ({error})"
        ) from None
    return parse_registry(values)


def find_entry(
    task: str,
    model: str,
    *,
    scale: int | None = None,
    colors: int = 3,
    entries: tuple[WeightsEntry, ...] | None = None,
) -> WeightsEntry:
    """The bundled weights for `task` with preset `model` (SR: at `scale`, default x4).

    Raises UsageError naming what does exist when nothing matches: never random weights.
    """
    entries = registry() if entries is None else entries
    if task == "sr" and scale is None:
        scale = DEFAULT_SCALE
    if task != "sr":
        scale = 1
    for entry in entries:
        if (entry.task, entry.model, entry.scale, entry.colors) == (task, model, scale, colors):
            return entry
    same_task = [e for e in entries if e.task == task]
    what = f"{task} x{scale}" if task == "sr" else task
    if not same_task:
        raise UsageError(f"no trained weights for {task} ship with lipt; pass --weights FILE")
    available = ", ".join(
        f"{e.model} x{e.scale}" if task == "sr" else e.model
        for e in same_task
        if e.colors == colors
    )
    raise UsageError(
        f"no trained weights for {what} with {model} ship with lipt "
        f"(there are: {available or 'none'}); pass --weights FILE"
    )


def gray_entry(
    task: str,
    model: str,
    *,
    scale: int | None = None,
    entries: tuple[WeightsEntry, ...] | None = None,
) -> WeightsEntry | None:
    """The bundled 1-channel weights for `task` with `model`, or None when only colour ones ship.

    A gray model trained on gray photos beats the colour model run on a gray image repeated in
    R, G and B, so gray inputs go to it when it exists.
    """
    try:
        return find_entry(task, model, scale=scale, colors=1, entries=entries)
    except UsageError:
        return None


def verified_path(entry: WeightsEntry) -> Path:
    """The entry's file, after checking its size and SHA-256 against the registry."""
    from lipt_core.weights import sha256_of

    path = entry.path
    if not path.is_file():
        raise CheckpointError(f"{path}: bundled weights {entry.name} are missing; reinstall lipt")
    if path.stat().st_size != entry.size or sha256_of(path) != entry.sha256:
        raise CheckpointError(
            f"{path}: bundled weights {entry.name} do not match their registered SHA-256 "
            f"({entry.sha256[:16]}...); the installation is damaged, reinstall lipt"
        )
    return path


def inventory() -> list[dict[str, Any]]:
    """Every registry entry as a dict, with its file's path and `status`: ok, missing or damaged
    (the file's hash checked)."""
    rows = []
    for entry in registry():
        try:
            verified_path(entry)
            status = "ok"
        except CheckpointError:
            status = "missing" if not entry.path.is_file() else "damaged"
        rows.append({**entry.to_dict(), "path": str(entry.path), "status": status})
    return rows


__all__ = [
    "DEFAULT_SCALE",
    "REGISTRY_FILE",
    "WeightsEntry",
    "find_entry",
    "inventory",
    "parse_registry",
    "registry",
    "verified_path",
]

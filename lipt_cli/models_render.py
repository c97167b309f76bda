"""`lipt models`: the bundled weights registry as a table or JSON."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.markup import escape
from rich.table import Table

from lipt_cli.render import console, write_json


def _size(size: int) -> str:
    return f"{size / 1e6:.2f} MB" if size >= 1e6 else f"{size / 1e3:.0f} kB"


def _what(row: dict[str, Any]) -> str:
    what = f"x{row['scale']}" if row["task"] == "sr" else row["condition"] or "-"
    return f"{what}, {'RGB' if row['colors'] == 3 else 'gray'}"


def _quality_by_measure(rows: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """Registry quality keys ("SET measure", e.g. "B100 sigma 25 PSNR") as a measure x set grid."""
    sets: list[str] = []
    grid: dict[tuple[str, str], dict[str, float]] = {}
    for row in rows:
        for key, value in row["quality"].items():
            data, _, measure = key.partition(" ")
            if data not in sets:
                sets.append(data)
            grid.setdefault((row["name"], measure or "-"), {})[data] = value
    lines = [
        [name, measure, *(f"{values[s]:.2f}" if s in values else "-" for s in sets)]
        for (name, measure), values in grid.items()
    ]
    return sets, lines


def render_models(rows: list[dict[str, Any]]) -> None:
    if not rows:
        console.print("no trained weights ship with this installation of lipt")
        return
    table = Table(title="trained weights bundled with lipt")
    healthy = all(row["status"] == "ok" for row in rows)
    for column in ["name", "task", "for", "size", "sha256"] + ([] if healthy else ["status"]):
        table.add_column(column, no_wrap=column in ("name", "sha256"))
    for row in rows:
        cells = [row["name"], row["task"], _what(row), _size(row["size"]), row["sha256"][:12]]
        if not healthy:
            cells.append(row["status"] if row["status"] == "ok" else f"[red]{row['status']}[/]")
        table.add_row(*cells)
    console.print(table)
    folder = Path(rows[0]["path"]).parent
    console.print(f"files in {escape(str(folder))}")
    console.print("full hashes and paths: lipt models --json -")

    sets, lines = _quality_by_measure(rows)
    if not lines:
        return
    quality = Table(title="measured quality (lipt eval, dB)")
    quality.add_column("name", no_wrap=True)
    quality.add_column("measure")
    for data in sets:
        quality.add_column(data, justify="right")
    previous = None
    for name, *cells in lines:
        quality.add_row(name if name != previous else "", *cells)
        previous = name
    console.print(quality)
    unmeasured = [row["name"] for row in rows if not row["quality"]]
    if unmeasured:
        console.print(f"not measured: {', '.join(unmeasured)}")


def write_models_json(rows: list[dict[str, Any]], path: Path) -> None:
    write_json(rows, path)

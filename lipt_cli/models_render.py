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


def render_models(rows: list[dict[str, Any]]) -> None:
    if not rows:
        console.print("no trained weights ship with this installation of lipt")
        return
    table = Table(title="trained weights bundled with lipt")
    healthy = all(row["status"] == "ok" for row in rows)
    columns = ["name", "task", "for", "size", "sha256", "quality (lipt eval, dB)"]
    for column in columns + ([] if healthy else ["status"]):
        table.add_column(column, no_wrap=column in ("name", "sha256"))
    for row in rows:
        quality = "\n".join(f"{key} {value:.2f}" for key, value in row["quality"].items())
        cells = [
            row["name"],
            row["task"],
            _what(row),
            _size(row["size"]),
            row["sha256"][:12],
            quality or "not measured",
        ]
        if not healthy:
            cells.append(row["status"] if row["status"] == "ok" else f"[red]{row['status']}[/]")
        table.add_row(*cells)
    console.print(table)
    folder = Path(rows[0]["path"]).parent
    console.print(f"files in {escape(str(folder))}; `lipt models --json -` gives full hashes")


def write_models_json(rows: list[dict[str, Any]], path: Path) -> None:
    write_json(rows, path)

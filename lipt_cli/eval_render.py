"""Rich rendering of `lipt eval` reports: one row per image, the mean, and the gain."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

from rich import box
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table

if TYPE_CHECKING:
    from lipt_core.evaluate import EvalConfig, EvalReport, Scores

console = Console(highlight=False)

_HEADERS = {"psnr": "PSNR", "ssim": "SSIM", "psnr_b": "PSNR-B"}
_TASK_NAMES = {"sr": "super-resolution", "denoise": "denoising", "car": "JPEG artifact removal"}


def _value(metric: str, value: float | None) -> str:
    if value is None:
        return "-"
    if math.isinf(value):
        return "inf"
    return f"{value:.4f}" if metric == "ssim" else f"{value:.2f}"


def _gain(metric: str, value: float) -> str:
    if not math.isfinite(value):
        return "-"
    text = f"{value:+.4f}" if metric == "ssim" else f"{value:+.2f}"
    return f"[green]{text}[/]" if value > 0 else f"[red]{text}[/]" if value < 0 else text


def _title(report: EvalReport) -> str:
    p = report.protocol
    if report.task == "sr":
        setting = f"x{p['scale']}"
    elif report.task == "denoise":
        setting = f"sigma {p['sigma']:g}"
    else:
        setting = f"quality {p['quality']}"
    count = len(report.images)
    return (
        f"lipt eval: {report.dataset} ({count} image{'s' * (count != 1)}), "
        f"{_TASK_NAMES[report.task]} {setting}"
    )


def _caption(report: EvalReport) -> str:
    p = report.protocol
    if report.task == "sr":
        lines = [
            f"LR: MATLAB bicubic of the uint8 HR; scored on Y (BT.601), {p['crop_border']} px "
            "border cropped; outputs rounded to uint8"
        ]
        if "baseline" in report.methods:
            lines.append("bicubic: the tables' protocol (bicubic down and up on the uint8 Y)")
    elif report.task == "denoise":
        lines = [
            f"gaussian noise sigma {p['sigma']:g} (0..255), seed {p['seed']}, unclipped; "
            f"scored on {p['channel']}"
        ]
    else:
        lines = [f"Pillow JPEG quality {p['quality']}; scored on {p['channel']}"]
    lines += report.notes
    lines.append(f"{report.seconds:.1f} s")
    return "\n".join(lines)


def _table(report: EvalReport, *, show_size: bool, show_gain: bool) -> Table:
    kinds = list(report.methods)
    gain = report.gain if show_gain else None
    groups = [(report.methods[k] if k == "baseline" else "model") for k in kinds]
    groups += ["gain"] if gain is not None else []
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("image", no_wrap=True)
    if show_size:
        table.add_column("size", justify="right", style="dim", no_wrap=True)
    for group in groups:
        for index, metric in enumerate(report.metrics):
            header = f"{group if index == 0 else ''}\n{_HEADERS[metric]}"
            table.add_column(header, justify="right", no_wrap=True)

    def cells(scores: dict[str, Scores]) -> list[str]:
        row = [_value(m, getattr(scores[k], m)) for k in kinds for m in report.metrics]
        if gain is not None:
            row += [
                _gain(m, getattr(scores["model"], m) - getattr(scores["baseline"], m))
                for m in report.metrics
            ]
        return row

    for result in report.images:
        name = result.name + (" (gray)" if result.gray and report.task == "sr" else "")
        size = [f"{result.width}x{result.height}"] if show_size else []
        table.add_row(name, *size, *cells(result.scores))
    means = {kind: report.mean(kind) for kind in kinds}
    table.add_section()
    blank = [""] if show_size else []
    table.add_row("[bold]mean[/]", *blank, *(f"[bold]{c}[/]" for c in cells(means)))
    return table


def render_evaluation(report: EvalReport, out: Console | None = None) -> None:
    """Print `report`: a table per image and the mean (with per-image gains when a model and
    the baseline were both run and the terminal is wide enough), then the mean gain."""
    out = out or console
    table = None
    # Narrow terminals: drop the size column first, then the per-image gains.
    for show_size, show_gain in ((True, True), (False, True), (False, False)):
        table = _table(report, show_size=show_size, show_gain=show_gain)
        wide = out.options.update(max_width=10_000)
        if Measurement.get(out, wide, table).maximum <= out.width:
            break
    out.print(f"[bold]{_title(report)}[/]")
    if "model" in report.methods:
        out.print(f"model: {report.methods['model']}")
    out.print(table)
    gain = report.gain
    if gain is not None:
        parts = [f"{_HEADERS[m]} {_gain(m, v)}" for m, v in gain.items()]
        out.print(f"mean gain over {report.methods['baseline']}: " + ", ".join(parts))
    out.print(f"[dim]{_caption(report)}[/]")


def evaluate_with_progress(config: EvalConfig) -> EvalReport:
    """`evaluate(config)`, with a transient progress bar on stderr when it is a terminal."""
    from lipt_core.evaluate import evaluate

    errors = Console(stderr=True)
    if not errors.is_terminal:
        return evaluate(config)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    columns = (
        TextColumn("evaluating"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.description}"),
    )
    with Progress(*columns, console=errors, transient=True) as progress:
        bar = progress.add_task("", total=None)

        def advance(done: int, total: int, name: str) -> None:
            progress.update(bar, completed=done, total=total, description=name)

        return evaluate(config, progress=advance)


def write_json(report: EvalReport, path: Path) -> None:
    """Write the report's JSON to `path` ('-': standard output)."""
    from lipt_cli.render import write_json as write_value

    write_value(report.to_dict(), path)

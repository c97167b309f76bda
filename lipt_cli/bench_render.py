"""Rendering of `lipt bench`: progress, the rich tables, and the stacked bar chart."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from lipt_core.errors import UsageError

if TYPE_CHECKING:
    from lipt_core.bench import BenchReport, ProgressFn

console = Console(highlight=False)
progress_console = Console(stderr=True, highlight=False)

PLOT_SUFFIXES = (".png", ".svg", ".pdf")
# Colours of the parts in the chart (colour-blind safe: Okabe-Ito).
PART_COLOURS = {"msa": "#D55E00", "mlp": "#E69F00", "conv": "#0072B2", "other": "#999999"}


def check_plot_target(path: Path) -> None:
    """Fail before any measuring if the chart could not be drawn or written."""
    if path.suffix.lower() not in PLOT_SUFFIXES:
        raise UsageError(
            f"{path}: the chart is written as {', '.join(PLOT_SUFFIXES)}; "
            f"got {path.suffix or 'no extension'!r}"
        )
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise UsageError(
            "--plot needs matplotlib: pip install 'lipt[plot]' (or pip install matplotlib)"
        ) from None
    check_output_target(path)


def check_output_target(path: Path) -> None:
    """Fail before any measuring if a report file could not be written there."""
    parent = path.expanduser().resolve().parent
    if not parent.is_dir():
        raise UsageError(f"{path}: folder {parent} does not exist")
    if path.is_dir():
        raise UsageError(f"{path} is a folder, not a file")


@contextmanager
def bench_progress() -> Iterator[ProgressFn]:
    """A progress callback for `run_benchmark`, drawn on stderr and removed when done."""
    progress = Progress(
        TextColumn("[bold]lipt bench[/]"),
        BarColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.description}"),
        console=progress_console,
        transient=True,
    )
    task = progress.add_task("starting", total=None)

    def update(description: str, completed: int, total: int) -> None:
        progress.update(task, description=description, completed=completed, total=total)

    with progress:
        yield update


def _count(n: int) -> str:
    if n >= 1_000_000:
        return f"{n / 1e6:.2f}M"
    if n >= 1_000:
        return f"{n / 1e3:.1f}K"
    return str(n)


def _ms(value: float) -> str:
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def _bytes(value: int | None) -> str:
    if value is None:
        return "n/a"
    mib = value / 2**20
    return f"{mib / 1024:.2f} GiB" if mib >= 1024 else f"{mib:.1f} MiB"


def _size(size: tuple[int, int]) -> str:
    return f"{size[0]}x{size[1]}"


def render_benchmark(report: BenchReport) -> None:
    from lipt_core.bench import FLOP_NOTE, PART_LABELS, PARTS

    env = report.environment
    memory = {
        "cuda-max-allocated": "Peak mem: CUDA max allocated during one pass, above the weights",
        "cpu-rss-growth": "Peak mem: growth of the process RSS during one pass",
        None: "Peak mem: not measurable here",
    }[report.memory_method]
    summary = Table(
        title=(
            f"lipt bench: x{report.scale}, input {_size(report.input_size)} -> output "
            f"{_size(report.output_size)}, {env.device} ({env.device_name}), "
            f"{env.threads} thread{'s' if env.threads != 1 else ''}, {env.precision}"
        ),
        caption=(
            f"Latency: median and p10-p90 of {report.runs} runs after {report.warmup} warm-up, "
            f"models interleaved in shuffled order per round. MP/s: output megapixels per "
            f"second. {memory}. {FLOP_NOTE}"
        ),
        caption_justify="left",
    )
    summary.add_column("Model", style="bold")
    for header in ("Params", "GFLOP", "Latency ms", "p10-p90 ms", "MP/s", "Peak mem"):
        # Numbers never wrap; the model names do when the terminal is narrow.
        summary.add_column(header, justify="right", no_wrap=True)
    for r in report.models:
        summary.add_row(
            r.label,
            _count(r.parameters),
            f"{r.gflop:,.1f}" if r.gflop >= 10 else f"{r.gflop:.2f}",
            _ms(r.latency_ms.median),
            f"{_ms(r.latency_ms.p10)}-{_ms(r.latency_ms.p90)}",
            f"{r.megapixels_per_s:.3g}",
            _bytes(r.peak_memory_bytes),
        )
    console.print(summary)

    split = Table(
        title=(
            f"Where the time goes (forward hooks, {report.profile_runs} profiled "
            f"run{'s' if report.profile_runs != 1 else ''})"
        ),
        caption=(
            "%: each part's share of its run, median over the profiled runs; ms: that share of "
            "the median profiled total. MSA: attention "
            "modules with their projections; MLP: token feed-forward networks; Conv: "
            "convolution modules (LIPT HRM, ELAN LFE, heads, tails); Other: the rest (padding, "
            "norms, shifts, window partitions, pixel shuffle, adds). Profiled: median total "
            "with hooks; overhead: that minus the plain median latency. FLOPs: the same split "
            "of the counted FLOPs, in % (MSA/MLP/Conv/Other)."
        ),
        caption_justify="left",
    )
    split.add_column("Part", style="bold")
    for r in report.models:
        split.add_column(r.label, justify="right")
    for p in PARTS:
        split.add_row(
            PART_LABELS[p],
            *(f"{_ms(r.parts[p].ms)} ms {r.parts[p].percent:3.0f}%" for r in report.models),
            end_section=p == PARTS[-1],
        )
    split.add_row("Profiled", *(f"{_ms(r.profiled_ms.median)} ms" for r in report.models))
    split.add_row("Overhead", *(f"{r.profile_overhead_ms:+.1f} ms" for r in report.models))
    split.add_row(
        "FLOPs %",
        *(
            "/".join(f"{100 * r.flops_by_part[p] / r.flops:.0f}" if r.flops else "-" for p in PARTS)
            for r in report.models
        ),
    )
    console.print(split)

    if report.restore is not None:
        rs = report.restore
        restore = Table(
            title=f"Restore path: {rs.image} with {rs.model}",
            show_header=False,
        )
        restore.add_column(style="bold")
        restore.add_column()
        tiles = "whole image" if rs.tiles == 1 else f"{rs.tiles} tiles of {rs.tile} px"
        restore.add_row(
            "image",
            f"{_size(rs.input_size)} -> {_size(rs.output_size)}, {tiles}, {rs.precision}",
        )
        restore.add_row(
            "in memory",
            f"{_ms(rs.compute_ms.median)} ms (p10-p90 {_ms(rs.compute_ms.p10)}-"
            f"{_ms(rs.compute_ms.p90)}), {rs.compute_megapixels_per_s:.3g} output MP/s",
        )
        restore.add_row(
            "file to file",
            f"{_ms(rs.end_to_end_ms.median)} ms (p10-p90 {_ms(rs.end_to_end_ms.p10)}-"
            f"{_ms(rs.end_to_end_ms.p90)}), {rs.end_to_end_megapixels_per_s:.3g} output MP/s "
            "(read, restore, write)",
        )
        console.print(restore)
    for note in report.notes:
        console.print(f"note: {note}")


def plot_benchmark(report: BenchReport, path: Path) -> None:
    """A stacked bar chart per model: latency split into parts, and the FLOPs split beside it."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise UsageError(
            "--plot needs matplotlib: pip install 'lipt[plot]' (or pip install matplotlib)"
        ) from None
    from lipt_core.bench import PART_LABELS, PARTS

    labels = [r.label for r in report.models]
    positions = list(range(len(labels)))
    width = 2 * max(5.0, 1.8 + 1.2 * len(labels))
    figure = Figure(figsize=(width, 5.2), layout="constrained")
    latency_axes, flop_axes = figure.subplots(1, 2)
    bottoms = [0.0] * len(labels)
    flop_bottoms = [0.0] * len(labels)
    for part in PARTS:
        heights = [r.parts[part].scaled_ms for r in report.models]
        latency_axes.bar(
            positions,
            heights,
            bottom=bottoms,
            color=PART_COLOURS[part],
            label=PART_LABELS[part],
            width=0.6,
        )
        bottoms = [b + h for b, h in zip(bottoms, heights, strict=True)]
        gflops = [r.flops_by_part[part] / 1e9 for r in report.models]
        flop_axes.bar(
            positions,
            gflops,
            bottom=flop_bottoms,
            color=PART_COLOURS[part],
            label=PART_LABELS[part],
            width=0.6,
        )
        flop_bottoms = [b + h for b, h in zip(flop_bottoms, gflops, strict=True)]
    medians = [r.latency_ms.median for r in report.models]
    latency_axes.errorbar(
        positions,
        medians,
        yerr=[
            [m - r.latency_ms.p10 for m, r in zip(medians, report.models, strict=True)],
            [r.latency_ms.p90 - m for m, r in zip(medians, report.models, strict=True)],
        ],
        fmt="none",
        ecolor="black",
        capsize=4,
        linewidth=1,
    )
    for x, r in zip(positions, report.models, strict=True):
        latency_axes.annotate(
            f"{_ms(r.latency_ms.median)} ms",
            (x, r.latency_ms.p90),
            textcoords="offset points",
            xytext=(0, 4),
            ha="center",
            fontsize=9,
        )
        flop_axes.annotate(
            f"{r.gflop:,.1f}" if r.gflop >= 10 else f"{r.gflop:.2f}",
            (x, r.gflop),
            textcoords="offset points",
            xytext=(0, 4),
            ha="center",
            fontsize=9,
        )
    env = report.environment
    latency_axes.set_title(
        f"Latency, median of {report.runs} runs (p10-p90), split by profiled share",
        fontsize=10,
    )
    latency_axes.set_ylabel("ms")
    flop_axes.set_title("FLOPs (2 per multiply-add; matmul and conv only)", fontsize=10)
    flop_axes.set_ylabel("GFLOP")
    for axes in (latency_axes, flop_axes):
        axes.set_xticks(positions, labels, rotation=15 if len(labels) > 3 else 0)
        axes.grid(axis="y", alpha=0.3)
        axes.set_axisbelow(True)
    latency_axes.set_ylim(0, 1.15 * max(r.latency_ms.p90 for r in report.models))
    flop_axes.set_ylim(0, 1.15 * max(r.gflop for r in report.models) or 1.0)
    handles, legend_labels = latency_axes.get_legend_handles_labels()
    latency_axes.legend(handles[::-1], legend_labels[::-1], loc="upper left", frameon=False)
    figure.suptitle(
        f"lipt bench: x{report.scale}, {_size(report.input_size)} -> "
        f"{_size(report.output_size)}, {env.device} ({env.device_name}), "
        f"{env.threads} threads, {env.precision}",
        fontsize=11,
    )
    try:
        figure.savefig(path, dpi=150)
    except OSError as error:
        raise UsageError(f"{path}: cannot write the chart: {error.strerror or error}") from None

"""What ``lipt sr``, ``lipt denoise`` and ``lipt car`` show while they run, and after.

* On a terminal: a progress bar for the files (count, elapsed, ETA) and, while an image is done
  in several tiles, one for its tiles; a summary table at the end.
* When stdout is not a terminal: one plain line per file, then the same summary.
* ``--json``: nothing but one JSON document on stdout (per file: input, output, sizes, seconds,
  status, error).
* ``-q``: no progress and no summary.

Errors for single files (and warnings) always go to stderr, one line each.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from lipt_cli.errors import error_console
from lipt_cli.render import write_json

if TYPE_CHECKING:
    from lipt_core.batch import BatchCallbacks, BatchPlan, BatchReport, FileResult

TABLE_ROWS = 30
"""Batches larger than this list only the files that did not succeed in the summary table."""

_VERBS = {"sr": "upscaled", "denoise": "denoised", "car": "cleaned"}


def _size(value: tuple[int, int] | None) -> str:
    return f"{value[0]}x{value[1]}" if value else "-"


class RestoreView:
    """Renders one batch; use as a context manager so live displays always stop."""

    def __init__(self, task: str, *, quiet: bool = False, json_output: bool = False) -> None:
        self.task = task
        self.quiet = quiet
        self.json_output = json_output
        # soft_wrap: one line per file even when stdout is a pipe (rich would wrap at 80)
        self.console = Console(highlight=False, soft_wrap=True)
        self.live = self.console.is_terminal and not quiet and not json_output
        self.plain = not self.live and not quiet and not json_output
        self.progress: Progress | None = None
        self.files_task: TaskID | None = None
        self.tiles_task: TaskID | None = None
        self.download: Progress | None = None
        self.download_task: TaskID | None = None

    # -- context --------------------------------------------------------------------------

    def __enter__(self) -> RestoreView:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def stop(self) -> None:
        for display in (self.download, self.progress):
            if display is not None:
                display.stop()
        self.download = self.progress = None

    def callbacks(self) -> BatchCallbacks:
        from lipt_core.batch import BatchCallbacks

        return BatchCallbacks(
            on_download=self.on_download,
            on_plan=self.on_plan,
            on_file_start=self.on_file_start,
            on_tile=self.on_tile,
            on_file_done=self.on_file_done,
            on_warning=self.on_warning,
        )

    # -- events ---------------------------------------------------------------------------

    def on_download(self, done: int, total: int | None) -> None:
        if not self.live:
            if done == 0 and self.plain:
                self.console.print("downloading weights ...")
            return
        if self.download is None:
            self.download = Progress(
                TextColumn("downloading weights"),
                BarColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
                TimeRemainingColumn(),
                console=self.console,
                transient=True,
                redirect_stderr=True,
            )
            self.download.start()
            self.download_task = self.download.add_task("download", total=total)
        self.download.update(self.download_task, completed=done, total=total)

    def on_plan(self, plan: BatchPlan) -> None:
        if self.download is not None:
            self.download.stop()
            self.download = None
        model = plan.model
        if self.plain:
            gray = f", gray photos with {model['gray_model']}" if model.get("gray_model") else ""
            ensemble = ", x8 ensemble" if model.get("ensemble") else ""
            self.console.print(
                f"lipt {self.task}: {plan.total} file{'s' if plan.total != 1 else ''} with "
                f"x{model['scale']} {model.get('source') or 'model'}{gray} on {model['device']} "
                f"({model['precision']}{ensemble})"
            )
        for result in plan.settled:
            if result.status == "failed":
                self._error(result.error or f"{result.input}: failed")
            if self.plain:
                self._plain_line(result)
        if not self.live or plan.total == 0:
            return
        self.progress = Progress(
            TextColumn("{task.description}", markup=False),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=self.console,
            redirect_stderr=True,
            transient=False,
        )
        self.progress.start()
        self.files_task = self.progress.add_task("files", total=plan.total)

    def on_file_start(self, index: int, path: Any, size: tuple[int, int], tiles: int) -> None:
        if self.progress is None:
            return
        name = getattr(path, "name", str(path))
        self.progress.update(self.files_task, description=f"files ({name})")
        if tiles > 1:
            if self.tiles_task is None:
                self.tiles_task = self.progress.add_task("tiles", total=tiles)
            self.progress.reset(self.tiles_task, total=tiles, visible=True)
            self.progress.update(self.tiles_task, description=f"tiles of {name}")
        elif self.tiles_task is not None:
            self.progress.update(self.tiles_task, visible=False)

    def on_tile(self, done: int, total: int) -> None:
        if self.progress is not None and self.tiles_task is not None and total > 1:
            self.progress.update(self.tiles_task, completed=done, total=total)

    def on_file_done(self, result: FileResult) -> None:
        if result.status == "failed":
            self._error(result.error or f"{result.input}: failed")
        if self.progress is not None:
            self.progress.advance(self.files_task)
        if self.plain:
            self._plain_line(result)

    def on_warning(self, message: str) -> None:
        error_console.print(f"[yellow]lipt: warning:[/] {escape(message)}", markup=True)

    def _error(self, message: str) -> None:
        error_console.print(f"[bold red]lipt: error:[/] {escape(message)}", markup=True)

    def _plain_line(self, result: FileResult) -> None:
        if result.status == "ok":
            self.console.print(
                f"{result.input} -> {result.output} ({_size(result.input_size)} -> "
                f"{_size(result.output_size)}, {result.seconds:.2f} s)",
                markup=False,
            )
        elif result.status == "skipped":
            self.console.print(f"{result.input}: skipped ({result.output} exists)", markup=False)
        else:
            self.console.print(f"{result.input}: failed", markup=False)

    # -- the end --------------------------------------------------------------------------

    def finish(self, report: BatchReport) -> None:
        self.stop()
        if self.json_output:
            write_json(report.to_dict(), Path("-"))
            sys.stdout.flush()
            return
        if self.quiet:
            return
        self.console.print(self.summary_table(report))
        self.console.print(self.summary_line(report), markup=False)

    def summary_table(self, report: BatchReport) -> Table:
        results = report.results
        shown = results if len(results) <= TABLE_ROWS else [r for r in results if r.status != "ok"]
        title = f"lipt {report.task}"
        if len(shown) < len(results):
            title += f" ({len(results) - len(shown)} restored files not listed)"
        table = Table(title=title, title_justify="left")
        table.add_column("input", overflow="fold")
        table.add_column("output", overflow="fold")
        table.add_column("size")
        table.add_column("seconds", justify="right")
        table.add_column("status")
        styles = {"ok": "green", "failed": "bold red", "skipped": "yellow"}
        for result in shown:
            size = (
                f"{_size(result.input_size)} -> {_size(result.output_size)}"
                if result.output_size
                else _size(result.input_size)
            )
            table.add_row(
                escape(result.input),
                escape(result.output or "-"),
                size,
                f"{result.seconds:.2f}" if result.seconds else "-",
                f"[{styles[result.status]}]{result.status}[/]",
            )
        return table

    def summary_line(self, report: BatchReport) -> str:
        parts = [f"{report.count('ok')} {_VERBS.get(report.task, 'restored')}"]
        if report.count("failed"):
            parts.append(f"{report.count('failed')} failed")
        if report.count("skipped"):
            parts.append(f"{report.count('skipped')} skipped (output exists)")
        model = report.model
        line = (
            f"{', '.join(parts)} in {report.wall_seconds:.1f} s "
            f"(model {report.model_seconds:.1f} s on {model['device']}, {model['precision']})"
        )
        if report.shard:
            line += f"; shard {report.shard[0]}/{report.shard[1]}"
        if report.earlier_outputs:
            names = ", ".join(path.name for path in report.earlier_outputs[:3])
            count = len(report.earlier_outputs)
            more = f", ... ({count} in all)" if count > 3 else ""
            line += f"; left out earlier outputs found in folders: {names}{more}"
        if report.ignored:
            names = ", ".join(path.name for path in report.ignored[:3])
            more = f", ... ({len(report.ignored)} in all)" if len(report.ignored) > 3 else ""
            line += f"; ignored non-image files in folders: {names}{more}"
        return line


def write_report_json(report: BatchReport, path: Path) -> None:
    """The per-file report as JSON, written atomically (temp file in the folder, then rename)."""
    write_json(report.to_dict(), path)

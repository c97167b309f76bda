"""Rich rendering of library results."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from lipt_core.convert import ConversionReport

console = Console(highlight=False)


def write_json(value: Any, path: Path) -> None:
    """`value` as indented JSON: to standard output for '-', else written atomically (temp file
    in the folder, then rename). An unwritable path is an InputError naming it."""
    from lipt_core.errors import InputError

    text = json.dumps(value, indent=2) + "\n"
    if str(path) == "-":
        sys.stdout.write(text)
        return
    from lipt_core.files import write_bytes

    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_bytes(path, text.encode("utf-8"))
    except OSError as error:
        raise InputError(f"{path}: cannot write JSON ({error.strerror or error})") from None


def render_conversion(report: ConversionReport) -> None:
    config = report.config
    table = Table(title=f"lipt convert: {report.source} -> {report.output}", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    table.add_row(
        "network",
        f"LIPT {config.num_stages} stages, {config.channels} channels, n_share {config.n_share}, "
        f"r_expand {config.r_expand}, window {config.window_size}",
    )
    table.add_row("scale / colors", f"x{config.scale} / {config.colors}")
    table.add_row("task", report.task or "unknown (pass --task)")
    table.add_row("form", f"{report.source_form} -> inference")
    agreement = report.agreement
    table.add_row(
        "check",
        f"random input {'x'.join(map(str, report.check_shape))}: max abs error "
        f"{agreement.max_abs_error:.3g} (pixel units of 0..{config.rgb_range:g}), relative "
        f"{agreement.relative_error:.2e} (limit {report.tolerance:.0e})",
    )
    for shape, onnx_agreement in report.onnx_agreement:
        table.add_row(
            "onnx check",
            f"{'x'.join(map(str, shape))}: max abs error {onnx_agreement.max_abs_error:.3g}, "
            f"relative {onnx_agreement.relative_error:.2e}",
        )
    console.print(table)
    written = [str(report.output)] + ([str(report.onnx_output)] if report.onnx_output else [])
    console.print(f"wrote {', '.join(written)}")

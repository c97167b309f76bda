"""The `lipt` command line.

Each command parses its options, calls one lipt_core function, and renders the result. torch and
the network are imported inside the commands, so `lipt --help` and shell completion stay instant.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from lipt_cli.errors import cli_errors


class Task(str, Enum):
    sr = "sr"
    denoise = "denoise"
    car = "car"


class Shell(str, Enum):
    bash = "bash"
    zsh = "zsh"
    fish = "fish"


app = typer.Typer(
    name="lipt",
    help="Image restoration with LIPT, the Latency-aware Image Processing Transformer.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    # Completion scripts are generated statically (lipt_cli.completions): instant, no callbacks.
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        from lipt_core import __version__

        typer.echo(f"lipt {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", help="Show the version and exit.", callback=_version, is_eager=True
        ),
    ] = False,
) -> None:
    """Image restoration with LIPT, the Latency-aware Image Processing Transformer."""


@app.command()
def convert(
    source: Annotated[
        Path,
        typer.Argument(
            help="Checkpoint to read: .pt/.pth (ours or the published layout) or .safetensors."
        ),
    ],
    output: Annotated[Path, typer.Argument(help="Inference-form weights to write (.safetensors).")],
    window_size: Annotated[
        int | None,
        typer.Option(
            help="Attention window; shapes do not reveal it (published: 8 unless told).",
            min=2,
        ),
    ] = None,
    task: Annotated[
        Task | None, typer.Option(help="Task to record in the metadata (default: from the file).")
    ] = None,
    onnx: Annotated[
        Path | None,
        typer.Option(
            "--onnx", help="Also export ONNX (dynamic size) and check it with onnxruntime."
        ),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Write even if the forms disagree beyond tolerance.")
    ] = False,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace OUTPUT if it exists.")
    ] = False,
) -> None:
    """Fold a training checkpoint into the fast inference form, verify it, write safetensors."""
    with cli_errors():
        from lipt_core.convert import convert_checkpoint

        report = convert_checkpoint(
            source,
            output,
            window_size=window_size,
            task=task.value if task else None,
            force=force,
            overwrite=overwrite,
            onnx_output=onnx,
        )
    from lipt_cli.render import render_conversion

    render_conversion(report)


@app.command()
def completion(shell: Annotated[Shell, typer.Argument(help="bash, zsh or fish.")]) -> None:
    """Print the completion script for SHELL (e.g. lipt completion bash > ~/.lipt.bash)."""
    from lipt_cli.completions import completion_script

    typer.echo(completion_script(shell.value), nl=False)


def main() -> None:
    app()

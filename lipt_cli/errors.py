"""Where library errors become one clean line and an exit code."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

import typer
from rich.console import Console

from lipt_core.errors import LiptError

EXIT_INTERRUPTED = 130

error_console = Console(stderr=True, highlight=False, soft_wrap=True)


def fail(message: str, code: int) -> typer.Exit:
    error_console.print(f"[bold red]lipt: error:[/] {message}", markup=True)
    return typer.Exit(code)


@contextmanager
def cli_errors() -> Iterator[None]:
    """Turn a LiptError into `lipt: error: ...` on stderr and its exit code; Ctrl-C into 130."""
    try:
        yield
    except LiptError as error:
        raise fail(_escape(str(error)), error.exit_code) from None
    except KeyboardInterrupt:
        error_console.print("lipt: interrupted")
        sys.stderr.flush()
        raise typer.Exit(EXIT_INTERRUPTED) from None


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)

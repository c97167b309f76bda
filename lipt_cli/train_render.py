"""`lipt train`: config resolution (file < --set < flags) and rich progress."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
)

from lipt_core.errors import UsageError

console = Console(highlight=False)


def resolve_config(
    config_file: Path | None, assignments: list[str], flags: dict[str, Any], *, resume: bool
):
    """The TrainConfig of a run: defaults < config file < --set < explicit flags.

    Resuming without --config reads the run's own `config.toml` from the output folder.
    """
    from lipt_core.training import TrainConfig, apply_assignments, read_config_file

    values: dict[str, Any] = {}
    if config_file is None and resume:
        output = flags.get("output") or TrainConfig().output
        saved = Path(output) / "config.toml"
        if saved.exists():
            config_file = saved
    if config_file is not None:
        values = read_config_file(config_file)
    values = apply_assignments(values, assignments)
    values.update({k: v for k, v in flags.items() if v is not None})
    if "train_dirs" in values and isinstance(values["train_dirs"], str):
        values["train_dirs"] = [values["train_dirs"]]
    return TrainConfig.from_dict(values)


def train_with_progress(config, *, resume: bool, quiet: bool = False):
    """Run `lipt_core.training.train`, showing steps, loss, steps/s, validation and
    checkpoints. Returns the TrainResult."""
    import os

    from lipt_core.training import train

    quiet = quiet or int(os.environ.get("RANK", "0")) != 0  # under torchrun only rank 0 shows
    columns = (
        TextColumn("[bold]train[/]"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]}"),
        TextColumn("{task.fields[speed]} steps/s"),
        TextColumn("lr {task.fields[lr]}"),
        TimeRemainingColumn(),
    )
    progress = Progress(*columns, console=console, disable=quiet, transient=False)
    task_id = progress.add_task("train", total=config.steps, loss="-", speed="-", lr="-")
    # Without a terminal (a log file, a batch job) the bar is not drawn: a plain line at every
    # checkpoint says how far the run is instead.
    plain = not quiet and not console.is_terminal
    latest: dict[str, str] = {}

    def on_event(event) -> None:
        if event.kind == "start":
            progress.update(task_id, completed=event.step)
            progress.console.print(
                f"training {config.model} x{config.scale} ({config.task}) on {event.message}; "
                f"output {config.output}"
                + (f"; resumed at step {event.step}" if event.step else "")
            )
        elif event.kind == "step":
            latest.update(
                loss=f"{event.loss:.4f}",
                speed=f"{event.steps_per_sec:.2f}" if event.steps_per_sec else "-",
                lr=f"{event.lr:.2e}",
            )
            progress.update(task_id, completed=event.step, **latest)
        elif event.kind == "validation":
            progress.console.print(
                f"step {event.step}: validation PSNR {event.val_psnr:.3f} dB "
                f"(best {event.best_psnr:.3f})"
            )
        elif event.kind == "checkpoint" and plain and latest and event.path.endswith("last.pt"):
            progress.console.print(
                f"step {event.step}/{event.steps}: loss {latest['loss']}, "
                f"{latest['speed']} steps/s, lr {latest['lr']}; wrote {event.path}"
            )
        elif event.kind == "checkpoint" and not quiet:
            progress.console.print(f"step {event.step}: wrote {event.path}", style="dim")

    with progress:
        result = train(config, resume=resume, progress=on_event)
    return result


def render_result(result, config) -> None:
    import os

    if int(os.environ.get("RANK", "0")) != 0:
        return
    losses = result.losses
    if losses:
        tail = losses[-min(len(losses), 10) :]
        console.print(f"step {result.step}/{config.steps}: loss {sum(tail) / len(tail):.4f}")
    if result.best_psnr is not None:
        console.print(f"best validation PSNR {result.best_psnr:.3f} dB")
    if result.last_checkpoint:
        console.print(
            f"last checkpoint {result.last_checkpoint}; turn it into inference weights with "
            f"`lipt convert {result.last_checkpoint} model.safetensors`"
        )
    if result.interrupted:
        console.print(
            f"interrupted at step {result.step}: resume with "
            f"`lipt train --output {config.output} --resume`"
        )


__all__ = ["UsageError", "render_result", "resolve_config", "train_with_progress"]

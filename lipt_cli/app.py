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


class Baseline(str, Enum):
    bicubic = "bicubic"
    identity = "identity"


class Color(str, Enum):
    rgb = "rgb"
    gray = "gray"


@app.command("eval")
def eval_(
    task: Annotated[Task, typer.Option(help="sr, denoise or car (JPEG artifact removal).")],
    data: Annotated[
        Path, typer.Option(help="Folder of clean (HR) images, e.g. ../shared/data/Set5/HR.")
    ],
    weights: Annotated[
        Path | None, typer.Option(help="Checkpoint of the model to evaluate (any LIPT format).")
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(
            help="Preset: without --weights, its bundled trained weights; with --weights, "
            "checked against them."
        ),
    ] = None,
    baseline: Annotated[
        Baseline | None,
        typer.Option(
            help="Trivial method: bicubic (sr), identity (denoise, car). Runs anyway next to a "
            "model, to show the gain."
        ),
    ] = None,
    scale: Annotated[
        int | None,
        typer.Option(help="SR factor.", min=2, max=4, show_default="the model's"),
    ] = None,
    sigma: Annotated[
        float | None,
        typer.Option(help="Noise level for denoise, 0..255 units.", show_default="25"),
    ] = None,
    quality: Annotated[
        int | None, typer.Option(help="JPEG quality for car, 1..100.", show_default="10")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the noise (reported).")] = 0,
    color: Annotated[
        Color | None,
        typer.Option(
            help="denoise/car: RGB or gray (BT.601 Y) images.",
            show_default="the model's; without one, rgb for denoise, gray for car",
        ),
    ] = None,
    gray_as_luma: Annotated[
        bool,
        typer.Option(
            "--gray-as-luma",
            help="sr: score gray images as they are (the tables' bicubic rows), not as RGB.",
        ),
    ] = False,
    window_size: Annotated[
        int | None, typer.Option(help="Attention window of a published checkpoint.", min=2)
    ] = None,
    ensemble: Annotated[
        bool,
        typer.Option(
            "--ensemble",
            help="Score the model averaged over its 8 flips and rotations, as the restore "
            "commands do with this option.",
        ),
    ] = False,
    json_path: Annotated[
        Path | None,
        typer.Option("--json", help="Also write the report as JSON to FILE ('-': stdout only)."),
    ] = None,
) -> None:
    """Score a model or a baseline on a benchmark folder under the published protocol."""
    with cli_errors():
        from lipt_cli.eval_render import evaluate_with_progress, write_json
        from lipt_core.evaluate import EvalConfig

        config = EvalConfig(
            task=task.value,
            data=data,
            scale=scale,
            sigma=sigma,
            quality=quality,
            seed=seed,
            gray=None if color is None else color is Color.gray,
            gray_as_luma=gray_as_luma,
            baseline=baseline.value if baseline else None,
            weights=weights,
            model=model,
            window_size=window_size,
            ensemble=ensemble,
        )
        report = evaluate_with_progress(config)
        if json_path is not None:
            write_json(report, json_path)
    if str(json_path) != "-":
        from lipt_cli.eval_render import render_evaluation

        render_evaluation(report)


class BenchDevice(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


class BenchPrecision(str, Enum):
    auto = "auto"
    fp32 = "fp32"
    fp16 = "fp16"
    bf16 = "bf16"


class BenchForm(str, Enum):
    inference = "inference"
    training = "training"
    both = "both"


@app.command()
def bench(
    model: Annotated[
        str,
        typer.Option(
            "--model",
            "-m",
            help="Comma-separated models: LIPT presets (lipt-tiny, lipt-small, lipt-base) and "
            "peers (swinir-light, elan-light).",
        ),
    ] = "lipt-tiny,lipt-small",
    scale: Annotated[
        int, typer.Option("--scale", "-s", help="Upscaling factor (1: same size).", min=1, max=4)
    ] = 4,
    size: Annotated[
        str | None,
        typer.Option(help="Input (low-resolution) size WIDTHxHEIGHT, e.g. 320x180."),
    ] = None,
    output_size: Annotated[
        str | None,
        typer.Option(
            help="Output size WIDTHxHEIGHT; the input is this divided by the scale "
            "(default 1280x720)."
        ),
    ] = None,
    device: Annotated[
        BenchDevice, typer.Option(help="auto: CUDA when available, else CPU.")
    ] = BenchDevice.auto,
    threads: Annotated[
        int | None,
        typer.Option(help="CPU threads for torch (default: every core available).", min=1),
    ] = None,
    precision: Annotated[
        BenchPrecision,
        typer.Option(help="auto: fp32 on CPU, bf16 (else fp16) on CUDA; fp16 needs CUDA."),
    ] = BenchPrecision.auto,
    form: Annotated[
        BenchForm,
        typer.Option(help="LIPT form: inference (fused, as deployed), training, or both."),
    ] = BenchForm.inference,
    runs: Annotated[int, typer.Option(help="Timed runs per model.", min=1)] = 10,
    warmup: Annotated[int, typer.Option(help="Untimed warm-up runs per model.", min=0)] = 3,
    profile_runs: Annotated[
        int | None,
        typer.Option(help="Profiled runs for the MSA/MLP/Conv split (default: runs / 2).", min=1),
    ] = None,
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Also write the full report as JSON.")
    ] = None,
    csv_path: Annotated[
        Path | None, typer.Option("--csv", help="Also write one CSV row per model.")
    ] = None,
    plot: Annotated[
        Path | None,
        typer.Option(
            "--plot",
            help="Draw the split as stacked bars (.png/.svg/.pdf; needs matplotlib: the plot "
            "extra).",
        ),
    ] = None,
    restore: Annotated[
        Path | None,
        typer.Option(
            "--restore",
            help="Also time the whole restore path (tiling, file I/O) on this image, "
            "with the first LIPT model.",
        ),
    ] = None,
    tile: Annotated[
        int | None,
        typer.Option(help="Tile size for --restore (input pixels, 0: whole image).", min=0),
    ] = None,
) -> None:
    """Measure latency, FLOPs and memory, and split the time into MSA / MLP / Conv / Other."""
    with cli_errors():
        from lipt_cli.bench_render import (
            bench_progress,
            check_output_target,
            check_plot_target,
            plot_benchmark,
            render_benchmark,
        )
        from lipt_core.bench import BenchConfig, parse_size, run_benchmark, write_csv, write_json

        if plot is not None:
            check_plot_target(plot)
        for target in (json_path, csv_path):
            if target is not None:
                check_output_target(target)
        config = BenchConfig(
            models=tuple(model.split(",")),
            scale=scale,
            size=parse_size(size, what="--size") if size else None,
            output_size=parse_size(output_size, what="--output-size") if output_size else None,
            device=device.value,
            threads=threads,
            precision=precision.value,
            form=form.value,
            runs=runs,
            warmup=warmup,
            profile_runs=profile_runs,
            restore=restore,
            restore_tile=tile,
        )
        with bench_progress() as progress:
            report = run_benchmark(config, progress=progress)
        render_benchmark(report)
        written = []
        if json_path is not None:
            write_json(report, json_path)
            written.append(str(json_path))
        if csv_path is not None:
            write_csv(report, csv_path)
            written.append(str(csv_path))
        if plot is not None:
            plot_benchmark(report, plot)
            written.append(str(plot))
        if written:
            typer.echo(f"wrote {', '.join(written)}")


# ---------------------------------------------------------------------------------------------
# lipt sr / denoise / car: one helper, one library call (lipt_core.batch.restore_files)


class ModelPreset(str, Enum):
    lipt_tiny = "lipt-tiny"
    lipt_small = "lipt-small"
    lipt_base = "lipt-base"


class Precision(str, Enum):
    auto = "auto"
    fp32 = "fp32"
    fp16 = "fp16"
    bf16 = "bf16"


class OutputFormat(str, Enum):
    png = "png"
    jpeg = "jpeg"
    webp = "webp"
    tiff = "tiff"
    bmp = "bmp"


RestoreInputs = Annotated[
    list[Path],
    typer.Argument(help="Image files, folders (their images) or globs.", show_default=False),
]
OutputOpt = Annotated[
    Path | None,
    typer.Option(
        "--output",
        "-o",
        help="Output file (one input) or folder.",
        show_default="beside each input",
    ),
]
FormatOpt = Annotated[
    OutputFormat | None,
    typer.Option(
        help="Output format.",
        show_default="-o FILE's; else the input's, PNG if it cannot be written",
    ),
]
CarFormatOpt = Annotated[
    OutputFormat | None,
    typer.Option(
        help="Output format (JPEG again would put compression artifacts back).",
        show_default="-o FILE's; else PNG",
    ),
]
RecursiveOpt = Annotated[
    bool,
    typer.Option("--recursive", "-r", help="Descend into sub-folders, mirroring them under -o."),
]
SkipExistingOpt = Annotated[
    bool, typer.Option("--skip-existing", help="Skip inputs whose output already exists.")
]
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="Replace existing outputs.")]
ModelOpt = Annotated[
    ModelPreset | None,
    typer.Option(help="Model preset: picks the trained weights; checked against --weights."),
]
WeightsOpt = Annotated[
    str | None,
    typer.Option(
        help="Weights: a file, or an https:// URL (cached; pin it with #sha256=HEX).",
        show_default=False,
    ),
]
TileOpt = Annotated[
    str,
    typer.Option(help="Tile size in input pixels, 0 for the whole image, or auto (from memory)."),
]
TileOverlapOpt = Annotated[
    int | None,
    typer.Option(
        help="Overlap between tiles, input pixels.",
        min=0,
        show_default="4 windows, >= 16; a quarter of a small --tile",
    ),
]
DeviceOpt = Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N or mps.")]
PrecisionOpt = Annotated[
    Precision,
    typer.Option(
        help="auto: fp32 on the CPU; on CUDA bf16 where supported, else fp32. bf16 also runs on "
        "CPUs with native bf16 (AVX512-BF16, AMX): about 1.8x faster, within 0.02 dB."
    ),
]
EnsembleOpt = Annotated[
    bool,
    typer.Option(
        "--ensemble",
        help="Restore each image in its 8 flips and rotations and average them: 8x slower, "
        "slightly cleaner.",
    ),
]
JsonOpt = Annotated[
    Path | None,
    typer.Option(
        "--json",
        help="Also write the per-file report as JSON to FILE ('-': to stdout, instead of the "
        "summary).",
    ),
]
ShardOpt = Annotated[
    str | None,
    typer.Option(help="K/N: restore only the K-th of N parts of the inputs (1-based)."),
]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress and no summary.")]


def _restore(task: str, inputs: list[Path], **options: object) -> None:
    """What sr, denoise and car share: build the request, run the batch, render it."""
    with cli_errors():
        from lipt_cli.restore_render import RestoreView
        from lipt_core.batch import RestoreRequest, restore_files, restore_request

        request: RestoreRequest = restore_request(task, inputs, **options)
        json_path = options["json"]
        json_output = json_path is not None and str(json_path) == "-"
        with RestoreView(task, quiet=bool(options["quiet"]), json_output=json_output) as view:
            report = restore_files(request, callbacks=view.callbacks())
            view.finish(report)
        if json_path is not None and not json_output:
            from lipt_cli.restore_render import write_report_json

            write_report_json(report, Path(str(json_path)))
    raise typer.Exit(report.exit_code)


@app.command()
def sr(
    inputs: RestoreInputs,
    scale: Annotated[
        int | None,
        typer.Option(
            help="Upscaling factor: 2, 3 or 4.", min=2, max=4, show_default="the weights'"
        ),
    ] = None,
    output: OutputOpt = None,
    format: FormatOpt = None,
    recursive: RecursiveOpt = False,
    skip_existing: SkipExistingOpt = False,
    overwrite: OverwriteOpt = False,
    model: ModelOpt = None,
    weights: WeightsOpt = None,
    tile: TileOpt = "auto",
    tile_overlap: TileOverlapOpt = None,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = Precision.auto,
    ensemble: EnsembleOpt = False,
    json: JsonOpt = None,
    shard: ShardOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Super-resolution: upscale images x2, x3 or x4 (writes NAME_x4.EXT)."""
    _restore("sr", inputs, **{k: v for k, v in locals().items() if k != "inputs"})


@app.command()
def denoise(
    inputs: RestoreInputs,
    sigma: Annotated[
        float | None,
        typer.Option(
            help="Noise level (0..255 units), checked against the weights.", show_default="blind"
        ),
    ] = None,
    output: OutputOpt = None,
    format: FormatOpt = None,
    recursive: RecursiveOpt = False,
    skip_existing: SkipExistingOpt = False,
    overwrite: OverwriteOpt = False,
    model: ModelOpt = None,
    weights: WeightsOpt = None,
    tile: TileOpt = "auto",
    tile_overlap: TileOverlapOpt = None,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = Precision.auto,
    ensemble: EnsembleOpt = False,
    json: JsonOpt = None,
    shard: ShardOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Remove noise from images (writes NAME_denoised.EXT)."""
    _restore("denoise", inputs, **{k: v for k, v in locals().items() if k != "inputs"})


@app.command()
def car(
    inputs: RestoreInputs,
    quality: Annotated[
        str,
        typer.Option(
            help="JPEG quality the inputs were saved at (1..100), or auto: read from the "
            "JPEG quantisation tables."
        ),
    ] = "auto",
    output: OutputOpt = None,
    format: CarFormatOpt = None,
    recursive: RecursiveOpt = False,
    skip_existing: SkipExistingOpt = False,
    overwrite: OverwriteOpt = False,
    model: ModelOpt = None,
    weights: WeightsOpt = None,
    tile: TileOpt = "auto",
    tile_overlap: TileOverlapOpt = None,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = Precision.auto,
    ensemble: EnsembleOpt = False,
    json: JsonOpt = None,
    shard: ShardOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Remove JPEG compression artifacts (writes NAME_car.EXT)."""
    _restore("car", inputs, **{k: v for k, v in locals().items() if k != "inputs"})


@app.command()
def models(
    json_path: Annotated[
        Path | None,
        typer.Option("--json", help="Also write the registry as JSON to FILE ('-': stdout only)."),
    ] = None,
) -> None:
    """List the trained weights that ship with lipt: task, scale, size, SHA-256, quality, file."""
    with cli_errors():
        from lipt_cli.models_render import render_models, write_models_json
        from lipt_core.pretrained import inventory

        rows = inventory()
        if json_path is not None:
            write_models_json(rows, json_path)
    if str(json_path) != "-":
        render_models(rows)
    if any(row["status"] != "ok" for row in rows):
        raise typer.Exit(1)


@app.command()
def train(
    config: Annotated[
        Path | None, typer.Option(help="Training config (.toml or .json); flags override it.")
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="Override any config field: key=value (repeatable)."),
    ] = None,
    task: Annotated[Task | None, typer.Option(help="sr, denoise or car.")] = None,
    model: Annotated[str | None, typer.Option(help="Preset: lipt-tiny, lipt-small...")] = None,
    scale: Annotated[int | None, typer.Option(help="SR factor (sr only).", min=2, max=4)] = None,
    train_dir: Annotated[
        list[Path] | None, typer.Option(help="Folder of HR training images (repeatable).")
    ] = None,
    val_dir: Annotated[Path | None, typer.Option(help="Validation folder (e.g. Set5/HR).")] = None,
    steps: Annotated[int | None, typer.Option(help="Total optimizer steps.", min=1)] = None,
    batch_size: Annotated[int | None, typer.Option(help="Patches per step.", min=1)] = None,
    patch_size: Annotated[int | None, typer.Option(help="LR patch side.", min=4)] = None,
    lr: Annotated[float | None, typer.Option(help="Peak learning rate (Adam).")] = None,
    val_every: Annotated[int | None, typer.Option(help="Validate every N steps.")] = None,
    checkpoint_every: Annotated[int | None, typer.Option(help="Write last.pt every N.")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of weights and data.")] = None,
    workers: Annotated[int | None, typer.Option(help="DataLoader worker processes.")] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu or cuda.")] = None,
    precision: Annotated[
        BenchPrecision | None, typer.Option(help="auto: bf16/fp16 on CUDA, fp32 on CPU.")
    ] = None,
    output: Annotated[Path | None, typer.Option(help="Run folder for checkpoints.")] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue from OUTPUT/last.pt (and its config).")
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress display.")] = False,
) -> None:
    """Train a LIPT model from folders of HR images (torchrun: DistributedDataParallel)."""
    from lipt_cli.errors import EXIT_INTERRUPTED

    with cli_errors():
        from lipt_cli.train_render import render_result, resolve_config, train_with_progress

        flags = {
            "task": task.value if task else None,
            "model": model,
            "scale": scale,
            "train_dirs": [str(d) for d in train_dir] if train_dir else None,
            "val_dir": str(val_dir) if val_dir else None,
            "steps": steps,
            "batch_size": batch_size,
            "patch_size": patch_size,
            "lr": lr,
            "val_every": val_every,
            "checkpoint_every": checkpoint_every,
            "seed": seed,
            "workers": workers,
            "device": device,
            "precision": precision.value if precision else None,
            "output": str(output) if output else None,
        }
        resolved = resolve_config(config, set_ or [], flags, resume=resume)
        result = train_with_progress(resolved, resume=resume, quiet=quiet)
        render_result(result, resolved)
    if result.interrupted:
        raise typer.Exit(EXIT_INTERRUPTED)


def main() -> None:
    app()

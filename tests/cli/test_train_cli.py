"""`lipt train`: config file + --set + flags, resume, convert, and Ctrl-C (exit 130, checkpoint)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image
from typer.testing import CliRunner

from lipt_cli.app import app
from lipt_core.checkpoint import load_checkpoint, read_tensors

runner = CliRunner()

CONFIG = """
task = "sr"
scale = 2
patch_size = 16
batch_size = 4
steps = 4
checkpoint_every = 2
workers = 0
lr = 1e-3

[model_overrides]
channels = 8
num_stages = 2
"""


def run(*args):
    return runner.invoke(app, [str(a) for a in args], terminal_width=200)


def make_images(folder: Path) -> Path:
    folder.mkdir()
    for i in range(2):
        pixels = np.random.default_rng(i).integers(0, 256, (40, 48, 3)).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"{i}.png")
    return folder


def test_train_resume_and_convert(tmp_path):
    data = make_images(tmp_path / "hr")
    config = tmp_path / "c.toml"
    config.write_text(CONFIG)
    out = tmp_path / "run"
    result = run(
        "train", "--config", config, "--train-dir", data, "--output", out,
        "--set", "ema_decay=0.5", "--steps", "2", "--val-dir", data, "--val-every", "2",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "validation PSNR" in result.output and "lipt convert" in result.output
    saved = (out / "config.toml").read_text()
    assert "steps = 2" in saved and "ema_decay = 0.5" in saved and "channels = 8" in saved
    assert (out / "best.pt").exists()

    # Resume: no --config needed, the run's config.toml is read; --steps extends the run.
    result = run("train", "--output", out, "--resume", "--steps", "3", "-q")
    assert result.exit_code == 0, result.output
    assert read_tensors(out / "last.pt")[0]["step"] == 3

    result = run("convert", out / "last.pt", tmp_path / "m.safetensors")
    assert result.exit_code == 0, result.output
    model, metadata = load_checkpoint(tmp_path / "m.safetensors")
    assert model.inference and metadata["task"] == "sr" and metadata["steps"] == "3"


def test_bad_settings_are_one_line_errors(tmp_path):
    result = run("train", "--set", "stepz=3", "--output", tmp_path)
    assert result.exit_code != 0 and "unknown training setting" in result.output
    result = run("train", "--output", tmp_path / "x")
    assert result.exit_code != 0 and "no training images" in result.output


def test_ctrl_c_checkpoints_and_exits_130(tmp_path):
    data = make_images(tmp_path / "hr")
    config = tmp_path / "c.toml"
    config.write_text(CONFIG.replace("steps = 4", "steps = 100000"))
    out = tmp_path / "run"
    process = subprocess.Popen(
        [sys.executable, "-m", "lipt_cli", "train", "--config", str(config),
         "--train-dir", str(data), "--output", str(out), "--checkpoint-every", "20"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip
    try:
        # Interrupt once a step is surely done, however slow the machine.
        for line in process.stdout:
            if line.startswith("step 20/100000: loss"):
                break
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 130, output
    # The checkpoint holds the step the run stopped at, whether Ctrl-C landed before or after
    # the periodic one of step 20.
    step = read_tensors(out / "last.pt")[0]["step"]
    assert step >= 20
    assert f"interrupted at step {step}: resume with" in " ".join(output.split())
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]

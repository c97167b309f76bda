import json

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from lipt_cli.app import app
from lipt_cli.completions import completion_script
from lipt_core import create_model, save_model

runner = CliRunner()


def run(*args, width=200):
    return runner.invoke(app, [str(a) for a in args], terminal_width=width)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bench") / "HR"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for index, (height, width) in enumerate([(32, 28), (24, 36)]):
        coarse = rng.uniform(30, 225, (height // 4, width // 4, 3))
        pixels = np.kron(coarse, np.ones((4, 4, 1))) + rng.normal(0, 5, (height, width, 3))
        Image.fromarray(np.clip(pixels, 0, 255).round().astype(np.uint8)).save(
            folder / f"pic{index}.png"
        )
    return folder


def test_sr_bicubic_on_set5_with_json(shared_dir, tmp_path):
    out = tmp_path / "report.json"
    result = run(
        "eval", "--task", "sr", "--scale", "4", "--data", shared_dir / "data" / "Set5" / "HR",
        "--baseline", "bicubic", "--json", out,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "Set5 (5 images), super-resolution x4" in result.output
    assert "butterfly" in result.output and "28.42" in result.output
    report = json.loads(out.read_text())
    assert abs(report["mean"]["baseline"]["psnr"] - 28.42) < 0.01
    assert report["methods"] == {"baseline": "bicubic"} and report["gain"] is None
    assert len(report["images"]) == 5 and report["protocol"]["crop_border"] == 4


def test_json_to_stdout_only(images):
    result = run("eval", "--task", "car", "--data", images, "--baseline", "identity", "--json", "-")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["protocol"]["quality"] == 10 and set(report["mean"]["baseline"]) == {
        "psnr",
        "ssim",
        "psnr_b",
    }


def test_denoise_and_car_baselines(images):
    result = run("eval", "--task", "denoise", "--sigma", "15", "--seed", "7", "--data", images,
                 "--baseline", "identity")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "denoising sigma 15" in result.output and "seed 7" in result.output
    result = run("eval", "--task", "car", "--quality", "20", "--color", "rgb", "--data", images,
                 "--baseline", "identity")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "PSNR-B" in result.output and "scored on RGB" in result.output


def test_model_and_gain(images, tmp_path):
    torch.manual_seed(0)
    weights = tmp_path / "dn.safetensors"
    save_model(create_model("lipt-tiny", scale=1, channels=8).eval(), weights, task="denoise")
    result = run("eval", "--task", "denoise", "--data", images, "--weights", weights)
    assert result.exit_code == 0, result.output
    assert "model: LIPT (dn.safetensors)" in result.output
    assert "gain" in result.output and "mean gain over identity" in result.output
    # Narrow terminals keep the numbers whole: the per-image gains go first.
    narrow = run("eval", "--task", "denoise", "--data", images, "--weights", weights, width=60)
    assert narrow.exit_code == 0 and "…" not in narrow.output
    assert "mean gain over identity" in narrow.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--task", "sr", "--scale", "4", "--model", "lipt-small"],
            "no trained weights for sr x4 with lipt-small ship with lipt",
        ),
        (["--task", "sr", "--scale", "4"], "nothing to evaluate: pass --model lipt-tiny"),
        (
            ["--task", "sr", "--scale", "4", "--baseline", "identity"],
            "baseline of --task sr is 'bicubic'",
        ),
        (["--task", "car", "--baseline", "identity", "--sigma", "5"], "--sigma applies"),
    ],
)
def test_refusals_exit_2(images, args, message):
    result = run("eval", "--data", images, *args)
    assert result.exit_code == 2
    assert message in " ".join(result.output.split())


def test_missing_data_exits_1(tmp_path):
    result = run("eval", "--task", "sr", "--scale", "2", "--data", tmp_path / "nope",
                 "--baseline", "bicubic")  # fmt: skip
    assert result.exit_code == 1 and "no such file or folder" in result.output


def test_eval_options_are_completed():
    script = completion_script("bash")
    help_text = run("eval", "--help").output
    options = {word.strip(",") for word in help_text.split() if word.startswith("--")}
    assert {"--task", "--data", "--weights", "--baseline", "--json", "--color"} <= options
    words = {word.strip('"') for word in script.split()}
    for option in options:
        assert option in words, f"eval {option} is missing from the completion"

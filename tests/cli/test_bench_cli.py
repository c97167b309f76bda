"""`lipt bench` through the CLI: a small CPU run, the files it writes, its errors."""

from __future__ import annotations

import csv
import json
import sys

import pytest
from typer.testing import CliRunner

from lipt_cli.app import app

runner = CliRunner()
SMALL = ("--size", "16x16", "--scale", "2", "--runs", "2", "--warmup", "1", "--threads", "1")


def run(*args):
    return runner.invoke(app, [str(a) for a in args], terminal_width=200)


def test_tiny_cpu_run_writes_json_and_csv(tmp_path):
    json_path, csv_path = tmp_path / "bench.json", tmp_path / "bench.csv"
    result = run("bench", "--model", "lipt-tiny", *SMALL, "--json", json_path, "--csv", csv_path)
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())  # titles and captions wrap with the table's width
    assert "lipt bench: x2, input 16x16 -> output 32x32, cpu" in text
    assert "1 thread, fp32" in text
    assert "Where the time goes" in text
    for part in ("MSA", "MLP", "Conv", "Other", "Overhead"):
        assert part in result.output
    assert "GFLOP" in text and "2 per multiply-add" in text
    assert f"wrote {json_path}, {csv_path}" in text

    data = json.loads(json_path.read_text())
    assert data["schema"] == "lipt-bench/1"
    assert [m["label"] for m in data["models"]] == ["lipt-tiny"]
    model = data["models"][0]
    assert model["latency_ms"]["runs"] == 2 and model["flops"] > 0
    assert model["parts_sum_ms"] == pytest.approx(model["profiled_ms"]["median"])
    with csv_path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 1 and rows[0]["name"] == "lipt-tiny" and rows[0]["threads"] == "1"


def test_peers_and_both_forms(tmp_path):
    json_path = tmp_path / "bench.json"
    result = run(
        "bench", "-m", "lipt-tiny, swinir-light", "--form", "both", *SMALL, "--json", json_path
    )
    assert result.exit_code == 0, result.output
    labels = [m["label"] for m in json.loads(json_path.read_text())["models"]]
    assert labels == ["lipt-tiny (inference)", "lipt-tiny (training)", "swinir-light"]


def test_unknown_model_lists_valid_ones():
    result = run("bench", "--model", "lipt-tiny,rcan", *SMALL)
    assert result.exit_code == 2
    assert "unknown model 'rcan'" in result.output
    for name in ("lipt-tiny", "lipt-small", "lipt-base", "swinir-light", "elan-light"):
        assert name in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--output-size", "1281x720"), "not divisible by the scale 4"),
        (("--size", "320x180", "--output-size", "1280x720"), "not both"),
        (("--size", "320"), "WIDTHxHEIGHT"),
        (("--precision", "fp16", "--device", "cpu"), "fp16 is not supported on CPU"),
        (("--plot", "chart.txt"), "written as .png, .svg, .pdf"),
        (("--json", "/no/such/folder/b.json"), "does not exist"),
    ],
)
def test_usage_errors_fail_cleanly_before_measuring(args, message, monkeypatch):
    import lipt_core.bench

    def no_model_may_be_built(*_args, **_kwargs):
        raise AssertionError("a model was built before the usage error")

    monkeypatch.setattr(lipt_core.bench, "_build", no_model_may_be_built)
    result = run("bench", "--model", "lipt-tiny", *args)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output


def test_plot_without_matplotlib_is_a_clean_error(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    result = run("bench", "--model", "lipt-tiny", *SMALL, "--plot", tmp_path / "b.png")
    assert result.exit_code == 2
    assert "lipt[plot]" in result.output
    assert not (tmp_path / "b.png").exists()


@pytest.mark.parametrize("suffix", [".png", ".svg"])
def test_plot_is_written(tmp_path, suffix):
    pytest.importorskip("matplotlib")
    path = tmp_path / f"bench{suffix}"
    result = run("bench", "--model", "lipt-tiny,elan-light", *SMALL, "--plot", path)
    assert result.exit_code == 0, result.output
    assert path.stat().st_size > 1000
    if suffix == ".png":
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_restore_reports_megapixels_per_second(tmp_path):
    import numpy as np

    from lipt_core.imageio import Image, write_image

    image = tmp_path / "photo.png"
    write_image(Image(pixels=np.random.default_rng(0).random((24, 32, 3), dtype=np.float32)), image)
    result = run("bench", "--model", "lipt-tiny", *SMALL, "--restore", image)
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "Restore path" in text
    assert "32x24 -> 64x48" in text
    assert "file to file" in text and "output MP/s" in text


def test_help_lists_the_options():
    result = run("bench", "--help")
    assert result.exit_code == 0
    for option in ("--model", "--scale", "--size", "--output-size", "--device", "--threads"):
        assert option in result.output
    for option in ("--precision", "--form", "--runs", "--warmup", "--json", "--csv", "--plot"):
        assert option in result.output
    assert "--restore" in result.output

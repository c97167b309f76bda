"""The training-step speed script runs end to end: both precisions, ours against published."""

from __future__ import annotations

import json
import sys

import pytest

from helpers import load_benchmark

train_speed = load_benchmark("train_speed")


def _run(tmp_path, monkeypatch, *extra: str) -> dict:
    report = tmp_path / "train_speed.json"
    argv = ["train_speed.py", "--scale", "2", "--batch", "2", "--patch", "8", "--steps", "1"]
    argv += ["--warmup", "0", "--threads", "1", "--json", str(report), *extra]
    monkeypatch.setattr(sys, "argv", argv)
    train_speed.main()
    return json.loads(report.read_text())


def test_precisions_are_timed_side_by_side(tmp_path, monkeypatch, capsys):
    result = _run(
        tmp_path, monkeypatch, "--which", "ours", "--form", "inference", "--precisions", "fp32,bf16"
    )
    assert set(result["all_times"]) == {"ours fp32", "ours bf16"}
    assert all(len(samples) == 1 for samples in result["all_times"].values())
    assert set(result["precision_speedup"]) == {"ours bf16"}
    assert "ours: bf16 is" in capsys.readouterr().out


def test_one_precision_keeps_the_plain_labels(tmp_path, monkeypatch):
    result = _run(tmp_path, monkeypatch)
    assert set(result["all_times"]) == {"ours", "published"}
    assert set(result["speedup"]) == {"fp32"}
    assert "precision_speedup" not in result


@pytest.mark.slow  # inductor compiles C++ (a compiler and about a minute)
def test_compile_times_ours_compiled_beside_eager(tmp_path, monkeypatch, capsys):
    result = _run(tmp_path, monkeypatch, "--which", "ours", "--form", "inference", "--compile")
    assert set(result["all_times"]) == {"ours", "ours compiled"}
    assert set(result["compile_speedup"]) == {"fp32"} and "speedup" not in result
    assert "compiled fp32:" in capsys.readouterr().out

"""The side-by-side speed script runs end to end and reports every contender, even from one run."""

from __future__ import annotations

import json
import sys

import pytest

from helpers import load_benchmark

speed = load_benchmark("speed")


def test_one_run_reports_both_sides(tmp_path, monkeypatch, capsys):
    report = tmp_path / "speed.json"
    argv = ["speed.py", "--models", "lipt-tiny", "--size", "16x8", "--runs", "1", "--warmup", "0"]
    monkeypatch.setattr(sys, "argv", [*argv, "--threads", "1", "--json", str(report)])
    speed.main()
    rows = json.loads(report.read_text())["rows"]
    assert [row["model"] for row in rows] == [
        "lipt-tiny fp32 (ours)",
        "lipt-tiny fp32 (published)",
    ]
    for row in rows:
        assert len(row["samples_ms"]) == 1
        assert row["p10_ms"] == row["median_ms"] == row["p90_ms"] > 0
    assert "lipt-tiny fp32: ours is" in capsys.readouterr().out


def test_an_unknown_precision_is_refused_by_name(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["speed.py", "--precisions", "fp32,fp64"])
    with pytest.raises(SystemExit) as exit_info:
        speed.main()
    assert exit_info.value.code == 2
    assert "unknown precision(s): fp64; valid: fp32, bf16" in capsys.readouterr().err


@pytest.mark.slow  # inductor compiles C++ (a compiler and about a minute)
def test_compile_adds_ours_compiled_and_its_speed_ratio(tmp_path, monkeypatch, capsys):
    report = tmp_path / "speed.json"
    argv = ["speed.py", "--models", "lipt-tiny", "--size", "16x8", "--runs", "1", "--warmup", "0"]
    monkeypatch.setattr(sys, "argv", [*argv, "--threads", "1", "--compile", "--json", str(report)])
    speed.main()
    rows = json.loads(report.read_text())["rows"]
    assert "lipt-tiny fp32 (ours, compiled)" in [row["model"] for row in rows]
    assert "compiled is" in capsys.readouterr().out

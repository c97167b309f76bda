"""`lipt models`: the bundled weights registry, through the CLI."""

from __future__ import annotations

import json
import shutil

from typer.testing import CliRunner

from lipt_cli.app import app
from lipt_core import pretrained

runner = CliRunner()


def test_models_lists_every_bundled_file():
    result = runner.invoke(app, ["models"], terminal_width=160)
    assert result.exit_code == 0, result.output
    for entry in pretrained.registry():
        assert entry.name in result.output and entry.sha256[:12] in result.output
    assert str(pretrained.FOLDER) in result.output.replace("\n", "")


def test_models_quality_reads_as_a_grid_in_80_columns():
    result = runner.invoke(app, ["models"], terminal_width=80)
    assert result.exit_code == 0, result.output
    assert max(len(line) for line in result.output.splitlines()) <= 80
    lines = result.output.splitlines()
    for entry in pretrained.registry():
        for key, value in entry.quality.items():
            data, _, measure = key.partition(" ")
            # the measure's row holds the value, in the column headed by its set
            row = next(line for line in lines if measure in line and f"{value:.2f}" in line)
            header = next(line for line in lines if data in line and "measure" in line)
            cell = row.index(f"{value:.2f}") + len(f"{value:.2f}")
            assert header.index(data) + len(data) == cell, (key, row, header)


def test_models_json_has_full_hashes_paths_and_status():
    result = runner.invoke(app, ["models", "--json", "-"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [row["name"] for row in rows] == [e.name for e in pretrained.registry()]
    for row, entry in zip(rows, pretrained.registry(), strict=True):
        assert row["sha256"] == entry.sha256 and len(row["sha256"]) == 64
        assert row["path"] == str(entry.path) and row["status"] == "ok"
        assert row["quality"] == dict(entry.quality)


def test_a_missing_file_shows_and_fails(tmp_path, monkeypatch):
    entries = pretrained.registry()
    for entry in entries[1:]:
        shutil.copy(entry.path, tmp_path / entry.file)
    monkeypatch.setattr(pretrained, "FOLDER", tmp_path)
    result = runner.invoke(app, ["models"], terminal_width=160)
    assert result.exit_code == 1
    assert "missing" in result.output and "status" in result.output

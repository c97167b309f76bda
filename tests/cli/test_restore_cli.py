"""`lipt sr`, `lipt denoise`, `lipt car` on real files, through the CLI."""

from __future__ import annotations

import hashlib
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage
from PIL import ImageOps
from restore_helpers import make_images, serve_folder, tiny_weights, u8
from typer.testing import CliRunner

from lipt_cli.app import app
from lipt_core import imageio as lio

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args], terminal_width=200)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    folder = tmp_path_factory.mktemp("weights")
    return {
        "sr": tiny_weights(folder / "sr_x2.safetensors", task="sr", scale=2),
        "denoise": tiny_weights(folder / "denoise.safetensors", task="denoise", scale=1),
        "car": tiny_weights(folder / "car.safetensors", task="car", scale=1, quality="blind"),
    }


def _no_temp_files(folder: Path) -> bool:
    return not [p for p in folder.rglob("*") if p.name.endswith((".tmp", ".part"))]


def test_sr_keeps_size_depth_mode_orientation_and_icc(tmp_path, weights):
    paths = make_images(tmp_path / "in")
    result = run("sr", tmp_path / "in", "--weights", weights["sr"], "-o", tmp_path / "out")
    assert result.exit_code == 0, result.output
    out = tmp_path / "out"
    for name, path in paths.items():
        source = lio.read_image(path)
        restored = lio.read_image(out / f"{path.stem}_x2{path.suffix}")
        assert (restored.width, restored.height) == (2 * source.width, 2 * source.height), name
        assert restored.mode == source.mode and restored.bit_depth == source.bit_depth, name
        assert (restored.alpha is None) == (source.alpha is None), name
    # 16 bits written as 16 bits
    assert lio.read_image(out / "rgb16_x2.png").bit_depth == 16
    with PILImage.open(out / "gray8_x2.png") as im:
        assert im.mode == "L"
    # EXIF-rotated JPEG: stored 48x64 sideways (orientation 6), upright 64x48, written upright
    with PILImage.open(paths["rotated"]) as im:
        assert im.size == (48, 64) and ImageOps.exif_transpose(im).size == (64, 48)
    with PILImage.open(out / "rotated_x2.jpg") as im:
        assert im.size == (128, 96)
        assert im.getexif().get(0x0112, 1) == 1 and im.getexif().get(0x010F) == "LiptCam"
    # ICC profile carried byte for byte
    with PILImage.open(paths["icc"]) as source, PILImage.open(out / "icc_x2.png") as im:
        assert source.info["icc_profile"]
        assert im.info.get("icc_profile") == source.info["icc_profile"]
    assert "6 upscaled" in result.output and _no_temp_files(tmp_path)


def test_default_output_is_beside_the_input(tmp_path, weights):
    PILImage.fromarray(u8()).save(tmp_path / "cat.png")
    result = run("sr", tmp_path / "cat.png", "--weights", weights["sr"], "-q")
    assert result.exit_code == 0, result.output
    assert result.output == ""
    assert (tmp_path / "cat_x2.png").exists()
    # an existing output is an error naming it ...
    result = run("sr", tmp_path / "cat.png", "--weights", weights["sr"])
    assert result.exit_code == 2 and "cat_x2.png already exists" in result.stderr
    # ... unless skipped or overwritten
    result = run("sr", tmp_path / "cat.png", "--weights", weights["sr"], "--skip-existing")
    assert result.exit_code == 0 and "skipped" in result.output
    result = run("sr", tmp_path / "cat.png", "--weights", weights["sr"], "--overwrite")
    assert result.exit_code == 0 and "1 upscaled" in result.output
    result = run(
        "sr", tmp_path / "cat.png", "--weights", weights["sr"], "--overwrite", "--skip-existing"
    )
    assert result.exit_code == 2


def test_output_file_and_format(tmp_path, weights):
    PILImage.fromarray(u8()).save(tmp_path / "cat.png")
    result = run("sr", tmp_path / "cat.png", "--weights", weights["sr"], "-o", tmp_path / "big.tif")
    assert result.exit_code == 0, result.output
    assert lio.read_image(tmp_path / "big.tif").width == 128
    result = run("sr", tmp_path / "cat.png", "--weights", weights["sr"], "--format", "webp")
    assert result.exit_code == 0 and (tmp_path / "cat_x2.webp").exists()


def test_recursive_mirrors_the_tree(tmp_path, weights):
    for rel in ("a.png", "x/b.png", "x/y/c.png"):
        (tmp_path / "in" / rel).parent.mkdir(parents=True, exist_ok=True)
        PILImage.fromarray(u8(16, 16)).save(tmp_path / "in" / rel)
    result = run("sr", tmp_path / "in", "-r", "--weights", weights["sr"], "-o", tmp_path / "out")
    assert result.exit_code == 0, result.output
    written = sorted(
        p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*.png")
    )
    assert written == ["a_x2.png", "x/b_x2.png", "x/y/c_x2.png"]


def _bad_files(folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    bad = {
        "text": folder / "notes.png",
        "truncated": folder / "cut.png",
        "empty": folder / "empty.png",
        "folder": folder / "album.png",
        "thumbs": folder / "Thumbs.db",
    }
    bad["text"].write_text("this is not an image\n" * 10)
    buffer = io.BytesIO()
    PILImage.fromarray(u8(64, 64)).save(buffer, "PNG")
    bad["truncated"].write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    bad["empty"].write_bytes(b"")
    bad["folder"].mkdir()
    bad["thumbs"].write_bytes(b"\xd0\xcf\x11\xe0" + b"\0" * 60)
    return bad


def test_bad_inputs_are_reported_and_the_rest_finish(tmp_path, weights):
    folder = tmp_path / "in"
    bad = _bad_files(folder)
    for name in ("good1", "good2"):
        PILImage.fromarray(u8()).save(folder / f"{name}.png")
    result = run(
        "sr", *sorted(folder.iterdir()), "--weights", weights["sr"], "-o", tmp_path / "out"
    )
    assert result.exit_code == 1, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("lipt: error:")]
    assert len(errors) == len(bad) == len(result.stderr.strip().splitlines())
    for kind, path in bad.items():
        assert sum(path.name in line for line in errors) == 1, (kind, result.stderr)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["good1_x2.png", "good2_x2.png"]
    assert "2 upscaled, 5 failed" in result.output
    assert "Traceback" not in result.output


def test_scanning_a_folder_ignores_non_images_but_reports_broken_images(tmp_path, weights):
    folder = tmp_path / "in"
    _bad_files(folder)
    PILImage.fromarray(u8()).save(folder / "good.png")
    result = run("sr", folder, "--weights", weights["sr"], "--json", "-")
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    statuses = {Path(f["input"]).name: f["status"] for f in report["files"]}
    assert statuses == {
        "album.png": "failed",
        "cut.png": "failed",
        "empty.png": "failed",
        "good.png": "ok",
        "notes.png": "failed",
    }
    assert [Path(p).name for p in report["ignored"]] == ["Thumbs.db"]


def test_json_report(tmp_path, weights):
    PILImage.fromarray(u8(20, 30)).save(tmp_path / "a.png")
    result = run("sr", tmp_path / "a.png", "--weights", weights["sr"], "--json", "-")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    (entry,) = report["files"]
    assert entry["status"] == "ok" and entry["error"] is None
    assert entry["input_size"] == {"width": 30, "height": 20}
    assert entry["output_size"] == {"width": 60, "height": 40}
    assert entry["output"].endswith("a_x2.png") and entry["seconds"] > 0
    assert report["model"]["scale"] == 2 and report["model"]["device"] == "cpu"
    assert report["succeeded"] == 1 and report["failed"] == 0


def test_json_report_to_a_file_keeps_the_summary(tmp_path, weights):
    PILImage.fromarray(u8(20, 30)).save(tmp_path / "a.png")
    target = tmp_path / "reports" / "run.json"
    result = run("sr", tmp_path / "a.png", "--weights", weights["sr"], "--json", target)
    assert result.exit_code == 0, result.output
    assert "1 upscaled" in result.output  # the summary is still shown
    report = json.loads(target.read_text())
    assert [entry["status"] for entry in report["files"]] == ["ok"]
    assert not list(target.parent.glob(".*.tmp"))


def test_shards_split_the_batch(tmp_path, weights):
    for i in range(5):
        PILImage.fromarray(u8(16, 16)).save(tmp_path / f"{i}.png")
    done = []
    for k in (1, 2):
        result = run("sr", tmp_path, "--weights", weights["sr"], "--shard", f"{k}/2", "--json", "-")
        assert result.exit_code == 0, result.output
        done += [Path(f["input"]).name for f in json.loads(result.stdout)["files"]]
    assert sorted(done) == [f"{i}.png" for i in range(5)]
    assert run("sr", tmp_path, "--weights", weights["sr"], "--shard", "3/2").exit_code == 2


@pytest.mark.parametrize(
    ("task", "suffix", "factor"),
    [("sr", "_x4", 4), ("denoise", "_denoised", 1), ("car", "_car", 1)],
)
def test_bundled_weights_serve_by_default(tmp_path, task, suffix, factor):
    PILImage.fromarray(u8()).save(tmp_path / "a.png")
    result = run(task, tmp_path / "a.png")
    assert result.exit_code == 0, result.output
    assert "lipt-tiny" in result.output
    # The header names every model the run may use: JPEG's gray companion too.
    header = result.output.splitlines()[0]
    assert ("gray photos with lipt-tiny-car-gray (bundled)" in header) == (task == "car")
    with PILImage.open(tmp_path / f"a{suffix}.png") as image:
        assert image.size == (64 * factor, 48 * factor)
    if task == "sr":
        result = run("sr", tmp_path / "a.png", "--scale", "2", "-o", tmp_path / "b.png")
        assert result.exit_code == 0 and PILImage.open(tmp_path / "b.png").size == (128, 96)


@pytest.mark.parametrize("task", ["sr", "denoise", "car"])
def test_a_preset_without_bundled_weights_is_refused(tmp_path, task):
    PILImage.fromarray(u8()).save(tmp_path / "a.png")
    result = run(task, tmp_path / "a.png", "--model", "lipt-small")
    assert result.exit_code == 2
    what = "sr x4" if task == "sr" else task
    assert result.stderr.startswith(
        f"lipt: error: no trained weights for {what} with lipt-small ship with lipt (there are: "
    )
    assert result.stderr.strip().endswith("pass --weights FILE")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png"]


def test_weights_for_another_task_are_refused(tmp_path, weights):
    PILImage.fromarray(u8()).save(tmp_path / "a.png")
    result = run("sr", tmp_path / "a.png", "--weights", weights["denoise"])
    assert result.exit_code == 2 and "denoise weights, not sr" in result.stderr
    result = run("sr", tmp_path / "a.png", "--weights", weights["sr"], "--scale", "4")
    assert result.exit_code == 2 and "x2, not x4" in result.stderr
    result = run("sr", tmp_path / "a.png", "--weights", weights["sr"], "--model", "lipt-base")
    assert result.exit_code == 2 and "not lipt-base" in result.stderr


def test_denoise_and_car(tmp_path, weights):
    PILImage.fromarray(u8()).save(tmp_path / "noisy.png")
    result = run(
        "denoise",
        tmp_path / "noisy.png",
        "--sigma",
        "25",
        "--weights",
        weights["denoise"],
        "--json",
        "-",
    )
    assert result.exit_code == 0, result.output
    entry = json.loads(result.stdout)["files"][0]
    assert entry["output"].endswith("noisy_denoised.png") and entry["sigma"] == 25
    assert entry["output_size"] == entry["input_size"]
    PILImage.fromarray(u8()).save(tmp_path / "photo.jpg", quality=30)
    result = run("car", tmp_path / "photo.jpg", "--weights", weights["car"], "--json", "-")
    assert result.exit_code == 0, result.output
    entry = json.loads(result.stdout)["files"][0]
    # written losslessly: JPEG again would put artifacts back
    assert entry["output"].endswith("photo_car.png") and entry["quality"] == 30
    with PILImage.open(entry["output"]) as image:
        assert image.format == "PNG"
    result = run(
        "car", tmp_path / "photo.jpg", "--weights", weights["car"], "--format", "jpeg", "-q"
    )
    assert result.exit_code == 0 and (tmp_path / "photo_car.jpg").exists()
    result = run("car", tmp_path / "photo.jpg", "--weights", weights["car"], "--quality", "0")
    assert result.exit_code == 2


def test_tiled_and_whole_outputs_agree(tmp_path, weights):
    PILImage.fromarray(u8(96, 200)).save(tmp_path / "wide.png")
    for tile, out in (("0", "whole.png"), ("64", "tiled.png")):
        result = run(
            "sr",
            tmp_path / "wide.png",
            "--weights",
            weights["sr"],
            "--tile",
            tile,
            "-o",
            tmp_path / out,
        )
        assert result.exit_code == 0, result.output
    whole = lio.read_image(tmp_path / "whole.png").pixels
    tiled = lio.read_image(tmp_path / "tiled.png").pixels
    difference = np.abs(whole - tiled) * 255
    assert difference.max() <= 3 and difference.mean() < 0.05, (difference.max(), difference.mean())


def test_ensemble_averages_flips_and_rotations(tmp_path, weights):
    PILImage.fromarray(u8(40, 56)).save(tmp_path / "photo.png")
    outputs = {}
    for name, extra in (("plain", []), ("ensemble", ["--ensemble"])):
        result = run("denoise", tmp_path / "photo.png", "--weights", weights["denoise"],
                     "-o", tmp_path / f"{name}.png", *extra)  # fmt: skip
        assert result.exit_code == 0, result.output
        header = result.output.splitlines()[0]
        assert header.startswith("lipt denoise: 1 file with")
        assert ("x8 ensemble" in header) == (name == "ensemble"), header
        outputs[name] = lio.read_image(tmp_path / f"{name}.png").pixels
    assert outputs["ensemble"].shape == outputs["plain"].shape
    assert 0 < np.abs(outputs["ensemble"] - outputs["plain"]).mean() < 0.1


def test_weights_from_a_url_with_a_pin(tmp_path, weights, monkeypatch):
    monkeypatch.setenv("LIPT_CACHE_DIR", str(tmp_path / "cache"))
    site = tmp_path / "site"
    site.mkdir()
    data = weights["sr"].read_bytes()
    (site / "sr.safetensors").write_bytes(data)
    PILImage.fromarray(u8()).save(tmp_path / "a.png")
    digest = hashlib.sha256(data).hexdigest()
    with serve_folder(site) as (base, requests):
        result = run(
            "sr", tmp_path / "a.png", "--weights", f"{base}/sr.safetensors#sha256={digest}"
        )
        assert result.exit_code == 0, result.output
        assert len(list((tmp_path / "cache").iterdir())) == 1
        bad = f"{base}/sr.safetensors#sha256={'1' * 64}"
        result = run("sr", tmp_path / "a.png", "--weights", bad, "--overwrite")
        assert result.exit_code == 1 and "SHA-256 mismatch" in result.stderr
    assert len(requests) == 2


def test_failure_mid_write_leaves_no_partial_file(tmp_path, weights, monkeypatch):
    for name in ("a", "b", "c"):
        PILImage.fromarray(u8()).save(tmp_path / f"{name}.png")
    real = lio._ENCODERS["PNG"]
    calls = []

    def flaky(image, fp, quality):
        calls.append(1)
        if len(calls) == 2:
            fp.write(b"\x89PNG\r\n\x1a\n" + b"\0" * 500)
            raise OSError("disk full")
        real(image, fp, quality)

    monkeypatch.setitem(lio._ENCODERS, "PNG", flaky)
    result = run(
        "sr", tmp_path / "a.png", tmp_path / "b.png", tmp_path / "c.png", "--weights", weights["sr"]
    )
    assert result.exit_code == 1
    assert "b_x2.png: cannot write (disk full)" in result.stderr
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["a.png", "a_x2.png", "b.png", "c.png", "c_x2.png"]
    assert lio.read_image(tmp_path / "c_x2.png").width == 128


def test_ctrl_c_stops_cleanly(tmp_path, weights, monkeypatch):
    from lipt_core.restore import Restorer

    for i in range(4):
        PILImage.fromarray(u8()).save(tmp_path / f"{i}.png")
    real = Restorer.restore
    count = []

    def interrupted(self, image, **kwargs):
        count.append(1)
        if len(count) == 3:
            raise KeyboardInterrupt
        return real(self, image, **kwargs)

    monkeypatch.setattr(Restorer, "restore", interrupted)
    result = run("sr", tmp_path, "--weights", weights["sr"])
    assert result.exit_code == 130 and "interrupted" in result.output
    # the write in progress completes; queued results are dropped; nothing after the interrupt
    written = sorted(p.name for p in tmp_path.glob("*_x2.png"))
    assert set(written) <= {"0_x2.png", "1_x2.png"}
    for name in written:
        assert lio.read_image(tmp_path / name).width == 128  # complete files
    assert _no_temp_files(tmp_path)


def test_help_lists_the_options():
    for command in ("sr", "denoise", "car"):
        result = run(command, "--help")
        assert result.exit_code == 0
        for option in (
            "--output",
            "--weights",
            "--tile",
            "--tile-overlap",
            "--device",
            "--precision",
            "--json",
            "-",
            "--shard",
            "--recursive",
            "--skip-existing",
            "--overwrite",
            "--quiet",
        ):
            assert option in result.output, (command, option)


def test_the_completion_scripts_know_the_restore_commands():
    from lipt_cli.completions import completion_script

    script = completion_script("bash")
    for command in ("sr", "denoise", "car"):
        help_text = run(command, "--help").output
        options = set(re.findall(r"(?<![\w-])--[a-z][a-z-]*", help_text))
        assert "--weights" in options
        for option in options:
            assert option in script, (command, option)

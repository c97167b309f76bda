"""Batch planning: input expansion, sharding, output names and collisions, the pipeline."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest
from PIL import Image as PILImage
from restore_helpers import tiny_model, u8

from lipt_core.batch import (
    BatchCallbacks,
    RestoreRequest,
    expand_inputs,
    output_name,
    parse_shard,
    plan_outputs,
    restore_files,
    take_shard,
)
from lipt_core.errors import UsageError
from lipt_core.imageio import read_image
from lipt_core.restore import Restorer


def _png(path: Path, h: int = 16, w: int = 24) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    PILImage.fromarray(u8(h, w)).save(path)
    return path


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "photos"
    _png(root / "b.png")
    _png(root / "a.png")
    _png(root / "sub" / "c.png")
    _png(root / "sub" / "deeper" / "d.png")
    (root / "Thumbs.db").write_bytes(b"\0" * 8)
    (root / "notes.txt").write_text("hi")
    _png(root / ".hidden.png")
    return root


def test_folder_scan_is_sorted_and_skips_non_images(tree):
    found = expand_inputs([tree])
    assert [item.rel.as_posix() for item in found.items] == ["a.png", "b.png"]
    assert all(item.scanned for item in found.items)
    assert sorted(p.name for p in found.ignored) == ["Thumbs.db", "notes.txt"]


def test_recursive_scan_keeps_relative_paths(tree):
    found = expand_inputs([tree], recursive=True)
    assert [item.rel.as_posix() for item in found.items] == [
        "a.png",
        "b.png",
        "sub/c.png",
        "sub/deeper/d.png",
    ]
    found = expand_inputs([tree], recursive=True, exclude=[tree / "sub" / "deeper"])
    assert "sub/deeper/d.png" not in [item.rel.as_posix() for item in found.items]


def test_globs_files_and_missing(tree, monkeypatch):
    monkeypatch.chdir(tree.parent)
    found = expand_inputs(["photos/*.png", "photos/a.png", "photos/missing.png", "nope/*.jpg"])
    names = [(item.rel.as_posix(), item.error) for item in found.items]
    assert names[:2] == [("a.png", None), ("b.png", None)]  # a.png named twice: kept once
    assert names[2] == ("missing.png", "file not found")
    assert names[3] == ("*.jpg", "no file matches")
    found = expand_inputs(["photos/**/*.png"], recursive=True)
    assert "sub/deeper/d.png" in [item.rel.as_posix() for item in found.items]
    # a folder matched by a glob is reported unless --recursive
    found = expand_inputs(["photos/*"])
    sub = next(item for item in found.items if item.path.name == "sub")
    assert "directory" in sub.error
    thumbs = next(item for item in found.items if item.path.name == "Thumbs.db")
    assert thumbs.error is None  # named (by the glob): read, and reported if it fails


def test_shards_are_disjoint_and_complete():
    items = list(range(23))
    parts = [take_shard(items, parse_shard(f"{k}/4")) for k in range(1, 5)]
    assert sorted(item for part in parts for item in part) == items
    assert max(map(len, parts)) - min(map(len, parts)) <= 1
    assert take_shard(items, parse_shard("2/4")) == parts[1]  # deterministic
    for bad in ("0/4", "5/4", "1/0", "a/b", "3"):
        with pytest.raises(UsageError):
            parse_shard(bad)


def test_output_names():
    assert output_name(Path("x/cat.jpeg"), "_x4", None) == "cat_x4.jpeg"
    assert output_name(Path("x/cat.gif"), "_denoised", None) == "cat_denoised.png"
    assert output_name(Path("x/cat.png"), "_car", "jpeg") == "cat_car.jpg"


def test_plan_outputs_and_collisions(tree, tmp_path):
    items = expand_inputs([tree], recursive=True).items
    beside = plan_outputs(items, suffix="_x2")
    assert beside[0] == tree / "a_x2.png"
    mirrored = plan_outputs(items, suffix="_x2", output=tmp_path / "out")
    assert mirrored[3] == tmp_path / "out" / "sub" / "deeper" / "d_x2.png"
    with pytest.raises(UsageError, match="names a file"):
        plan_outputs(items, suffix="_x2", output=tmp_path / "one.png")


def _run(tmp_path, inputs, **options):
    restorer = Restorer(tiny_model(scale=2), task="sr")
    request = RestoreRequest(task="sr", inputs=inputs, **options)
    return restore_files(request, restorer=restorer)


def test_collisions_and_overwriting_inputs_are_refused(tmp_path):
    _png(tmp_path / "a" / "img.png")
    _png(tmp_path / "b" / "img.png")
    with pytest.raises(UsageError, match="would both be written"):
        _run(tmp_path, [tmp_path / "a", tmp_path / "b"], output=tmp_path / "out")
    _png(tmp_path / "c" / "img.png")
    _png(tmp_path / "c" / "img_x2.png")
    # named explicitly, img_x2.png is an input that img.png's output would overwrite
    with pytest.raises(UsageError, match="would overwrite an input"):
        _run(
            tmp_path,
            [tmp_path / "c" / "img.png", tmp_path / "c" / "img_x2.png"],
            existing="overwrite",
        )


def test_earlier_outputs_in_a_scanned_folder_are_left_out(tmp_path):
    folder = tmp_path / "in"
    _png(folder / "a.png")
    first = _run(tmp_path, [folder])
    assert first.count("ok") == 1 and (folder / "a_x2.png").exists()
    second = _run(tmp_path, [folder], output=tmp_path / "out")
    assert [r.input for r in second.results] == [str(folder / "a.png")]
    assert second.earlier_outputs == [folder / "a_x2.png"]


def test_existing_outputs(tmp_path):
    folder = tmp_path / "in"
    _png(folder / "a.png")
    _png(folder / "b.png")
    _run(tmp_path, [folder / "a.png"])
    with pytest.raises(UsageError, match=r"a_x2\.png already exists"):
        _run(tmp_path, [folder])
    report = _run(tmp_path, [folder], existing="skip")
    assert [r.status for r in report.results] == ["skipped", "ok"]
    before = (folder / "a_x2.png").stat().st_mtime_ns
    time.sleep(0.01)
    report = _run(tmp_path, [folder], existing="overwrite")
    assert [r.status for r in report.results] == ["ok", "ok"]
    assert (folder / "a_x2.png").stat().st_mtime_ns != before


def test_callbacks_and_results(tmp_path):
    folder = tmp_path / "in"
    for name in "abc":
        _png(folder / f"{name}.png", 40, 300)
    (folder / "bad.png").write_text("not an image")
    events = {"plan": [], "start": [], "tile": [], "done": []}
    callbacks = BatchCallbacks(
        on_plan=events["plan"].append,
        on_file_start=lambda *a: events["start"].append(a),
        on_tile=lambda d, t: events["tile"].append((d, t)),
        on_file_done=events["done"].append,
    )
    restorer = Restorer(tiny_model(scale=2), task="sr", tile=64)
    report = restore_files(
        RestoreRequest(task="sr", inputs=[folder]), restorer=restorer, callbacks=callbacks
    )
    assert events["plan"][0].total == 4
    assert len(events["done"]) == 4 and len(events["start"]) == 3
    assert events["tile"] and events["tile"][-1][0] == events["tile"][-1][1] > 1
    assert [r.status for r in report.results] == ["ok", "ok", "failed", "ok"]  # a b bad c
    ok = report.results[0]
    assert ok.input_size == (300, 40) and ok.output_size == (600, 80) and ok.seconds > 0
    assert report.exit_code == 1


def test_gray_images_go_to_the_gray_companion(tmp_path):
    import numpy as np

    folder = tmp_path / "in"
    folder.mkdir()
    PILImage.fromarray(u8(16, 24, channels=1)).save(folder / "gray.png")
    _png(folder / "rgb.png")
    colour = Restorer(tiny_model(scale=1, seed=1), task="car")
    gray = Restorer(tiny_model(scale=1, colors=1, seed=2), task="car", source="gray model")
    colour.attach_gray(gray)
    assert colour.describe()["gray_model"] == "gray model"
    report = restore_files(RestoreRequest(task="car", inputs=[folder]), restorer=colour)
    assert [r.status for r in report.results] == ["ok", "ok"]
    for name, expected in (("gray", gray), ("rgb", colour)):
        image = read_image(folder / f"{name}.png")
        assert colour.for_image(image) is expected
        written = read_image(folder / f"{name}_car.png").pixels
        want = np.rint(expected.restore(image).pixels * 255) / 255
        np.testing.assert_allclose(written, want, atol=1 / 255 + 1e-6)
    # Without the companion the gray image takes the colour path, and differs.
    alone = Restorer(tiny_model(scale=1, seed=1), task="car")
    gray_image = read_image(folder / "gray.png")
    assert np.abs(alone.restore(gray_image).pixels - gray.restore(gray_image).pixels).max() > 0.01

    with pytest.raises(UsageError, match="needs an RGB restorer and a 1-channel model"):
        colour.attach_gray(Restorer(tiny_model(scale=1, seed=3), task="car"))
    with pytest.raises(UsageError, match="gray companion"):
        colour.attach_gray(Restorer(tiny_model(scale=2, colors=1), task="sr"))


def test_an_output_file_names_its_format_even_for_car(tmp_path):
    """car writes PNG by default, but ``-o FILE.jpg`` without --format is a JPEG."""
    source = tmp_path / "scan.jpg"
    PILImage.fromarray(u8(16, 24)).save(source, quality=30)
    restorer = Restorer(tiny_model(scale=1), task="car")

    def run(**options):
        request = RestoreRequest(task="car", inputs=[source], **options)
        return restore_files(request, restorer=restorer)

    assert run(output=tmp_path / "clean.jpg").exit_code == 0
    with PILImage.open(tmp_path / "clean.jpg") as written:
        assert written.format == "JPEG"
    assert run(output=tmp_path / "clean.webp").exit_code == 0
    with PILImage.open(tmp_path / "clean.webp") as written:
        assert written.format == "WEBP"
    run()  # beside the input, car's default format
    with PILImage.open(tmp_path / "scan_car.png") as written:
        assert written.format == "PNG"
    with pytest.raises(UsageError, match="does not match --format png"):
        run(output=tmp_path / "other.jpg", format="png")
    with pytest.raises(UsageError, match="would overwrite an input"):
        run(output=source)


def test_pipeline_overlaps_io_with_the_model(tmp_path, monkeypatch):
    """Reading image k+1 and writing image k-1 happen while the model runs image k.

    Each stage announces when it starts an image, then waits for its neighbours: the model on
    image k for the read of k+1 and the write of k-1, the read of k for the model on k-1, the
    write of k for the model on k+1. Only a pipeline that runs the three stages at once can
    meet every wait; one that ran them in turn would time out. No wall-clock ratio is
    involved, so the machine's load cannot make the test fail.
    """
    import lipt_core.imageio as imageio

    count = 6
    folder = tmp_path / "in"
    for i in range(count):
        _png(folder / f"{i:02d}.png", 32, 48)
    restorer = Restorer(tiny_model(scale=2, channels=16, num_stages=4), task="sr")
    started = {
        stage: [threading.Event() for _ in range(count)] for stage in ("read", "model", "write")
    }
    timed_out: list[str] = []
    index_of: dict[int, int] = {}
    real_read, real_write, real_restore = imageio.read_image, imageio.write_image, restorer.restore

    def meet(stage: str, index: int, waits: list[tuple[str, int]]) -> None:
        started[stage][index].set()
        for other, other_index in waits:
            if 0 <= other_index < count and not started[other][other_index].wait(timeout=5):
                timed_out.append(f"{stage} {index} never saw {other} {other_index}")

    def paced_read(path, **kwargs):
        index = int(Path(path).stem)
        meet("read", index, [("model", index - 1)])
        image = real_read(path, **kwargs)
        index_of[id(image)] = index
        return image

    def paced_write(image, path, **kwargs):
        index = int(Path(path).stem.split("_")[0])
        meet("write", index, [("model", index + 1)])
        return real_write(image, path, **kwargs)

    def paced_restore(image, **kwargs):
        index = index_of[id(image)]
        meet("model", index, [("read", index + 1), ("write", index - 1)])
        return real_restore(image, **kwargs)

    monkeypatch.setattr(imageio, "read_image", paced_read)
    monkeypatch.setattr(imageio, "write_image", paced_write)
    monkeypatch.setattr(restorer, "restore", paced_restore)
    report = restore_files(RestoreRequest(task="sr", inputs=[folder]), restorer=restorer)
    assert report.count("ok") == count
    assert timed_out == []


def test_missing_folder_argument_is_a_failed_entry(tmp_path):
    _png(tmp_path / "in" / "a.png")
    report = _run(tmp_path, [tmp_path / "in", tmp_path / "nowhere"])
    assert [r.status for r in report.results] == ["ok", "failed"]
    assert "file not found" in report.results[1].error


def test_a_folder_without_images_is_reported(tmp_path):
    (tmp_path / "empty").mkdir()
    report = _run(tmp_path, [tmp_path / "empty"])
    assert [r.status for r in report.results] == ["failed"]
    assert "a folder with no images" in report.results[0].error
    assert os.listdir(tmp_path / "empty") == []


def test_an_empty_shard_is_a_usage_error(tmp_path):
    _png(tmp_path / "in" / "a.png")
    with pytest.raises(UsageError, match="no input images found in this shard"):
        _run(tmp_path, [tmp_path / "in"], shard="2/2")

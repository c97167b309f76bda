"""lipt_core.pretrained: the bundled weights are what the registry says, load without pickle,
restore better than the trivial method, and score what the registry claims."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from lipt_core import pretrained
from lipt_core.checkpoint import load_checkpoint
from lipt_core.errors import CheckpointError, UsageError
from lipt_core.pretrained import WeightsEntry, find_entry, parse_registry, registry, verified_path
from lipt_core.weights import default_weights, sha256_of

ENTRIES = registry()
MAX_TOTAL_BYTES = 15 * 10**6


def test_the_registry_covers_every_task_and_fits_the_budget():
    kinds = {(e.task, e.model, e.scale, e.colors) for e in ENTRIES}
    assert kinds >= {
        ("sr", "lipt-tiny", 2, 3),
        ("sr", "lipt-tiny", 3, 3),
        ("sr", "lipt-tiny", 4, 3),
        ("denoise", "lipt-tiny", 1, 3),
        ("car", "lipt-tiny", 1, 3),
        ("car", "lipt-tiny", 1, 1),
    }
    assert sum(e.size for e in ENTRIES) < MAX_TOTAL_BYTES
    on_disk = {p.name for p in pretrained.FOLDER.glob("*.safetensors")}
    assert on_disk == {e.file for e in ENTRIES}  # no unregistered file ships


@pytest.mark.parametrize("entry", ENTRIES, ids=[e.name for e in ENTRIES])
def test_each_file_is_what_its_entry_says(entry):
    path = verified_path(entry)
    assert sha256_of(path) == entry.sha256 and path.stat().st_size == entry.size
    model, metadata = load_checkpoint(path)  # safetensors: no pickle
    assert model.form == "inference"
    assert metadata["task"] == entry.task and metadata["name"] == entry.name
    assert (model.config.scale, model.config.colors) == (entry.scale, entry.colors)
    assert int(metadata["steps"]) > 0 and metadata["training_data"].startswith("shared/data/train")
    if entry.task == "denoise":
        assert metadata["sigma"] == "0-50"
    if entry.task == "car":
        assert metadata["quality"] == "10-90"
    assert entry.quality, "every bundled model carries its measured quality"


def test_defaults_and_refusals():
    assert find_entry("sr", "lipt-tiny").scale == pretrained.DEFAULT_SCALE == 4
    assert find_entry("sr", "lipt-tiny", scale=2).name == "lipt-tiny-sr-x2"
    assert find_entry("denoise", "lipt-tiny", scale=4).task == "denoise"  # scale: SR only
    assert default_weights("car", "lipt-tiny") == find_entry("car", "lipt-tiny").path
    with pytest.raises(
        UsageError,
        match=r"no trained weights for sr x4 with lipt-small .*"
        r"there are: lipt-tiny x2, lipt-tiny x3, lipt-tiny x4",
    ):
        find_entry("sr", "lipt-small")
    with pytest.raises(UsageError, match="no trained weights for car ship with lipt"):
        find_entry("car", "lipt-tiny", entries=())


def test_a_damaged_or_missing_file_is_refused(tmp_path, monkeypatch):
    entry = find_entry("sr", "lipt-tiny", scale=2)
    shutil.copy(entry.path, tmp_path / entry.file)
    monkeypatch.setattr(pretrained, "FOLDER", tmp_path)
    assert verified_path(entry) == tmp_path / entry.file
    data = bytearray((tmp_path / entry.file).read_bytes())
    data[-1] ^= 1
    (tmp_path / entry.file).write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="do not match their registered SHA-256"):
        verified_path(entry)
    (tmp_path / entry.file).unlink()
    with pytest.raises(CheckpointError, match="are missing; reinstall"):
        verified_path(entry)
    rows = {row["name"]: row["status"] for row in pretrained.inventory()}
    assert rows[entry.name] == "missing"


def test_registry_parsing_is_strict():
    good = ENTRIES[0].to_dict()
    assert parse_registry(json.loads(json.dumps([good]))) == (WeightsEntry(**good),)
    with pytest.raises(CheckpointError, match="must be a list"):
        parse_registry({"a": 1})
    with pytest.raises(CheckpointError, match="entry 0 is malformed"):
        parse_registry([{**good, "colour": 3}])
    with pytest.raises(CheckpointError, match="duplicate"):
        parse_registry([good, good])


def _restore(entry: WeightsEntry, image: np.ndarray) -> np.ndarray:
    import torch

    model, _ = load_checkpoint(entry.path)
    x = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))[None].float()
    with torch.inference_mode():
        y = model(x)[0].clamp(0, 255).round()
    return y.permute(1, 2, 0).numpy()


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(255.0**2 / np.mean((a.astype(float) - b.astype(float)) ** 2)))


@pytest.fixture(scope="module")
def photo(shared_dir):
    from PIL import Image

    with Image.open(shared_dir / "data" / "Set5" / "HR" / "butterfly.png") as image:
        return np.asarray(image.convert("RGB"))[64:160, 64:160]


def test_bundled_models_beat_the_trivial_method(photo):
    from lipt_core import degradations as deg

    for scale in (2, 3, 4):
        hr = deg.modcrop(photo, scale)
        low = deg.bicubic_downscale(hr, scale).astype(np.float32)
        restored = _restore(find_entry("sr", "lipt-tiny", scale=scale), low)
        bicubic = np.clip(np.rint(deg.bicubic_upscale(low, scale)), 0, 255)
        assert _psnr(restored, hr) > _psnr(bicubic, hr) + 0.25, scale
    rng = np.random.default_rng(0)
    noisy = deg.add_gaussian_noise(photo / 255.0, 25.0, rng=rng) * 255.0
    denoised = _restore(find_entry("denoise", "lipt-tiny"), noisy.astype(np.float32))
    assert _psnr(denoised, photo) > _psnr(np.clip(np.rint(noisy), 0, 255), photo) + 6.0
    compressed = deg.jpeg_compress(photo, 10)
    restored = _restore(find_entry("car", "lipt-tiny"), compressed.astype(np.float32))
    assert _psnr(restored, photo) > _psnr(compressed, photo) + 0.8
    # No colour shift: the mean of every channel stays where it was.
    assert np.abs(restored.mean(axis=(0, 1)) - photo.mean(axis=(0, 1))).max() < 2.0


def test_registry_scores_are_reproduced(shared_dir):
    """The quality `lipt models` shows is what `lipt eval` measures (Set5 for each SR model)."""
    from lipt_core.evaluate import EvalConfig, evaluate

    for scale in (2, 3, 4):
        entry = find_entry("sr", "lipt-tiny", scale=scale)
        config = EvalConfig(
            task="sr", data=shared_dir / "data" / "Set5" / "HR", model="lipt-tiny", scale=scale
        )
        measured = evaluate(config).mean("model").psnr
        assert measured == pytest.approx(entry.quality[f"Set5 x{scale} PSNR-Y"], abs=0.005)


def test_gray_photos_get_the_bundled_gray_model(tmp_path):
    from lipt_core.batch import RestoreRequest, build_restorer
    from lipt_core.pretrained import gray_entry

    entry = gray_entry("car", "lipt-tiny")
    assert entry is not None and entry.colors == 1
    assert gray_entry("sr", "lipt-tiny", scale=4) is None  # no gray SR model ships
    restorer = build_restorer(RestoreRequest(task="car", inputs=["photo.jpg"]))
    assert restorer.info.colors == 3
    assert restorer.gray_companion is not None
    assert restorer.gray_companion.info.source == f"{entry.name} (bundled)"
    # Weights of one's own are used for every image, gray or not.
    mine = build_restorer(RestoreRequest(task="car", inputs=["photo.jpg"], weights=str(entry.path)))
    assert mine.gray_companion is None and mine.info.colors == 1


def test_eval_of_gray_images_uses_the_gray_model(tmp_path):
    from PIL import Image

    from lipt_core.evaluate import EvalConfig, evaluate

    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (32, 40, 3), dtype=np.uint8)).save(tmp_path / "a.png")
    common = dict(task="car", data=tmp_path, model="lipt-tiny", quality=10)
    gray = evaluate(EvalConfig(**common, gray=True))
    assert "lipt-tiny-car-gray.safetensors" in gray.methods["model"]
    colour = evaluate(EvalConfig(**common))
    assert "lipt-tiny-car.safetensors" in colour.methods["model"]

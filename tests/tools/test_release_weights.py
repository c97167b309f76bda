"""tools/release_weights.py: new weights replace the shipped ones only once they are scored, so a
release that fails or is stopped midway leaves the shipped file matching its registry SHA-256."""

from __future__ import annotations

import json
import sys

import pytest

import lipt_core.pretrained as pretrained
from lipt_core.training import TrainConfig, train
from lipt_core.weights import sha256_of

from helpers import load_benchmark

release_weights = load_benchmark("release_weights", folder_name="tools")
NAME = "lipt-tiny-sr-x2"


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A project with one tiny trained run (`training-runs/tiny`) and its own weights folder."""
    from PIL import Image

    photos = tmp_path / "photos"
    photos.mkdir()
    for index in range(2):
        Image.effect_noise((48, 48), 40 + index).convert("RGB").save(photos / f"{index}.png")
    config = TrainConfig(
        task="sr",
        model="lipt-tiny",
        model_overrides={"channels": 8, "num_stages": 2},
        scale=2,
        train_dirs=[str(photos)],
        patch_size=16,
        batch_size=2,
        steps=1,
        workers=0,
        output=str(tmp_path / "training-runs" / "tiny"),
    )
    train(config)
    folder = tmp_path / "pretrained"
    folder.mkdir()
    monkeypatch.setattr(pretrained, "FOLDER", folder)
    monkeypatch.setattr(pretrained, "REGISTRY_FILE", folder / "registry.json")
    monkeypatch.setattr(release_weights, "ROOT", tmp_path)
    monkeypatch.setattr(release_weights, "RESULTS", tmp_path / "scores.json")
    monkeypatch.setattr(release_weights, "RELEASES", (release_weights.Release(NAME, "tiny"),))
    yield config, folder
    pretrained.registry.cache_clear()


def _release(monkeypatch, *extra: str) -> None:
    monkeypatch.setattr(sys, "argv", ["release_weights.py", "--only", NAME, *extra])
    release_weights.main()


def test_a_failed_evaluation_keeps_the_shipped_weights_and_entry(project, monkeypatch):
    config, folder = project
    _release(monkeypatch, "--no-eval")
    shipped = folder / f"{NAME}.safetensors"
    before, registry_before = shipped.read_bytes(), (folder / "registry.json").read_text()
    assert json.loads(registry_before)[0]["sha256"] == sha256_of(shipped)

    config.steps = 2
    train(config, resume=True)  # new weights to release

    def interrupted(entry, path):
        assert path.exists() and path != shipped
        raise KeyboardInterrupt

    monkeypatch.setattr(release_weights, "evaluate_release", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _release(monkeypatch)
    assert shipped.read_bytes() == before
    assert (folder / "registry.json").read_text() == registry_before
    assert sorted(p.name for p in folder.iterdir()) == [shipped.name, "registry.json"]

    scores = {"Set5 x2 PSNR-Y": 30.0}
    monkeypatch.setattr(release_weights, "evaluate_release", lambda entry, path: (scores, []))
    _release(monkeypatch)
    assert shipped.read_bytes() != before
    (entry,) = json.loads((folder / "registry.json").read_text())
    assert entry["sha256"] == sha256_of(shipped) and entry["quality"] == scores
    assert sorted(p.name for p in folder.iterdir()) == [shipped.name, "registry.json"]

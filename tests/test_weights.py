"""Weights from files and URLs: the download cache, SHA-256 pins, schemes, missing weights."""

from __future__ import annotations

import hashlib

import pytest
from restore_helpers import serve_folder

from lipt_core.errors import CheckpointError, UsageError
from lipt_core.weights import (
    default_weights,
    download,
    parse_url,
    resolve_weights,
)


@pytest.fixture
def served(tmp_path):
    folder = tmp_path / "site"
    folder.mkdir()
    data = bytes(range(256)) * 4096  # 1 MiB
    (folder / "model.safetensors").write_bytes(data)
    with serve_folder(folder) as (base, requests):
        yield base, requests, data, hashlib.sha256(data).hexdigest()


def test_pinned_download_is_cached_and_verified(served, tmp_path):
    base, requests, data, digest = served
    cache = tmp_path / "cache"
    progress = []
    url = f"{base}/model.safetensors#sha256={digest.upper()}"
    path = download(url, cache_dir=cache, progress=lambda d, t: progress.append((d, t)))
    assert path.read_bytes() == data and path.parent == cache
    assert progress[0] == (0, len(data)) and progress[-1] == (len(data), len(data))
    assert [p.name for p in cache.iterdir()] == [path.name]  # no temporary file left
    again = download(url, cache_dir=cache)
    assert again == path and len(requests) == 1  # served from the cache
    path.write_bytes(b"tampered")
    assert download(url, cache_dir=cache).read_bytes() == data and len(requests) == 2


def test_sha256_mismatch_keeps_nothing(served, tmp_path):
    base, _, _, _ = served
    cache = tmp_path / "cache"
    with pytest.raises(CheckpointError, match="SHA-256 mismatch"):
        download(f"{base}/model.safetensors#sha256={'0' * 64}", cache_dir=cache)
    assert list(cache.iterdir()) == []


def test_unpinned_download_and_http_errors(served, tmp_path):
    base, _, data, _ = served
    path = resolve_weights(f"{base}/model.safetensors", cache_dir=tmp_path)
    assert path.read_bytes() == data
    with pytest.raises(CheckpointError, match="HTTP 404"):
        download(f"{base}/missing.safetensors", cache_dir=tmp_path)


def test_cache_folder_from_the_environment(served, tmp_path, monkeypatch):
    base, _, data, _ = served
    monkeypatch.setenv("LIPT_CACHE_DIR", str(tmp_path / "env-cache"))
    path = download(f"{base}/model.safetensors")
    assert path.parent == tmp_path / "env-cache" and path.read_bytes() == data


def test_url_rules():
    assert parse_url("https://example.com/a.safetensors") == (
        "https://example.com/a.safetensors",
        None,
    )
    url, pin = parse_url("https://example.com/a.safetensors#sha256=" + "Ab" * 32)
    assert url == "https://example.com/a.safetensors" and pin == "ab" * 32
    assert parse_url("http://localhost:8000/a")[0] == "http://localhost:8000/a"
    with pytest.raises(UsageError, match="plain http"):
        parse_url("http://example.com/a.safetensors")
    with pytest.raises(UsageError, match="scheme"):
        parse_url("ftp://example.com/a.safetensors")
    with pytest.raises(UsageError, match="sha256="):
        parse_url("https://example.com/a.safetensors#md5=abc")


def test_local_paths_pass_through(tmp_path):
    path = tmp_path / "w.safetensors"
    path.write_bytes(b"x")
    assert resolve_weights(path) == path
    assert resolve_weights(str(path)) == path
    with pytest.raises(UsageError, match="no such weights file"):
        resolve_weights(tmp_path / "missing.safetensors")


@pytest.mark.parametrize("task", ["sr", "denoise", "car"])
def test_default_weights_are_the_bundled_ones(task):
    path = default_weights(task, "lipt-tiny")
    assert path.is_file() and path.parent.name == "pretrained"
    with pytest.raises(UsageError, match=f"no trained weights for {task}.* with lipt-small"):
        default_weights(task, "lipt-small")

"""Tests of `lipt_core.bench`: report structure, the time split, FLOPs, parameters, errors.

Timings are never asserted on (the machine is shared and noisy); only their consistency.
"""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from lipt_core import create_model
from lipt_core.bench import (
    CSV_COLUMNS,
    PARTS,
    SCHEMA,
    BenchConfig,
    BenchReport,
    categorized_modules,
    parse_size,
    run_benchmark,
    write_csv,
    write_json,
)
from lipt_core.errors import UsageError
from lipt_core.models.attention import NVSMSA
from lipt_core.models.hrm import HRM
from lipt_core.models.lipt import TailConv
from lipt_core.peers import create_peer
from lipt_core.peers.elan import LFE, ELANAttention
from lipt_core.peers.swinir import Mlp, WindowAttention

SMALL = dict(scale=2, size=(16, 16), runs=3, warmup=1, profile_runs=3, threads=1)


@pytest.fixture(scope="module")
def report() -> BenchReport:
    config = BenchConfig(
        models=("lipt-tiny", "swinir-light", "elan-light"), form="both", seed=3, **SMALL
    )
    return run_benchmark(config)


def test_models_and_labels(report: BenchReport) -> None:
    assert [r.label for r in report.models] == [
        "lipt-tiny (inference)",
        "lipt-tiny (training)",
        "swinir-light",
        "elan-light",
    ]
    assert [r.form for r in report.models] == ["inference", "training", None, None]
    assert [r.kind for r in report.models] == ["lipt", "lipt", "peer", "peer"]


def test_json_structure(report: BenchReport, tmp_path) -> None:
    path = tmp_path / "bench.json"
    write_json(report, path)
    data = json.loads(path.read_text())
    assert data["schema"] == SCHEMA
    assert set(data) >= {"environment", "settings", "units", "models", "restore", "flop_note"}
    assert data["restore"] is None
    env = data["environment"]
    assert env["device"] == "cpu" and env["precision"] == "fp32" and env["threads"] == 1
    settings = data["settings"]
    assert settings["input_size"] == {"width": 16, "height": 16}
    assert settings["output_size"] == {"width": 32, "height": 32}
    assert (settings["runs"], settings["warmup"], settings["profile_runs"]) == (3, 1, 3)
    assert data["units"]["time"] == "ms"
    assert "2 per multiply-add" in data["units"]["flops"]
    for model in data["models"]:
        assert set(model) >= {
            "label",
            "parameters",
            "flops",
            "gflop",
            "flops_by_part",
            "latency_ms",
            "profiled_ms",
            "profile_overhead_ms",
            "parts",
            "parts_sum_ms",
            "peak_memory_bytes",
            "megapixels_per_s",
        }
        latency = model["latency_ms"]
        assert latency["runs"] == len(latency["samples"]) == 3
        assert latency["p10"] <= latency["median"] <= latency["p90"]
        assert all(t > 0 for t in latency["samples"])
        assert set(model["parts"]) == set(PARTS) == set(model["flops_by_part"])
        for part in model["parts"].values():
            assert set(part) == {"ms", "percent", "scaled_ms", "samples"}
            assert len(part["samples"]) == 3
        assert model["profile_overhead_ms"] == pytest.approx(
            model["profiled_ms"]["median"] - latency["median"]
        )


def test_parts_sum_to_the_profiled_total(report: BenchReport) -> None:
    for r in report.models:
        # Each profiled run: MSA + MLP + Conv + Other is its measured total, by construction.
        for k, total in enumerate(r.profiled_ms.samples):
            assert sum(r.parts[p].samples[k] for p in PARTS) == pytest.approx(total, rel=1e-9)
        # The reported parts add up to the median profiled total (well within 10%).
        assert r.parts_sum_ms == pytest.approx(r.profiled_ms.median, rel=1e-9)
        assert sum(r.parts[p].percent for p in PARTS) == pytest.approx(100.0)
        assert sum(r.parts[p].scaled_ms for p in PARTS) == pytest.approx(r.latency_ms.median)
        assert all(r.parts[p].ms >= 0 for p in ("msa", "mlp", "conv"))


def test_split_follows_the_architectures(report: BenchReport) -> None:
    lipt, lipt_training, swinir, elan = report.models
    for r in (lipt, lipt_training, elan):  # no token MLP: HRM and LFE are convolutions
        assert r.parts["mlp"].ms == 0 and r.flops_by_part["mlp"] == 0
        assert r.parts["msa"].ms > 0 and r.parts["conv"].ms > 0
    assert swinir.parts["mlp"].ms > 0 and swinir.flops_by_part["mlp"] > 0
    assert swinir.parts["msa"].ms > 0 and swinir.parts["conv"].ms > 0


def test_peer_parameter_counts(report: BenchReport) -> None:
    assert report.model("swinir-light").parameters == 910_152  # x2, every tensor counted
    assert report.model("elan-light").parameters == 577_692
    inference = create_model("lipt-tiny", scale=2, inference=True)
    training = create_model("lipt-tiny", scale=2)
    assert report.model("lipt-tiny (inference)").parameters == sum(
        p.numel() for p in inference.parameters()
    )
    assert report.model("lipt-tiny (training)").parameters == sum(
        p.numel() for p in training.parameters()
    )


def test_flops_are_positive_and_split_exactly(report: BenchReport) -> None:
    for r in report.models:
        assert r.flops > 0
        assert sum(r.flops_by_part.values()) == r.flops
        assert r.flops_by_part["other"] == 0  # every matmul and conv lives in a part
    # The training form computes the same function with six branches per convolution.
    assert (
        report.model("lipt-tiny (training)").flops > 2 * report.model("lipt-tiny (inference)").flops
    )


def test_lipt_flops_match_an_analytic_count() -> None:
    """lipt-tiny x4 at 16x16 (no padding): convolutions counted by hand, 2 FLOPs per MAC."""
    report = run_benchmark(BenchConfig(models=("lipt-tiny",), **{**SMALL, "scale": 4, "runs": 1}))
    r = report.models[0]
    c, stages, pixels, area, colors, scale = 24, 8, 16 * 16, 64, 3, 4
    head = colors * c * 9
    hrms = stages * 3 * 2 * c * c * 9  # three HRMs of two 3x3 convs per stage
    tail = c * colors * scale**2 * 9
    assert r.flops_by_part["conv"] == 2 * pixels * (head + hrms + tail)
    # Attention: 1x1 projections (C -> 2C on the 4 map-computing stages, C -> C on the 4 others,
    # C -> C out), softmax(q q^T) v on (C/2)-channel halves, two halves per pixel. Whether the
    # reusing stages recompute q q^T (a fused kernel) or read stored maps is an implementation
    # choice: the count must lie between the two.
    projections = 4 * (2 * c * c + c * c) + 4 * (c * c + c * c)
    qqt = area * c  # per pixel: 2 halves x (C/2) channels x area keys
    stored = projections + 4 * qqt + stages * qqt
    recomputed = stored + 4 * qqt
    assert 2 * pixels * stored <= r.flops_by_part["msa"] <= 2 * pixels * recomputed
    assert r.gflop == pytest.approx(r.flops / 1e9)


def test_categorized_modules_are_outermost_and_complete() -> None:
    lipt = create_model("lipt-small", scale=2)
    parts = {name: part for name, _, part in categorized_modules(lipt)}
    assert parts["head"] == parts["tail"] == "conv"
    assert parts["body.0.stages.0.hrm_a"] == "conv"
    assert parts["body.0.stages.0.attn"] == "msa"
    assert not any(".attn." in name or ".hrm_a." in name for name in parts)  # no nesting
    kinds = {type(m) for _, m, _ in categorized_modules(lipt)}
    assert kinds == {torch.nn.Conv2d, TailConv, HRM, NVSMSA}

    swinir = create_peer("swinir-light", scale=2)
    found = categorized_modules(swinir)
    assert sum(isinstance(m, WindowAttention) and p == "msa" for _, m, p in found) == 24
    assert sum(isinstance(m, Mlp) and p == "mlp" for _, m, p in found) == 24
    assert not any(isinstance(m, torch.nn.Linear) for _, m, _ in found)  # inside MSA / MLP

    elan = create_peer("elan-light", scale=2)
    found = categorized_modules(elan)
    assert sum(isinstance(m, ELANAttention) and p == "msa" for _, m, p in found) == 24
    assert sum(isinstance(m, LFE) and p == "conv" for _, m, p in found) == 24


def test_csv_has_one_row_per_model(report: BenchReport, tmp_path) -> None:
    path = tmp_path / "bench.csv"
    write_csv(report, path)
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == list(CSV_COLUMNS)
    assert [row["label"] for row in rows] == [r.label for r in report.models]
    assert rows[2]["parameters"] == "910152"
    assert rows[0]["input_size"] == "16x16" and rows[0]["output_size"] == "32x32"


def test_output_size_gives_the_input_size() -> None:
    report = run_benchmark(
        BenchConfig(models=("lipt-tiny",), scale=4, output_size=(64, 32), runs=1, warmup=0)
    )
    assert report.input_size == (16, 8) and report.output_size == (64, 32)
    assert report.profile_runs == 1
    assert report.models[0].megapixels_per_s > 0


def test_threads_are_set_reported_and_restored() -> None:
    before = torch.get_num_threads()
    report = run_benchmark(BenchConfig(models=("lipt-tiny",), **{**SMALL, "runs": 1}))
    assert report.environment.threads == 1
    assert torch.get_num_threads() == before


def test_interleaving_keeps_the_samples_of_each_model(report: BenchReport) -> None:
    # Every model got exactly `runs` plain and `profile_runs` profiled samples.
    for r in report.models:
        assert len(r.latency_ms.samples) == report.runs
        assert len(r.profiled_ms.samples) == report.profile_runs
        assert r.latency_ms.median == pytest.approx(float(np.median(r.latency_ms.samples)))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"models": ("lipt-tiny", "rcan")}, "valid models: lipt-base, lipt-small, lipt-tiny"),
        ({"models": ()}, "no model"),
        ({"size": None, "output_size": (1281, 720)}, "not divisible by the scale"),
        ({"output_size": (64, 64)}, "not both"),
        ({"precision": "fp16"}, "fp16 is not supported on CPU"),
        ({"form": "deploy"}, "form must be one of"),
        ({"runs": 0}, "runs must be at least 1"),
        ({"scale": 5}, "scale must be one of"),
        ({"device": "tpu"}, "device must be"),
    ],
)
def test_usage_errors(changes: dict, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        run_benchmark(BenchConfig(**{**SMALL, "models": ("lipt-tiny",), **changes}))


def test_unknown_model_lists_every_valid_name() -> None:
    with pytest.raises(UsageError) as info:
        run_benchmark(BenchConfig(models=("swin",), **SMALL))
    for name in ("lipt-tiny", "lipt-small", "lipt-base", "swinir-light", "elan-light"):
        assert name in str(info.value)


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_cuda_without_cuda_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="CUDA is not available"):
        run_benchmark(BenchConfig(models=("lipt-tiny",), device="cuda", **SMALL))


def test_parse_size() -> None:
    assert parse_size("1280x720") == (1280, 720)
    assert parse_size(" 320 X 180 ") == (320, 180)
    for bad in ("1280", "0x10", "axb", "12x-3"):
        with pytest.raises(UsageError):
            parse_size(bad)


def test_restore_path_on_a_real_image(tmp_path) -> None:
    from lipt_core.imageio import Image, write_image

    path = tmp_path / "small.png"
    rng = np.random.default_rng(0)
    write_image(Image(pixels=rng.random((20, 28, 3), dtype=np.float32)), path)
    report = run_benchmark(
        BenchConfig(models=("elan-light", "lipt-tiny"), restore=path, **{**SMALL, "runs": 2})
    )
    restore = report.restore
    assert restore is not None and restore.model == "lipt-tiny"
    assert restore.input_size == (28, 20) and restore.output_size == (56, 40)
    assert restore.tiles >= 1
    runs = report.profile_runs
    assert len(restore.compute_ms.samples) == len(restore.end_to_end_ms.samples) == runs
    assert restore.compute_megapixels_per_s > 0 and restore.end_to_end_megapixels_per_s > 0
    assert json.loads(json.dumps(report.to_dict()))["restore"]["image"] == str(path)
    assert list(tmp_path.iterdir()) == [path]  # the restored files went to a temporary folder


def test_restore_needs_a_lipt_model(tmp_path) -> None:
    with pytest.raises(UsageError, match="LIPT preset"):
        run_benchmark(BenchConfig(models=("swinir-light",), restore=tmp_path / "x.png", **SMALL))


def test_training_still_works_after_a_benchmark() -> None:
    """The benchmark runs under inference_mode; what it leaves cached (LIPT's window indices for
    this size) must not break a later training forward of the same size."""
    run_benchmark(BenchConfig(models=("lipt-tiny",), **{**SMALL, "runs": 1}))
    model = create_model("lipt-tiny", scale=2, channels=8, num_stages=2).train()
    model(torch.rand(1, 3, 16, 16) * 255).mean().backward()
    assert model.head.weight.grad is not None

"""lipt_core.training: config, data, a few steps that lower the loss, checkpoints, exact resume,
conversion, and DistributedDataParallel on two CPU processes (gloo)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lipt_core.checkpoint import load_checkpoint, read_tensors
from lipt_core.errors import CheckpointError, UsageError
from lipt_core.training import (
    PatchDataset,
    TrainConfig,
    apply_assignments,
    config_to_toml,
    learning_rate,
    read_config_file,
    train,
)

TINY = {"channels": 8, "num_stages": 2}


def make_images(folder: Path, count: int = 3, size: int = 64) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:size, 0:size]
    for i in range(count):
        base = np.stack([x * 4 + 20 * i, y * 3, (x + y) * 2], axis=-1) % 256
        noise = rng.integers(0, 40, base.shape)
        image = np.clip(base + noise, 0, 255).astype(np.uint8)
        Image.fromarray(image).save(folder / f"img{i}.png")
    return folder


def tiny_config(tmp_path: Path, **changes) -> TrainConfig:
    values = dict(
        task="sr",
        model="lipt-tiny",
        model_overrides=dict(TINY),
        scale=2,
        train_dirs=[str(make_images(tmp_path / "train"))],
        patch_size=16,
        batch_size=4,
        steps=6,
        lr=2e-3,
        schedule="cosine",
        ema_decay=0.9,
        checkpoint_every=3,
        log_every=1,
        workers=0,
        seed=1,
        output=str(tmp_path / "run"),
    )
    values.update(changes)
    return TrainConfig(**values)


def test_config_roundtrip_and_overrides(tmp_path):
    config = tiny_config(tmp_path)
    path = tmp_path / "c.toml"
    path.write_text(config_to_toml(config))
    values = read_config_file(path)
    assert TrainConfig.from_dict(values) == config
    values = apply_assignments(values, ["steps=10", "model_overrides.channels=4", "task=car"])
    changed = TrainConfig.from_dict(values)
    assert changed.steps == 10 and changed.model_overrides["channels"] == 4
    assert changed.scale == 1  # denoise/car models do not upscale
    with pytest.raises(UsageError, match="unknown training setting"):
        TrainConfig.from_dict({"stepz": 3})
    with pytest.raises(UsageError, match="schedule"):
        TrainConfig(schedule="linear")


def test_schedules():
    cosine = TrainConfig(steps=100, lr=1.0, min_lr=0.0)
    assert learning_rate(cosine, 0) == pytest.approx(1.0)
    assert learning_rate(cosine, 50) == pytest.approx(0.5)
    multi = TrainConfig(steps=100, lr=1.0, schedule="multistep", milestones=[0.5], gamma=0.1)
    assert learning_rate(multi, 49) == 1.0 and learning_rate(multi, 50) == pytest.approx(0.1)


@pytest.mark.parametrize("task", ["sr", "denoise", "car"])
def test_dataset_is_a_function_of_the_index(tmp_path, task):
    from lipt_core.training import find_images, load_hr

    config = tiny_config(tmp_path, task=task)
    images = [load_hr(p, colors=3, max_side=4096) for p in find_images(config.train_dirs)]
    data = PatchDataset(images, config)
    low, high = data[7]
    assert high.shape == (3, 16 * config.scale, 16 * config.scale)
    assert low.shape == (3, 16, 16)
    assert torch.equal(data[7][0], low) and not torch.equal(data[8][1], high)


def test_large_photos_are_downscaled(tmp_path):
    from lipt_core.training import load_hr

    Image.new("RGB", (900, 300), (10, 20, 30)).save(tmp_path / "big.jpg")
    assert load_hr(tmp_path / "big.jpg", colors=3, max_side=400).shape == (100, 300, 3)
    assert load_hr(tmp_path / "big.jpg", colors=1, max_side=4096).shape == (300, 900, 1)


def test_training_lowers_the_loss(tmp_path):
    config = tiny_config(tmp_path, steps=40, checkpoint_every=100, lr=3e-3, ema_decay=0.0)
    result = train(config)
    first, last = np.mean(result.losses[:5]), np.mean(result.losses[-5:])
    assert last < 0.7 * first
    assert (Path(config.output) / "last.pt").exists()


def test_l2_loss_is_the_squared_error_of_the_same_first_batch(tmp_path):
    """Same seed, same init, same first batch: the first reported losses are mean |e| and
    mean e^2 of one error e on 0..255 pixels, so mean|e|^2 <= mean e^2 (Jensen); and L2 trains."""
    l1 = train(tiny_config(tmp_path, steps=1, output=str(tmp_path / "l1"))).losses[0]
    l2_run = train(
        tiny_config(
            tmp_path, steps=40, loss="l2", lr=3e-3, ema_decay=0.0, output=str(tmp_path / "l2")
        )
    )
    assert l1**2 <= l2_run.losses[0]
    assert l2_run.losses[0] > 10 * l1  # a squared error of tens of grey levels, not the L1
    assert np.mean(l2_run.losses[-5:]) < 0.5 * np.mean(l2_run.losses[:5])
    with pytest.raises(UsageError, match="loss must be one of l1, l2"):
        tiny_config(tmp_path, loss="charbonnier")


def test_checkpoint_resume_equals_straight_run_and_converts(tmp_path):
    straight = tiny_config(tmp_path, output=str(tmp_path / "straight"))
    full = train(straight)
    assert full.step == 6

    split = tiny_config(tmp_path, output=str(tmp_path / "split"))
    events = []
    first = train(split, max_steps_this_run=3, progress=events.append)
    assert first.step == 3 and first.interrupted is False
    assert {e.kind for e in events} >= {"start", "step", "checkpoint", "done"}
    run = Path(split.output)
    assert sorted(p.name for p in run.iterdir()) == ["config.toml", "last.pt"]  # no temp left
    second = train(split, resume=True)
    assert second.step == 6

    np.testing.assert_allclose(first.losses + second.losses, full.losses, rtol=1e-5)
    for (name, a), b in zip(
        full.model.state_dict().items(), second.model.state_dict().values(), strict=True
    ):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)

    # The checkpoint reads with weights_only, holds the EMA weights, and converts.
    contents, _ = read_tensors(run / "last.pt")
    assert contents["step"] == 6 and contents["task"] == "sr"
    model, metadata = load_checkpoint(run / "last.pt")
    assert metadata["task"] == "sr" and model.form == "training"
    from lipt_core.convert import convert_checkpoint

    report = convert_checkpoint(run / "last.pt", tmp_path / "x2.safetensors")
    assert report.agreement.relative_error < 1e-4
    fused, meta = load_checkpoint(tmp_path / "x2.safetensors")
    assert fused.form == "inference" and meta["task"] == "sr"


def test_validation_writes_best(tmp_path):
    val = make_images(tmp_path / "val", count=2, size=48)
    config = tiny_config(tmp_path, val_dir=str(val), val_every=2, steps=4, checkpoint_every=4)
    events = []
    result = train(config, progress=events.append)
    scores = [e.val_psnr for e in events if e.kind == "validation"]
    assert len(scores) == 2 and all(np.isfinite(scores))
    assert result.best_psnr == pytest.approx(max(scores))
    assert (Path(config.output) / "best.pt").exists()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, config: TrainConfig, out: str) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world),
    )
    torch.set_num_threads(1)
    result = train(config)
    params = {k: v for k, v in result.model.named_parameters()}
    torch.save({k: v.detach() for k, v in params.items()}, f"{out}/rank{rank}.pt")
    import torch.distributed as dist

    dist.destroy_process_group()


def test_ddp_two_cpu_processes(tmp_path):
    config = tiny_config(tmp_path, steps=2, checkpoint_every=2)
    torch.multiprocessing.spawn(
        _ddp_worker, args=(2, _free_port(), config, str(tmp_path)), nprocs=2, join=True
    )
    a = torch.load(tmp_path / "rank0.pt", weights_only=True)
    b = torch.load(tmp_path / "rank1.pt", weights_only=True)
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=0, msg=name)
    contents, _ = read_tensors(Path(config.output) / "last.pt")
    assert contents["step"] == 2
    # The ranks saw different data: the weights moved away from a single-process run's.
    single = train(tiny_config(tmp_path, steps=2, output=str(tmp_path / "single")))
    moved = [not torch.allclose(single.model.state_dict()[k], a[k]) for k in a if "delta" not in k]
    assert any(moved)


def test_example_configs_parse():
    from helpers import REPO_ROOT

    config = TrainConfig.from_dict(read_config_file(REPO_ROOT / "configs/train_lipt_tiny_x4.toml"))
    assert config.task == "sr" and config.scale == 4 and config.model == "lipt-tiny"
    release = {
        path.stem: TrainConfig.from_dict(read_config_file(path))
        for path in sorted((REPO_ROOT / "configs/release").glob("*.toml"))
    }
    assert set(release) == {"sr_x2", "sr_x3", "sr_x4", "denoise", "car", "car_gray"}
    assert all(c.form == "inference" and c.model == "lipt-tiny" for c in release.values())
    assert [release[f"sr_x{s}"].scale for s in (2, 3, 4)] == [2, 3, 4]
    assert release["sr_x2"].init_from == "training-runs/sr_x4/last.pt"
    assert (release["car_gray"].colors, release["car_gray"].init_from) == (
        1,
        "training-runs/car/last.pt",
    )
    wide = TrainConfig.from_dict(
        read_config_file(REPO_ROOT / "configs/experiments/car_gray_c48.toml")
    )
    assert (wide.model_overrides, wide.init_from) == (
        {"channels": 48},
        "training-runs/car_gray/last.pt",
    )
    for config in [*release.values(), wide]:  # never trained on the validation sets
        assert not any(name in d for d in config.train_dirs for name in ("Set5", "Set14", "B100"))


def test_inference_form_trains_and_converts(tmp_path):
    config = tiny_config(
        tmp_path, form="inference", steps=40, checkpoint_every=100, lr=3e-3, ema_decay=0.0
    )
    result = train(config)
    assert result.model.form == "inference"
    first, last = np.mean(result.losses[:5]), np.mean(result.losses[-5:])
    assert last < 0.7 * first
    model, _ = load_checkpoint(Path(config.output) / "last.pt")
    assert model.form == "inference"
    from lipt_core.convert import convert_checkpoint

    report = convert_checkpoint(Path(config.output) / "last.pt", tmp_path / "x2.safetensors")
    assert report.agreement.max_abs_error == 0.0


def test_bf16_on_the_cpu_trains(tmp_path, monkeypatch):
    # As the release runs resumed in bf16 on this machine: weights and Adam state stay fp32.
    monkeypatch.setattr("lipt_core.restore.cpu_has_native_bf16", lambda: True)
    config = tiny_config(
        tmp_path,
        form="inference",
        precision="bf16",
        steps=40,
        checkpoint_every=100,
        lr=3e-3,
        ema_decay=0.0,
    )
    result = train(config)
    first, last = np.mean(result.losses[:5]), np.mean(result.losses[-5:])
    assert last < 0.7 * first
    assert all(p.dtype == torch.float32 for p in result.model.parameters())


@pytest.mark.slow  # inductor compiles C++ (a compiler and about a minute)
def test_compiled_training_matches_eager_and_saves_plain_keys(tmp_path):
    eager = train(tiny_config(tmp_path, form="inference", output=str(tmp_path / "eager")))
    compiled = train(
        tiny_config(tmp_path, form="inference", compile=True, output=str(tmp_path / "compiled"))
    )
    np.testing.assert_allclose(compiled.losses, eager.losses, rtol=1e-3)
    contents, _ = read_tensors(tmp_path / "compiled" / "last.pt")
    assert not any("_orig_mod" in key for key in contents["state_dict"])
    assert "compile = true" in (tmp_path / "compiled" / "config.toml").read_text()
    model, _ = load_checkpoint(tmp_path / "compiled" / "last.pt")
    assert model.form == "inference"


def test_a_compile_failure_is_one_clear_error(tmp_path, monkeypatch):
    # As where no C++ compiler is installed: the failure surfaces at the first step.
    def failing_backend(graph, example_inputs):
        raise RuntimeError("no C++ compiler found")

    original = torch.compile
    monkeypatch.setattr(
        torch, "compile", lambda model, **kwargs: original(model, backend=failing_backend)
    )
    with pytest.raises(UsageError, match=r"compile = true: torch.compile failed \(.*no C\+\+"):
        train(tiny_config(tmp_path, form="inference", compile=True))


@pytest.mark.parametrize(
    ("precision", "native", "problem"),
    [("bf16", False, "would be emulated"), ("fp16", True, "needs a CUDA device")],
)
def test_cpu_precisions_that_would_not_pay_are_refused(
    tmp_path, monkeypatch, precision, native, problem
):
    monkeypatch.setattr("lipt_core.restore.cpu_has_native_bf16", lambda: native)
    with pytest.raises(UsageError, match=problem):
        train(tiny_config(tmp_path, precision=precision, steps=1))


def test_quality_power_reaches_the_jpeg_patches(tmp_path, monkeypatch):
    from lipt_core import degradations
    from lipt_core.training import PatchDataset

    image = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    compress = degradations.jpeg_compress

    def qualities_drawn(power):
        drawn = []
        monkeypatch.setattr(
            degradations, "jpeg_compress", lambda p, q: drawn.append(q) or compress(p, q)
        )
        config = tiny_config(tmp_path, task="car", scale=1, quality_power=power)
        dataset = PatchDataset([image], config)
        for index in range(400):
            dataset[index]
        return np.array(drawn)

    uniform, favoured = qualities_drawn(1.0), qualities_drawn(2.0)
    assert abs(np.mean(uniform <= 30) - 21 / 81) < 0.06
    assert abs(np.mean(favoured <= 30) - np.sqrt(21 / 81)) < 0.06
    with pytest.raises(UsageError, match="quality_power"):
        tiny_config(tmp_path, task="car", scale=1, quality_power=0)


def test_inference_form_starts_with_normalised_attention_inputs():
    """As the training form's BatchNorm would: q/v channels with mean 0, std 1 on the batch (the
    default initialisation gives attention logits of ~1e4: a hard argmax that cannot learn)."""
    from lipt_core import create_model
    from lipt_core.models.attention import NVSMSA
    from lipt_core.training import normalise_attention_inputs

    torch.manual_seed(0)
    model = create_model("lipt-tiny", scale=2, inference=True, **TINY).train()
    batch = torch.rand(3, 3, 24, 24) * 255
    normalise_attention_inputs(model, batch)
    assert model.training
    seen = []
    hooks = [
        m.project_inp.register_forward_hook(lambda mod, i, out: seen.append(out))
        for m in model.modules()
        if isinstance(m, NVSMSA)
    ]
    with torch.no_grad():
        model(batch)
    for hook in hooks:
        hook.remove()
    assert len(seen) == len(hooks) == 2
    for out in seen:
        torch.testing.assert_close(
            out.mean(dim=(0, 2, 3)), torch.zeros(out.shape[1]), atol=1e-4, rtol=0
        )
        torch.testing.assert_close(
            out.std(dim=(0, 2, 3)), torch.ones(out.shape[1]), atol=1e-4, rtol=0
        )


def test_warm_start_takes_every_matching_tensor(tmp_path):
    donor = tiny_config(tmp_path, output=str(tmp_path / "x2"), steps=2)
    train(donor)
    donor_state = load_checkpoint(tmp_path / "x2" / "last.pt")[0].state_dict()

    # x2 training form -> x3 inference form: folded first; the x3 tail is new.
    events = []
    x3 = tiny_config(
        tmp_path,
        output=str(tmp_path / "x3"),
        scale=3,
        form="inference",
        init_from=str(tmp_path / "x2" / "last.pt"),
        steps=1,
        lr=1e-12,
    )
    result = train(x3, progress=events.append)
    start = next(e for e in events if e.kind == "start").message
    assert "newly initialised: tail.weight, tail.bias" in start
    assert "not used: tail.weight" not in start  # same name, other shape: re-initialised
    from lipt_core.reparam import reparameterize

    folded = reparameterize(load_checkpoint(tmp_path / "x2" / "last.pt")[0]).state_dict()
    trained = result.model.state_dict()
    for key, value in trained.items():
        if not key.startswith("tail."):
            torch.testing.assert_close(value, folded[key], rtol=1e-5, atol=1e-6, msg=key)
    assert trained["tail.weight"].shape[0] != donor_state["tail.weight"].shape[0]

    # Resuming ignores init_from; a folded donor cannot seed a training-form run.
    again = train(x3, resume=True, progress=events.append)
    assert again.step == 1
    with pytest.raises(CheckpointError, match="holds the inference form"):
        train(tiny_config(tmp_path, output=str(tmp_path / "t"), init_from=x3.output + "/last.pt"))
    with pytest.raises(UsageError, match="form must be one of"):
        tiny_config(tmp_path, form="fused")


@pytest.mark.parametrize("scale", [1, 2])
def test_warm_start_turns_a_colour_donor_into_a_gray_network(tmp_path, scale):
    from lipt_core import create_model
    from lipt_core.training import warm_start

    donor_config = tiny_config(tmp_path, task="car" if scale == 1 else "sr", scale=scale, steps=2)
    train(donor_config)
    donor = load_checkpoint(tmp_path / "run" / "last.pt")[0].eval()
    gray = create_model("lipt-tiny", scale=scale, colors=1, **TINY).eval()
    summary = warm_start(gray, tmp_path / "run" / "last.pt")
    assert "converted from colour to gray" in summary and "newly initialised" not in summary

    x = torch.rand(2, 1, 24, 32, generator=torch.Generator().manual_seed(3)) * 255
    with torch.no_grad():
        colour = donor(x.repeat(1, 3, 1, 1))
        luma = (torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1) * colour).sum(1, keepdim=True)
        out = gray(x)
        fresh = create_model("lipt-tiny", scale=scale, colors=1, **TINY).eval()(x)
    # Exact away from the border; the head's zero padding sees the mean difference on the frame.
    change = (luma - torch.nn.functional.interpolate(x, scale_factor=scale)).norm()
    assert (out - luma).norm() < 0.02 * change
    assert (fresh - luma).norm() > 0.5 * change


def test_warm_start_widens_a_narrower_donor(tmp_path):
    from lipt_core import create_model
    from lipt_core.training import warm_start

    train(tiny_config(tmp_path, form="inference", steps=2))
    donor = load_checkpoint(tmp_path / "run" / "last.pt")[0].eval()
    wide = create_model("lipt-tiny", scale=2, inference=True, **{**TINY, "channels": 12}).eval()
    summary = warm_start(wide, tmp_path / "run" / "last.pt")
    assert "widened from 8 to 12 channels" in summary and "newly initialised" not in summary
    x = torch.rand(1, 3, 20, 28, generator=torch.Generator().manual_seed(5)) * 255
    with torch.no_grad():
        expected = donor(x)
        assert ((wide(x) - expected).norm() / expected.norm()).item() < 1e-3
    # Widening works on the plain convolutions only: a training-form network cannot be widened.
    train(tiny_config(tmp_path, output=str(tmp_path / "training-form"), steps=1))
    with pytest.raises(CheckpointError, match='widening it to 12 needs form = "inference"'):
        warm_start(
            create_model("lipt-tiny", scale=2, **{**TINY, "channels": 12}),
            tmp_path / "training-form" / "last.pt",
        )

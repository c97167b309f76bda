import re

import pytest
import torch
from safetensors.torch import save_file

from lipt_core import (
    CheckpointError,
    create_model,
    load_checkpoint,
    load_published,
    reparameterize,
    save_model,
)
from lipt_core.models.hrm import RepConv3x3

from helpers import SHARED, randomize_batchnorm, read_reference, relative_error

REFERENCE_FILES = sorted((SHARED / "reference").glob("lipt_*.safetensors"))


@pytest.fixture(scope="module")
def tiny_reference(shared_dir):
    return read_reference(shared_dir / "reference" / "lipt_tiny_x4_batch2.safetensors")


@pytest.mark.parametrize("path", REFERENCE_FILES, ids=lambda p: p.stem)
def test_reference_vectors_are_reproduced_in_both_forms(path, shared_dir):
    state, x, expected, config = read_reference(path)
    model = load_published(state, window_size=config["window_sizes"][0])
    assert model.config.scale == config["scale"]
    assert model.config.num_stages == config["m_elan"]
    assert model.config.channels == config["c_elan"]
    assert model.config.n_share == config["n_share"]
    assert model.config.r_expand == config["r_expand"]
    assert model.config.rgb_range == config["rgb_range"]
    with torch.no_grad():
        assert relative_error(model(x), expected) < 1e-4
        assert relative_error(reparameterize(model)(x), expected) < 1e-4


def test_reference_directory_is_not_empty(shared_dir):
    assert len(REFERENCE_FILES) >= 4


def test_window_is_not_guessed_from_shapes(shared_dir):
    state, x, expected, _ = read_reference(shared_dir / "reference" / "lipt_w16_x1.safetensors")
    with torch.no_grad():
        assert relative_error(load_published(state)(x), expected) > 1e-2  # default window 8
        assert relative_error(load_published(state, window_size=16)(x), expected) < 1e-4


@pytest.mark.parametrize(
    "wrapper", [None, "model_state_dict", "params", "params_ema", "state_dict"]
)
@pytest.mark.parametrize("prefix", ["", "module."])
def test_wrapped_checkpoint_files_load(tiny_reference, tmp_path, wrapper, prefix):
    state, x, expected, _ = tiny_reference
    prefixed = {prefix + k: v for k, v in state.items()}
    contents = prefixed if wrapper is None else {wrapper: prefixed, "epoch": 3}
    path = tmp_path / "model.pth"
    torch.save(contents, path)
    with torch.no_grad():
        assert relative_error(load_published(path)(x), expected) < 1e-4


def _published_fused_state(state):
    """The published conversion's output: each multi-branch conv replaced by `dbb_reparam`
    (project_inp's conv + BN left as they are, as the published script does)."""
    model = load_published(state)
    fused = {k: v for k, v in state.items() if ".dbb_" not in k or ".dbb_reparam." in k}
    for name, module in model.named_modules():
        if isinstance(module, RepConv3x3):
            block, stage, which, conv = re.match(
                r"body\.(\d+)\.stages\.(\d+)\.hrm_([acb])\.conv([01])", name
            ).groups()
            published = f"body.{block}.modules_hrm_{which}.lcs_{which}_{stage}.conv{conv}"
            kernel, bias = module.fused_kernel_bias()
            fused[f"{published}.dbb_reparam.weight"] = kernel
            fused[f"{published}.dbb_reparam.bias"] = bias
    return fused


def test_published_fused_convs_load(tiny_reference):
    state, x, expected, _ = tiny_reference
    model = load_published(_published_fused_state(state))
    assert not model.inference  # project_inp still has its BatchNorm
    with torch.no_grad():
        assert relative_error(model(x), expected) < 1e-4
        assert relative_error(reparameterize(model)(x), expected) < 1e-4


def test_fully_fused_published_model_loads_in_inference_form(tiny_reference):
    state, x, expected, _ = tiny_reference
    fused = _published_fused_state(state)
    for key in [k for k in fused if ".project_inp.0.weight" in k]:
        prefix = key[: -len(".0.weight")]
        scale = fused[f"{prefix}.1.weight"] / (fused[f"{prefix}.1.running_var"] + 1e-5).sqrt()
        fused[f"{prefix}.weight"] = fused.pop(f"{prefix}.0.weight") * scale.view(-1, 1, 1, 1)
        bias = fused.pop(f"{prefix}.0.bias")
        fused[f"{prefix}.bias"] = (bias - fused[f"{prefix}.1.running_mean"]) * scale + fused[
            f"{prefix}.1.bias"
        ]
        for field in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
            fused.pop(f"{prefix}.1.{field}")
    model = load_published(fused)
    assert model.inference
    with torch.no_grad():
        assert relative_error(model(x), expected) < 1e-4


def test_unplaceable_key_is_named(tiny_reference):
    state = dict(tiny_reference[0])
    state["body.0.modules_hrm_a.lcs_a_0.conv0.dbb_laplacian.scale"] = torch.zeros(16, 1, 1, 1)
    with pytest.raises(CheckpointError, match=r"dbb_laplacian\.scale"):
        load_published(state)


def test_shape_mismatch_is_named(tiny_reference):
    state = dict(tiny_reference[0])
    key = "body.1.modules_nvsm_sa.smmsa_0.project_out.weight"
    state[key] = torch.zeros(16, 8, 1, 1)
    with pytest.raises(CheckpointError, match=r"shape mismatch for 'body\.1\.stages\.0\.attn"):
        load_published(state)


def test_missing_key_is_named(tiny_reference):
    state = dict(tiny_reference[0])
    del state["body.1.modules_hrm_b.lcs_b_1.conv1.dbb_avg.conv.weight"]
    with pytest.raises(CheckpointError, match=r"missing key 'body\.1\.stages\.1\.hrm_b"):
        load_published(state)


def test_wrong_sobel_mask_is_refused(tiny_reference):
    state = dict(tiny_reference[0])
    key = "body.0.modules_hrm_a.lcs_a_0.conv0.dbb_sobelx.mask"
    state[key] = state[key] * 2  # a Sobel with 2 in the middle instead of sqrt(2), say
    with pytest.raises(CheckpointError, match="not the fixed Sobel kernel"):
        load_published(state)


def test_other_layouts_are_refused(tmp_path):
    path = tmp_path / "other.safetensors"
    save_file({"conv1.weight": torch.zeros(4, 3, 3, 3)}, str(path))
    with pytest.raises(CheckpointError, match="unknown layout"):
        load_checkpoint(path)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "no such file"),
        (b"", "empty file"),
        (b"hello, this is text\n", "not a checkpoint"),
        # An image passed by mistake: the weights-only unpickler fails on its first byte, which
        # is garbage, not a forbidden object.
        (b"\x89PNG\r\n\x1a\n" + bytes(64), "not a checkpoint"),
        (b"\xff\xd8\xff\xe0" + bytes(64), "not a checkpoint"),
    ],
    ids=["missing", "empty", "text", "png", "jpeg"],
)
def test_unreadable_files_get_one_line_errors(tmp_path, content, message):
    path = tmp_path / "weights.pth"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(CheckpointError, match=message) as error:
        load_checkpoint(path)
    assert "\n" not in str(error.value) and str(path) in str(error.value)


class Payload:
    pass


def test_pickled_objects_are_never_unpickled(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "extra": Payload()}, path)
    with pytest.raises(CheckpointError, match="refusing to unpickle"):
        load_checkpoint(path)


def test_our_format_round_trips_in_both_forms(tmp_path):
    torch.manual_seed(0)
    model = randomize_batchnorm(create_model("lipt-tiny", scale=3, colors=1, channels=8)).eval()
    x = torch.rand(1, 1, 10, 12) * 255
    for form in (model, reparameterize(model)):
        path = tmp_path / f"{form.form}.safetensors"
        save_model(form, path, task="sr")
        loaded, metadata = load_checkpoint(path)
        assert loaded.config == model.config and loaded.form == form.form
        assert metadata["task"] == "sr" and metadata["form"] == form.form
        with torch.no_grad():
            torch.testing.assert_close(loaded(x), form(x))
    assert not list(tmp_path.glob(".*.tmp"))


def test_saving_is_reproducible_to_the_byte(tmp_path):
    # safetensors writes its metadata in hash order; the registry's SHA-256 must name the weights
    # and metadata, not the order one write happened to choose.
    model = reparameterize(create_model("lipt-tiny", scale=2, channels=8).eval())
    metadata = {f"key{i}": f"value {i}" for i in range(12)}
    blobs = set()
    for attempt in range(4):
        path = tmp_path / f"{attempt}.safetensors"
        save_model(model, path, task="sr", **metadata)
        blobs.add(path.read_bytes())
    assert len(blobs) == 1
    loaded, read_back = load_checkpoint(tmp_path / "0.safetensors")
    assert {k: read_back[k] for k in metadata} == metadata
    for name, tensor in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor)

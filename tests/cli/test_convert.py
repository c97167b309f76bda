import json

import pytest
import torch
from safetensors import safe_open
from typer.testing import CliRunner

from lipt_cli.app import app
from lipt_core import create_model, load_checkpoint, save_model
from lipt_core.convert import convert_checkpoint

from helpers import new_file_mode, randomize_batchnorm, read_reference, relative_error

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args], terminal_width=200)


@pytest.fixture(scope="module")
def published_checkpoint(shared_dir, tmp_path_factory):
    state, x, expected, _ = read_reference(shared_dir / "reference" / "lipt_tiny_x2.safetensors")
    path = tmp_path_factory.mktemp("published") / "LIPT_tiny_x2.pth"
    # The published training script's layout: wrapped, with DataParallel's prefix.
    torch.save({"epoch": 7, "model_state_dict": {f"module.{k}": v for k, v in state.items()}}, path)
    return path, x, expected


def test_convert_published_checkpoint(published_checkpoint, tmp_path):
    source, x, expected = published_checkpoint
    output = tmp_path / "tiny_x2.safetensors"
    result = run("convert", source, output)
    assert result.exit_code == 0, result.output
    assert "relative" in result.output and "training -> inference" in result.output
    model, metadata = load_checkpoint(output)
    assert model.inference and metadata["form"] == "inference"
    assert metadata["architecture"] == "LIPT" and metadata["task"] == "sr"
    config = json.loads(metadata["config"])
    assert config["scale"] == 2 and config["channels"] == 24 and config["num_stages"] == 8
    with torch.no_grad():
        assert relative_error(model(x), expected) < 1e-4
    with safe_open(str(output), framework="pt") as handle:
        assert not any("branch" in key or ".bn." in key for key in handle.keys())  # noqa: SIM118 (not a dict)
    assert output.stat().st_mode & 0o777 == new_file_mode()  # not a temporary file's 0600
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_convert_our_training_checkpoint_as_pt(tmp_path):
    torch.manual_seed(0)
    model = randomize_batchnorm(create_model("lipt-tiny", scale=1, channels=8)).eval()
    source = tmp_path / "train.pt"
    torch.save(
        {
            "lipt_config": model.config.to_dict(),
            "state_dict": model.state_dict(),
            "task": "denoise",
        },
        source,
    )
    report = convert_checkpoint(source, tmp_path / "denoise.safetensors")
    assert report.task == "denoise" and report.agreement.relative_error < 1e-5
    fused, metadata = load_checkpoint(tmp_path / "denoise.safetensors")
    assert metadata["task"] == "denoise"
    x = torch.rand(1, 3, 11, 9) * 255
    with torch.no_grad():
        assert relative_error(fused(x), model(x)) < 1e-5


def test_refuses_to_write_a_model_that_does_not_match(published_checkpoint, tmp_path, monkeypatch):
    import lipt_core.convert as convert_module

    real = convert_module.reparameterize

    def broken(model):
        fused = real(model)
        with torch.no_grad():
            fused.tail.bias += 1.0
        return fused

    monkeypatch.setattr(convert_module, "reparameterize", broken)
    output = tmp_path / "bad.safetensors"
    result = run("convert", published_checkpoint[0], output)
    assert result.exit_code == 1
    assert "nothing written" in result.output and not output.exists()
    assert "Traceback" not in result.output
    forced = run("convert", published_checkpoint[0], output, "--force")
    assert forced.exit_code == 0 and output.exists()


def test_existing_output_is_kept_unless_overwrite(published_checkpoint, tmp_path):
    output = tmp_path / "out.safetensors"
    output.write_bytes(b"keep me")
    result = run("convert", published_checkpoint[0], output)
    assert result.exit_code == 2 and "already exists" in result.output
    assert output.read_bytes() == b"keep me"
    assert run("convert", published_checkpoint[0], output, "--overwrite").exit_code == 0


class Payload:
    pass


def _write_bad_inputs(tmp_path):
    text = tmp_path / "notes.pth"
    text.write_text("these are not weights\n")
    pickled = tmp_path / "pickled.pt"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "optimizer": Payload()}, pickled)
    other = tmp_path / "resnet.safetensors"
    save_model_like = {"conv1.weight": torch.zeros(4, 3, 3, 3)}
    from safetensors.torch import save_file

    save_file(save_model_like, str(other))
    return {
        "missing": (tmp_path / "nope.pth", "no such file"),
        "text": (text, "not a checkpoint"),
        "pickle": (pickled, "refusing to unpickle"),
        "layout": (other, "unknown layout"),
        "folder": (tmp_path, "is a folder"),
    }


@pytest.mark.parametrize("case", ["missing", "text", "pickle", "layout", "folder"])
def test_bad_inputs_get_one_line_naming_the_file(tmp_path, case):
    source, message = _write_bad_inputs(tmp_path)[case]
    result = run("convert", source, tmp_path / "out.safetensors")
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert message in lines[0] and str(source) in lines[0]
    assert not (tmp_path / "out.safetensors").exists()


def test_shape_mismatch_is_reported(published_checkpoint, tmp_path):
    contents = torch.load(published_checkpoint[0], weights_only=True)
    key = "module.body.0.modules_nvsm_sa.smmsa_1.project_out.weight"
    contents["model_state_dict"][key] = torch.zeros(24, 12, 1, 1)
    source = tmp_path / "bad_shape.pth"
    torch.save(contents, source)
    result = run("convert", source, tmp_path / "out.safetensors")
    assert result.exit_code == 1
    assert "shape mismatch" in result.output and "project_out.weight" in result.output


def test_output_must_be_safetensors(published_checkpoint, tmp_path):
    result = run("convert", published_checkpoint[0], tmp_path / "out.pth")
    assert result.exit_code == 2 and ".safetensors" in result.output


def test_onnx_export_agrees_with_pytorch_at_two_sizes(tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    torch.manual_seed(0)
    model = create_model("lipt-tiny", scale=3, channels=8, num_stages=2).eval()
    source = tmp_path / "tiny.safetensors"
    save_model(model, source, task="sr")
    report = convert_checkpoint(
        source, tmp_path / "tiny_fused.safetensors", onnx_output=tmp_path / "tiny.onnx"
    )
    assert (tmp_path / "tiny.onnx").stat().st_mode & 0o777 == new_file_mode()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    shapes = [shape for shape, _ in report.onnx_agreement]
    assert len(set(shapes)) == 2  # two sizes: the export is dynamic
    assert all(agreement.relative_error < 1e-3 for _, agreement in report.onnx_agreement)

"""`evaluate`: the published protocols, anchored on the standard bicubic table."""

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from lipt_core import create_model, save_model
from lipt_core.degradations import bicubic_upscale
from lipt_core.errors import InputError, UsageError
from lipt_core.evaluate import EvalConfig, EvalModel, evaluate, list_images
from lipt_core.metrics import psnr

# The bicubic rows of the standard SR tables (shared/spec/published-results.md): Y channel,
# border = scale. SSIM for Set5 from the same tables (VDSR, EDSR, ...).
BICUBIC_PSNR = {
    ("Set5", 2): 33.66,
    ("Set5", 3): 30.39,
    ("Set5", 4): 28.42,
    ("Set14", 2): 30.24,
    ("Set14", 3): 27.55,
    ("Set14", 4): 26.00,
    ("B100", 2): 29.56,
    ("B100", 3): 27.21,
    ("B100", 4): 25.96,
}
BICUBIC_SSIM_SET5 = {2: 0.9299, 3: 0.8682, 4: 0.8104}


def bicubic_report(shared_dir, dataset, scale, **options):
    data = shared_dir / "data" / dataset / "HR"
    config = EvalConfig(task="sr", data=data, scale=scale, baseline="bicubic", **options)
    return evaluate(config)


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_set5_bicubic_anchor(shared_dir, scale):
    report = bicubic_report(shared_dir, "Set5", scale)
    mean = report.mean("baseline")
    assert abs(mean.psnr - BICUBIC_PSNR["Set5", scale]) < 0.01, mean
    assert abs(mean.ssim - BICUBIC_SSIM_SET5[scale]) < 0.0005, mean
    assert report.dataset == "Set5" and len(report.images) == 5
    assert report.protocol["crop_border"] == scale


def test_set14_x4_bicubic_anchor(shared_dir):
    """The tables' bicubic rows score Set14's one gray image (bridge) as it is."""
    as_luma = bicubic_report(shared_dir, "Set14", 4, gray_as_luma=True)
    assert abs(as_luma.mean("baseline").psnr - BICUBIC_PSNR["Set14", 4]) < 0.01
    assert [r.name for r in as_luma.images if r.gray] == ["bridge"]
    # Read as RGB (the EDSR/ELAN convention of model tables), bridge's Y is 16 + 219/255 v:
    # its errors shrink by 219/255, which lifts the Set14 mean by about 1.32 dB / 14.
    as_rgb = bicubic_report(shared_dir, "Set14", 4)
    lift = as_rgb.mean("baseline").psnr - as_luma.mean("baseline").psnr
    assert abs(lift - 20 * math.log10(255 / 219) / 14) < 0.01
    assert as_rgb.notes and "--gray-as-luma" in as_rgb.notes[0]


def test_b100_x4_bicubic_anchor(shared_dir):
    report = bicubic_report(shared_dir, "B100", 4)
    assert len(report.images) == 100
    assert abs(report.mean("baseline").psnr - BICUBIC_PSNR["B100", 4]) < 0.01


@pytest.mark.slow
@pytest.mark.parametrize(
    ("dataset", "scale"), [("Set14", 2), ("Set14", 3), ("B100", 2), ("B100", 3)]
)
def test_more_bicubic_anchors(shared_dir, dataset, scale):
    report = bicubic_report(shared_dir, dataset, scale, gray_as_luma=True)
    assert abs(report.mean("baseline").psnr - BICUBIC_PSNR[dataset, scale]) < 0.01


class Recorder:
    """A fake SR model: records its inputs and upscales them with MATLAB bicubic on RGB."""

    def __init__(self, scale):
        self.inputs = []
        self.restorer = EvalModel(name="recorder", scale=scale, colors=3, run=self.run)

    def run(self, image):
        self.inputs.append(image)
        return bicubic_upscale(image.astype(np.float64), self.restorer.scale)


def test_model_sees_the_edsr_lr_and_is_scored_on_y(shared_dir):
    folder = shared_dir / "data" / "Set5"
    recorder = Recorder(4)
    report = evaluate(EvalConfig(task="sr", data=folder / "HR"), restorer=recorder.restorer)
    assert set(report.methods) == {"baseline", "model"}  # the baseline runs with any model
    for image, result in zip(recorder.inputs, report.images, strict=True):
        lr_file = folder / "LR_bicubic" / "X4" / f"{result.name}x4.png"
        expected = np.asarray(Image.open(lr_file).convert("RGB"))
        assert image.dtype == np.float32 and np.array_equal(image, expected)
    # Bicubic on the uint8 RGB LR, scored on Y, is within a few hundredths of a dB of the
    # tables' Y-channel bicubic.
    model, baseline = report.mean("model"), report.mean("baseline")
    assert 0 < model.psnr - baseline.psnr < 0.03
    assert report.gain["psnr"] == pytest.approx(model.psnr - baseline.psnr)


def write_images(folder, shapes, *, seed=0, gray=False):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for index, (height, width) in enumerate(shapes):
        coarse = rng.uniform(20, 235, (height // 4 + 1, width // 4 + 1, 3))
        big = np.kron(coarse, np.ones((4, 4, 1)))[:height, :width]
        pixels = np.clip(big + rng.normal(0, 6, big.shape), 0, 255).round().astype(np.uint8)
        image = Image.fromarray(pixels).convert("L") if gray else Image.fromarray(pixels)
        image.save(folder / f"img{index}.png")
    return folder


@pytest.fixture
def small_set(tmp_path):
    return write_images(tmp_path / "small" / "HR", [(34, 27), (24, 40)])


def test_denoise_identity_baseline(small_set, tmp_path):
    report = evaluate(EvalConfig(task="denoise", data=small_set, baseline="identity", sigma=25))
    assert report.protocol["seed"] == 0 and report.protocol["sigma"] == 25
    assert report.protocol["channel"] == "RGB" and report.dataset == "small"
    # sigma 25 gives 20.17 dB before rounding and clipping; mid-range images barely clip.
    assert 19.9 < report.mean("baseline").psnr < 20.6
    assert [(r.height, r.width) for r in report.images] == [(34, 27), (24, 40)]  # no crop
    again = evaluate(EvalConfig(task="denoise", data=small_set, baseline="identity", sigma=25))
    assert again.mean("baseline") == report.mean("baseline")
    other = evaluate(EvalConfig(task="denoise", data=small_set, baseline="identity", seed=1))
    assert other.mean("baseline") != report.mean("baseline")
    gray = evaluate(EvalConfig(task="denoise", data=small_set, baseline="identity", gray=True))
    assert gray.protocol["channel"].startswith("gray")


def test_denoise_with_an_identity_model_equals_the_baseline(small_set):
    restorer = EvalModel(name="same", scale=1, colors=3, run=lambda x: x)
    report = evaluate(EvalConfig(task="denoise", data=small_set, sigma=15), restorer=restorer)
    assert report.mean("model") == report.mean("baseline")
    assert report.gain == {"psnr": 0.0, "ssim": 0.0}


def test_car_identity_baseline(small_set):
    report = evaluate(EvalConfig(task="car", data=small_set, baseline="identity", quality=10))
    assert report.metrics == ("psnr", "ssim", "psnr_b")
    assert report.protocol["quality"] == 10 and report.protocol["channel"].startswith("gray")
    for result in report.images:
        scores = result.scores["baseline"]
        assert scores.psnr_b <= scores.psnr
    better = evaluate(EvalConfig(task="car", data=small_set, baseline="identity", quality=50))
    assert better.mean("baseline").psnr > report.mean("baseline").psnr
    rgb = evaluate(EvalConfig(task="car", data=small_set, baseline="identity", gray=False))
    assert rgb.protocol["channel"] == "RGB"


def test_an_rgb_model_on_gray_images(small_set):
    """--color gray with an RGB model: three equal channels in, the output's luma scored."""
    calls = []

    def run(x):
        calls.append(x.shape)
        return x

    same = EvalModel(name="same", scale=1, colors=3, run=run, task="car")
    report = evaluate(EvalConfig(task="car", data=small_set, gray=True), restorer=same)
    assert all(shape[2] == 3 for shape in calls) and report.protocol["channel"].startswith("gray")
    for result in report.images:  # identity: the luma of equal channels is the gray image
        assert result.scores["model"].psnr == pytest.approx(result.scores["baseline"].psnr)
    gray_model = EvalModel(name="g", scale=1, colors=1, run=run, task="car")
    with pytest.raises(UsageError, match="has 1 channel: not RGB"):
        evaluate(EvalConfig(task="car", data=small_set, gray=False), restorer=gray_model)


def test_gray_sources(tmp_path):
    folder = write_images(tmp_path / "gray", [(32, 32)], gray=True)
    sr = evaluate(EvalConfig(task="sr", data=folder, scale=2, baseline="bicubic"))
    assert sr.images[0].gray and sr.notes
    luma = evaluate(
        EvalConfig(task="sr", data=folder, scale=2, baseline="bicubic", gray_as_luma=True)
    )
    # Scored as RGB the luma range is 219/255 of the gray one: errors shrink by that much.
    lift = sr.mean("baseline").psnr - luma.mean("baseline").psnr
    assert abs(lift - 20 * math.log10(255 / 219)) < 0.1
    car = evaluate(EvalConfig(task="car", data=folder, baseline="identity", gray=False))
    assert car.images[0].scores["baseline"].psnr > 0


def test_checkpoint_model_end_to_end(small_set, tmp_path):
    torch.manual_seed(0)
    weights = tmp_path / "tiny_x2.safetensors"
    save_model(create_model("lipt-tiny", scale=2, channels=8).eval(), weights, task="sr")
    report = evaluate(EvalConfig(task="sr", data=small_set, weights=weights))
    assert report.protocol["scale"] == 2  # from the model
    assert report.methods["model"].endswith("(tiny_x2.safetensors)")
    assert [(r.height, r.width) for r in report.images] == [(34, 26), (24, 40)]  # mod-crop
    data = json.loads(json.dumps(report.to_dict()))
    assert set(data["mean"]) == {"baseline", "model"} and set(data["gain"]) == {"psnr", "ssim"}
    assert data["images"][0]["scores"]["model"]["psnr"] == report.images[0].scores["model"].psnr
    with pytest.raises(UsageError, match="upscales x2"):
        evaluate(EvalConfig(task="sr", data=small_set, weights=weights, scale=3))
    with pytest.raises(UsageError, match="'sr' model"):
        evaluate(EvalConfig(task="denoise", data=small_set, weights=weights))
    with pytest.raises(UsageError, match="not a lipt-small network"):
        evaluate(EvalConfig(task="sr", data=small_set, weights=weights, model="lipt-small"))
    ensemble = evaluate(EvalConfig(task="sr", data=small_set, weights=weights, ensemble=True))
    assert ensemble.methods["model"].endswith("x8 ensemble")
    assert ensemble.mean("model").psnr != report.mean("model").psnr
    assert ensemble.mean("baseline").psnr == report.mean("baseline").psnr


def test_a_preset_alone_evaluates_its_bundled_weights(small_set):
    report = evaluate(EvalConfig(task="sr", data=small_set, scale=4, model="lipt-tiny"))
    assert "lipt-tiny-sr-x4.safetensors" in report.methods["model"]
    assert np.isfinite(report.mean("model").psnr)  # quality: tests/test_pretrained.py
    with pytest.raises(UsageError, match=r"no trained weights for sr x4 with lipt-small"):
        evaluate(EvalConfig(task="sr", data=small_set, scale=4, model="lipt-small"))
    with pytest.raises(UsageError, match="unknown model"):
        evaluate(EvalConfig(task="sr", data=small_set, scale=4, model="lipt-huge"))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"task": "sr", "scale": 4}, "nothing to evaluate"),
        ({"task": "sr", "baseline": "bicubic"}, "needs --scale"),
        ({"task": "sr", "scale": 4, "baseline": "identity"}, "baseline of --task sr"),
        ({"task": "denoise", "baseline": "bicubic"}, "baseline of --task denoise"),
        ({"task": "sr", "scale": 4, "baseline": "bicubic", "sigma": 25}, "--sigma applies"),
        ({"task": "denoise", "baseline": "identity", "quality": 10}, "--quality applies"),
        ({"task": "denoise", "baseline": "identity", "scale": 2}, "--scale applies"),
        ({"task": "denoise", "baseline": "identity", "sigma": 300}, "0..255"),
        ({"task": "car", "baseline": "identity", "quality": 101}, "1..100"),
        ({"task": "sr", "scale": 2, "baseline": "bicubic", "gray": True}, "--color applies"),
        ({"task": "car", "baseline": "identity", "gray_as_luma": True}, "--gray-as-luma"),
        ({"task": "deblur", "baseline": "identity"}, "unknown task"),
        ({"task": "denoise", "baseline": "identity", "ensemble": True}, "--ensemble needs a model"),
    ],
)
def test_inconsistent_requests(small_set, options, message):
    with pytest.raises(UsageError, match=message):
        evaluate(EvalConfig(data=small_set, **options))


def test_unusable_data(tmp_path):
    with pytest.raises(InputError, match="no such file or folder"):
        list_images(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("not an image")
    with pytest.raises(InputError, match="no images"):
        evaluate(EvalConfig(task="sr", data=tmp_path / "empty", scale=2, baseline="bicubic"))
    tiny = write_images(tmp_path / "tiny", [(12, 12)])
    with pytest.raises(InputError, match=r"img0\.png"):
        evaluate(EvalConfig(task="sr", data=tiny, scale=4, baseline="bicubic"))
    with pytest.raises(InputError, match="no such file"):
        evaluate(EvalConfig(task="sr", data=tiny, weights=tmp_path / "none.safetensors"))


def test_single_file_and_progress(small_set):
    seen = []
    report = evaluate(
        EvalConfig(task="sr", data=small_set / "img1.png", scale=2, baseline="bicubic"),
        progress=lambda done, total, name: seen.append((done, total, name)),
    )
    assert seen == [(1, 1, "img1.png")] and report.dataset == "img1.png"
    assert report.images[0].scores["baseline"].psnr == pytest.approx(report.mean("baseline").psnr)
    assert psnr(np.zeros((4, 4)), np.zeros((4, 4))) == math.inf

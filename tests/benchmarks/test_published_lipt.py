"""The published-LIPT speed baseline reproduces the published reference vectors."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from helpers import load_benchmark, relative_error

ROOT = Path(__file__).resolve().parents[2]
REFERENCE_DIR = ROOT.parent / "shared" / "reference"
REFERENCE_FILES = sorted(REFERENCE_DIR.glob("lipt_*.safetensors")) if REFERENCE_DIR.is_dir() else []
TOLERANCE = 1e-4

pytestmark = pytest.mark.skipif(
    not REFERENCE_FILES,
    reason=f"published reference vectors not found in {REFERENCE_DIR}",
)


published = load_benchmark("published_lipt")


@pytest.mark.parametrize("path", REFERENCE_FILES, ids=lambda p: p.stem)
def test_training_form_matches_reference(path: Path) -> None:
    model, inp, out, _ = published.load_reference(path)
    assert not model.training
    with torch.no_grad():
        ours = model(inp)
    assert ours.shape == out.shape
    assert relative_error(ours, out) < TOLERANCE


@pytest.mark.parametrize("fold_project_inp", [False, True], ids=["published-deploy", "full-fold"])
@pytest.mark.parametrize("path", REFERENCE_FILES, ids=lambda p: p.stem)
def test_deploy_form_matches_reference(path: Path, fold_project_inp: bool) -> None:
    model, inp, out, _ = published.load_reference(path)
    deployed = published.deploy(copy.deepcopy(model), fold_project_inp=fold_project_inp)
    names = [n for n, _ in deployed.named_modules()]
    assert not any(n.endswith(("dbb_origin", "dbb_sobelx", "dbb_1x1_kxk")) for n in names)
    assert any(n.endswith("dbb_reparam") for n in names)
    has_bn = any(isinstance(m, torch.nn.BatchNorm2d) for m in deployed.modules())
    assert has_bn != fold_project_inp
    with torch.no_grad():
        ours = deployed(inp)
    assert ours.shape == out.shape
    assert relative_error(ours, out) < TOLERANCE


def test_sparse_mask_offsets() -> None:
    mask = published.sparse_mask(8)
    assert mask.int().tolist() == [1, 0, 1, 0, 1, 0, 1, 0, 0, 1, 0, 1, 0, 1, 0, 1]
    offsets16 = torch.nonzero(published.sparse_mask(16)).flatten().tolist()
    assert offsets16 == [0, 2, 4, 6, 8, 10, 12, 14, 17, 19, 21, 23, 25, 27, 29, 31]

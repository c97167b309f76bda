"""Reading and writing LIPT weights: our safetensors format and the published layout.

Nothing here unpickles arbitrary objects: `.pt`/`.pth` files go through
`torch.load(weights_only=True)`, everything else is safetensors.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save
from torch import Tensor, nn

from lipt_core.errors import CheckpointError
from lipt_core.files import write_bytes
from lipt_core.models.config import RGB_MEAN, LIPTConfig
from lipt_core.models.hrm import SOBEL_X, SOBEL_Y
from lipt_core.models.lipt import LIPT

FORMAT_NAME = "lipt"
FORMAT_VERSION = "1"
# Wrappers training scripts put around a state dict, most preferred first (an EMA of the weights
# is what such scripts evaluate).
WRAPPER_KEYS = ("params_ema", "params", "model_state_dict", "state_dict", "model")
DEFAULT_WINDOW_SIZE = 8


# ---------------------------------------------------------------------------------------------
# Files


def read_tensors(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, str]]:
    """Load a checkpoint file without unpickling code: (contents, safetensors metadata)."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such file")
    if path.is_dir():
        raise CheckpointError(f"{path}: is a folder, not a checkpoint")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: empty file, not a checkpoint")
    if _looks_like_safetensors(path):
        try:
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as handle:
                metadata = dict(handle.metadata() or {})
            return dict(load_file(str(path))), metadata
        except (SafetensorError, OSError, ValueError) as error:
            raise CheckpointError(f"{path}: damaged safetensors file ({error})") from None
    try:
        contents = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        # "Unsupported operand" is the weights-only unpickler failing on bytes that are no
        # pickle at all (an image passed by mistake); its other refusals are objects it won't run.
        if "Unsupported operand" in str(error):
            raise CheckpointError(
                f"{path}: not a checkpoint (neither safetensors nor a PyTorch file)"
            ) from None
        if "weights_only" in str(error) or "Unsupported" in str(error):
            raise CheckpointError(
                f"{path}: holds pickled objects other than plain tensors; refusing to unpickle "
                "them (convert it with the code that made it, or save only its state dict)"
            ) from None
        raise CheckpointError(f"{path}: not a checkpoint (unreadable pickle)") from None
    except Exception as error:  # torch.load fails on garbage in many ways (KeyError, EOFError...)
        detail = str(error).strip().splitlines()[0] if str(error).strip() else ""
        detail = detail if len(detail) < 120 and not isinstance(error, KeyError) else ""
        reason = f" ({detail})" if detail else ""
        raise CheckpointError(f"{path}: not a checkpoint{reason}") from None
    if not isinstance(contents, Mapping):
        raise CheckpointError(f"{path}: not a checkpoint (holds a {type(contents).__name__})")
    return dict(contents), {}


def _looks_like_safetensors(path: Path) -> bool:
    with path.open("rb") as handle:
        head = handle.read(9)
    if len(head) < 9:
        return False
    header_length = int.from_bytes(head[:8], "little")
    return head[8:9] == b"{" and 0 < header_length <= path.stat().st_size


def unwrap_state_dict(contents: Mapping[str, Any], *, source: str = "checkpoint") -> dict:
    """The state dict inside a training checkpoint, without any DataParallel `module.` prefix."""
    state = contents
    for key in WRAPPER_KEYS:
        inner = contents.get(key)
        if isinstance(inner, Mapping) and any(isinstance(v, Tensor) for v in inner.values()):
            state = inner
            break
    tensors = {k: v for k, v in state.items() if isinstance(v, Tensor)}
    if not tensors:
        raise CheckpointError(f"{source}: no tensors found (keys: {_preview(state.keys())})")
    if all(k.startswith("module.") for k in tensors):
        tensors = {k[len("module.") :]: v for k, v in tensors.items()}
    return tensors


def _preview(keys: Any, limit: int = 6) -> str:
    keys = list(keys)
    shown = ", ".join(map(str, keys[:limit]))
    return shown + (f", ... ({len(keys)} in all)" if len(keys) > limit else "")


# ---------------------------------------------------------------------------------------------
# Published layout -> ours

_HRM = re.compile(r"body\.(\d+)\.modules_hrm_([acb])\.lcs_\2_(\d+)\.conv([01])\.(.+)$")
_ATTN = re.compile(r"body\.(\d+)\.modules_nvsm_sa\.smmsa_(\d+)\.(.+)$")
_BN_FIELDS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
_BRANCHES = {
    "dbb_origin.conv.weight": "branch_3x3.conv.weight",
    "dbb_1x1.conv.weight": "branch_1x1.conv.weight",
    "dbb_avg.conv.weight": "branch_avg.conv.weight",
    "dbb_1x1_kxk.idconv1.weight": "branch_1x1_3x3.delta",
    "dbb_1x1_kxk.conv2.weight": "branch_1x1_3x3.conv.weight",
    **{f"dbb_origin.bn.{f}": f"branch_3x3.bn.{f}" for f in _BN_FIELDS},
    **{f"dbb_1x1.bn.{f}": f"branch_1x1.bn.{f}" for f in _BN_FIELDS},
    **{f"dbb_avg.bn.bn.{f}": f"branch_avg.bn.{f}" for f in _BN_FIELDS},
    **{f"dbb_avg.avgbn.{f}": f"branch_avg.pool_bn.{f}" for f in _BN_FIELDS},
    **{f"dbb_1x1_kxk.bn1.bn.{f}": f"branch_1x1_3x3.bn1.{f}" for f in _BN_FIELDS},
    **{f"dbb_1x1_kxk.bn2.{f}": f"branch_1x1_3x3.bn2.{f}" for f in _BN_FIELDS},
    **{
        f"dbb_sobel{a}.{p}": f"branch_sobel_{a}.{p}"
        for a in "xy"
        for p in ("k0", "b0", "scale", "bias")
    },
    "dbb_reparam.weight": "weight",
    "dbb_reparam.bias": "bias",
}
_ATTN_PARTS = {
    "project_inp.0.weight": "project_inp.conv.weight",
    "project_inp.0.bias": "project_inp.conv.bias",
    **{f"project_inp.1.{f}": f"project_inp.bn.{f}" for f in _BN_FIELDS},
    # Fully deployed models have project_inp as a plain conv.
    "project_inp.weight": "project_inp.weight",
    "project_inp.bias": "project_inp.bias",
    "project_out.weight": "project_out.weight",
    "project_out.bias": "project_out.bias",
}
_TOP = {
    "head.0.weight": "head.weight",
    "head.0.bias": "head.bias",
    "tail.0.weight": "tail.weight",
    "tail.0.bias": "tail.bias",
}
_SOBEL_MASKS = {"x": SOBEL_X, "y": SOBEL_Y}
# Constant tensors of the published model that ours computes instead: checked, then dropped.
_MEAN_SHIFT_KEYS = ("sub_mean.weight", "sub_mean.bias", "add_mean.weight", "add_mean.bias")


def map_published_key(key: str) -> str | None:
    """Our name for a published key; None for the constants ours computes (checked elsewhere).

    Raises CheckpointError naming the key when it has no place in LIPT.
    """
    if key in _TOP:
        return _TOP[key]
    if key in _MEAN_SHIFT_KEYS:
        return None
    if match := _HRM.match(key):
        block, which, stage, conv, rest = match.groups()
        if rest in ("dbb_sobelx.mask", "dbb_sobely.mask"):
            return None
        if rest in _BRANCHES:
            return f"body.{block}.stages.{stage}.hrm_{which}.conv{conv}.{_BRANCHES[rest]}"
    elif match := _ATTN.match(key):
        block, stage, rest = match.groups()
        if rest in _ATTN_PARTS:
            return f"body.{block}.stages.{stage}.attn.{_ATTN_PARTS[rest]}"
    raise CheckpointError(f"unexpected key {key!r}: it has no place in the LIPT network")


def is_published_layout(state: Mapping[str, Tensor]) -> bool:
    return "head.0.weight" in state and any(".modules_nvsm_sa." in k for k in state)


def _check_constants(state: Mapping[str, Tensor], source: str) -> float:
    """Check the published fixed tensors (mean shift, Sobel masks); return rgb_range."""
    for key in _MEAN_SHIFT_KEYS:
        if key not in state:
            raise CheckpointError(f"{source}: missing key {key!r}")
    colors = state["sub_mean.weight"].shape[0]
    eye = torch.eye(colors).view(colors, colors, 1, 1)
    for key in ("sub_mean.weight", "add_mean.weight"):
        if state[key].shape != eye.shape or not torch.allclose(state[key].float(), eye):
            raise CheckpointError(f"{source}: {key!r} is not the identity the network assumes")
    sub, add = state["sub_mean.bias"].double(), state["add_mean.bias"].double()
    if colors != 3:
        raise CheckpointError(f"{source}: 'sub_mean.bias' has {colors} channels; expected 3")
    ranges = -sub / torch.tensor(RGB_MEAN, dtype=torch.float64)
    rgb_range = float(ranges.mean())
    if not torch.allclose(ranges, torch.full_like(ranges, rgb_range), rtol=1e-4) or rgb_range <= 0:
        raise CheckpointError(f"{source}: 'sub_mean.bias' is not -rgb_range * the DIV2K mean")
    if not torch.allclose(add, -sub, rtol=1e-5):
        raise CheckpointError(f"{source}: 'add_mean.bias' is not the negation of 'sub_mean.bias'")
    for key, value in state.items():
        if key.endswith((".dbb_sobelx.mask", ".dbb_sobely.mask")):
            expected = torch.tensor(_SOBEL_MASKS[key[-6]])
            if value.shape[1:] != (1, 3, 3) or not torch.allclose(
                value.float(), expected.expand_as(value), atol=1e-6
            ):
                raise CheckpointError(f"{source}: {key!r} is not the fixed Sobel kernel")
    return round(rgb_range, 4)


def infer_published_config(
    state: Mapping[str, Tensor],
    *,
    window_size: int = DEFAULT_WINDOW_SIZE,
    source: str = "checkpoint",
) -> LIPTConfig:
    """Every hyperparameter the tensors of a published-layout state dict reveal."""
    for key in ("head.0.weight", "tail.0.weight"):
        if key not in state:
            raise CheckpointError(f"{source}: missing key {key!r}")
    channels, colors = state["head.0.weight"].shape[:2]
    tail_out = state["tail.0.weight"].shape[0]
    scale = math.isqrt(tail_out // colors) if tail_out % colors == 0 else 0
    if scale * scale * colors != tail_out:
        raise CheckpointError(
            f"{source}: 'tail.0.weight' has {tail_out} outputs, not colors * scale^2"
        )
    stages: dict[int, set[int]] = {}
    for key in state:
        if match := _ATTN.match(key):
            stages.setdefault(int(match[1]), set()).add(int(match[2]))
    if not stages:
        raise CheckpointError(f"{source}: no attention weights ('body.N.modules_nvsm_sa.*')")
    num_blocks = max(stages) + 1
    n_share = len(stages[0]) - 1
    for block in range(num_blocks):
        if stages.get(block) != set(range(1 + n_share)):
            raise CheckpointError(
                f"{source}: block {block} has attention stages {sorted(stages.get(block, []))}, "
                f"expected {list(range(1 + n_share))}"
            )
    prefix = "body.0.modules_hrm_a.lcs_a_0.conv0."
    hidden_key = next(
        (
            prefix + k
            for k in ("dbb_origin.conv.weight", "dbb_reparam.weight")
            if prefix + k in state
        ),
        None,
    )
    if hidden_key is None:
        raise CheckpointError(f"{source}: missing key {prefix + 'dbb_origin.conv.weight'!r}")
    hidden = state[hidden_key].shape[0]
    if hidden % channels:
        raise CheckpointError(
            f"{source}: {hidden_key!r} has {hidden} outputs, not a multiple of {channels} channels"
        )
    rgb_range = _check_constants(state, source)
    if colors != 3:
        raise CheckpointError(f"{source}: published LIPT is RGB only, got {colors} colors")
    return LIPTConfig(
        num_stages=num_blocks * (1 + n_share),
        channels=channels,
        n_share=n_share,
        r_expand=hidden // channels,
        window_size=window_size,
        scale=scale,
        colors=colors,
        rgb_range=rgb_range,
    )


def _replace_module(model: nn.Module, dotted: str, new: nn.Module) -> None:
    parent_name, _, child = dotted.rpartition(".")
    setattr(model.get_submodule(parent_name), child, new)


def _plain_conv_like(fusable: nn.Module) -> nn.Conv2d:
    return nn.Conv2d(
        fusable.in_channels,
        fusable.out_channels,
        fusable.kernel_size,
        padding=fusable.kernel_size // 2,
    )


def model_from_state(
    state: Mapping[str, Tensor], config: LIPTConfig, *, source: str = "checkpoint"
) -> LIPT:
    """Build a LIPT for `config` holding `state` (our key layout).

    Each fusable convolution takes the form the checkpoint has: already fused (plain `weight` and
    `bias`) or multi-branch. The model is in inference form when every one of them is fused.
    """
    from lipt_core.models.hrm import Fusable

    model = LIPT(config, inference=False)
    all_fused = True
    for name, module in list(model.named_modules()):
        if isinstance(module, Fusable):
            if f"{name}.weight" in state:
                _replace_module(model, name, _plain_conv_like(module))
            else:
                all_fused = False
    if all_fused:
        model = LIPT(config, inference=True)
    expected = model.state_dict()
    for key, value in state.items():
        if key not in expected:
            raise CheckpointError(f"{source}: unexpected key {key!r} for {_describe(config)}")
        if tuple(value.shape) != tuple(expected[key].shape):
            raise CheckpointError(
                f"{source}: shape mismatch for {key!r}: checkpoint {tuple(value.shape)}, "
                f"network {tuple(expected[key].shape)}"
            )
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    if missing:
        raise CheckpointError(f"{source}: missing key {missing[0]!r} ({len(missing)} missing)")
    model.load_state_dict({**expected, **state})
    return model.eval()


def _describe(config: LIPTConfig) -> str:
    return (
        f"LIPT({config.num_stages} stages, {config.channels} channels, n_share {config.n_share}, "
        f"x{config.scale})"
    )


def load_published(
    source: str | os.PathLike | Mapping[str, Any], *, window_size: int | None = None
) -> LIPT:
    """A LIPT holding weights in the authors' published layout, in eval mode.

    `source` is a path (`.pt`/`.pth` read with `weights_only=True`, or `.safetensors`) or a state
    dict: raw, or wrapped in `model_state_dict` / `params` / `params_ema` / `state_dict`, with or
    without the DataParallel `module.` prefix; training form or with `dbb_reparam` fused convs.
    Every hyperparameter is read off the tensors except the window, which shapes do not reveal
    (`window_size`, default 8).
    """
    name = str(source) if not isinstance(source, Mapping) else "state dict"
    contents = read_tensors(source)[0] if not isinstance(source, Mapping) else source
    state = unwrap_state_dict(contents, source=name)
    if not is_published_layout(state):
        raise CheckpointError(
            f"{name}: unknown layout: not the published LIPT layout "
            f"(keys: {_preview(sorted(state))})"
        )
    config = infer_published_config(
        state, window_size=window_size or DEFAULT_WINDOW_SIZE, source=name
    )
    ours = {}
    for key, value in state.items():
        try:
            target = map_published_key(key)
        except CheckpointError as error:
            raise CheckpointError(f"{name}: {error}") from None
        if target is not None:
            ours[target] = value
    return model_from_state(ours, config, source=name)


# ---------------------------------------------------------------------------------------------
# Our format


def model_metadata(model: LIPT, *, task: str | None = None, **extra: str) -> dict[str, str]:
    config = model.config
    metadata = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "architecture": "LIPT",
        "config": config.to_json(),
        "form": model.form,
        "scale": str(config.scale),
        "colors": str(config.colors),
        **{k: str(v) for k, v in extra.items()},
    }
    if task:
        metadata["task"] = task
    return metadata


def save_model(
    model: LIPT, path: str | os.PathLike, *, task: str | None = None, **extra: str
) -> None:
    """Write `model` as safetensors with its metadata, atomically (temp file, then rename).
    The same weights and metadata always give the same bytes, so a file's SHA-256 names them."""
    path = Path(path)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    metadata = model_metadata(model, task=task, **extra)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes(path, _sorted_header(save(state, metadata=metadata)))


def _sorted_header(blob: bytes) -> bytes:
    """`blob` (safetensors) with its JSON header's keys sorted: safetensors writes the metadata
    in hash order, which changes from one write to the next. Tensor offsets count from the end
    of the header, so the data stays as it is; the header is padded with spaces to a multiple
    of 8 bytes, as safetensors pads it."""
    size = int.from_bytes(blob[:8], "little")
    header = json.loads(blob[8 : 8 + size])
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text + blob[8 + size :]


def load_checkpoint(
    source: str | os.PathLike, *, window_size: int | None = None
) -> tuple[LIPT, dict[str, str]]:
    """Load any LIPT checkpoint: ours (safetensors with metadata, or a `.pt` dict holding
    `lipt_config`) or the published layout. Returns the model (eval mode) and its metadata."""
    name = str(source)
    contents, metadata = read_tensors(source)
    if metadata.get("format") == FORMAT_NAME:
        try:
            config = LIPTConfig.from_dict(json.loads(metadata["config"]))
        except (KeyError, ValueError, TypeError) as error:
            raise CheckpointError(f"{name}: damaged lipt metadata ({error})") from None
        if window_size:
            config = config.replace(window_size=window_size)
        return model_from_state(contents, config, source=name), metadata
    if isinstance(contents.get("lipt_config"), Mapping):
        config = LIPTConfig.from_dict(dict(contents["lipt_config"]))
        if window_size:
            config = config.replace(window_size=window_size)
        state = unwrap_state_dict(contents, source=name)
        extra = {k: str(v) for k, v in contents.items() if isinstance(v, str | int | float)}
        return model_from_state(state, config, source=name), extra
    state = unwrap_state_dict(contents, source=name)
    if is_published_layout(state):
        model = load_published(state, window_size=window_size)
        return model, {"source_layout": "published"}
    raise CheckpointError(
        f"{name}: unknown layout: neither a lipt checkpoint nor the published LIPT layout "
        f"(keys: {_preview(sorted(state))})"
    )

"""LIPT hyperparameters, the named presets, and `create_model`."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lipt_core.errors import UsageError

if TYPE_CHECKING:
    from lipt_core.models.lipt import LIPT

# Mean of the DIV2K training images, per RGB channel, in [0, 1]: the published network subtracts
# it (times rgb_range) before the head and adds it back after the tail.
RGB_MEAN = (0.4488, 0.4371, 0.4040)
# The published code supports only RGB. For 1-channel (grayscale) models we use the BT.601 luma of
# that RGB mean, so a gray image made from an RGB one sees the same offset the RGB model would.
LUMA_BT601 = (0.299, 0.587, 0.114)
GRAY_MEAN = (sum(w * m for w, m in zip(LUMA_BT601, RGB_MEAN, strict=True)),)

VALID_SCALES = (1, 2, 3, 4)
VALID_COLORS = (1, 3)


@dataclass(frozen=True)
class LIPTConfig:
    """Every hyperparameter of a LIPT network.

    Names map to the published configuration as: num_stages = m_elan, channels = c_elan,
    n_share = n_share, r_expand = r_expand, window_size = window_sizes[0] (= [1]).
    """

    num_stages: int = 8
    channels: int = 24
    n_share: int = 1
    r_expand: int = 1
    window_size: int = 8
    scale: int = 4
    colors: int = 3
    rgb_range: float = 255.0

    def __post_init__(self) -> None:
        problems = []
        if self.scale not in VALID_SCALES:
            problems.append(f"scale must be one of {VALID_SCALES}, got {self.scale}")
        if self.colors not in VALID_COLORS:
            problems.append(f"colors must be one of {VALID_COLORS}, got {self.colors}")
        if self.channels < 2 or self.channels % 2:
            problems.append(f"channels must be even and >= 2, got {self.channels}")
        if self.n_share < 0:
            problems.append(f"n_share must be >= 0, got {self.n_share}")
        if self.num_stages < 1 or self.num_stages % (1 + self.n_share):
            problems.append(
                f"num_stages ({self.num_stages}) must be a positive multiple of "
                f"1 + n_share ({1 + self.n_share})"
            )
        if self.r_expand < 1:
            problems.append(f"r_expand must be >= 1, got {self.r_expand}")
        if self.window_size < 2 or self.window_size % 2:
            problems.append(f"window_size must be even and >= 2, got {self.window_size}")
        if self.rgb_range <= 0:
            problems.append(f"rgb_range must be positive, got {self.rgb_range}")
        if problems:
            raise UsageError("invalid LIPT configuration: " + "; ".join(problems))

    @property
    def num_blocks(self) -> int:
        return self.num_stages // (1 + self.n_share)

    @property
    def pixel_mean(self) -> tuple[float, ...]:
        """The mean subtracted from the input, in pixel units (times rgb_range)."""
        mean = RGB_MEAN if self.colors == 3 else GRAY_MEAN
        return tuple(self.rgb_range * m for m in mean)

    def replace(self, **changes: Any) -> LIPTConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> LIPTConfig:
        check_hyperparameter_names(values)
        return cls(**values)


def check_hyperparameter_names(names: Any) -> None:
    """Refuse names that are not LIPTConfig fields, listing the valid ones."""
    known = {f.name for f in dataclasses.fields(LIPTConfig)}
    unknown = sorted(set(names) - known)
    if unknown:
        raise UsageError(
            f"unknown LIPT hyperparameter(s) {', '.join(unknown)}; "
            f"valid: {', '.join(sorted(known))}"
        )


# The named presets, as published (tiny; "light" = the paper's LIPT-Small; base). Scale and
# colors are chosen per model, so the presets leave them at their defaults.
PRESETS: dict[str, LIPTConfig] = {
    "lipt-tiny": LIPTConfig(num_stages=8, channels=24, n_share=1, r_expand=1, window_size=8),
    "lipt-small": LIPTConfig(num_stages=10, channels=64, n_share=1, r_expand=1, window_size=8),
    "lipt-base": LIPTConfig(num_stages=22, channels=144, n_share=0, r_expand=1, window_size=16),
}


def preset_config(name: str, **overrides: Any) -> LIPTConfig:
    """The configuration of preset `name`, with any hyperparameter overridden."""
    try:
        base = PRESETS[name]
    except KeyError:
        raise UsageError(
            f"unknown model {name!r}; valid models: {', '.join(sorted(PRESETS))}"
        ) from None
    check_hyperparameter_names(overrides)
    return base.replace(**overrides)


def create_model(
    name: str, *, scale: int, colors: int = 3, inference: bool = False, **overrides: Any
) -> LIPT:
    """Build preset `name` (see `PRESETS`) with random weights.

    `inference=False` gives the training form (multi-branch HRM convolutions with BatchNorm,
    project_inp conv + BatchNorm); `inference=True` the plain-convolution form that
    `reparameterize` produces. Any hyperparameter of `LIPTConfig` can be overridden by keyword.
    """
    from lipt_core.models.lipt import LIPT

    config = preset_config(name, scale=scale, colors=colors, **overrides)
    return LIPT(config, inference=inference)

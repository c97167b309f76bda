import pytest

from lipt_core import PRESETS, LIPTConfig, UsageError, create_model


def test_presets_are_the_published_configurations():
    assert PRESETS["lipt-tiny"].num_stages == 8 and PRESETS["lipt-tiny"].channels == 24
    assert PRESETS["lipt-small"].num_stages == 10 and PRESETS["lipt-small"].channels == 64
    base = PRESETS["lipt-base"]
    assert (base.num_stages, base.channels, base.n_share, base.window_size) == (22, 144, 0, 16)
    assert PRESETS["lipt-tiny"].n_share == PRESETS["lipt-small"].n_share == 1


def test_unknown_preset_lists_the_valid_ones():
    with pytest.raises(UsageError, match="lipt-base, lipt-small, lipt-tiny"):
        create_model("lipt-huge", scale=2)


def test_overrides_reach_the_model():
    model = create_model("lipt-tiny", scale=3, colors=1, channels=8, num_stages=4, window_size=4)
    assert model.config == LIPTConfig(
        num_stages=4, channels=8, n_share=1, r_expand=1, window_size=4, scale=3, colors=1
    )
    assert len(model.body) == 2 and len(model.body[0].stages) == 2


def test_unknown_override_is_refused():
    with pytest.raises(UsageError, match="unknown LIPT hyperparameter"):
        create_model("lipt-tiny", scale=2, heads=4)


@pytest.mark.parametrize(
    "changes",
    [{"scale": 5}, {"colors": 2}, {"channels": 7}, {"num_stages": 3}, {"window_size": 5}],
)
def test_invalid_configurations_fail_loudly(changes):
    with pytest.raises(UsageError, match="invalid LIPT configuration"):
        LIPTConfig(**changes)


def test_gray_models_use_the_luma_of_the_rgb_mean():
    gray = LIPTConfig(colors=1)
    rgb = LIPTConfig(colors=3)
    luma = 0.299 * rgb.pixel_mean[0] + 0.587 * rgb.pixel_mean[1] + 0.114 * rgb.pixel_mean[2]
    assert gray.pixel_mean == pytest.approx((luma,))


def test_config_round_trips_through_json():
    config = LIPTConfig(scale=2, channels=32, window_size=16)
    assert LIPTConfig.from_dict(config.to_dict()) == config

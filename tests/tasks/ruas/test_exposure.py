"""The global exposure step (tasks/ruas/exposure.py): its formula, monotonicity and limits."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings, strategies as st

from nasflow.tasks.ruas.exposure import (
    ExposurePolicy, highlight, linear_to_srgb, shoulder, spot_highlight, srgb_to_linear)
from nasflow.tasks.ruas.model import WholeImageStep

SCENE = ExposurePolicy(target=0.35, headroom_ev=0.5)
KEY = ExposurePolicy(target=0.46)
SPOT = ExposurePolicy(target=0.35, headroom_ev=0.0, highlight_spot=3)  # ruas-auto's
REINHARD = ExposurePolicy(target=0.18, metering="reinhard")


def _textured(mean: float, seed: int = 0, size: tuple[int, int] = (48, 64)) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(1, 3, *size, generator=g)
    return (x / x.mean() * mean).clamp(0, 1)


def test_key_policy_brings_a_dark_image_to_the_target_and_never_darkens() -> None:
    dark = _textured(0.05)
    assert KEY(dark).mean().item() == pytest.approx(0.46, rel=0.02)
    bright = _textured(0.6)
    assert torch.equal(KEY(bright), bright)  # at or above the target: left exactly as it is


def test_scene_policy_leaves_a_normally_exposed_photo_alone() -> None:
    photo = _textured(0.4)
    assert torch.equal(SCENE(photo), photo)


def test_highlights_limit_the_gain_to_the_headroom() -> None:
    night = torch.full((1, 3, 40, 40), 0.03)
    night[..., :8, :8] = 1.0  # lights: 4 % of the pixels at full scale
    gain = SCENE.gain(night).item()
    assert gain == pytest.approx(2 ** 0.5, rel=1e-5)
    # the same scene with its lights at a quarter of full scale may be lifted two stops more
    dim = night.clone()
    dim[..., :8, :8] = 0.25
    assert SCENE.gain(dim).item() == pytest.approx(4 * 2 ** 0.5, rel=1e-5)


def test_the_bias_multiplies_the_gain_even_for_bright_photos() -> None:
    for image in (_textured(0.05), _textured(0.5)):
        g0 = SCENE.gain(image)
        assert torch.allclose(SCENE.gain(image, exposure_bias=1.0), 2 * g0)
        assert torch.allclose(SCENE.gain(image, exposure_bias=-1.0), g0 / 2)
    step = WholeImageStep(SCENE)
    dark = _textured(0.03)
    assert torch.allclose(step(dark, exposure_bias=1.0), (SCENE(dark) * 2).clamp(0, 1), atol=1e-6)


def test_one_gain_for_all_channels() -> None:
    card = torch.tensor([0.08, 0.12, 0.1]).view(1, 3, 1, 1).expand(1, 3, 16, 16).contiguous()
    out = SCENE(card)
    ratios = out.mean(dim=(2, 3)) / card.mean(dim=(2, 3))
    assert torch.allclose(ratios, ratios[:, :1].expand_as(ratios))


def test_reinhard_metering_brings_the_log_average_linear_luminance_to_the_key() -> None:
    dark = _textured(0.1)
    out = srgb_to_linear(REINHARD(dark))
    luminance = (out * torch.tensor([0.2126, 0.7152, 0.0722]).view(1, 3, 1, 1)).sum(dim=1)
    clipped = (out >= 1).any(dim=1)
    assert not clipped.any()
    log_average = torch.exp(torch.log(luminance + 0.5 / 255 / 12.92).mean()).item()
    assert log_average == pytest.approx(0.18, rel=0.03)  # delta is not scaled by the gain
    # the gain is one of linear light: a grey card's colour ratios are kept in linear light
    card = torch.tensor([0.05, 0.08, 0.06]).view(1, 3, 1, 1).expand(1, 3, 4, 4)
    lin_in, lin_out = srgb_to_linear(card), srgb_to_linear(REINHARD(card))
    assert torch.allclose(lin_out / lin_in, (lin_out / lin_in)[:, :1].expand_as(lin_in), rtol=1e-4)


def test_srgb_round_trip() -> None:
    x = torch.linspace(0, 1, 1001)
    assert torch.allclose(linear_to_srgb(srgb_to_linear(x)), x, atol=1e-6)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), light=st.floats(0.0, 0.2), scales=st.lists(st.floats(0.01, 1.0), min_size=2,
                                                                               max_size=6))
def test_reinhard_output_is_monotone_in_a_linear_exposure(seed: int, light: float, scales: list[float]) -> None:
    """Exposure is a gain of linear light: the same scene exposed longer never comes out darker."""
    scene = srgb_to_linear(_textured(0.4, seed, (24, 24)))
    scene[..., : int(24 * light) + 1, :3] = 1.0
    for policy in (REINHARD, ExposurePolicy(target=0.18, headroom_ev=0.0, metering="reinhard")):
        means = [policy(linear_to_srgb(scene * s)).mean().item() for s in sorted(scales)]
        assert all(b >= a - 1e-5 for a, b in zip(means, means[1:])), (policy, sorted(scales), means)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), light=st.floats(0.0, 0.2), scales=st.lists(st.floats(0.02, 1.0), min_size=2,
                                                                               max_size=6))
def test_output_mean_is_monotone_in_the_input_exposure(seed: int, light: float, scales: list[float]) -> None:
    """The same scene at several exposures: a brighter exposure never gives a darker result."""
    scene = _textured(0.3, seed, (24, 24))
    scene[..., : int(24 * light) + 1, :3] = 1.0  # some lights (up to ~2.5 % of the pixels)
    for policy in (SCENE, KEY, SPOT):
        means = [policy((scene * s).clamp(0, 1)).mean().item() for s in sorted(scales)]
        assert all(b >= a - 1e-5 for a, b in zip(means, means[1:])), (policy, sorted(scales), means)


def test_highlight_quantile_subsamples_large_images_consistently() -> None:
    big = torch.rand(1, 3, 1200, 1000, generator=torch.Generator().manual_seed(1))
    value = highlight(big, 0.99).item()
    assert value == pytest.approx(big.amax(dim=1).flatten().quantile(0.99).item(), abs=0.01)
    assert highlight(torch.zeros(2, 3, 4, 4), 0.99).flatten().tolist() == pytest.approx([1 / 255, 1 / 255])


@pytest.mark.parametrize("kwargs, message", [
    ({"target": 0.0}, "target"), ({"target": 1.5}, "target"),
    ({"target": 0.3, "headroom_ev": -1.0}, "headroom"), ({"target": 0.3, "highlight_quantile": 0.2}, "quantile"),
    ({"target": 0.3, "metering": "spot"}, "metering"), ({"target": 0.3, "highlight_spot": 0}, "spot"),
])
def test_bad_policies_are_refused(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ExposurePolicy(**kwargs)


def test_black_image_stays_finite() -> None:
    out = SCENE(torch.zeros(1, 3, 8, 8))
    assert torch.isfinite(out).all() and out.max().item() == 0.0
    assert math.isfinite(SCENE.gain(torch.zeros(1, 3, 8, 8)).item())


def _night_with_lamps(size: tuple[int, int], lamps: list[tuple[int, int]], radius: int = 2) -> torch.Tensor:
    night = torch.full((1, 3, *size), 0.03)
    for cy, cx in lamps:
        night[..., cy - radius : cy + radius + 1, cx - radius : cx + radius + 1] = torch.tensor([1.0, 0.9, 0.7]).view(
            1, 3, 1, 1)
    return night


def test_a_few_small_lamps_hold_the_gain_however_small_a_share_of_the_frame() -> None:
    """Four 5x5 lamps in a 600x800 night: 0.02 % of the pixels. The brightest 1 % misses them and the
    night would be lifted to the target; the brightest 3x3 spot finds them and leaves it as it is."""
    night = _night_with_lamps((600, 800), [(100, 100), (100, 700), (500, 300), (400, 650)])
    assert SPOT.gain(night).item() == pytest.approx(1.0)
    quantile = ExposurePolicy(target=0.35, headroom_ev=0.0)
    assert quantile.gain(night).item() > 10  # the failure the spot reading removes
    assert spot_highlight(night, 3).item() == pytest.approx(1.0)


def test_a_lone_hot_pixel_or_a_thin_glint_is_not_a_light() -> None:
    dark = torch.full((1, 3, 60, 80), 0.02)
    dark[..., 30, 40] = 1.0  # a hot pixel
    dark[..., 10, 5:40] = 1.0  # a one-pixel-wide glint
    dark[..., 40:42, 60:62] = 1.0  # a 2x2 speck
    assert spot_highlight(dark, 3).item() == pytest.approx(0.02)
    assert SPOT.gain(dark).item() == pytest.approx(0.35 / dark.mean().item(), rel=1e-5)
    dark[..., 50:53, 10:13] = 0.5  # a 3x3 light at half scale: one stop of room
    assert spot_highlight(dark, 3).item() == pytest.approx(0.5)
    assert SPOT.gain(dark).item() == pytest.approx(2.0)


@pytest.mark.parametrize("corner", [(0, 0), (0, -3), (-3, 0), (-3, -3)])
def test_a_light_in_a_corner_counts(corner: tuple[int, int]) -> None:
    dark = torch.full((1, 3, 20, 30), 0.02)
    r, c = corner
    dark[..., r % 20 : r % 20 + 3, c % 30 : c % 30 + 3] = 0.8
    assert spot_highlight(dark, 3).item() == pytest.approx(0.8)


def test_spot_highlight_on_tiny_images_and_per_image_in_a_batch() -> None:
    # an image smaller than the square holds no light: it is exposed by its mean alone
    assert spot_highlight(torch.full((1, 3, 1, 1), 0.5), 3).item() == pytest.approx(1 / 255)
    assert spot_highlight(torch.full((1, 3, 2, 2), 0.5), 5).item() == pytest.approx(1 / 255)
    assert spot_highlight(torch.full((1, 3, 3, 3), 0.5), 3).item() == pytest.approx(0.5)
    batch = torch.full((2, 3, 16, 16), 0.1)
    batch[0, :, 4:8, 4:8] = 0.9
    assert spot_highlight(batch, 3).flatten().tolist() == pytest.approx([0.9, 0.1])
    assert spot_highlight(torch.zeros(1, 3, 8, 8), 3).item() == pytest.approx(1 / 255)
    assert spot_highlight(batch, 1).flatten().tolist() == pytest.approx([0.9, 0.1])  # 1: the plain maximum


@pytest.mark.filterwarnings("ignore:`torch.jit.trace` is deprecated:DeprecationWarning")
def test_the_spot_policy_traces_for_any_size() -> None:
    def expose(y: torch.Tensor) -> torch.Tensor:
        return SPOT(y)

    traced = torch.jit.trace(expose, (_night_with_lamps((40, 60), [(20, 30)]),))
    for size in ((40, 60), (33, 91)):
        night = _night_with_lamps(size, [(10, 10)])
        night[..., 10:13, 10:13] = 0.25
        assert torch.allclose(traced(night), SPOT(night))


# -- the shoulder: what the gain does past full scale ----------------------------------------------
def _pixel(r: float, g: float, b: float) -> torch.Tensor:
    return torch.tensor([r, g, b]).view(1, 3, 1, 1)


def test_without_a_shoulder_each_channel_clips_and_the_hue_turns() -> None:
    lamp = ExposurePolicy(target=0.46).apply(_pixel(0.5, 0.3, 0.1), torch.tensor(4.0))
    assert lamp.flatten().tolist() == pytest.approx([1.0, 1.0, 0.4])  # orange in, yellow out


@pytest.mark.parametrize("knee", [0.5, 0.8, 1.0])
def test_the_shoulder_keeps_hue_and_saturation(knee: float) -> None:
    lamp = ExposurePolicy(target=0.46, shoulder=knee).apply(_pixel(0.5, 0.3, 0.1), torch.tensor(4.0)).flatten()
    assert lamp.max().item() <= 1.0
    assert (lamp / lamp[0]).tolist() == pytest.approx([1.0, 0.6, 0.2], rel=1e-5)  # the input's ratios


def test_the_shoulder_is_the_identity_up_to_the_knee_and_smooth_there() -> None:
    m = torch.linspace(0.0, 0.8, 81).view(1, 1, -1, 1).expand(1, 3, -1, 1)
    assert torch.allclose(shoulder(m, 0.8), m)
    eps = 1e-3  # slope 1 just past the knee: no kink in the tone curve
    above = shoulder(torch.full((1, 3, 1, 1), 0.8 + eps), 0.8)[0, 0, 0, 0].item()
    assert (above - 0.8) / eps == pytest.approx(1.0, abs=0.01)


@given(st.lists(st.floats(0.0, 50.0), min_size=2, max_size=12), st.floats(0.3, 1.0))
@settings(max_examples=60, deadline=None)
def test_the_shoulder_is_monotone_and_stays_in_range(values: list[float], knee: float) -> None:
    grey = torch.tensor(sorted(values)).view(1, 1, -1, 1).expand(1, 3, -1, 1)
    out = shoulder(grey, knee)[0, 0, :, 0]
    assert out.min().item() >= 0.0 and out.max().item() <= 1.0
    assert bool((out[1:] >= out[:-1] - 1e-7).all())  # brighter in, never darker out


def test_the_shoulder_rolls_off_past_full_scale_instead_of_flattening() -> None:
    out = shoulder(torch.tensor([1.0, 2.0, 4.0]).view(1, 1, 3, 1).expand(1, 3, 3, 1), 0.7)[0, 0, :, 0]
    assert out[0] < out[1] < out[2] < 1.0  # a clip would give 1, 1, 1


@pytest.mark.parametrize("knee", [0.0, -0.2, 1.5])
def test_a_knee_out_of_range_is_refused(knee: float) -> None:
    with pytest.raises(ValueError, match="knee"):
        ExposurePolicy(target=0.46, shoulder=knee)


def test_the_shoulder_reaches_the_network_from_the_task_options() -> None:
    from nasflow.tasks.ruas.model import RUASNet

    net = RUASNet(use_nrm=False, exposure_key=0.46, exposure_shoulder=0.8)
    assert net.exposure is not None and net.exposure.shoulder == 0.8
    assert RUASNet(use_nrm=False, exposure_key=0.46).exposure.shoulder is None  # model files made before: clip


def test_with_a_shoulder_a_bright_photo_changes_only_above_the_knee() -> None:
    bright = _textured(0.6)
    out = ExposurePolicy(target=0.46, shoulder=0.6)(bright)
    below = bright.amax(dim=1, keepdim=True).expand_as(bright) <= 0.6
    assert torch.equal(out[below], bright[below])  # no gain: untouched up to the knee
    assert bool((out[~below] < bright[~below] + 1e-7).all())  # above it, rolled off, never brightened

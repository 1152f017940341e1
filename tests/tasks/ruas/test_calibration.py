"""The exposure calibration rule on generated photos whose "expert" follows a known metering and key:
the rule must find that metering and recover the key from darkened copies."""

from __future__ import annotations

import pytest
import torch

from nasflow.tasks.ruas.calibration import (
    Case, ToneLift, calibrate, calibrate_shoulder, cases_from_pairs, darken, matching_key, pipeline, signed_error,
    tone_pipeline)
from nasflow.tasks.ruas.exposure import srgb_to_linear


def _photos(n: int = 5, size: int = 48) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    photos = []
    for i in range(n):
        base = 0.65 + 0.35 * torch.sin(6.28 * ((i + 1) * 0.7 * xx + 0.9 * yy))
        tint = 0.6 + 0.4 * torch.rand(3, 1, 1, generator=g)
        level = 0.2 + 0.5 * i / n
        photos.append(torch.round((level * base * tint).clamp(0, 1) * 255).div(255).unsqueeze(0))
    return photos


def _pairs(metering: str, key: float) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    lift = ToneLift()
    return [(f"p{i}", p, tone_pipeline(p, metering, key, lift)) for i, p in enumerate(_photos())]


def test_darken_is_a_shorter_exposure_in_linear_light() -> None:
    y = torch.full((1, 3, 4, 4), 0.6)
    ratio = srgb_to_linear(darken(y, 2.0)).mean() / srgb_to_linear(y).mean()
    assert ratio == pytest.approx(0.25, rel=0.02)  # within 8-bit quantisation


def test_output_mean_rises_with_the_key() -> None:
    photo = _photos(1)[0]
    means = [float(tone_pipeline(darken(photo, 2.0), "reinhard", k, ToneLift()).mean()) for k in (0.05, 0.1, 0.2, 0.4)]
    assert means == sorted(means) and means[-1] > means[0]


@pytest.mark.parametrize(("metering", "key"), [("reinhard", 0.3), ("mean", 0.46)])
def test_the_rule_finds_the_experts_metering_and_key(metering: str, key: float) -> None:
    # one and two stops: darker copies of these photos lose their shadows to 8-bit quantisation, which the
    # real calibration absorbs into its key but which would blur what this test checks
    chosen, fits = calibrate(cases_from_pairs(_pairs(metering, key), darkenings=(1.0, 2.0)))
    assert chosen.metering == metering
    assert chosen.key == pytest.approx(key, rel=0.05)
    assert chosen.loo_abs_error < 1.5  # 8-bit levels
    other = next(f for f in fits if f is not chosen)
    assert other.loo_abs_error > chosen.loo_abs_error


@pytest.mark.parametrize(("metering", "key"), [("reinhard", 0.3), ("mean", 0.46)])
def test_the_psnr_check_prefers_the_experts_metering(metering: str, key: float) -> None:
    chosen, fits = calibrate(cases_from_pairs(_pairs(metering, key), darkenings=(1.0, 2.0)), criterion="psnr")
    assert chosen.metering == metering
    assert all(f.loo_psnr is not None and f.loo_psnr <= chosen.loo_psnr for f in fits)


def test_the_psnr_check_needs_the_experts_picture() -> None:
    cases = [Case(c.photo, c.stops, c.image, c.expert_mean) for c in cases_from_pairs(_pairs("mean", 0.46))]
    with pytest.raises(ValueError, match="expert's picture"):
        calibrate(cases, criterion="psnr")
    with pytest.raises(ValueError, match="criterion"):
        calibrate(cases, criterion="ssim")


def test_a_key_out_of_range_is_clamped_not_extrapolated() -> None:
    photo = darken(_photos(1)[0], 3.0)
    white = Case("white", 3.0, photo, expert_mean=1.0)
    black = Case("black", 3.0, photo, expert_mean=0.0)
    assert matching_key(white, "reinhard", ToneLift()) == 1.0
    assert matching_key(black, "reinhard", ToneLift()) == pytest.approx(1e-3)


def test_one_photo_cannot_be_left_out() -> None:
    with pytest.raises(ValueError, match="two calibration photos"):
        calibrate(cases_from_pairs(_pairs("reinhard", 0.3)[:1]))


def test_signed_error_of_the_pipeline_is_its_own_brightness_error() -> None:
    cases = cases_from_pairs(_pairs("mean", 0.4))
    at_the_experts_key = signed_error(cases, pipeline("mean", 0.4))
    assert abs(at_the_experts_key) < 0.5  # the experts are this pipeline: within rounding
    brighter = signed_error(cases, lambda y: torch.clamp(tone_pipeline(y, "mean", 0.4, ToneLift()) + 10 / 255, 0, 1))
    assert 8.0 < brighter - at_the_experts_key <= 10.0  # +10 levels, less what clipping at white takes
    assert signed_error(cases, pipeline("mean", 0.3)) < at_the_experts_key - 5  # a lower key: darker


def test_signed_error_needs_cases() -> None:
    with pytest.raises(ValueError, match="no calibration cases"):
        signed_error([], pipeline("mean", 0.4))


def _bright_photos(n: int = 4, size: int = 48) -> list[torch.Tensor]:
    """Dark photos (mean under the key) with an orange area that the key's gain pushes past full scale.
    No value lies in the sRGB curve's linear toe even 2 stops darker, where a darkening in linear light
    is no longer a scaling of the sRGB values (the key would then differ between darkenings)."""
    g = torch.Generator().manual_seed(1)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    photos = []
    for i in range(n):
        base = 0.12 + 0.1 * (0.5 + 0.5 * torch.sin(6.28 * ((i + 1) * 0.7 * xx + 0.9 * yy)))
        p = base * (0.8 + 0.2 * torch.rand(3, 1, 1, generator=g))
        p[:, : size // 3, : size // 3] = torch.tensor([0.6, 0.4 + 0.03 * i, 0.12]).view(3, 1, 1)
        photos.append(torch.round(p * 255).div(255).unsqueeze(0))
    return photos


@pytest.mark.parametrize("knee", [None, 0.7])
def test_the_shoulder_rule_finds_the_experts_knee(knee: float | None) -> None:
    lift = ToneLift()
    pairs = [(f"p{i}", p, tone_pipeline(p, "mean", 0.45, lift, shoulder=knee)) for i, p in enumerate(_bright_photos())]
    cases = cases_from_pairs(pairs, darkenings=(1.0, 2.0))  # darker, 8-bit quantisation blurs the knees apart
    chosen, fits = calibrate_shoulder(cases, "mean", lift, knees=(None, 0.5, 0.7, 0.9, 1.0))
    assert chosen.shoulder == knee
    assert chosen.key == pytest.approx(0.45, rel=0.06)  # the lift and 8-bit files move it a little
    assert [f.shoulder for f in fits] == [None, 0.5, 0.7, 0.9, 1.0]


def test_the_shoulder_rule_needs_the_experts_picture() -> None:
    cases = [Case(photo=c.photo, stops=c.stops, image=c.image, expert_mean=c.expert_mean)
             for c in cases_from_pairs(_pairs("mean", 0.4))]
    with pytest.raises(ValueError, match="expert's pictures"):
        calibrate_shoulder(cases, "mean")

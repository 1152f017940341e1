"""Synthetic sensor noise for the NRM target: the degradation's statistics and determinism."""

from __future__ import annotations

import pytest
import torch

from nasflow.tasks.ruas.noise import (NoiseRanges, batch_generator, linear_to_srgb, noise_levels, nrm_synthetic_loss,
                                      poisson_gaussian, srgb_to_linear, synthesize)


def _crops(n: int = 4, size: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def test_srgb_round_trip_and_known_points() -> None:
    x = torch.linspace(0, 1, 1001)
    assert torch.allclose(linear_to_srgb(srgb_to_linear(x)), x, atol=1e-5)
    # IEC 61966-2-1: sRGB 0.5 is 21.4 % linear; the two pieces meet at 0.04045 / 0.0031308
    assert srgb_to_linear(torch.tensor(0.5)).item() == pytest.approx(0.21404, abs=1e-4)
    assert srgb_to_linear(torch.tensor(0.04045)).item() == pytest.approx(0.0031308, abs=1e-6)


def test_zero_noise_level_gives_the_clean_image() -> None:
    y = _crops()
    ranges = NoiseRanges(clean_fraction=1.0, downsample=2)  # every image noise-free; binned
    pair = synthesize(y, torch.Generator().manual_seed(3), ranges, quantize=False)
    assert torch.count_nonzero(pair.shot) == 0 and torch.count_nonzero(pair.read) == 0
    assert torch.allclose(pair.noisy, pair.clean, atol=1e-6)
    quantized = synthesize(y, torch.Generator().manual_seed(3), ranges)  # the 8-bit file: within half a level
    assert (quantized.noisy - quantized.clean).abs().max() <= 0.5 / 255 + 1e-6
    assert torch.equal(quantized.noisy, torch.round(quantized.noisy * 255) / 255)
    # the clean image is the 2x2-binned, darkened source
    binned = linear_to_srgb(torch.nn.functional.avg_pool2d(srgb_to_linear(y), 2) * pair.darken.view(-1, 1, 1, 1))
    assert pair.clean.shape == (4, 3, 16, 16) and torch.allclose(pair.clean, binned, atol=1e-6)
    assert ((pair.darken <= 1.0) & (pair.darken >= 2.0**-3)).all()


def test_shot_noise_variance_grows_with_the_signal() -> None:
    g = torch.Generator().manual_seed(0)
    levels = torch.tensor([0.01, 0.04, 0.16, 0.64]).view(4, 1, 1, 1).expand(4, 1, 256, 256).contiguous()
    shot, read = torch.full((4,), 0.01), torch.zeros(4)
    var = (poisson_gaussian(levels, shot, read, g) - levels).var(dim=(1, 2, 3))
    assert torch.allclose(var, 0.01 * levels[:, 0, 0, 0], rtol=0.05)  # Var = shot * x (Foi et al. 2008, eq. 2)
    # read noise alone: the same variance at every level
    var_read = (poisson_gaussian(levels, torch.zeros(4), torch.full((4,), 1e-4), g) - levels).var(dim=(1, 2, 3))
    assert torch.allclose(var_read, torch.full((4,), 1e-4), rtol=0.05)


def test_noise_levels_follow_brooks_et_al() -> None:
    shot, read = noise_levels(4000, torch.Generator().manual_seed(1), NoiseRanges(clean_fraction=0.25))
    noisy = shot > 0
    assert abs(noisy.float().mean().item() - 0.75) < 0.03  # a quarter left clean
    assert torch.equal(noisy, read > 0)
    assert shot[noisy].min() >= 1e-4 * (1 - 1e-5) and shot[noisy].max() <= 1.2e-2 * (1 + 1e-5)
    resid = read[noisy].double().log() - (2.18 * shot[noisy].double().log() + 1.20)
    assert abs(resid.mean().item()) < 0.03 and resid.std().item() == pytest.approx(0.26, rel=0.08)


def test_deterministic_given_a_generator() -> None:
    y = _crops()
    a = synthesize(y, torch.Generator().manual_seed(7))
    b = synthesize(y, torch.Generator().manual_seed(7))
    c = synthesize(y, torch.Generator().manual_seed(8))
    assert torch.equal(a.noisy, b.noisy) and torch.equal(a.clean, b.clean)
    assert not torch.equal(a.noisy, c.noisy)
    # the batch generator: a function of (seed, bytes), whatever the memory layout
    first = torch.rand(3, generator=batch_generator(0, y))
    assert torch.equal(first, torch.rand(3, generator=batch_generator(0, y.to(memory_format=torch.channels_last))))
    assert not torch.equal(first, torch.rand(3, generator=batch_generator(1, y)))
    assert not torch.equal(first, torch.rand(3, generator=batch_generator(0, y.flip(-1))))


def test_noise_raises_the_noisy_images_error_and_the_loss_sees_it() -> None:
    y = _crops(n=64, seed=2)
    pair = synthesize(y, torch.Generator().manual_seed(0), NoiseRanges(clean_fraction=0.0, darken_ev=0.0))
    err = (pair.noisy - pair.clean).pow(2).mean(dim=(1, 2, 3)).sqrt()
    # the largest draws are visibly noisy (> 2 8-bit levels rms) and the error rises with the shot level
    assert err.max() > 2 / 255
    order = torch.argsort(pair.shot)
    assert err[order[-8:]].mean() > 2 * err[order[:8]].mean()
    assert nrm_synthetic_loss(pair.clean, pair.clean)["loss"].item() == 0.0
    assert nrm_synthetic_loss(pair.noisy, pair.clean)["mse"].item() > 0.0


@pytest.mark.parametrize("bad", [dict(shot=(0.0, 1.0)), dict(darken_ev=-1.0), dict(clean_fraction=1.5),
                                 dict(downsample=0)])
def test_ranges_validate(bad: dict) -> None:
    with pytest.raises(ValueError):
        NoiseRanges(**bad)


def test_darkening_stops_at_the_brightness_floor() -> None:
    y = torch.cat([torch.full((1, 3, 16, 16), 0.5), torch.full((1, 3, 16, 16), 0.01), _crops(2, 16)])
    pair = synthesize(y, torch.Generator().manual_seed(0), NoiseRanges(darken_ev=1000.0, clean_fraction=1.0),
                      quantize=False)
    means = pair.clean.mean(dim=(1, 2, 3))
    assert (means[[0, 2, 3]] - 0.024).abs().max() < 1e-4  # hundreds of stops drawn: stopped at the floor
    assert pair.darken[1] == 1.0 and means[1] == pytest.approx(0.01, abs=1e-6)  # already darker: left alone
    free = synthesize(y, torch.Generator().manual_seed(0), NoiseRanges(darken_ev=1000.0, min_mean=0.0), quantize=False)
    assert free.clean.mean() < 1e-3


def test_noise_is_added_at_the_metered_exposure() -> None:
    """A dark crop gets the signal-to-noise ratio a crop metered to 18 % grey would have: relative noise
    does not grow as the crop gets darker (down to the 8-bit rounding)."""
    ranges = NoiseRanges(clean_fraction=0.0, darken_ev=0.0, min_mean=0.0, downsample=1)
    rel = []
    for level in (0.18, 0.045, 0.011):  # linear: 0, 2 and 4 stops below middle grey
        y = linear_to_srgb(torch.full((1, 3, 64, 64), level))
        pair = synthesize(y, torch.Generator().manual_seed(5), ranges, quantize=False)
        lin_noise = srgb_to_linear(pair.noisy) - level
        rel.append((lin_noise.std() / level).item())
    assert rel[0] > 0 and max(rel) / min(rel) < 1.3

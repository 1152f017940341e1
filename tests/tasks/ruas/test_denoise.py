"""The noise-conditioned filter: the noise estimate reads the noise and not the picture, Lee's filter
removes noise in flat areas and keeps edges, the fast path, split copies and tiles compute the same
output, and the default model cleans lifted noise while leaving a clean photo nearly as it is."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from nasflow.core.compile import compile_model
from nasflow.infer.tiling import tiled_apply
from nasflow.tasks.ruas.denoise import (lee_filter, lee_filter_, lifted_noise_var, local_moments, nl_means, noise_level,
                                        split_noise_level, with_noise_level)
from nasflow.tasks.ruas.fast import fast_ruas
from nasflow.tasks.ruas.model import RUASNet, paper_genotype


def _noisy(clean: torch.Tensor, sigma: float, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return clean + sigma * torch.randn(clean.shape, generator=g)


def _grey(value: float, size: int = 256) -> torch.Tensor:
    return torch.full((1, 3, size, size), value)


# -- the noise level ------------------------------------------------------------------------------------
@pytest.mark.parametrize("sigma", [0.005, 0.02, 0.05])
def test_noise_level_reads_white_noise_on_a_flat_image(sigma: float) -> None:
    # the same noise in R, G and B: the luma carries it unchanged
    g = torch.Generator().manual_seed(1)
    plane = 0.5 + sigma * torch.randn(1, 1, 256, 256, generator=g)
    got = noise_level(plane.expand(1, 3, 256, 256)).item()
    assert got == pytest.approx(sigma, rel=0.06)


def test_noise_level_ignores_edges_and_smooth_shading() -> None:
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 256), torch.linspace(0, 1, 256), indexing="ij")
    scene = (0.2 + 0.3 * xx + 0.4 * (yy > 0.5) + 0.3 * ((xx * 8).floor() % 2)).clamp(0, 1)  # shading, edges, bars
    clean = scene.expand(1, 3, 256, 256).contiguous()
    assert noise_level(clean).item() < 1e-3
    g = torch.Generator().manual_seed(2)
    noisy = clean + 0.01 * torch.randn(1, 1, 256, 256, generator=g)
    assert noise_level(noisy).item() == pytest.approx(0.01, rel=0.12)


def test_noise_level_is_per_image_and_tiny_images_read_zero() -> None:
    batch = torch.cat([_noisy(_grey(0.5), 0.01, 3)[:, :1].expand(1, 3, 256, 256),
                       _noisy(_grey(0.5), 0.04, 4)[:, :1].expand(1, 3, 256, 256)])
    levels = noise_level(batch)
    assert levels.shape == (2, 1, 1, 1)
    assert levels[0].item() == pytest.approx(0.01, rel=0.06) and levels[1].item() == pytest.approx(0.04, rel=0.06)
    assert noise_level(torch.rand(1, 3, 1, 5)).item() == 0.0


def test_noise_plane_round_trip() -> None:
    y = torch.rand(2, 3, 8, 9)
    sigma = torch.tensor([0.1, 0.2]).view(2, 1, 1, 1)
    four = with_noise_level(y, sigma)
    image, level = split_noise_level(four)
    assert four.shape == (2, 4, 8, 9) and torch.equal(image, y)
    assert torch.equal(level[:, :, 3, 4].flatten(), sigma.flatten())
    assert split_noise_level(y) == (y, None)


# -- Lee's filter -------------------------------------------------------------------------------------
def test_lee_filter_flattens_noise_in_a_flat_area() -> None:
    sigma = 0.03
    z = _noisy(_grey(0.4, 128), sigma)
    out = lee_filter(z, torch.tensor(sigma**2), radius=1)
    inner = (slice(None), slice(None), slice(2, -2), slice(2, -2))
    assert out[inner].std().item() < z[inner].std().item() / 2  # a 3x3 mean: 3x at best
    assert out[inner].mean().item() == pytest.approx(0.4, abs=2e-3)


def test_lee_filter_keeps_an_edge_well_above_the_noise() -> None:
    sigma = 0.01
    clean = torch.zeros(1, 3, 64, 64)
    clean[..., 32:] = 0.6
    out = lee_filter(_noisy(clean, sigma), torch.tensor(sigma**2), radius=1)
    edge = out[..., 31:33]  # the two columns either side of the step
    assert (edge - clean[..., 31:33]).abs().max().item() < 5 * sigma
    blurred = lee_filter(_noisy(clean, sigma), torch.tensor(1.0), radius=1)  # noise "above" the edge: a plain mean
    assert (blurred[..., 31:33] - clean[..., 31:33]).abs().max().item() > 0.15


def test_lee_filter_without_noise_is_the_identity() -> None:
    z = torch.rand(1, 3, 20, 30)
    torch.testing.assert_close(lee_filter(z, torch.tensor(0.0)), z, atol=1e-6, rtol=0)  # m + 1 * (z - m)
    assert torch.equal(lee_filter(z, torch.tensor(0.5), radius=0), z)
    with pytest.raises(ValueError):
        lee_filter(z, torch.tensor(0.0), radius=-1)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), noise=st.floats(0.0, 0.2), radius=st.integers(1, 3))
def test_lee_filter_output_lies_between_the_pixel_and_its_window_mean(seed: int, noise: float, radius: int) -> None:
    g = torch.Generator().manual_seed(seed)
    z = torch.rand(1, 2, 11, 13, generator=g)
    out = lee_filter(z, torch.tensor(noise**2), radius)
    m, _ = local_moments(z, radius)
    lo, hi = torch.minimum(z, m), torch.maximum(z, m)
    assert bool(((out >= lo - 1e-6) & (out <= hi + 1e-6)).all())


def test_local_moments_clip_the_window_at_the_border() -> None:
    z = torch.rand(1, 1, 5, 6)
    m, v = local_moments(z, 1)
    corner = z[0, 0, :2, :2]
    assert m[0, 0, 0, 0].item() == pytest.approx(corner.mean().item(), abs=1e-6)
    assert v[0, 0, 0, 0].item() == pytest.approx(corner.var(unbiased=False).item(), abs=1e-6)


def test_in_place_filter_equals_the_functional_one() -> None:
    g = torch.Generator().manual_seed(5)
    z = torch.rand(1, 3, 40, 50, generator=g)
    t = torch.rand(1, 3, 40, 50, generator=g).clamp_min(0.05)
    sigma = torch.tensor(0.01).view(1, 1, 1, 1)
    want = lee_filter(z, lifted_noise_var(sigma, t), 1)
    kept = z.clone()
    got = lee_filter_(z, sigma, t.clone(), 1)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)
    assert torch.equal(z, kept)


# -- non-local means (a candidate of benchmarks/select_denoiser.py) ------------------------------------
def _stripes(size: int = 48) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    return (0.3 + 0.4 * ((xx // 6) % 2) + 0.05 * (yy > size // 2)).float().expand(1, 3, size, size).clone()


def test_nl_means_removes_noise_and_keeps_repeated_structure() -> None:
    clean = _stripes()
    noisy = _noisy(clean, 0.05)
    var = torch.full((1, 1, 48, 48), 0.05**2)
    err = lambda x: float((x - clean).square().mean().sqrt())  # noqa: E731
    out = nl_means(noisy, var, search_radius=5)
    assert err(out) < 0.4 * err(noisy)
    assert err(out) < err(lee_filter(noisy, var, 1))  # the stripes repeat: their look-alikes vote


def test_nl_means_leaves_a_clean_image_alone_at_zero_or_tiny_noise() -> None:
    g = torch.Generator().manual_seed(1)
    z = torch.rand(1, 3, 30, 40, generator=g)
    assert torch.equal(nl_means(z, torch.zeros(1, 1, 30, 40), search_radius=3), z)
    # tiny weights must not underflow unevenly (they once sent pixels to black)
    out = nl_means(_stripes(), torch.full((1, 1, 48, 48), 1e-6), search_radius=4)
    assert float((out - _stripes()).abs().max()) < 1e-3


def test_nl_means_takes_a_per_channel_variance_as_its_channel_mean() -> None:
    noisy = _noisy(_stripes(), 0.03)
    per_channel = torch.full((1, 3, 48, 48), 0.03**2)
    torch.testing.assert_close(nl_means(noisy, per_channel, search_radius=3),
                               nl_means(noisy, per_channel[:, :1], search_radius=3))
    with pytest.raises(ValueError, match="search_radius"):
        nl_means(noisy, per_channel, search_radius=0)


# -- in the network ----------------------------------------------------------------------------------
def _net(use_nrm: bool, key: float, denoise: str = "lee") -> RUASNet:
    torch.manual_seed(0)
    return compile_model(RUASNet(use_nrm=use_nrm, exposure_key=key, denoise=denoise), paper_genotype(use_nrm)).eval()


def _dark(seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (0.15 * torch.rand(1, 3, 90, 120, generator=g) + 0.02 * torch.randn(1, 3, 90, 120, generator=g)).clamp(0, 1)


def test_network_output_is_the_filtered_retinex_output() -> None:
    net, plain = _net(False, 0.46), _net(False, 0.46, "none")
    y = _dark()
    with torch.no_grad():
        got, ref = net(y), plain(y)
        sigma = noise_level(net.expose(y))
    assert torch.equal(got.u, ref.u)
    torch.testing.assert_close(got.out, lee_filter(ref.out, lifted_noise_var(sigma, ref.t), 1))
    assert not torch.allclose(got.out, ref.out)
    with pytest.raises(ValueError, match="denoise"):
        RUASNet(denoise="median")


@pytest.mark.parametrize("use_nrm", [False, True])
@pytest.mark.parametrize("key", [0.0, 0.46])
def test_fast_path_bands_and_tiles_equal_the_network(use_nrm: bool, key: float) -> None:
    net = _net(use_nrm, key)
    y = _dark(1)
    with torch.no_grad():
        want = net(y).out
        for bands in (0, 2):
            torch.testing.assert_close(fast_ruas(net, bands=bands)(y), want, atol=2e-5, rtol=1e-4)
        prelude, local = net.split_global()
        tiled = tiled_apply(lambda x: local(x).out, prelude(y), tile=32, halo=local.halo())
        fast_prelude, fast_local = fast_ruas(net, bands=0).split_global()
        fast_tiled = tiled_apply(fast_local, fast_prelude(y), tile=32, halo=fast_local.halo())
    torch.testing.assert_close(tiled, want, atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(fast_tiled, want, atol=2e-5, rtol=1e-4)
    assert local.halo() == fast_local.halo() == (18 if use_nrm else 10)


def test_a_denoising_network_needs_its_whole_image_step_before_tiles() -> None:
    from nasflow.infer.tiling import NotTileable

    with pytest.raises(NotTileable, match="noise level"):
        _net(False, 0.0).halo()
    prelude, local = _net(False, 0.0).split_global()
    assert not prelude.accepts_exposure_bias
    with pytest.raises(ValueError):
        prelude(_dark(), exposure_bias=1.0)
    assert _net(False, 0.0, "none").split_global() is None


# -- the shipped default model -----------------------------------------------------------------------
def _srgb(linear: np.ndarray) -> np.ndarray:
    linear = np.clip(linear, 0, 1)
    return np.where(linear <= 0.0031308, linear * 12.92, 1.055 * linear ** (1 / 2.4) - 0.055)


def test_default_model_cleans_lifted_noise_and_leaves_a_clean_photo_nearly_alone() -> None:
    import skimage.data

    from nasflow.infer.inference import load_model
    from nasflow.infer.models import default_model_name
    from nasflow.tasks.ruas.metrics import flat_dark_noise

    enhancer = load_model(default_model_name(), device="cpu")
    assert enhancer.loaded.network.denoise == "lee"
    plain_net = enhancer.loaded.network
    plain = copy.copy(plain_net)  # the same weights, without the filter
    plain.denoise = "none"
    photo = skimage.data.coffee().astype(np.float32) / 255
    lin = np.where(photo <= 0.04045, photo / 12.92, ((photo + 0.055) / 1.055) ** 2.4)
    rng = np.random.default_rng(0)
    # 3 stops under, with shot and read noise in linear light (a phone at high ISO)
    dark_lin = lin / 8
    dark_lin = dark_lin + rng.normal(0, 1, dark_lin.shape) * np.sqrt(0.0004 * dark_lin + 0.00002)
    dark = _srgb(dark_lin).astype(np.float32)

    def run(net: torch.nn.Module, rgb: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            out = net(torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None]).out
        return np.round(out.clamp(0, 1)[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8)

    dark8 = np.round(dark * 255).astype(np.uint8)
    filtered, unfiltered = flat_dark_noise(run(plain_net, dark), dark8), flat_dark_noise(run(plain, dark), dark8)
    assert filtered < 0.75 * unfiltered
    clean_f, clean_u = run(plain_net, photo).astype(float), run(plain, photo).astype(float)
    # 8-bit levels: a clean photo is left nearly as it is (coffee's own grain reads 2 levels; some of it goes)
    assert np.abs(clean_f - clean_u).mean() < 1.0

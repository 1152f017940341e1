"""How the default shipped model behaves on generated scenes (issue: pictures that hold on photos
nobody tuned on): night scenes stay nights, well-exposed photos stay as they are, brighter inputs
never give darker outputs, grey stays grey, and the exposure bias does what it says.

Generated images only (scikit-image's bundled photos for the natural ones): no data folder needed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from nasflow.cli import main
from nasflow.errors import ConfigError
from nasflow.infer.inference import load_model
from nasflow.infer.models import default_model_name
from nasflow.tasks.ruas.exposure import linear_to_srgb, srgb_to_linear


@pytest.fixture(scope="module", params=["default", "ruas-fast"])
def enhancer(request):  # noqa: ANN001, ANN201
    """The default model, and ruas-fast, whose card claims the default's behaviour on a searched cell."""
    return load_model(default_model_name() if request.param == "default" else request.param, device="cpu")


def _photo(name: str) -> np.ndarray:
    import skimage.data

    return getattr(skimage.data, name)().astype(np.float32) / 255


def _exposed(rgb: np.ndarray, stops: float) -> np.ndarray:
    """The same photo ``stops`` EV brighter or darker: a gain in linear light, re-encoded to sRGB."""
    return linear_to_srgb(srgb_to_linear(torch.from_numpy(rgb)) * 2.0 ** stops).numpy().astype(np.float32)


LAMPS = [(30, 40), (30, 120), (85, 60), (90, 130)]  # four lamps in a 120x160 frame, about 1.5 % of it


def night_scene(size: tuple[int, int] = (120, 160), seed: int = 0, lamps: list[tuple[int, int]] = LAMPS,
                radius: float = 4.5, noise: float = 0.004) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """A dark, slightly noisy background (mean ~0.04) with warm lamps: discs ``2 radius`` px across at
    full scale, each with a short fall-off."""
    rng = np.random.default_rng(seed)
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    sky = 0.025 + 0.03 * yy / h  # a little brighter towards the ground
    img = np.repeat(sky[..., None], 3, axis=2) * np.array([0.9, 0.95, 1.1], np.float32)
    img += rng.normal(0, noise, img.shape).astype(np.float32)
    for cy, cx in lamps:
        d = np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2)
        core = np.clip(radius + 0.5 - d, 0, 1)  # anti-aliased
        falloff = np.exp(-np.maximum(d - radius, 0) ** 2 / (2 * 1.5**2)) * (d > radius)
        light = np.maximum(core, 0.8 * falloff)[..., None] * np.array([1.0, 0.92, 0.75], np.float32)
        img = np.maximum(img, light)
    return np.clip(img, 0, 1).astype(np.float32), lamps


# (size, lamps, radius, noise): the four-lamp scene; a few street lights far apart in a larger frame, a few
# hundredths of a percent of it (the brightest 1 % of the pixels is sky there); one small lamp; a noisier sky
NIGHTS = {
    "four lamps": ((120, 160), LAMPS, 4.5, 0.004),
    "street lights": ((360, 540), [(60, 80), (70, 270), (65, 460), (250, 150), (260, 400)], 3, 0.004),
    "one lamp": ((240, 320), [(80, 200)], 2, 0.004),
    "noisy sky": ((200, 300), [(50, 60), (60, 240), (150, 150)], 3, 0.01),
}


def _ring(shape: tuple[int, int], centres: list[tuple[int, int]], inner: float, outer: float) -> np.ndarray:
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    d = np.min([np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2) for cy, cx in centres], axis=0)
    return (d >= inner) & (d < outer)


@pytest.mark.parametrize("night", NIGHTS)
def test_a_night_scene_stays_a_night(enhancer, night: str) -> None:  # noqa: ANN001
    size, lamps, radius, noise = NIGHTS[night]
    scene, lamps = night_scene(size, lamps=lamps, radius=radius, noise=noise)
    out = enhancer.enhance_rgb(scene)
    background = _ring(scene.shape[:2], lamps, radius + 12, 1e9)
    gain = out[background].mean() / scene[background].mean()
    assert gain <= 2.0, f"the background brightened {gain:.2f}x (a night must stay a night: at most 2x)"
    # no glow: 3-12 px beyond each lamp's edge the output is no brighter, relative to the input, than the
    # background is; the lamps themselves stay lamps
    ring = _ring(scene.shape[:2], lamps, radius + 3, radius + 12)
    excess_out = out[ring].mean() - out[background].mean()
    excess_in = scene[ring].mean() - scene[background].mean()
    assert excess_out <= gain * excess_in + 2 / 255, (excess_out, excess_in, gain)
    cores = _ring(scene.shape[:2], lamps, 0, radius - 1.5)
    assert out[cores].mean() >= 0.9 * scene[cores].mean()


def _soft_texture(mean: float, peak: float, size: tuple[int, int] = (200, 300), seed: int = 0) -> np.ndarray:
    """A smooth, colourful, normally exposed picture with no highlight near full scale (its brightest
    pixel ``peak``): nothing stops an exposure step from lifting it but the photo's own mean."""
    from skimage.filters import gaussian

    rng = np.random.default_rng(seed)
    x = gaussian(rng.random((*size, 3)), sigma=8, channel_axis=2)
    x = (x - x.min()) / (x.max() - x.min())
    return np.clip(x / x.mean() * mean, 0, peak).astype(np.float32)


@pytest.mark.parametrize("name", ["astronaut", "coffee", "chelsea", "coins", "soft 0.36", "soft 0.45"])
def test_a_well_exposed_photo_keeps_its_mean(enhancer, name: str) -> None:  # noqa: ANN001
    """Photos and pictures of mean above 0.35, with highlights at full scale or (coins, the soft
    textures) well below it."""
    if name.startswith("soft"):
        photo = _soft_texture(float(name.split()[1]), peak=0.75)
    else:
        photo = _photo(name)
        photo = np.repeat(photo[..., None], 3, axis=2) if photo.ndim == 2 else photo
    assert photo.mean() > 0.35  # normally exposed
    out = enhancer.enhance_rgb(photo)
    assert abs(out.mean() / photo.mean() - 1) <= 0.10, (name, photo.mean(), out.mean())


def test_output_mean_is_monotone_in_the_input_exposure(enhancer) -> None:  # noqa: ANN001
    photo = _photo("coffee")[::2, ::2]
    stops = [-4, -3, -2, -1.5, -1, -0.5, 0, 0.5]
    means = [enhancer.enhance_rgb(_exposed(photo, s)).mean() for s in stops]
    inputs = [_exposed(photo, s).mean() for s in stops]
    assert all(b >= a - 1 / 255 for a, b in zip(means, means[1:])), list(zip(stops, inputs, means))
    assert means[0] > inputs[0] * 2  # four stops under: lifted, not left dark


@pytest.mark.parametrize("level", [0.03, 0.1, 0.25, 0.5])
def test_a_grey_card_stays_grey(enhancer, level: float) -> None:  # noqa: ANN001
    rng = np.random.default_rng(1)
    card = np.full((64, 96, 3), level, np.float32) + rng.normal(0, 0.003, (64, 96, 3)).astype(np.float32)
    out = enhancer.enhance_rgb(np.clip(card, 0, 1))
    channels = out.reshape(-1, 3).mean(axis=0)
    assert channels.max() - channels.min() <= max(0.02 * channels.mean(), 1 / 255), (level, channels)


def test_grey_patches_in_a_coloured_scene_stay_grey(enhancer) -> None:  # noqa: ANN001
    """A dark chart: coloured patches around grey ones; the grey ones get no cast from their neighbours."""
    colours = np.array([[0.2, 0.05, 0.05], [0.05, 0.2, 0.05], [0.05, 0.05, 0.2], [0.1, 0.1, 0.1],
                        [0.2, 0.15, 0.02], [0.06, 0.06, 0.06], [0.15, 0.02, 0.15], [0.12, 0.12, 0.12]], np.float32)
    chart = np.repeat(np.repeat(colours.reshape(2, 4, 3), 32, axis=0), 32, axis=1)
    out = enhancer.enhance_rgb(chart)
    for r, c in ((0, 3), (1, 1), (1, 3)):  # the grey patches, away from their edges
        patch = out[r * 32 + 8 : r * 32 + 24, c * 32 + 8 : c * 32 + 24].reshape(-1, 3).mean(axis=0)
        assert patch.max() - patch.min() <= max(0.03 * patch.mean(), 1 / 255), (r, c, patch)


def test_the_exposure_bias_moves_the_output_as_stated(enhancer) -> None:  # noqa: ANN001
    """+1 EV doubles the exposure step's gain: the output brightens by between sqrt(2) (where the
    IEM's local lift, at most one stop, gives way) and 2; -1 EV darkens it likewise."""
    dark = _exposed(_photo("astronaut")[::2, ::2], -3)
    base = enhancer.enhance_rgb(dark).mean()
    up = enhancer.enhance_rgb(dark, exposure_bias=1.0).mean()
    down = enhancer.enhance_rgb(dark, exposure_bias=-1.0).mean()
    assert 2 ** 0.5 * 0.95 <= up / base <= 2.0 * 1.02, up / base
    assert 0.5 / 1.02 <= down / base <= 2 ** -0.5 * 1.05, down / base
    # a well-exposed photo is left alone at 0 EV but still follows the bias
    photo = _photo("chelsea")[::2, ::2]
    assert enhancer.enhance_rgb(photo, exposure_bias=-1.0).mean() < 0.75 * photo.mean()


def test_the_cli_exposure_bias_matches_python(enhancer, tmp_path: Path) -> None:  # noqa: ANN001
    from nasflow.infer.imageio import read_image, write_image

    src = tmp_path / "in"
    src.mkdir()
    dark = _exposed(_photo("coffee")[::4, ::4], -3)
    write_image(src / "dark.png", dark)
    pictures = {}
    for bias in (0.0, 1.0):
        out = tmp_path / f"out{bias}"
        assert main(["enhance", str(src), "-o", str(out), "--quiet", "--model", enhancer.name, "--exposure-bias",
                     str(bias)]) == 0
        pictures[bias] = read_image(out / "dark.png").rgb
    python = enhancer.enhance_rgb(read_image(src / "dark.png").rgb, exposure_bias=1.0)
    assert np.abs(pictures[1.0] - python).max() <= 1 / 255 + 1e-6
    assert pictures[1.0].mean() > 1.3 * pictures[0.0].mean()


def test_a_model_without_an_exposure_step_refuses_a_bias(tmp_path: Path) -> None:
    from model_files import ruas_model_file

    path = ruas_model_file(tmp_path / "plain.pt", use_nrm=False)
    with pytest.raises(ConfigError, match="no exposure control"):
        load_model(path, device="cpu", exposure_bias=1.0)
    assert load_model(path, device="cpu").exposure_control is False
    with pytest.raises(ConfigError, match="stops"):
        load_model(default_model_name(), device="cpu", exposure_bias=float("nan"))
    assert main(["enhance", str(tmp_path), "-o", str(tmp_path / "o"), "--model", str(path), "--exposure-bias",
                 "1"]) == 2

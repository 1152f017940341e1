"""RUAS evaluation metrics: hand-computed PSNR, rounding, SSIM vs scikit-image, no-reference stats."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from skimage.measure import shannon_entropy
from skimage.metrics import structural_similarity

from nasflow.tasks.ruas import metrics as M
from nasflow.tasks.ruas.data import read_image


def _rgb(h: int = 16, w: int = 20, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _chw(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(a.astype(np.float32) / 255.0).permute(2, 0, 1).contiguous()


# -- to_uint8 --------------------------------------------------------------------------------
def test_to_uint8_rounds_not_truncates():
    # 0.6 and 254.6 levels: rounding -> 1 and 255; truncation would give 0 and 254.
    x = torch.tensor([0.6, 254.6, 127.4, 0.0], dtype=torch.float32) / 255.0
    x = x.view(1, 1, 4).expand(3, 1, 4)
    out = M.to_uint8(x)
    assert out.shape == (1, 4, 3) and out.dtype == np.uint8
    assert out[0, :, 0].tolist() == [1, 255, 127, 0]
    truncated = (x.numpy() * 255.0).astype(np.uint8)
    assert truncated[0, 0, :2].tolist() == [0, 254]  # what truncation would have produced


def test_to_uint8_exact_levels_and_clamp():
    levels = torch.arange(256, dtype=torch.float32) / 255.0  # float32 k/255 * 255 may be k - eps
    out = M.to_uint8(levels.view(1, 1, 256).expand(3, 1, 256))
    assert out[0, :, 1].tolist() == list(range(256))
    clamped = M.to_uint8(torch.tensor([-0.5, 1.5, 2.0]).view(1, 1, 3).expand(3, 1, 3))
    assert clamped[0, :, 2].tolist() == [0, 255, 255]
    assert M.to_uint8(torch.zeros(1, 3, 2, 5)).shape == (2, 5, 3)  # batch of one accepted
    with pytest.raises(ValueError):
        M.to_uint8(torch.full((3, 2, 2), float("nan")))


def test_read_image_roundtrip_through_to_uint8(tmp_path: Path):
    a = _rgb(9, 11, seed=3)
    Image.fromarray(a).save(tmp_path / "x.png")
    np.testing.assert_array_equal(M.to_uint8(read_image(tmp_path / "x.png")), a)


# -- PSNR ------------------------------------------------------------------------------------
def test_psnr_by_hand():
    a = np.zeros((2, 2, 3), dtype=np.uint8)
    b = a.copy()
    b[1, 0, 2] = 1  # one value differs by one: MSE = 1/12
    expected = 10 * math.log10(255**2 / (1 / 12))
    assert M.psnr(a, b) == pytest.approx(expected, abs=1e-12)
    assert M.psnr(b, a) == pytest.approx(expected, abs=1e-12)
    # uint8 wrap-around must not happen: 0 vs 255 everywhere -> MSE 255^2 -> 0 dB
    assert M.psnr(a, np.full_like(a, 255)) == pytest.approx(0.0, abs=1e-12)


def test_psnr_identical_is_inf_and_errors():
    a = _rgb()
    assert M.psnr(a, a) == float("inf")
    with pytest.raises(TypeError):
        M.psnr(a.astype(np.float32), a.astype(np.float32))
    with pytest.raises(ValueError):
        M.psnr(a, a[:-1])


# -- GT-mean PSNR, brightness error ----------------------------------------------------------
def test_gt_mean_psnr_forgives_exposure_but_not_noise():
    gt = np.random.default_rng(3).integers(20, 220, (24, 30, 3), dtype=np.uint8)
    half = gt.astype(np.float64) / 255.0 * 0.5  # the right picture, one stop too dark
    assert M.gt_mean_psnr(half, gt) == float("inf")  # scaled back exactly, like psnr of equal images
    noisy = np.clip(half + np.random.default_rng(4).normal(0.0, 0.01, half.shape), 0.0, 1.0)
    plain = M.psnr(np.round(noisy * 255).astype(np.uint8), gt)
    scaled = M.gt_mean_psnr(noisy, gt)
    assert plain < 15.0 and scaled > plain + 15.0 and math.isfinite(scaled)
    assert M.gt_mean_psnr(gt, gt) == M.psnr(gt, gt) == float("inf")
    assert M.gt_mean_psnr(gt.astype(np.float32) / 255.0, gt) == float("inf")  # uint8 and float agree


def test_gt_mean_psnr_by_hand():
    # means over all pixels and channels: output 0.2 (mean 0.2), target mean 0.5 -> scale 2.5 (not per channel)
    out = np.full((1, 2, 3), 0.2)
    out[0, 1] = [0.1, 0.3, 0.2]
    gt = np.full((1, 2, 3), 0.5)
    scaled = np.round(np.clip(out * 2.5, 0, 1) * 255)  # [127.5 -> 128 (round half to even), 64, 191, 128]
    expected = 10 * math.log10(255**2 / np.mean((scaled - np.round(gt * 255)) ** 2))
    assert M.gt_mean_psnr(out, gt) == pytest.approx(expected, abs=1e-12)
    # clipped after scaling: a highlight cannot go past white
    out2 = np.array([[[0.05] * 3, [0.9] * 3]])  # mean 0.475; gt mean 0.9 -> scale 1.895: 0.9 -> 1.705 -> 1
    gt2 = np.full((1, 2, 3), 0.9)
    dark = round(0.05 * 0.9 / 0.475 * 255)  # 24
    expected2 = 10 * math.log10(255**2 / (((dark - 230) ** 2 + (255 - 230) ** 2) / 2))
    assert M.gt_mean_psnr(out2, gt2) == pytest.approx(expected2, abs=1e-12)
    black = np.zeros((2, 2, 3))
    assert M.gt_mean_psnr(black, np.full((2, 2, 3), 1.0)) == pytest.approx(0.0, abs=1e-12)  # nothing to scale
    with pytest.raises(ValueError):
        M.gt_mean_psnr(out, gt[:, :1])
    with pytest.raises(TypeError):
        M.gt_mean_psnr(out.astype(np.int32), gt)


def test_brightness_error_is_signed_in_8bit_levels():
    gt = np.full((4, 4, 3), 100, dtype=np.uint8)
    out = gt.copy()
    out[..., 0] = 130  # one channel 30 levels up: +10 over all channels
    assert M.brightness_error(out, gt) == pytest.approx(10.0)
    assert M.brightness_error(gt, out) == pytest.approx(-10.0)
    with pytest.raises(TypeError):
        M.brightness_error(out.astype(np.float32), gt)


# -- bootstrap -------------------------------------------------------------------------------
def test_bootstrap_interval_brackets_the_mean_and_matches_the_normal_interval():
    values = np.random.default_rng(5).normal(20.0, 3.0, 60)
    low, high = M.bootstrap_interval(values)
    assert low < values.mean() < high
    half = 1.96 * values.std(ddof=1) / math.sqrt(values.size)  # the CLT interval it should approach
    assert (high - low) / 2 == pytest.approx(half, rel=0.1)
    assert M.bootstrap_interval(values) == (low, high)  # fixed seed: reproducible
    assert M.bootstrap_interval(values, seed=1) != (low, high)
    narrow = M.bootstrap_interval(values, level=0.5)
    assert low < narrow[0] < narrow[1] < high


def test_bootstrap_interval_edge_cases():
    assert M.bootstrap_interval([7.0, 7.0, 7.0]) == (7.0, 7.0)
    assert M.bootstrap_interval([3.0]) == (3.0, 3.0)
    low, high = M.bootstrap_interval([0.0, 10.0], resamples=4000)
    assert (low, high) == (0.0, 10.0)  # two images: the means are 0, 5 or 10
    for bad in ([], [1.0, float("inf")]):
        with pytest.raises(ValueError):
            M.bootstrap_interval(bad)
    with pytest.raises(ValueError):
        M.bootstrap_interval([1.0, 2.0], level=1.0)


# -- SSIM ------------------------------------------------------------------------------------
def test_ssim_matches_skimage_and_identity():
    a, b = _rgb(seed=1), _rgb(seed=2)
    b = (a.astype(np.int16) // 2 + b // 4).astype(np.uint8)  # correlated, so SSIM is not ~0
    ref = structural_similarity(a, b, channel_axis=2, data_range=255)
    assert M.ssim(a, b) == ref
    assert M.ssim(a, a) == 1.0


def test_ssim_too_small_raises():
    a = _rgb(6, 20)
    with pytest.raises(ValueError, match="at least 7x7"):
        M.ssim(a, a)
    assert M.ssim(_rgb(7, 7), _rgb(7, 7)) == 1.0


# -- no-reference statistics -----------------------------------------------------------------
def test_mean_brightness():
    a = np.zeros((4, 4, 3), dtype=np.uint8)
    a[:, :, 0] = 255
    assert M.mean_brightness(a) == pytest.approx(1 / 3)
    assert M.mean_brightness(_chw(a)) == pytest.approx(1 / 3)


def test_entropy_two_levels_is_one_bit():
    a = np.zeros((8, 8, 3), dtype=np.uint8)
    a[:4] = 255  # half black, half white
    assert M.entropy(a) == pytest.approx(1.0, abs=1e-12)
    assert M.entropy(np.full((5, 5, 3), 77, dtype=np.uint8)) == 0.0
    c = _rgb(seed=5)
    assert M.entropy(c) == pytest.approx(shannon_entropy(M.gray_uint8(c)), abs=1e-9)
    # gray conversion agrees with Pillow's convert("L") up to one level of rounding
    pil = np.asarray(Image.fromarray(c).convert("L")).astype(int)
    assert np.abs(M.gray_uint8(c).astype(int) - pil).max() <= 1


def test_noise_sigma_recovers_white_noise_and_ignores_ramps():
    rng = np.random.default_rng(0)
    flat = np.full((200, 240), 128.0)
    for sigma in (2.0, 8.0, 20.0):
        noisy = np.clip(np.round(flat + rng.normal(0, sigma, flat.shape)), 0, 255).astype(np.uint8)
        assert M.noise_sigma(np.repeat(noisy[:, :, None], 3, axis=2)) == pytest.approx(sigma, rel=0.05)
    # a smooth gradient (second order and below) has no noise; its rounding to 8 bits reads < 0.5
    yy, xx = np.mgrid[0:120, 0:160]
    ramp = np.round(20 + 0.5 * xx + 0.3 * yy).astype(np.uint8)
    assert M.noise_sigma(np.repeat(ramp[:, :, None], 3, axis=2)) < 0.5
    # twice the noise reads twice as high: a gain on noise shows up
    base = rng.normal(0, 4.0, flat.shape)
    one = np.clip(np.round(flat + base), 0, 255).astype(np.uint8)[:, :, None]
    two = np.clip(np.round(flat + 2 * base), 0, 255).astype(np.uint8)[:, :, None]
    assert M.noise_sigma(two) == pytest.approx(2 * M.noise_sigma(one), rel=0.05)
    with pytest.raises(ValueError, match="3x3"):
        M.noise_sigma(np.zeros((2, 5, 3), dtype=np.uint8))


def _dark_flat_and_bright_textured(h: int = 120, w: int = 160, seed: int = 0) -> np.ndarray:
    """Left half a flat dark patch (level 40), right half bright random texture: an 8-bit gray photo."""
    img = np.full((h, w), 40.0)
    img[:, w // 2 :] = np.random.default_rng(seed).uniform(120, 255, (h, w - w // 2))
    return np.repeat(np.round(img)[:, :, None], 3, axis=2).astype(np.uint8)


def test_flat_dark_mask_is_the_flattest_half_of_the_darkest_third():
    inp = _dark_flat_and_bright_textured()
    mask = M.flat_dark_mask(inp)
    assert mask.shape == inp.shape[:2]
    assert not mask[:, 80:].any()  # nothing from the bright half
    assert 0.1 <= mask.mean() <= 0.5  # about a sixth of the image; ties in a flat patch may keep more


def test_flat_dark_noise_reads_the_noise_of_flat_dark_areas():
    from scipy.ndimage import gaussian_filter

    inp = _dark_flat_and_bright_textured()
    rng = np.random.default_rng(1)
    for sigma in (3.0, 6.0):
        out = np.clip(np.round(inp + rng.normal(0, sigma, inp.shape[:2])[:, :, None]), 0, 255).astype(np.uint8)
        assert M.flat_dark_noise(out, inp) == pytest.approx(sigma, rel=0.1)
        assert M.noise_sigma(out) > 3 * sigma  # the whole-image figure is swamped by the texture
        smoothed = np.round(gaussian_filter(out.astype(float), (1.5, 1.5, 0))).astype(np.uint8)
        assert M.flat_dark_noise(smoothed, inp) < 0.3 * M.flat_dark_noise(out, inp)
    # noise outside the flat dark areas does not count
    bright_noisy = inp.astype(float)
    bright_noisy[:, 80:] += rng.normal(0, 10, (120, 80, 1))
    assert M.flat_dark_noise(np.clip(np.round(bright_noisy), 0, 255).astype(np.uint8), inp) < 0.5
    with pytest.raises(ValueError, match="size"):
        M.flat_dark_noise(inp[:, :100], inp)


def _gray_ramp(h: int, w: int) -> np.ndarray:
    v = np.linspace(10, 240, h * w).reshape(h, w)
    return np.repeat(np.round(v)[:, :, None], 3, axis=2).astype(np.uint8)


def test_loe_self_zero_and_inverted_positive():
    a = _rgb(30, 40, seed=7)
    assert M.lightness_order_error(a, a) == 0.0
    g = _gray_ramp(12, 10)
    inv = 255 - g  # R=G=B, so lightness max(R,G,B) is exactly inverted
    loe = M.lightness_order_error(inv, g)
    m = 12 * 10
    # every strictly ordered pair flips; with distinct values that is m - 1 per pixel
    levels = g[:, :, 0].ravel().astype(float)
    ties = (levels[:, None] == levels[None, :]).sum() - m
    assert loe == pytest.approx((m * (m - 1) - ties) / m)
    assert loe > 0
    # a monotone brightening keeps the order: LOE 0
    brighter = np.clip(g.astype(int) + 10, 0, 255).astype(np.uint8)
    assert M.lightness_order_error(brighter, g) == 0.0


def test_loe_downsampling_and_size_check():
    a = _rgb(120, 160, seed=8)
    b = (255 - a).astype(np.uint8)
    small = M.lightness_order_error(b, a)  # 120x160 -> 50x67
    assert 0 < small <= 50 * 67
    assert M.lightness_order_error(a, a, downsample=None) == 0.0
    with pytest.raises(ValueError):
        M.lightness_order_error(a, a[:-1])


# -- sets ------------------------------------------------------------------------------------
def _pairs():
    out = []
    for i in range(3):
        inp = _chw(_rgb(10, 12, seed=10 + i) // 4)
        outp = (inp * 3).clamp(0, 1)
        tgt = None if i == 1 else _chw(_rgb(10, 12, seed=20 + i))
        out.append((f"img{i}", outp, tgt, inp))
    return out


def test_evaluate_pairs_means_are_row_means(tmp_path: Path):
    rows, means = M.evaluate_pairs(_pairs())
    assert [r["name"] for r in rows] == ["img0", "img1", "img2"]
    assert rows[1]["psnr"] is None and rows[1]["ssim"] is None
    assert means["count"] == 3 and means["paired"] == 2
    for key in ("psnr", "ssim"):
        vals = [r[key] for r in rows if r[key] is not None]
        assert means[key] == pytest.approx(sum(vals) / len(vals))
    for key in ("brightness", "entropy", "loe"):
        assert means[key] == pytest.approx(sum(r[key] for r in rows) / 3)
    _, o, t, _ = _pairs()[0]
    assert rows[0]["psnr"] == M.psnr(M.to_uint8(o), M.to_uint8(t))

    path = M.write_csv(rows, tmp_path / "sub" / "metrics.csv", means=means)
    with path.open() as fh:
        got = list(csv.DictReader(fh))
    assert [g["name"] for g in got] == ["img0", "img1", "img2", "mean"]
    assert got[1]["psnr"] == "" and float(got[0]["psnr"]) == rows[0]["psnr"]
    assert float(got[3]["loe"]) == means["loe"]


def test_evaluate_pairs_caps_infinite_psnr():
    x = _chw(_rgb(8, 8, seed=1))
    y = _chw(_rgb(8, 8, seed=2))
    rows, means = M.evaluate_pairs([("same", x, x, x), ("diff", x, y, x)])
    assert rows[0]["psnr"] == float("inf") and rows[0]["ssim"] == 1.0
    assert means["psnr"] == pytest.approx((M.PSNR_CAP_DB + rows[1]["psnr"]) / 2)
    _, unpaired = M.evaluate_pairs([("a", x, None, x)])
    assert "psnr" not in unpaired and unpaired["paired"] == 0


def test_evaluate_pairs_shape_mismatch():
    x = _chw(_rgb(8, 8))
    with pytest.raises(ValueError, match="bad"):
        M.evaluate_pairs([("bad", x, _chw(_rgb(8, 9)), x)])


# -- contact sheet ---------------------------------------------------------------------------
def test_contact_sheet_size(tmp_path: Path):
    a, b = _chw(_rgb(20, 30, seed=1)), _chw(_rgb(40, 40, seed=2))
    rows = [("first", [a, a, a]), ("second", [b, b, None])]
    path = M.contact_sheet(rows, tmp_path / "sheet.png")
    assert path.is_file()
    pad, lab = M.SHEET_PAD, M.SHEET_LABEL_HEIGHT
    h = 20  # smallest image height; b tiles become 20x20
    width = max(3 * 30 + 4 * pad, 3 * 20 + 4 * pad)
    with Image.open(path) as im:
        assert im.size == (width, 2 * (lab + h + pad) + pad)
        assert im.mode == "RGB"


def test_contact_sheet_max_width(tmp_path: Path):
    a = _chw(_rgb(50, 100, seed=1))
    path = M.contact_sheet([("wide", [a, a, a])], tmp_path / "s.png", max_width=160, labels=False)
    with Image.open(path) as im:
        assert im.size[0] <= 160
        h = im.size[1] - 2 * M.SHEET_PAD
        assert 3 * (2 * h) + 4 * M.SHEET_PAD <= 160 and h >= 20


# -- colour cast -----------------------------------------------------------------------------


def _grey_card_scene() -> np.ndarray:
    """A white card on a red table: the card is the near-neutral reference region."""
    a = np.zeros((40, 60, 3), dtype=np.uint8)
    a[...] = (150, 60, 40)
    a[10:30, 20:40] = (200, 200, 200)
    return a


def test_neutral_cast_zero_for_grey_and_large_for_magenta():
    ref = _grey_card_scene()
    darker = (ref.astype(np.float64) * 0.5).round().astype(np.uint8)
    assert M.neutral_cast(ref, ref) == 0.0 and M.neutral_cast(darker, ref) == 0.0
    magenta = ref.copy()
    magenta[10:30, 20:40] = (230, 150, 220)  # the card turned magenta
    assert M.neutral_cast(magenta, ref) == pytest.approx((230 - 150) / ((230 + 150 + 220) / 3), rel=1e-6)
    assert M.neutral_cast(ref, np.full_like(ref, (150, 60, 40))) is None  # no neutral region


def test_grey_world_shift_ignores_exposure_not_casts():
    ref = _grey_card_scene()
    lin = M.srgb_to_linear(ref / 255.0)
    darker_lin = 0.2 * lin  # a shorter exposure: one gain in linear light
    enc = np.where(darker_lin <= 0.0031308, 12.92 * darker_lin, 1.055 * np.maximum(darker_lin, 0.0031308) ** (1 / 2.4) - 0.055)
    darker = (enc * 255).round().astype(np.uint8)
    assert M.grey_world_shift(darker, ref) < 0.02
    cast = ref.copy()
    cast[..., 1] = (cast[..., 1] * 0.7).round().astype(np.uint8)  # green pulled down
    assert M.grey_world_shift(cast, ref) > 0.2
    with pytest.raises(ValueError, match="shapes differ"):
        M.grey_world_shift(ref[:10], ref)


# -- hue shift ---------------------------------------------------------------------------------
def _patch(rgb: tuple[float, float, float], size: int = 8) -> np.ndarray:
    return np.round(np.tile(np.array(rgb, np.float64), (size, size, 1)) * 255).astype(np.uint8)


def test_hue_of_the_primaries_and_an_orange() -> None:
    from nasflow.tasks.ruas.metrics import hue

    rgb = np.array([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0], [1.0, 0.5, 0.0], [1.0, 0.0, 0.5]])
    assert hue(rgb).tolist() == pytest.approx([0.0, 120.0, 240.0, 30.0, 330.0])


def test_a_shared_gain_keeps_the_hue_and_a_clip_per_channel_turns_it() -> None:
    from nasflow.tasks.ruas.metrics import hue_shift

    orange = _patch((0.4, 0.2, 0.05))
    assert hue_shift(_patch((0.8, 0.4, 0.1)), orange) == pytest.approx(0.0, abs=0.5)  # x2: same hue
    clipped = _patch((1.0, 0.8, 0.2))  # x4 and each channel clipped: 1.6 -> 1
    assert hue_shift(clipped, orange) > 15.0  # orange (26 deg) turned yellow (45 deg)


def test_hue_shift_wraps_round_the_circle_and_skips_grey() -> None:
    from nasflow.tasks.ruas.metrics import hue_shift

    assert hue_shift(_patch((1.0, 0.0, 0.05)), _patch((1.0, 0.05, 0.0))) == pytest.approx(6.0, abs=0.5)  # 357 vs 3
    assert np.isnan(hue_shift(_patch((0.5, 0.5, 0.5)), _patch((0.2, 0.2, 0.2))))  # no colour to turn

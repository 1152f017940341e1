"""Evaluation metrics for low-light enhancement, on 8-bit RGB as in the project protocol.

Protocol (``../shared/data/README.md``): outputs are converted to 8-bit by **rounding** (not
truncation), PSNR is computed on 8-bit RGB, SSIM is scikit-image's
``structural_similarity(a, b, channel_axis=2, data_range=255)``, and both are averaged over images.

* :func:`to_uint8` -- float ``(3, H, W)`` tensor in ``[0, 1]`` -> ``(H, W, 3)`` uint8, rounded.
* :func:`psnr`, :func:`ssim` -- full-reference metrics on two uint8 HWC images.
* :func:`gt_mean_psnr`, :func:`brightness_error` -- exposure apart from the rest: PSNR after
  scaling the output to the ground truth's mean, and the signed mean-brightness difference.
* :func:`bootstrap_interval` -- a percentile bootstrap interval of a mean over images.
* :func:`neutral_cast`, :func:`grey_world_shift` -- colour cast of an output against its reference.
* :func:`mean_brightness`, :func:`entropy`, :func:`lightness_order_error`, :func:`noise_sigma`
  -- no-reference statistics for sets without ground truth.
* :func:`evaluate_pairs` -> per-image rows and means; :func:`write_csv` writes them.
* :func:`contact_sheet` -- a before/after grid PNG (e.g. input | output | target) for eyeballing.

Functions that take "an image" accept either a float tensor (``(C, H, W)`` or ``(1, C, H, W)``,
values in ``[0, 1]``, converted with :func:`to_uint8`) or an 8-bit ``(H, W, C)`` numpy array.
"""

from __future__ import annotations

import csv
import io
import math
import os
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from nasflow.atomic import write_atomic, write_text_atomic

__all__ = [
    "PSNR_CAP_DB",
    "SSIM_MIN_SIZE",
    "LOE_SIZE",
    "to_uint8",
    "psnr",
    "ssim",
    "gt_mean_psnr",
    "brightness_error",
    "bootstrap_interval",
    "neutral_cast",
    "grey_world_shift",
    "mean_brightness",
    "gray_uint8",
    "entropy",
    "lightness_order_error",
    "noise_sigma",
    "flat_dark_mask",
    "flat_dark_noise",
    "average",
    "evaluate_pairs",
    "write_csv",
    "contact_sheet",
]

#: PSNR values are capped at this many dB when averaged (identical images give ``inf``).
PSNR_CAP_DB = 100.0
#: scikit-image's default SSIM window is 7x7; smaller images cannot be scored.
SSIM_MIN_SIZE = 7
#: LOE downsamples so that the shorter side has this many pixels (as in the NPE reference code).
LOE_SIZE = 50


# -- conversion ------------------------------------------------------------------------------


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """A float ``(C, H, W)`` tensor in ``[0, 1]`` -> an ``(H, W, C)`` uint8 numpy array.

    Values are clamped to ``[0, 1]``, scaled by 255 and **rounded** to the nearest integer
    (``torch.round``: ties go to the even integer, like ``np.round``) -- never truncated, which
    would bias every pixel down by half a level on average and turn e.g. ``float32(100/255)*255
    = 99.99999`` into 99. The arithmetic is done in float64. A leading batch dimension of size 1
    is dropped; NaN is an error.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"to_uint8 expects a torch.Tensor, got {type(x).__name__}")
    if x.dim() == 4 and x.shape[0] == 1:
        x = x[0]
    if x.dim() != 3:
        raise ValueError(f"expected a (C, H, W) tensor, got shape {tuple(x.shape)}")
    t = x.detach().to("cpu", torch.float64)
    if torch.isnan(t).any():
        raise ValueError("image contains NaN")
    t = torch.round(t.clamp(0.0, 1.0) * 255.0)
    return np.ascontiguousarray(t.to(torch.uint8).permute(1, 2, 0).numpy())


def _as_uint8(x: Any, what: str = "image") -> np.ndarray:
    """A tensor (-> :func:`to_uint8`) or a uint8 HWC array (returned as is)."""
    if isinstance(x, torch.Tensor):
        return to_uint8(x)
    if isinstance(x, np.ndarray):
        if x.dtype != np.uint8:
            raise TypeError(f"{what}: expected a uint8 array, got dtype {x.dtype} (use to_uint8 for floats)")
        if x.ndim == 2:
            x = x[:, :, None]
        if x.ndim != 3:
            raise ValueError(f"{what}: expected an (H, W, C) array, got shape {x.shape}")
        return x
    raise TypeError(f"{what}: expected a torch.Tensor or a uint8 numpy array, got {type(x).__name__}")


def _check_pair(a: np.ndarray, b: np.ndarray) -> None:
    for name, arr in (("a", a), ("b", b)):
        if not isinstance(arr, np.ndarray) or arr.dtype != np.uint8:
            kind = getattr(arr, "dtype", type(arr).__name__)
            raise TypeError(f"{name}: expected a uint8 numpy array, got {kind} (use to_uint8 first)")
        if arr.ndim != 3:
            raise ValueError(f"{name}: expected an (H, W, C) array, got shape {arr.shape}")
    if a.shape != b.shape:
        raise ValueError(f"image shapes differ: {a.shape} vs {b.shape}")


# -- full-reference metrics ------------------------------------------------------------------


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of two 8-bit ``(H, W, C)`` images: ``10 log10(255^2 / MSE)``.

    The MSE is taken over all pixels *and* channels (float64), data range 255. Identical
    images have MSE 0 and give ``float('inf')``; :func:`average` / :func:`evaluate_pairs` cap
    each value at :data:`PSNR_CAP_DB` (100 dB) before averaging so one perfect image cannot make
    the mean infinite.
    """
    _check_pair(a, b)
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    if mse == 0.0:
        return float("inf")
    return 10.0 * math.log10(255.0**2 / mse)


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM of two 8-bit ``(H, W, 3)`` images, exactly the project protocol:

    ``skimage.metrics.structural_similarity(a, b, channel_axis=2, data_range=255)`` -- 7x7
    uniform window, the mean of the per-channel SSIM maps. Images with a side shorter than 7
    pixels raise :class:`ValueError` (scikit-image cannot fit its window).
    """
    from skimage.metrics import structural_similarity

    _check_pair(a, b)
    h, w = a.shape[:2]
    if min(h, w) < SSIM_MIN_SIZE:
        raise ValueError(
            f"SSIM needs images of at least {SSIM_MIN_SIZE}x{SSIM_MIN_SIZE} pixels (its window); got {h}x{w}"
        )
    return float(structural_similarity(a, b, channel_axis=2, data_range=255))


def _as_float01(x: np.ndarray, what: str) -> np.ndarray:
    """An ``(H, W, C)`` image as float64 in ``[0, 1]``: uint8 divided by 255, floats as they are."""
    if not isinstance(x, np.ndarray) or x.ndim != 3:
        raise ValueError(f"{what}: expected an (H, W, C) numpy array, got {getattr(x, 'shape', type(x).__name__)}")
    if x.dtype == np.uint8:
        return x.astype(np.float64) / 255.0
    if not np.issubdtype(x.dtype, np.floating):
        raise TypeError(f"{what}: expected uint8 or float values in [0, 1], got dtype {x.dtype}")
    return x.astype(np.float64)


def _round8(x: np.ndarray) -> np.ndarray:
    """Float in ``[0, 1]`` -> uint8 by rounding (the protocol: never truncate)."""
    return np.round(np.clip(x, 0.0, 1.0) * 255.0).astype(np.uint8)


def gt_mean_psnr(output: np.ndarray, target: np.ndarray) -> float:
    """PSNR after scaling the output to the ground truth's mean brightness (the "GT-mean" PSNR).

    A convention of low-light papers (e.g. KinD, Zhang et al. 2019; LLFlow, Wang et al. 2022)
    that takes global exposure out of the score, so what is left is the network's work on
    structure, colour and noise. Here::

        out' = clip(out * mean(gt) / mean(out), 0, 1),   score = psnr(round(255 out'), gt_8bit)

    with both means over all pixels *and* channels of the float images (LLFlow uses the mean of
    the gray image instead). ``output`` and ``target`` are ``(H, W, C)`` arrays, float in
    ``[0, 1]`` or uint8; the output is clipped to ``[0, 1]`` first. An all-black output cannot
    be scaled and is scored as it is. Identical images give ``inf`` like :func:`psnr`.
    """
    out = np.clip(_as_float01(output, "output"), 0.0, 1.0)
    gt = _as_float01(target, "target")
    if out.shape != gt.shape:
        raise ValueError(f"image shapes differ: {out.shape} vs {gt.shape}")
    out_mean = float(out.mean())
    if out_mean > 0.0:
        out = np.clip(out * (float(gt.mean()) / out_mean), 0.0, 1.0)
    return psnr(_round8(out), _round8(gt))


def brightness_error(output: np.ndarray, target: np.ndarray) -> float:
    """``mean(output) - mean(target)`` in 8-bit levels (signed: > 0 is brighter than the ground
    truth), means over all pixels and channels of two 8-bit ``(H, W, C)`` images."""
    _check_pair(output, target)
    return float(output.astype(np.float64).mean() - target.astype(np.float64).mean())


def bootstrap_interval(
    values: Sequence[float], *, resamples: int = 10_000, level: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (Efron & Tibshirani 1993, ch. 13).

    Draws ``resamples`` samples of ``len(values)`` values with replacement (numpy generator seeded
    with ``seed``, so the interval is reproducible), takes each sample's mean and returns the
    ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles of those means. It says how much the
    mean depends on which images happened to be in the set; with a handful of images it is wide
    (and with one image it is that image's value, which says nothing). Values must be finite.
    """
    vals = np.asarray(list(values), dtype=np.float64)
    if vals.ndim != 1 or vals.size == 0:
        raise ValueError("bootstrap_interval needs a non-empty sequence of numbers")
    if not np.isfinite(vals).all():
        raise ValueError("bootstrap_interval needs finite values (cap PSNR first, e.g. at PSNR_CAP_DB)")
    if resamples < 1 or not 0.0 < level < 1.0:
        raise ValueError(f"need resamples >= 1 and 0 < level < 1, got {resamples} and {level}")
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    chunk = max(1, 2_000_000 // vals.size)  # bound the (chunk, n) index matrix to ~16 MB
    for start in range(0, resamples, chunk):
        stop = min(resamples, start + chunk)
        means[start:stop] = vals[rng.integers(0, vals.size, (stop - start, vals.size))].mean(axis=1)
    low, high = np.quantile(means, [(1.0 - level) / 2.0, (1.0 + level) / 2.0])
    return float(low), float(high)
# -- colour cast (output vs reference) -------------------------------------------------------

#: Reference pixels count as near-neutral when their channels differ by at most this (of full
#: scale) and their mean lies in NEUTRAL_RANGE (not near black, where noise dominates, nor clipped).
NEUTRAL_CHROMA = 0.08
NEUTRAL_RANGE = (0.2, 0.95)


def neutral_cast(output: Any, reference: Any, min_fraction: float = 0.002) -> float | None:
    """Colour cast of ``output`` where ``reference`` is near-neutral (white, grey): with ``m_R, m_G,
    m_B`` the output's channel means over those pixels, ``(max m - min m) / mean m`` (0: grey stays
    grey; a magenta white cup, green low, gives about 0.3). None when fewer than ``min_fraction`` of
    the pixels are near-neutral. Pixels per :data:`NEUTRAL_CHROMA` and :data:`NEUTRAL_RANGE`."""
    out8, ref8 = _as_uint8(output, "output"), _as_uint8(reference, "reference")
    _check_pair(out8, ref8)
    out, ref = out8.astype(np.float64) / 255.0, ref8.astype(np.float64) / 255.0
    if out.shape[2] != 3:
        raise ValueError(f"neutral_cast needs RGB images, got {out.shape[2]} channels")
    level = ref.mean(axis=2)
    mask = (ref.max(axis=2) - ref.min(axis=2) <= NEUTRAL_CHROMA) & (level >= NEUTRAL_RANGE[0]) & (level <= NEUTRAL_RANGE[1])
    if mask.mean() < min_fraction:
        return None
    means = out[mask].mean(axis=0)
    return float((means.max() - means.min()) / max(means.mean(), 1e-6))


def srgb_to_linear(x: np.ndarray) -> np.ndarray:
    """sRGB-encoded values in [0, 1] -> linear light (IEC 61966-2-1, the sRGB decoding curve)."""
    x = np.clip(x, 0.0, 1.0)
    return np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4)


def grey_world_shift(output: Any, reference: Any) -> float:
    """How far the output's colour balance moved from the reference's, grey-world style, in linear
    light: the largest ``|c_out / c_ref - 1|`` over channels, ``c`` a channel's mean linear value
    (:func:`srgb_to_linear`) over the image divided by the mean of all three. A change of exposure
    is one gain in linear light and gives 0 (up to clipping); a cast in any channel does not."""
    out8, ref8 = _as_uint8(output, "output"), _as_uint8(reference, "reference")
    _check_pair(out8, ref8)
    out = srgb_to_linear(out8 / 255.0).reshape(-1, out8.shape[2]).mean(axis=0) + 1e-6
    ref = srgb_to_linear(ref8 / 255.0).reshape(-1, ref8.shape[2]).mean(axis=0) + 1e-6
    return float(np.abs((out / out.mean()) / (ref / ref.mean()) - 1.0).max())


# -- no-reference statistics -----------------------------------------------------------------


def mean_brightness(x: Any) -> float:
    """Mean brightness in ``[0, 1]``: the mean of the 8-bit image over all pixels and all RGB
    channels, divided by 255 (not a V or Y channel)."""
    return float(_as_uint8(x).astype(np.float64).mean() / 255.0)


def gray_uint8(x: Any) -> np.ndarray:
    """8-bit gray ``(H, W)`` image: ITU-R BT.601 luma ``0.299 R + 0.587 G + 0.114 B``, rounded
    (the weights of Pillow's ``convert("L")``). A 1-channel image is returned as is."""
    a = _as_uint8(x)
    if a.shape[2] == 1:
        return a[:, :, 0]
    if a.shape[2] != 3:
        raise ValueError(f"expected 1 or 3 channels, got {a.shape[2]}")
    f = a.astype(np.float64)
    y = 0.299 * f[:, :, 0] + 0.587 * f[:, :, 1] + 0.114 * f[:, :, 2]
    return np.clip(np.round(y), 0, 255).astype(np.uint8)


def entropy(x: Any) -> float:
    """Shannon entropy in bits of the 256-bin histogram of the 8-bit gray image
    (:func:`gray_uint8`): ``-sum p_k log2 p_k`` over non-empty bins; in ``[0, 8]``.
    Equals ``skimage.measure.shannon_entropy`` of that gray image."""
    g = gray_uint8(x)
    counts = np.bincount(g.ravel(), minlength=256).astype(np.float64)
    p = counts[counts > 0] / g.size
    return float(-(p * np.log2(p)).sum()) + 0.0  # + 0.0 turns -0.0 into 0.0


def _lightness_small(a: np.ndarray, size: int | None) -> np.ndarray:
    """Lightness ``max(R, G, B)`` (float64, 0..255), area-downsampled so the shorter side is
    ``size`` pixels (never upsampled; ``None`` keeps full resolution)."""
    light = a.astype(np.float64).max(axis=2)
    h, w = light.shape
    if size is None or min(h, w) <= size:
        return light
    r = size / min(h, w)
    hd, wd = max(1, round(h * r)), max(1, round(w * r))
    t = torch.from_numpy(light)[None, None]
    return F.interpolate(t, size=(hd, wd), mode="bilinear", align_corners=False, antialias=True)[0, 0].numpy()


def lightness_order_error(enhanced: Any, original: Any, downsample: int | None = LOE_SIZE) -> float:
    """Lightness-order error (LOE; Wang et al., "Naturalness preserved enhancement algorithm
    for non-uniform illumination images", TIP 2013). Lower is better; 0 = order fully kept.

    Definition used here:

    * lightness ``L(x) = max_c I_c(x)`` of each 8-bit image (0..255);
    * both lightness maps are downsampled (bilinear with antialiasing) so the shorter side is
      ``downsample`` pixels (50 by default, as in the NPE reference code; ``None`` = no
      downsampling; images already that small are kept as they are);
    * ``U(p, q) = 1 if p >= q else 0``, ``RD(x) = sum_y U(L(x), L(y)) XOR U(Le(x), Le(y))``;
    * ``LOE = mean_x RD(x)`` -- the average *count* of flipped pairs per pixel, so its scale
      depends on the number of (downsampled) pixels ``m``: it lies in ``[0, m]``.

    ``enhanced`` and ``original`` must have the same height and width.
    """
    e = _as_uint8(enhanced, "enhanced")
    o = _as_uint8(original, "original")
    if e.shape[:2] != o.shape[:2]:
        raise ValueError(f"LOE needs images of the same size: {e.shape[:2]} vs {o.shape[:2]}")
    le = _lightness_small(e, downsample).ravel()
    lo = _lightness_small(o, downsample).ravel()
    m = le.size
    flips = 0
    chunk = max(1, 4_000_000 // m)  # bound the (chunk, m) boolean matrices to a few MB
    for s in range(0, m, chunk):
        uo = lo[s : s + chunk, None] >= lo[None, :]
        ue = le[s : s + chunk, None] >= le[None, :]
        flips += int(np.count_nonzero(uo ^ ue))
    return flips / m


def noise_sigma(x: Any) -> float:
    """Standard deviation of white noise in the 8-bit gray image (:func:`gray_uint8`), in 8-bit
    levels, by Immerkaer's fast estimator ("Fast noise variance estimation", CVIU 1996, eq. 2)::

        sigma = sqrt(pi / 2) / (6 (W - 2) (H - 2)) * sum_x |(I * N)(x)|,
        N = [[1, -2, 1], [-2, 4, -2], [1, -2, 1]]

    ``N`` is the difference of two Laplacians, so it cancels image structure up to second order
    and leaves the noise; strong texture still reads as some noise. Needs at least 3x3 pixels.
    """
    g = gray_uint8(x).astype(np.float64)
    h, w = g.shape
    if h < 3 or w < 3:
        raise ValueError(f"noise_sigma needs at least 3x3 pixels, got {h}x{w}")
    n = np.array([[1.0, -2.0, 1.0], [-2.0, 4.0, -2.0], [1.0, -2.0, 1.0]])
    conv = sum(n[i, j] * g[i : h - 2 + i, j : w - 2 + j] for i in range(3) for j in range(3))
    return float(math.sqrt(math.pi / 2.0) * np.abs(conv).sum() / (6.0 * (w - 2) * (h - 2)))


#: :func:`flat_dark_mask`'s rule: Gaussian blur of the input's gray image (pixels), the share of darkest
#: pixels kept, and the share of those (the flattest) kept after them.
FLAT_DARK_BLUR = 2.0
FLAT_DARK_SHARE = 1.0 / 3.0
FLAT_SHARE = 0.5


def flat_dark_mask(original: Any) -> np.ndarray:
    """Where an input is dark and flat: a boolean ``(H, W)`` mask, from the input alone.

    Rule: blur the input's 8-bit gray image (:func:`gray_uint8`) with a Gaussian of sigma
    :data:`FLAT_DARK_BLUR` = 2 pixels (so the input's own noise does not decide); a pixel is *dark*
    when its blurred value is in the image's darkest third (at or below the 1/3 quantile), and *flat*
    when, among the dark pixels, its blurred gradient magnitude (central differences) is at or below
    their median. So the mask holds about a sixth of every image: the flattest half of its darkest
    third, the sky, walls and shadows where an enhancer's amplified noise shows most. A share, not
    a level, so the rule is the same for every photo.
    """
    from scipy.ndimage import gaussian_filter

    g = gaussian_filter(gray_uint8(original).astype(np.float64), FLAT_DARK_BLUR, mode="reflect")
    dark = g <= np.quantile(g, FLAT_DARK_SHARE)
    gy, gx = np.gradient(g)
    grad = np.hypot(gx, gy)
    return dark & (grad <= np.quantile(grad[dark], FLAT_SHARE))


def flat_dark_noise(enhanced: Any, original: Any) -> float:
    """Immerkaer's noise estimate (:func:`noise_sigma`, 8-bit levels) of ``enhanced`` restricted to the
    flat dark areas of ``original`` (:func:`flat_dark_mask`): ``sqrt(pi/2) / 6 * mean |(I * N)(x)|``
    over the mask's pixels whose 3x3 neighbourhood is inside the image. NaN when there are none.

    Whole-image noise is dominated by texture and bright areas; the noise an enhancer lifts out of
    the dark is what this one sees. On a flat patch with white noise of std sigma it reads sigma.
    """
    g = gray_uint8(enhanced).astype(np.float64)
    mask = flat_dark_mask(original)
    if mask.shape != g.shape:
        raise ValueError(f"enhanced and original differ in size: {g.shape} vs {mask.shape}")
    h, w = g.shape
    if h < 3 or w < 3:
        raise ValueError(f"flat_dark_noise needs at least 3x3 pixels, got {h}x{w}")
    n = np.array([[1.0, -2.0, 1.0], [-2.0, 4.0, -2.0], [1.0, -2.0, 1.0]])
    conv = sum(n[i, j] * g[i : h - 2 + i, j : w - 2 + j] for i in range(3) for j in range(3))
    inner = mask[1 : h - 1, 1 : w - 1]
    if not inner.any():
        return float("nan")
    return float(math.sqrt(math.pi / 2.0) * np.abs(conv[inner]).mean() / 6.0)


HUE_MIN_CHROMA = 0.1  # hue_shift's "coloured": max - min of R, G, B at least a tenth of full scale, in and out


def hue(x: np.ndarray) -> np.ndarray:
    """The HSV hue in degrees [0, 360) of float RGB ``(..., 3)`` (Smith 1978; any value where max = min)."""
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    top, chroma = x.max(axis=-1), x.max(axis=-1) - x.min(axis=-1)
    safe = np.where(chroma > 0, chroma, 1.0)
    h = np.where(top == r, ((g - b) / safe) % 6.0, np.where(top == g, (b - r) / safe + 2.0, (r - g) / safe + 4.0))
    return 60.0 * h


def hue_shift(enhanced: Any, original: Any) -> float:
    """Mean absolute hue change in degrees (on the colour circle) between ``original`` and ``enhanced``
    over the pixels coloured in both (chroma of at least :data:`HUE_MIN_CHROMA`): a gain, a lift
    shared by R, G and B, or a roll-off that scales them alike keeps it at 0 (up to 8-bit rounding);
    a channel clipped on its own turns it (an orange lamp clipped in red turns yellow). NaN when no
    pixel is coloured in both."""
    a8, b8 = _as_uint8(enhanced, "enhanced"), _as_uint8(original, "original")
    _check_pair(a8, b8)
    if a8.shape[-1] != 3:
        raise ValueError(f"hue_shift needs RGB images, got {a8.shape[-1]} channel(s)")
    a, b = a8.astype(np.float64) / 255.0, b8.astype(np.float64) / 255.0
    coloured = (np.ptp(a, axis=-1) >= HUE_MIN_CHROMA) & (np.ptp(b, axis=-1) >= HUE_MIN_CHROMA)
    if not coloured.any():
        return float("nan")
    d = np.abs(hue(a[coloured]) - hue(b[coloured]))
    return float(np.minimum(d, 360.0 - d).mean())


# -- sets of images --------------------------------------------------------------------------


def average(values: Iterable[float | None], cap: float | None = None) -> float:
    """Mean of the non-``None`` values, each first capped at ``cap`` (when given); NaN if none."""
    vals = [float(v) for v in values if v is not None]
    if cap is not None:
        vals = [min(v, cap) for v in vals]
    return float(np.mean(vals)) if vals else float("nan")


def evaluate_pairs(
    pairs: Iterable[tuple[str, Any, Any, Any]],
    loe_downsample: int | None = LOE_SIZE,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Score ``(name, output, target_or_None, input)`` tuples (CHW tensors in ``[0, 1]`` or
    uint8 HWC arrays).

    Each row: ``name``, ``psnr`` and ``ssim`` of output vs target (``None`` without a target),
    ``brightness`` (:func:`mean_brightness`), ``entropy`` (:func:`entropy`) of the output, and
    ``loe`` (:func:`lightness_order_error`) of the output vs the input.

    ``means``: the mean of each metric over the images that have it (PSNR capped at
    :data:`PSNR_CAP_DB` per image before averaging), plus ``count`` (images) and ``paired``
    (images with a target). ``psnr``/``ssim`` are left out of ``means`` when no image had a target.
    """
    rows: list[dict[str, Any]] = []
    for name, output, target, inp in pairs:
        out8 = _as_uint8(output, f"{name}: output")
        row: dict[str, Any] = {"name": str(name), "psnr": None, "ssim": None}
        if target is not None:
            tgt8 = _as_uint8(target, f"{name}: target")
            if tgt8.shape != out8.shape:
                raise ValueError(f"{name}: output {out8.shape} and target {tgt8.shape} differ in shape")
            row["psnr"] = psnr(out8, tgt8)
            row["ssim"] = ssim(out8, tgt8)
        row["brightness"] = mean_brightness(out8)
        row["entropy"] = entropy(out8)
        in8 = _as_uint8(inp, f"{name}: input")
        if in8.shape[:2] != out8.shape[:2]:
            raise ValueError(f"{name}: output {out8.shape} and input {in8.shape} differ in size")
        row["loe"] = lightness_order_error(out8, in8, downsample=loe_downsample)
        rows.append(row)
    paired = sum(r["psnr"] is not None for r in rows)
    means: dict[str, Any] = {"count": len(rows), "paired": paired}
    if paired:
        means["psnr"] = average((r["psnr"] for r in rows), cap=PSNR_CAP_DB)
        means["ssim"] = average(r["ssim"] for r in rows)
    for key in ("brightness", "entropy", "loe"):
        means[key] = average(r[key] for r in rows)
    return rows, means


def _cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return repr(v)  # shortest round-trip form; inf -> 'inf', nan -> 'nan'
    return str(v)


def write_csv(
    rows: Sequence[Mapping[str, Any]],
    path: str | os.PathLike[str],
    means: Mapping[str, Any] | None = None,
) -> Path:
    """Write rows as CSV (columns in first-seen order; ``None`` -> empty cell, floats at full
    precision, ``inf`` as ``inf``). With ``means``, a final row named ``mean`` holds the
    means of the columns it shares with the rows. Parent folders are created."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fields: list[str] = []
    for r in rows:
        for k in r:
            if k not in fields:
                fields.append(k)
    if not fields:
        fields = ["name"]
    fh = io.StringIO(newline="")
    w = csv.writer(fh)
    w.writerow(fields)
    for r in rows:
        w.writerow([_cell(r.get(k)) for k in fields])
    if means is not None:
        w.writerow(["mean" if k == "name" else _cell(means.get(k)) for k in fields])
    write_text_atomic(p, fh.getvalue())  # whole, atomically
    return p


# -- contact sheet ---------------------------------------------------------------------------

SHEET_PAD = 4
SHEET_LABEL_HEIGHT = 14
SHEET_BACKGROUND = (255, 255, 255)
SHEET_BLANK = (128, 128, 128)


def _tile_width(w: int, h: int, height: int) -> int:
    return max(1, round(w * height / h))


def contact_sheet(
    rows_of_images: Sequence[tuple[str, Sequence[Any]]],
    path: str | os.PathLike[str],
    max_width: int = 2400,
    height: int | None = None,
    labels: bool = True,
) -> Path:
    """Save a before/after grid PNG: one row per ``(name, [image, ...])`` (e.g. input | output
    | target), images as CHW tensors in ``[0, 1]`` or uint8 HWC arrays; ``None`` leaves a gray
    tile the size of the row's first image (e.g. a missing target).

    Layout, in pixels: every image is resized (bicubic) to a common height ``h`` keeping its
    aspect ratio (width ``max(1, round(w * h / H))``); ``h`` is ``height`` or, by default, the
    smallest image height, then reduced until the widest row fits in ``max_width``. Tiles are
    separated and framed by ``SHEET_PAD`` (4) pixels; with ``labels`` each row has a band of
    ``SHEET_LABEL_HEIGHT`` (14) pixels above it where the name is drawn in Pillow's built-in
    default font (skipped silently if no font can be loaded). So the sheet is
    ``max_row(sum tile widths + pad * (n + 1))`` wide and ``rows * (label + h + pad) + pad`` high.
    """
    from PIL import Image, ImageDraw, ImageFont

    if not rows_of_images:
        raise ValueError("contact_sheet needs at least one row")
    rows: list[tuple[str, list[np.ndarray | None]]] = []
    for name, images in rows_of_images:
        arrs = [None if im is None else _as_uint8(im, f"{name}") for im in images]
        if not arrs or arrs[0] is None:
            raise ValueError(f"row {name!r}: needs a first image")
        arrs = [a if a is None or a.shape[2] == 3 else np.repeat(a[:, :, :1], 3, axis=2) for a in arrs]
        rows.append((str(name), arrs))

    def sizes(a: np.ndarray | None, first: np.ndarray) -> tuple[int, int]:
        src = first if a is None else a
        return src.shape[1], src.shape[0]

    def row_width(arrs: list[np.ndarray | None], h: int) -> int:
        first = arrs[0]
        assert first is not None
        return sum(_tile_width(*sizes(a, first), h) for a in arrs) + SHEET_PAD * (len(arrs) + 1)

    h = int(height) if height is not None else min(a.shape[0] for _, arrs in rows for a in arrs if a is not None)
    if h < 1:
        raise ValueError(f"height must be positive, got {h}")
    widest = max(row_width(arrs, h) for _, arrs in rows)
    if widest > max_width:
        pads = max(SHEET_PAD * (len(arrs) + 1) for _, arrs in rows)
        h = max(1, int(h * (max_width - pads) / max(1, widest - pads)))
        while h > 1 and max(row_width(arrs, h) for _, arrs in rows) > max_width:
            h -= 1
    label_h = SHEET_LABEL_HEIGHT if labels else 0
    width = max(row_width(arrs, h) for _, arrs in rows)
    total_h = len(rows) * (label_h + h + SHEET_PAD) + SHEET_PAD

    sheet = Image.new("RGB", (width, total_h), SHEET_BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    font = None
    if labels:
        try:
            font = ImageFont.load_default()
        except Exception:  # noqa: BLE001 - no font: keep the band, skip the text
            font = None
    y = SHEET_PAD
    for name, arrs in rows:
        if font is not None:
            draw.text((SHEET_PAD, y), name, fill=(0, 0, 0), font=font)
        y += label_h
        x = SHEET_PAD
        first = arrs[0]
        assert first is not None
        for a in arrs:
            tw = _tile_width(*sizes(a, first), h)
            if a is None:
                tile = Image.new("RGB", (tw, h), SHEET_BLANK)
            else:
                tile = Image.fromarray(a, "RGB")
                if tile.size != (tw, h):
                    tile = tile.resize((tw, h), Image.BICUBIC)
            sheet.paste(tile, (x, y))
            x += tw + SHEET_PAD
        y += h + SHEET_PAD
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(p, lambda f: sheet.save(f, format="PNG"))
    return p

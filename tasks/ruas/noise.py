"""Synthetic sensor noise for training the NRM against a known clean image (``nrm_target: synthetic``).

The released NRM loss (:func:`nasflow.tasks.ruas.losses.nrm_loss`) has no notion of what noise is:
TV pulls towards flat, MSE towards the input, so the NRM learns to blur a little or nothing. Here a
training crop is turned into a (noisy, clean) pair with a camera noise model, so the NRM can learn
to remove noise that looks like a sensor's and to leave a clean image as it is.

The pipeline (:func:`synthesize`), per image, everything in linear light except the last step:

1. **Source.** The sRGB crop is linearised (IEC 61966-2-1 sRGB EOTF). ``downsample = k > 1`` would
   k x k area-downsample it (binning: 2x2 halves the crop's own noise std), but it also packs twice
   the detail into every pixel, which the small NRM then cannot tell from noise: with 2x2 binning
   and the L1 loss, the NRM trained on 384 crops learned nothing (it stayed at ``n ~ 0``; a 3x3 box
   blur raised the error even on the noisy crops); without binning and with MSE, two NRM-only epochs
   lowered the error on noisy training crops (8.26 -> 7.57 8-bit levels). The default is therefore
   no binning: the SICE frames are 512-px downscales whose own noise is small next to the noise
   added below. Status: in reduced ``iem_then_nrm`` runs (384 crops of 128 px, 6 epochs) the 6-channel
   NRM still ends near ``n ~ 0`` (about 0.6 8-bit levels everywhere) and removes almost no noise,
   on the training crops or on real photos: the target is in place, an NRM that uses it is not yet.
2. **Darkening.** Multiply by ``2 ** -s``, ``s`` uniform in ``[0, darken_ev]`` stops
   (``darken_ev = 3``: the +-3 EV range of a camera's exposure bracketing / exposure compensation
   dial), but never below a brightness floor: the darkened crop's mean is kept at or above
   ``min_mean = 0.024`` (sRGB), the 5th percentile of the mean brightness of the ``sice_dark``
   training frames (measured on every 5th frame of that training folder; the ``sice_mid`` frames
   are all above 0.25), and a crop already darker is not darkened. Without the floor a dark SICE
   frame darkened three more stops keeps one or two 8-bit levels, and its 8-bit rounding lifted 90x
   by the exposure step outweighs any sensor noise: no real photo is that dark.
3. **Noise** (Foi et al., "Practical Poissonian-Gaussian noise modeling and fitting for single-image
   raw-data", IEEE TIP 2008, eq. 1-3; levels as in Brooks et al., "Unprocessing images for learned
   raw denoising", CVPR 2019, sec. 3.3): heteroscedastic Gaussian ``x + N(0, shot * x + read)``,
   i.e. shot noise whose variance is proportional to the signal plus signal-independent read noise,
   independent per pixel and channel. Per image ``log shot ~ U(log 1e-4, log 1.2e-2)`` and
   ``log read ~ N(2.18 log shot + 1.20, 0.26^2)``: Brooks et al.'s joint distribution, fitted by them
   to the calibrated sensors of the Darmstadt Noise Dataset (Plotz and Roth, CVPR 2017). Those
   levels are for a raw image at normal exposure (Brooks et al. add them to unprocessed well-exposed
   photos), so the noise is added at the exposure a camera's metering targets: the darkened crop is
   scaled by ``k = max(1, 0.18 / mean)`` (18 % grey, the reflectance light meters are calibrated
   to), made noisy there, and scaled back by ``1 / k``: a dark photo is a metered capture rendered
   dark, with the signal-to-noise ratio of that capture. (Adding them to the dark crop directly
   gives SNR below 1 at SICE's dark frames: pure noise after the lift, nothing to learn; the
   darkening of step 2 then acts through the 8-bit rounding and the size of the IEM's lift.) With
   probability ``clean_fraction`` (1/4: a fixed share, not fitted) an image gets no noise at all,
   so the NRM also sees clean inputs and learns to leave them alone.
4. **Camera file.** Clip to ``[0, 1]``, sRGB-encode, round to 8 bits (what a JPEG/PNG stores).

The clean image is the same darkened source, sRGB-encoded, without noise or quantisation. Not
modelled (kept simple, said here): demosaicking and white balance (which correlate noise across
channels and neighbours) and JPEG compression. No constant here was chosen on any evaluation pair.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from nasflow.tasks.ruas.exposure import linear_to_srgb, srgb_to_linear

# Brooks et al. 2019, sec. 3.3 (the "unprocessing" paper's random_noise_levels)
SHOT_RANGE: tuple[float, float] = (1e-4, 1.2e-2)
READ_SLOPE, READ_INTERCEPT, READ_STD = 2.18, 1.20, 0.26
METERED_GREY = 0.18  # linear mean a camera's metering exposes to (18 % grey): where Brooks et al.'s levels apply


@dataclass(frozen=True)
class NoiseRanges:
    """How :func:`synthesize` draws each image's degradation (defaults: the rules of the module docstring)."""

    shot: tuple[float, float] = SHOT_RANGE  # log-uniform shot-noise gain (variance per unit linear signal)
    darken_ev: float = 3.0  # darkening drawn uniformly in [0, darken_ev] stops...
    min_mean: float = 0.024  # ...but not below this mean brightness (sRGB, [0, 1])
    clean_fraction: float = 0.25  # share of images left noise-free
    downsample: int = 1  # binning factor of the source (1: none; see step 1 of the module docstring)

    def __post_init__(self) -> None:
        lo, hi = self.shot
        if not 0.0 < lo <= hi:
            raise ValueError(f"shot range must satisfy 0 < lo <= hi, got {self.shot}")
        if self.darken_ev < 0.0:
            raise ValueError(f"darken_ev must be >= 0, got {self.darken_ev}")
        if not 0.0 <= self.min_mean < 1.0:
            raise ValueError(f"min_mean must be in [0, 1), got {self.min_mean}")
        if not 0.0 <= self.clean_fraction <= 1.0:
            raise ValueError(f"clean_fraction must be in [0, 1], got {self.clean_fraction}")
        if self.downsample < 1:
            raise ValueError(f"downsample must be >= 1, got {self.downsample}")


def noise_levels(n: int, g: torch.Generator, ranges: NoiseRanges = NoiseRanges()) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image ``(shot, read)`` variances, shape ``[n]`` (Brooks et al. 2019); zero for the clean share."""
    lo, hi = ranges.shot
    log_shot = math.log(lo) + (math.log(hi) - math.log(lo)) * torch.rand(n, generator=g, dtype=torch.float64)
    log_read = READ_SLOPE * log_shot + READ_INTERCEPT + READ_STD * torch.randn(n, generator=g, dtype=torch.float64)
    noisy = (torch.rand(n, generator=g, dtype=torch.float64) >= ranges.clean_fraction).double()
    return (log_shot.exp() * noisy).float(), (log_read.exp() * noisy).float()


def poisson_gaussian(x: torch.Tensor, shot: torch.Tensor, read: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """``x + sqrt(shot * x + read) * N(0, 1)`` per pixel and channel (Foi et al. 2008, eq. 1-3), unclipped.

    ``x``: linear-light images ``[N, C, H, W]`` (values >= 0); ``shot``, ``read``: per-image variances ``[N]``.
    Zero levels return ``x`` itself. The Gaussian draws come from ``g`` (on the CPU).
    """
    var = shot.view(-1, 1, 1, 1).to(x) * x.clamp_min(0.0) + read.view(-1, 1, 1, 1).to(x)
    xi = torch.randn(x.shape, generator=g, dtype=torch.float32).to(x)
    return x + var.sqrt() * xi


@dataclass(frozen=True)
class NoisyPair:
    """One synthesized batch: ``noisy`` (8-bit sRGB, as a camera file), ``clean`` (sRGB, no noise, no
    quantisation), both ``[N, 3, H / downsample, W / downsample]``, and the per-image draws."""

    noisy: torch.Tensor
    clean: torch.Tensor
    darken: torch.Tensor
    shot: torch.Tensor
    read: torch.Tensor


def synthesize(y: torch.Tensor, g: torch.Generator, ranges: NoiseRanges = NoiseRanges(),
               quantize: bool = True) -> NoisyPair:
    """A (noisy, clean) pair from the sRGB crops ``y`` ``[N, 3, H, W]`` in ``[0, 1]``: the steps of the
    module docstring. Deterministic given ``g`` (a CPU generator); ``quantize=False`` skips the 8-bit rounding."""
    n = y.shape[0]
    lin = srgb_to_linear(y.float())
    if ranges.downsample > 1:
        lin = F.avg_pool2d(lin, ranges.downsample)
    stops = ranges.darken_ev * torch.rand(n, generator=g)
    darken = torch.exp2(-stops).to(lin)
    if ranges.min_mean > 0:  # the floor: the largest darkening that keeps the sRGB mean at or above min_mean
        darken = torch.maximum(darken, _darken_floor(lin, ranges.min_mean))
    lin = lin * darken.view(-1, 1, 1, 1)
    shot, read = noise_levels(n, g, ranges)
    gain = (METERED_GREY / lin.mean(dim=(1, 2, 3)).clamp_min(1e-6)).clamp_min(1.0).view(-1, 1, 1, 1)
    noisy = linear_to_srgb(poisson_gaussian(lin * gain, shot, read, g) / gain)
    if quantize:
        noisy = torch.round(noisy * 255.0) / 255.0
    return NoisyPair(noisy=noisy.to(y.dtype), clean=linear_to_srgb(lin).to(y.dtype), darken=darken.cpu(), shot=shot,
                     read=read)


def _darken_floor(lin: torch.Tensor, min_mean: float, steps: int = 30) -> torch.Tensor:
    """Per image, the smallest factor ``d`` in ``(0, 1]`` with ``mean(srgb(d * lin)) >= min_mean``
    (1 when the image is already darker): bisection, the mean being monotone in ``d``."""
    mean = lambda d: linear_to_srgb(lin * d.view(-1, 1, 1, 1)).mean(dim=(1, 2, 3))  # noqa: E731
    lo, hi = torch.zeros(lin.shape[0], dtype=lin.dtype, device=lin.device), torch.ones_like(lin[:, 0, 0, 0])
    for _ in range(steps):
        mid = (lo + hi) / 2
        above = mean(mid) >= min_mean
        hi, lo = torch.where(above, mid, hi), torch.where(above, lo, mid)
    return hi


def batch_generator(seed: int, batch: torch.Tensor) -> torch.Generator:
    """A CPU generator seeded from ``seed`` and the batch's bytes: every batch gets its own draws,
    the same ones on every rerun, with no state kept between calls and nothing taken from the global RNG."""
    import hashlib

    digest = hashlib.blake2b(batch.detach().float().contiguous().cpu().numpy().tobytes(), digest_size=8,
                             key=str(int(seed)).encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest, "little") & ((1 << 63) - 1))


def nrm_synthetic_loss(out: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
    """The NRM loss against a known clean target: mean squared error, ``{"loss", "mse"}``.

    MSE: its minimiser is the posterior mean of the clean image given the noisy one (the MMSE
    denoiser, as DnCNN, Zhang et al. 2017, trains). L1 (Zhao et al., IEEE TCI 2017, preferred for
    sharpness) was tried first and left the small NRM at ``n ~ 0`` (module docstring, step 1).
    ``target`` carries no gradient.
    """
    mse = (out - target.detach()).pow(2).mean()
    return {"loss": mse, "mse": mse}

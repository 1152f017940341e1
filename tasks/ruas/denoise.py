"""Noise-conditioned denoising of the enhanced image: Lee's local-statistics filter at the noise the lift made.

A Retinex enhancer ``u = y / t`` multiplies the input's sensor noise by ``1 / t``: the darker a region,
the more its noise grows. Knowing the input's noise level ``sigma`` (estimated once per image) and the
lift ``1 / t`` of every pixel, the noise variance of ``u`` is known pixel by pixel,
``n(p) = (sigma / t(p))^2``, and a classical minimum-mean-square-error filter can remove it without
training and without touching what is not noise:

* **The noise level** (:func:`noise_level`): Donoho & Johnstone's robust estimator (Biometrika 1994,
  "Ideal spatial adaptation by wavelet shrinkage", sec. 2.3), ``sigma = median(|HH|) / 0.6745`` over the
  finest diagonal Haar coefficients ``HH = (a - b - c + d) / 2`` of the image's BT.601 luma (each 2x2
  block ``[[a, b], [c, d]]``). White noise of std ``s`` gives coefficients of std ``s``; edges and
  texture are a minority of coefficients, which the median ignores. It reads the whole image, so it
  runs in the network's whole-image first step, beside the global exposure.
* **The filter** (:func:`lee_filter`): Lee, "Digital image enhancement and noise filtering by use of
  local statistics", IEEE PAMI 2(2), 1980, eq. (10)-(12): per channel,
  ``x = m + k (z - m)`` with ``m``, ``v`` the mean and variance of ``z`` in a ``(2r+1)^2`` window and
  ``k = max(0, (v - n) / v)``: a flat window (``v ~ n``) is replaced by its mean, an edge or texture
  well above the noise (``v >> n``) is kept. ``r = 1`` (3x3), the window of MATLAB's ``wiener2``, the
  textbook implementation of this filter. A clean photo (``sigma ~ 0``) or an unlifted pixel
  (``t = 1``) has ``n ~ 0``: the filter leaves it as it is.

For tiled inference the noise level rides with the exposed image as a fourth plane
(:func:`with_noise_level`), as FFDNet (Zhang et al., IEEE TIP 2018) takes its noise level map: the rest
of the network then only looks at pixels near each output pixel.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

MAD_TO_SIGMA = 0.6745  # the median of |N(0, 1)| (Donoho & Johnstone 1994)
LEVEL_GRID = 256  # |HH| is sampled on a fixed grid: a constant rank keeps the median traceable for any size
DENOISERS = ("none", "lee")
NLM_CUT = 30.0  # non-local means: a patch farther than exp(-30) ~ 1e-13 in weight does not vote
NLM_FLOOR = float(torch.exp(torch.tensor(-NLM_CUT)))


def luma(y: torch.Tensor) -> torch.Tensor:
    """BT.601 luma of an N3HW image, N1HW."""
    return 0.299 * y[:, 0:1] + 0.587 * y[:, 1:2] + 0.114 * y[:, 2:3]


def noise_level(y: torch.Tensor) -> torch.Tensor:
    """Std of the white noise in ``y`` (N3HW, values in [0, 1]): ``median(|HH|) / 0.6745`` of its luma
    (Donoho & Johnstone 1994), shape (N, 1, 1, 1). Images under 2x2 pixels read 0."""
    g = luma(y.detach().float())
    h, w = g.shape[-2] // 2 * 2, g.shape[-1] // 2 * 2
    if h == 0 or w == 0:
        return y.new_zeros(y.shape[0], 1, 1, 1)
    g = g[..., :h, :w]
    hh = (g[..., 0::2, 0::2] - g[..., 0::2, 1::2] - g[..., 1::2, 0::2] + g[..., 1::2, 1::2]).abs() * 0.5
    grid = F.interpolate(hh, size=(LEVEL_GRID, LEVEL_GRID), mode="nearest").flatten(1)
    median = grid.kthvalue(LEVEL_GRID * LEVEL_GRID // 2, dim=1).values  # lower median: a constant rank
    return (median / MAD_TO_SIGMA).to(y.dtype).view(-1, 1, 1, 1)


def lee_filter(z: torch.Tensor, noise_var: torch.Tensor, radius: int = 1) -> torch.Tensor:
    """Lee's MMSE filter (PAMI 1980, eq. 10-12) of ``z`` (NCHW) for additive noise of variance ``noise_var``
    (broadcastable to ``z``): ``m + max(0, 1 - n / v) (z - m)``, window ``(2 radius + 1)^2``, the
    window clipped at the border (means over the pixels inside the image)."""
    if radius < 0:
        raise ValueError(f"radius must be >= 0, got {radius}")
    if radius == 0:
        return z
    m, v = local_moments(z, radius)
    gain = (1.0 - noise_var / v.clamp_min(1e-12)).clamp_(0.0, 1.0)
    return torch.addcmul(m, gain, z - m)


def local_moments(z: torch.Tensor, radius: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per channel, the mean and variance of ``z`` in a ``(2 radius + 1)^2`` window clipped at the border.

    Depthwise convolutions of ones give the window sums of ``z`` and ``z^2`` (``avg_pool2d`` is several
    times slower on CPU); dividing by the count of in-image pixels, the outer product of the per-row
    and per-column counts, clips the window at the border."""
    s1, s2, inv = _window_sums(z, radius)
    m = s1 * inv
    return m, (s2 * inv - m * m).clamp_min(0.0)


def _window_sums(z: torch.Tensor, radius: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    c, h, w = z.shape[1], z.shape[-2], z.shape[-1]
    k = 2 * radius + 1
    ones = torch.ones(c, 1, k, k, dtype=z.dtype, device=z.device)
    s1 = F.conv2d(z, ones, padding=radius, groups=c)
    s2 = F.conv2d(z * z, ones, padding=radius, groups=c)

    def counts(n: int) -> torch.Tensor:
        i = torch.arange(n, device=z.device)
        return ((i + radius).clamp(max=n - 1) - (i - radius).clamp(min=0) + 1).to(z.dtype)

    return s1, s2, 1.0 / (counts(h).view(-1, 1) * counts(w).view(1, -1))


def lee_filter_(z: torch.Tensor, sigma: torch.Tensor, t: torch.Tensor, radius: int = 1) -> torch.Tensor:
    """:func:`lee_filter` of ``z`` at the noise variance ``(sigma / t)^2``, for inference: fewer passes,
    in place on temporaries (``t`` is overwritten; ``z`` is kept). Equal to the functional form."""
    s1, s2, inv = _window_sums(z, radius)
    m = s1.mul_(inv)
    v = s2.mul_(inv).addcmul_(m, m, value=-1.0).clamp_min_(1e-12)
    gain = torch.div(sigma, t, out=t)
    gain.mul_(gain).div_(v)  # n / v
    gain = torch.rsub(gain, 1.0).clamp_(0.0, 1.0)
    return m.addcmul_(gain, torch.sub(z, m))


def lifted_noise_var(sigma: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Noise variance of ``u = y / t`` for noise of std ``sigma`` in ``y``: ``(sigma / t)^2`` per pixel."""
    return (sigma / t).square()


def with_noise_level(y: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """``y`` (N3HW) with a fourth plane holding its noise level everywhere (the input of a tiled network)."""
    return torch.cat([y, sigma.to(y.dtype).expand(y.shape[0], 1, *y.shape[-2:])], dim=1)


def split_noise_level(y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(image, noise level plane or None)`` of a network input of 3 or 4 planes."""
    if y.dim() == 4 and y.shape[1] == 4:
        return y[:, :3], y[:, 3:4]
    return y, None


def nl_means(z: torch.Tensor, noise_var: torch.Tensor, search_radius: int = 10, patch_radius: int = 1,
             h_factor: float = 0.55) -> torch.Tensor:
    """Non-local means (Buades, Coll & Morel, "Non-Local Means Denoising", IPOL 2011, pixelwise form,
    eq. 1-2) of ``z`` (N3HW) at the per-pixel noise variance ``noise_var`` (broadcastable to N1HW; a
    per-channel map is averaged over channels).

    Every pixel ``q`` within ``search_radius`` of ``p`` (a 21x21 research window) votes with weight
    ``w = exp(-max(d^2 - 2 n, 0) / h^2)``, ``d^2`` the mean squared difference of the
    ``(2 patch_radius + 1)^2`` colour patches around ``p`` and ``q``, ``n`` the noise variance at
    ``p`` and ``h = h_factor * sqrt(n)``; ``p`` itself votes with the largest weight of the others
    (IPOL's rule, so that it does not outvote its look-alikes). The constants are IPOL's table for
    colour images at noise up to 25 8-bit levels: 3x3 patches, 21x21 window, ``h = 0.55 sigma``.
    Patches reaching past the border see the border pixels repeated; candidates outside the image do
    not vote. Where ``n ~ 0`` (a clean photo, an unlifted pixel) only identical patches get weight, so
    the pixel is left as it is."""
    if search_radius < 1 or patch_radius < 0:
        raise ValueError(f"need search_radius >= 1 and patch_radius >= 0, got {search_radius}, {patch_radius}")
    n_img, _, h, w = z.shape
    r, f = search_radius, patch_radius
    n = noise_var.to(z.dtype)
    if n.dim() == 4 and n.shape[1] > 1:
        n = n.mean(dim=1, keepdim=True)
    n = n.expand(n_img, 1, h, w)
    two_n = 2.0 * n
    inv_h2 = 1.0 / (h_factor * h_factor * n).clamp_min(1e-20)
    zp = F.pad(z, (r + f,) * 4, mode="replicate")
    inside = F.pad(torch.ones(1, 1, h, w, dtype=z.dtype, device=z.device), (r,) * 4)
    centre = zp[..., r:r + h + 2 * f, r:r + w + 2 * f]
    acc = torch.zeros_like(z)
    wsum = z.new_zeros(n_img, 1, h, w)
    wmax = z.new_zeros(n_img, 1, h, w)
    k = 2 * f + 1
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            if dy == 0 and dx == 0:
                continue
            cand = zp[..., r + dy:r + dy + h + 2 * f, r + dx:r + dx + w + 2 * f]
            d2 = torch.sub(centre, cand).square_().mean(dim=1, keepdim=True)
            if f:
                d2 = F.avg_pool2d(d2, k, stride=1)
            # exp(-x) cut to 0 at x = NLM_CUT (IPOL's implementation cuts its exponential table too): the
            # tiny weights of dissimilar patches would otherwise underflow unevenly in acc and wsum
            wt = d2.sub_(two_n).clamp_min_(0.0).mul_(inv_h2).clamp_max_(NLM_CUT).neg_().exp_().sub_(NLM_FLOOR)
            wt.mul_(inside[..., r + dy:r + dy + h, r + dx:r + dx + w])
            acc.addcmul_(wt, cand[..., f:f + h, f:f + w])
            wsum.add_(wt)
            torch.maximum(wmax, wt, out=wmax)
    acc.addcmul_(wmax, z)
    wsum.add_(wmax)
    return torch.where(wsum > 0, acc / wsum.clamp_min(1e-30), z)

"""The global exposure step of nasflow's RUAS: one gain per image, before the IEM refines it locally.

The IEM is local (an output pixel sees about 10 pixels), so it cannot tell a dark photo from a dark
corner of a bright one; this step reads the whole image. It is Retinex with a constant illumination
``t_0 = 1 / g`` and carries no parameters. Per image, with ``m`` the mean of ``y`` over channels and
pixels and ``h`` the ``highlight_quantile`` of the per-pixel channel maximum::

    g_key  = target / m                          bring the mean up to the target ...
    g_room = 2 ** headroom_ev / h                ... but push the scene's highlights at most
                                                     headroom_ev stops past full scale
    g      = clamp(min(g_key, g_room), 1, 1 / t_min) * 2 ** exposure_bias
    y'     = clamp(g * y, 0, 1)

Why each part (the rules the constants follow, never fitted to evaluation pairs):

* ``g >= 1`` before the bias: the step never darkens, so a photo whose mean is at or above
  ``target`` is left exactly as it is.
* ``target``: the mean a dark photo is brought to. The scene-adaptive policy uses 0.35, the mean
  at and above which a photo counts as normally exposed: with a lower bound of 1 on the gain, the
  output mean ``max(m, min(target, ...))`` is then monotone in the input's exposure, and a dark
  version of a well-exposed photo never comes out brighter than the photo itself. The legacy key
  policy uses 0.46, middle grey (18 % reflectance, sRGB-encoded; the zone system's and Reinhard et
  al. 2002's key), for models meant for photos known to be dark.
* ``headroom_ev`` (scene policy: 0.5): a scene whose brightest pixels already reach full scale
  (a night street, lamps, a lit window) was exposed for its lights; lifting it to the target would
  turn a night into fog and bloom the lights. Half a stop here and at most half a stop of local
  lift in the IEM (``exposure_target(max_lift_ev=0.5)``) keep such a background within one stop
  (2x) of the input. ``None`` (the key policy) disables the limit.
* ``highlight_quantile`` (0.99): the brightest 1 % of pixels stand for the scene's lights, sky and
  speculars; a quantile rather than the maximum, so hot pixels and single specular glints do not
  decide the exposure.
* ``exposure_bias`` (EV): the user's control, as photo tools have: it multiplies the gain by
  ``2 ** bias`` after the clamp, so +1 doubles the step's output (before clipping) and -1 halves it,
  also for photos the step would otherwise leave alone.

The gain is monotone in the input's exposure: scaling ``y`` by ``s`` scales ``m`` and ``h`` by
``s`` (until ``h`` clips), so ``g * m = max(m, min(target, 2 ** headroom_ev * m / h))`` does not fall
as ``s`` rises. The same gain multiplies R, G and B: no colour cast.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

# Pixels read for the highlight quantile: larger images are subsampled on a regular grid, so that a
# 24-megapixel photo costs what a 1-megapixel one does and the quantile stays within torch's limits.
QUANTILE_PIXELS = 1 << 20


@dataclass(frozen=True)
class ExposurePolicy:
    """The parameters of the global exposure step (module docstring); ``__call__`` applies it."""

    target: float
    headroom_ev: float | None = None  # None: no highlight limit (the key policy)
    highlight_quantile: float = 0.99
    t_min: float = 1e-3

    def __post_init__(self) -> None:
        if not 0.0 < self.target <= 1.0:
            raise ValueError(f"the exposure target must be in (0, 1], got {self.target}")
        if self.headroom_ev is not None and self.headroom_ev < 0:
            raise ValueError(f"the exposure headroom must be >= 0 EV (or None: no limit), got {self.headroom_ev}")
        if not 0.5 <= self.highlight_quantile <= 1.0:
            raise ValueError(f"the highlight quantile must be in [0.5, 1], got {self.highlight_quantile}")

    def gain(self, y: torch.Tensor, exposure_bias: float = 0.0) -> torch.Tensor:
        """The per-image gain ``g`` (shape ``[N, 1, 1, 1]``) for a batch ``y`` in [0, 1]."""
        mean = y.mean(dim=(1, 2, 3), keepdim=True).clamp_min(1e-6)
        g = self.target / mean
        if self.headroom_ev is not None:
            g = torch.minimum(g, 2.0 ** self.headroom_ev / highlight(y, self.highlight_quantile))
        g = torch.clamp(g, 1.0, 1.0 / self.t_min)
        return g * 2.0 ** exposure_bias if exposure_bias else g

    def __call__(self, y: torch.Tensor, exposure_bias: float = 0.0) -> torch.Tensor:
        return torch.clamp(y * self.gain(y, exposure_bias), 0.0, 1.0)


def highlight(y: torch.Tensor, quantile: float) -> torch.Tensor:
    """Per image, the ``quantile`` of the per-pixel channel maximum (shape ``[N, 1, 1, 1]``), floored
    at one 8-bit level (a black image has no highlights to protect)."""
    peak = y.detach().amax(dim=1).flatten(1)
    step = max(1, peak.shape[1] // QUANTILE_PIXELS)
    peak = peak[:, ::step].float()
    k = min(peak.shape[1], max(1, int(round(quantile * peak.shape[1]))))
    value = peak.kthvalue(k, dim=1).values.to(y.dtype)
    return value.clamp_min(1.0 / 255).view(-1, 1, 1, 1)


@dataclass(frozen=True)
class ExposureStep:
    """The whole-image first step of a RUAS network, split off for tiled inference
    (:func:`nasflow.infer.tiling.split_global`): it takes the user's exposure bias."""

    policy: ExposurePolicy
    accepts_exposure_bias = True

    def __call__(self, y: torch.Tensor, exposure_bias: float = 0.0) -> torch.Tensor:
        return self.policy(y, exposure_bias)

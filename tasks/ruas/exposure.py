"""The global exposure step of nasflow's RUAS: one gain per image, before the IEM refines it locally.

The IEM is local (an output pixel sees about 10 pixels), so it cannot tell a dark photo from a dark
corner of a bright one; this step reads the whole image. It is Retinex with a constant illumination
``t_0 = 1 / g`` and carries no parameters. Per image, with ``m`` the mean of ``y`` over channels and
pixels and ``h`` the scene's highlights (the brightest ``highlight_spot`` x ``highlight_spot`` square of
the per-pixel channel maximum, or, without a spot size, its ``highlight_quantile``)::

    g_key  = target / m                          bring the mean up to the target ...
    g_room = 2 ** headroom_ev / h                ... but push the scene's highlights at most
                                                     headroom_ev stops past full scale
    g      = clamp(min(g_key, g_room), 1, 1 / t_min) * 2 ** exposure_bias
    y'     = clamp(g * y, 0, 1)                  (no shoulder: each channel clipped at full scale)
    y'     = g * y * s(M) / M                    (a shoulder at knee k: M = max over R, G, B of g * y)
    s(M)   = M                                   for M <= k
           = k + (1 - k) (1 - exp(-(M - k) / (1 - k)))   above it (k = 1: s(M) = min(M, 1))

Why each part (the rules the constants follow, never fitted to evaluation pairs):

* ``g >= 1`` before the bias: the step never darkens, so a photo whose mean is at or above
  ``target`` is left exactly as it is (with a shoulder, but for its pixels above the knee, which
  roll off as they would under a gain of 1.01: the tone curve does not jump as ``g`` reaches 1).
* ``target``: the mean a dark photo is brought to. The scene-adaptive policy (``ruas-auto``) uses
  0.35, the mean at and above which a photo counts as normally exposed: such a photo gets no gain,
  and a darker exposure of it never comes out brighter than it. A higher target cannot keep both promises:
  with the output mean ``max(m, min(target, ...))`` monotone in the input's exposure, a photo of mean
  0.35 whose highlights leave room would come out at ``target``, more than 10 % brighter once
  ``target > 0.385``. The key policy (``ruas-mit``, ``ruas-lol``, for photos known to be dark) uses
  a key calibrated to an expert's retouch (:mod:`nasflow.tasks.ruas.calibration`).
* ``headroom_ev`` (scene policy: 0): a scene whose lights already reach full scale (a night street,
  lamps, a lit window) was exposed for its lights; lifting it to the target would turn a night into
  fog and bloom the lights. ``None`` (the key policy) disables the limit. The IEM's local lift (at
  most one stop, ``exposure_target(max_lift_ev=1)``) then keeps such a background within 2x.
* ``highlight_spot`` (scene policy: 3): the highlights are the brightest 3x3-pixel square, read as
  its darkest pixel (:func:`spot_highlight`). A lamp counts however small a share of the frame it
  covers (four street lights in a 12-megapixel night photo are a few hundredths of a percent of
  it), a lone hot pixel or a one-pixel glint does not: 3 pixels is the smallest square with a
  centre. ``highlight_quantile`` (0.99, used when no spot size is given, as in model files made
  before it) reads the brightest 1 % instead, which a few small lights do not reach.
* ``shoulder`` (the key policy; None for the scene policy, whose lights stay below full scale): a
  gain that takes a bright area past full scale clips each channel on its own, so an orange lamp
  turns yellow and a blue sky cyan, and everything past full scale flattens to one value. The
  shoulder instead rolls a pixel's brightest channel off towards full scale and scales R, G and B
  by the same factor: hue and saturation are kept, and brighter stays brighter. ``s`` is the
  identity up to the knee ``k``, meets it with slope 1 (no kink) and never reaches 1; ``k = 1``
  is the hue-keeping clip. The knee is calibrated with the key (:mod:`nasflow.tasks.ruas.calibration`).
* ``exposure_bias`` (EV): the user's control, as photo tools have: it multiplies the gain by
  ``2 ** bias`` after the clamp, so +1 doubles the step's output (before clipping) and -1 halves it,
  also for photos the step would otherwise leave alone.

``metering`` says what the target is compared with and where the gain applies:

* ``"mean"``: the arithmetic mean of the sRGB values; the gain scales the sRGB values.
* ``"reinhard"``: Reinhard et al. 2002's photographic key, eq. 1: the log-average of the linear
  luminance ``L = 0.2126 R + 0.7152 G + 0.0722 B`` (sRGB decoded, IEC 61966-2-1),
  ``exp(mean(log(delta + L)))``, is brought to ``target`` (their key ``a = 0.18``: 18 % grey),
  with the gain applied in linear light and the result encoded back to sRGB, as a camera's
  exposure would; ``h`` is then read in linear light too. ``delta`` is half an 8-bit level in
  linear light, so a black pixel counts as the darkest level a file holds, not as minus infinity.
  The log-average is what the zone system meters: a dark photo with a few bright areas is exposed
  for its mass of dark pixels, not pulled down by the bright ones as the arithmetic mean is.

The gain is monotone in the input's exposure: scaling ``y`` by ``s`` scales ``m`` and ``h`` by
``s`` (until ``h`` clips), so ``g * m = max(m, min(target, 2 ** headroom_ev * m / h))`` does not fall
as ``s`` rises. The same gain multiplies R, G and B: no colour cast; the shoulder, monotone in
``M`` and the same for the three channels, keeps both.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

# The highlight quantile is read on a fixed grid of this many points a side (nearest-neighbour samples of
# the image, about every pixel of a 600x400 photo): a 24-megapixel photo costs what a small one does, and
# the computation has no size-dependent Python arithmetic, so it traces (TorchScript, ONNX) for any size.
QUANTILE_GRID = 512
METERINGS = ("mean", "reinhard")
LOG_DELTA = 0.5 / 255 / 12.92  # half an 8-bit level, in linear light (Reinhard et al. 2002, eq. 1's delta)
REC709 = (0.2126, 0.7152, 0.0722)  # linear luminance weights of sRGB primaries (ITU-R BT.709)


def srgb_to_linear(x: torch.Tensor) -> torch.Tensor:
    """IEC 61966-2-1 sRGB decoding (of values clipped to [0, 1])."""
    x = x.clamp(0.0, 1.0)
    return torch.where(x <= 0.04045, x / 12.92, ((x.clamp_min(0.04045) + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(x: torch.Tensor) -> torch.Tensor:
    """IEC 61966-2-1 sRGB encoding (of values clipped to [0, 1])."""
    x = x.clamp(0.0, 1.0)
    return torch.where(x <= 0.0031308, x * 12.92, 1.055 * x.clamp_min(0.0031308) ** (1 / 2.4) - 0.055)


@dataclass(frozen=True)
class ExposurePolicy:
    """The parameters of the global exposure step (module docstring); ``__call__`` applies it."""

    target: float
    headroom_ev: float | None = None  # None: no highlight limit (the key policy)
    highlight_quantile: float = 0.99
    t_min: float = 1e-3
    metering: str = "mean"
    highlight_spot: int | None = None  # None: h is the quantile; k: h is the brightest k x k spot (spot_highlight)
    shoulder: float | None = None  # None: each channel clipped at full scale; k in (0, 1]: the hue-keeping roll-off

    def __post_init__(self) -> None:
        if self.metering not in METERINGS:
            raise ValueError(f"the exposure metering must be one of {', '.join(METERINGS)}, got {self.metering!r}")
        if not 0.0 < self.target <= 1.0:
            raise ValueError(f"the exposure target must be in (0, 1], got {self.target}")
        if self.headroom_ev is not None and self.headroom_ev < 0:
            raise ValueError(f"the exposure headroom must be >= 0 EV (or None: no limit), got {self.headroom_ev}")
        if not 0.5 <= self.highlight_quantile <= 1.0:
            raise ValueError(f"the highlight quantile must be in [0.5, 1], got {self.highlight_quantile}")
        if self.highlight_spot is not None and self.highlight_spot < 1:
            raise ValueError(f"the highlight spot must be at least 1 pixel across (or None), got {self.highlight_spot}")
        if self.shoulder is not None and not 0.0 < self.shoulder <= 1.0:
            raise ValueError(f"the exposure shoulder's knee must be in (0, 1] (or None: clip), got {self.shoulder}")

    def gain(self, y: torch.Tensor, exposure_bias: float = 0.0) -> torch.Tensor:
        """The per-image gain ``g`` (shape ``[N, 1, 1, 1]``) for a batch ``y`` in [0, 1] (sRGB); with
        ``reinhard`` metering a gain of linear light."""
        with torch.no_grad():
            if self.metering == "reinhard":
                y = srgb_to_linear(y)
                weights = torch.tensor(REC709, dtype=y.dtype, device=y.device).view(1, 3, 1, 1)
                level = torch.exp(torch.log(LOG_DELTA + (y * weights).sum(dim=1, keepdim=True)).mean(
                    dim=(1, 2, 3), keepdim=True))
            else:
                level = y.mean(dim=(1, 2, 3), keepdim=True).clamp_min(1e-6)
            g = self.target / level
            if self.headroom_ev is not None:
                h = (spot_highlight(y, self.highlight_spot) if self.highlight_spot is not None
                     else highlight(y, self.highlight_quantile))
                g = torch.minimum(g, 2.0 ** self.headroom_ev / h)
            g = torch.clamp(g, 1.0, 1.0 / self.t_min)
        return g * 2.0 ** exposure_bias if exposure_bias else g

    def apply(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """``x`` (sRGB) under the gain ``g`` (from :meth:`gain`, possibly of another image), in [0, 1]:
        clipped, or rolled off by the shoulder (in the space the gain applies in)."""
        if self.metering == "reinhard":
            return linear_to_srgb(self._limit(srgb_to_linear(x) * g))
        return self._limit(x * g)

    def _limit(self, x: torch.Tensor) -> torch.Tensor:
        if self.shoulder is None:
            return torch.clamp(x, 0.0, 1.0)
        return shoulder(x.clamp_min(0.0), self.shoulder)

    def __call__(self, y: torch.Tensor, exposure_bias: float = 0.0) -> torch.Tensor:
        return self.apply(y, self.gain(y, exposure_bias))


def highlight(y: torch.Tensor, quantile: float) -> torch.Tensor:
    """Per image, the ``quantile`` of the per-pixel channel maximum (shape ``[N, 1, 1, 1]``), floored
    at one 8-bit level (a black image has no highlights to protect)."""
    peak = y.detach().amax(dim=1, keepdim=True).float()
    grid = F.interpolate(peak, size=(QUANTILE_GRID, QUANTILE_GRID), mode="nearest").flatten(1)
    k = max(1, round(quantile * QUANTILE_GRID * QUANTILE_GRID))  # a constant: the grid has a fixed size
    value = grid.kthvalue(k, dim=1).values.to(y.dtype)
    return value.clamp_min(1.0 / 255).view(-1, 1, 1, 1)


def spot_highlight(y: torch.Tensor, spot: int) -> torch.Tensor:
    """Per image, the brightest ``spot`` x ``spot`` square of the per-pixel channel maximum, read as its
    darkest pixel (shape ``[N, 1, 1, 1]``), floored at one 8-bit level.

    A light is what fills such a square: a lamp counts however small a share of the frame it covers
    (a quantile misses a few street lights in a large night photo), while a lone hot pixel or a glint
    thinner than the square does not. A grey erosion (the minimum over each square; squares that
    reach past the image's edge read black, so a light in a corner counts once it fills a square, and
    an image smaller than the square has no light), then the maximum over the image. The erosion is
    separable, a minimum of ``spot`` shifted views along each axis, about 10x faster on a CPU than
    ``max_pool2d`` of the negated image, and has no size-dependent branch, so it traces for any size.
    """
    peak = y.detach().amax(dim=1, keepdim=True).float()
    if spot > 1:
        h, w = peak.shape[-2:]
        padded = F.pad(peak, (0, spot - 1, 0, spot - 1))  # zeros: a square past the edge is no light
        rows = padded[..., :, :w]
        for i in range(1, spot):
            rows = torch.minimum(rows, padded[..., :, i : i + w])
        peak = rows[..., :h, :]
        for i in range(1, spot):
            peak = torch.minimum(peak, rows[..., i : i + h, :])
    return peak.amax(dim=(2, 3), keepdim=True).to(y.dtype).clamp_min(1.0 / 255)


def shoulder(x: torch.Tensor, knee: float) -> torch.Tensor:
    """``x`` (N x 3 x H x W, >= 0) with each pixel's brightest channel ``M`` rolled off above ``knee`` to
    ``s(M)`` (module docstring) and its three channels scaled alike: hue and saturation kept, in [0, 1]."""
    peak = x.amax(dim=1, keepdim=True)
    if knee >= 1.0:
        rolled = peak.clamp_max(1.0)
    else:
        width = 1.0 - knee
        rolled = torch.where(peak > knee, knee + width * -torch.expm1(-(peak - knee).clamp_min(0.0) / width), peak)
    return (x * (rolled / peak.clamp_min(1e-12))).clamp(0.0, 1.0)

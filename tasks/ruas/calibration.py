"""Calibrating the global exposure of the dark-photo models to an expert's brightness, off the test pairs.

A dark photo has no "right" brightness of its own: the expert who retouches it decides. The
dark-photo models (``ruas-mit``, ``ruas-lol``) bring every photo to one photographic key; which
metering and which key are calibrated here against expert references that the models' cards do
not report as a test, by a rule fixed before it was run:

1. each calibration pair's input (a normally exposed camera rendering) is darkened by ``d`` stops in
   linear light and quantised to 8 bits, for every ``d`` in :data:`DARKENINGS` (a dark photo of the
   same scene, as a shorter exposure would give);
2. the model's tone pipeline without the network runs on it: the global exposure step (metering
   ``M``, key ``a``), then the lift the IEM is trained towards, ``u = clamp(y' / t*, 0, 1)``
   (:func:`nasflow.tasks.ruas.losses.exposure_target`);
3. per case, the key ``a_i(M)`` whose output mean equals the expert's mean is found by bisection
   (the output mean rises with the key); the key of ``M`` is the median over cases;
4. the metering is the one with the smaller leave-one-photo-out mean absolute brightness error (in
   8-bit levels): each photo's cases are predicted with the median key of the other photos' cases.

The leave-one-photo-out PSNR against the expert's picture is reported beside it (``criterion="psnr"``
chooses on it instead): a brightness criterion alone cannot see a metering that meets the mean by
crushing the shadows and clipping the highlights. It was added after the models calibrated by the
rule had been scored on the dev pairs, so it is a check, not the rule; on fivek_normal both choose
the same metering.

5. the shoulder (:func:`nasflow.tasks.ruas.exposure.shoulder`; a second rule, fixed before it was run
   and added after the first had been followed): with the chosen metering, each knee of
   :data:`KNEES` (and no shoulder: a clip per channel) gets its key by steps 3-4's median, and the
   knee with the highest leave-one-photo-out PSNR against the expert's pictures is chosen. The
   mean brightness hardly depends on the knee (a roll-off moves only what lies past it), so this
   step judges it on the picture: whether the highlights keep their hue and gradation as the
   expert's do.

The network is left out on purpose: it is trained towards ``t*``, and leaving it out keeps the
calibration independent of any trained weights (it runs before the model is trained). That premise is
checked once the models are trained (:func:`signed_error`): a shipped model's brightness error on the
same cases, whole (exposure, network, filter), against the pipeline's at the same metering and key.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from nasflow.tasks.ruas.exposure import METERINGS, ExposurePolicy, linear_to_srgb, srgb_to_linear
from nasflow.tasks.ruas.losses import exposure_target
from nasflow.tasks.ruas.metrics import PSNR_CAP_DB, psnr, to_uint8

DARKENINGS = (1.0, 2.0, 3.0, 4.0)  # stops: from a slightly dark photo to a very dark one (LOL-like)
KEY_RANGE = (1e-3, 1.0)
BISECTIONS = 40
KNEES: tuple[float | None, ...] = (None, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)  # None: each channel clipped


@dataclass(frozen=True)
class ToneLift:
    """The IEM's exposure target's constants (``exposure_target``'s keyword arguments)."""

    level: float = 0.25
    power: float = 0.5
    sigma: float = 6.0
    max_lift_ev: float | None = 1.0
    luminance: str = "max"


@dataclass(frozen=True)
class Case:
    """One darkened calibration photo and its expert's mean (in [0, 1])."""

    photo: str
    stops: float
    image: torch.Tensor  # 1x3xHxW in [0, 1], 8-bit values
    expert_mean: float
    expert: torch.Tensor | None = None  # 1x3xHxW in [0, 1]: the expert's picture, for the fidelity criterion


@dataclass(frozen=True)
class MeteringFit:
    """A metering's calibrated key and its leave-one-photo-out brightness error."""

    metering: str
    key: float
    case_keys: tuple[float, ...]
    loo_abs_error: float  # 8-bit levels
    loo_signed_error: float
    loo_psnr: float | None = None  # dB, mean over cases; None when the cases carry no expert picture
    shoulder: float | None = None  # the exposure's knee past which it rolls off (None: clip)


def darken(y: torch.Tensor, stops: float) -> torch.Tensor:
    """``y`` (sRGB in [0, 1]) as an exposure ``stops`` shorter: linear light times ``2 ** -stops``, 8-bit."""
    return torch.round(linear_to_srgb(srgb_to_linear(y) * 2.0 ** -stops) * 255.0) / 255.0


def tone_pipeline(y: torch.Tensor, metering: str, key: float, lift: ToneLift,
                  shoulder: float | None = None) -> torch.Tensor:
    """The dark-photo models' tones without the network: the global exposure (no highlight limit;
    past full scale clipped, or the ``shoulder`` knee's roll-off), then ``u = clamp(y' / t*, 0, 1)``."""
    exposed = ExposurePolicy(target=key, metering=metering, shoulder=shoulder)(y)
    t = exposure_target(exposed, level=lift.level, power=lift.power, sigma=lift.sigma,
                        luminance=lift.luminance, max_lift_ev=lift.max_lift_ev)
    return torch.clamp(exposed / t, 0.0, 1.0)


def output_mean(case: Case, metering: str, key: float, lift: ToneLift, shoulder: float | None = None) -> float:
    """The pipeline's output mean on ``case``, as an 8-bit file would hold it (in [0, 1])."""
    return float(torch.round(tone_pipeline(case.image, metering, key, lift, shoulder) * 255.0).mean()) / 255.0


def matching_key(case: Case, metering: str, lift: ToneLift, shoulder: float | None = None) -> float:
    """The key whose output mean equals the expert's, by bisection in log key over :data:`KEY_RANGE`
    (clamped to its ends when the expert is darker or brighter than any key gives)."""
    lo, hi = math.log(KEY_RANGE[0]), math.log(KEY_RANGE[1])
    if output_mean(case, metering, math.exp(hi), lift, shoulder) <= case.expert_mean:
        return KEY_RANGE[1]
    if output_mean(case, metering, math.exp(lo), lift, shoulder) >= case.expert_mean:
        return KEY_RANGE[0]
    for _ in range(BISECTIONS):
        mid = 0.5 * (lo + hi)
        if output_mean(case, metering, math.exp(mid), lift, shoulder) < case.expert_mean:
            lo = mid
        else:
            hi = mid
    return math.exp(0.5 * (lo + hi))


def fit_metering(cases: Sequence[Case], metering: str, lift: ToneLift, shoulder: float | None = None) -> MeteringFit:
    """Steps 3 and 4 of the rule (module docstring) for one metering (and one shoulder knee)."""
    if metering not in METERINGS:
        raise ValueError(f"the metering must be one of {', '.join(METERINGS)}, got {metering!r}")
    keys = [matching_key(c, metering, lift, shoulder) for c in cases]
    photos = sorted({c.photo for c in cases})
    if len(photos) < 2:
        raise ValueError("leave-one-photo-out needs at least two calibration photos")
    errors: list[float] = []
    psnrs: list[float] = []
    scored = all(c.expert is not None for c in cases)
    for photo in photos:
        key = statistics.median(k for k, c in zip(keys, cases) if c.photo != photo)
        for case in (c for c in cases if c.photo == photo):
            out = to_uint8(tone_pipeline(case.image, metering, key, lift, shoulder))  # the 8-bit file, once per case
            errors.append(float(out.mean()) - 255.0 * case.expert_mean)
            if scored:  # the data README's protocol (PSNR of 8-bit RGB, rounded)
                psnrs.append(min(psnr(out, to_uint8(case.expert)), PSNR_CAP_DB))
    return MeteringFit(metering=metering, key=statistics.median(keys), case_keys=tuple(keys),
                       loo_abs_error=statistics.fmean(abs(e) for e in errors),
                       loo_signed_error=statistics.fmean(errors),
                       loo_psnr=statistics.fmean(psnrs) if scored else None, shoulder=shoulder)


CRITERIA = ("brightness", "psnr")


def calibrate(cases: Sequence[Case], lift: ToneLift = ToneLift(), meterings: Sequence[str] = METERINGS,
              criterion: str = "brightness") -> tuple[MeteringFit, list[MeteringFit]]:
    """The chosen metering's fit and every metering's fit. ``criterion``: ``"brightness"`` (the rule as
    registered: the smallest leave-one-photo-out mean absolute brightness error) or ``"psnr"`` (the
    highest leave-one-photo-out PSNR against the expert's picture, a check that the brightness
    criterion does not buy the mean at the cost of where in the tone range it sits)."""
    if criterion not in CRITERIA:
        raise ValueError(f"the criterion must be one of {', '.join(CRITERIA)}, got {criterion!r}")
    fits = [fit_metering(cases, m, lift) for m in meterings]
    if criterion == "brightness":
        return min(fits, key=lambda f: f.loo_abs_error), fits
    if any(f.loo_psnr is None for f in fits):
        raise ValueError("the psnr criterion needs cases with the expert's picture (cases_from_pairs gives them)")
    return max(fits, key=lambda f: f.loo_psnr), fits


def calibrate_shoulder(cases: Sequence[Case], metering: str, lift: ToneLift = ToneLift(),
                       knees: Sequence[float | None] = KNEES) -> tuple[MeteringFit, list[MeteringFit]]:
    """Step 5 of the rule: the chosen knee's fit (its key, brightness errors and PSNR) and every knee's."""
    if not knees:
        raise ValueError("no knees to choose from")
    fits = [fit_metering(cases, metering, lift, shoulder=k) for k in knees]
    if any(f.loo_psnr is None for f in fits):
        raise ValueError("the shoulder is chosen on the expert's pictures: cases_from_pairs gives them")
    return max(fits, key=lambda f: f.loo_psnr), fits


def cases_from_pairs(pairs: Sequence[tuple[str, torch.Tensor, torch.Tensor]],
                     darkenings: Sequence[float] = DARKENINGS) -> list[Case]:
    """The calibration cases of ``(name, input, expert)`` pairs (1x3xHxW in [0, 1]): step 1 of the rule."""
    return [Case(photo=name, stops=d, image=darken(low, d), expert_mean=float(expert.mean()), expert=expert)
            for name, low, expert in pairs for d in darkenings]


def signed_error(cases: Sequence[Case], enhance: Callable[[torch.Tensor], torch.Tensor]) -> float:
    """Mean over ``cases`` of ``enhance``'s 8-bit output mean minus the expert's, in 8-bit levels.

    The premise check: with ``enhance`` a trained model, whole, and then the tone pipeline at that
    model's metering and key, the two errors agree when the network follows ``t*`` as trained; a
    gap would mean the calibration predicts the wrong model."""
    if not cases:
        raise ValueError("no calibration cases")
    return statistics.fmean(float(to_uint8(enhance(c.image)).mean()) - 255.0 * c.expert_mean for c in cases)


def pipeline(metering: str, key: float, lift: ToneLift = ToneLift(),
             shoulder: float | None = None) -> Callable[[torch.Tensor], torch.Tensor]:
    """The tone pipeline at one metering, key and knee, as an ``enhance`` callable for :func:`signed_error`."""
    return lambda y: tone_pipeline(y, metering, key, lift, shoulder)

"""The RUAS network (Liu et al., CVPR 2021) as a nasflow supernet.

Everything RUAS-specific (illumination, noise, the unrolled Retinex updates) lives here; the
engine only sees supercells with the labels ``iem`` and ``nrm``.

* IEM (illumination estimation module), ``iem_stages`` distill supercells on 3 channels that
  share one alpha (label ``iem``). With ``y`` the low-light input::

      y   <- expose(y)         (nasflow's global exposure, ``exposure_key > 0``; see :meth:`RUASNet.expose`)
      x_0 = maxfilter(y)       (the warm start; ``warm_start=False``: x_0 = y)
      x_k = maxfilter(u_{k-1}) - 0.5 * (u_{k-1} - y)        (k > 0)
      t_k = clamp(sigmoid(cell_k(x_k)), 0.001, 1)
      u_k = clamp(y / t_k, 0, 1)

* NRM (noise removal module), label ``nrm``: a 3x3 conv 3 -> C (the stem), ``nrm_cells`` distill
  supercells on C channels applied in sequence, a 3x3 conv C -> 3 predicting the noise ``n``;
  the output is ``u - n`` (left unclamped; evaluation clamps).
* nasflow's noise-conditioned filter (``denoise="lee"``, :mod:`nasflow.tasks.ruas.denoise`): Lee's
  local-statistics filter of the output at the noise variance ``(sigma / t_K)^2`` the lift gave the
  input's noise ``sigma``; no parameters.

Supercells sit directly in module lists, so :func:`nasflow.core.compile.compile_model` replaces them
in place and the compiled network runs through the same :meth:`RUASNet.forward`.
"""

from __future__ import annotations

import copy
import functools
from dataclasses import dataclass
from typing import Callable, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from nasflow.core.genotype import GenoEdge, Genotype
from nasflow.core.space import CellSpace
from nasflow.spaces.distill_cell import DistillCellSpace
from nasflow.core.supernet import Supernet, tag
from nasflow.tasks.ruas.denoise import (DENOISERS, lee_filter, lifted_noise_var, noise_level, split_noise_level,
                                        with_noise_level)
from nasflow.tasks.ruas.exposure import ExposurePolicy

T_MIN = 0.001  # lower clamp of the illumination map (as released)
STEP = 0.5  # weight of the (u - y) correction in the unrolled IEM update (as released)


def exposure_policy(key: float, headroom_ev: float | None = None, highlight_quantile: float = 0.99,
                    t_min: float = T_MIN, metering: str = "mean",
                    highlight_spot: int | None = None, shoulder: float | None = None) -> ExposurePolicy | None:
    """The global exposure step for a network's options (:mod:`nasflow.tasks.ruas.exposure`); None at ``key = 0``."""
    if not key:
        return None
    return ExposurePolicy(target=key, headroom_ev=headroom_ev, highlight_quantile=highlight_quantile, t_min=t_min,
                          metering=metering, highlight_spot=highlight_spot, shoulder=shoulder)


@dataclass(frozen=True)
class WholeImageStep:
    """The whole-image first step of a RUAS network, split off for tiled inference
    (:func:`nasflow.infer.tiling.split_global`): the global exposure, which takes the user's exposure
    bias, then (for a denoising network) the noise level, appended as a fourth plane."""

    policy: ExposurePolicy | None
    noise_plane: bool = False

    @property
    def accepts_exposure_bias(self) -> bool:
        return self.policy is not None

    def __call__(self, y: torch.Tensor, exposure_bias: float = 0.0) -> torch.Tensor:
        if self.policy is not None:
            y = self.policy(y, exposure_bias)
        elif exposure_bias:
            raise ValueError("this network has no exposure step to bias")
        return with_noise_level(y, noise_level(y)) if self.noise_plane else y


def split_exposure(network: nn.Module) -> "tuple[Callable[..., torch.Tensor], nn.Module] | None":
    """``(the whole-image step, a copy of network without it)`` for a network (RUASNet, FastRUAS) with an
    ``exposure`` policy or the noise-conditioned filter, whose noise level reads the whole image; None
    when it has neither. The copy shares every weight (a shallow copy: it has no policy and reads the
    noise level from its input's fourth plane; FastRUAS rebuilds its runtime in ``__setstate__``)."""
    denoising = getattr(network, "denoise", "none") != "none"
    if network.exposure is None and not denoising:
        return None
    local = copy.copy(network)
    local.exposure = None
    local.level_plane = denoising
    return WholeImageStep(network.exposure, denoising), local


def max_filter2x2(x: torch.Tensor) -> torch.Tensor:
    """2x2 max filter, stride 1, per channel, zero padding at the bottom and right.

    Equal to ``F.max_pool2d(F.pad(x, (0, 1, 0, 1)), 2, stride=1)`` (the released code) but computed
    as the maximum of four shifted views of the padded tensor, about 20x faster on CPU. At ties the
    gradient is split between the tied inputs (``max_pool2d`` gives it all to one of them).
    """
    p = F.pad(x, (0, 1, 0, 1))
    top = torch.maximum(p[..., :-1, :-1], p[..., :-1, 1:])
    bottom = torch.maximum(p[..., 1:, :-1], p[..., 1:, 1:])
    return torch.maximum(top, bottom)


class RUASOutput(NamedTuple):
    """What :class:`RUASNet` returns.

    ``u``: enhanced image after the IEM (last stage); ``t``: last illumination map; ``ts``: the
    illumination maps of all stages, in order; ``n``: predicted noise (zeros without NRM);
    ``out``: ``u - n``, unclamped.
    """

    u: torch.Tensor
    t: torch.Tensor
    ts: list[torch.Tensor]
    n: torch.Tensor
    out: torch.Tensor  # u - n, then the noise-conditioned filter (denoise="lee")


class RUASNet(Supernet):
    """RUAS: unrolled IEM stages (label ``iem``) followed by an optional NRM (label ``nrm``).

    Modules: ``iem_cells`` (ModuleList), and with ``use_nrm``: ``nrm_stem``, ``nrm_cells``
    (ModuleList), ``nrm_out``. The stem and out convs are tagged ``nrm`` so that they train with
    the NRM weights. ``use_nrm=False`` is RUAS_i (IEM only): ``n`` is zeros and ``out == u``.
    ``t_min``: the illumination's lower clamp (a class attribute: releases differ in it).
    ``max_lift_ev``: when given, the illumination of the network in eval mode is clamped to at least
    ``2 ** -max_lift_ev``, so the IEM lifts the exposed image by at most that many stops whatever its
    weights learned (``ruas-auto``: one stop, its exposure target's cap, so that a night scene's
    background at most doubles). Training keeps the released clamp: a clamp at 0.5 would sit at the
    sigmoid's starting point, where half the maps would start with no gradient.
    """

    t_min: float = T_MIN
    level_plane: bool = False  # True: the noise level comes as the input's fourth plane (a split copy)

    def __init__(
        self,
        space: CellSpace | None = None,
        iem_stages: int = 3,
        nrm_cells: int = 3,
        iem_channels: int = 3,
        nrm_channels: int = 6,
        use_nrm: bool = True,
        warm_start: bool = True,
        exposure_key: float = 0.0,
        exposure_headroom_ev: float | None = None,
        exposure_highlight: float = 0.99,
        exposure_metering: str = "mean",
        exposure_highlight_spot: int | None = None,
        exposure_shoulder: float | None = None,
        max_lift_ev: float | None = None,
        denoise: str = "none",
        denoise_radius: int = 1,
    ) -> None:
        super().__init__()
        if denoise not in DENOISERS:
            raise ValueError(f"denoise must be one of {', '.join(DENOISERS)}, got {denoise!r}")
        if denoise_radius < 1:
            raise ValueError(f"denoise_radius must be at least 1, got {denoise_radius}")
        if not 0.0 <= exposure_key <= 1.0:
            raise ValueError(f"exposure_key must be in [0, 1] (0: off), got {exposure_key}")
        if max_lift_ev is not None and not max_lift_ev > 0:
            raise ValueError(f"max_lift_ev must be positive (or None: no cap), got {max_lift_ev}")
        if iem_stages < 1:
            raise ValueError(f"iem_stages must be at least 1, got {iem_stages}")
        if iem_channels != 3:
            raise ValueError(f"the IEM cells act on the RGB image itself: iem_channels must be 3, got {iem_channels}")
        if use_nrm and (nrm_cells < 0 or nrm_channels < 1):
            raise ValueError(f"bad NRM size: nrm_cells={nrm_cells}, nrm_channels={nrm_channels}")
        self.space = space if space is not None else DistillCellSpace()
        if len(self.space.graph().inputs) != 1:
            raise ValueError(f"RUAS needs a space whose cells take one input; '{self.space.name}' cells take "
                             f"{len(self.space.graph().inputs)}")
        self.use_nrm = use_nrm
        self.warm_start = warm_start
        self.denoise = denoise
        self.denoise_radius = denoise_radius
        self.exposure = exposure_policy(float(exposure_key), exposure_headroom_ev, exposure_highlight, self.t_min,
                                        exposure_metering, exposure_highlight_spot, exposure_shoulder)
        self.lift_floor = None if max_lift_ev is None else max(self.t_min, 2.0 ** -max_lift_ev)
        self.iem_cells = nn.ModuleList(self.space.supercell(self.arch, "iem", iem_channels) for _ in range(iem_stages))
        if use_nrm:
            self.nrm_stem = tag(nn.Conv2d(3, nrm_channels, 3, padding=1, bias=True), "nrm")
            self.nrm_cells = nn.ModuleList(
                self.space.supercell(self.arch, "nrm", nrm_channels) for _ in range(nrm_cells)
            )
            self.nrm_out = tag(nn.Conv2d(nrm_channels, 3, 3, padding=1, bias=True), "nrm")

    def halo(self) -> int:
        """How far an output pixel sees (for exact tiling, :func:`nasflow.infer.tiling.receptive_halo`):
        the cells' longest conv paths plus one pixel per IEM stage for the 2x2 max filter."""
        from nasflow.infer.tiling import NotTileable, receptive_halo

        if self.exposure is not None:
            raise NotTileable("the global exposure step reads the whole image's mean: tiles would change the output")
        if self.denoise != "none" and not self.level_plane:
            raise NotTileable("the denoiser's noise level reads the whole image: tiles would change the output")
        iem = sum(receptive_halo(cell) + 1 for cell in self.iem_cells) - (0 if self.warm_start else 1)
        post = self.denoise_radius if self.denoise != "none" else 0
        if not self.use_nrm:
            return iem + post
        nrm = receptive_halo(self.nrm_stem) + sum(receptive_halo(c) for c in self.nrm_cells)
        return iem + nrm + receptive_halo(self.nrm_out) + post

    def expose(self, y: torch.Tensor) -> torch.Tensor:
        """The global exposure step (:mod:`nasflow.tasks.ruas.exposure`; off at ``exposure_key = 0``):
        the input the IEM refines. The total illumination is ``t_0 * t_k`` with ``t_0 = 1 / gain``. It
        carries no parameters and no gradient to the data; during training it sees each crop, at
        inference the whole image (tiles included: :meth:`split_global`)."""
        return y if self.exposure is None else self.exposure(y)

    def split_global(self) -> "tuple[Callable[..., torch.Tensor], RUASNet] | None":
        """``(the whole-image step, the rest)`` for tiled inference (:func:`nasflow.infer.tiling.split_global`):
        the global exposure and the noise level read the whole image once; the network after them is
        local. None without either."""
        return split_exposure(self)

    def illumination(self, y: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The IEM: ``(u_K, [t_1, ..., t_K])``, the maps relative to :meth:`expose`'s image."""
        return self._unroll(self.expose(y))

    def _unroll(self, y: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        ts: list[torch.Tensor] = []
        u = y
        t_min = self.t_min if self.training or self.lift_floor is None else self.lift_floor
        for k, cell in enumerate(self.iem_cells):
            if k == 0:
                x = max_filter2x2(y) if self.warm_start else y
            else:
                x = max_filter2x2(u) - STEP * (u - y)
            t = torch.clamp(torch.sigmoid(cell(x)), t_min, 1.0)
            u = torch.clamp(y / t, 0.0, 1.0)
            ts.append(t)
        return u, ts

    def noise(self, u: torch.Tensor) -> torch.Tensor:
        """The NRM's noise estimate ``n`` for the IEM output ``u`` (zeros without NRM)."""
        if not self.use_nrm:
            return torch.zeros_like(u)
        feat = self.nrm_stem(u)
        for cell in self.nrm_cells:
            feat = cell(feat)
        return self.nrm_out(feat)

    def forward(self, y: torch.Tensor) -> RUASOutput:
        y, level = split_noise_level(y)
        y = self.expose(y)
        u, ts = self._unroll(y)
        n = self.noise(u)
        out = u - n
        if self.denoise == "lee":
            sigma = noise_level(y) if level is None else level
            out = lee_filter(out, lifted_noise_var(sigma, ts[-1]), self.denoise_radius)
        return RUASOutput(u=u, t=ts[-1], ts=ts, n=n, out=out)


# --- the genotypes of the paper -------------------------------------------------------------------
PAPER_OPS: dict[str, tuple[str, ...]] = {
    "iem": ("skip_connect", "resconv_1x1", "resdilconv_3x3", "conv_3x3", "conv_3x3", "skip_connect", "conv_3x3"),
    "nrm": ("resconv_1x1", "resconv_1x1", "resdilconv_3x3", "skip_connect", "resconv_1x1", "resconv_1x1",
            "skip_connect"),
}


def _edges(space: CellSpace, ops: tuple[str, ...]) -> tuple[GenoEdge, ...]:
    """One op per graph edge, in the space's edge order (c1_d, c1_r, c2_d, c2_r, c3_d, c3_r, c4)."""
    graph = space.graph()
    if len(ops) != len(graph.edges):
        raise ValueError(f"expected {len(graph.edges)} ops, got {len(ops)}")
    return tuple(GenoEdge(op, e.src, e.dst) for op, e in zip(ops, graph.edges))


def paper_genotype(use_nrm: bool = True) -> Genotype:
    """The genotypes reported by RUAS (and in its released checkpoints); IEM only if not ``use_nrm``."""
    space = DistillCellSpace()
    labels = ("iem", "nrm") if use_nrm else ("iem",)
    return Genotype.from_cells(
        space.name, {label: _edges(space, PAPER_OPS[label]) for label in labels}, {"source": "RUAS paper"}
    )


PAPER_GENOTYPE: Genotype = paper_genotype(True)

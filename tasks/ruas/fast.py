"""A fast inference forward for compiled RUAS networks, built on :mod:`nasflow.infer.fastpath`.

``fast_ruas(model)`` returns a module whose ``forward(y)`` is ``model(y).out`` (unclamped),
computed with:

* the engine's fused cells (:func:`nasflow.infer.fastpath.prepare`) and oneDNN convs on
  channels-last tensors, under ``torch.inference_mode``;
* the NRM chain ``stem -> cells -> out`` folded (:func:`nasflow.infer.fastpath.fold_chain`): the 3x3
  stem is composed with the first cell's entry 1x1 convs and each cell's 1x1 output fusion with
  the next cell's entry 1x1 convs, where the genotype allows it;
* the IEM update as a short in-place chain: ``x = maxfilter(u) - 0.5 (u - y)`` with the 2x2 max
  filter as shifted maxima, ``t = clamp_(sigmoid_(cell(x)))`` and ``u = clamp_(y / t)`` written
  over ``t``; no ``ts`` list and no ``n`` or ``u`` kept for the caller: only ``out``;
* a thread policy: by default the image is split in as many row bands as there are intra-op
  threads, evaluated on that many Python threads with one intra-op thread each; each band carries
  a halo of the network's receptive radius (computed from the genotype), so the result is the
  one-piece result. On idle cores bands are a little slower than two OpenMP threads, but when
  another process keeps the cores busy OpenMP's barriers stall while the bands degrade
  gracefully (figures: ``benchmarks/README.md``). ``bands=0`` uses the
  intra-op threads instead; ``bands=N`` forces N bands;
* the noise-conditioned filter (``denoise="lee"``) after the last stage, its noise level read on the
  whole image before the band split (or from a split copy's fourth input plane).
"""

from __future__ import annotations

import functools
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from nasflow.core.cell import Cell
from nasflow.infer.fastpath import (
    CL, FastOptions, FusedCell, cell_radius, fold_chain, inference_policy, op_radius, prepare, run_in_bands,
)
from nasflow.tasks.ruas.denoise import lee_filter_, noise_level, split_noise_level
from nasflow.tasks.ruas.model import STEP, T_MIN, split_exposure


def max_filter2x2_(x: torch.Tensor) -> torch.Tensor:
    """2x2 max filter, stride 1, zero padding at the bottom and right (``max_filter2x2``), new tensor."""
    p = F.pad(x, (0, 1, 0, 1))
    out = torch.maximum(p[..., :-1, :-1], p[..., :-1, 1:])
    out = torch.maximum(out, p[..., 1:, :-1], out=out)
    return torch.maximum(out, p[..., 1:, 1:], out=out)


class FastRUAS(nn.Module):
    """Inference-only RUAS: ``forward(y) == RUASNet.forward(y).out`` of the network it was built from."""

    def __init__(self, model: nn.Module, options: FastOptions, bands: int | None = None) -> None:
        super().__init__()
        if bands is not None and bands < 0:
            raise ValueError(f"bands must be >= 0 or None, got {bands}")
        for name in ("iem_cells", "use_nrm"):
            if not hasattr(model, name):
                raise TypeError(f"fast_ruas needs a RUASNet (compiled), got {type(model).__name__} without {name!r}")
        if hasattr(model, "noise_gate"):  # the journal release: a per-image switch the fused chain has no place for
            raise TypeError("fast_ruas does not run the journal release's noise gate; use the network itself")
        self.options = options
        inner = prepare(model, options)
        self.iem_cells = inner.iem_cells
        self.use_nrm = bool(inner.use_nrm)
        self.warm_start = bool(getattr(inner, "warm_start", True))
        # inference only: a network's lift cap (RUASNet max_lift_ev) is its clamp here
        floor = getattr(inner, "lift_floor", None)
        self.t_min = float(getattr(inner, "t_min", T_MIN) if floor is None else floor)
        self.exposure = getattr(inner, "exposure", None)  # the global exposure policy (None: off)
        self.denoise = str(getattr(inner, "denoise", "none"))
        self.denoise_radius = int(getattr(inner, "denoise_radius", 1))
        self.level_plane = bool(getattr(inner, "level_plane", False))
        if self.use_nrm:
            chain = [inner.nrm_stem, *inner.nrm_cells, inner.nrm_out]
            if options.fold_chains:
                chain = fold_chain(chain)
            self.nrm = nn.ModuleList(chain)
        self.radius = self.receptive_radius()
        self.bands = bands  # None: one band per intra-op thread
        self._runtime()

    def _runtime(self) -> None:
        """Thread pools and the (compiled) forward: rebuilt, never copied or pickled."""
        # kept out of the module tree: a compiled wrapper would duplicate the state dict
        object.__setattr__(self, "_run", torch.compile(self._forward) if self.options.compile else self._forward)
        object.__setattr__(self, "_pools", {})

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state.pop("_run", None)
        state.pop("_pools", None)
        return state

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        self._runtime()

    def halo(self) -> int:
        """Receptive radius, for :func:`nasflow.infer.tiling.receptive_halo` (exact tiling)."""
        from nasflow.infer.tiling import NotTileable

        if self.radius is None:
            raise NotTileable("a cell of this network has an op of unknown extent")
        if self.exposure is not None:
            raise NotTileable("the global exposure step reads the whole image's mean: tiles would change the output")
        if self.denoise != "none" and not self.level_plane:
            raise NotTileable("the denoiser's noise level reads the whole image: tiles would change the output")
        return self.radius

    def split_global(self) -> "tuple[Any, FastRUAS] | None":
        """``(expose, the rest)`` for tiled inference, as :meth:`RUASNet.split_global`."""
        return split_exposure(self)

    def band_count(self, height: int, device: torch.device | str = "cpu") -> int:
        """How many row bands an image of ``height`` rows is cut into (1: one piece; always on a GPU)."""
        if self.radius is None or self.options.compile or torch.device(device).type != "cpu":
            return 1
        n = torch.get_num_threads() if self.bands is None else self.bands
        return n if n > 1 and height >= 4 * n * max(self.radius, 1) else 1

    def receptive_radius(self) -> int | None:
        """Rows of context an output pixel depends on (None if some op is not known to be local)."""
        total = 0
        for cell in self.iem_cells:
            r = cell_radius(cell)
            if r is None:
                return None
            total += 1 + r  # the 2x2 max filter reaches one pixel further
        if not self.warm_start:
            total -= 1  # the first stage reads y itself
        for m in self.nrm if self.use_nrm else ():
            r = cell_radius(m) if isinstance(m, (FusedCell, Cell)) else op_radius(m)
            if r is None:
                return None
            total += r
        if self.denoise != "none":
            total += self.denoise_radius
        return total

    def _forward(self, y: torch.Tensor, sigma: torch.Tensor | None = None) -> torch.Tensor:
        u = y
        last = len(self.iem_cells) - 1
        for k, cell in enumerate(self.iem_cells):
            if k == 0 and not self.warm_start:
                x = y.clone()
            else:
                x = max_filter2x2_(u)
            if k > 0:
                x.sub_(u - y, alpha=STEP)  # maxfilter(u) - STEP * (u - y): STEP * d is exact
            t = cell(x)
            t = torch.sigmoid_(t).clamp_(self.t_min, 1.0)
            keep = sigma is not None and k == last  # the denoiser reads the last map
            u = (torch.div(y, t) if keep else torch.div(y, t, out=t)).clamp_(0.0, 1.0)
        if self.use_nrm:
            feat = u
            for m in self.nrm:
                feat = m(feat)
            u = torch.sub(u, feat, out=feat)
        if sigma is None:
            return u
        return lee_filter_(u, sigma, t, self.denoise_radius)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        with inference_policy(self.options):
            if self.exposure is not None:
                y = self.exposure(y)  # on the whole image, before any band split
            sigma = None
            if self.denoise != "none":
                y, level = split_noise_level(y)
                # a split copy's input carries the level as a constant plane; else read on the whole image
                sigma = noise_level(y) if level is None else level[..., :1, :1]
            if self.options.channels_last and y.dim() == 4:
                y = y.contiguous(memory_format=CL)
            n = self.band_count(y.shape[-2], y.device)
            run = self._run if sigma is None else functools.partial(self._run, sigma=sigma)
            if n > 1:
                if n not in self._pools:
                    self._pools[n] = ThreadPoolExecutor(n, thread_name_prefix="ruas-band")
                out = run_in_bands(run, y, self.radius, n, self._pools[n])
            else:
                out = run(y)
            return out.contiguous() if self.options.contiguous_outputs else out

    def train(self, mode: bool = True) -> "FastRUAS":
        if mode:
            raise RuntimeError("a fast-path module is for inference only")
        return super().train(False)


def fast_ruas(
    model: nn.Module, options: FastOptions | None = None, bands: int | None = None, **overrides: Any
) -> FastRUAS:
    """A fast inference module for a compiled RUAS network: ``forward(y) -> out`` (unclamped).

    ``model`` (a compiled :class:`~nasflow.tasks.ruas.model.RUASNet`) is left untouched;
    ``overrides`` set :class:`~nasflow.infer.fastpath.FastOptions` fields (e.g. ``threads=1``);
    ``bands``: None (default) one row band per intra-op thread, each on its own thread; 0 one
    piece on the intra-op threads; N that many bands (see the module docstring).
    """
    return FastRUAS(model, replace(options or FastOptions(), **overrides), bands=bands)

"""Mixed operations and the relaxations that turn alphas into op weights.

A relaxation maps an alpha matrix ``[edges, ops]`` to op weights of the same shape and,
for samplers, the index of the one op each edge runs. A :class:`MixedOp` then applies
``sum_k w_k * op_k(x)`` (DARTS eq. 2), or only the sampled op when an index is given.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from nasflow.ops import OpSpec
from nasflow.registries import RELAXATIONS


@dataclass(frozen=True)
class RelaxedWeights:
    """Op weights per edge; ``active[e]`` is the only op edge ``e`` computes, if set."""

    weights: torch.Tensor  # [edges, ops]
    active: torch.Tensor | None = None  # [edges] long


class Relaxation(ABC):
    """Alphas -> op weights. Instances hold only hyperparameters (e.g. a temperature)."""

    name: str = ""

    @abstractmethod
    def __call__(self, alpha: torch.Tensor) -> RelaxedWeights: ...

    def probabilities(self, alpha: torch.Tensor) -> torch.Tensor:
        """Deterministic op probabilities, for logging and derivation."""
        return F.softmax(alpha, dim=-1)


@RELAXATIONS.register("softmax")
class SoftmaxRelaxation(Relaxation):
    """DARTS: a softmax over the ops of each edge (eq. 2); every op is computed."""

    name = "softmax"

    def __init__(self, temperature: float = 1.0) -> None:
        self.temperature = temperature

    def __call__(self, alpha: torch.Tensor) -> RelaxedWeights:
        return RelaxedWeights(F.softmax(alpha / self.temperature, dim=-1))


@RELAXATIONS.register("gumbel")
class GumbelStraightThrough(Relaxation):
    """GDAS (Dong & Yang 2019): hard Gumbel-softmax sample, straight-through gradient.

    Forward: one op per edge (``active``); backward: gradients of the soft sample, so every
    alpha of the edge receives a gradient. ``tau`` is annealed by the strategy.
    """

    name = "gumbel"

    def __init__(self, tau: float = 10.0, generator: torch.Generator | None = None) -> None:
        self.tau = tau
        self.generator = generator

    def __call__(self, alpha: torch.Tensor) -> RelaxedWeights:
        logits = F.log_softmax(alpha, dim=-1)
        for _ in range(10):  # resample on the (rare) non-finite draw
            uniform = torch.rand(alpha.shape, generator=self.generator, dtype=alpha.dtype).to(alpha.device)
            gumbel = -torch.log((-torch.log(uniform.clamp_min(1e-20))).clamp_min(1e-20))
            soft = F.softmax((logits + gumbel) / self.tau, dim=-1)
            if torch.isfinite(soft).all():
                break
        index = soft.argmax(dim=-1)
        hard = F.one_hot(index, alpha.shape[-1]).to(soft.dtype)
        return RelaxedWeights(hard - soft.detach() + soft, active=index)


@RELAXATIONS.register("hard")
class HardArgmax(Relaxation):
    """One-hot at the largest alpha of each edge (first on ties); no gradient to alphas.

    Evaluates the supernet as the discrete architecture its alphas point to; every op is still
    computed (weighted by exact 0/1), which makes it a faithful oracle for compiled networks.
    """

    name = "hard"

    def __call__(self, alpha: torch.Tensor) -> RelaxedWeights:
        index = alpha.detach().argmax(dim=-1)
        return RelaxedWeights(F.one_hot(index, alpha.shape[-1]).to(alpha.dtype))


def make_relaxation(spec: str | Relaxation, **kwargs: object) -> Relaxation:
    if isinstance(spec, Relaxation):
        return spec
    return RELAXATIONS.get(spec)(**kwargs)


class MixedOp(nn.Module):
    """All candidate ops of one edge; weights come from the caller (see :class:`SuperCell`)."""

    def __init__(self, specs: Sequence[OpSpec], channels: int, stride: int = 1, affine: bool = True) -> None:
        super().__init__()
        self.op_names = tuple(s.name for s in specs)
        self.zero_mask = tuple(s.is_zero for s in specs)
        self.ops = nn.ModuleList(s.build(channels, stride, affine) for s in specs)

    def forward(self, x: torch.Tensor, weights: torch.Tensor, active: torch.Tensor | None = None) -> torch.Tensor:
        if active is not None:
            k = int(active)
            out = self.ops[k](x) * weights[k]
            # Other ops contribute weights[i] (exactly 0 forward) so their alphas get gradients.
            rest = torch.cat([weights[:k], weights[k + 1 :]]).sum()
            return out + rest
        out: torch.Tensor | None = None
        for w, op, is_zero in zip(weights, self.ops, self.zero_mask):
            if is_zero:  # contributes w * 0: nothing to the value, nothing to any gradient
                continue
            term = op(x) * w
            out = term if out is None else out + term
        if out is None:  # only zero ops on this edge
            out = self.ops[0](x) * weights.sum()
        return out

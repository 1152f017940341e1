"""Mixed operations and the relaxations that turn alphas into op weights.

A relaxation maps an alpha matrix ``[edges, ops]`` to op weights of the same shape and,
for samplers, the index of the one op each edge runs. A :class:`MixedOp` then applies
``sum_k w_k * op_k(x)`` (DARTS eq. 2), or only the sampled op when an index is given.

When every candidate of an edge is linear in ``x`` (zero, identity, same-size convolutions and
their residual forms ``conv(x) + x``, as in the RUAS space), the weighted sum is itself one
convolution: ``sum_k w_k (W_k * x + b_k + c_k x) = (sum_k w_k W_k + (sum_k w_k c_k) I) * x +
sum_k w_k b_k``, with each kernel placed in a common dense one. :class:`MixedOp` then runs that
single convolution (built from the live weights, so autograd differentiates the same function):
one kernel and one stored input per edge instead of one per op, the same value up to float
rounding. It does so only where the common kernel has no more taps than the separate ones.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from nasflow.core.ops import OpSpec, linear_form, same_size_conv
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


@dataclass(frozen=True)
class _LinearPart:
    """Op ``index`` of an edge as ``conv(x) + identity * x``; ``conv`` is an attribute path in the op."""

    index: int
    conv: tuple[str, ...] | None
    identity: float
    kernel: int = 1
    dilation: int = 1


def _linear_form(module: nn.Module) -> tuple[tuple[str, ...] | None, float, int, int] | None:
    """``module`` as (conv path, identity coefficient, kernel, dilation) (:func:`~nasflow.core.ops.linear_form`
    with a same-size conv keeping its channels), or None if not of that form."""
    form = linear_form(module)
    if form is None:
        return None
    conv, path, identity = form
    if conv is None:
        return None, identity, 1, 1
    shape = same_size_conv(conv)
    if shape is None or conv.in_channels != conv.out_channels:
        return None
    return path, identity, *shape


def _linear_plan(ops: Sequence[nn.Module], zero_mask: Sequence[bool], stride: int) -> tuple[tuple[_LinearPart, ...], int] | None:
    """The edge as one convolution: its parts and the common kernel size, or None if not worth it."""
    if stride != 1:
        return None
    parts = []
    for i, (op, is_zero) in enumerate(zip(ops, zero_mask)):
        if is_zero:
            continue
        form = _linear_form(op)
        if form is None:
            return None
        parts.append(_LinearPart(i, *form))
    convs = [p for p in parts if p.conv is not None]
    if len(convs) < 2:
        return None
    extent = max(p.dilation * (p.kernel - 1) + 1 for p in convs)
    if extent * extent > sum(p.kernel * p.kernel for p in convs):  # the dense kernel would cost more taps
        return None
    return tuple(parts), extent


def _placed(weight: torch.Tensor, extent: int, dilation: int) -> torch.Tensor:
    """``weight`` (k x k, dilation d) inside a dense ``extent x extent`` kernel, differentiably."""
    k = weight.shape[-1]
    if dilation == 1:
        pad = (extent - k) // 2
        return F.pad(weight, (pad, pad, pad, pad)) if pad else weight
    out = weight.new_zeros(*weight.shape[:2], extent, extent)
    start = extent // 2 - (k // 2) * dilation
    stop = start + (k - 1) * dilation + 1
    out[:, :, start:stop:dilation, start:stop:dilation] = weight
    return out


class MixedOp(nn.Module):
    """All candidate ops of one edge; weights come from the caller (see :class:`SuperCell`).

    ``fuse_linear``: run an edge of linear candidates as one convolution (see the module docstring)
    always (True), never (False), or on CPU tensors only (None, the default). On a CPU it cut the
    RUAS search step 1.8x; on a GPU (H200, 320x320) it used 2.7x less memory but took 1.3x longer
    (many tiny kernels build the common kernel), see ``benchmarks/search_speed.py``.
    """

    def __init__(self, specs: Sequence[OpSpec], channels: int, stride: int = 1, affine: bool = True) -> None:
        super().__init__()
        self.op_names = tuple(s.name for s in specs)
        self.channels = channels  # the cost model prices each op at this width (nasflow.core.cost)
        self.zero_mask = tuple(s.is_zero for s in specs)
        self.ops = nn.ModuleList(s.build(channels, stride, affine) for s in specs)
        self.fuse_linear: bool | None = None
        self._linear = _linear_plan(self.ops, self.zero_mask, stride)

    @property
    def fusable(self) -> bool:
        """Whether this edge's weighted sum can run as one convolution."""
        return self._linear is not None

    def fused(self, x: torch.Tensor) -> bool:
        """Whether this edge runs as one convolution on ``x``."""
        if self._linear is None or self.fuse_linear is False:
            return False
        return self.fuse_linear is True or x.device.type == "cpu"

    def _conv(self, part: _LinearPart) -> nn.Conv2d:
        module: nn.Module = self.ops[part.index]
        for name in part.conv or ():
            module = getattr(module, name)
        return module  # type: ignore[return-value]

    def _fused(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        parts, extent = self._linear  # type: ignore[misc]
        kernel = bias = identity = None
        weights = weights.to(x.dtype)  # as in the sum, where each w_k multiplies a tensor of x's dtype
        for part in parts:
            w = weights[part.index]
            if part.conv is not None:
                conv = self._conv(part)
                term = w * _placed(conv.weight, extent, part.dilation)
                kernel = term if kernel is None else kernel + term
                if conv.bias is not None:
                    bias = w * conv.bias if bias is None else bias + w * conv.bias
            if part.identity:
                identity = w * part.identity if identity is None else identity + w * part.identity
        assert kernel is not None
        if identity is not None:  # (sum_k w_k c_k) I on the centre tap
            channels = kernel.shape[0]
            eye = torch.eye(channels, dtype=kernel.dtype, device=kernel.device).view(channels, channels, 1, 1)
            kernel = kernel + identity * _placed(eye, extent, 1)
        return F.conv2d(x, kernel, bias, padding=extent // 2)

    def forward(self, x: torch.Tensor, weights: torch.Tensor, active: torch.Tensor | None = None) -> torch.Tensor:
        if active is not None:
            k = int(active)
            out = self.ops[k](x) * weights[k]
            # Other ops contribute weights[i] (exactly 0 forward) so their alphas get gradients.
            rest = torch.cat([weights[:k], weights[k + 1 :]]).sum()
            return out + rest
        if self.fused(x):
            return self._fused(x, weights)
        out: torch.Tensor | None = None
        for w, op, is_zero in zip(weights, self.ops, self.zero_mask):
            if is_zero:  # contributes w * 0: nothing to the value, nothing to any gradient
                continue
            term = op(x) * w
            out = term if out is None else out + term
        if out is None:  # only zero ops on this edge
            out = self.ops[0](x) * weights.sum()
        return out

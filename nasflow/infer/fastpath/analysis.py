"""Reading a cell's edges: linear forms ``conv(x) + coef * x``, activations, and the planner's records."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from nasflow.infer.fastpath.conv import FastConv, _Conv, _same_conv
from nasflow.core.ops import linear_form


class Unsupported(Exception):
    """This cell (or module) cannot be fused; the caller keeps the original."""


def _linear_form(module: nn.Module) -> tuple[_Conv | None, float] | None:
    """``module`` as ``conv(x) + coef * x`` (conv may be None; :func:`nasflow.core.ops.linear_form`, which
    also sees :class:`FastConv`), or None if it is not of that form."""
    form = linear_form(module, (nn.Conv2d, FastConv))
    if form is None:
        return None
    module, _, coef = form
    if module is None:
        return None, coef
    conv = _same_conv(module)
    return None if conv is None else (conv, coef)


_ELEMENTWISE = (
    nn.Identity, nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.Sigmoid, nn.Tanh, nn.SiLU, nn.GELU, nn.ELU, nn.Hardtanh,
    nn.Hardswish, nn.Hardsigmoid, nn.Softplus, nn.Mish, nn.CELU, nn.SELU,
)


def _act_spec(act: nn.Module | None) -> tuple | None:
    """How to apply a cell activation to a whole block in place; raises if not elementwise."""
    if act is None:
        return None
    if type(act) is nn.LeakyReLU:
        return ("leaky", float(act.negative_slope))
    if type(act) is nn.ReLU:
        return ("relu",)
    if type(act) in _ELEMENTWISE:
        return ("module",)
    raise Unsupported(f"activation {type(act).__name__} is not known to be elementwise")


@dataclass
class _Term:
    """One summand of a node: ``conv(src) + coef * src`` (linear) or ``edges[opaque](src)``."""

    src: str
    conv: _Conv | None = None
    coef: float = 0.0
    opaque: str | None = None

    @property
    def linear(self) -> bool:
        return self.opaque is None


@dataclass
class _Loc:
    """Where a node's value lives: a slot, and a channel range of it (None: the whole slot)."""

    slot: int
    start: int | None = None
    stop: int | None = None

    @property
    def whole(self) -> bool:
        return self.start is None


@dataclass
class _Group:
    """Nodes computed by one conv of one source: rows in order, a common kernel."""

    src: str
    activate: bool
    key: tuple[int, int] | None  # common (kernel, dilation); None: 1x1
    nodes: list[str] = field(default_factory=list)


def _place(conv: _Conv, k: int, dil: int) -> torch.Tensor:
    """``conv``'s weight inside a ``k x k`` kernel of dilation ``dil`` (zeros elsewhere)."""
    w = conv.weight
    if conv.k == k and (conv.dilation == dil or k == 1):
        return w
    out = w.new_zeros(w.shape[0], w.shape[1], k, k)
    c, ck = k // 2, conv.k // 2
    step = conv.dilation if conv.k > 1 else 0
    if step % dil:  # pragma: no cover - groups only mix kernels that fit
        raise Unsupported("kernel does not fit the common kernel")
    for i in range(conv.k):
        for j in range(conv.k):
            out[:, :, c + (i - ck) * step // dil, c + (j - ck) * step // dil] = w[:, :, i, j]
    return out

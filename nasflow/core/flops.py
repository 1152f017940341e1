"""Multiply-add counts of a network at a given input size, for tables that compare architectures.

The convention of the RUAS paper and most low-light papers: one multiply-add is one FLOP and a
bias add is one more per output value; element-wise ops (activations, residual adds, clamps) and
pooling are not counted. Counted: ``Conv2d`` and ``Linear``. The forward pass runs on the
``meta`` device (shapes only, no arithmetic), so a 4K count costs nothing.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn


def _conv_flops(m: nn.Conv2d, out: torch.Tensor) -> int:
    per_output = (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1] + (m.bias is not None)
    return out.numel() * per_output


def _linear_flops(m: nn.Linear, out: torch.Tensor) -> int:
    return out.numel() * (m.in_features + (m.bias is not None))


def count_flops(model: nn.Module, *shape: int, **forward_kwargs: Any) -> int:
    """FLOPs (multiply-adds, biases included) of one forward pass of ``model`` on a zero input of
    ``shape`` (e.g. ``1, 3, 400, 600``); the model itself is left untouched."""
    ghost = copy.deepcopy(model).to("meta")
    total = 0

    def hook(m: nn.Module, _inputs: Any, out: Any) -> None:
        nonlocal total
        if isinstance(out, torch.Tensor):
            total += _conv_flops(m, out) if isinstance(m, nn.Conv2d) else _linear_flops(m, out)  # type: ignore[arg-type]

    handles = [m.register_forward_hook(hook) for m in ghost.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    try:
        with torch.no_grad():
            ghost(torch.zeros(*shape, device="meta"), **forward_kwargs)
    finally:
        for h in handles:
            h.remove()
    return total

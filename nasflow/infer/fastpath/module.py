"""The whole model: :func:`prepare` fuses a copy, :class:`FastModule` runs it under the policy."""

from __future__ import annotations

import copy
from dataclasses import replace
from typing import Any

import torch
from torch import nn

from nasflow.core.cell import Cell
from nasflow.infer.fastpath.chain import _fold_sequentials
from nasflow.infer.fastpath.conv import FastConv
from nasflow.infer.fastpath.fused_cell import fuse_cell
from nasflow.infer.fastpath.options import CL, FastOptions
from nasflow.infer.fastpath.runtime import hold_heap, inference_policy, to_channels_last, to_contiguous


class FastModule(nn.Module):
    """Runs ``module`` under the inference policy of ``options`` (see :func:`fast_model`)."""

    def __init__(self, module: nn.Module, options: FastOptions) -> None:
        super().__init__()
        self.module = module
        self.options = options
        self._runtime()

    def _runtime(self) -> None:
        # kept out of the module tree: a compiled wrapper would duplicate the state dict
        object.__setattr__(self, "_run", torch.compile(self.module) if self.options.compile else self.module)

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state.pop("_run", None)
        return state

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        self._runtime()

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        with inference_policy(self.options):
            if self.options.channels_last:
                args, kwargs = to_channels_last(args), to_channels_last(kwargs)
            out = self._run(*args, **kwargs)
            return to_contiguous(out) if self.options.contiguous_outputs else out

    def train(self, mode: bool = True) -> "FastModule":
        if mode:
            raise RuntimeError("a fast-path module is for inference only")
        return super().train(False)


def prepare(model: nn.Module, options: FastOptions) -> nn.Module:
    """An eval-mode, grad-free deep copy of ``model`` with its cells fused (no policy wrapper)."""
    if options.hold_heap:
        hold_heap()
    inner = copy.deepcopy(model).eval()
    inner.requires_grad_(False)
    replacements = {id(m): fuse_cell(m, options) for m in inner.modules() if type(m) is Cell}
    for parent in list(inner.modules()):
        for name, child in list(parent.named_children()):
            if id(child) in replacements:
                setattr(parent, name, replacements[id(child)])
    for parent in list(inner.modules()):  # plain convs outside cells: straight to oneDNN too
        for name, child in list(parent.named_children()):
            if type(child) is nn.Conv2d:
                fast = FastConv.from_conv(child, options.channels_last)
                if fast is not None:
                    setattr(parent, name, fast)
                elif options.channels_last:
                    child.to(memory_format=CL)
    if options.fold_chains:
        _fold_sequentials(inner)
    return inner


def fast_model(model: nn.Module, options: FastOptions | None = None, **overrides: Any) -> FastModule:
    """An inference-only copy of ``model`` with every compiled :class:`~nasflow.core.cell.Cell` fused.

    ``model`` is left untouched. The copy runs in eval mode under ``torch.inference_mode``, on
    channels-last tensors, and returns what ``model`` returns (tensors in the default layout).
    ``overrides`` set :class:`FastOptions` fields, e.g. ``fast_model(net, threads=1)``.
    """
    opts = replace(options or FastOptions(), **overrides)
    return FastModule(prepare(model, opts), opts)

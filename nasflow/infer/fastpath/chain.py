"""Folding linear maps across a chain of modules (:func:`fold_chain`): 1x1 convs composed across boundaries."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from nasflow.infer.fastpath.analysis import Unsupported
from nasflow.infer.fastpath.conv import FastConv, _same_conv
from nasflow.infer.fastpath.fused_cell import FusedCell, _liveness, _mark_inplace
from nasflow.infer.fastpath.options import CL


def _compose_into_entry(
    nxt: FusedCell, w_prev: torch.Tensor, b_prev: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``G @ (w_prev * x + b_prev)`` for ``nxt``'s entry 1x1 conv G: the composed weight and bias."""
    _, gw, gb = nxt.entry_conv()
    g = getattr(nxt, gw).detach().to(torch.float64)[:, :, 0, 0]
    w = torch.einsum("oc,cjhw->ojhw", g, w_prev.detach().to(torch.float64))
    b = torch.zeros(g.shape[0], dtype=torch.float64) if gb is None else getattr(nxt, gb).detach().to(torch.float64)
    if b_prev is not None:
        b = b + g @ b_prev.detach().to(torch.float64)
    return w, b


def _drop_entry(nxt: FusedCell) -> None:
    """``nxt`` now receives its entry conv's output: the conv step becomes the input step."""
    idx, _, _ = nxt.entry_conv()
    step = nxt.steps[idx]
    out, act = step[6], step[7]
    steps = list(nxt.steps)
    steps[0] = ("in", 0, out)
    steps[idx] = ("act_in", out, act)
    nxt.steps = _mark_inplace(steps)
    nxt._release = _liveness(nxt.steps, nxt.output_slot, nxt.n_slots)
    nxt.folded_entry = True


def fold_chain(modules: Sequence[nn.Module]) -> list[nn.Module]:
    """Modules applied one after the other, with linear maps composed across their boundaries.

    Where a plain same-size ``Conv2d`` (or a :class:`FusedCell` whose output is a sum of 1x1
    convs) feeds a :class:`FusedCell` whose input is read only by one 1x1 conv, that conv is
    composed into the producer (``G(Wx + b) = (GW)x + Gb``: exact, no padding involved), and the
    next cell starts from the composed result. Returns a new list; composed modules are new
    objects or modified fused cells, so pass modules you own (e.g. inside a :func:`fast_model` copy).
    """
    mods = list(modules)
    for i in range(len(mods) - 1):
        prev, nxt = mods[i], mods[i + 1]
        if not isinstance(nxt, FusedCell) or nxt.folded_entry:
            continue
        linear_prev = (type(prev) in (nn.Conv2d, FastConv) and _same_conv(prev) is not None) or (
            isinstance(prev, FusedCell) and prev.output_partials() is not None)
        if not linear_prev:
            continue
        if nxt.entry_conv() is None:
            # re-plan with one entry block of the 1x1 convs reading the input, if that gives one
            try:
                replanned = FusedCell(nxt._source, nxt.options, entry_block=True)
            except Unsupported:  # pragma: no cover - it was fused once already
                continue
            if replanned.entry_conv() is None:
                continue
            mods[i + 1] = nxt = replanned
        if type(prev) in (nn.Conv2d, FastConv) and _same_conv(prev) is not None:
            conv = _same_conv(prev)
            w, b = _compose_into_entry(nxt, conv.weight, conv.bias)
            new = FastConv(w.to(prev.weight.dtype), b.to(prev.weight.dtype), conv.dilation, nxt.options.channels_last)
            if hasattr(prev, "nas_label"):
                new.nas_label = prev.nas_label
            mods[i] = new
            _drop_entry(nxt)
        elif isinstance(prev, FusedCell) and prev.output_partials() is not None:
            _, _, gb = nxt.entry_conv()
            for j, idx in enumerate(prev.output_partials()):
                step = prev.steps[idx]
                wpos = 2 if step[0] == "conv" else 3  # ("conv", src, w, b, ...) / ("acc", acc, src, w, b, ...)
                wname, bname = step[wpos], step[wpos + 1]
                b_prev = getattr(prev, bname) if bname is not None else None
                w, b = _compose_into_entry(nxt, getattr(prev, wname), b_prev)
                fmt = CL if prev.options.channels_last else torch.contiguous_format
                setattr(prev, wname, w.to(prev._dtype).contiguous(memory_format=fmt))
                if j > 0:  # later partials carry no bias: the composed bias enters once
                    continue
                if bname is None:
                    if b_prev is None and gb is None:
                        continue
                    bname = f"b_fold{idx}"
                    prev.register_buffer(bname, b.to(prev._dtype))
                    prev.steps[idx] = step[: wpos + 1] + (bname,) + step[wpos + 2:]
                else:
                    setattr(prev, bname, b.to(prev._dtype))
            _drop_entry(nxt)
    return mods


def _fold_sequentials(model: nn.Module) -> None:
    for parent in list(model.modules()):
        if type(parent) is nn.Sequential and any(isinstance(m, FusedCell) for m in parent):
            folded = fold_chain(list(parent))
            for name, m in zip(list(parent._modules), folded):
                parent._modules[name] = m

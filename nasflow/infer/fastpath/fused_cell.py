"""The fused cell: :class:`FusedCell` runs a cell as a short program of steps over numbered slots."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from nasflow.core.cell import Cell
from nasflow.infer.fastpath.analysis import Unsupported, _act_spec
from nasflow.infer.fastpath.builder import Program, plan
from nasflow.infer.fastpath.conv import _onednn, conv2d, conv2d_acc, conv2d_packed, pack_weight
from nasflow.infer.fastpath.options import CL, FastOptions


class FusedCell(nn.Module):
    """A :class:`~nasflow.core.cell.Cell` compiled into a short program of fused steps (inference only).

    ``steps`` is a list of tuples run by :meth:`forward` over numbered slots; weights are the
    buffers ``w<i>``/``b<i>``. The steps:

    * ``("in", i, slot)``: input ``i`` (through its ``pre`` module);
    * ``("conv", src, w, b, pad, dil, out, act, packs)``: ``out = act?(conv(src))``, fresh; ``packs``:
      the width packings of the weight (buffers ``w<i>p<P>``), tried in order at run time;
    * ``("acc", acc, src, w, b, pad, dil)``: ``acc += conv(src)`` in place;
    * ``("copy", src, start, stop, out)``: a contiguous copy of a channel slice;
    * ``("scale", src, coef, out, act, inplace)``: ``act?(coef * src)`` elementwise (in place
      when ``src`` is ours and read by nothing later);
    * ``("module", name, src, out)``: an edge op run as is ("opaque");
    * ``("add", acc, [slots], act)``: ``acc += each slot`` then ``act?`` in place;
    * ``("sum", [slots], out, act)``: ``act?(sum of slots)``, out of place;
    * ``("cat", [slots], out)`` and ``("post", src, out)``: the original output path;
    * ``("act_in", slot, act)``: the activation of an entry conv folded into the previous module.
    """

    def __init__(self, cell: Cell, options: FastOptions | None = None, entry_block: bool = False) -> None:
        super().__init__()
        self.options = options or FastOptions()
        object.__setattr__(self, "_source", cell)  # to re-plan (fold_chain); not a submodule
        self.graph = cell.graph
        self.pre = cell.pre
        self.act = cell.act
        self.opaque = nn.ModuleDict()
        if hasattr(cell, "nas_label"):
            self.nas_label = cell.nas_label
        self._act = _act_spec(cell.act)
        self.folded_entry = False
        self._dtype = next((p.dtype for p in cell.parameters() if p.is_floating_point()), torch.get_default_dtype())
        self._load(plan(cell, self.options, entry_block))

    def _load(self, program: Program) -> None:
        """Take the planned program: its weights become buffers, its opaque ops submodules."""
        for i, weight in enumerate(program.weights):
            self._register_weight(i, weight.weight, weight.bias, weight.dilation, weight.packs)
        for name, module in program.opaque.items():
            self.opaque[name] = module
        self.post_module: nn.Module | None = program.post_module
        self.n_slots = program.n_slots
        self.output_slot = program.output_slot
        self.steps: list[tuple] = _mark_inplace(program.steps)
        self._release = _liveness(self.steps, self.output_slot, self.n_slots)

    def _register_weight(
        self, i: int, w: torch.Tensor, b: torch.Tensor | None, dil: int, packs: tuple[int, ...]
    ) -> None:
        """Register ``w<i>`` (and ``b<i>``) as buffers, with the width-packed forms in ``packs``."""
        w = w.to(self._dtype)
        cl = self.options.channels_last
        self.register_buffer(f"w{i}", w.contiguous(memory_format=CL) if cl else w.contiguous())
        for p in packs:
            self.register_buffer(f"w{i}p{p}", pack_weight(w, dil, p).contiguous(memory_format=CL), persistent=False)
        if b is None:
            return
        b = b.to(self._dtype).contiguous()
        self.register_buffer(f"b{i}", b)
        for p in packs:
            self.register_buffer(f"b{i}p{p}", b.repeat(p), persistent=False)

    # -- running -----------------------------------------------------------------------------------------
    def _apply_act(self, x: torch.Tensor, fresh: bool) -> torch.Tensor:
        spec = self._act
        if spec is None:
            return x
        if spec[0] == "leaky":
            return F.leaky_relu_(x, spec[1]) if fresh else F.leaky_relu(x, spec[1])
        if spec[0] == "relu":
            return F.relu_(x) if fresh else F.relu(x)
        return self.act(x)

    def _conv(
        self, x: torch.Tensor, w: str, b: str | None, pad: int, dil: int, act: bool, packs: tuple[int, ...]
    ) -> torch.Tensor:
        spec = self._act if act else None
        module_act = spec is not None and spec[0] == "module"
        if module_act:
            spec = None
        y = None
        if packs and _onednn(x):
            for p in packs:
                if x.shape[-1] % p == 0:
                    bias = None if b is None else getattr(self, f"{b}p{p}")
                    y = conv2d_packed(x, getattr(self, f"{w}p{p}"), bias, pad, dil, p, spec)
                    break
        if y is None:
            y = conv2d(x, getattr(self, w), None if b is None else getattr(self, b), pad, dil, spec)
        return self.act(y) if module_act else y

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        if len(inputs) != len(self.graph.inputs):
            raise ValueError(f"cell expects {len(self.graph.inputs)} input(s), got {len(inputs)}")
        vals: list[Any] = [None] * self.n_slots
        cl = self.options.channels_last
        for step, release in zip(self.steps, self._release):
            op = step[0]
            if op == "conv":
                _, src, w, b, pad, dil, out, act, packs = step
                vals[out] = self._conv(vals[src], w, b, pad, dil, act, packs)
            elif op == "acc":
                _, acc, src, w, b, pad, dil = step
                conv2d_acc(vals[acc], vals[src], getattr(self, w), None if b is None else getattr(self, b), pad, dil)
            elif op == "in":
                _, i, out = step
                name = self.graph.inputs[i]
                x = inputs[i]
                if name in self.pre:
                    x = self.pre[name](x)
                if cl and x.dim() == 4:
                    x = x.contiguous(memory_format=CL)
                vals[out] = x
            elif op == "act_in":  # the previous module's fresh output (see fold_chain)
                _, slot, act = step
                if act:
                    vals[slot] = self._apply_act(vals[slot], True)
            elif op == "copy":
                _, src, start, stop, out = step
                x = vals[src][:, start:stop]
                vals[out] = x.contiguous(memory_format=CL) if cl else x.contiguous()
            elif op == "scale":
                _, src, coef, out, act, inplace = step
                x = vals[src]
                if coef != 1.0:
                    x = x.mul_(coef) if inplace else x * coef
                vals[out] = self._apply_act(x, inplace or coef != 1.0) if act else x
            elif op == "module":
                _, name, src, out = step
                vals[out] = self.opaque[name](vals[src])
            elif op == "add":
                _, acc, slots, act = step
                for s in slots:
                    vals[acc].add_(vals[s])
                if act:
                    vals[acc] = self._apply_act(vals[acc], True)
            elif op == "sum":
                _, slots, out, act = step
                acc = vals[slots[0]] + vals[slots[1]] if len(slots) > 1 else vals[slots[0]]
                for s in slots[2:]:
                    acc.add_(vals[s])
                vals[out] = self._apply_act(acc, len(slots) > 1) if act else acc
            elif op == "cat":
                _, slots, out = step
                xs = [vals[s] for s in slots]
                vals[out] = xs[0] if len(xs) == 1 else torch.cat(xs, 1)
            elif op == "post":
                _, src, out = step
                vals[out] = self.post_module(vals[src])
            else:  # pragma: no cover - the builder emits only the ops above
                raise RuntimeError(f"unknown fused step {op}")
            for s in release:
                vals[s] = None
        return vals[self.output_slot]

    # -- folding across cells (see fold_chain) -------------------------------------------------------------
    def entry_conv(self) -> tuple[int, str, str | None] | None:
        """(step index, weight, bias) of a 1x1 conv that is the only reader of the cell's input.

        Only for one-input cells without a ``pre`` module; None when the input is read otherwise.
        """
        if self.folded_entry or len(self.graph.inputs) != 1 or len(self.pre) or self.steps[0] != ("in", 0, 0):
            return None
        readers = [i for i, s in enumerate(self.steps) if i > 0 and 0 in _reads(s)]
        if len(readers) != 1:
            return None
        step = self.steps[readers[0]]
        if step[0] != "conv" or step[1] != 0 or step[4] != 0 or getattr(self, step[2]).shape[-1] != 1:
            return None
        return readers[0], step[2], step[3]

    def output_partials(self) -> list[int] | None:
        """Indices of the 1x1 ``conv``/``acc`` steps whose sum is the output, if it is so formed."""
        out = self.output_slot
        writers = [i for i, s in enumerate(self.steps) if _writes(s) == out]
        if not writers or self.steps[writers[0]][0] != "conv":
            return None
        for i in writers:
            s = self.steps[i]
            if s[0] == "conv" and i == writers[0]:
                ok = not s[7] and s[4] == 0
                w = s[2]
            elif s[0] == "acc":
                ok = s[5] == 0
                w = s[3]
            else:
                return None
            if not ok or getattr(self, w).shape[-1] != 1:
                return None
        return writers

    def halo(self) -> int:
        """Receptive radius, for :func:`nasflow.infer.tiling.receptive_halo` (the fused convs are buffers)."""
        from nasflow.infer.tiling import cell_halo

        return cell_halo(self._source)

    def extra_repr(self) -> str:
        return f"steps={len(self.steps)}: {' '.join(s[0] for s in self.steps)}"


def _reads(step: tuple) -> tuple[int, ...]:
    op = step[0]
    if op in ("conv", "copy", "scale", "post"):
        return (step[1],)
    if op == "acc":
        return (step[1], step[2])
    if op == "module":
        return (step[2],)
    if op == "add":
        return (step[1], *step[2])
    if op in ("sum", "cat"):
        return tuple(step[1])
    if op == "act_in":
        return (step[1],)
    return ()


def _writes(step: tuple) -> int | None:
    op = step[0]
    if op in ("in", "sum", "cat", "post"):
        return step[2]
    if op == "conv":
        return step[6]
    if op == "copy":
        return step[4]
    if op in ("scale", "module"):
        return step[3]
    if op in ("acc", "add", "act_in"):
        return step[1]
    return None


def _mark_inplace(steps: list[tuple]) -> list[tuple]:
    """Let ``scale`` steps work in place where their source tensor is ours and dead afterwards.

    Tracks which slots hold the same tensor (aliases) and which tensors the program created
    itself (conv outputs, copies, sums); an input or an opaque module's output is never touched.
    """
    tensor: dict[int, int] = {}  # slot -> tensor id
    ours: set[int] = set()
    fresh_id = iter(range(1 << 30))
    steps = list(steps)

    def new(slot: int, own: bool) -> None:
        tensor[slot] = next(fresh_id)
        if own:
            ours.add(tensor[slot])

    for i, st in enumerate(steps):
        op = st[0]
        if op == "scale":
            _, src, coef, out, act, _ = st
            if coef == 1.0 and not act:
                tensor[out] = tensor[src]
                continue
            same = tensor[src]
            later = any(tensor.get(r) == same for t in steps[i + 1:] for r in _reads(t))
            if same in ours and not later:
                steps[i] = st[:5] + (True,)
                tensor[out] = same
            else:
                steps[i] = st[:5] + (False,)
                new(out, True)
        elif op in ("conv", "copy"):
            new(_writes(st), True)
        elif op == "sum":
            if len(st[1]) > 1 or st[3]:
                new(st[2], True)
            else:
                tensor[st[2]] = tensor[st[1][0]]
        elif op == "cat":
            if len(st[1]) > 1:
                new(st[2], True)
            else:
                tensor[st[2]] = tensor[st[1][0]]
        elif op in ("in", "module", "post"):
            new(_writes(st), False)
        elif op == "act_in":
            ours.add(tensor.setdefault(st[1], next(fresh_id)))  # the previous module's fresh output
    return steps


def _liveness(steps: list[tuple], output: int, n_slots: int) -> list[list[int]]:
    """Per step, the slots whose last use it is (released right after it, to bound memory)."""
    last: dict[int, int] = {}
    for i, s in enumerate(steps):
        for slot in (*_reads(s), _writes(s)):
            if slot is not None:
                last[slot] = i
    release: list[list[int]] = [[] for _ in steps]
    for slot, i in last.items():
        if slot != output:
            release[i].append(slot)
    return release


def fuse_cell(cell: Cell, options: FastOptions | None = None) -> nn.Module:
    """A :class:`FusedCell` for ``cell``, or ``cell`` itself if it cannot be fused."""
    try:
        return FusedCell(cell, options)
    except Unsupported:
        return cell

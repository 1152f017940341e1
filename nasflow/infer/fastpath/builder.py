"""Planning a fused cell: :func:`plan` turns a Cell's graph and ops into a :class:`Program`.

The program is plain data (steps over numbered slots, the weights they name, the modules run as
they are); :class:`~nasflow.infer.fastpath.fused_cell.FusedCell` registers its weights as buffers
and runs it. The builder knows nothing of FusedCell.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from nasflow.core.cell import Cell
from nasflow.infer.fastpath.analysis import Unsupported, _act_spec, _Group, _Loc, _Term, _linear_form, _place
from nasflow.infer.fastpath.conv import _lanes, _same_conv, pack_choices
from nasflow.infer.fastpath.options import FastOptions


@dataclass(frozen=True)
class Weight:
    """A conv weight the steps name ``w<i>`` (its bias ``b<i>``), with its width packings ``w<i>p<P>``."""

    weight: torch.Tensor
    bias: torch.Tensor | None
    dilation: int
    packs: tuple[int, ...]


@dataclass
class Program:
    """A fused cell's plan: ``steps`` (see :class:`~nasflow.infer.fastpath.fused_cell.FusedCell`)
    over ``n_slots`` slots, ending in ``output_slot``; ``weights[i]`` is ``w<i>``/``b<i>``;
    ``opaque``: edge ops run as they are; ``post_module``: the cell's output module, if run."""

    channels_last: bool
    steps: list[tuple] = field(default_factory=list)
    weights: list[Weight] = field(default_factory=list)
    n_slots: int = 0
    output_slot: int = -1
    opaque: dict[str, nn.Module] = field(default_factory=dict)
    post_module: nn.Module | None = None

    def new_slot(self) -> int:
        self.n_slots += 1
        return self.n_slots - 1

    def add_weight(
        self, w: torch.Tensor, b: torch.Tensor | None, dil: int = 1, pack: bool = False
    ) -> tuple[str, str | None, tuple[int, ...]]:
        """Name ``w`` (and ``b``); with ``pack`` (channels-last only), also its width-packed forms."""
        i = len(self.weights)
        c_out, c_in, k, _ = w.shape
        packs = pack_choices(c_in, c_out, k, dil) if pack and self.channels_last else ()
        self.weights.append(Weight(w, b, dil, packs))
        return f"w{i}", None if b is None else f"b{i}", packs


def plan(cell: Cell, options: FastOptions, entry_block: bool = False) -> Program:
    """The fused program of ``cell`` (raises :class:`Unsupported` to fall back to the cell)."""
    builder = _Builder(cell, options, entry_block)
    builder.build()
    return builder.prog


class _Builder:
    """Turns a Cell's graph and ops into a :class:`Program` (raises Unsupported to fall back)."""

    def __init__(self, cell: Cell, options: FastOptions, entry_block: bool = False) -> None:
        self.prog = Program(options.channels_last)
        self.entry_block = entry_block
        self.cell = cell
        self.g = cell.graph
        self.opt = options
        self.order = {n: i for i, n in enumerate(self.g.node_names)}
        self.loc: dict[str, _Loc] = {}
        self.chan: dict[str, int | None] = {n: None for n in self.g.node_names}
        self.slot_chan: dict[int, int | None] = {}
        self.copies: dict[str, int] = {}  # node -> slot of a contiguous copy of its slice
        self.terms: dict[str, list[_Term]] = {}
        self.activate = {n.name: n.activate and cell.act is not None for n in self.g.nodes}
        post = cell.post
        self.post_conv = _same_conv(post) if type(post) is nn.Conv2d else None
        self.partial = False  # decided once channels are known
        # value of node = factor * (what its location holds): a positive scale pushed into readers
        self.factor: dict[str, float] = {n: 1.0 for n in self.g.node_names}
        act = _act_spec(cell.act)
        self.homogeneous = act is None or act[0] in ("leaky", "relu")
        self.acc_slot: int | None = None
        self.pending = [o for o in dict.fromkeys(self.g.output)]  # output nodes not yet accumulated

    # -- analysis --------------------------------------------------------------------------------------
    def read_terms(self) -> None:
        g, cell = self.g, self.cell
        for node in g.nodes:
            terms: list[_Term] = []
            for i in g.incoming(node.name):
                e = g.edges[i]
                if e.name not in cell.edges:
                    continue
                module = cell.edges[e.name]
                form = _linear_form(module) if e.stride == 1 else None
                if form is None:
                    terms.append(_Term(e.src, opaque=e.name))
                else:
                    terms.append(_Term(e.src, conv=form[0], coef=form[1]))
            if node.residual is not None:
                same = [t for t in terms if t.linear and t.src == node.residual]
                if same:
                    same[0].coef += 1.0
                else:
                    terms.append(_Term(node.residual, coef=1.0))
            if not terms:
                raise Unsupported(f"node {node.name} has no incoming edge")
            self.terms[node.name] = terms

    def infer_channels(self) -> None:
        def put(name: str, c: int) -> None:
            if self.chan[name] is None:
                self.chan[name] = c
            elif self.chan[name] != c:
                raise Unsupported(f"node {name} would have {self.chan[name]} and {c} channels")

        for _ in range(2):  # a second pass fills identity-only nodes of inputs known late
            for node in self.g.nodes:
                for t in self.terms[node.name]:
                    if t.conv is not None:
                        put(t.src, t.conv.weight.shape[1])
                        put(node.name, t.conv.weight.shape[0])
                for t in self.terms[node.name]:
                    if t.linear and t.conv is None and self.chan[t.src] is not None:
                        put(node.name, self.chan[t.src])
        outs = list(self.g.output)
        conv = self.post_conv
        self.partial = (
            self.opt.fusion == "partial"
            and conv is not None
            and conv.k == 1
            and all(self.chan[o] is not None for o in outs)
            and sum(self.chan[o] for o in outs) == conv.weight.shape[1]
        )

    def fold_identities(self) -> None:
        if not self.opt.fold_identity:
            return
        for terms in self.terms.values():
            for t in terms:
                if t.conv is not None and t.coef != 0.0 and t.conv.weight.shape[0] == t.conv.weight.shape[1]:
                    k = t.conv.k
                    idx = torch.arange(t.conv.weight.shape[0])
                    t.conv.weight[idx, idx, k // 2, k // 2] += t.coef
                    t.coef = 0.0

    def single_source(self, node: str) -> _Term | None:
        """The one linear term of ``node`` if it reads one source (identity folded), else None."""
        terms = self.terms[node]
        if len(terms) == 1 and terms[0].linear and (terms[0].conv is None or terms[0].coef == 0.0):
            return terms[0]
        return None

    def plan_groups(self) -> dict[str, _Group]:
        """node -> the group (one conv of one source) that computes it.

        Measured cost of a oneDNN conv on a few channels: about ``C_in * ceil(C_out / 16) * k^2``
        per pixel, so merging convs of one source saves a pass, but a node inside a block costs
        its readers: a larger kernel reads a copy of the slice, a 1x1 conv reads the whole block
        (more input channels). Hence ``merge="same"`` merges only convs with the same larger
        kernel (a whole pass saved). With ``merge="all"`` 1x1 convs and
        identity-only nodes join blocks when they need not be whole; sources are visited last to
        first so that it is known which nodes a larger kernel reads. ``entry_block``: all 1x1
        convs and identities reading the cell input form one block (see :func:`fold_chain`).
        """
        whole: dict[str, bool] = {n: False for n in self.g.node_names}
        for node in self.g.nodes:
            if self.single_source(node.name) is None:
                for t in self.terms[node.name]:
                    if t.opaque is not None or t.conv is None or t.coef != 0.0 or t.conv.k > 1:
                        whole[t.src] = True
        if not self.partial:
            for o in self.g.output:
                whole[o] = True
        by_src: dict[str, list[str]] = {}
        for node in self.g.nodes:
            term = self.single_source(node.name)
            if term is not None:
                by_src.setdefault(term.src, []).append(node.name)
        member: dict[str, _Group] = {}
        for src in sorted(by_src, key=self.order.__getitem__, reverse=True):
            for activate in (True, False):
                part = [n for n in by_src[src] if self.activate[n] == activate]
                groups = self.split(src, activate, part, whole)
                for gr in groups:
                    gr.nodes.sort(key=self.order.__getitem__)
                    for n in gr.nodes:
                        member[n] = gr
                    if gr.key is not None:
                        whole[src] = True  # a larger kernel reads it: keep it whole if possible
        return member

    def split(self, src: str, activate: bool, part: list[str], whole: dict[str, bool]) -> list[_Group]:
        convs = [n for n in part if self.single_source(n).conv is not None]
        idents = [n for n in part if self.single_source(n).conv is None]
        if not convs:
            return []  # identity-only nodes of this source: elementwise
        keys = {n: self.single_source(n).conv.shape_key for n in convs}
        if self.opt.merge == "none":
            return [_Group(src, activate, keys[n], [n]) for n in convs]
        big = [k for k in dict.fromkeys(keys[n] for n in convs) if k is not None]
        if self.opt.merge == "pad" and len(big) > 1:
            extent = max(d * (k - 1) + 1 for k, d in big)
            groups = [_Group(src, activate, (extent, 1), [n for n in convs if keys[n] is not None])]
        else:
            groups = [_Group(src, activate, k, [n for n in convs if keys[n] == k]) for k in big]
        small = [n for n in convs if keys[n] is None]
        if self.entry_block and src == self.g.inputs[0] and self.chan[src] is not None:
            return groups + [_Group(src, activate, None, sorted(small + idents, key=self.order.__getitem__))]
        if self.opt.merge == "same":
            return groups + [_Group(src, activate, None, [n]) for n in small]
        if self.chan[src] is not None:
            small += idents
        ones: _Group | None = None
        for n in sorted(small, key=self.order.__getitem__):
            c = self.chan[n]
            target = None
            if not whole[n]:
                for gr in groups:
                    width = sum(self.chan[m] for m in gr.nodes)
                    single_whole = len(gr.nodes) == 1 and whole[gr.nodes[0]]
                    if gr.key is not None and not single_whole and _lanes(width + c) == _lanes(width):
                        target = gr
                        break
            if target is not None:
                target.nodes.append(n)
            elif self.single_source(n).conv is None:
                continue  # an identity-only node stays elementwise
            elif whole[n]:
                groups.append(_Group(src, activate, None, [n]))
            else:
                if ones is None:
                    ones = _Group(src, activate, None, [])
                    groups.append(ones)
                ones.nodes.append(n)
        return groups

    # -- emitting ----------------------------------------------------------------------------------------
    def emit(self, step: tuple) -> None:
        self.prog.steps.append(step)

    def whole_slot(self, node: str) -> int:
        """A slot holding exactly ``node``'s value (a contiguous copy of a slice if needed)."""
        loc = self.loc[node]
        if loc.whole:
            return loc.slot
        if node not in self.copies:
            out = self.prog.new_slot()
            self.emit(("copy", loc.slot, loc.start, loc.stop, out))
            self.slot_chan[out] = loc.stop - loc.start
            self.copies[node] = out
        return self.copies[node]

    def true_slot(self, node: str) -> int:
        """A slot holding exactly ``node``'s value, its pending factor applied."""
        slot = self.whole_slot(node)
        if self.factor[node] == 1.0:
            return slot
        out = self.prog.new_slot()
        self.emit(("scale", slot, self.factor[node], out, False, False))
        self.slot_chan[out] = self.slot_chan.get(slot)
        return out

    def conv_input(self, src: str, weight: torch.Tensor) -> tuple[int, torch.Tensor]:
        """The slot a conv of ``src`` reads and its weight: a 1x1 kernel reads a block whole."""
        weight = weight * self.factor[src]
        loc = self.loc[src]
        if loc.whole or weight.shape[-1] != 1 or self.slot_chan.get(loc.slot) is None:
            return self.whole_slot(src), weight
        full = weight.new_zeros(weight.shape[0], self.slot_chan[loc.slot], 1, 1)
        full[:, loc.start:loc.stop] = weight
        return loc.slot, full

    def conv_step(self, src: str, weight: torch.Tensor, bias: torch.Tensor | None, dil: int, act: bool) -> int:
        in_slot, weight = self.conv_input(src, weight)
        k = weight.shape[-1]
        dil = dil if k > 1 else 1
        w, b, packs = self.prog.add_weight(weight, bias, dil, pack=True)
        out = self.prog.new_slot()
        self.emit(("conv", in_slot, w, b, dil * (k - 1) // 2, dil, out, act, packs))
        self.slot_chan[out] = weight.shape[0]
        return out

    def emit_group(self, gr: _Group) -> None:
        k, dil = gr.key if gr.key is not None else (1, 1)
        rows, biases, spans = [], [], []
        start = 0
        c_in = self.chan[gr.src]
        for n in gr.nodes:
            term = self.single_source(n)
            if term.conv is None:  # identity-only node: coef * I at the centre tap
                c = c_in
                w = torch.zeros(c, c, k, k, dtype=torch.float64)
                idx = torch.arange(c)
                w[idx, idx, k // 2, k // 2] = term.coef
                b = torch.zeros(c, dtype=torch.float64)
            else:
                w = _place(term.conv, k, dil)
                c = w.shape[0]
                b = term.conv.bias if term.conv.bias is not None else torch.zeros(c, dtype=torch.float64)
            rows.append(w)
            biases.append(b)
            spans.append((n, start, start + c))
            start += c
        out = self.conv_step(gr.src, torch.cat(rows), torch.cat(biases), dil, gr.activate)
        for n, a, z in spans:
            self.loc[n] = _Loc(out, None, None) if len(spans) == 1 else _Loc(out, a, z)

    def emit_elementwise(self, node: str, term: _Term) -> None:
        """``act(coef * src)``, on the whole block holding ``src`` (fast), then sliced.

        With a positively homogeneous activation (LeakyReLU, ReLU, none) and ``coef > 0``,
        ``act(coef * x) == coef * act(x)``: only ``act(x)`` is computed and ``coef`` is pushed
        into the readers of the node (their weights), which saves a pass over the tensor.
        """
        src = self.loc[term.src]
        if term.src in self.copies:  # a whole copy of the slice exists: use it
            src = _Loc(self.copies[term.src])
        coef = term.coef * self.factor[term.src]
        act = self.activate[node]
        if self.homogeneous and coef > 0.0:
            self.factor[node] = coef
            coef = 1.0
        if coef == 1.0 and not act:
            self.loc[node] = src
            return
        out = self.prog.new_slot()
        self.emit(("scale", src.slot, coef, out, act, False))
        self.slot_chan[out] = self.slot_chan.get(src.slot)
        self.loc[node] = _Loc(out, src.start, src.stop)

    def emit_general(self, node: str) -> None:
        """A node with several terms (or opaque ones): convs accumulate, the rest is added."""
        first: int | None = None
        others: list[int] = []
        for t in self.terms[node]:
            if t.opaque is not None:
                out = self.prog.new_slot()
                self.emit(("module", t.opaque, self.true_slot(t.src), out))
                self.prog.opaque[t.opaque] = self.cell.edges[t.opaque]
                others.append(out)
                continue
            if t.conv is not None:
                if first is None:
                    first = self.conv_step(t.src, t.conv.weight, t.conv.bias, t.conv.dilation, False)
                else:
                    in_slot, weight = self.conv_input(t.src, t.conv.weight)
                    w, b, _ = self.prog.add_weight(weight, t.conv.bias)
                    k, d = t.conv.k, t.conv.dilation
                    self.emit(("acc", first, in_slot, w, b, d * (k - 1) // 2, d if k > 1 else 1))
            if t.coef != 0.0 or t.conv is None:
                src = self.whole_slot(t.src)
                coef = t.coef * self.factor[t.src]
                if coef == 1.0:
                    others.append(src)
                else:
                    out = self.prog.new_slot()
                    self.emit(("scale", src, coef, out, False, False))
                    others.append(out)
        if first is not None:
            self.emit(("add", first, others, self.activate[node]))
            self.loc[node] = _Loc(first)
        else:
            out = self.prog.new_slot()
            self.emit(("sum", others, out, self.activate[node]))
            self.loc[node] = _Loc(out)

    def emit_partials(self) -> None:
        """Accumulate ``W_o @ o`` for output nodes located so far (one 1x1 conv per block)."""
        conv = self.post_conv
        ready = [o for o in self.pending if o in self.loc]
        if not ready:
            return
        col = {}
        at = 0
        for o in self.g.output:
            col.setdefault(o, []).append(at)
            at += self.chan[o]
        per_slot: dict[int, torch.Tensor] = {}
        for o in ready:
            loc, c = self.loc[o], self.chan[o]
            if loc.whole:
                slot, width, a = loc.slot, c, 0
            elif self.slot_chan.get(loc.slot) is not None:
                slot, width, a = loc.slot, self.slot_chan[loc.slot], loc.start
            else:
                slot, width, a = self.whole_slot(o), c, 0
            if slot not in per_slot:
                per_slot[slot] = conv.weight.new_zeros(conv.weight.shape[0], width, 1, 1)
            for start in col[o]:  # a node listed twice in the output counts twice
                per_slot[slot][:, a:a + c] += conv.weight[:, start:start + c] * self.factor[o]
            self.pending.remove(o)
        for slot, w in per_slot.items():
            if self.acc_slot is None:
                wname, bname, _ = self.prog.add_weight(w, conv.bias)
                self.acc_slot = self.prog.new_slot()
                self.emit(("conv", slot, wname, bname, 0, 1, self.acc_slot, False, ()))
            else:
                wname, _, _ = self.prog.add_weight(w, None)
                self.emit(("acc", self.acc_slot, slot, wname, None, 0, 1))

    def emit_output(self) -> None:
        if self.partial:
            self.emit_partials()
            self.prog.output_slot = self.acc_slot
            return
        post = self.cell.post
        out = self.prog.new_slot()
        self.emit(("cat", [self.true_slot(o) for o in self.g.output], out))
        if type(post) is nn.Identity:
            self.prog.output_slot = out
        else:
            self.prog.post_module = post
            final = self.prog.new_slot()
            self.emit(("post", out, final))
            self.prog.output_slot = final

    def build(self) -> None:
        self.read_terms()
        self.infer_channels()
        self.fold_identities()
        member = self.plan_groups()
        for i, name in enumerate(self.g.inputs):
            slot = self.prog.new_slot()
            self.emit(("in", i, slot))
            self.loc[name] = _Loc(slot)
            self.slot_chan[slot] = None if name in self.cell.pre else self.chan[name]
        done: set[int] = set()
        for node in self.g.nodes:
            n = node.name
            if n in member:
                gr = member[n]
                if id(gr) not in done:
                    done.add(id(gr))
                    self.emit_group(gr)
            elif self.single_source(n) is not None and self.single_source(n).conv is None:
                self.emit_elementwise(n, self.single_source(n))
            else:
                self.emit_general(n)
            if self.partial:
                self.emit_partials()
        self.emit_output()

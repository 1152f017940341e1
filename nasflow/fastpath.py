"""Inference fast path for compiled networks: fused cells, packed convolutions, an inference policy.

:func:`fast_model` returns an inference-only copy of a compiled network in which every plain
:class:`~nasflow.cell.Cell` is replaced by a :class:`FusedCell`: the same function (float64: equal
to 1e-10; float32: to rounding) computed by a short program read from the cell's graph and ops.

Where the time goes (2 CPU cores, AVX-512, 600x400): oneDNN's channels-last convolution costs
about ``C_in * ceil(C_out / 16) * taps`` per pixel (:func:`conv_cost`): output channels are padded
to a 16-float register, so a 3 -> 3 conv leaves 13 of 16 lanes idle, and a 1x1 conv costs little
more than reading its input. Hence, in order of what they paid (one thread, 3,438-parameter distill network):

* **oneDNN called directly on channels-last tensors** (:func:`conv2d`): ``F.conv2d`` on NCHW
  tensors with two threads spends 5-16 ms in a 6 -> 6 1x1 conv that oneDNN does in 0.4 ms in
  channels-last; with one thread ``F.conv2d`` sends 1x1 convs to a generic path 5-15x slower.
* **Width packing** (:func:`pack_weight`): ``P`` neighbouring output pixels share one output of
  ``P * C_out`` channels (kernel ``k x (extent + P - 1)``, stride ``(1, P)``); in channels-last
  memory the packed output *is* the plain output, byte for byte. 3 -> 3 3x3: 2.0 -> 1.0 ms;
  dilated 3 -> 3: 2.0 -> 1.4 ms; 6 -> 3 3x3: 4.0 -> 2.2 ms. The packing is chosen per conv by
  the cost model and per call by what divides the width.
* **Structural re-parameterisation**: residual ops ``conv(x) + x``, node residuals and identities
  fold into the centre tap of the conv reading the same tensor; activations and the sum of the
  output fusion run as oneDNN post-ops (conv + LeakyReLU in one pass; ``acc += conv(x)`` in place).
* **The output fusion** (1x1 conv over the concatenated output nodes) as one 1x1 partial per
  output block, accumulated as soon as the block exists: no ``torch.cat`` (cat + conv: 7.6 ms,
  partials: 1.8 ms for 4 x 6 channels).
* **Positive homogeneity**: ``act(c * x) == c * act(x)`` for (leaky) ReLU and ``c > 0``, so a skip
  edge into a residual node (``act(x + x)``) costs one in-place activation, ``c`` going into the
  readers' weights.
* **Merging** convs that read the same tensor (``merge``): equal larger kernels merge (saves a
  whole pass); 1x1 convs and identities stay apart by default (``"all"`` merges them too), because
  a node inside a block costs its readers (a channel slice of a channels-last tensor must be
  copied for a larger kernel; a 1x1 reader reads all the block's channels). Padding a dilated
  3x3 to a 5x5 to merge it with a 3x3 (``"pad"``) costs more than it saves (2.9 vs 2.2 ms).
* **Chain folding** (:func:`fold_chain`): a cell's 1x1 output fusion composed with the next
  cell's entry 1x1 convs, a conv stem with the first cell's (exact: no padding involved).
  :func:`fast_model` folds inside every ``nn.Sequential``; tasks call it for their own chains.

Anything a fused cell does not understand (pooling, separable convs, batch norm, strided edges) is
run as the original module inside the fused cell ("opaque" terms), and a cell whose activation or
output module is unknown is left as it is: never wrong, only less fast.

The inference policy (:class:`FastOptions`): ``torch.inference_mode``; channels-last (NCHW
measured slower for every conv here); intra-op ``threads`` (under contention from other
processes, two OpenMP threads can stall 10-20x: one thread, or row bands on Python threads via
:func:`run_in_bands` where the receptive radius is known, are steadier); ``hold_heap`` (opt-in,
process-wide: glibc keeps freed memory, which removes the page faults of re-allocating feature
maps: 94 -> 72 ms at 600x400 and 641 -> 331 ms at 1920x1080 on one and two threads); and
``compile`` (opt-in ``torch.compile``: 3-15 s first call, then slower than this eager path here).
:class:`FusedCell`, :class:`FastConv` define ``halo()`` for :mod:`nasflow.tiling`.
"""

from __future__ import annotations

import copy
import ctypes
import ctypes.util
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from nasflow.cell import Cell
from nasflow.ops import PlainConv, Residual

CL = torch.channels_last

__all__ = [
    "FastOptions", "FastModule", "FusedCell", "FastConv", "fast_model", "prepare", "fuse_cell", "fold_chain",
    "conv2d", "conv2d_acc", "conv2d_packed", "pack_weight", "conv_cost", "inference_policy", "hold_heap",
    "op_radius", "cell_radius", "run_in_bands",
]


@dataclass(frozen=True)
class FastOptions:
    """What the fast path does; the defaults are the measured winners on a 2-core CPU."""

    channels_last: bool = True  # run in channels-last memory format (inputs converted at entry)
    # which convs reading the same tensor become one conv: "none"; "same": equal larger kernels;
    # "all": also 1x1 convs and identity-only nodes (centre taps); "pad": "all", kernels padded to one
    merge: str = "same"
    fold_identity: bool = True  # residual / identity terms into conv centre taps
    fusion: str = "partial"  # output 1x1 conv as per-block partial sums ("partial") or over a cat ("cat")
    fold_chains: bool = True  # compose 1x1 maps across cells in nn.Sequential chains
    inference_mode: bool = True
    threads: int | None = None  # intra-op threads during a forward (None: leave as is)
    contiguous_outputs: bool = True  # hand back tensors in the default memory format
    hold_heap: bool = False  # glibc: keep freed memory in the heap (process-wide: opt-in, see hold_heap())
    compile: bool = False  # torch.compile the fused network (opt-in: slow first call)

    def __post_init__(self) -> None:
        if self.merge not in ("none", "same", "all", "pad"):
            raise ValueError(f"merge must be 'none', 'same', 'all' or 'pad', got {self.merge!r}")
        if self.fusion not in ("partial", "cat"):
            raise ValueError(f"fusion must be 'partial' or 'cat', got {self.fusion!r}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be positive, got {self.threads}")


# --- convolution ---------------------------------------------------------------------------------------
def _op(namespace: Any, name: str, overload: str | None = None) -> Any:
    if not torch.backends.mkldnn.is_available():
        return None
    try:
        op = getattr(namespace, name)
        return getattr(op, overload) if overload else op
    except (AttributeError, RuntimeError):  # pragma: no cover - builds without oneDNN
        return None


_MKLDNN_CONV = _op(torch.ops.aten, "mkldnn_convolution")
_CONV_UNARY = _op(torch.ops.mkldnn, "_convolution_pointwise")  # conv + activation, one pass
_CONV_ADD_ = _op(torch.ops.mkldnn, "_convolution_pointwise_", "binary")  # acc += conv(x), in place
_UNARY = {"leaky": "leaky_relu", "relu": "relu"}


def _onednn(x: torch.Tensor) -> bool:
    """Whether to call oneDNN's ops directly (never while torch.compile traces: it has its own)."""
    return (
        _MKLDNN_CONV is not None
        and not torch.compiler.is_compiling()
        and x.device.type == "cpu"
        and x.dtype == torch.float32
        and x.dim() == 4
        and x.is_contiguous(memory_format=CL)
        and not torch.is_grad_enabled()
    )


def _cpu_lanes() -> int:
    cap = torch.backends.cpu.get_cpu_capability().upper()
    return 16 if "512" in cap else 8 if "AVX2" in cap else 4


LANES = _cpu_lanes()  # float32 lanes of a vector register: oneDNN pads output channels to this


def _lanes(c: int) -> int:
    return -(-c // LANES)


def conv_cost(c_in: int, c_out: int, k: int, dil: int, pack: int = 1) -> float:
    """Measured-shape cost model of a oneDNN channels-last conv, per output pixel.

    Time is about ``C_in * ceil(C_out / lanes) * taps``: output channels are padded to a vector
    register. Width packing (see :func:`pack_weight`) puts ``pack`` neighbouring output pixels in
    the channels of one output: ``pack * C_out`` channels, ``k x (extent + pack - 1)`` dense taps,
    over ``1 / pack`` of the pixels.
    """
    if pack == 1:
        return c_in * _lanes(c_out) * k * k
    extent = dil * (k - 1) + 1
    return c_in * _lanes(pack * c_out) * k * (extent + pack - 1) / pack


def pack_choices(c_in: int, c_out: int, k: int, dil: int, max_pack: int = 8) -> tuple[int, ...]:
    """Width packings that the cost model says beat none by 10% or more, best first."""
    if k == 1:
        return ()
    base = conv_cost(c_in, c_out, k, dil)
    ranked = sorted((conv_cost(c_in, c_out, k, dil, p), p) for p in range(2, max_pack + 1))
    return tuple(p for cost, p in ranked if cost < 0.9 * base)


def pack_weight(w: torch.Tensor, dil: int, pack: int) -> torch.Tensor:
    """The weight of a width-packed conv: ``[pack * C_out, C_in, k, extent + pack - 1]``.

    Output channel ``j * C_out + o`` of the packed conv (stride ``pack`` along the width) at
    column ``w'`` is channel ``o`` of the plain conv at column ``pack * w' + j``; the dilation
    along the width is spelled out with zero taps. In channels-last memory the packed output
    ``[N, pack*C_out, H, W/pack]`` is byte for byte the plain output ``[N, C_out, H, W]``.
    """
    c_out, c_in, k, _ = w.shape
    extent = dil * (k - 1) + 1
    out = w.new_zeros(pack * c_out, c_in, k, extent + pack - 1)
    for j in range(pack):
        for dx in range(k):
            out[j * c_out:(j + 1) * c_out, :, :, j + dil * dx] = w[:, :, :, dx]
    return out


def conv2d_packed(
    x: torch.Tensor, wp: torch.Tensor, bp: torch.Tensor | None, pad: int, dil: int, pack: int, act: tuple | None = None
) -> torch.Tensor:
    """The plain same-size conv computed as a width-packed one (``x`` channels-last, width % pack == 0)."""
    if act is not None and _CONV_UNARY is not None:
        scalars = [act[1]] if act[0] == "leaky" else []
        y = _CONV_UNARY(x, wp, bp, [pad, pad], [1, pack], [dil, 1], 1, _UNARY[act[0]], scalars, "")
        act = None
    else:
        y = _MKLDNN_CONV(x, wp, bp, [pad, pad], [1, pack], [dil, 1], 1)
    n, pc, h, wq = y.shape
    y = y.permute(0, 2, 3, 1).reshape(n, h, wq * pack, pc // pack).permute(0, 3, 1, 2)
    if act is None:
        return y
    return F.leaky_relu_(y, act[1]) if act[0] == "leaky" else F.relu_(y)


def conv2d(
    x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, pad: int, dil: int, act: tuple | None = None
) -> torch.Tensor:
    """A same-size stride-1 conv, then ``act`` (``("leaky", slope)`` or ``("relu",)``) if given.

    Channels-last float32 CPU tensors go straight to oneDNN (with the activation as a post-op):
    ``F.conv2d`` sends 1x1 convs with one intra-op thread to a generic path 5-15x slower than
    oneDNN on channels-last tensors with a handful of channels.
    """
    if _onednn(x):
        if act is not None and _CONV_UNARY is not None:
            scalars = [act[1]] if act[0] == "leaky" else []
            return _CONV_UNARY(x, w, b, [pad, pad], [1, 1], [dil, dil], 1, _UNARY[act[0]], scalars, "")
        y = _MKLDNN_CONV(x, w, b, [pad, pad], [1, 1], [dil, dil], 1)
    else:
        y = F.conv2d(x, w, b, padding=pad, dilation=dil)
    if act is None:
        return y
    return F.leaky_relu_(y, act[1]) if act[0] == "leaky" else F.relu_(y)


def conv2d_acc(
    acc: torch.Tensor, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, pad: int, dil: int
) -> torch.Tensor:
    """``acc += conv(x)`` in place (one oneDNN pass with a sum post-op where possible)."""
    if _CONV_ADD_ is not None and _onednn(x) and _onednn(acc):
        return _CONV_ADD_(acc, x, w, b, [pad, pad], [1, 1], [dil, dil], 1, "add", 1.0, None, [], None)
    return acc.add_(conv2d(x, w, b, pad, dil))


class FastConv(nn.Module):
    """A same-size stride-1 ``nn.Conv2d`` run through :func:`conv2d` (same parameter names).

    Width-packed copies of the weight (:func:`pack_weight`) are made once, for the packings the
    cost model favours; the forward uses the best one that divides the input width.
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, dilation: int, channels_last: bool) -> None:
        super().__init__()
        fmt = CL if channels_last else torch.contiguous_format
        self.weight = nn.Parameter(weight.detach().clone().contiguous(memory_format=fmt), requires_grad=False)
        self.bias = None if bias is None else nn.Parameter(bias.detach().clone(), requires_grad=False)
        self.dilation = dilation
        self.padding = dilation * (weight.shape[-1] - 1) // 2
        c_out, c_in, k, _ = weight.shape
        self.packs = pack_choices(c_in, c_out, k, dilation) if channels_last else ()
        for p in self.packs:
            self.register_buffer(f"weight_p{p}", pack_weight(self.weight.detach(), dilation, p).contiguous(
                memory_format=CL), persistent=False)
            if bias is not None:
                self.register_buffer(f"bias_p{p}", self.bias.detach().repeat(p), persistent=False)

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, channels_last: bool) -> "FastConv | None":
        spec = _same_conv(conv)
        if spec is None:
            return None
        new = cls(conv.weight, conv.bias, spec.dilation, channels_last)
        if hasattr(conv, "nas_label"):
            new.nas_label = conv.nas_label
        return new

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.packs and _onednn(x):
            for p in self.packs:
                if x.shape[-1] % p == 0:
                    bias = getattr(self, f"bias_p{p}") if self.bias is not None else None
                    return conv2d_packed(x, getattr(self, f"weight_p{p}"), bias, self.padding, self.dilation, p)
        return conv2d(x, self.weight, self.bias, self.padding, self.dilation)

    def halo(self) -> int:
        """Receptive radius, for :func:`nasflow.tiling.receptive_halo`."""
        return self.padding

    def extra_repr(self) -> str:
        o, i, k, _ = self.weight.shape
        return f"{i}, {o}, kernel_size={k}, dilation={self.dilation}, packs={self.packs}"


# --- reading a cell ---------------------------------------------------------------------------------------
class Unsupported(Exception):
    """This cell (or module) cannot be fused; the caller keeps the original."""


@dataclass
class _Conv:
    """A same-size, stride-1, ungrouped conv: weight ``[out, in, k, k]`` (float64), dilation."""

    weight: torch.Tensor
    bias: torch.Tensor | None
    dilation: int

    @property
    def k(self) -> int:
        return self.weight.shape[-1]

    @property
    def shape_key(self) -> tuple[int, int] | None:
        """None for a 1x1 conv (it fits the centre tap of any kernel)."""
        return None if self.k == 1 else (self.k, self.dilation)


def _same_conv(conv: nn.Module) -> _Conv | None:
    """``conv`` as a :class:`_Conv`, or None unless it is a plain same-size stride-1 Conv2d."""
    if type(conv) is FastConv:
        w = conv.weight.detach().to(torch.float64).clone()
        b = None if conv.bias is None else conv.bias.detach().to(torch.float64).clone()
        return _Conv(w, b, conv.dilation)
    if type(conv) is not nn.Conv2d:
        return None
    kh, kw = conv.kernel_size
    dh, dw = conv.dilation
    if kh != kw or kh % 2 == 0 or dh != dw or conv.stride != (1, 1) or conv.groups != 1:
        return None
    if conv.padding_mode != "zeros":
        return None
    want = dh * (kh - 1) // 2
    if conv.padding != "same" and tuple(conv.padding) != (want, want):
        return None
    w = conv.weight.detach().to(torch.float64).clone()
    b = None if conv.bias is None else conv.bias.detach().to(torch.float64).clone()
    return _Conv(w, b, dh if kh > 1 else 1)


def _linear_form(module: nn.Module) -> tuple[_Conv | None, float] | None:
    """``module`` as ``conv(x) + coef * x`` (conv may be None), or None if it is not of that form."""
    kind = type(module)
    if kind is nn.Identity:
        return None, 1.0
    if kind is nn.Conv2d or kind is FastConv:
        conv = _same_conv(module)
        return None if conv is None else (conv, 0.0)
    if kind is PlainConv:
        return _linear_form(module.op)
    if kind is Residual:
        inner = _linear_form(module.op)
        return None if inner is None else (inner[0], inner[1] + 1.0)
    return None


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


# --- the fused cell ---------------------------------------------------------------------------------------
class FusedCell(nn.Module):
    """A :class:`~nasflow.cell.Cell` compiled into a short program of fused steps (inference only).

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
        self.post_module: nn.Module | None = None
        if hasattr(cell, "nas_label"):
            self.nas_label = cell.nas_label
        self._act = _act_spec(cell.act)
        self._n_weights = 0
        self.steps: list[tuple] = []
        self.n_slots = 0
        self.output_slot = -1
        self.folded_entry = False
        self._dtype = next((p.dtype for p in cell.parameters() if p.is_floating_point()), torch.get_default_dtype())
        _Builder(self, cell, entry_block).build()
        self.steps = _mark_inplace(self.steps)
        self._release = _liveness(self.steps, self.output_slot, self.n_slots)

    # -- building helpers --------------------------------------------------------------------------------
    def _add_weight(
        self, w: torch.Tensor, b: torch.Tensor | None, dil: int = 1, pack: bool = False
    ) -> tuple[str, str | None, tuple[int, ...]]:
        """Register ``w`` (and ``b``) as buffers; with ``pack``, also its width-packed forms."""
        i = self._n_weights
        self._n_weights += 1
        w = w.to(self._dtype)
        cl = self.options.channels_last
        self.register_buffer(f"w{i}", w.contiguous(memory_format=CL) if cl else w.contiguous())
        c_out, c_in, k, _ = w.shape
        packs = pack_choices(c_in, c_out, k, dil) if pack and cl else ()
        for p in packs:
            self.register_buffer(f"w{i}p{p}", pack_weight(w, dil, p).contiguous(memory_format=CL), persistent=False)
        if b is None:
            return f"w{i}", None, packs
        b = b.to(self._dtype).contiguous()
        self.register_buffer(f"b{i}", b)
        for p in packs:
            self.register_buffer(f"b{i}p{p}", b.repeat(p), persistent=False)
        return f"w{i}", f"b{i}", packs

    def _new_slot(self) -> int:
        self.n_slots += 1
        return self.n_slots - 1

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
        """Receptive radius, for :func:`nasflow.tiling.receptive_halo` (the fused convs are buffers)."""
        from nasflow.tiling import cell_halo

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


class _Builder:
    """Turns a Cell's graph and ops into a FusedCell program (raises Unsupported to fall back)."""

    def __init__(self, fused: FusedCell, cell: Cell, entry_block: bool = False) -> None:
        self.f = fused
        self.entry_block = entry_block
        self.cell = cell
        self.g = cell.graph
        self.opt = fused.options
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
        self.homogeneous = fused._act is None or fused._act[0] in ("leaky", "relu")
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
        kernel (a pass of 2-4 ms saved at 600x400 on one core). With ``merge="all"`` 1x1 convs and
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
        self.f.steps.append(step)

    def whole_slot(self, node: str) -> int:
        """A slot holding exactly ``node``'s value (a contiguous copy of a slice if needed)."""
        loc = self.loc[node]
        if loc.whole:
            return loc.slot
        if node not in self.copies:
            out = self.f._new_slot()
            self.emit(("copy", loc.slot, loc.start, loc.stop, out))
            self.slot_chan[out] = loc.stop - loc.start
            self.copies[node] = out
        return self.copies[node]

    def true_slot(self, node: str) -> int:
        """A slot holding exactly ``node``'s value, its pending factor applied."""
        slot = self.whole_slot(node)
        if self.factor[node] == 1.0:
            return slot
        out = self.f._new_slot()
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
        w, b, packs = self.f._add_weight(weight, bias, dil, pack=True)
        out = self.f._new_slot()
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
        out = self.f._new_slot()
        self.emit(("scale", src.slot, coef, out, act, False))
        self.slot_chan[out] = self.slot_chan.get(src.slot)
        self.loc[node] = _Loc(out, src.start, src.stop)

    def emit_general(self, node: str) -> None:
        """A node with several terms (or opaque ones): convs accumulate, the rest is added."""
        first: int | None = None
        others: list[int] = []
        for t in self.terms[node]:
            if t.opaque is not None:
                out = self.f._new_slot()
                self.emit(("module", t.opaque, self.true_slot(t.src), out))
                self.f.opaque[t.opaque] = self.cell.edges[t.opaque]
                others.append(out)
                continue
            if t.conv is not None:
                if first is None:
                    first = self.conv_step(t.src, t.conv.weight, t.conv.bias, t.conv.dilation, False)
                else:
                    in_slot, weight = self.conv_input(t.src, t.conv.weight)
                    w, b, _ = self.f._add_weight(weight, t.conv.bias)
                    k, d = t.conv.k, t.conv.dilation
                    self.emit(("acc", first, in_slot, w, b, d * (k - 1) // 2, d if k > 1 else 1))
            if t.coef != 0.0 or t.conv is None:
                src = self.whole_slot(t.src)
                coef = t.coef * self.factor[t.src]
                if coef == 1.0:
                    others.append(src)
                else:
                    out = self.f._new_slot()
                    self.emit(("scale", src, coef, out, False, False))
                    others.append(out)
        if first is not None:
            self.emit(("add", first, others, self.activate[node]))
            self.loc[node] = _Loc(first)
        else:
            out = self.f._new_slot()
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
                wname, bname, _ = self.f._add_weight(w, conv.bias)
                self.acc_slot = self.f._new_slot()
                self.emit(("conv", slot, wname, bname, 0, 1, self.acc_slot, False, ()))
            else:
                wname, _, _ = self.f._add_weight(w, None)
                self.emit(("acc", self.acc_slot, slot, wname, None, 0, 1))

    def emit_output(self) -> None:
        if self.partial:
            self.emit_partials()
            self.f.output_slot = self.acc_slot
            return
        post = self.cell.post
        out = self.f._new_slot()
        self.emit(("cat", [self.true_slot(o) for o in self.g.output], out))
        if type(post) is nn.Identity:
            self.f.output_slot = out
        else:
            self.f.post_module = post
            final = self.f._new_slot()
            self.emit(("post", out, final))
            self.f.output_slot = final

    def build(self) -> None:
        self.read_terms()
        self.infer_channels()
        self.fold_identities()
        member = self.plan_groups()
        for i, name in enumerate(self.g.inputs):
            slot = self.f._new_slot()
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


def fuse_cell(cell: Cell, options: FastOptions | None = None) -> nn.Module:
    """A :class:`FusedCell` for ``cell``, or ``cell`` itself if it cannot be fused."""
    try:
        return FusedCell(cell, options)
    except Unsupported:
        return cell


# --- folding linear maps across a chain of modules ---------------------------------------------------------
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


# --- locality: receptive radius and band-parallel evaluation ---------------------------------------------------
def op_radius(module: nn.Module) -> int | None:
    """How far an output pixel of ``module`` sees (:func:`nasflow.tiling.receptive_halo`); None if unbounded."""
    from nasflow.tiling import NotTileable, receptive_halo

    try:
        return receptive_halo(module)
    except NotTileable:
        return None


def cell_radius(cell: nn.Module) -> int | None:
    """Receptive radius of a (fused) cell: the longest path through its graph; None if unbounded."""
    from nasflow.tiling import NotTileable, cell_halo

    source = cell._source if isinstance(cell, FusedCell) else cell
    if not isinstance(source, Cell):
        return None
    try:
        return cell_halo(source)
    except NotTileable:
        return None


def run_in_bands(
    fn, x: torch.Tensor, halo: int, bands: int, pool: ThreadPoolExecutor
) -> torch.Tensor:
    """``fn(x)`` for a local, size-preserving ``fn`` of receptive radius ``halo``, in row bands.

    Each band is computed on its rows plus ``halo`` rows either side (cut at the image border),
    on its own Python thread with one intra-op thread; the rows within ``halo`` of an artificial
    border are discarded, so the result equals ``fn(x)`` (the same arithmetic on every pixel).
    Robust where other processes share the cores: no thread waits for another between ops.
    """
    h = x.shape[-2]
    edges = [round(i * h / bands) for i in range(bands + 1)]
    parts = []
    for a, b in zip(edges[:-1], edges[1:]):
        lo, hi = max(0, a - halo), min(h, b + halo)
        parts.append((lo, hi, a - lo, a - lo + (b - a)))

    def one(part: tuple[int, int, int, int]) -> torch.Tensor:
        lo, hi, c0, c1 = part
        torch.set_num_threads(1)  # this worker's own intra-op setting (per thread under OpenMP)
        with torch.inference_mode():
            return fn(x[:, :, lo:hi])[:, :, c0:c1]

    with torch.inference_mode():
        return torch.cat(list(pool.map(one, parts)), dim=2)


# --- the whole model ------------------------------------------------------------------------------------------
_HEAP_HELD = False


def hold_heap() -> bool:
    """Keep freed memory in the process heap instead of returning it to the OS (glibc only).

    A forward pass allocates and frees feature maps of megabytes; by default glibc serves those
    with fresh ``mmap`` pages or trims the heap after them, so every pass pays page faults
    (measured: 1,400-9,800 faults, 8-28 ms of system time per 600x400 pass of a 3,438-parameter
    cell network on 2 cores).
    ``mallopt(M_MMAP_THRESHOLD, 1 GiB)`` and ``mallopt(M_TRIM_THRESHOLD, 2 GiB)`` keep the memory
    of the largest pass mapped instead. Process-wide and permanent (a preloaded jemalloc or
    tcmalloc does the same job); returns whether it took effect.
    """
    global _HEAP_HELD
    if _HEAP_HELD:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # pragma: no cover - not glibc
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    _HEAP_HELD = bool(mallopt(m_mmap_threshold, 1 << 30)) and bool(mallopt(m_trim_threshold, (1 << 31) - 1))
    return _HEAP_HELD


_THREAD_LOCK = threading.Lock()


@contextmanager
def inference_policy(options: FastOptions) -> Iterator[None]:
    """``torch.inference_mode`` and the thread count of ``options`` (restored afterwards)."""
    with torch.inference_mode(options.inference_mode):
        if options.threads is None:
            yield
            return
        with _THREAD_LOCK:
            before = torch.get_num_threads()
            torch.set_num_threads(options.threads)
            try:
                yield
            finally:
                torch.set_num_threads(before)


def _map_tensors(obj: Any, fn) -> Any:
    if isinstance(obj, torch.Tensor):
        return fn(obj)
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):
        return type(obj)(*(_map_tensors(x, fn) for x in obj))
    if isinstance(obj, (list, tuple)):
        return type(obj)(_map_tensors(x, fn) for x in obj)
    if isinstance(obj, dict):
        return {k: _map_tensors(v, fn) for k, v in obj.items()}
    return obj


def to_channels_last(obj: Any) -> Any:
    return _map_tensors(obj, lambda t: t.contiguous(memory_format=CL) if t.dim() == 4 else t)


def to_contiguous(obj: Any) -> Any:
    return _map_tensors(obj, lambda t: t.contiguous())


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
    """An inference-only copy of ``model`` with every compiled :class:`~nasflow.cell.Cell` fused.

    ``model`` is left untouched. The copy runs in eval mode under ``torch.inference_mode``, on
    channels-last tensors, and returns what ``model`` returns (tensors in the default layout).
    ``overrides`` set :class:`FastOptions` fields, e.g. ``fast_model(net, threads=1)``.
    """
    opts = replace(options or FastOptions(), **overrides)
    return FastModule(prepare(model, opts), opts)

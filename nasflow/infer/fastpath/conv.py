"""Convolutions on oneDNN: direct op calls, the lane cost model, width packing, :class:`FastConv`.

Also reads a plain same-size ``nn.Conv2d`` (or a :class:`FastConv`) as a float64 :class:`_Conv`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from nasflow.infer.fastpath.options import CL
from nasflow.core.ops import same_size_conv


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
    shape = same_size_conv(conv)
    if shape is None:
        return None
    w = conv.weight.detach().to(torch.float64).clone()
    b = None if conv.bias is None else conv.bias.detach().to(torch.float64).clone()
    return _Conv(w, b, shape[1])


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
        """Receptive radius, for :func:`nasflow.infer.tiling.receptive_halo`."""
        return self.padding

    def extra_repr(self) -> str:
        o, i, k, _ = self.weight.shape
        return f"{i}, {o}, kernel_size={k}, dilation={self.dilation}, packs={self.packs}"

"""Candidate operations with metadata.

An :class:`OpSpec` says what an op *is* (zero? identity?) so that derivation rules never rely
on an op's position in a candidate list. Every op maps C channels to C channels; ``stride``
halves the resolution (DARTS reduction cells) where the op supports it.

Two sets are registered here:

* the DARTS set (Liu et al. 2019): ``none``, ``skip_connect``, ``avg_pool_3x3``,
  ``max_pool_3x3``, ``sep_conv_3x3``, ``sep_conv_5x5``, ``dil_conv_3x3``, ``dil_conv_5x5``;
* plain biased convolutions as used by RUAS (Liu et al. 2021): ``conv_1x1``, ``conv_3x3``,
  ``dilconv_3x3`` (dilation 2) and their residual versions ``resconv_1x1``, ``resconv_3x3``,
  ``resdilconv_3x3`` (``conv(x) + x``), with no normalisation or activation inside.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from nasflow.errors import SpaceError
from nasflow.registries import OPS

OpFactory = Callable[[int, int, bool], nn.Module]


@dataclass(frozen=True)
class OpSpec:
    """A named candidate op: a factory ``(C, stride, affine) -> nn.Module`` plus metadata."""

    name: str
    factory: OpFactory
    is_zero: bool = False
    is_identity: bool = False  # at stride 1
    description: str = ""

    def build(self, channels: int, stride: int = 1, affine: bool = True) -> nn.Module:
        if channels <= 0:
            raise SpaceError(f"op '{self.name}' needs a positive channel count, got {channels}")
        return self.factory(channels, stride, affine)

    def params(self, channels: int, stride: int = 1, affine: bool = True) -> int:
        """Number of trainable parameters of this op on ``channels`` channels."""
        return sum(p.numel() for p in self.build(channels, stride, affine).parameters() if p.requires_grad)


def get_op(name: str) -> OpSpec:
    return OPS.get(name)


def register_op(spec: OpSpec) -> OpSpec:
    OPS.add(spec.name, spec, description=spec.description)
    return spec


# --- building blocks ---------------------------------------------------------------------------
class Zero(nn.Module):
    """The 'none' op: zeros of the output shape."""

    def __init__(self, stride: int) -> None:
        super().__init__()
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            return torch.zeros_like(x)
        return torch.zeros_like(x[:, :, :: self.stride, :: self.stride])


class FactorizedReduce(nn.Module):
    """Stride-2 identity substitute of DARTS: two offset 1x1 convs, concatenated."""

    def __init__(self, c_in: int, c_out: int, affine: bool) -> None:
        super().__init__()
        if c_out % 2:
            raise SpaceError(f"FactorizedReduce needs an even channel count, got {c_out}")
        self.relu = nn.ReLU(inplace=False)
        self.conv_1 = nn.Conv2d(c_in, c_out // 2, 1, stride=2, bias=False)
        self.conv_2 = nn.Conv2d(c_in, c_out // 2, 1, stride=2, bias=False)
        self.bn = nn.BatchNorm2d(c_out, affine=affine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(x)
        shifted = nn.functional.pad(x[:, :, 1:, 1:], (0, 1, 0, 1))
        return self.bn(torch.cat([self.conv_1(x), self.conv_2(shifted)], dim=1))


class ReLUConvBN(nn.Sequential):
    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, padding: int, affine: bool) -> None:
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=padding, bias=False),
            nn.BatchNorm2d(c_out, affine=affine),
        )


class DilConv(nn.Sequential):
    """ReLU -> depthwise dilated conv -> pointwise conv -> BN (DARTS)."""

    def __init__(self, c: int, kernel: int, stride: int, padding: int, dilation: int, affine: bool) -> None:
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(c, c, kernel, stride, padding, dilation=dilation, groups=c, bias=False),
            nn.Conv2d(c, c, 1, bias=False),
            nn.BatchNorm2d(c, affine=affine),
        )


class SepConv(nn.Sequential):
    """Two stacked DilConv blocks with dilation 1 (DARTS separable conv)."""

    def __init__(self, c: int, kernel: int, stride: int, padding: int, affine: bool) -> None:
        super().__init__(
            DilConv(c, kernel, stride, padding, 1, affine),
            DilConv(c, kernel, 1, padding, 1, affine),
        )


class Residual(nn.Module):
    """``op(x) + x``; the wrapped conv is kept under ``.op`` (as in the released RUAS weights)."""

    def __init__(self, op: nn.Module) -> None:
        super().__init__()
        self.op = op

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x) + x


class PlainConv(nn.Module):
    """A biased Conv2d kept under ``.op`` so plain and residual convs share parameter names."""

    def __init__(self, c: int, kernel: int, dilation: int) -> None:
        super().__init__()
        self.op = nn.Conv2d(c, c, kernel, padding=dilation * (kernel - 1) // 2, dilation=dilation, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


def linear_form(module: nn.Module, convs: tuple[type, ...] = (nn.Conv2d,),
                path: tuple[str, ...] = ()) -> tuple[nn.Module | None, tuple[str, ...] | None, float] | None:
    """``module`` as ``conv(x) + identity * x``: ``(conv module, its attribute path, identity)``.

    The conv (None for a bare identity) is the innermost module of a type in ``convs``, reached
    through :class:`PlainConv` and :class:`Residual` (each residual adds 1 to ``identity``); None
    when ``module`` is not of that form. The one reader of this form: mixed ops fuse an edge's
    candidates with it, the fast path folds residuals with it; each checks the conv's shape itself.
    """
    kind = type(module)
    if kind is nn.Identity:
        return None, None, 1.0
    if kind in convs:
        return module, path, 0.0
    if kind is PlainConv:
        return linear_form(module.op, convs, (*path, "op"))
    if kind is Residual:
        inner = linear_form(module.op, convs, (*path, "op"))
        return None if inner is None else (inner[0], inner[1], inner[2] + 1.0)
    return None


def same_size_conv(conv: nn.Module) -> tuple[int, int] | None:
    """``(kernel, dilation)`` of a plain square, odd, stride-1, ungrouped, zero-padded ``nn.Conv2d`` whose
    output has its input's size (dilation 1 for a 1x1 kernel); None for anything else.

    Such a conv is a dense kernel that other kernels can be summed into or composed with.
    """
    if type(conv) is not nn.Conv2d:
        return None
    (kh, kw), (dh, dw) = conv.kernel_size, conv.dilation
    if kh != kw or kh % 2 == 0 or dh != dw or conv.stride != (1, 1) or conv.groups != 1:
        return None
    want = dh * (kh - 1) // 2
    if conv.padding_mode != "zeros" or (conv.padding != "same" and tuple(conv.padding) != (want, want)):
        return None
    return kh, dh if kh > 1 else 1


def _stride_one(name: str, stride: int) -> None:
    if stride != 1:
        raise SpaceError(f"op '{name}' supports stride 1 only, got stride {stride}")


# --- the DARTS set -----------------------------------------------------------------------------
def _skip(c: int, stride: int, affine: bool) -> nn.Module:
    return nn.Identity() if stride == 1 else FactorizedReduce(c, c, affine)


register_op(OpSpec("none", lambda c, s, a: Zero(s), is_zero=True, description="zero output (drops the edge)"))
register_op(OpSpec("skip_connect", _skip, is_identity=True, description="identity (factorized reduce at stride 2)"))
register_op(
    OpSpec(
        "avg_pool_3x3",
        lambda c, s, a: nn.AvgPool2d(3, stride=s, padding=1, count_include_pad=False),
        description="3x3 average pooling",
    )
)
register_op(OpSpec("max_pool_3x3", lambda c, s, a: nn.MaxPool2d(3, stride=s, padding=1), description="3x3 max pooling"))
register_op(OpSpec("sep_conv_3x3", lambda c, s, a: SepConv(c, 3, s, 1, a), description="3x3 separable conv, twice"))
register_op(OpSpec("sep_conv_5x5", lambda c, s, a: SepConv(c, 5, s, 2, a), description="5x5 separable conv, twice"))
register_op(OpSpec("dil_conv_3x3", lambda c, s, a: DilConv(c, 3, s, 2, 2, a), description="3x3 dilated separable conv"))
register_op(OpSpec("dil_conv_5x5", lambda c, s, a: DilConv(c, 5, s, 4, 2, a), description="5x5 dilated separable conv"))


# --- plain biased convolutions (the RUAS set, with skip_connect) --------------------------------
def _conv_factory(name: str, kernel: int, dilation: int, residual: bool) -> OpFactory:
    def build(c: int, stride: int, affine: bool) -> nn.Module:
        _stride_one(name, stride)
        conv = PlainConv(c, kernel, dilation)
        return Residual(conv.op) if residual else conv

    return build


for _name, _kernel, _dil, _res, _desc in [
    ("conv_1x1", 1, 1, False, "biased 1x1 conv"),
    ("conv_3x3", 3, 1, False, "biased 3x3 conv"),
    ("dilconv_3x3", 3, 2, False, "biased 3x3 conv, dilation 2"),
    ("resconv_1x1", 1, 1, True, "conv_1x1(x) + x"),
    ("resconv_3x3", 3, 1, True, "conv_3x3(x) + x"),
    ("resdilconv_3x3", 3, 2, True, "dilconv_3x3(x) + x"),
]:
    register_op(OpSpec(_name, _conv_factory(_name, _kernel, _dil, _res), description=_desc))

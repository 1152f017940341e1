"""nasflow.core.ops: candidate ops, their shapes, metadata and parameter counts."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nasflow.errors import RegistryError, SpaceError
from nasflow.core.ops import FactorizedReduce, OpSpec, get_op
from nasflow.registries import OPS
from nasflow.spaces.darts_cell import DARTS_OPS
from nasflow.spaces.distill_cell import RUAS_OPS

pytestmark = pytest.mark.usefixtures("single_thread")

RUAS_CONVS = [name for name in RUAS_OPS if name != "skip_connect"]


def _x(c: int, h: int = 8, w: int = 8, seed: int = 0) -> torch.Tensor:
    return torch.randn(2, c, h, w, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", OPS.names())
@pytest.mark.parametrize("affine", [True, False])
def test_every_registered_op_keeps_shape_at_stride_1(name: str, affine: bool) -> None:
    op = get_op(name).build(4, 1, affine).eval()
    x = _x(4, 7, 9)
    y = op(x)
    assert y.shape == x.shape
    assert y.dtype == x.dtype
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("name", DARTS_OPS)
@pytest.mark.parametrize("hw", [(8, 8), (6, 10)])
def test_darts_ops_halve_resolution_at_stride_2(name: str, hw: tuple[int, int]) -> None:
    op = get_op(name).build(4, 2, False).eval()
    y = op(_x(4, *hw))
    assert y.shape == (2, 4, hw[0] // 2, hw[1] // 2)


@pytest.mark.parametrize("name", RUAS_CONVS)
def test_ruas_convs_reject_stride_2(name: str) -> None:
    with pytest.raises(SpaceError, match="stride 1 only"):
        get_op(name).build(3, 2)


def test_metadata_zero_and_identity() -> None:
    assert get_op("none").is_zero and not get_op("none").is_identity
    assert get_op("skip_connect").is_identity and not get_op("skip_connect").is_zero
    for name in OPS.names():
        if name not in {"none", "skip_connect"}:
            spec = get_op(name)
            assert not spec.is_zero and not spec.is_identity, name
            assert spec.name == name and spec.description


def test_zero_and_identity_do_what_their_metadata_says() -> None:
    x = _x(4)
    assert torch.equal(get_op("none").build(4)(x), torch.zeros_like(x))
    assert torch.equal(get_op("none").build(4, 2)(x), torch.zeros(2, 4, 4, 4))
    assert torch.equal(get_op("skip_connect").build(4)(x), x)
    assert isinstance(get_op("skip_connect").build(4, 2), FactorizedReduce)


@pytest.mark.parametrize(
    "name, channels, stride, affine, expected",
    [
        ("conv_3x3", 3, 1, True, 3 * 3 * 3 * 3 + 3),  # 84
        ("conv_1x1", 3, 1, True, 3 * 3 + 3),  # 12
        ("dilconv_3x3", 3, 1, True, 3 * 3 * 3 * 3 + 3),  # 84
        ("resconv_1x1", 6, 1, True, 6 * 6 + 6),  # 42
        ("resconv_3x3", 6, 1, True, 6 * 6 * 9 + 6),  # 330
        ("resdilconv_3x3", 6, 1, True, 6 * 6 * 9 + 6),  # 330
        ("skip_connect", 6, 1, True, 0),
        ("none", 6, 1, True, 0),
        ("max_pool_3x3", 4, 2, True, 0),
        ("avg_pool_3x3", 4, 1, True, 0),
        # DilConv = depthwise k*k*C + pointwise C*C (+ 2C BN if affine); SepConv = two DilConvs.
        ("sep_conv_3x3", 4, 1, False, 2 * (4 * 9 + 16)),  # 104
        ("sep_conv_3x3", 4, 1, True, 2 * (4 * 9 + 16 + 8)),  # 120
        ("sep_conv_5x5", 4, 2, False, 2 * (4 * 25 + 16)),  # 232
        ("dil_conv_3x3", 4, 1, False, 4 * 9 + 16),  # 52
        ("dil_conv_5x5", 4, 1, False, 4 * 25 + 16),  # 116
        # FactorizedReduce: two 1x1 convs C -> C/2 (+ 2C BN if affine).
        ("skip_connect", 4, 2, False, 2 * 4 * 2),  # 16
        ("skip_connect", 4, 2, True, 2 * 4 * 2 + 8),  # 24
    ],
)
def test_opspec_params_match_hand_counts(name: str, channels: int, stride: int, affine: bool, expected: int) -> None:
    assert get_op(name).params(channels, stride, affine) == expected


@pytest.mark.parametrize(
    "name, kernel, dilation, residual",
    [
        ("conv_1x1", 1, 1, False),
        ("conv_3x3", 3, 1, False),
        ("dilconv_3x3", 3, 2, False),
        ("resconv_1x1", 1, 1, True),
        ("resconv_3x3", 3, 1, True),
        ("resdilconv_3x3", 3, 2, True),
    ],
)
def test_ruas_convs_are_plain_biased_convs_optionally_residual(
    name: str, kernel: int, dilation: int, residual: bool
) -> None:
    op = get_op(name).build(3)
    conv = op.op  # kept under .op for both forms (the released RUAS parameter names)
    assert isinstance(conv, nn.Conv2d)
    assert conv.kernel_size == (kernel, kernel) and conv.dilation == (dilation, dilation)
    assert conv.bias is not None
    assert [m for m in op.modules() if isinstance(m, (nn.BatchNorm2d, nn.ReLU, nn.LeakyReLU))] == []
    x = _x(3)
    expected = F.conv2d(x, conv.weight, conv.bias, padding=dilation * (kernel - 1) // 2, dilation=dilation)
    if residual:
        expected = expected + x
    torch.testing.assert_close(op(x), expected, rtol=0, atol=1e-6)


def test_ops_have_fresh_weights_per_build() -> None:
    a, b = get_op("conv_3x3").build(3), get_op("conv_3x3").build(3)
    assert a.op.weight is not b.op.weight


def test_bad_channels_and_odd_reduction_are_space_errors() -> None:
    with pytest.raises(SpaceError, match="positive channel count"):
        get_op("conv_3x3").build(0)
    with pytest.raises(SpaceError, match="even channel count"):
        get_op("skip_connect").build(3, 2)


def test_unknown_op_is_a_registry_error_with_suggestion() -> None:
    with pytest.raises(RegistryError, match="did you mean 'sep_conv_3x3'"):
        get_op("sep_conv3x3")


def test_opspec_is_frozen_plain_data() -> None:
    spec = OpSpec("tmp", lambda c, s, a: nn.Identity())
    with pytest.raises(AttributeError):
        spec.name = "other"  # type: ignore[misc]
    assert spec.params(5) == 0 and not spec.is_zero

"""nasflow.core.mixed: relaxations (softmax, Gumbel straight-through, hard argmax) and MixedOp."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from nasflow.core.cell import ArchAlphas
from nasflow.errors import RegistryError
from nasflow.core.mixed import (
    GumbelStraightThrough,
    HardArgmax,
    MixedOp,
    SoftmaxRelaxation,
    make_relaxation,
)
from nasflow.core.ops import get_op
from nasflow.spaces.darts_cell import DARTS_OPS
from nasflow.spaces.distill_cell import RUAS_OPS, DistillCellSpace

pytestmark = pytest.mark.usefixtures("single_thread")

FAST = settings(max_examples=30, deadline=None, database=None)


def _mixed(names, channels=4, stride=1, affine=False) -> MixedOp:
    return MixedOp([get_op(n) for n in names], channels, stride, affine).double().eval()


def _x(c: int, seed: int = 0, hw: int = 8) -> torch.Tensor:
    return torch.randn(2, c, hw, hw, generator=torch.Generator().manual_seed(seed), dtype=torch.double)


def _count_calls(mixed: MixedOp) -> list[int]:
    calls: list[int] = []
    for i, op in enumerate(mixed.ops):
        op.register_forward_hook(lambda m, inp, out, i=i: calls.append(i))
    return calls


# -- softmax ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("names, channels, stride", [(DARTS_OPS, 4, 1), (DARTS_OPS, 4, 2), (RUAS_OPS, 3, 1)])
@pytest.mark.parametrize("temperature", [1.0, 0.5])
def test_softmax_mixed_op_is_the_weighted_sum_of_its_ops(names, channels, stride, temperature) -> None:
    torch.manual_seed(1)
    mixed = _mixed(names, channels, stride)
    alpha = torch.randn(1, len(names), dtype=torch.double)
    weights = SoftmaxRelaxation(temperature)(alpha).weights[0]
    x = _x(channels)
    probs = torch.exp(alpha[0] / temperature) / torch.exp(alpha[0] / temperature).sum()  # by hand
    expected = sum(probs[k] * mixed.ops[k](x) for k in range(len(names)))
    torch.testing.assert_close(mixed(x, weights), expected, rtol=0, atol=1e-12)


def test_softmax_relaxation_has_no_sample_and_rows_sum_to_one() -> None:
    alpha = torch.randn(5, 7, dtype=torch.double)
    relaxed = SoftmaxRelaxation()(alpha)
    assert relaxed.active is None
    torch.testing.assert_close(relaxed.weights.sum(-1), torch.ones(5, dtype=torch.double))
    torch.testing.assert_close(SoftmaxRelaxation().probabilities(alpha), F.softmax(alpha, -1))


def test_softmax_gradient_reaches_every_alpha_including_none() -> None:
    torch.manual_seed(2)
    mixed = _mixed(DARTS_OPS)
    alpha = torch.zeros(1, len(DARTS_OPS), dtype=torch.double, requires_grad=True)
    x = _x(4)
    out = mixed(x, SoftmaxRelaxation()(alpha).weights[0])
    (out * _x(4, seed=5)).sum().backward()
    assert (alpha.grad != 0).all()


def test_mixed_op_of_only_zero_ops_returns_zeros_of_output_shape() -> None:
    for stride, hw in [(1, 8), (2, 4)]:
        mixed = _mixed(["none"], stride=stride)
        out = mixed(_x(4), torch.ones(1, dtype=torch.double))
        assert torch.equal(out, torch.zeros(2, 4, hw, hw, dtype=torch.double))


# -- hard argmax -----------------------------------------------------------------------------------
@given(st.lists(st.lists(st.sampled_from([-1.0, 0.0, 0.5, 2.0]), min_size=4, max_size=4), min_size=1, max_size=6))
@FAST
def test_hard_argmax_gives_exact_one_hot_first_on_ties(rows) -> None:
    alpha = torch.tensor(rows, dtype=torch.double, requires_grad=True)
    relaxed = HardArgmax()(alpha)
    w = relaxed.weights
    assert relaxed.active is None and not w.requires_grad and w.dtype == torch.double
    for r, row in enumerate(rows):
        first_max = row.index(max(row))
        expected = [1.0 if k == first_max else 0.0 for k in range(4)]
        assert w[r].tolist() == expected  # exactly 0.0 and 1.0


def test_hard_argmax_mixed_op_equals_the_chosen_op_exactly() -> None:
    torch.manual_seed(3)
    mixed = _mixed(DARTS_OPS)
    x = _x(4)
    for k in range(len(DARTS_OPS)):
        alpha = torch.full((1, len(DARTS_OPS)), -1.0, dtype=torch.double)
        alpha[0, k] = 3.0
        out = mixed(x, HardArgmax()(alpha).weights[0])
        assert torch.equal(out, mixed.ops[k](x)), DARTS_OPS[k]


# -- Gumbel straight-through -----------------------------------------------------------------------
@pytest.mark.parametrize("names, channels", [(RUAS_OPS, 3), (DARTS_OPS, 4)])
@pytest.mark.parametrize("seed", range(4))
def test_gumbel_runs_only_the_sampled_op_and_grads_reach_every_alpha(names, channels, seed) -> None:
    torch.manual_seed(seed)
    mixed = _mixed(names, channels)
    calls = _count_calls(mixed)
    alpha = (0.5 * torch.randn(1, len(names), dtype=torch.double)).requires_grad_()
    relax = GumbelStraightThrough(tau=1.0, generator=torch.Generator().manual_seed(seed))
    relaxed = relax(alpha)
    assert relaxed.active is not None and relaxed.active.shape == (1,)
    k = int(relaxed.active[0])
    # Forward value: one-hot at the sampled op (straight-through keeps the soft sample's graph).
    assert relaxed.weights[0].detach().argmax().item() == k
    torch.testing.assert_close(relaxed.weights.detach(), F.one_hot(relaxed.active, len(names)).double())
    x = _x(channels, seed)
    out = mixed(x, relaxed.weights[0], relaxed.active[0])
    assert calls == [k]  # only the sampled op ran
    torch.testing.assert_close(out, mixed.ops[k](x), rtol=1e-12, atol=1e-12)
    (out * _x(channels, seed + 100)).sum().backward()
    assert alpha.grad is not None and (alpha.grad != 0).all()


def test_gumbel_is_reproducible_with_a_generator_and_varies_between_draws() -> None:
    alpha = torch.zeros(64, 5)
    a = GumbelStraightThrough(generator=torch.Generator().manual_seed(7))(alpha).active
    b = GumbelStraightThrough(generator=torch.Generator().manual_seed(7))(alpha).active
    c = GumbelStraightThrough(generator=torch.Generator().manual_seed(8))(alpha).active
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_gumbel_samples_follow_the_softmax_of_alpha() -> None:
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05])
    alpha = torch.log(probs).repeat(20000, 1) + 3.0  # a shift changes nothing
    active = GumbelStraightThrough(tau=5.0, generator=torch.Generator().manual_seed(0))(alpha).active
    freq = torch.bincount(active, minlength=4).float() / active.numel()
    torch.testing.assert_close(freq, probs, rtol=0, atol=0.015)


def test_gumbel_in_a_supercell_runs_one_op_per_edge_and_grads_every_alpha() -> None:
    torch.manual_seed(0)
    space = DistillCellSpace()
    arch = ArchAlphas()
    gen = torch.Generator().manual_seed(11)
    cell = space.supercell(arch, "iem", 3, relaxation=GumbelStraightThrough(tau=1.0, generator=gen)).double()
    calls = {name: _count_calls(mixed) for name, mixed in cell.edges.items()}
    replay = torch.Generator()
    replay.set_state(gen.get_state())
    expected_active = GumbelStraightThrough(tau=1.0, generator=replay)(cell.alpha).active
    x = _x(3)
    out = cell(x)
    for row, edge in enumerate(cell.graph.edges):
        assert calls[edge.name] == [int(expected_active[row])], edge.name
    (out * _x(3, seed=4)).sum().backward()
    assert cell.alpha.grad is not None and (cell.alpha.grad != 0).all()


def test_gumbel_active_zero_op_still_gives_zero_output_and_gradient() -> None:
    mixed = _mixed(["none", "skip_connect"])
    alpha = torch.tensor([[5.0, -5.0]], dtype=torch.double, requires_grad=True)
    relaxed = GumbelStraightThrough(tau=1.0, generator=torch.Generator().manual_seed(0))(alpha)
    assert int(relaxed.active[0]) == 0  # 'none' has ~all the mass
    out = mixed(_x(4), relaxed.weights[0], relaxed.active[0])
    assert torch.equal(out.detach(), torch.zeros_like(out))
    out.sum().backward()
    assert (alpha.grad != 0).all()


# -- registry --------------------------------------------------------------------------------------
def test_make_relaxation_by_name_and_instance() -> None:
    r = make_relaxation("softmax", temperature=2.0)
    assert isinstance(r, SoftmaxRelaxation) and r.temperature == 2.0
    g = make_relaxation("gumbel", tau=3.0)
    assert isinstance(g, GumbelStraightThrough) and g.tau == 3.0
    h = HardArgmax()
    assert make_relaxation(h) is h
    assert isinstance(make_relaxation("hard"), HardArgmax)
    with pytest.raises(RegistryError, match="did you mean 'gumbel'"):
        make_relaxation("gumble")


# -- linear edges as one convolution ---------------------------------------------------------------
LINEAR_SETS = [
    RUAS_OPS,
    ("none", "skip_connect", "conv_3x3", "resconv_3x3"),
    ("conv_1x1", "conv_3x3", "resdilconv_3x3", "dilconv_3x3", "resconv_1x1"),
]


@pytest.mark.parametrize("names", LINEAR_SETS)
@pytest.mark.parametrize("channels", [1, 3, 6])
def test_a_linear_edge_runs_as_one_convolution_with_the_same_value_and_gradients(names, channels) -> None:
    torch.manual_seed(channels)
    mixed = _mixed(names, channels)
    assert mixed.fusable and mixed.fused(_x(channels))
    alpha = torch.randn(1, len(names), dtype=torch.double, requires_grad=True)
    x = _x(channels, hw=11).requires_grad_()
    probe = _x(channels, seed=9, hw=11)
    params = [alpha, x, *mixed.parameters()]
    results = []
    for fuse in (True, False):
        mixed.fuse_linear = fuse
        out = mixed(x, SoftmaxRelaxation()(alpha).weights[0])
        results.append((out, torch.autograd.grad((out * probe).sum(), params)))
    (fused, g_fused), (plain, g_plain) = results
    torch.testing.assert_close(fused, plain, rtol=0, atol=1e-12)
    for a, b in zip(g_fused, g_plain):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_the_fused_edge_runs_one_convolution_and_no_op_module() -> None:
    mixed = _mixed(RUAS_OPS, 3)
    calls = _count_calls(mixed)
    with torch.autograd.profiler.profile() as prof:
        mixed(_x(3), torch.full((len(RUAS_OPS),), 1 / len(RUAS_OPS), dtype=torch.double))
    assert calls == []
    assert sum(e.name == "aten::convolution" for e in prof.function_events) == 1


@pytest.mark.parametrize("names", [
    DARTS_OPS,  # pooling and BatchNorm: not linear convolutions
    ("conv_1x1", "dilconv_3x3"),  # a dense 5x5 kernel (25 taps) would cost more than 1 + 9 taps
    ("skip_connect", "conv_3x3"),  # one convolution: nothing to merge
])
def test_edges_that_gain_nothing_are_left_as_a_sum(names) -> None:
    assert not _mixed(names, 4).fusable


def test_a_sampled_op_still_runs_alone_on_a_fusable_edge() -> None:
    mixed = _mixed(RUAS_OPS, 3)
    calls = _count_calls(mixed)
    k = RUAS_OPS.index("conv_3x3")
    weights = F.one_hot(torch.tensor(k), len(RUAS_OPS)).double()
    out = mixed(_x(3), weights, torch.tensor(k))
    assert calls == [k] and torch.equal(out, mixed.ops[k](_x(3)))


def test_the_fused_plan_survives_deepcopy_and_device_moves() -> None:
    import copy

    mixed = _mixed(RUAS_OPS, 3)
    twin = copy.deepcopy(mixed)
    with torch.no_grad():
        for p in twin.parameters():
            p.add_(1.0)  # the copy reads its own weights, not the original's
    w = torch.full((len(RUAS_OPS),), 1 / len(RUAS_OPS), dtype=torch.double)
    twin.fuse_linear = mixed.fuse_linear = None  # auto: fused on a CPU
    fused_twin = twin(_x(3), w)
    twin.fuse_linear = False
    torch.testing.assert_close(fused_twin, twin(_x(3), w), rtol=0, atol=1e-12)
    assert not torch.allclose(fused_twin, mixed(_x(3), w))


def test_fusion_is_automatic_on_cpu_tensors_only_unless_forced() -> None:
    mixed = _mixed(RUAS_OPS, 3)
    x = _x(3)
    meta = torch.empty(1, 3, 4, 4, device="meta")
    assert mixed.fuse_linear is None and mixed.fused(x) and not mixed.fused(meta)
    mixed.fuse_linear = True
    assert mixed.fused(meta)
    mixed.fuse_linear = False
    assert not mixed.fused(x)

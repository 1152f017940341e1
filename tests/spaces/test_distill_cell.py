"""spaces/distill_cell.py: the RUAS distillation cell - structure, formulas, parameter counts."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from nasflow.core.cell import ArchAlphas, Cell
from nasflow.core.compile import compile_cell, compile_model
from nasflow.core.genotype import GenoEdge, Genotype
from nasflow.core.mixed import HardArgmax, SoftmaxRelaxation
from nasflow.spaces.distill_cell import EDGE_NAMES, RUAS_OPS, DistillCellSpace

FAST = settings(max_examples=25, deadline=None, database=None)
pytestmark = pytest.mark.usefixtures("single_thread")

# RUAS paper genotypes, edge order c1_d, c1_r, c2_d, c2_r, c3_d, c3_r, c4.
IEM = ["skip_connect", "resconv_1x1", "resdilconv_3x3", "conv_3x3", "conv_3x3", "skip_connect", "conv_3x3"]
NRM = ["resconv_1x1", "resconv_1x1", "resdilconv_3x3", "skip_connect", "resconv_1x1", "resconv_1x1", "skip_connect"]

# kernel, dilation, residual of each candidate (None: identity)
OP_SHAPE = {
    "skip_connect": None,
    "conv_1x1": (1, 1, False),
    "conv_3x3": (3, 1, False),
    "dilconv_3x3": (3, 2, False),
    "resconv_1x1": (1, 1, True),
    "resconv_3x3": (3, 1, True),
    "resdilconv_3x3": (3, 2, True),
}


def edges_of(ops: list[str]) -> tuple[GenoEdge, ...]:
    graph = DistillCellSpace().graph()
    return tuple(GenoEdge(op, e.src, e.dst) for op, e in zip(ops, graph.edges))


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def hand_count(ops: list[str], c: int) -> int:
    """conv k x k on C channels = C*C*k*k + C (biased); skip = 0; fusion 4C -> C 1x1 = 4C*C + C."""
    total = 4 * c * c + c
    for op in ops:
        if OP_SHAPE[op] is not None:
            k = OP_SHAPE[op][0]
            total += c * c * k * k + c
    return total


def ref_op(name: str, conv: nn.Conv2d | None, x: torch.Tensor) -> torch.Tensor:
    """A candidate op with plain torch calls; ``conv`` supplies the weights."""
    if OP_SHAPE[name] is None:
        return x
    k, dil, residual = OP_SHAPE[name]
    assert conv.weight.shape[-2:] == (k, k) and conv.dilation == (dil, dil)
    y = F.conv2d(x, conv.weight, conv.bias, padding=dil * (k - 1) // 2, dilation=dil)
    return y + x if residual else y


def ref_cell(x: torch.Tensor, edge_fns: dict, fusion: nn.Conv2d, slope: float = 0.05) -> torch.Tensor:
    """The docstring's formulas, verbatim."""
    act = lambda t: F.leaky_relu(t, slope)  # noqa: E731
    c1_d, c1_r, c2_d, c2_r, c3_d, c3_r, c4 = (edge_fns[n] for n in EDGE_NAMES)
    d1 = act(c1_d(x))
    r1 = act(c1_r(x) + x)
    d2 = act(c2_d(r1))
    r2 = act(c2_r(r1) + r1)
    d3 = act(c3_d(r2))
    r3 = act(c3_r(r2) + r2)
    r4 = act(c4(r3))
    return F.conv2d(torch.cat([d1, d2, d3, r4], 1), fusion.weight, fusion.bias)


def compiled_edge_fns(cell: Cell, ops: list[str]) -> dict:
    fns = {}
    for name, op in zip(EDGE_NAMES, ops):
        module = cell.edges[name]
        conv = getattr(module, "op", None)
        fns[name] = lambda t, op=op, conv=conv: ref_op(op, conv, t)
    return fns


def _x(c: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(2, c, 8, 8, generator=torch.Generator().manual_seed(seed), dtype=torch.double)


# -- structure ---------------------------------------------------------------------------------------
def test_graph_is_the_rfdn_distillation_cell() -> None:
    space = DistillCellSpace()
    g = space.graph()
    assert tuple(e.name for e in g.edges) == EDGE_NAMES
    assert [(e.src, e.dst) for e in g.edges] == [
        ("x", "d1"), ("x", "r1"), ("r1", "d2"), ("r1", "r2"), ("r2", "d3"), ("r2", "r3"), ("r3", "r4"),
    ]  # fmt: skip
    assert g.inputs == ("x",) and g.output == ("d1", "d2", "d3", "r4")
    assert {n.name: n.residual for n in g.nodes} == {
        "d1": None, "r1": "x", "d2": None, "r2": "r1", "d3": None, "r3": "r2", "r4": None,
    }  # fmt: skip
    assert all(n.activate for n in g.nodes)
    assert g.fixed_wiring and all(e.stride == 1 for e in g.edges)
    assert g.candidates == RUAS_OPS == space.candidates
    assert space.name == "distill" and space.default_rule == "argmax_per_edge"


def test_distill_cells_take_no_options() -> None:
    with pytest.raises(TypeError, match="no options"):
        DistillCellSpace().graph(reduction=True)


def test_io_modules_fusion_and_activation() -> None:
    io = DistillCellSpace(negative_slope=0.2).io_modules(6)
    assert isinstance(io.post, nn.Conv2d)
    assert io.post.in_channels == 24 and io.post.out_channels == 6 and io.post.kernel_size == (1, 1)
    assert io.post.bias is not None
    assert isinstance(io.activation, nn.LeakyReLU) and io.activation.negative_slope == 0.2
    assert io.pre == {}


# -- parameter counts --------------------------------------------------------------------------------
def test_ruas_iem_cell_has_387_parameters_on_3_channels(distill_net_cls) -> None:
    space = DistillCellSpace()
    # skip 0 + resconv_1x1 (9+3) + resdilconv_3x3 (81+3) + 3 x conv_3x3 (81+3) + skip 0 + fusion (36+3)
    expected = 0 + 12 + 84 + 84 + 84 + 0 + 84 + 39
    assert expected == 387 == hand_count(IEM, 3)
    assert n_params(space.cell(edges_of(IEM), 3)) == 387
    net = distill_net_cls(space, [("iem", 3, 3)])
    genotype = Genotype.from_cells("distill", {"iem": edges_of(IEM)})
    assert n_params(compile_model(net, genotype)) == 3 * 387 == 1161  # RUAS IEM


def test_ruas_nrm_cell_has_648_parameters_on_6_channels() -> None:
    space = DistillCellSpace()
    # 4 x resconv_1x1 (36+6) + resdilconv_3x3 (324+6) + 2 x skip 0 + fusion 24 -> 6 (144+6)
    expected = 4 * 42 + 330 + 150
    assert expected == 648 == hand_count(NRM, 6)
    cell = compile_cell(space, Genotype.from_cells("distill", {"nrm": edges_of(NRM)}), "nrm", 6)
    assert n_params(cell) == 648
    # NRM: stem conv3x3 3->6 (162+6) + 3 cells + out conv3x3 6->3 (162+3).
    nrm = nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1), *(space.cell(edges_of(NRM), 6) for _ in range(3)), nn.Conv2d(6, 3, 3, padding=1)
    )
    assert n_params(nrm) == 168 + 3 * 648 + 165 == 2277
    iem = nn.Sequential(*(space.cell(edges_of(IEM), 3) for _ in range(3)))
    assert n_params(iem) + n_params(nrm) == 3438  # RUAS total
    assert nrm(torch.randn(1, 3, 8, 8)).shape == (1, 3, 8, 8)


@given(st.lists(st.sampled_from(RUAS_OPS), min_size=7, max_size=7), st.sampled_from([3, 6]))
@FAST
def test_cell_parameter_count_matches_the_hand_count(ops, c) -> None:
    assert n_params(DistillCellSpace().cell(edges_of(ops), c)) == hand_count(ops, c)


# -- forward = the documented formulas ---------------------------------------------------------------
@pytest.mark.parametrize("ops, c", [(IEM, 3), (NRM, 6)])
def test_ruas_cells_compute_the_documented_formulas(ops, c) -> None:
    torch.manual_seed(0)
    cell = DistillCellSpace().cell(edges_of(ops), c).double()
    x = _x(c)
    expected = ref_cell(x, compiled_edge_fns(cell, ops), cell.post)
    torch.testing.assert_close(cell(x), expected, rtol=0, atol=1e-12)
    assert cell(x).shape == x.shape


@given(st.lists(st.sampled_from(RUAS_OPS), min_size=7, max_size=7), st.integers(0, 100))
@FAST
def test_any_distill_cell_computes_the_documented_formulas(ops, seed) -> None:
    torch.manual_seed(seed)
    cell = DistillCellSpace().cell(edges_of(ops), 3).double()
    x = _x(3, seed)
    torch.testing.assert_close(cell(x), ref_cell(x, compiled_edge_fns(cell, ops), cell.post), rtol=0, atol=1e-12)


def test_negative_slope_option_is_used() -> None:
    torch.manual_seed(1)
    cell = DistillCellSpace(negative_slope=0.3).cell(edges_of(IEM), 3).double()
    x = _x(3)
    expected = ref_cell(x, compiled_edge_fns(cell, IEM), cell.post, slope=0.3)
    torch.testing.assert_close(cell(x), expected, rtol=0, atol=1e-12)


def test_supercell_with_softmax_computes_the_formulas_with_mixed_edges() -> None:
    torch.manual_seed(2)
    space = DistillCellSpace()
    arch = ArchAlphas()
    cell = space.supercell(arch, "iem", 3).double()
    with torch.no_grad():
        arch["iem"].copy_(torch.randn(7, 7, generator=torch.Generator().manual_seed(3)))
    weights = torch.softmax(arch["iem"].detach(), -1)
    fns = {}
    for row, name in enumerate(EDGE_NAMES):
        mixed = cell.edges[name]
        assert mixed.op_names == RUAS_OPS

        def mixed_fn(t, mixed=mixed, w=weights[row]):
            return sum(w[k] * ref_op(op, getattr(mixed.ops[k], "op", None), t) for k, op in enumerate(RUAS_OPS))

        fns[name] = mixed_fn
    x = _x(3)
    with torch.no_grad():
        torch.testing.assert_close(cell(x), ref_cell(x, fns, cell.post), rtol=0, atol=1e-12)


@given(st.lists(st.sampled_from(RUAS_OPS), min_size=7, max_size=7))
@FAST
def test_hard_supercell_equals_the_plain_cell_with_its_weights(ops) -> None:
    torch.manual_seed(4)
    space = DistillCellSpace()
    arch = ArchAlphas()
    cell = space.supercell(arch, "iem", 3, relaxation=HardArgmax()).double()
    with torch.no_grad():
        arch["iem"].copy_(space.onehot_alpha(edges_of(ops)))
    chosen = {}
    for name, op in zip(EDGE_NAMES, ops):
        mixed = cell.edges[name]
        chosen[name] = lambda t, m=mixed, op=op: ref_op(op, getattr(m.ops[m.op_names.index(op)], "op", None), t)
    x = _x(3)
    with torch.no_grad():
        torch.testing.assert_close(cell(x), ref_cell(x, chosen, cell.post), rtol=0, atol=1e-12)
    cell.relaxation = SoftmaxRelaxation()  # with soft weights the value differs
    with torch.no_grad():
        assert not torch.allclose(cell(x), ref_cell(x, chosen, cell.post))


def test_onehot_alpha_selects_exactly_the_genotype_ops() -> None:
    space = DistillCellSpace(candidates=list(reversed(RUAS_OPS)))
    alpha = space.onehot_alpha(edges_of(IEM))
    assert alpha.shape == (7, 7) and torch.equal(alpha.sum(1), torch.ones(7))
    assert [space.candidates[i] for i in alpha.argmax(1).tolist()] == IEM

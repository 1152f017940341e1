"""spaces/darts_cell.py: the DARTS normal/reduction cell - structure, shapes, compiled cells."""

from __future__ import annotations

import random

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from nasflow.core.cell import ArchAlphas, Cell
from nasflow.errors import GenotypeError, SpaceError
from nasflow.core.genotype import GenoEdge
from nasflow.core.mixed import HardArgmax
from nasflow.core.ops import FactorizedReduce, ReLUConvBN
from nasflow.spaces.darts_cell import DARTS_OPS, DartsCellSpace

FAST = settings(max_examples=25, deadline=None, database=None)
pytestmark = pytest.mark.usefixtures("single_thread")


def nodes_of(i: int) -> str:
    return ("s0", "s1", "n0", "n1", "n2", "n3")[i]


def darts_v2(pairs: list[tuple[str, int]]) -> tuple[GenoEdge, ...]:
    """A genotype in the DARTS paper's (op, input index) notation; 2 edges per node."""
    return tuple(GenoEdge(op, nodes_of(j), f"n{i // 2}") for i, (op, j) in enumerate(pairs))


DARTS_V2_NORMAL = darts_v2(
    [("sep_conv_3x3", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("sep_conv_3x3", 1),
     ("sep_conv_3x3", 1), ("skip_connect", 0), ("skip_connect", 0), ("dil_conv_3x3", 2)]
)  # fmt: skip
DARTS_V2_REDUCE = darts_v2(
    [("max_pool_3x3", 0), ("max_pool_3x3", 1), ("skip_connect", 2), ("max_pool_3x3", 1),
     ("max_pool_3x3", 0), ("skip_connect", 2), ("skip_connect", 2), ("max_pool_3x3", 1)]
)  # fmt: skip


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def _x(c: int, hw: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(2, c, hw, hw, generator=torch.Generator().manual_seed(seed), dtype=torch.double)


# -- structure ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("reduction", [False, True])
def test_graph_structure(reduction: bool) -> None:
    space = DartsCellSpace()
    g = space.graph(reduction=reduction)
    assert g.inputs == ("s0", "s1") and g.output == ("n0", "n1", "n2", "n3")
    assert len(g.edges) == 14 and not g.fixed_wiring
    for i in range(4):
        assert [g.edges[r].src for r in g.incoming(f"n{i}")] == ["s0", "s1", *[f"n{j}" for j in range(i)]]
    for e in g.edges:
        assert e.name == f"{e.src}_{e.dst}"
        assert e.stride == (2 if reduction and e.src in ("s0", "s1") else 1)
    assert g.candidates == DARTS_OPS and space.affine is False
    assert space.name == "darts" and space.default_rule == "topk_per_node"
    assert g.label("s0") == "c_{k-2}" and g.output_label == "c_{k}"


def test_steps_option() -> None:
    g = DartsCellSpace(steps=2).graph()
    assert len(g.edges) == 2 + 3 and g.output == ("n0", "n1")
    with pytest.raises(ValueError):
        DartsCellSpace(steps=0)


def test_io_modules_preprocess_both_inputs() -> None:
    space = DartsCellSpace()
    io = space.io_modules(8, c_prev_prev=16, c_prev=32)
    assert isinstance(io.pre["s0"], ReLUConvBN) and isinstance(io.pre["s1"], ReLUConvBN)
    assert n_params(io.pre["s0"]) == 16 * 8 and n_params(io.pre["s1"]) == 32 * 8  # 1x1, no bias, BN not affine
    io = space.io_modules(8, reduction_prev=True, c_prev_prev=16, c_prev=32)
    assert isinstance(io.pre["s0"], FactorizedReduce)
    assert io.post is None and io.activation is None


# -- compiled cells: shapes, only chosen edges, hand-counted parameters ------------------------------
def test_darts_v2_normal_cell() -> None:
    space = DartsCellSpace()
    cell = space.cell(DARTS_V2_NORMAL, 4).double().eval()
    assert set(cell.edges.keys()) == {"s0_n0", "s1_n0", "s0_n1", "s1_n1", "s1_n2", "s0_n2", "s0_n3", "n0_n3"}
    # 5 sep_conv_3x3 on 4 channels (2 x (36 + 16)) + dil_conv_3x3 (36 + 16) + 2 skips (0)
    # + two 1x1 preprocess convs 4 -> 4 (16 each); BN without affine has no parameters.
    assert n_params(cell) == 5 * 104 + 52 + 2 * 16 == 604
    out = cell(_x(4, 8), _x(4, 8, seed=1))
    assert out.shape == (2, 16, 8, 8)


def test_darts_v2_reduction_cell_after_a_reduction() -> None:
    space = DartsCellSpace()
    cell = space.cell(DARTS_V2_REDUCE, 8, reduction=True, reduction_prev=True, c_prev_prev=8, c_prev=16)
    cell = cell.double().eval()
    # pools and stride-1 skips are parameter-free; pre0 = FactorizedReduce 8 -> 8 (2 x 8*4),
    # pre1 = 1x1 conv 16 -> 8.
    assert n_params(cell) == 2 * 8 * 4 + 16 * 8 == 192
    out = cell(_x(8, 16), _x(16, 8, seed=1))  # s0 is one reduction behind s1
    assert out.shape == (2, 32, 4, 4)
    assert isinstance(cell.edges["n0_n1"], nn.Identity)  # stride 1 between inner nodes
    assert isinstance(cell.edges["s0_n0"], nn.MaxPool2d) and cell.edges["s0_n0"].stride == 2


def test_skip_from_an_input_in_a_reduction_cell_is_a_factorized_reduce() -> None:
    edges = (
        GenoEdge("skip_connect", "s0", "n0"), GenoEdge("avg_pool_3x3", "s1", "n0"),
        GenoEdge("skip_connect", "n0", "n1"), GenoEdge("skip_connect", "s1", "n1"),
        GenoEdge("skip_connect", "n0", "n2"), GenoEdge("skip_connect", "n1", "n2"),
        GenoEdge("skip_connect", "n2", "n3"), GenoEdge("skip_connect", "n0", "n3"),
    )  # fmt: skip
    cell = DartsCellSpace().cell(edges, 8, reduction=True)
    assert isinstance(cell.edges["s0_n0"], FactorizedReduce) and isinstance(cell.edges["s1_n1"], FactorizedReduce)
    assert n_params(cell) == 2 * (2 * 8 * 4) + 2 * 64  # two FactorizedReduce + two 1x1 preprocess convs
    with pytest.raises(SpaceError, match="even channel count"):
        DartsCellSpace().cell(edges, 3, reduction=True)


@given(st.integers(0, 2**32 - 1), st.booleans())
@FAST
def test_compiled_cell_computes_the_darts_node_sums(seed: int, reduction: bool) -> None:
    """c_k = cat(n0..n3), n_j = sum of op(h_i) over the two kept edges i -> j, h = pre(s)."""
    space = DartsCellSpace()
    rng = random.Random(seed)
    edges = space.random_edges(rng, reduction=reduction)
    assert [sum(e.dst == f"n{i}" for e in edges) for i in range(4)] == [2, 2, 2, 2]
    assert all(e.op != "none" for e in edges)
    torch.manual_seed(seed % 1000)
    cell = space.cell(edges, 4, reduction=reduction).double().eval()
    assert len(cell.edges) == 8
    s0, s1 = _x(4, 8, seed % 97), _x(4, 8, seed % 89 + 1)
    with torch.no_grad():
        h = {"s0": cell.pre["s0"](s0), "s1": cell.pre["s1"](s1)}
        for i in range(4):
            node = f"n{i}"
            h[node] = sum(cell.edges[f"{e.src}_{node}"](h[e.src]) for e in edges if e.dst == node)
        expected = torch.cat([h[f"n{i}"] for i in range(4)], 1)
        out = cell(s0, s1)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-12)
    assert out.shape == (2, 16, 4 if reduction else 8, 4 if reduction else 8)


@given(st.integers(0, 2**32 - 1), st.booleans())
@settings(max_examples=10, deadline=None, database=None)
def test_single_hard_supercell_equals_plain_cell_with_its_weights(seed: int, reduction: bool) -> None:
    space = DartsCellSpace()
    torch.manual_seed(seed % 1000)
    arch = ArchAlphas()
    sup = space.supercell(arch, "c", 4, relaxation=HardArgmax(), reduction=reduction).double().eval()
    edges = space.random_edges(random.Random(seed), reduction=reduction)
    with torch.no_grad():
        arch["c"].copy_(space.onehot_alpha(edges, reduction=reduction))
    modules = {}
    for e in edges:
        mixed = sup.edges[f"{e.src}_{e.dst}"]
        modules[f"{e.src}_{e.dst}"] = mixed.ops[mixed.op_names.index(e.op)]
    plain = Cell(sup.graph, modules, dict(sup.pre.items()))
    s0, s1 = _x(4, 8, 1), _x(4, 8, 2)
    with torch.no_grad():
        torch.testing.assert_close(sup(s0, s1), plain(s0, s1), rtol=0, atol=1e-12)


def test_onehot_alpha_drops_unchosen_edges_to_none() -> None:
    space = DartsCellSpace()
    alpha = space.onehot_alpha(DARTS_V2_NORMAL)
    g = space.graph()
    none = DARTS_OPS.index("none")
    kept = {(e.src, e.dst) for e in DARTS_V2_NORMAL}
    for row, e in enumerate(g.edges):
        assert alpha[row].sum() == 1
        if (e.src, e.dst) in kept:
            assert alpha[row, none] == 0
        else:
            assert alpha[row, none] == 1
    no_none = DartsCellSpace(candidates=[c for c in DARTS_OPS if c != "none"])
    with pytest.raises(GenotypeError, match="no zero op"):
        no_none.onehot_alpha(DARTS_V2_NORMAL)


def test_darts_genotype_errors() -> None:
    space = DartsCellSpace()
    bad = list(DARTS_V2_NORMAL)
    bad[7] = GenoEdge("dil_conv_3x3", "n2", "n0")  # backwards: no such edge
    with pytest.raises(GenotypeError, match=r"\[7\]: no edge n2->n0"):
        space.cell(bad, 4)
    bad[7] = GenoEdge("conv_3x3", "n0", "n3")  # a RUAS op, not a DARTS candidate
    with pytest.raises(GenotypeError, match=r"\[7\].op: unknown op 'conv_3x3'"):
        space.cell(bad, 4)

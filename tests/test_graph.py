"""nasflow.core.graph / nasflow.core.cell: cell DAG descriptions, genotype checks, the generic evaluator."""

from __future__ import annotations

import networkx as nx
import pytest
import torch
from torch import nn

from nasflow.core.cell import Cell
from nasflow.errors import GenotypeError, SpaceError
from nasflow.core.genotype import GenoEdge
from nasflow.core.graph import CellGraph, EdgeSpec, NodeSpec, validate_edges


class Scale(nn.Module):
    def __init__(self, k: float) -> None:
        super().__init__()
        self.k = k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.k * x


def toy_graph(fixed_wiring: bool = True, output: tuple[str, ...] = ("b", "c")) -> CellGraph:
    """a -> b (activated), a -> c and b -> c, c adds a residual of a."""
    return CellGraph(
        inputs=("a",),
        nodes=(NodeSpec("b", activate=True), NodeSpec("c", residual="a")),
        edges=(EdgeSpec("ab", "a", "b"), EdgeSpec("ac", "a", "c"), EdgeSpec("bc", "b", "c")),
        candidates=("none", "skip_connect", "conv_1x1"),
        output=output,
        fixed_wiring=fixed_wiring,
        display={"a": "input"},
    )


# -- graph validation ------------------------------------------------------------------------------
def _graph(**overrides) -> CellGraph:
    base = dict(
        inputs=("a",),
        nodes=(NodeSpec("b"), NodeSpec("c")),
        edges=(EdgeSpec("ab", "a", "b"), EdgeSpec("bc", "b", "c")),
        candidates=("skip_connect",),
        output=("c",),
    )
    base.update(overrides)
    return CellGraph(**base)


@pytest.mark.parametrize(
    "overrides, fragment",
    [
        ({"nodes": (NodeSpec("a"), NodeSpec("c"))}, "duplicate node names"),
        ({"edges": (EdgeSpec("e", "a", "b"), EdgeSpec("e", "b", "c"))}, "duplicate edge names"),
        ({"edges": (EdgeSpec("x", "a", "b"), EdgeSpec("y", "a", "b"))}, "same pair of nodes"),
        ({"candidates": ()}, "distinct and non-empty"),
        ({"candidates": ("skip_connect", "skip_connect")}, "distinct and non-empty"),
        ({"edges": (EdgeSpec("ab", "a", "b"), EdgeSpec("cb", "c", "b"))}, "goes backwards"),
        ({"edges": (EdgeSpec("ab", "a", "b"), EdgeSpec("zc", "z", "c"))}, "unknown or input nodes"),
        ({"edges": (EdgeSpec("ab", "a", "b"), EdgeSpec("ba", "b", "a"))}, "unknown or input nodes"),
        ({"nodes": (NodeSpec("b", residual="c"), NodeSpec("c"))}, "not an earlier node"),
        ({"nodes": (NodeSpec("b", residual="q"), NodeSpec("c"))}, "not an earlier node"),
        ({"output": ("c", "zz")}, "output node zz"),
    ],
)
def test_malformed_graphs_are_space_errors(overrides, fragment) -> None:
    with pytest.raises(SpaceError, match=fragment):
        _graph(**overrides)


def test_lookups_and_networkx_view() -> None:
    g = toy_graph()
    assert g.node_names == ("a", "b", "c")
    assert g.edge_index("b", "c") == 2
    with pytest.raises(KeyError):
        g.edge_index("c", "b")
    assert g.incoming("c") == [1, 2] and g.incoming("b") == [0] and g.incoming("a") == []
    assert g.label("a") == "input" and g.label("b") == "b"
    nxg = g.to_networkx()
    assert nx.is_directed_acyclic_graph(nxg)
    assert set(nxg.edges) == {("a", "b"), ("a", "c"), ("b", "c")}
    assert nxg.nodes["a"]["role"] == "input" and nxg.nodes["c"]["residual"] == "a"
    assert nxg.nodes["b"]["activate"] is True
    assert nxg.edges["b", "c"]["name"] == "bc" and nxg.edges["b", "c"]["candidates"] == g.candidates


# -- validate_edges --------------------------------------------------------------------------------
def _e(op: str, src: str, dst: str) -> GenoEdge:
    return GenoEdge(op, src, dst)


def test_validate_edges_accepts_a_full_choice() -> None:
    validate_edges(toy_graph(), [_e("skip_connect", "a", "b"), _e("conv_1x1", "a", "c"), _e("none", "b", "c")])


@pytest.mark.parametrize(
    "edges, fragment",
    [
        ([_e("skip_connect", "a", "b"), _e("conv_1x1", "a", "c"), _e("conv_9x9", "b", "c")], "iem[2].op: unknown op 'conv_9x9' in space 'toy'"),
        ([_e("skip_connect", "a", "b"), _e("conv_1x1", "c", "a")], "iem[1]: no edge c->a in space 'toy'"),
        ([_e("skip_connect", "a", "b"), _e("skip_connect", "a", "b")], "iem[1]: edge a->b appears twice"),
        ([_e("skip_connect", "a", "b"), _e("skip_connect", "b", "c")], "every edge needs an op in space 'toy'; missing a->c"),
    ],
)  # fmt: skip
def test_validate_edges_errors_name_the_field(edges, fragment) -> None:
    with pytest.raises(GenotypeError) as info:
        validate_edges(toy_graph(), edges, "iem", "toy")
    assert fragment in str(info.value)


def test_free_wiring_allows_subsets_but_every_node_needs_an_input() -> None:
    g = CellGraph(
        inputs=("a",),
        nodes=(NodeSpec("b"), NodeSpec("c")),
        edges=(EdgeSpec("ab", "a", "b"), EdgeSpec("ac", "a", "c"), EdgeSpec("bc", "b", "c")),
        candidates=("skip_connect",),
        output=("c",),
        fixed_wiring=False,
    )
    validate_edges(g, [_e("skip_connect", "a", "b"), _e("skip_connect", "b", "c")])
    with pytest.raises(GenotypeError, match="node c has no incoming edge"):
        validate_edges(g, [_e("skip_connect", "a", "b")])
    # A node with a residual is fed even without edges.
    validate_edges(toy_graph(fixed_wiring=False), [_e("skip_connect", "a", "b")])


# -- the generic Cell evaluator --------------------------------------------------------------------
def test_cell_evaluates_act_of_sum_plus_residual_and_concatenates_outputs() -> None:
    g = toy_graph()
    cell = Cell(g, {"ab": Scale(-2.0), "ac": Scale(3.0), "bc": Scale(5.0)}, activation=nn.ReLU())
    x = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    b = torch.relu(-2.0 * x)  # activated node
    c = 3.0 * x + 5.0 * b + x  # not activated; residual a
    torch.testing.assert_close(cell(x), torch.cat([b, c], 1), rtol=0, atol=1e-6)


def test_cell_with_pre_and_post_modules() -> None:
    g = toy_graph(output=("c",))
    cell = Cell(g, {"ab": Scale(1.0), "ac": Scale(1.0), "bc": Scale(1.0)}, pre={"a": Scale(2.0)}, post=Scale(10.0))
    x = torch.randn(1, 2, 3, 3)
    a = 2.0 * x
    torch.testing.assert_close(cell(x), 10.0 * (a + a + a), rtol=0, atol=1e-5)  # act None: no activation


def test_cell_skips_edges_without_modules() -> None:
    g = toy_graph(fixed_wiring=False, output=("c",))
    calls: list[str] = []

    class Spy(Scale):
        def __init__(self, name: str) -> None:
            super().__init__(1.0)
            self.name = name

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            calls.append(self.name)
            return x

    cell = Cell(g, {"ab": Spy("ab"), "bc": Spy("bc")})
    x = torch.randn(1, 1, 2, 2)
    torch.testing.assert_close(cell(x), x + x)  # c = bc(b) + residual a
    assert calls == ["ab", "bc"]


def test_cell_errors() -> None:
    g = toy_graph()
    with pytest.raises(SpaceError, match="unknown edges"):
        Cell(g, {"ab": nn.Identity(), "zz": nn.Identity()})
    cell = Cell(g, {"ab": nn.Identity(), "ac": nn.Identity(), "bc": nn.Identity()})
    with pytest.raises(SpaceError, match="expects 1 input"):
        cell(torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 2, 2))
    no_input = CellGraph(
        inputs=("a",),
        nodes=(NodeSpec("b"),),
        edges=(EdgeSpec("ab", "a", "b"),),
        candidates=("skip_connect",),
        output=("b",),
    )
    with pytest.raises(SpaceError, match="node b has no incoming edge"):
        Cell(no_input, {})(torch.zeros(1, 1, 2, 2))

"""nasflow.core.derive: alphas -> genotypes, with the documented answers on adversarial alphas.

Documented rules (nasflow/core/derive.py): zero ops are never chosen; ties between ops go to the
alphabetically first op name; topk_per_node ranks edges by their best non-zero softmax
probability (softmax over all candidates, 'none' included), ties to the first edge in graph
order; nothing depends on the candidates' list order.
"""

from __future__ import annotations

import math
import random

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from nasflow.core.cell import ArchAlphas
from nasflow.core.derive import ArgmaxPerEdge, TopKPerNode, derive
from nasflow.errors import GenotypeError, SpaceError
from nasflow.core.genotype import GenoEdge
from nasflow.core.graph import CellGraph
from nasflow.registries import DERIVE_RULES
from nasflow.spaces.darts_cell import DARTS_OPS, DartsCellSpace
from nasflow.spaces.distill_cell import RUAS_OPS, DistillCellSpace

FAST = settings(max_examples=40, deadline=None, database=None)
GRID = [-2.0, -1.0, -0.5, 0.0, 0.25, 1.0, 3.0]  # coarse values: many exact ties, no near-ties


def arch_with(space, alpha: torch.Tensor, label: str = "cell", **cell_options) -> ArchAlphas:
    arch = ArchAlphas()
    arch.ensure(label, space.graph(**cell_options), space.name)
    with torch.no_grad():
        arch[label].copy_(alpha)
    return arch


def row(candidates, **values: float) -> list[float]:
    """An alpha row: 0 everywhere except the named ops."""
    return [values.get(c, 0.0) for c in candidates]


# -- an independent reference implementation of the documented rules -------------------------------
def ref_best(alpha_row: list[float], candidates) -> tuple[float, str]:
    nonzero = [i for i, c in enumerate(candidates) if c != "none"]
    best = min(nonzero, key=lambda i: (-alpha_row[i], candidates[i]))  # softmax is monotone
    top = max(alpha_row)
    z = math.fsum(sorted(math.exp(a - top) for a in alpha_row))
    return math.exp(alpha_row[best] - top) / z, candidates[best]


def ref_argmax(graph: CellGraph, alpha: list[list[float]]) -> tuple[GenoEdge, ...]:
    return tuple(GenoEdge(ref_best(alpha[i], graph.candidates)[1], e.src, e.dst) for i, e in enumerate(graph.edges))


def ref_topk(graph: CellGraph, alpha: list[list[float]], k: int = 2) -> set[GenoEdge]:
    chosen = set()
    for node in graph.nodes:
        rows = graph.incoming(node.name)
        scored = sorted(rows, key=lambda r: (-ref_best(alpha[r], graph.candidates)[0], r))
        for r in scored[:k]:
            chosen.add(GenoEdge(ref_best(alpha[r], graph.candidates)[1], graph.edges[r].src, node.name))
    return chosen


# -- 'none' dominant -------------------------------------------------------------------------------
def test_none_dominant_everywhere_still_picks_best_nonzero_op_per_edge() -> None:
    space = DartsCellSpace()
    graph = space.graph()
    gen = torch.Generator().manual_seed(0)
    alpha = torch.randn(len(graph.edges), len(DARTS_OPS), generator=gen)
    alpha[:, DARTS_OPS.index("none")] = 50.0  # 'none' has ~all the probability on every edge
    edges = ArgmaxPerEdge()(graph, alpha)
    assert len(edges) == len(graph.edges)
    for i, e in enumerate(edges):
        assert e.op != "none"
        expected = max((c for c in DARTS_OPS if c != "none"), key=lambda c: alpha[i, DARTS_OPS.index(c)].item())
        assert e.op == expected
    top = TopKPerNode()(graph, alpha)
    assert all(e.op != "none" for e in top)
    assert [sum(e.dst == n.name for e in top) for n in graph.nodes] == [2, 2, 2, 2]


def test_topk_ranks_edges_by_best_nonzero_probability_not_raw_alpha() -> None:
    space = DartsCellSpace()
    graph = space.graph()
    c = DARTS_OPS
    alpha = torch.tensor([row(c, none=8.0)] * len(graph.edges))  # weak edges by default
    # Node n1 has incoming s0, s1, n0. By the documented strength (softmax over all 8 ops):
    #   s0->n1: none=5, sep3=2  -> p(sep3) = e^2 / (e^5 + e^2 + 6)   ~ 0.046 (largest raw alpha)
    #   s1->n1: dil5=0.5        -> p(dil5) = e^.5 / (e^.5 + 7)       ~ 0.191
    #   n0->n1: max_pool=0.3    -> p(max)  = e^.3 / (e^.3 + 7)       ~ 0.162
    # Raw alphas (or a softmax without 'none') would keep s0->n1; the rule keeps s1, n0.
    alpha[graph.edge_index("s0", "n1")] = torch.tensor(row(c, none=5.0, sep_conv_3x3=2.0))
    alpha[graph.edge_index("s1", "n1")] = torch.tensor(row(c, dil_conv_5x5=0.5))
    alpha[graph.edge_index("n0", "n1")] = torch.tensor(row(c, max_pool_3x3=0.3))
    edges = TopKPerNode()(graph, alpha)
    n1 = [e for e in edges if e.dst == "n1"]
    assert n1 == [GenoEdge("dil_conv_5x5", "s1", "n1"), GenoEdge("max_pool_3x3", "n0", "n1")]  # strongest first


def test_argmax_per_edge_with_none_dominant_in_a_space_that_has_none() -> None:
    space = DistillCellSpace(candidates=["none", *RUAS_OPS])
    graph = space.graph()
    alpha = torch.tensor([row(space.candidates, none=9.0, conv_3x3=1.0, resconv_1x1=1.5)] * 7)
    genotype = derive(arch_with(space, alpha))
    assert genotype.ops("cell") == ["resconv_1x1"] * 7
    assert [(e.src, e.dst) for e in genotype.edges("cell")] == [(e.src, e.dst) for e in graph.edges]


# -- ties ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "space, expected",
    [(DartsCellSpace(), "avg_pool_3x3"), (DistillCellSpace(), "conv_1x1")],
)
def test_exact_ties_between_ops_go_to_the_alphabetically_first_name(space, expected) -> None:
    # In list order the first non-zero op would be max_pool_3x3 (DARTS) / skip_connect (RUAS).
    graph = space.graph()
    alpha = torch.zeros(len(graph.edges), len(space.candidates))
    assert ArgmaxPerEdge()(graph, alpha) == tuple(GenoEdge(expected, e.src, e.dst) for e in graph.edges)
    chosen = TopKPerNode(k=1)(graph, alpha)
    assert {e.op for e in chosen} == {expected}


def test_partial_tie_between_two_best_ops() -> None:
    space = DartsCellSpace()
    graph = space.graph()
    alpha = torch.tensor([row(DARTS_OPS, none=4.0, sep_conv_5x5=1.0, dil_conv_3x3=1.0, skip_connect=0.5)] * 14)
    assert {e.op for e in ArgmaxPerEdge()(graph, alpha)} == {"dil_conv_3x3"}


def test_exact_ties_between_edges_go_to_the_first_edge_in_graph_order() -> None:
    space = DartsCellSpace()
    graph = space.graph()
    alpha = torch.zeros(len(graph.edges), len(DARTS_OPS))  # every edge equally strong
    edges = TopKPerNode()(graph, alpha)
    assert [(e.src, e.dst) for e in edges] == [
        ("s0", "n0"), ("s1", "n0"), ("s0", "n1"), ("s1", "n1"),
        ("s0", "n2"), ("s1", "n2"), ("s0", "n3"), ("s1", "n3"),
    ]  # fmt: skip
    # A tie among later edges: n3's s1, n1, n2 equally strong, s0 and n0 weaker.
    strong = row(DARTS_OPS, sep_conv_3x3=2.0)
    alpha[graph.edge_index("s0", "n3")] = torch.tensor(row(DARTS_OPS, none=3.0))
    alpha[graph.edge_index("n0", "n3")] = torch.tensor(row(DARTS_OPS, none=3.0))
    for src in ("s1", "n1", "n2"):
        alpha[graph.edge_index(src, "n3")] = torch.tensor(strong)
    n3 = [e for e in TopKPerNode()(graph, alpha) if e.dst == "n3"]
    assert n3 == [GenoEdge("sep_conv_3x3", "s1", "n3"), GenoEdge("sep_conv_3x3", "n1", "n3")]
    # Same strength by permuted rows (same multiset of alphas) is still an exact tie.
    perm = list(reversed(strong))
    perm_best = DARTS_OPS[perm.index(2.0)]
    alpha[graph.edge_index("s1", "n3")] = torch.tensor(perm)
    n3 = [e for e in TopKPerNode()(graph, alpha) if e.dst == "n3"]
    assert n3 == [GenoEdge(perm_best, "s1", "n3"), GenoEdge("sep_conv_3x3", "n1", "n3")]


# -- permutation invariance and the reference ------------------------------------------------------
alpha_values = st.sampled_from(GRID) | st.floats(min_value=-4.0, max_value=4.0, allow_nan=False)


@st.composite
def permuted_alphas(draw, base: tuple[str, ...], n_edges: int, values=alpha_values):
    perm = draw(st.permutations(range(len(base))))
    alpha = draw(st.lists(st.lists(values, min_size=len(base), max_size=len(base)), min_size=n_edges, max_size=n_edges))
    return list(perm), alpha


@given(permuted_alphas(DARTS_OPS, 14))
@FAST
def test_darts_genotype_is_invariant_to_candidate_order(case) -> None:
    perm, alpha = case
    plain, permuted = DartsCellSpace(), DartsCellSpace(candidates=[DARTS_OPS[i] for i in perm])
    a = torch.tensor(alpha)
    a_perm = a[:, perm]
    for rule in ("topk_per_node", "argmax_per_edge"):
        g1 = derive(arch_with(plain, a), rule)
        g2 = derive(arch_with(permuted, a_perm), rule)
        assert g1 == g2, rule
        assert g2.meta["rule"] == rule


@given(permuted_alphas(RUAS_OPS, 7))
@FAST
def test_distill_genotype_is_invariant_to_candidate_order(case) -> None:
    perm, alpha = case
    permuted = DistillCellSpace(candidates=[RUAS_OPS[i] for i in perm])
    a = torch.tensor(alpha)
    assert derive(arch_with(DistillCellSpace(), a)) == derive(arch_with(permuted, a[:, perm]))


@given(permuted_alphas(DARTS_OPS, 14, values=st.sampled_from(GRID)))
@FAST
def test_rules_match_an_independent_reference(case) -> None:
    perm, alpha = case
    space = DartsCellSpace(candidates=[DARTS_OPS[i] for i in perm])
    graph = space.graph()
    assert ArgmaxPerEdge()(graph, torch.tensor(alpha)) == ref_argmax(graph, alpha)
    topk = TopKPerNode()(graph, torch.tensor(alpha))
    assert set(topk) == ref_topk(graph, alpha) and len(topk) == 8
    top3 = TopKPerNode(k=3)(graph, torch.tensor(alpha))
    assert set(top3) == ref_topk(graph, alpha, k=3) and len(top3) == 2 + 3 + 3 + 3


# -- round trip through one-hot alphas -------------------------------------------------------------
@given(st.integers(0, 2**32 - 1))
@FAST
def test_derive_recovers_the_genotype_behind_onehot_alphas(seed: int) -> None:
    darts, distill = DartsCellSpace(), DistillCellSpace()
    for reduction in (False, True):
        edges = darts.random_edges(random.Random(seed), reduction=reduction)
        alpha = darts.onehot_alpha(edges, reduction=reduction)
        assert TopKPerNode()(darts.graph(reduction=reduction), alpha) == edges
    edges = distill.random_edges(random.Random(seed))
    assert derive(arch_with(distill, distill.onehot_alpha(edges))).edges("cell") == edges


@given(st.integers(0, 2**32 - 1), st.integers(1, 4))
@FAST
def test_rule_samples_are_valid_genotypes_of_the_rule_shape(seed: int, k: int) -> None:
    space = DartsCellSpace()
    graph = space.graph()
    edges = TopKPerNode(k).sample(graph, random.Random(seed))
    space.check_edges(edges, graph)
    for node in graph.nodes:
        assert sum(e.dst == node.name for e in edges) == min(k, len(graph.incoming(node.name)))
    assert all(e.op != "none" for e in edges)
    edges = ArgmaxPerEdge().sample(graph, random.Random(seed))
    assert len(edges) == len(graph.edges) and all(e.op != "none" for e in edges)


# -- derive() itself -------------------------------------------------------------------------------
def test_derive_uses_the_space_default_rule_and_records_it() -> None:
    alpha = torch.zeros(14, len(DARTS_OPS))
    g = derive(arch_with(DartsCellSpace(), alpha), meta={"epoch": 3})
    assert g.space == "darts" and g.meta == {"rule": "topk_per_node", "epoch": 3}
    assert len(g.edges("cell")) == 8
    g = derive(arch_with(DartsCellSpace(), alpha), rule="argmax_per_edge")
    assert len(g.edges("cell")) == 14 and g.meta["rule"] == "argmax_per_edge"
    g = derive(arch_with(DistillCellSpace(), torch.zeros(7, 7)))
    assert g.space == "distill" and g.meta["rule"] == "argmax_per_edge" and len(g.edges("cell")) == 7


def test_derive_covers_every_label() -> None:
    space = DistillCellSpace()
    arch = ArchAlphas()
    for label in ("iem", "nrm"):
        arch.ensure(label, space.graph(), space.name)
    with torch.no_grad():
        arch["iem"][:, RUAS_OPS.index("conv_3x3")] = 1.0
        arch["nrm"][:, RUAS_OPS.index("skip_connect")] = 1.0
    g = derive(arch)
    assert g.labels == ("iem", "nrm")
    assert g.ops("iem") == ["conv_3x3"] * 7 and g.ops("nrm") == ["skip_connect"] * 7


def test_derive_errors() -> None:
    with pytest.raises(GenotypeError, match="no architecture parameters"):
        derive(ArchAlphas())
    arch = ArchAlphas()
    arch.ensure("a", DartsCellSpace().graph(), "darts")
    arch.ensure("b", DistillCellSpace().graph(), "distill")
    with pytest.raises(GenotypeError, match="one genotype covers one space"):
        derive(arch)
    with pytest.raises(SpaceError, match="k >= 1"):
        TopKPerNode(k=0)
    only_none = DartsCellSpace(candidates=["none"])
    for rule in ("argmax_per_edge", "topk_per_node"):
        with pytest.raises(SpaceError, match="non-zero candidate"):
            DERIVE_RULES.get(rule)()(only_none.graph(), torch.zeros(14, 1))


def test_derive_does_not_touch_the_alphas() -> None:
    arch = arch_with(DartsCellSpace(), torch.randn(14, 8))
    before = arch["cell"].detach().clone()
    derive(arch)
    assert torch.equal(arch["cell"].detach(), before)
    assert arch["cell"].grad is None


def test_derive_works_for_a_space_named_only_by_import_path() -> None:
    """A space used by its ``module:attr`` path is not in the registry under its own name; derive
    must still find its default rule (it is recorded when the space builds its alphas)."""
    from nasflow.registries import SPACES
    from nasflow.spaces.distill_cell import DistillCellSpace

    class UnregisteredSpace(DistillCellSpace):
        name = "unregistered_test_space"
        default_rule = "topk_per_node"

    assert "unregistered_test_space" not in SPACES
    arch = ArchAlphas()
    UnregisteredSpace().supercell(arch, "x", 3)
    genotype = derive(arch)
    assert genotype.space == "unregistered_test_space" and genotype.meta["rule"] == "topk_per_node"

"""Derivation rules: alphas -> discrete edges, with every tie broken by a documented key.

No rule looks at an op's position in the candidate list: zero ops are recognised by their
:class:`~nasflow.core.ops.OpSpec` metadata, and ties between ops are broken by op *name*
(alphabetical), so permuting the candidate order (with the alphas) never changes a genotype.

* ``argmax_per_edge`` (RUAS): every edge keeps its strongest non-zero op.
* ``topk_per_node`` (DARTS, k=2): every inner node keeps its k strongest incoming edges,
  an edge's strength being its largest non-zero softmax probability; ties between edges go to
  the edge listed first in the cell graph. Each kept edge takes its strongest non-zero op.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Sequence

import torch

from nasflow.errors import GenotypeError, SpaceError
from nasflow.core.genotype import GenoEdge, Genotype
from nasflow.core.graph import CellGraph
from nasflow.core.ops import get_op
from nasflow.registries import DERIVE_RULES, SPACES

if TYPE_CHECKING:
    from nasflow.core.cell import ArchAlphas


def _nonzero(candidates: Sequence[str]) -> list[int]:
    return [i for i, name in enumerate(candidates) if not get_op(name).is_zero]


def _probabilities(alpha: torch.Tensor) -> torch.Tensor:
    """Row-wise softmax that is exactly invariant to permuting a row (sorted normaliser)."""
    a = alpha.detach().double()
    lse = torch.logsumexp(torch.sort(a, dim=-1).values, dim=-1, keepdim=True)
    return torch.exp(a - lse)


def _best_op(probs: torch.Tensor, candidates: Sequence[str], allowed: list[int]) -> tuple[float, str]:
    """(probability, op) of the strongest allowed op; ties -> alphabetically first name."""
    best = min(allowed, key=lambda i: (-float(probs[i]), candidates[i]))
    return float(probs[best]), candidates[best]


@DERIVE_RULES.register("argmax_per_edge")
class ArgmaxPerEdge:
    """Every edge keeps its strongest non-zero op (RUAS)."""

    def __call__(self, graph: CellGraph, alpha: torch.Tensor) -> tuple[GenoEdge, ...]:
        allowed = _nonzero(graph.candidates)
        if not allowed:
            raise SpaceError("argmax_per_edge needs at least one non-zero candidate op")
        probs = _probabilities(alpha)
        return tuple(GenoEdge(_best_op(probs[i], graph.candidates, allowed)[1], e.src, e.dst)
                     for i, e in enumerate(graph.edges))

    def sample(self, graph: CellGraph, rng: random.Random) -> tuple[GenoEdge, ...]:
        names = [graph.candidates[i] for i in _nonzero(graph.candidates)]
        return tuple(GenoEdge(rng.choice(names), e.src, e.dst) for e in graph.edges)


@DERIVE_RULES.register("topk_per_node")
class TopKPerNode:
    """Every node keeps its k strongest incoming edges, each with its best non-zero op (DARTS)."""

    def __init__(self, k: int = 2) -> None:
        if k < 1:
            raise SpaceError(f"topk_per_node needs k >= 1, got {k}")
        self.k = k

    def __call__(self, graph: CellGraph, alpha: torch.Tensor) -> tuple[GenoEdge, ...]:
        allowed = _nonzero(graph.candidates)
        if not allowed:
            raise SpaceError("topk_per_node needs at least one non-zero candidate op")
        probs = _probabilities(alpha)
        chosen: list[GenoEdge] = []
        for node in graph.nodes:
            scored = []
            for rank, row in enumerate(graph.incoming(node.name)):
                strength, op = _best_op(probs[row], graph.candidates, allowed)
                scored.append((-strength, rank, GenoEdge(op, graph.edges[row].src, node.name)))
            scored.sort(key=lambda t: (t[0], t[1]))
            chosen.extend(edge for _, _, edge in scored[: self.k])
        return tuple(chosen)

    def sample(self, graph: CellGraph, rng: random.Random) -> tuple[GenoEdge, ...]:
        names = [graph.candidates[i] for i in _nonzero(graph.candidates)]
        chosen: list[GenoEdge] = []
        for node in graph.nodes:
            rows = graph.incoming(node.name)
            for row in sorted(rng.sample(rows, min(self.k, len(rows)))):
                chosen.append(GenoEdge(rng.choice(names), graph.edges[row].src, node.name))
        return tuple(chosen)


def derive(arch: "ArchAlphas", rule: str | None = None, meta: dict | None = None) -> Genotype:
    """The genotype the alphas point to; ``rule`` defaults to the space's own rule."""
    spaces = {arch.space(label) for label in arch.labels}
    if not spaces:
        raise GenotypeError("the model has no architecture parameters to derive from")
    if len(spaces) > 1:
        raise GenotypeError(f"one genotype covers one space; labels use {sorted(spaces)}")
    space_name = spaces.pop()
    rule_name = rule or arch.default_rule(space_name) or SPACES.get(space_name).default_rule
    rule_fn = DERIVE_RULES.get(rule_name)()
    cells = {label: rule_fn(arch.graph(label), arch[label]) for label in arch.labels}
    return Genotype.from_cells(space_name, cells, {"rule": rule_name, **(meta or {})})


def onehot_alpha(graph: CellGraph, edges: Sequence[GenoEdge]) -> torch.Tensor:
    """Alphas ``[edges, ops]`` that select exactly ``edges``; dropped edges select the zero op."""
    from nasflow.core.graph import validate_edges

    validate_edges(graph, edges)
    alpha = torch.zeros(len(graph.edges), len(graph.candidates))
    chosen = {(e.src, e.dst): e.op for e in edges}
    zero_ops = [i for i, name in enumerate(graph.candidates) if get_op(name).is_zero]
    for row, spec in enumerate(graph.edges):
        op = chosen.get((spec.src, spec.dst))
        if op is not None:
            alpha[row, graph.candidates.index(op)] = 1.0
        elif zero_ops:
            alpha[row, zero_ops[0]] = 1.0
        else:
            raise GenotypeError(f"edge {spec.name} is dropped but the cell has no zero op to express that")
    return alpha

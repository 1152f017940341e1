"""Cell DAG descriptions: nodes, edges with candidate ops, and how the output is formed.

A :class:`CellGraph` is plain data. The generic :class:`nasflow.core.cell.Cell` evaluates it:
each inner node is the sum of its incoming edges, plus an optional residual node value,
then an optional activation; the cell output concatenates some nodes along channels and
passes them through a space-specific ``post`` module (e.g. a 1x1 fusion conv).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

import networkx as nx

from nasflow.errors import GenotypeError, SpaceError
from nasflow.core.genotype import GenoEdge


@dataclass(frozen=True)
class EdgeSpec:
    """One searchable edge ``src -> dst``; ``name`` is also its module name in a cell."""

    name: str
    src: str
    dst: str
    stride: int = 1


@dataclass(frozen=True)
class NodeSpec:
    """An inner node: ``act(sum(incoming edges) + value[residual])``."""

    name: str
    residual: str | None = None
    activate: bool = False


@dataclass(frozen=True)
class CellGraph:
    """A cell DAG. Every edge offers the same ``candidates`` (one alpha row per edge)."""

    inputs: tuple[str, ...]
    nodes: tuple[NodeSpec, ...]  # in evaluation order
    edges: tuple[EdgeSpec, ...]  # alpha row i belongs to edges[i]
    candidates: tuple[str, ...]
    output: tuple[str, ...]  # nodes concatenated (channel axis) into the cell output
    fixed_wiring: bool = True  # True: a genotype keeps every edge; False: it picks a subset
    output_label: str = "out"  # how pictures name the cell output
    display: Mapping[str, str] = field(default_factory=dict, compare=False)  # node -> label for pictures

    def __post_init__(self) -> None:
        names = list(self.inputs) + [n.name for n in self.nodes]
        if len(set(names)) != len(names):
            raise SpaceError(f"duplicate node names in cell graph: {names}")
        edge_names = [e.name for e in self.edges]
        if len(set(edge_names)) != len(edge_names):
            raise SpaceError(f"duplicate edge names in cell graph: {edge_names}")
        pairs = [(e.src, e.dst) for e in self.edges]
        if len(set(pairs)) != len(pairs):
            raise SpaceError("two edges join the same pair of nodes")
        if len(set(self.candidates)) != len(self.candidates) or not self.candidates:
            raise SpaceError(f"candidate ops must be distinct and non-empty, got {self.candidates}")
        order = {n: i for i, n in enumerate(names)}
        for e in self.edges:
            if e.src not in order or e.dst not in order or e.dst in self.inputs:
                raise SpaceError(f"edge {e.name} joins unknown or input nodes {e.src}->{e.dst}")
            if order[e.src] >= order[e.dst]:
                raise SpaceError(f"edge {e.name} goes backwards ({e.src}->{e.dst}); list nodes in order")
        for n in self.nodes:
            if n.residual is not None and order.get(n.residual, len(names)) >= order[n.name]:
                raise SpaceError(f"node {n.name} adds residual {n.residual}, which is not an earlier node")
        for o in self.output:
            if o not in order:
                raise SpaceError(f"output node {o} is not in the cell")

    # -- lookups --------------------------------------------------------------------------------
    @property
    def node_names(self) -> tuple[str, ...]:
        return self.inputs + tuple(n.name for n in self.nodes)

    def edge_index(self, src: str, dst: str) -> int:
        for i, e in enumerate(self.edges):
            if e.src == src and e.dst == dst:
                return i
        raise KeyError((src, dst))

    def incoming(self, node: str) -> list[int]:
        return [i for i, e in enumerate(self.edges) if e.dst == node]

    def label(self, node: str) -> str:
        return self.display.get(node, node)

    def to_networkx(self) -> nx.DiGraph:
        """The DAG with node roles and edge names/candidates as attributes."""
        g = nx.DiGraph()
        for name in self.inputs:
            g.add_node(name, role="input", label=self.label(name))
        for n in self.nodes:
            g.add_node(n.name, role="inner", residual=n.residual, activate=n.activate, label=self.label(n.name))
        for e in self.edges:
            g.add_edge(e.src, e.dst, name=e.name, stride=e.stride, candidates=self.candidates)
        return g


def validate_edges(graph: CellGraph, edges: Sequence[GenoEdge], where: str = "cell", space: str = "") -> None:
    """Raise :class:`GenotypeError` (naming the field) unless ``edges`` is a valid choice."""
    in_space = f" in space '{space}'" if space else ""
    seen: set[tuple[str, str]] = set()
    for i, e in enumerate(edges):
        try:
            graph.edge_index(e.src, e.dst)
        except KeyError:
            known = ", ".join(f"{x.src}->{x.dst}" for x in graph.edges)
            raise GenotypeError(f"{where}[{i}]: no edge {e.src}->{e.dst}{in_space} (edges: {known})") from None
        if (e.src, e.dst) in seen:
            raise GenotypeError(f"{where}[{i}]: edge {e.src}->{e.dst} appears twice")
        seen.add((e.src, e.dst))
        if e.op not in graph.candidates:
            raise GenotypeError(
                f"{where}[{i}].op: unknown op '{e.op}'{in_space} (candidates: {', '.join(graph.candidates)})"
            )
    if graph.fixed_wiring:
        missing = [f"{x.src}->{x.dst}" for x in graph.edges if (x.src, x.dst) not in seen]
        if missing:
            raise GenotypeError(f"{where}: every edge needs an op{in_space}; missing {', '.join(missing)}")
    fed = {e.dst for e in edges}
    for node in graph.nodes:
        if node.name not in fed and node.residual is None:
            raise GenotypeError(f"{where}: node {node.name} has no incoming edge")

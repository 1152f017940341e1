"""Search spaces: a cell graph, its candidate ops, and how to build its cells.

A new space is one subclass that says what its graph is (:meth:`CellSpace.graph`) and which
fixed modules surround the searched edges (:meth:`CellSpace.io_modules`), plus one
registration (an entry point in ``nasflow.spaces``, or ``SPACES.add``). Everything else -
supercells, compiled cells, genotype checks, random genotypes - comes from this base class.
"""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping, Sequence

import torch
from torch import nn

from nasflow.core.cell import ArchAlphas, Cell, SuperCell
from nasflow.errors import RegistryError, SpaceError
from nasflow.core.genotype import GenoEdge
from nasflow.core.graph import CellGraph, validate_edges
from nasflow.core.mixed import MixedOp, Relaxation
from nasflow.core.ops import OpSpec, get_op
from nasflow.registries import DERIVE_RULES


@dataclass
class CellIO:
    """The fixed modules around a cell's searched edges."""

    pre: dict[str, nn.Module] = field(default_factory=dict)  # per input node
    post: nn.Module | None = None  # applied to the concatenated output nodes
    activation: nn.Module | None = None  # applied at nodes with ``activate=True``


class CellSpace(ABC):
    """Base class of cell search spaces. ``cell_options`` are per-cell (e.g. ``reduction``)."""

    name: ClassVar[str] = ""
    default_candidates: ClassVar[tuple[str, ...]] = ()
    default_rule: ClassVar[str] = "argmax_per_edge"

    def __init__(self, candidates: Sequence[str] | None = None, affine: bool = True) -> None:
        self.candidates = tuple(candidates) if candidates is not None else self.default_candidates
        if not self.candidates:
            raise SpaceError(f"space '{self.name}' needs at least one candidate op")
        try:
            self.op_specs: tuple[OpSpec, ...] = tuple(get_op(c) for c in self.candidates)
        except RegistryError as exc:
            raise SpaceError(f"space '{self.name}': {exc}") from None
        self.affine = affine

    # -- what a subclass says ---------------------------------------------------------------------
    @abstractmethod
    def graph(self, **cell_options: Any) -> CellGraph:
        """The cell DAG (candidates = ``self.candidates``)."""

    @abstractmethod
    def io_modules(self, channels: int, **cell_options: Any) -> CellIO:
        """Fresh fixed modules (input preprocessing, output fusion, activation)."""

    # -- building ---------------------------------------------------------------------------------
    def supercell(
        self,
        arch: ArchAlphas,
        label: str,
        channels: int,
        relaxation: Relaxation | None = None,
        generator: torch.Generator | None = None,
        **cell_options: Any,
    ) -> SuperCell:
        """A searchable cell whose alpha is shared with every other cell of ``label``."""
        graph = self.graph(**cell_options)
        arch.ensure(label, graph, self.name, generator=generator, default_rule=self.default_rule)
        edges = {e.name: MixedOp(self.op_specs, channels, e.stride, self.affine) for e in graph.edges}
        io = self.io_modules(channels, **cell_options)
        return SuperCell(graph, edges, arch, label, io.pre, io.post, io.activation, relaxation)

    def cell(self, edges: Sequence[GenoEdge], channels: int, **cell_options: Any) -> Cell:
        """A plain cell for a genotype's edges, with fresh weights."""
        graph = self.graph(**cell_options)
        self.check_edges(edges, graph)
        modules = {}
        for e in edges:
            spec = graph.edges[graph.edge_index(e.src, e.dst)]
            modules[spec.name] = get_op(e.op).build(channels, spec.stride, self.affine)
        io = self.io_modules(channels, **cell_options)
        return Cell(graph, modules, io.pre, io.post, io.activation)

    # -- genotypes --------------------------------------------------------------------------------
    def check_edges(self, edges: Sequence[GenoEdge], graph: CellGraph, where: str = "cell") -> None:
        """Raise :class:`GenotypeError` unless ``edges`` is a valid choice in ``graph``."""
        validate_edges(graph, edges, where, self.name)

    def onehot_alpha(self, edges: Sequence[GenoEdge], **cell_options: Any) -> torch.Tensor:
        """Alphas that select exactly ``edges`` (dropped edges select the zero op)."""
        from nasflow.core.derive import onehot_alpha

        return onehot_alpha(self.graph(**cell_options), edges)

    def random_edges(self, rng: random.Random, rule: str | None = None, **cell_options: Any) -> tuple[GenoEdge, ...]:
        """A random valid choice of edges, of the shape ``rule`` derives."""
        return DERIVE_RULES.get(rule or self.default_rule)().sample(self.graph(**cell_options), rng)


def build_space(name: str, options: Mapping[str, Any] | None = None) -> CellSpace:
    """Instantiate a registered space by name (or ``module:Class``)."""
    from nasflow.registries import SPACES

    cls = SPACES.get(name)
    try:
        return cls(**dict(options or {}))
    except TypeError as exc:
        raise SpaceError(f"bad options for space '{name}': {exc}") from None

"""Cell modules: the generic graph evaluator, its searchable form, label-shared alphas, and the
helpers that find them in a model (used by the supernet and by compilation alike)."""

from __future__ import annotations

from typing import Callable, Mapping

import torch
from torch import nn

from nasflow.errors import SpaceError
from nasflow.core.graph import CellGraph
from nasflow.core.mixed import MixedOp, Relaxation, SoftmaxRelaxation

EdgeApply = Callable[[int, str, torch.Tensor], torch.Tensor]


def _shape_key(graph: CellGraph) -> tuple:
    return tuple((e.name, e.src, e.dst) for e in graph.edges), graph.candidates


class ArchAlphas(nn.Module):
    """The architecture parameters of a supernet, one ``[edges, ops]`` tensor per label.

    Every cell built with the same label reads the same tensor, so gradients from all of
    them accumulate in it (RUAS shares one alpha across the stages of a module).
    """

    def __init__(self) -> None:
        super().__init__()
        self.alphas = nn.ParameterDict()
        self._graphs: dict[str, CellGraph] = {}
        self._spaces: dict[str, str] = {}
        self._rules: dict[str, str] = {}  # space name -> its default derive rule (spaces named by path too)

    def ensure(
        self, label: str, graph: CellGraph, space: str, init_std: float = 1e-3, generator: torch.Generator | None = None,
        default_rule: str | None = None,
    ) -> nn.Parameter:
        """The alpha of ``label``, created (``init_std * N(0, 1)``, as DARTS) on first use."""
        if not label or "." in label:
            raise SpaceError(f"label must be a non-empty name without dots, got {label!r}")
        shape = (len(graph.edges), len(graph.candidates))
        if label in self.alphas:
            known = self._graphs[label]
            if _shape_key(known) != _shape_key(graph):
                raise SpaceError(f"label '{label}' is already used by a cell of another shape")
            if self._spaces[label] != space:
                raise SpaceError(f"label '{label}' is already used by space '{self._spaces[label]}'")
            return self.alphas[label]
        self.alphas[label] = nn.Parameter(init_std * torch.randn(shape, generator=generator))
        self._graphs[label] = graph
        self._spaces[label] = space
        if default_rule is not None:
            self._rules[space] = default_rule
        return self.alphas[label]

    def default_rule(self, space: str) -> str | None:
        """The derive rule the space that built these alphas asked for (None: look the space up)."""
        return self._rules.get(space)

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(self.alphas.keys())

    def graph(self, label: str) -> CellGraph:
        return self._graphs[label]

    def space(self, label: str) -> str:
        return self._spaces[label]

    def __getitem__(self, label: str) -> nn.Parameter:
        return self.alphas[label]

    def forward(self) -> None:  # pragma: no cover - a container, never called
        raise RuntimeError("ArchAlphas is a parameter container")


class Cell(nn.Module):
    """A discrete cell: evaluates a :class:`CellGraph` with one plain module per kept edge.

    Edges absent from ``edges`` are not computed (a DARTS genotype keeps 2 inputs per node).
    """

    def __init__(
        self,
        graph: CellGraph,
        edges: Mapping[str, nn.Module],
        pre: Mapping[str, nn.Module] | None = None,
        post: nn.Module | None = None,
        activation: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.graph = graph
        self.pre = nn.ModuleDict(dict(pre or {}))
        self.edges = nn.ModuleDict(dict(edges))
        self.post = post if post is not None else nn.Identity()
        self.act = activation
        unknown = set(self.edges) - {e.name for e in graph.edges}
        if unknown:
            raise SpaceError(f"cell has modules for unknown edges: {sorted(unknown)}")
        # Evaluation plan: per inner node, the (row, name, src) of its edges; fixed at build time.
        self._plan = [
            (node, [(i, graph.edges[i].name, graph.edges[i].src) for i in graph.incoming(node.name)])
            for node in graph.nodes
        ]

    def _run(self, inputs: tuple[torch.Tensor, ...], apply: EdgeApply) -> torch.Tensor:
        graph = self.graph
        if len(inputs) != len(graph.inputs):
            raise SpaceError(f"cell expects {len(graph.inputs)} input(s), got {len(inputs)}")
        values: dict[str, torch.Tensor] = {}
        for name, x in zip(graph.inputs, inputs):
            values[name] = self.pre[name](x) if name in self.pre else x
        for node, incoming in self._plan:
            acc: torch.Tensor | None = None
            for row, edge_name, src in incoming:
                if edge_name not in self.edges:
                    continue
                term = apply(row, edge_name, values[src])
                acc = term if acc is None else acc + term
            if node.residual is not None:
                acc = values[node.residual] if acc is None else acc + values[node.residual]
            if acc is None:
                raise SpaceError(f"node {node.name} has no incoming edge in this cell")
            values[node.name] = self.act(acc) if (node.activate and self.act is not None) else acc
        out = values[graph.output[0]] if len(graph.output) == 1 else torch.cat([values[o] for o in graph.output], 1)
        return self.post(out)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self._run(inputs, lambda row, name, x: self.edges[name](x))


class SuperCell(Cell):
    """A searchable cell: one :class:`MixedOp` per edge, weights from the label's alpha."""

    def __init__(
        self,
        graph: CellGraph,
        edges: Mapping[str, MixedOp],
        arch: ArchAlphas,
        label: str,
        pre: Mapping[str, nn.Module] | None = None,
        post: nn.Module | None = None,
        activation: nn.Module | None = None,
        relaxation: Relaxation | None = None,
    ) -> None:
        super().__init__(graph, edges, pre, post, activation)
        if label not in arch.alphas:
            raise SpaceError(f"label '{label}' has no alpha; call arch.ensure() first")
        # Kept out of the module tree: alphas are not this cell's weights.
        object.__setattr__(self, "_arch", arch)
        self.nas_label = label
        self.relaxation: Relaxation = relaxation or SoftmaxRelaxation()

    @property
    def alpha(self) -> torch.Tensor:
        return self._arch.alphas[self.nas_label]

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        relaxed = self.relaxation(self.alpha)
        weights, active = relaxed.weights, relaxed.active
        if active is None:
            return self._run(inputs, lambda row, name, x: self.edges[name](x, weights[row]))
        return self._run(inputs, lambda row, name, x: self.edges[name](x, weights[row], active[row]))


# -- finding cells and alphas in a model --------------------------------------------------------------
def tag(module: nn.Module, label: str) -> nn.Module:
    """Mark ``module``'s weights as belonging to ``label`` (for per-label optimizers)."""
    module.nas_label = label  # type: ignore[assignment]
    return module


def find_arch(model: nn.Module) -> ArchAlphas:
    found = [m for m in model.modules() if isinstance(m, ArchAlphas)]
    if len(found) != 1:
        raise SpaceError(f"a supernet must hold exactly one ArchAlphas module, found {len(found)}")
    return found[0]


def supercells(model: nn.Module, label: str | None = None) -> list[SuperCell]:
    return [m for m in model.modules() if isinstance(m, SuperCell) and (label is None or m.nas_label == label)]


class FanIn(nn.Module):
    """Feeds one tensor to every input of a cell (DARTS cells take two), so that a cell of any space
    runs as a one-input module (profiling, planted teachers)."""

    def __init__(self, cell: nn.Module) -> None:
        super().__init__()
        self.cell = cell

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cell(*([x] * len(self.cell.graph.inputs)))

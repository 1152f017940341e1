"""Compile a genotype into a plain network: no mixed op, no alpha, no dead branch."""

from __future__ import annotations

import copy
from typing import Any

from torch import nn

from nasflow.core.cell import ArchAlphas, Cell, SuperCell, find_arch, supercells, tag
from nasflow.errors import GenotypeError
from nasflow.core.genotype import Genotype
from nasflow.core.graph import validate_edges
from nasflow.core.space import CellSpace


def compile_cell(space: CellSpace, genotype: Genotype, label: str, channels: int, **cell_options: Any) -> Cell:
    """A fresh plain cell for ``genotype``'s ``label`` in ``space``."""
    if genotype.space != space.name:
        raise GenotypeError(f"genotype is for space '{genotype.space}', not '{space.name}'")
    return space.cell(genotype.edges(label), channels, **cell_options)


def _check_labels(genotype: Genotype, arch: ArchAlphas) -> None:
    spaces = {arch.space(label) for label in arch.labels}
    if spaces != {genotype.space}:
        raise GenotypeError(f"genotype is for space '{genotype.space}', the network uses {sorted(spaces)}")
    missing = set(arch.labels) - set(genotype.labels)
    extra = set(genotype.labels) - set(arch.labels)
    if missing or extra:
        raise GenotypeError(
            f"genotype labels {sorted(genotype.labels)} do not match the network's {sorted(arch.labels)}"
        )


def _freeze(cell: SuperCell, genotype: Genotype) -> Cell:
    """The plain cell that keeps ``cell``'s own modules for the chosen ops (same weights)."""
    edges = genotype.edges(cell.nas_label)
    graph = cell.graph
    validate_edges(graph, edges, f"cells.{cell.nas_label}", genotype.space)
    modules: dict[str, nn.Module] = {}
    for e in edges:
        spec = graph.edges[graph.edge_index(e.src, e.dst)]
        mixed = cell.edges[spec.name]
        modules[spec.name] = mixed.ops[mixed.op_names.index(e.op)]
    plain = Cell(graph, modules, dict(cell.pre.items()), cell.post, cell.act)
    return tag(plain, cell.nas_label)  # keeps per-label weight groups (e.g. train one module at a time)


def compile_model(supernet: nn.Module, genotype: Genotype) -> nn.Module:
    """A copy of ``supernet`` with every supercell replaced by its chosen plain cell.

    The chosen ops keep the supernet's weights, so the result equals the supernet evaluated
    with one-hot alphas; the alphas are dropped.
    """
    model = copy.deepcopy(supernet)
    arch = find_arch(model)
    _check_labels(genotype, arch)
    replacements = {id(c): _freeze(c, genotype) for c in supercells(model)}
    for parent in model.modules():
        for name, child in list(parent.named_children()):
            if id(child) in replacements:
                setattr(parent, name, replacements[id(child)])
            elif isinstance(child, ArchAlphas):
                setattr(parent, name, ArchAlphas())  # empty: the compiled network has no alpha
    return model

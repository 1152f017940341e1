"""Supernets: networks built from supercells, with architecture and weights kept apart.

Weights belong to a label when they sit under a module tagged with that label (every
:class:`~nasflow.core.cell.SuperCell` is tagged with its own; :func:`tag` tags anything else,
e.g. a stem conv). Alphas are never weights.
"""

from __future__ import annotations

from typing import Any, Iterator

import torch
from torch import nn

from nasflow.core.cell import ArchAlphas, find_arch, supercells, tag  # noqa: F401  (tag: importable from here too)
from nasflow.errors import SpaceError
from nasflow.core.genotype import Genotype
from nasflow.core.mixed import Relaxation


def _label_of(prefix: str, labels: dict[str, str]) -> str | None:
    """Label of the innermost tagged module containing parameter ``prefix``."""
    best: str | None = None
    best_len = -1
    for mod_name, label in labels.items():
        if (mod_name == "" or prefix.startswith(mod_name + ".")) and len(mod_name) > best_len:
            best, best_len = label, len(mod_name)
    return best


def named_weight_parameters(model: nn.Module, label: str | None = None) -> Iterator[tuple[str, nn.Parameter]]:
    """Non-architecture parameters; with ``label``, only those owned by that label."""
    arch_ids = {id(p) for m in model.modules() if isinstance(m, ArchAlphas) for p in m.parameters()}
    tagged = {name: m.nas_label for name, m in model.named_modules() if isinstance(getattr(m, "nas_label", None), str)}
    for name, p in model.named_parameters():
        if id(p) in arch_ids:
            continue
        if label is None or _label_of(name, tagged) == label:
            yield name, p


def weight_parameters(model: nn.Module, label: str | None = None) -> list[nn.Parameter]:
    return [p for _, p in named_weight_parameters(model, label)]


def arch_parameters(model: nn.Module, label: str | None = None) -> list[nn.Parameter]:
    arch = find_arch(model)
    if label is None:
        return list(arch.alphas.values())
    if label not in arch.alphas:
        raise SpaceError(f"no alpha labelled '{label}' (labels: {', '.join(arch.labels)})")
    return [arch.alphas[label]]


def set_relaxation(model: nn.Module, relaxation: Relaxation, label: str | None = None) -> None:
    for cell in supercells(model, label):
        cell.relaxation = relaxation


class Supernet(nn.Module):
    """Convenience base class: holds ``self.arch`` and exposes the helpers as methods."""

    def __init__(self) -> None:
        super().__init__()
        self.arch = ArchAlphas()

    @property
    def labels(self) -> tuple[str, ...]:
        return self.arch.labels

    def arch_parameters(self, label: str | None = None) -> list[nn.Parameter]:
        return arch_parameters(self, label)

    def weight_parameters(self, label: str | None = None) -> list[nn.Parameter]:
        return weight_parameters(self, label)

    def named_weight_parameters(self, label: str | None = None) -> Iterator[tuple[str, nn.Parameter]]:
        return named_weight_parameters(self, label)

    def set_relaxation(self, relaxation: Relaxation, label: str | None = None) -> None:
        set_relaxation(self, relaxation, label)

    def arch_probabilities(self) -> dict[str, torch.Tensor]:
        """Softmax of each label's alphas ``[edges, ops]``, detached, for logging."""
        return {label: torch.softmax(a.detach(), dim=-1) for label, a in self.arch.alphas.items()}

    def derive(self, rule: str | None = None) -> Genotype:
        from nasflow.core.derive import derive

        return derive(self.arch, rule)

    def compile_genotype(self, genotype: Genotype) -> nn.Module:
        """The plain network of ``genotype`` (:func:`nasflow.core.compile.compile_model`)."""
        from nasflow.core.compile import compile_model

        return compile_model(self, genotype)

    def compile(self, *args: Any, **kwargs: Any) -> None:
        """``nn.Module.compile`` (``torch.compile`` in place); a genotype is refused with the way to it.

        ``Supernet.compile(genotype)`` once built the plain network; that is now
        :meth:`compile_genotype` (or :func:`nasflow.core.compile.compile_model`), so that this
        name keeps torch's meaning.
        """
        if args and isinstance(args[0], Genotype):
            raise TypeError("Supernet.compile(genotype) is now supernet.compile_genotype(genotype) (or "
                            "nasflow.core.compile.compile_model(supernet, genotype)); .compile() is torch.compile")
        super().compile(*args, **kwargs)

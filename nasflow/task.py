"""The task plugin interface: what a task gives the engine (data, supernet, losses, metrics)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterable, Mapping

import torch
from torch import nn

from nasflow.core.genotype import Genotype
from nasflow.core.supernet import Supernet

Batch = Any
TermsFn = Callable[[nn.Module, Batch], Mapping[str, torch.Tensor]]


@dataclass(frozen=True)
class TrainPhase:
    """One phase of training the compiled network: which weights, under which loss."""

    name: str
    parameters: list[nn.Parameter]
    loss: TermsFn


@dataclass(frozen=True)
class GroupSpec:
    """One cooperating search group, as the task defines it.

    ``labels``: the alphas the group updates; ``weight_labels``: the weights it trains (None: all
    weights). ``loss``/``arch_loss`` default to the task's; an upstream group's arch loss may
    include downstream terms (RUAS: the IEM arch loss includes the NRM loss).
    """

    name: str
    labels: tuple[str, ...]
    weight_labels: tuple[str, ...] | None = None
    loss: TermsFn | None = None
    arch_loss: TermsFn | None = None
    every: int | None = None
    warmup: int | None = None


class Task(ABC):
    """Subclass, set ``Options`` to a config dataclass, and register under ``nasflow.tasks``.

    Loss methods return a dict of named scalar terms whose key ``"loss"`` is optimised; the
    other terms are logged.
    """

    name: ClassVar[str] = ""
    Options: ClassVar[type] = dict

    def __init__(self, options: Any, *, seed: int, device: torch.device) -> None:
        self.options = options
        self.seed = seed
        self.device = device

    @abstractmethod
    def build_supernet(self) -> Supernet:
        """A fresh supernet (weights initialised from torch's current RNG state)."""

    @abstractmethod
    def search_batches(self) -> tuple[Iterable[Batch], Iterable[Batch]]:
        """(weight batches, architecture batches) for one search epoch; re-iterable."""

    @abstractmethod
    def train_batches(self) -> Iterable[Batch]:
        """Batches for one epoch of training the compiled network."""

    @abstractmethod
    def loss(self, model: nn.Module, batch: Batch) -> Mapping[str, torch.Tensor]:
        """Training objective of the weights."""

    def arch_loss(self, model: nn.Module, batch: Batch) -> Mapping[str, torch.Tensor]:
        """Objective of the architecture (defaults to the weight loss on held-out batches)."""
        return self.loss(model, batch)

    def state_dict(self) -> dict[str, Any]:
        """RNG or sampler state that decides future batches (saved in checkpoints)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""

    def samples(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """A few named images (CHW or NCHW in [0, 1]) showing the model's output, for TensorBoard."""
        return {}

    def search_groups(self, model: Supernet) -> list[GroupSpec]:
        """Groups for the ``cooperative`` strategy, updated in this order (default: one)."""
        return [GroupSpec("all", model.labels)]

    @abstractmethod
    def evaluate(self, model: nn.Module, genotype: Genotype) -> dict[str, float]:
        """Held-out metrics of a trained compiled network."""

    def train_phases(self, model: nn.Module) -> list[TrainPhase]:
        """Phases of training the compiled network, run in order (default: everything jointly)."""
        return [TrainPhase("all", [p for p in model.parameters() if p.requires_grad], self.loss)]

    def named_genotypes(self) -> dict[str, Genotype]:
        """Genotypes a user can name instead of a file (``nasflow train CONFIG --genotype paper``)."""
        return {}

    def export(self, model: nn.Module, genotype: Genotype, run_dir: Path) -> None:
        """Task-specific files for the run folder after :meth:`evaluate` (tables, pictures, splits)."""

    # -- inference (tasks whose networks map images to images) -------------------------------------
    def predict(self, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
        """The model's output image for an NCHW batch in [0, 1], clamped to [0, 1].

        Tasks whose networks map images to images implement this; it is what ``nasflow enhance``
        and :func:`nasflow.load_model` call, on whole images or on tiles.
        """
        raise NotImplementedError(f"task '{self.name}' does not map images to images")

    def inference_network(self, model: nn.Module) -> nn.Module:
        """The network :meth:`predict` runs at inference (default: the compiled network itself).

        Tasks may return a faster module with the same function (fused, re-parameterised).
        """
        return model

    def halo(self, model: nn.Module) -> int:
        """How far an output pixel sees into the input (an upper bound), for exact tiling.

        The default bounds every module it can read (convolutions, pooling, cells); tasks with
        other spatial operations in their forward pass add those.
        """
        from nasflow.infer.tiling import receptive_halo

        return receptive_halo(model)

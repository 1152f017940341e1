"""The task plugin interface: what a task gives the engine (data, supernet, losses, metrics)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar, Iterable, Mapping

import torch
from torch import nn

from nasflow.genotype import Genotype
from nasflow.supernet import Supernet

Batch = Any


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

    @abstractmethod
    def evaluate(self, model: nn.Module, genotype: Genotype) -> dict[str, float]:
        """Held-out metrics of a trained compiled network."""

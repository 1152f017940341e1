"""The task plugin interface: what a task gives the engine (data, supernet, losses, metrics).

Serving images is not part of it: tasks whose networks map images to images also implement
:class:`nasflow.infer.image_task.ImageToImage` (``predict``, optionally ``inference_network`` and ``halo``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterable, Mapping

import torch
from torch import nn

from nasflow.config import from_dict, import_paths_in
from nasflow.core.genotype import Genotype
from nasflow.core.supernet import Supernet
from nasflow.errors import ConfigError
from nasflow.registries import TASKS, resolve
from nasflow.schema import RunConfig

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
    def search_batches(self, epoch: int) -> tuple[Iterable[Batch], Iterable[Batch]]:
        """(weight batches, architecture batches) of search epoch ``epoch``; re-iterable.

        A pure function of (``self.seed``, ``epoch``): it changes no state and draws nothing
        from the global RNG (build a ``torch.Generator`` from the seed and the epoch), so a
        resumed run rebuilds an epoch's batches from the epoch number alone.
        """

    @abstractmethod
    def train_batches(self, epoch: int) -> Iterable[Batch]:
        """Batches of training epoch ``epoch`` of the compiled network (counted over all phases);
        a pure function of (``self.seed``, ``epoch``), like :meth:`search_batches`."""

    @abstractmethod
    def loss(self, model: nn.Module, batch: Batch) -> Mapping[str, torch.Tensor]:
        """Training objective of the weights."""

    def arch_loss(self, model: nn.Module, batch: Batch) -> Mapping[str, torch.Tensor]:
        """Objective of the architecture (defaults to the weight loss on held-out batches)."""
        return self.loss(model, batch)

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


def task_class(name: str) -> type[Task]:
    """The task class a config's ``task`` names (a registered name or ``module:attr``)."""
    cls = resolve(TASKS, name, "task")
    if not (isinstance(cls, type) and issubclass(cls, Task)):
        raise ConfigError(f"task: {name!r} is not a task (a subclass of nasflow.task.Task)")
    return cls


def build_task(cfg: RunConfig, device: torch.device, *, trusted: bool = False) -> Task:
    """The config's task, built on ``device``.

    Task options may name plugins as ``module:attr`` import paths (a space, candidate ops) only
    when ``trusted``: the runner passes it for the user's own config. Without it (the default,
    e.g. for the config inside a model file) such a name is refused, so that loading a file never
    imports code.
    """
    if not trusted:
        paths = import_paths_in(cfg.task_options)
        if paths or ":" in cfg.task:
            named = (paths or [cfg.task])[0]
            raise ConfigError(f"task_options: {named!r} is an import path; only a config you run may name code to "
                              "import (plugins in files must be registered, e.g. as entry points)")
    cls = task_class(cfg.task)
    options = from_dict(cls.Options, cfg.task_options, "task_options") if cls.Options is not dict else cfg.task_options
    return cls(options, seed=cfg.seed, device=device)

"""The strategy interface the runner drives."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from torch import nn

from nasflow.schema import SearchConfig
from nasflow.task import Batch, Task


class Strategy(ABC):
    """Updates a supernet's weights and alphas, one step at a time.

    Lifecycle: ``before_epoch(e)``; per step ``before_step(t)``, ``step(weight_batch,
    arch_batch)``, ``after_step(t, logs)``; then ``after_epoch(e)``. ``state_dict`` holds
    everything needed to resume (optimizers, schedulers, counters, temperatures, RNG states).
    """

    def __init__(self, model: nn.Module, task: Task, config: SearchConfig, steps_per_epoch: int) -> None:
        self.model = model
        self.task = task
        self.config = config
        self.steps_per_epoch = steps_per_epoch

    def before_epoch(self, epoch: int) -> None:
        """Called before the first step of ``epoch``."""

    def after_epoch(self, epoch: int) -> None:
        """Called after the last step of ``epoch``."""

    def epoch_logs(self) -> dict[str, float]:
        """Scalars of the epoch just ended (after :meth:`after_epoch`), logged at its last step: what a
        strategy decides once per epoch rather than per step (random search's chosen sample)."""
        return {}

    def before_step(self, step: int) -> None:
        """Called before each step (``step`` counts from 0 over the whole search)."""

    def after_step(self, step: int, logs: dict[str, float]) -> None:
        """Called after each step with its logs."""

    @abstractmethod
    def step(self, weight_batch: Batch, arch_batch: Batch) -> dict[str, float]:
        """One search step; returns scalars to log."""

    @abstractmethod
    def state_dict(self) -> dict[str, Any]: ...

    @abstractmethod
    def load_state_dict(self, state: dict[str, Any]) -> None: ...

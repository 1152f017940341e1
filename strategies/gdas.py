"""GDAS (Dong & Yang 2019): one sampled op per edge, Gumbel straight-through gradients.

The temperature falls linearly from ``tau_max`` to ``tau_min`` over the search epochs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import nn

from nasflow.search.bilevel import BilevelStrategy, strategy_options
from nasflow.core.mixed import GumbelStraightThrough, SoftmaxRelaxation
from nasflow.schema import SearchConfig
from nasflow.core.supernet import set_relaxation
from nasflow.task import Task


@dataclass
class GdasOptions:
    tau_max: float = field(default=10.0, metadata={"min": 1e-6})
    tau_min: float = field(default=0.1, metadata={"min": 1e-6})


class GdasStrategy(BilevelStrategy):
    """Gumbel-softmax straight-through sampling, temperature annealed linearly."""

    def __init__(self, model: nn.Module, task: Task, config: SearchConfig, steps_per_epoch: int) -> None:
        self.options: GdasOptions = strategy_options(GdasOptions, config)
        self.relaxation = GumbelStraightThrough(tau=self.options.tau_max)
        set_relaxation(model, self.relaxation)
        super().__init__(model, task, config, steps_per_epoch)

    def tau_at(self, epoch: int) -> float:
        o, n = self.options, self.config.epochs
        return o.tau_max if n <= 1 else o.tau_max - (o.tau_max - o.tau_min) * epoch / (n - 1)

    def before_epoch(self, epoch: int) -> None:
        self.relaxation.tau = self.tau_at(epoch)

    def after_epoch(self, epoch: int) -> None:
        if epoch == self.config.epochs - 1:
            set_relaxation(self.model, SoftmaxRelaxation())  # the searched model evaluates deterministically

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "tau": self.relaxation.tau}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.relaxation.tau = float(state["tau"])

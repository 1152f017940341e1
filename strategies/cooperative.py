"""Cooperative min-min search (RUAS, Liu et al. 2021): the task's groups, updated in order.

Each group has its own alphas, weights, optimizers, hypergradient and period. An upstream
group's arch loss may include downstream losses (RUAS: the IEM arch objective includes the NRM
loss), and a group's virtual step moves only its own weights while every other module keeps
its current weights (the persistent virtual copy is refreshed from the whole model each step).
"""

from __future__ import annotations

from nasflow.search.bilevel import BilevelStrategy
from nasflow.core.supernet import find_arch
from nasflow.task import GroupSpec


class CooperativeStrategy(BilevelStrategy):
    """Several bilevel groups from the task, updated in order (RUAS cooperative search)."""

    def group_specs(self) -> list[GroupSpec]:
        specs = self.task.search_groups(self.model)  # type: ignore[arg-type]
        if not specs:
            return [GroupSpec("all", find_arch(self.model).labels)]
        return specs

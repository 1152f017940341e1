"""Separate search: each of the task's groups searched alone, one after the other, on its own loss.

The baseline the RUAS paper's cooperative search is measured against (Liu et al. 2021, sec. 4.4):
the first group (RUAS: the IEM) is searched with its own loss as both weight and architecture
objective while every other group stands still; then the next group (the NRM) is searched on top
of the frozen first one, and so on. The configured epochs are split evenly between the groups in
order, and each group's cosine schedule spans its own phase, so a benchmark that wants every module
to get ``E`` epochs of its own runs ``E * groups`` epochs.

Compared with ``cooperative``, the only differences are the order (phases instead of interleaved
steps) and the architecture loss (no downstream terms). A frozen group keeps its alphas soft:
the later groups see the supernet as the earlier phase left it.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from nasflow.search.bilevel import BilevelStrategy, Group, cosine_factor
from nasflow.errors import ConfigError
from nasflow.schema import SearchConfig
from nasflow.core.supernet import find_arch
from nasflow.task import Batch, GroupSpec, Task


class SeparateStrategy(BilevelStrategy):
    """The task's search groups, each alone for its share of the epochs, each on its own loss."""

    def __init__(self, model: torch.nn.Module, task: Task, config: SearchConfig, steps_per_epoch: int) -> None:
        super().__init__(model, task, config, steps_per_epoch)
        n = len(self.groups)
        if config.epochs and config.epochs < n:
            raise ConfigError(f"search.epochs: separate search of {n} groups needs at least {n} epochs "
                              f"(one phase each), got {config.epochs}")
        self.phase_epochs = [self.phase_range(k) for k in range(n)]
        self.active = 0
        for g, (first, stop) in zip(self.groups, self.phase_epochs):
            self._phase_schedule(g, (stop - first) * steps_per_epoch)

    def group_specs(self) -> list[GroupSpec]:
        specs = self.task.search_groups(self.model)  # type: ignore[arg-type]
        if not specs:
            return [GroupSpec("all", find_arch(self.model).labels)]
        # each group judged by its own loss: no downstream (cooperative) terms in its arch loss
        return [replace(s, arch_loss=s.loss) for s in specs]

    def phase_range(self, k: int) -> tuple[int, int]:
        """Epochs ``[first, stop)`` of group ``k``'s phase."""
        n, epochs = len(self.groups), self.config.epochs
        return k * epochs // n, (k + 1) * epochs // n

    def _phase_schedule(self, g: Group, total: int) -> None:
        """Replaces the group's whole-search cosine schedule by one over its phase (the optimizer's
        ``initial_lr`` is the configured lr, set by the schedule being replaced)."""
        w = self.config.groups.get(g.spec.name)
        w_cfg = w.weight_optimizer if w and w.weight_optimizer else self.config.weight_optimizer
        steps = max(1, total)
        g.w_sched = torch.optim.lr_scheduler.LambdaLR(
            g.w_opt, lambda t: cosine_factor(t, steps, w_cfg.lr, w_cfg.lr_min))

    def before_epoch(self, epoch: int) -> None:
        self.active = next((k for k, (first, stop) in enumerate(self.phase_epochs) if first <= epoch < stop),
                           len(self.groups) - 1)

    def step(self, weight_batch: Batch, arch_batch: Batch) -> dict[str, float]:
        self.model.train()
        g = self.groups[self.active]
        # a group's own step count decides its period, counted from the start of its phase
        local = self.step_count - self.phase_epochs[self.active][0] * self.steps_per_epoch
        if g.due(local):
            self.arch_step(g, weight_batch, arch_batch)
        terms = self.weight_step(g, weight_batch)
        tag = f"{g.spec.name}/" if len(self.groups) > 1 else ""
        logs = {f"train/{tag}{k}": float(v.detach()) for k, v in terms.items()}
        logs.update(g.cost_logs or {})
        logs[f"lr/{tag}weights"] = g.w_opt.param_groups[0]["lr"]
        self.step_count += 1
        return logs

    def state_dict(self) -> dict:
        return {**super().state_dict(), "active": self.active}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.active = int(state.get("active", 0))

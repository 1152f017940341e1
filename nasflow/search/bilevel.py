"""Bilevel search over groups: each group owns some alphas and some weights.

Per step and per group, in order: an architecture step (when due: every ``every`` steps after
``warmup`` steps) with the group's hypergradient on an architecture batch, then a weight step
on a weight batch. One group over everything is DARTS; several groups whose upstream arch
loss includes downstream losses is the RUAS cooperative min-min.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

import torch
from torch import nn

from nasflow.config import from_dict
from nasflow.search.cost import build_cost
from nasflow.search.distributed import average_
from nasflow.errors import ConfigError
from nasflow.search.hypergrad import Unroll
from nasflow.registries import HYPERGRADIENTS
from nasflow.schema import AdamConfig, SearchConfig, SGDConfig
from nasflow.search.strategy import Strategy
from nasflow.core.supernet import find_arch, named_weight_parameters
from nasflow.task import Batch, GroupSpec, Task, TermsFn


@dataclass
class Group:
    """A group's runtime state: its parameters, optimizers, schedule and unroll context."""

    spec: GroupSpec
    weight_names: list[str]
    alpha_names: list[str]
    loss: TermsFn
    arch_loss: TermsFn
    hypergradient: str
    every: int
    warmup: int
    w_opt: torch.optim.SGD
    a_opt: torch.optim.Adam
    w_sched: torch.optim.lr_scheduler.LambdaLR
    unroll: Unroll
    arch_steps: int = 0
    cost_logs: dict[str, float] | None = None  # the last arch step's cost terms (search.cost)

    def due(self, step: int) -> bool:
        return step >= self.warmup and (step - self.warmup) % self.every == 0


def cosine_factor(t: int, total: int, lr: float, lr_min: float) -> float:
    """Multiplier of the base lr for cosine annealing from ``lr`` to ``lr_min`` over ``total`` steps."""
    if lr <= 0:
        return 1.0
    return (lr_min + 0.5 * (lr - lr_min) * (1 + math.cos(math.pi * min(t, total) / total))) / lr


def _scalar(fn: TermsFn):
    return lambda model, batch: fn(model, batch)["loss"]


class BilevelStrategy(Strategy):
    """Groups updated in order; subclasses choose the groups (and maybe a relaxation)."""

    def __init__(self, model: nn.Module, task: Task, config: SearchConfig, steps_per_epoch: int) -> None:
        super().__init__(model, task, config, steps_per_epoch)
        self.step_count = 0
        # Averages, in place, the gradients about to be applied over the ranks of a torchrun job
        # (nasflow.search.distributed); does nothing in a single-process run.
        self.sync = average_
        specs = self.group_specs()
        self.groups = [self._build_group(spec) for spec in specs]
        self._check_partition()
        self.cost = build_cost(model, config.cost)  # None when search.cost.weight is 0

    # -- which groups -----------------------------------------------------------------------------
    def group_specs(self) -> list[GroupSpec]:
        """One group over every label and weight (DARTS)."""
        return [GroupSpec("all", find_arch(self.model).labels)]

    def _build_group(self, spec: GroupSpec) -> Group:
        cfg = self.config
        over = cfg.groups.get(spec.name)
        arch = find_arch(self.model)
        names = {id(p): n for n, p in self.model.named_parameters()}
        missing = [label for label in spec.labels if label not in arch.alphas]
        if missing or not spec.labels:
            raise ConfigError(f"search group '{spec.name}': unknown label(s) {missing} (labels: {list(arch.labels)})")
        alpha_names = [names[id(arch.alphas[label])] for label in spec.labels]
        if spec.weight_labels is None:
            weight_names = [n for n, _ in named_weight_parameters(self.model)]
        else:
            weight_names = [n for label in spec.weight_labels for n, _ in named_weight_parameters(self.model, label)]
        params = dict(self.model.named_parameters())
        w_cfg: SGDConfig = (over.weight_optimizer if over and over.weight_optimizer else cfg.weight_optimizer)
        a_cfg: AdamConfig = (over.arch_optimizer if over and over.arch_optimizer else cfg.arch_optimizer)
        w_opt = torch.optim.SGD([params[n] for n in weight_names], lr=w_cfg.lr, momentum=w_cfg.momentum,
                                weight_decay=w_cfg.weight_decay)
        a_opt = torch.optim.Adam([params[n] for n in alpha_names], lr=a_cfg.lr, betas=a_cfg.betas,
                                 weight_decay=a_cfg.weight_decay)
        total = max(1, cfg.epochs * self.steps_per_epoch)
        sched = torch.optim.lr_scheduler.LambdaLR(w_opt, lambda t: cosine_factor(t, total, w_cfg.lr, w_cfg.lr_min))
        hyper = (over.hypergradient if over and over.hypergradient else cfg.hypergradient)
        HYPERGRADIENTS.get(hyper)  # fail early on a typo
        loss = spec.loss or self.task.loss
        arch_loss = spec.arch_loss or self.task.arch_loss
        # the virtual step clips the gradient norm as weight_step does (grad_clip 0: no clipping)
        if hyper == "first_order":  # needs no virtual copy
            unroll = Unroll(self.model, self.model, weight_names, alpha_names, w_opt, _scalar(loss), _scalar(arch_loss),
                            max_grad_norm=cfg.grad_clip)
        else:
            unroll = Unroll.create(self.model, weight_names, alpha_names, w_opt, _scalar(loss), _scalar(arch_loss),
                                   max_grad_norm=cfg.grad_clip)
        every = over.every if over and over.every else (spec.every or cfg.every)
        warmup = over.warmup if over and over.warmup is not None else (spec.warmup if spec.warmup is not None
                                                                       else cfg.warmup)
        return Group(spec, weight_names, alpha_names, loss, arch_loss, hyper, every, warmup, w_opt, a_opt, sched, unroll)

    def _check_partition(self) -> None:
        unknown = set(self.config.groups) - {g.spec.name for g in self.groups}
        if unknown:
            names = ", ".join(g.spec.name for g in self.groups)
            raise ConfigError(f"search.groups: unknown group(s) {sorted(unknown)} (this search has: {names})")
        seen: dict[str, str] = {}
        for g in self.groups:
            for n in g.alpha_names + g.weight_names:
                if n in seen:
                    raise ConfigError(f"parameter {n} belongs to groups '{seen[n]}' and '{g.spec.name}'")
                seen[n] = g.spec.name
        orphans = [n for n, _ in named_weight_parameters(self.model) if n not in seen]
        if orphans:
            raise ConfigError(f"weights belong to no search group (tag them with a label): {orphans[:5]}")

    # -- steps ------------------------------------------------------------------------------------
    def arch_step(self, g: Group, weight_batch: Batch, arch_batch: Batch) -> None:
        grads = self.sync(list(HYPERGRADIENTS.get(g.hypergradient)(g.unroll, weight_batch, arch_batch)))
        if self.cost is not None:  # depends on the alphas only: its gradient adds to the hypergradient as is
            term, g.cost_logs = self.cost.penalty(g.spec.name, g.spec.labels)
            if term.requires_grad:
                extra = torch.autograd.grad(term, g.unroll.alphas(), allow_unused=True)
                grads = [a if b is None else a + b for a, b in zip(grads, extra)]
        g.a_opt.zero_grad(set_to_none=True)
        for p, grad in zip(g.unroll.alphas(), grads):
            p.grad = grad.detach().clone()
        g.a_opt.step()
        g.a_opt.zero_grad(set_to_none=True)
        g.arch_steps += 1

    def weight_step(self, g: Group, weight_batch: Batch) -> Mapping[str, torch.Tensor]:
        weights = g.unroll.weights()
        terms = g.loss(self.model, weight_batch)
        grads = torch.autograd.grad(terms["loss"], weights, allow_unused=True)
        filled = [torch.zeros_like(p) if grad is None else grad for p, grad in zip(weights, grads)]
        for p, grad in zip(weights, self.sync(filled)):  # zero-filled, as the virtual step assumes
            p.grad = grad
        if self.config.grad_clip > 0:
            nn.utils.clip_grad_norm_(weights, self.config.grad_clip)
        g.w_opt.step()
        g.w_opt.zero_grad(set_to_none=True)
        g.w_sched.step()
        return terms

    def step(self, weight_batch: Batch, arch_batch: Batch) -> dict[str, float]:
        self.model.train()
        logs: dict[str, float] = {}
        prefix = len(self.groups) > 1
        for g in self.groups:
            tag = f"{g.spec.name}/" if prefix else ""
            if g.due(self.step_count):
                self.arch_step(g, weight_batch, arch_batch)
            terms = self.weight_step(g, weight_batch)
            logs.update({f"train/{tag}{k}": float(v.detach()) for k, v in terms.items()})
            logs.update(g.cost_logs or {})
            logs[f"lr/{tag}weights"] = g.w_opt.param_groups[0]["lr"]
        self.step_count += 1
        return logs

    # -- checkpoints ------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "step_count": self.step_count,
            "cost_lambda": dict(self.cost.lam) if self.cost is not None else {},
            "groups": {
                g.spec.name: {"w_opt": g.w_opt.state_dict(), "a_opt": g.a_opt.state_dict(),
                              "w_sched": g.w_sched.state_dict(), "arch_steps": g.arch_steps}
                for g in self.groups
            },
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step_count = int(state["step_count"])
        if self.cost is not None:
            self.cost.lam = {k: float(v) for k, v in state.get("cost_lambda", {}).items()}
        for g in self.groups:
            s = state["groups"][g.spec.name]
            g.w_opt.load_state_dict(s["w_opt"])
            g.a_opt.load_state_dict(s["a_opt"])
            g.w_sched.load_state_dict(s["w_sched"])
            g.arch_steps = int(s["arch_steps"])


def strategy_options(cls: type, config: SearchConfig) -> Any:
    """Validate ``search.strategy_options`` against a strategy's ``Options`` dataclass."""
    return from_dict(cls, config.strategy_options, "search.strategy_options")

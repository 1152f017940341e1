"""DARTS bilevel search (Liu et al. 2019): alternate an architecture step and a weight step.

Architecture step: Adam on grad_a L_val (first order, DARTS eq. 6 with xi = 0).
Weight step: SGD with momentum on grad_w L_train, cosine-annealed learning rate.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from nasflow.errors import ConfigError
from nasflow.schema import SearchConfig
from nasflow.strategy import Strategy
from nasflow.supernet import arch_parameters, weight_parameters
from nasflow.task import Batch, Task


class DartsStrategy(Strategy):
    """Bilevel DARTS on every label at once (first-order hypergradient)."""

    def __init__(self, model: nn.Module, task: Task, config: SearchConfig, steps_per_epoch: int) -> None:
        super().__init__(model, task, config, steps_per_epoch)
        if config.hypergradient != "first_order":
            raise ConfigError(
                f"search.hypergradient: '{config.hypergradient}' is not available in this version (known: first_order)"
            )
        w, a = config.weight_optimizer, config.arch_optimizer
        self.weights = weight_parameters(model)
        self.alphas = arch_parameters(model)
        self.w_opt = torch.optim.SGD(self.weights, lr=w.lr, momentum=w.momentum, weight_decay=w.weight_decay)
        self.a_opt = torch.optim.Adam(self.alphas, lr=a.lr, betas=a.betas, weight_decay=a.weight_decay)
        total = max(1, config.epochs * steps_per_epoch)
        self.w_sched = torch.optim.lr_scheduler.LambdaLR(
            self.w_opt, lambda t: _cosine(t, total, w.lr, w.lr_min) / w.lr if w.lr > 0 else 1.0
        )

    def step(self, weight_batch: Batch, arch_batch: Batch) -> dict[str, float]:
        self.model.train()
        self.a_opt.zero_grad(set_to_none=True)
        arch_terms = self.task.arch_loss(self.model, arch_batch)
        grads = torch.autograd.grad(arch_terms["loss"], self.alphas, allow_unused=True)
        for p, g in zip(self.alphas, grads):
            p.grad = torch.zeros_like(p) if g is None else g
        self.a_opt.step()

        self.w_opt.zero_grad(set_to_none=True)
        terms = self.task.loss(self.model, weight_batch)
        grads = torch.autograd.grad(terms["loss"], self.weights, allow_unused=True)
        for p, g in zip(self.weights, grads):
            p.grad = None if g is None else g
        if self.config.grad_clip > 0:
            nn.utils.clip_grad_norm_(self.weights, self.config.grad_clip)
        self.w_opt.step()
        self.w_sched.step()
        logs = {f"train/{k}": float(v.detach()) for k, v in terms.items()}
        logs.update({f"arch/{k}": float(v.detach()) for k, v in arch_terms.items()})
        logs["lr/weights"] = self.w_opt.param_groups[0]["lr"]
        return logs

    def state_dict(self) -> dict[str, Any]:
        return {"w_opt": self.w_opt.state_dict(), "a_opt": self.a_opt.state_dict(), "w_sched": self.w_sched.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.w_opt.load_state_dict(state["w_opt"])
        self.a_opt.load_state_dict(state["a_opt"])
        self.w_sched.load_state_dict(state["w_sched"])


def _cosine(t: int, total: int, lr: float, lr_min: float) -> float:
    return lr_min + 0.5 * (lr - lr_min) * (1 + math.cos(math.pi * min(t, total) / total))

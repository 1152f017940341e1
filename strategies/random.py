"""Random search with weight sharing (Li & Talwalkar 2019): the honest NAS baseline.

Every step trains the shared weights under one uniformly sampled architecture per label. At the
end, ``eval_samples`` sampled architectures are scored on the architecture batches with the
shared weights and the best one is written into the alphas (one-hot), so deriving the genotype
returns it.

With ``search.cost`` (a penalty, ``weight > 0``) a sample's score is its arch loss plus the same
term the bilevel strategies add to their arch objective (:mod:`nasflow.search.cost`): ``weight *
cost / cost_max``, where, with the alphas one-hot and the relaxation a hard argmax, the expected cost
is exactly the sampled genotype's. A latency target (``target_ms``) is refused: its Lagrange
multiplier rises by dual ascent over arch steps, and random search takes none.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from nasflow.search.bilevel import cosine_factor, strategy_options
from nasflow.core.derive import onehot_alpha
from nasflow.errors import ConfigError
from nasflow.search.cost import build_cost
from nasflow.search.distributed import average_
from nasflow.core.genotype import GenoEdge
from nasflow.core.mixed import HardArgmax
from nasflow.registries import DERIVE_RULES, SPACES
from nasflow.schema import SearchConfig
from nasflow.search.strategy import Strategy
from nasflow.core.supernet import find_arch, set_relaxation, weight_parameters
from nasflow.task import Batch, Task


@dataclass
class RandomOptions:
    eval_samples: int = field(default=20, metadata={"min": 1})


class RandomStrategy(Strategy):
    """Random architectures, shared weights; the best sampled one wins at the end."""

    def __init__(self, model: nn.Module, task: Task, config: SearchConfig, steps_per_epoch: int) -> None:
        super().__init__(model, task, config, steps_per_epoch)
        self.options: RandomOptions = strategy_options(RandomOptions, config)
        self.arch = find_arch(model)
        self.rng = random.Random(task.seed)
        self.rules = {
            label: DERIVE_RULES.get(config.derive_rule or SPACES.get(self.arch.space(label)).default_rule)()
            for label in self.arch.labels
        }
        w = config.weight_optimizer
        self.weights = weight_parameters(model)
        self.w_opt = torch.optim.SGD(self.weights, lr=w.lr, momentum=w.momentum, weight_decay=w.weight_decay)
        total = max(1, config.epochs * steps_per_epoch)
        self.w_sched = torch.optim.lr_scheduler.LambdaLR(self.w_opt, lambda t: cosine_factor(t, total, w.lr, w.lr_min))
        self.scores: list[float] = []
        # Averages, in place, the weight gradients over the ranks of a torchrun job
        # (nasflow.search.distributed); does nothing in a single-process run.
        self.sync = average_
        set_relaxation(model, HardArgmax())
        if config.cost.weight > 0 and config.cost.target_ms is not None:
            raise ConfigError("search.cost.target_ms: random search takes no arch steps, so no Lagrange multiplier "
                              "can rise; use search.cost.weight alone (a penalty on each sample's normalised cost)")
        self.cost = build_cost(model, config.cost)  # None when search.cost.weight is 0
        self.cost_terms: list[float] = []  # the cost part of each score (0 without search.cost)

    def sample(self) -> dict[str, tuple[GenoEdge, ...]]:
        return {label: rule.sample(self.arch.graph(label), self.rng) for label, rule in self.rules.items()}

    @torch.no_grad()
    def use(self, cells: dict[str, tuple[GenoEdge, ...]]) -> None:
        for label, edges in cells.items():
            self.arch[label].copy_(onehot_alpha(self.arch.graph(label), edges))

    def step(self, weight_batch: Batch, arch_batch: Batch) -> dict[str, float]:
        self.model.train()
        self.use(self.sample())
        terms = self.task.loss(self.model, weight_batch)
        grads = list(torch.autograd.grad(terms["loss"], self.weights, allow_unused=True))
        # Unused weights (ops off the sampled architecture) keep grad None, so SGD skips them; every
        # rank samples the same architecture (same rng seed), so all ranks agree on which are None.
        used = [i for i, g in enumerate(grads) if g is not None]
        for i, g in zip(used, self.sync([grads[i] for i in used])):
            grads[i] = g
        for p, g in zip(self.weights, grads):
            p.grad = g
        if self.config.grad_clip > 0:
            nn.utils.clip_grad_norm_([p for p in self.weights if p.grad is not None], self.config.grad_clip)
        self.w_opt.step()
        self.w_opt.zero_grad(set_to_none=True)
        self.w_sched.step()
        return {**{f"train/{k}": float(v.detach()) for k, v in terms.items()},
                "lr/weights": self.w_opt.param_groups[0]["lr"]}

    @torch.no_grad()
    def after_epoch(self, epoch: int) -> None:
        if epoch != self.config.epochs - 1:
            return
        self.model.eval()
        _, arch_batches = self.task.search_batches(epoch)  # this epoch's: batches are a pure function of it
        batches = list(arch_batches)
        best: tuple[float, dict[str, tuple[GenoEdge, ...]]] | None = None
        self.scores, self.cost_terms = [], []
        for _ in range(self.options.eval_samples):
            cells = self.sample()
            self.use(cells)
            score = sum(float(self.task.arch_loss(self.model, b)["loss"]) for b in batches) / max(1, len(batches))
            cost = 0.0
            if self.cost is not None:  # the sampled genotype's own cost: the alphas are one-hot, argmax relaxed
                cost = float(self.cost.penalty("random", self.arch.labels)[0])
            self.cost_terms.append(cost)
            score += cost
            self.scores.append(score)
            if best is None or score < best[0]:
                best = (score, cells)
        assert best is not None
        self.use(best[1])

    def epoch_logs(self) -> dict[str, float]:
        """After the last epoch: the chosen sample's score and cost term, and the cost terms' spread
        over the samples (``cost/random/...``, with ``search.cost``)."""
        if not self.scores:
            return {}
        chosen = self.scores.index(min(self.scores))  # the first best sample: the one after_epoch kept
        logs = {"search/random/best_score": self.scores[chosen], "search/random/samples": float(len(self.scores))}
        if self.cost is not None:
            logs.update({"cost/random/chosen_term": self.cost_terms[chosen],
                         "cost/random/min_term": min(self.cost_terms), "cost/random/max_term": max(self.cost_terms)})
        return logs

    def state_dict(self) -> dict[str, Any]:
        return {"w_opt": self.w_opt.state_dict(), "w_sched": self.w_sched.state_dict(),
                "rng": list(self.rng.getstate()[1]), "rng_version": self.rng.getstate()[0],
                "rng_gauss": self.rng.getstate()[2]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.w_opt.load_state_dict(state["w_opt"])
        self.w_sched.load_state_dict(state["w_sched"])
        self.rng.setstate((state["rng_version"], tuple(state["rng"]), state["rng_gauss"]))

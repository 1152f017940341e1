"""A latency- (FLOPs-, parameter-) aware architecture objective: the expected cost of the cells.

Each searched cell's cost under its relaxation is ``sum_e sum_k w_ek c_k`` with ``w = relaxation(alpha)``
(DARTS: the softmax, so the softmax-weighted op costs of every edge, as FBNet / ProxylessNAS's expected
latency; GDAS: the straight-through one-hot of a Gumbel sample, so the sampled op's cost, gradients
through the soft sample) and ``c_k`` the price of candidate ``k`` at the cell's channel count
(:mod:`nasflow.core.cost`). Cells sharing a label each count. A group's cost term covers its labels.

Two forms (``search.cost``):

* a penalty: ``weight * E[cost] / cost_max`` is added to the arch objective, where ``cost_max`` is the
  cost of every edge running its most expensive candidate (so ``weight`` is unitless, the same scale
  for every metric);
* a target (``target_ms``, latency only): ``lambda * (E[ms] - target) / target`` with a Lagrange
  multiplier ``lambda >= 0`` raised by dual ascent, ``lambda <- max(0, lambda + weight * (E[ms] -
  target) / target)`` after each arch step, so the search pays for latency only while over target.

The cost depends on the alphas only, so its gradient is added to the hypergradient as it is (the
unrolled weights do not depend on it). Derivation is untouched: cheaper ops win only through alphas.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from nasflow.core.cell import find_arch, supercells
from nasflow.core.cost import CostTable, cell_sites, default_table_path, device_name, op_prices, table_price
from nasflow.errors import ConfigError
from nasflow.schema import CostConfig

UNITS = {"latency": "ms", "flops": "flops", "params": "params"}


@dataclass
class _Site:
    label: str
    cell: nn.Module
    prices: torch.Tensor  # [ops], in the candidate order of the label's alphas


class CostObjective:
    """Expected cost of a supernet's cells under their relaxations, and the arch penalty built on it."""

    def __init__(self, model: nn.Module, config: CostConfig, table: CostTable | None = None) -> None:
        if config.target_ms is not None and config.metric != "latency":
            raise ConfigError(f"search.cost.target_ms needs metric: latency, got {config.metric}")
        self.config = config
        height, width = config.size
        if config.metric == "latency" and table is None:
            table = CostTable.load(config.table or default_table_path())
        cells = supercells(model)
        sites = cell_sites(model)
        self.sites: list[_Site] = []
        arch = find_arch(model)
        for cell, site in zip(cells, sites):
            price = table_price(table or CostTable(), arch.space(site.label), config.metric, height, width,
                                device_name("cpu"), config.threads)
            ops = arch.graph(site.label).candidates
            prices = op_prices(price, ops, site.channels)
            self.sites.append(_Site(site.label, cell, torch.tensor([prices[o] for o in ops], dtype=torch.float32)))
        self.unit = UNITS[config.metric]
        self.lam: dict[str, float] = {}

    def max_cost(self, labels: tuple[str, ...]) -> float:
        """Every edge of the labels' cells on its most expensive candidate (the penalty's scale)."""
        return sum(float(s.prices.max()) * s.cell.alpha.shape[0] for s in self.sites if s.label in labels)

    def expected(self, labels: tuple[str, ...]) -> torch.Tensor:
        """``sum over cells of labels, edges e, ops k of w_ek c_k``, ``w`` from each cell's relaxation."""
        total: torch.Tensor | None = None
        for s in self.sites:
            if s.label not in labels:
                continue
            weights = s.cell.relaxation(s.cell.alpha).weights
            term = (weights * s.prices.to(weights)).sum()
            total = term if total is None else total + term
        if total is None:
            raise ConfigError(f"search.cost: no searched cell has label(s) {list(labels)}")
        return total

    def penalty(self, group: str, labels: tuple[str, ...]) -> tuple[torch.Tensor, dict[str, float]]:
        """The term added to ``group``'s arch objective and what to log (``cost/<group>/...``)."""
        cfg = self.config
        cost = self.expected(labels)
        logs = {f"cost/{group}/expected_{self.unit}": float(cost.detach())}
        if cfg.target_ms is None:
            scale = self.max_cost(labels) or 1.0
            return cfg.weight * cost / scale, logs
        target = max(cfg.target_ms, 1e-9)
        lam = self.lam.get(group, 0.0)
        term = lam * (cost - target) / target
        self.lam[group] = max(0.0, lam + cfg.weight * (float(cost.detach()) - target) / target)
        logs[f"cost/{group}/lambda"] = self.lam[group]
        return term, logs


def build_cost(model: nn.Module, config: CostConfig) -> CostObjective | None:
    """The cost objective of ``search.cost``, or None when it is off (weight 0: the search is unchanged)."""
    if config.weight == 0.0:
        return None
    return CostObjective(model, config)

"""Strategies on tiny supernets: groups, periods, optimizers, GDAS annealing, random search."""

from __future__ import annotations

from typing import Iterable, Mapping

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nasflow.config import from_dict
from nasflow.core.genotype import Genotype
from nasflow.registries import STRATEGIES
from nasflow.schema import SearchConfig
from nasflow.core.space import build_space
from nasflow.core.supernet import Supernet, tag
from nasflow.task import GroupSpec, Task


class TwoModuleNet(Supernet):
    """Upstream module 'a' (one supercell) feeding downstream module 'b' (a stem + supercell)."""

    def __init__(self) -> None:
        super().__init__()
        space = build_space("distill")
        self.a = space.supercell(self.arch, "a", 2)
        self.b_stem = tag(nn.Conv2d(2, 2, 1), "b")
        self.b = space.supercell(self.arch, "b", 2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        u = self.a(x)
        return u, self.b(self.b_stem(u))


class TwoModuleTask(Task):
    """Cooperative toy task: the upstream arch loss includes the downstream loss (as RUAS)."""

    name = "two_module"

    def __init__(self, every_b: int = 3) -> None:
        super().__init__({}, seed=0, device=torch.device("cpu"))
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(8, 2, 6, 6, generator=g)
        self.y = torch.randn(8, 2, 6, 6, generator=g)
        self.every_b = every_b

    def build_supernet(self) -> Supernet:
        return TwoModuleNet()

    def search_batches(self, epoch: int) -> tuple[Iterable, Iterable]:
        return [(self.x[:4], self.y[:4])] * 2, [(self.x[4:], self.y[4:])] * 2

    def train_batches(self, epoch: int) -> Iterable:
        return [(self.x, self.y)]

    def loss_a(self, model: nn.Module, batch) -> Mapping[str, torch.Tensor]:
        x, y = batch
        return {"loss": F.mse_loss(model(x)[0], y)}

    def loss_b(self, model: nn.Module, batch) -> Mapping[str, torch.Tensor]:
        x, y = batch
        return {"loss": F.mse_loss(model(x)[1], y)}

    def loss(self, model: nn.Module, batch) -> Mapping[str, torch.Tensor]:
        a, b = self.loss_a(model, batch)["loss"], self.loss_b(model, batch)["loss"]
        return {"loss": a + b, "a": a, "b": b}

    def search_groups(self, model: Supernet) -> list[GroupSpec]:
        return [
            GroupSpec("a", ("a",), ("a",), loss=self.loss_a, arch_loss=self.loss),
            GroupSpec("b", ("b",), ("b",), loss=self.loss_b, arch_loss=self.loss_b, every=self.every_b),
        ]

    def evaluate(self, model: nn.Module, genotype: Genotype) -> dict[str, float]:
        return {}


def make(strategy: str, task: Task | None = None, **search) -> tuple:
    torch.manual_seed(0)
    task = task or TwoModuleTask()
    model = task.build_supernet()
    config = from_dict(SearchConfig, {"strategy": strategy, "epochs": 2, **search})
    return STRATEGIES.get(strategy)(model, task, config, 2), model, task


@pytest.mark.parametrize("strategy", ["darts", "cooperative", "gdas"])
def test_alphas_never_in_weight_optimizers_and_weights_never_in_arch_optimizers(strategy: str) -> None:
    s, model, _ = make(strategy)
    alpha_ids = {id(p) for p in model.arch_parameters()}
    for g in s.groups:
        w_ids = {id(p) for group in g.w_opt.param_groups for p in group["params"]}
        a_ids = {id(p) for group in g.a_opt.param_groups for p in group["params"]}
        assert not w_ids & alpha_ids
        assert a_ids <= alpha_ids and a_ids


def test_cooperative_groups_own_their_labels_and_period_is_exact() -> None:
    s, model, task = make("cooperative", hypergradient="finite_difference")
    a, b = s.groups
    assert a.spec.name == "a" and b.every == 3
    assert all(n.startswith("a.") for n in a.weight_names)
    assert any(n.startswith("b_stem.") for n in b.weight_names)
    wb, ab = task.search_batches(0)
    alpha_b = model.arch["b"]
    changed = []
    for t in range(9):
        before = alpha_b.detach().clone()
        s.step(wb[0], ab[0])
        changed.append(not torch.equal(before, alpha_b.detach()))
    assert changed == [t % 3 == 0 for t in range(9)]
    assert b.arch_steps == 3 and a.arch_steps == 9


def test_cooperative_unroll_of_upstream_holds_downstream_current_weights() -> None:
    s, model, task = make("cooperative", hypergradient="finite_difference")
    a_group = s.groups[0]
    wb, ab = task.search_batches(0)
    s.step(wb[0], ab[0])  # downstream weights move after the first step
    with torch.no_grad():
        model.b_stem.weight.add_(1.0)  # and now differ from anything seen before
    s.arch_step(a_group, wb[0], ab[0])
    virtual = dict(a_group.unroll.virtual.named_parameters())
    for name, p in model.named_parameters():
        if name.startswith(("b.", "b_stem.")):
            assert torch.equal(virtual[name], p), name


def test_warmup_delays_arch_updates() -> None:
    s, model, task = make("darts", warmup=2)
    wb, ab = task.search_batches(0)
    alpha = model.arch["a"]
    before = alpha.detach().clone()
    s.step(wb[0], ab[0])
    s.step(wb[0], ab[0])
    assert torch.equal(before, alpha.detach())
    s.step(wb[0], ab[0])
    assert not torch.equal(before, alpha.detach())


@pytest.mark.parametrize("hypergradient", ["first_order", "finite_difference", "exact_hvp"])
def test_tiny_search_lowers_the_validation_loss(hypergradient: str) -> None:
    s, model, task = make("darts", hypergradient=hypergradient,
                          weight_optimizer={"lr": 0.05}, arch_optimizer={"lr": 0.05})
    wb, ab = task.search_batches(0)
    with torch.no_grad():
        start = float(task.loss(model, ab[0])["loss"])
    for _ in range(15):
        s.step(wb[0], ab[0])
    with torch.no_grad():
        end = float(task.loss(model, ab[0])["loss"])
    assert end < start


def test_gdas_anneals_temperature_linearly() -> None:
    s, model, task = make("gdas", epochs=5, strategy_options={"tau_max": 10.0, "tau_min": 0.1})
    taus = []
    for epoch in range(5):
        s.before_epoch(epoch)
        taus.append(s.relaxation.tau)
    assert taus == pytest.approx([10.0, 7.525, 5.05, 2.575, 0.1])
    assert all(c.relaxation is s.relaxation for c in [model.a, model.b])


def test_random_search_ends_on_its_best_sample() -> None:
    s, model, task = make("random", strategy_options={"eval_samples": 5})
    wb, ab = task.search_batches(0)
    s.step(wb[0], ab[0])
    s.after_epoch(1)
    assert len(s.scores) == 5
    with torch.no_grad():
        chosen = sum(float(task.loss(model, b)["loss"]) for b in ab) / len(ab)
    assert chosen == pytest.approx(min(s.scores), rel=1e-6)


def test_unknown_group_override_and_bad_options_are_config_errors() -> None:
    from nasflow.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown group"):
        make("cooperative", groups={"nrm": {"every": 2}})
    with pytest.raises(ConfigError, match="strategy_options.tau_mx"):
        make("gdas", strategy_options={"tau_mx": 1.0})
    with pytest.raises(Exception, match="unknown hypergradient"):
        make("darts", hypergradient="second_order")


def _params_penalty(model, genotype: Genotype, weight: float) -> float:
    """``weight * params(genotype) / params(every edge on its priciest op)``, priced apart from the strategy."""
    from nasflow.core.cost import CostTable, cell_sites, cells_cost, op_prices, table_price

    price = table_price(CostTable(), "distill", "params", 400, 600, "cpu/-", 1)
    sites = cell_sites(model)
    graph = model.arch.graph("a")
    most = sum(max(op_prices(price, graph.candidates, s.channels).values()) * len(graph.edges) for s in sites)
    return weight * cells_cost(genotype, sites, price) / most


def test_random_search_scores_the_cost_of_each_sample() -> None:
    plain, _, task = make("random", strategy_options={"eval_samples": 6})
    priced, model, _ = make("random", strategy_options={"eval_samples": 6},
                            cost={"metric": "params", "weight": 0.5})
    for s in (plain, priced):
        wb, ab = task.search_batches(0)
        s.step(wb[0], ab[0])
        s.after_epoch(1)
    assert plain.cost_terms == [0.0] * 6 and all(c > 0 for c in priced.cost_terms)
    # same weights, same samples: the cost term is all that differs
    assert [a - c for a, c in zip(priced.scores, priced.cost_terms)] == pytest.approx(plain.scores, rel=1e-6)
    best = min(range(6), key=priced.scores.__getitem__)
    assert priced.cost_terms[best] == pytest.approx(_params_penalty(model, model.derive(), 0.5), rel=1e-6)
    # what TensorBoard gets for the epoch: the kept sample's cost term and the samples' range
    logs = priced.epoch_logs()
    assert logs["cost/random/chosen_term"] == pytest.approx(priced.cost_terms[best])
    assert logs["cost/random/min_term"] == min(priced.cost_terms)
    assert logs["cost/random/max_term"] == max(priced.cost_terms)
    assert logs["search/random/best_score"] == min(priced.scores)
    assert not any(k.startswith("cost/") for k in plain.epoch_logs())


def test_random_search_with_a_heavy_cost_keeps_the_cheapest_sample() -> None:
    s, model, task = make("random", strategy_options={"eval_samples": 8}, cost={"metric": "params", "weight": 1e4})
    wb, ab = task.search_batches(0)
    s.step(wb[0], ab[0])
    s.after_epoch(1)
    assert len(set(s.cost_terms)) > 1  # the samples differ in cost, so the choice is a real one
    assert _params_penalty(model, model.derive(), 1e4) == pytest.approx(min(s.cost_terms), rel=1e-6)


def test_random_search_refuses_a_latency_target() -> None:
    from nasflow.errors import ConfigError

    with pytest.raises(ConfigError, match="random search takes no arch steps"):
        make("random", cost={"metric": "latency", "weight": 0.1, "target_ms": 5.0})

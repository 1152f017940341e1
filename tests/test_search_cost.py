"""search.cost: the expected cost under each relaxation, and its effect on the planted-cell benchmark
(DARTS cell space): at weight 0 the search is unchanged; as the weight rises the derived cell gets cheaper."""

from __future__ import annotations

import pytest
import torch

from nasflow.core.cost import CostTable, cell_sites, cells_cost, table_price
from nasflow.core.mixed import GumbelStraightThrough
from nasflow.errors import ConfigError
from nasflow.run.runner import _Progress, load_run_config, search, seed_everything
from nasflow.schema import CostConfig
from nasflow.search.cost import CostObjective
from nasflow.task import build_task

pytestmark = pytest.mark.usefixtures("single_thread")

DARTS_SMALL = [
    "task_options.space=darts", "task_options.channels=4", "task_options.size=8", "task_options.train_samples=64",
    "task_options.val_samples=16", "task_options.batch_size=16", "search.epochs=4",
    "search.arch_optimizer.lr=0.05", "search.weight_optimizer.lr=0.01", "tensorboard=false",
]


def run(extra: list[str]):
    cfg = load_run_config("demo", [*DARTS_SMALL, *extra])
    seed_everything(cfg.seed)
    task = build_task(cfg, torch.device("cpu"))
    result = search(cfg, task, _Progress(quiet=True))
    model = result.model if hasattr(result, "model") else result[0]
    return model, model.derive(), task


def flops_of(model, genotype) -> float:
    price = table_price(CostTable(), "darts", "flops", 400, 600, "cpu/-", 1)
    return cells_cost(genotype, cell_sites(model), price)


def test_weight_zero_changes_nothing():
    model0, g0, _ = run([])
    model1, g1, _ = run(["search.cost.metric=flops", "search.cost.weight=0"])
    assert g0 == g1
    assert torch.equal(model0.arch.alphas["cell"], model1.arch.alphas["cell"])


def test_rising_weight_derives_cheaper_cells():
    costs = []
    for weight in (0.0, 3.0, 30.0):
        model, genotype, _ = run(["search.cost.metric=flops", f"search.cost.weight={weight}"])
        costs.append(flops_of(model, genotype))
    assert costs[0] >= costs[1] >= costs[2] and costs[2] < costs[0], costs


def test_expected_cost_is_the_softmax_weighted_sum_and_the_sampled_op_under_gdas():
    cfg = load_run_config("demo", DARTS_SMALL)
    model = build_task(cfg, torch.device("cpu")).build_supernet()
    objective = CostObjective(model, CostConfig(metric="params", weight=1.0))
    cell = model.cell
    alpha = cell.alpha
    prices = objective.sites[0].prices
    soft = (torch.softmax(alpha, -1) * prices).sum()
    assert objective.expected(("cell",)).item() == pytest.approx(soft.item(), rel=1e-6)
    cell.relaxation = GumbelStraightThrough(tau=1.0, generator=torch.Generator().manual_seed(0))
    value = objective.expected(("cell",))
    index = GumbelStraightThrough(tau=1.0, generator=torch.Generator().manual_seed(0))(alpha).active
    assert value.item() == pytest.approx(prices[index].sum().item(), rel=1e-6)
    value.backward()
    assert alpha.grad is not None and alpha.grad.abs().sum() > 0  # straight through: every alpha learns


def test_target_ms_needs_latency_and_a_measured_table(tmp_path):
    cfg = load_run_config("demo", DARTS_SMALL)
    model = build_task(cfg, torch.device("cpu")).build_supernet()
    with pytest.raises(ConfigError, match="target_ms needs metric: latency"):
        CostObjective(model, CostConfig(metric="flops", weight=1.0, target_ms=5.0))
    with pytest.raises(ConfigError, match="profile-ops darts"):
        CostObjective(model, CostConfig(weight=1.0, table=str(tmp_path / "empty.json")))


def test_random_search_logs_its_chosen_cost_to_tensorboard(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from nasflow.run.runner import run as run_job

    overrides = [o for o in DARTS_SMALL if o != "tensorboard=false"]
    cfg = load_run_config("demo", [*overrides, "tensorboard=true", "search.strategy=random", "search.epochs=1",
                                   "search.cost.metric=params", "search.cost.weight=0.5"])
    run_job(cfg, out=tmp_path / "run", quiet=True, search_only=True)
    events = sorted((tmp_path / "run").rglob("events.out.tfevents*"))
    assert events, "no TensorBoard events written"
    tags = set()
    for e in events:
        tags |= set(EventAccumulator(str(e.parent)).Reload().Tags()["scalars"])
    assert {"cost/random/chosen_term", "cost/random/min_term", "search/random/best_score"} <= tags

"""The arms of benchmarks/ablation.py are what they say, on the real RUAS task.

* ``separate``: while one module is searched, the other's alphas and weights never move; each
  module's architecture is judged by its own loss only (no cooperative term);
* naive joint (``darts`` over the RUAS supernet): one group, one architecture optimizer holding
  both modules' alphas, one loss over both modules.
"""

from __future__ import annotations

import pytest
import torch

from nasflow.errors import ConfigError
from nasflow.registries import STRATEGIES
from nasflow.run.runner import _Progress, load_run_config, search
from nasflow.task import build_task
from nasflow.core.supernet import named_weight_parameters

TINY = ["task_options.variants=1", "task_options.crop=24", "task_options.batch_size=2", "task_options.nrm_every=1",
        "search.arch_optimizer.lr=0.01"]


def _build(strategy: str, epochs: int, hypergradient: str = "first_order"):
    cfg = load_run_config("ruas", TINY + [f"search.strategy={strategy}", f"search.epochs={epochs}",
                                          f"search.hypergradient={hypergradient}"])
    torch.manual_seed(0)
    task = build_task(cfg, torch.device("cpu"))
    model = task.build_supernet()
    weight_batches, arch_batches = task.search_batches(0)
    steps = min(len(weight_batches), len(arch_batches))
    return STRATEGIES.get(strategy)(model, task, cfg.search, steps), model, task, cfg


def _snapshot(model) -> dict[str, dict[str, torch.Tensor]]:
    out: dict[str, dict[str, torch.Tensor]] = {}
    for label in ("iem", "nrm"):
        state = {n: p.detach().clone() for n, p in named_weight_parameters(model, label)}
        state["alpha"] = model.arch[label].detach().clone()
        out[label] = state
    return out


def _moved(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]) -> set[str]:
    return {k for k in before if not torch.equal(before[k], after[k])}


@pytest.mark.parametrize("hypergradient", ["first_order", "finite_difference"])
def test_separate_search_moves_one_module_at_a_time(hypergradient: str) -> None:
    strategy, model, task, _ = _build("separate", epochs=4, hypergradient=hypergradient)
    assert strategy.phase_epochs == [(0, 2), (2, 4)]
    iem_group, nrm_group = strategy.groups
    # each module is judged by its own loss: the IEM's arch loss has no NRM term
    assert iem_group.arch_loss == task.iem_terms and nrm_group.arch_loss == task.nrm_terms
    for epoch in range(4):
        strategy.before_epoch(epoch)
        searched, frozen = ("iem", "nrm") if epoch < 2 else ("nrm", "iem")
        weight_batches, arch_batches = task.search_batches(epoch)
        for wb, ab in zip(weight_batches, arch_batches):
            before = _snapshot(model)
            logs = strategy.step(wb, ab)
            after = _snapshot(model)
            assert not _moved(before[frozen], after[frozen]), f"epoch {epoch}: {frozen} moved"
            assert "alpha" in _moved(before[searched], after[searched])
            assert all(k.startswith(f"train/{searched}/") or k.startswith(f"lr/{searched}/") for k in logs)


def test_separate_search_runs_in_the_runner_and_resumes_its_phase() -> None:
    strategy, _, _, cfg = _build("separate", epochs=2)
    strategy.before_epoch(1)
    state = strategy.state_dict()
    fresh, *_ = _build("separate", epochs=2)
    fresh.load_state_dict(state)
    assert fresh.active == 1
    result = search(cfg, build_task(cfg, torch.device("cpu")), _Progress(quiet=True))
    assert [sorted({k.split("/")[1] for k in epoch if k.startswith("train/")}) for epoch in result.history] == [
        ["iem"], ["nrm"]]


def test_separate_search_needs_an_epoch_per_group() -> None:
    with pytest.raises(ConfigError, match="at least 2 epochs"):
        _build("separate", epochs=1)


def test_naive_joint_search_is_one_optimizer_over_both_modules() -> None:
    strategy, model, task, _ = _build("darts", epochs=1)
    (group,) = strategy.groups
    arch_ids = {id(p) for g in group.a_opt.param_groups for p in g["params"]}
    assert arch_ids == {id(model.arch["iem"]), id(model.arch["nrm"])}
    weight_ids = {id(p) for g in group.w_opt.param_groups for p in g["params"]}
    assert weight_ids == {id(p) for _, p in named_weight_parameters(model)}
    assert group.loss == task.loss and group.arch_loss == task.arch_loss  # one loss: IEM + NRM terms
    weight_batches, arch_batches = task.search_batches(0)
    before = _snapshot(model)
    strategy.step(weight_batches[0], arch_batches[0])
    after = _snapshot(model)
    assert "alpha" in _moved(before["iem"], after["iem"]) and "alpha" in _moved(before["nrm"], after["nrm"])

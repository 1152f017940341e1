"""The planted-architecture demo task: its data really come from its teacher."""

from __future__ import annotations

import pytest
import torch

from nasflow.config import from_dict
from nasflow.tasks.planted import PlantedOptions, PlantedTask


def make(**options) -> PlantedTask:
    opts = from_dict(PlantedOptions, {"train_samples": 16, "val_samples": 8, "size": 8, **options})
    return PlantedTask(opts, seed=0, device=torch.device("cpu"))


@pytest.mark.parametrize("space", ["distill", "darts"])
def test_teacher_scores_perfectly_on_its_own_data(space: str) -> None:
    task = make(space=space, noise_std=0.0)
    metrics = task.evaluate(task.teacher, task.teacher_genotype)
    assert metrics["edges_recovered"] == 1.0
    assert metrics["val_mse"] < 1e-10
    assert metrics["val_mse_zero_baseline"] > 1e-3  # the targets are not trivially zero


def test_noise_level_shows_in_the_teacher_error() -> None:
    task = make(noise_std=0.1, val_samples=64)
    mse = task.evaluate(task.teacher, task.teacher_genotype)["val_mse"]
    assert mse == pytest.approx(0.01, rel=0.1)


def test_data_and_teacher_are_deterministic() -> None:
    a, b = make(), make()
    assert a.teacher_genotype == b.teacher_genotype
    assert torch.equal(a.train_set[1], b.train_set[1])
    c = make(teacher_seed=99)
    assert not torch.equal(a.train_set[1], c.train_set[1])


def test_search_split_halves_do_not_overlap() -> None:
    task = make(train_samples=16, batch_size=4)
    weight_batches, arch_batches = task.search_batches(0)
    seen_w = {tuple(x.flatten()[:4].tolist()) for xb, _ in weight_batches for x in xb}
    seen_a = {tuple(x.flatten()[:4].tolist()) for xb, _ in arch_batches for x in xb}
    assert len(seen_w) == 8 and len(seen_a) == 8 and not seen_w & seen_a

"""The run pipeline on the built-in demo task: every artefact, no overwrite, bad configs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from nasflow.core.compile import compile_model
from nasflow.errors import ConfigError
from nasflow.core.genotype import Genotype
from nasflow.run.runner import load_run_config, resolve_config, run_from_file

TINY = ["search.epochs=2", "train.epochs=2", "task_options.train_samples=32", "task_options.val_samples=16",
        "task_options.size=8", "task_options.batch_size=8"]


def test_demo_run_leaves_a_complete_run_folder(tmp_path: Path) -> None:
    out = run_from_file("tasks/demo.yaml", TINY, out=tmp_path / "run", quiet=True)
    for name in ["config.yaml", "genotype.json", "genotype.dot", "metrics.json", "model.pt", "log.txt"]:
        assert (out / name).is_file(), name
    genotype = Genotype.load(out / "genotype.json")
    assert genotype.space == "distill" and len(genotype.edges("cell")) == 7
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"val_mse", "val_mse_zero_baseline", "edges_recovered"} <= set(metrics)
    # model.pt loads safely and holds a network that the genotype rebuilds
    saved = torch.load(out / "model.pt", weights_only=True)
    assert Genotype.from_dict(saved["genotype"]) == genotype
    assert saved["config"]["search"]["epochs"] == 2


def test_same_seed_same_genotype_and_metrics(tmp_path: Path) -> None:
    a = run_from_file("tasks/demo.yaml", TINY, out=tmp_path / "a", quiet=True)
    b = run_from_file("tasks/demo.yaml", TINY, out=tmp_path / "b", quiet=True)
    assert (a / "genotype.json").read_text() == (b / "genotype.json").read_text()
    ma, mb = (json.loads((d / "metrics.json").read_text()) for d in (a, b))
    assert ma["val_mse"] == mb["val_mse"]


def test_never_writes_into_a_non_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not empty"):
        run_from_file("tasks/demo.yaml", TINY, out=tmp_path, quiet=True)
    assert (tmp_path / "keep.txt").read_text() == "mine"


def test_builtin_config_by_name_and_errors(tmp_path: Path) -> None:
    assert resolve_config("demo").name == "demo.yaml"
    with pytest.raises(ConfigError, match="not found"):
        resolve_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="search.epochs: must be >= 0"):
        load_run_config("demo", ["search.epochs=-1"])
    with pytest.raises(ConfigError, match="unknown key"):
        load_run_config("demo", ["serch.epochs=1"])


def test_unknown_task_option_is_reported_with_its_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="task_options.chanels: unknown key; did you mean 'channels'"):
        run_from_file("demo", TINY + ["task_options.chanels=3"], out=tmp_path / "r", quiet=True)


@pytest.mark.parametrize("hypergradient", ["first_order", "finite_difference"])
def test_search_lowers_the_validation_loss_of_the_supernet(hypergradient: str) -> None:
    """A real (tiny) first- or second-order search on the demo task lowers the validation loss."""
    from nasflow.run.runner import search, _Progress
    from nasflow.task import build_task

    cfg = load_run_config("demo", TINY[1:] + ["search.epochs=6", f"search.hypergradient={hypergradient}"])
    torch.manual_seed(0)
    task = build_task(cfg, torch.device("cpu"))
    result = search(cfg, task, _Progress(quiet=True))
    history, model = result.history, result.model
    assert history[-1]["train/loss"] < 0.5 * history[0]["train/loss"]
    with torch.no_grad():  # the validation (architecture) half, which the search never trained on
        fresh = build_task(cfg, torch.device("cpu")).build_supernet()
        _, arch_batches = task.search_batches(0)
        before = sum(float(task.arch_loss(fresh, b)["loss"]) for b in arch_batches)
        after = sum(float(task.arch_loss(model, b)["loss"]) for b in arch_batches)
    assert after < 0.5 * before
    assert len(result.genotypes) == 6
    plain = compile_model(model, model.derive())
    assert not list(plain.arch.parameters())


def test_runner_drives_every_strategy_hook_in_order(tmp_path: Path) -> None:
    """A strategy named as module:attr is loaded, and its lifecycle hooks run in order."""
    import recording_strategy

    recording_strategy.CALLS.clear()
    out = run_from_file("demo", TINY + ["search.strategy=recording_strategy:RecordingStrategy"],
                        out=tmp_path / "r", quiet=True)
    expected = []
    for epoch in range(2):  # TINY: 2 epochs of 2 steps (16 weight samples, batch 8)
        expected.append(("before_epoch", epoch))
        for step in (2 * epoch, 2 * epoch + 1):
            expected += [("before_step", step), ("after_step", step)]
        expected.append(("after_epoch", epoch))
    assert recording_strategy.CALLS == expected
    assert (out / "genotype.json").is_file()


def test_task_samples_are_saved_as_png(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from PIL import Image

    from nasflow.tasks.planted import PlantedTask

    def samples(self, model):  # an image task would show inputs and outputs here
        return {"pair": torch.stack([torch.zeros(3, 4, 5), torch.ones(3, 4, 5)]), "gray": torch.full((1, 4, 5), 0.5)}

    monkeypatch.setattr(PlantedTask, "samples", samples)
    out = run_from_file("demo", TINY, out=tmp_path / "r", quiet=True)
    names = sorted(p.name for p in (out / "samples").iterdir())
    assert names == ["gray.png", "pair_0.png", "pair_1.png"]
    assert Image.open(out / "samples" / "pair_1.png").getpixel((0, 0)) == (255, 255, 255)
    assert Image.open(out / "samples" / "gray.png").getpixel((0, 0)) == 128

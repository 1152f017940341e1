"""Fixtures of the robustness suite: a tiny RUAS model file and a finished tiny demo run."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from rbutil import TINY, model_file


@pytest.fixture(autouse=True)
def _deterministic_mode_does_not_leak():
    """Runs with deterministic=true switch torch into deterministic mode process-wide; undo it."""
    before = torch.are_deterministic_algorithms_enabled()
    yield
    torch.use_deterministic_algorithms(before)


@pytest.fixture(scope="session")
def ruas_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return model_file(tmp_path_factory.mktemp("model") / "tiny-ruas.pt")


@pytest.fixture(scope="session")
def searched_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A deterministic demo search of 2 epochs: checkpoints/last.ckpt (epoch 2) and prev.ckpt (epoch 1)."""
    from nasflow.run.runner import run_from_file

    out = tmp_path_factory.mktemp("searched") / "run"
    before = torch.are_deterministic_algorithms_enabled()
    run_from_file("demo", SEARCH2, out=out, quiet=True, search_only=True)
    torch.use_deterministic_algorithms(before)
    return out


SEARCH2 = [kv for kv in TINY if not kv.startswith("search.epochs")] + ["search.epochs=2", "deterministic=true"]


@pytest.fixture
def run_copy(searched_run: Path, tmp_path: Path) -> Path:
    """A private copy of :func:`searched_run` to damage."""
    target = tmp_path / "run"
    shutil.copytree(searched_run, target)
    return target

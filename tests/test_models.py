"""Resolving ``--model``: a stray path never shadows a shipped model; a real model there wins, noted."""

from __future__ import annotations

from pathlib import Path

import pytest

from model_files import ruas_model_file
from nasflow.errors import ConfigError
from nasflow.infer.models import load_network, resolve_model
from nasflow.registries import MODELS


def test_a_folder_without_a_model_file_does_not_shadow_a_shipped_model(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ruas-lol").mkdir()  # e.g. the output folder of an earlier `nasflow enhance ... -o ruas-lol`
    notes: list[str] = []
    assert resolve_model("ruas-lol", notes) == MODELS.get("ruas-lol").path()
    assert len(notes) == 1 and "ruas-lol holds no model file" in notes[0] and "shipped model" in notes[0]
    loaded = load_network("ruas-lol")
    assert loaded.source == str(MODELS.get("ruas-lol").path()) and loaded.notes == notes


def test_a_run_folder_or_file_of_that_name_is_used_with_a_note(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ruas-lol").mkdir()
    ruas_model_file(tmp_path / "ruas-lol" / "model.pt", name="mine")  # a run folder
    notes: list[str] = []
    assert resolve_model("ruas-lol", notes) == Path("ruas-lol") / "model.pt"
    assert "not the shipped model" in notes[0]
    assert load_network("ruas-lol").meta["name"] == "mine"
    ruas_model_file(tmp_path / "ruas-mit", name="file")  # a model file without an extension
    assert load_network("ruas-mit").meta["name"] == "file"


def test_paths_that_are_not_shipped_names_keep_their_errors(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="is a folder without model.pt"):
        resolve_model(tmp_path / "empty")
    with pytest.raises(ConfigError, match="neither a file nor a run folder"):
        resolve_model(tmp_path / "nothing")
    assert resolve_model("ruas-lol") == MODELS.get("ruas-lol").path()  # no such path here: no note needed


def test_enhance_prints_the_note(tmp_path: Path, monkeypatch, capsys) -> None:
    import numpy as np
    from PIL import Image

    from nasflow.cli import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "ruas-lol").mkdir()
    Image.fromarray(np.full((12, 10, 3), 20, np.uint8)).save(tmp_path / "dark.png")
    assert main(["enhance", "dark.png", "-o", "out", "--model", "ruas-lol", "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "nasflow: note: ruas-lol holds no model file" in err
    assert (tmp_path / "out" / "dark.png").is_file()

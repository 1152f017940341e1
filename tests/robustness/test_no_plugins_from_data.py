"""Issue #8, plugins: ``module:attr`` names are imported only from the config keys meant for them, never
from a genotype, checkpoint, model file or image. The probe is a real module that creates a marker file
when imported: every case below names it, and only the config case may import it."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import SEARCH2
from PIL import Image, PngImagePlugin
from rbutil import assert_one_line_error, cli, sets

from nasflow.run.checkpoint import load_safe, save_atomic
from nasflow.errors import ConfigError, GenotypeError
from nasflow.core.genotype import Genotype

PROBE = "nasflow_robustness_probe"


@pytest.fixture
def probe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A module ``nasflow_robustness_probe`` whose import creates the returned marker path."""
    marker = tmp_path / "IMPORTED"
    folder = tmp_path / "probe_path"
    folder.mkdir()
    (folder / f"{PROBE}.py").write_text(f"open({str(marker)!r}, 'w').close()\nclass Thing:\n    pass\n")
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.delitem(__import__("sys").modules, PROBE, raising=False)
    return marker


def _genotype_file(tmp_path: Path, *, op: str = "conv_3x3", space: str = "distill") -> Path:
    data = {"schema": 1, "space": space, "cells": {"cell": [{"op": op, "src": "x", "dst": "d1"}]}, "meta": {}}
    path = tmp_path / "g.json"
    path.write_text(__import__("json").dumps(data))
    return path


@pytest.mark.parametrize("field", ["op", "space"])
def test_genotype_files_cannot_name_code(probe: Path, tmp_path: Path, field: str) -> None:
    path = _genotype_file(tmp_path, **{field: f"{PROBE}:Thing"})
    with pytest.raises(GenotypeError, match="is an import path"):
        Genotype.load(path)
    for argv in (["viz", str(path), "-o", str(tmp_path / "pic")],  # viz would build the space by its name
                 ["train", "demo", "--genotype", str(path), "--out", str(tmp_path / "never"), "--quiet"]):
        code, _, err = cli(argv)
        assert code == 2
        assert_one_line_error(err, "is an import path", "registered ops and spaces")
    assert not probe.exists()


def test_a_genotype_may_use_an_import_path_its_own_config_names(tmp_path: Path) -> None:
    name = "nasflow.core.ops:NoSuchOp"  # never imported here: only the permission is tested
    data = {"schema": 1, "space": "distill", "cells": {"cell": [{"op": name, "src": "x", "dst": "d1"}]}}
    with pytest.raises(GenotypeError):
        Genotype.from_dict(data)
    assert Genotype.from_dict(data, allowed_paths=[name]).ops("cell") == [name]


def _model_with(ruas_model: Path, tmp_path: Path, edit) -> Path:  # noqa: ANN001
    saved = load_safe(ruas_model)
    edit(saved)
    path = tmp_path / "edited.pt"
    save_atomic(saved, path)
    return path


@pytest.fixture
def image(tmp_path: Path) -> Path:
    path = tmp_path / "dark.png"
    Image.fromarray((np.random.default_rng(0).random((9, 11, 3)) * 50).astype(np.uint8)).save(path)
    return path


def test_model_file_genotype_cannot_name_code(probe: Path, ruas_model: Path, tmp_path: Path, image: Path) -> None:
    def edit(saved: dict) -> None:
        label = next(iter(saved["genotype"]["cells"]))
        saved["genotype"]["cells"][label][0]["op"] = f"{PROBE}:Thing"

    model = _model_with(ruas_model, tmp_path, edit)
    code, _, err = cli(["enhance", str(image), "-o", str(tmp_path / "out"), "--model", str(model), "--quiet"])
    assert code == 2
    assert_one_line_error(err, "is an import path")
    assert not probe.exists()


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished demo run (model.pt of the demo task)."""
    from nasflow.run.runner import run_from_file

    return run_from_file("demo", ["search.epochs=1", "train.epochs=0", "task_options.train_samples=8",
                                  "task_options.val_samples=8", "task_options.size=8", "task_options.batch_size=8",
                                  "tensorboard=false"], out=tmp_path_factory.mktemp("demo") / "run", quiet=True)


@pytest.mark.parametrize("where", ["task", "task_options.space", "task_options.candidates"])
def test_model_file_config_cannot_name_code(probe: Path, tmp_path: Path, image: Path, where: str,
                                            demo_run: Path) -> None:
    """A model file of the demo task whose config names the probe where a run's config could."""
    saved = load_safe(demo_run / "model.pt")
    if where == "task":
        saved["config"]["task"] = f"{PROBE}:Thing"
    elif where == "task_options.space":
        saved["config"]["task_options"]["space"] = f"{PROBE}:Thing"
    else:
        saved["config"]["task_options"]["candidates"] = ["conv_3x3", f"{PROBE}:Thing"]
    save_atomic(saved, tmp_path / "m.pt")
    code, _, err = cli(["enhance", str(image), "-o", str(tmp_path / "out"), "--model", str(tmp_path / "m.pt")])
    assert code == 2
    assert_one_line_error(err)
    assert not probe.exists()


def test_checkpoint_strings_are_never_imported(probe: Path, run_copy: Path) -> None:
    for name in ("last.ckpt", "prev.ckpt"):
        path = run_copy / "checkpoints" / name
        state = load_safe(path)
        for entry in state["genotypes"]:
            entry["genotype"]["space"] = f"{PROBE}:Thing"
        state["history"].append({f"{PROBE}:Thing": 1.0})
        save_atomic(state, path)
    code, _, err = cli(["search", "demo", "--resume", str(run_copy), "--quiet", *sets(SEARCH2)])
    assert code == 0, err
    assert not probe.exists()


def test_eval_of_a_run_whose_model_genotype_names_code(probe: Path, tmp_path: Path, demo_run: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(demo_run, run)
    saved = load_safe(run / "model.pt")
    saved["genotype"]["cells"]["cell"][0]["op"] = f"{PROBE}:Thing"
    save_atomic(saved, run / "model.pt")
    code, _, err = cli(["eval", str(run)])
    assert code == 2
    assert_one_line_error(err, "is an import path")
    assert not probe.exists()


def test_images_never_name_code(probe: Path, ruas_model: Path, tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    info = PngImagePlugin.PngInfo()
    info.add_text("Software", f"{PROBE}:Thing")
    info.add_text(f"{PROBE}:Thing", f"{PROBE}:Thing")
    array = (np.random.default_rng(1).random((6, 7, 3)) * 40).astype(np.uint8)
    Image.fromarray(array).save(folder / f"{PROBE}:Thing.png", pnginfo=info)
    shutil.copyfile(folder / f"{PROBE}:Thing.png", folder / "plain.png")
    code, out, err = cli(["enhance", str(folder), "-o", str(tmp_path / "out"), "--model", str(ruas_model), "--quiet"])
    assert code == 0, err
    assert "enhanced 2 of 2 images" in out
    assert not probe.exists()


def test_a_config_is_where_code_may_be_named(probe: Path, tmp_path: Path) -> None:
    """The documented exception: plugin keys of a config import what they name (here: not a strategy)."""
    from nasflow.run.runner import check_config, load_run_config

    with pytest.raises(ConfigError, match="is not a strategy"):
        check_config(load_run_config("demo", [f"search.strategy={PROBE}:Thing"]))
    assert probe.exists()

"""Issue #8, checkpoints and model files: nothing is ever unpickled beyond tensors and plain data (a
crafted pickle that would create a file is refused and the file is not created), a checkpoint that does
not fit the config is a clear error naming the mismatch, and a damaged newest checkpoint falls back to
the previous one."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SEARCH2
from PIL import Image
from rbutil import assert_one_line_error, cli, crafted_pickles, sets

from nasflow.run.checkpoint import load_safe, save_atomic
from nasflow.errors import CheckpointError, NasflowError
from nasflow.core.genotype import Genotype
from nasflow.infer.inference import load_model


def _resume(run: Path, *extra: str) -> tuple[int, str, str]:
    return cli(["search", "demo", "--resume", str(run), "--out", str(run), "--quiet", *sets(SEARCH2), *extra])


@pytest.fixture
def image(tmp_path: Path) -> Path:
    path = tmp_path / "dark.png"
    Image.fromarray((np.random.default_rng(0).random((9, 11, 3)) * 50).astype(np.uint8)).save(path)
    return path


def test_crafted_checkpoint_is_refused_on_resume_and_runs_nothing(run_copy: Path, tmp_path: Path) -> None:
    marker = tmp_path / "PWNED"
    for evil in crafted_pickles(tmp_path / "evil", marker):
        ckpts = run_copy / "checkpoints"
        (ckpts / "prev.ckpt").unlink(missing_ok=True)
        shutil.copyfile(evil, ckpts / "last.ckpt")
        code, _, err = _resume(run_copy)
        assert code == 2, err
        assert_one_line_error(err, "refused", "only tensors and plain data")
        assert not marker.exists()


def test_crafted_model_file_is_refused_and_runs_nothing(image: Path, tmp_path: Path) -> None:
    marker = tmp_path / "PWNED"
    for evil in crafted_pickles(tmp_path / "evil", marker):
        code, _, err = cli(["enhance", str(image), "-o", str(tmp_path / "out"), "--model", str(evil), "--quiet"])
        assert code == 2, err
        assert_one_line_error(err, str(evil), "refused")
        assert not marker.exists() and not (tmp_path / "out").exists()
        with pytest.raises(CheckpointError, match="refused"):
            load_safe(evil)
        assert not marker.exists()


def test_crafted_model_pt_in_a_run_folder_is_refused_by_eval(run_copy: Path, tmp_path: Path) -> None:
    marker = tmp_path / "PWNED"
    evil = crafted_pickles(tmp_path / "evil", marker)[1]
    shutil.copyfile(evil, run_copy / "model.pt")
    code, _, err = cli(["eval", str(run_copy)])
    assert code == 2 and not marker.exists()
    assert_one_line_error(err, "refused")


def test_checkpoint_with_other_shapes_names_the_tensor(run_copy: Path) -> None:
    for name in ("last.ckpt", "prev.ckpt"):
        path = run_copy / "checkpoints" / name
        state = load_safe(path)
        key = next(k for k in state["model"] if k.endswith("weight") and state["model"][k].dim() == 4)
        state["model"][key] = torch.zeros(7, 7, 3, 3)
        save_atomic(state, path)
    code, _, err = _resume(run_copy)
    assert code == 2
    assert_one_line_error(err, f"'{key}' has shape (7, 7, 3, 3)", "needs (", "another config or genotype")


def test_checkpoint_of_another_network_names_the_missing_tensor(run_copy: Path) -> None:
    path = run_copy / "checkpoints" / "last.ckpt"
    state = load_safe(path)
    first = sorted(state["model"])[0]
    del state["model"][first]
    state["model"]["cell.extra.weight"] = torch.zeros(1)
    save_atomic(state, path)
    (run_copy / "checkpoints" / "prev.ckpt").unlink()
    code, _, err = _resume(run_copy)
    assert code == 2
    assert_one_line_error(err, "does not match the network of this config", f"missing '{first}'")


def test_checkpoint_written_with_another_config_names_the_key(run_copy: Path) -> None:
    path = run_copy / "checkpoints" / "last.ckpt"
    state = load_safe(path)
    state["config"]["task_options"]["channels"] = 8
    save_atomic(state, path)
    code, _, err = _resume(run_copy)
    assert code == 2
    assert_one_line_error(err, "written with another config", "task_options.channels")


def test_resume_with_another_config_names_the_key(run_copy: Path) -> None:
    code, _, err = cli(["search", "demo", "--resume", str(run_copy), "--quiet",
                        *sets(SEARCH2 + ["task_options.channels=3"])])
    assert code == 2
    assert_one_line_error(err, "config differs", "task_options.channels")


def test_truncated_last_checkpoint_falls_back_to_prev_and_finishes_the_same(run_copy: Path,
                                                                           searched_run: Path) -> None:
    last = run_copy / "checkpoints" / "last.ckpt"
    data = last.read_bytes()
    last.write_bytes(data[: len(data) // 3])
    assert load_safe(run_copy / "checkpoints" / "prev.ckpt")["epoch"] == 1  # one epoch behind
    (run_copy / "genotype.json").unlink()
    code, _, err = _resume(run_copy)
    assert code == 0, err
    assert "skipped an unusable checkpoint" in err and "last.ckpt" in err
    assert "from " in err and "prev.ckpt (epoch 2, step 0)" in err  # says which one it used
    assert (run_copy / "checkpoints" / "last.ckpt.unreadable").exists()
    assert Genotype.load(run_copy / "genotype.json") == Genotype.load(searched_run / "genotype.json")
    resumed, full = load_safe(run_copy / "checkpoints" / "last.ckpt"), load_safe(searched_run / "checkpoints" /
                                                                                  "last.ckpt")
    for key, tensor in full["model"].items():
        assert torch.equal(tensor, resumed["model"][key]), key


@pytest.mark.parametrize("damage", ["truncate", "empty", "garbage"])
def test_no_usable_checkpoint_is_one_error_naming_both(run_copy: Path, damage: str) -> None:
    for name in ("last.ckpt", "prev.ckpt"):
        path = run_copy / "checkpoints" / name
        data = path.read_bytes()
        path.write_bytes({"truncate": data[:100], "empty": b"", "garbage": b"PK\x03\x04 not a zip"}[damage])
    code, _, err = _resume(run_copy)
    assert code == 2
    assert_one_line_error(err, "no usable checkpoint", "last.ckpt", "prev.ckpt")


def test_checkpoint_that_is_not_a_search_checkpoint(run_copy: Path) -> None:
    for name in ("last.ckpt", "prev.ckpt"):
        save_atomic({"just": "data", "epoch": "one"}, run_copy / "checkpoints" / name)
    code, _, err = _resume(run_copy)
    assert code == 2
    assert_one_line_error(err, "is not a nasflow search checkpoint")


def test_model_file_whose_genotype_does_not_fit_its_config(ruas_model: Path, tmp_path: Path) -> None:
    saved = load_safe(ruas_model)
    wrong_space = dict(saved, genotype={**saved["genotype"], "space": "darts"})
    save_atomic(wrong_space, tmp_path / "space.pt")
    with pytest.raises(NasflowError, match="space 'darts'"):
        load_model(tmp_path / "space.pt", device="cpu")
    label = next(iter(saved["genotype"]["cells"]))
    edges = [dict(e) for e in saved["genotype"]["cells"][label]]
    edges[0]["op"] = "conv_9x9"
    wrong_op = dict(saved, genotype={**saved["genotype"], "cells": {**saved["genotype"]["cells"], label: edges}})
    save_atomic(wrong_op, tmp_path / "op.pt")
    for bad, fragment in ((tmp_path / "space.pt", "space 'darts'"), (tmp_path / "op.pt", "unknown op 'conv_9x9'")):
        code, _, err = cli(["enhance", str(bad), "-o", str(tmp_path / "o"), "--model", str(bad)])
        assert code == 2
        assert_one_line_error(err, fragment)

"""The pipeline commands end to end through the CLI: search, train, eval, and bad configs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nasflow.cli import main

TINY = ["search.epochs=1", "train.epochs=1", "task_options.train_samples=16", "task_options.val_samples=8",
        "task_options.size=8", "task_options.batch_size=8", "tensorboard=false"]


def sets(overrides: list[str]) -> list[str]:
    return [a for kv in overrides for a in ("--set", kv)]


def test_search_then_train_then_eval(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    s, t = tmp_path / "s", tmp_path / "t"
    assert main(["search", "demo", "--out", str(s), "--quiet", *sets(TINY)]) == 0
    assert (s / "genotype.json").is_file() and not (s / "model.pt").exists()
    assert main(["train", "demo", "--genotype", str(s / "genotype.json"), "--out", str(t), "--quiet", *sets(TINY)]) == 0
    assert (t / "genotype.json").read_text() == (s / "genotype.json").read_text()
    trained = json.loads((t / "metrics.json").read_text())
    capsys.readouterr()
    assert main(["eval", str(t)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads((t / "eval.json").read_text())
    assert printed["val_mse"] == pytest.approx(trained["val_mse"], rel=1e-6)  # the saved weights, rebuilt


def test_eval_of_an_unfinished_folder_is_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a finished run folder" in err[0]


def test_train_with_a_genotype_of_another_space_is_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    g = tmp_path / "g.json"
    g.write_text(json.dumps({"schema": 1, "space": "darts", "cells": {"cell": []}}))
    assert main(["train", "demo", "--genotype", str(g), "--out", str(tmp_path / "r"), *sets(TINY)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "space" in err[0]
    assert not (tmp_path / "r").exists()  # nothing written for a bad genotype


@pytest.mark.parametrize(
    "content, message",
    [
        ("task: planted\nserch: {epochs: 1}\n", "serch: unknown key; did you mean 'search'"),
        ("task: planted\nsearch: {epochs: two}\n", "search.epochs: expected an integer"),
        ("task: planted\nsearch: {epochs: -3}\n", "search.epochs: must be >= 0"),
        ("task: planted\nsearch: {epochs: [1\n", "YAML syntax error"),
        ("search: {epochs: 1}\n", "task: required key is missing"),
        ("task: plantd\n", "unknown task 'plantd'; did you mean 'planted'?"),
    ],
)
def test_bad_config_is_one_line_and_exit_2(content: str, message: str, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(content)
    assert main(["run", str(cfg), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("nasflow: error:") and message in err[0], err[0]
    assert not (tmp_path / "r").exists()


def test_tensorboard_events_of_a_tiny_run_hold_the_documented_tags(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "r"
    tiny = [kv for kv in TINY if not kv.startswith("tensorboard")] + ["search.epochs=2"]
    assert main(["run", "demo", "--out", str(out), "--quiet", *sets(tiny)]) == 0
    events = EventAccumulator(str(out / "tb"), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    assert {"train/loss", "lr/weights", "arch/cell/c1_d/conv_3x3", "arch/cell/c4/skip_connect"} <= scalars
    assert "genotype/text" in events.Tags()["tensors"]
    probs = [events.Scalars(f"arch/cell/c2_r/{op}")[-1].value for op in
             ["skip_connect", "conv_1x1", "conv_3x3", "dilconv_3x3", "resconv_1x1", "resconv_3x3", "resdilconv_3x3"]]
    assert sum(probs) == pytest.approx(1.0, abs=1e-5)
    assert [e.step for e in events.Scalars("train/loss")] == [0, 1]  # 2 epochs x 1 step (8 samples, batch 8)

"""Checkpoints: atomic writes, and a SIGKILLed search resumed to the very same result."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from nasflow.run.checkpoint import load_safe, rng_state, save_atomic, set_rng_state
from nasflow.errors import ConfigError, NasflowError

RUN = ["search.epochs=4", "train.epochs=1", "task_options.train_samples=64", "task_options.val_samples=16",
       "task_options.size=12", "task_options.batch_size=8", "search.hypergradient=finite_difference",
       "checkpoint.every_steps=1", "deterministic=true", "tensorboard=false"]


def nasflow(*args: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "nasflow", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def run_args(out: Path, *extra: str) -> list[str]:
    return ["run", "demo", "--out", str(out), "--quiet", *[a for kv in RUN for a in ("--set", kv)], *extra]


def progress_of(ckpt: Path) -> int:
    try:
        state = load_safe(ckpt)
    except NasflowError:
        return -1
    return state["epoch"] * 4 + state["step_in_epoch"]  # 4 steps per epoch (32 weight samples, batch 8)


def test_sigkilled_search_resumes_to_the_uninterrupted_result(tmp_path: Path) -> None:
    full, killed = tmp_path / "full", tmp_path / "killed"
    proc = nasflow(*run_args(full))
    victim = nasflow(*run_args(killed))
    ckpt = killed / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 120
    while progress_of(ckpt) < 6:  # mid-search: epoch 2, step 3 of 4
        assert victim.poll() is None, "the run finished before it could be killed; make it longer"
        assert time.monotonic() < deadline
        time.sleep(0.02)
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=30)
    assert victim.returncode == -signal.SIGKILL
    assert not (killed / "model.pt").exists()
    assert 6 <= progress_of(ckpt) < 16  # killed mid-search, checkpoint readable

    resumed = nasflow(*run_args(tmp_path / "other", "--resume", str(killed)))
    out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err

    assert (killed / "genotype.json").read_text() == (full / "genotype.json").read_text()
    a, b = load_safe(full / "checkpoints" / "last.ckpt"), load_safe(ckpt)
    for name, tensor in a["model"].items():  # supernet alphas and weights after the search
        assert torch.equal(tensor, b["model"][name]), name
    fa, fb = load_safe(full / "model.pt"), load_safe(killed / "model.pt")
    for name, tensor in fa["state_dict"].items():
        assert torch.equal(tensor, fb["state_dict"][name]), name
    assert a["history"] == b["history"]


def test_resume_with_another_config_is_refused(tmp_path: Path) -> None:
    from nasflow.run.runner import run_from_file

    tiny = ["search.epochs=1", "train.epochs=0", "task_options.train_samples=16", "task_options.val_samples=8",
            "task_options.size=8", "task_options.batch_size=8", "tensorboard=false"]
    out = run_from_file("demo", tiny, out=tmp_path / "r", quiet=True)
    with pytest.raises(ConfigError, match="search.epochs"):
        run_from_file("demo", tiny[1:] + ["search.epochs=2"], quiet=True, resume=out)
    with pytest.raises(ConfigError, match="nothing to resume"):
        run_from_file("demo", tiny, quiet=True, resume=tmp_path / "missing")


def test_failed_write_keeps_the_previous_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "last.ckpt"
    save_atomic({"step": 1, "w": torch.ones(3)}, path)

    def broken_save(obj, f, *args, **kwargs):
        f.write(b"partial garbage")
        raise KeyboardInterrupt  # as if killed mid-write

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(KeyboardInterrupt):
        save_atomic({"step": 2}, path)
    monkeypatch.undo()
    assert load_safe(path)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # no temp file left behind


def test_corrupt_checkpoint_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "last.ckpt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(NasflowError, match="cannot load checkpoint"):
        load_safe(bad)


def test_rng_state_round_trips_every_generator() -> None:
    import random

    import numpy as np

    state = rng_state()
    first = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    set_rng_state(state)
    assert (random.random(), float(np.random.rand()), float(torch.rand(1))) == first
    # and survives a weights_only save/load
    path_state = {"rng": state}
    import io

    buf = io.BytesIO()
    torch.save(path_state, buf)
    buf.seek(0)
    set_rng_state(torch.load(buf, weights_only=True)["rng"])
    assert (random.random(), float(np.random.rand()), float(torch.rand(1))) == first

"""Helpers shared by the robustness suite (issue #8): tiny runs, a tiny RUAS model, the CLI."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from pathlib import Path
from typing import Sequence

import torch

TINY = ["search.epochs=1", "train.epochs=1", "task_options.train_samples=16", "task_options.val_samples=8",
        "task_options.size=8", "task_options.batch_size=8", "tensorboard=false"]
"""A demo run that takes a second or two: 1 search epoch of 1 step, 1 training epoch."""


def sets(overrides: Sequence[str]) -> list[str]:
    return [arg for kv in overrides for arg in ("--set", kv)]


def env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def nasflow(*args: str, **kwargs) -> subprocess.Popen:
    """``python -m nasflow ARGS`` in a subprocess (stdout/stderr piped, text)."""
    return subprocess.Popen([sys.executable, "-m", "nasflow", *args], env=env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kwargs)


def cli(argv: Sequence[str]) -> tuple[int, str, str]:
    """``nasflow.cli.main(argv)`` in this process: (exit code, stdout, stderr)."""
    from nasflow.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


def assert_one_line_error(err: str, *fragments: str) -> str:
    """stderr is exactly one ``nasflow: error: ...`` line holding every fragment."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("nasflow: error: "), err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    assert "Traceback" not in err
    return lines[0]


def model_file(path: Path, use_nrm: bool = True, seed: int = 0) -> Path:
    """A RUAS model file as the engine tests make it (``tests/model_files.py``)."""
    from model_files import ruas_model_file

    return ruas_model_file(path, use_nrm, seed, name="robustness-model")


class Evil:
    """Unpickling this creates ``marker`` (a stand-in for any code a crafted pickle would run)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # noqa: ANN204
        return (open, (str(self.marker), "w"))


def crafted_pickles(folder: Path, marker: Path) -> list[Path]:
    """Files that would create ``marker`` if unpickled: a raw pickle and a torch (zip) file."""
    import pickle

    folder.mkdir(parents=True, exist_ok=True)
    raw = folder / "evil_raw.pt"
    raw.write_bytes(pickle.dumps({"state_dict": {}, "genotype": {}, "config": {}, "x": Evil(marker)}, protocol=2))
    zipped = folder / "evil_zip.pt"
    torch.save({"state_dict": {}, "genotype": {}, "config": {}, "x": Evil(marker)}, zipped)
    assert not marker.exists()
    return [raw, zipped]

"""The run folder: making it, locking it, the files in it, and what a resumed run continues from.

A run folder::

    runs/<task>-<timestamp>/
      config.yaml  genotype.json  genotype.dot/.svg  metrics.json  model.pt  log.txt  samples/
      checkpoints/last.ckpt  checkpoints/prev.ckpt  .nasflow.lock (while running)

:func:`open_run_folder` gives a job its folder: the one to resume (the newest usable checkpoint,
after checking that the config is the run's) or a new, empty one, locked against a second run
either way (a lock left by a killed run is taken over).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from nasflow.atomic import write_atomic, write_text_atomic
from nasflow.config import check_plain_data, safe_load_yaml, to_dict
from nasflow.errors import CheckpointError, ConfigError
from nasflow.run.checkpoint import (
    LOCK_NAME,
    RunLock,
    check_state_dict,
    checkpoint_files,
    load_latest,
    rng_state,
    set_rng_state,
)
from nasflow.run.context import RunContext
from nasflow.schema import RunConfig
from nasflow.search.distributed import broadcast_object
from nasflow.task import Task

log = logging.getLogger("nasflow")


def checkpoint_dir(run_dir: Path) -> Path:
    return run_dir / "checkpoints"


def checkpoint_path(run_dir: Path) -> Path:
    """The newest checkpoint of a run folder (``checkpoints/last.ckpt``)."""
    return checkpoint_dir(run_dir) / "last.ckpt"


def make_run_dir(out: str | Path | None, task: str) -> Path:
    """A new, empty run folder; an existing non-empty folder is never written into."""
    if out is None:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        base = Path("runs") / f"{task}-{stamp}"
        path, n = base, 1
        while path.exists():
            n += 1
            path = base.with_name(f"{base.name}-{n}")
    else:
        path = Path(out)
        if path.exists() and (not path.is_dir() or any(p.name != LOCK_NAME for p in path.iterdir())):
            raise ConfigError(f"run folder {path} already exists and is not empty; choose another --out")
    path.mkdir(parents=True, exist_ok=True)
    return path


def is_run_folder(path: Path) -> bool:
    return path.is_dir() and any((path / name).exists() for name in (LOCK_NAME, "checkpoints", "config.yaml"))



@contextmanager
def open_run_folder(rc: RunContext) -> Iterator[None]:
    """Set ``rc.run_dir`` (and ``rc.state``, ``rc.notices`` when resuming) and hold the folder's lock.

    A folder that holds a checkpoint (``--resume``, or ``--out`` naming one) is resumed unless a
    genotype is given; otherwise a new folder is made. A live run in the folder is refused before
    anything in it is read; only rank 0 locks and tidies.
    """
    target = rc.resume if rc.resume is not None else rc.out
    lock: RunLock | None = None
    if rc.dist.is_main and target is not None and is_run_folder(Path(target)):
        lock = RunLock.acquire(Path(target))  # a live run in this folder is refused before we look inside
    try:
        if lock is not None and lock.took_over is not None:
            rc.notices.append(f"took over the stale lock of pid {lock.took_over} (that process is no longer running)")
        if rc.genotype is None and target is not None and checkpoint_files(checkpoint_dir(Path(target))):
            rc.run_dir = Path(target)
            rc.state = resume_state(rc.run_dir, rc.cfg, rc.task, rc.notices, tidy=rc.dist.is_main)
        elif rc.resume is not None:
            raise ConfigError(f"nothing to resume: {checkpoint_path(Path(rc.resume))} does not exist")
        else:
            rc.run_dir = Path(broadcast_object(str(make_run_dir(rc.out, rc.cfg.task)) if rc.dist.is_main else None))
            if rc.dist.is_main and lock is None:  # (a lock already held is on this very folder: target == out)
                lock = RunLock.acquire(rc.run_dir)
                if lock.took_over is not None:
                    rc.notices.append(f"took over the stale lock of pid {lock.took_over} "
                                      "(that process is no longer running)")
        yield
    finally:
        if lock is not None:
            lock.release()


CHECKPOINT_KEYS = ("epoch", "step_in_epoch", "model", "strategy", "history", "genotypes", "sums", "rng")


def check_checkpoint(state: Any, path: Path) -> None:
    if not isinstance(state, dict) or any(k not in state for k in CHECKPOINT_KEYS):
        found = sorted(map(str, state)) if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(f"{path} is not a nasflow search checkpoint (expected keys {list(CHECKPOINT_KEYS)}, "
                              f"found {found})")
    if not isinstance(state["epoch"], int) or not isinstance(state["step_in_epoch"], int):
        raise CheckpointError(f"{path}: epoch and step_in_epoch must be integers")


def resume_state(run_dir: Path, cfg: RunConfig, task: Task, notices: list[str],
                  tidy: bool = True) -> dict[str, Any] | None:
    """The newest usable checkpoint of ``run_dir`` (last.ckpt, else prev.ckpt), after checking that
    the run's saved config matches; ``notices`` gets what the user should be told. ``tidy``
    (rank 0 only) removes temp files left by a kill and moves an unusable last.ckpt aside."""
    folder = checkpoint_dir(run_dir)
    if not checkpoint_files(folder):
        return None
    saved_path = run_dir / "config.yaml"
    if saved_path.is_file():
        try:
            saved = safe_load_yaml(saved_path.read_text(encoding="utf-8"), str(saved_path), ConfigError)
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot resume {run_dir}: cannot read {saved_path} ({exc})") from None
        check_plain_data(saved, str(saved_path))
        differ = differences(saved, to_dict(cfg))
        if differ:
            raise ConfigError(f"cannot resume {run_dir}: the config differs from the run's saved config at "
                              f"{', '.join(differ[:5])} (resume with the same config and --set values)")
    for stray in [*folder.glob(".*.tmp"), *run_dir.glob(".*.tmp")] if tidy else []:  # left by a kill mid-write
        stray.unlink(missing_ok=True)
        notices.append(f"removed {stray}, a temporary file left by an interrupted write")
    saved_rng = rng_state()  # building a template network must not change what the run draws
    try:
        template = task.build_supernet().state_dict()
    finally:
        set_rng_state(saved_rng)

    def check(state: Any, path: Path) -> None:
        check_checkpoint(state, path)
        check_state_dict(template, state["model"], str(path))

    loaded = load_latest(folder, check)
    state = loaded.state
    if "config" in state:
        differ = differences(state["config"], to_dict(cfg))
        if differ:
            raise CheckpointError(f"cannot resume {run_dir}: {loaded.path} was written with another config "
                                  f"(differs at {', '.join(differ[:5])})")
    for problem in loaded.skipped:
        notices.append(f"skipped an unusable checkpoint: {problem}")
    if tidy and loaded.path.name != "last.ckpt" and checkpoint_path(run_dir).exists():
        aside = checkpoint_path(run_dir).with_name("last.ckpt.unreadable")
        os.replace(checkpoint_path(run_dir), aside)  # never rotated over the good one
        notices.append(f"moved the unusable checkpoint aside to {aside}")
    notices.append(f"resuming {run_dir} from {loaded.path} (epoch {state['epoch'] + 1}, step {state['step_in_epoch']})")
    state["_path"] = str(loaded.path)
    return state


def differences(a: Any, b: Any, path: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in sorted(set(a) | set(b)):
            out += differences(a.get(key), b.get(key), f"{path}.{key}" if path else key)
        return out
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        a, b = list(a), list(b)
    return [] if a == b else [path or "(root)"]


def describe_checkpoint(run_dir: Path | None, saved: dict[str, int] | None) -> str:
    if run_dir is None:
        return "no checkpoint is written by this run"
    if saved is None:
        files = checkpoint_files(checkpoint_dir(run_dir))
        return (f"the checkpoint {files[0]} is kept" if files else "no checkpoint had been written yet")
    return (f"the last good checkpoint {checkpoint_path(run_dir)} (epoch {saved['epoch'] + 1}, "
            f"step {saved['step']}) is kept")


def setup_logging(run_dir: Path, quiet: bool) -> logging.Handler:
    handler = logging.FileHandler(run_dir / "log.txt", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    if not quiet and not any(isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)
                             for h in log.handlers):
        console = logging.StreamHandler(sys.stderr)
        console.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(console)
    return handler


def save_samples(samples: dict[str, torch.Tensor], folder: Path) -> None:
    """Sample images as PNG files (CHW or NCHW in [0, 1]; a batch becomes one file per image), each
    written under a temporary name and renamed."""
    from PIL import Image

    for name, image in samples.items():
        batch = image.detach().float().cpu().clamp(0, 1)
        batch = batch.unsqueeze(0) if batch.dim() == 3 else batch
        for i, chw in enumerate(batch):
            folder.mkdir(parents=True, exist_ok=True)
            array = (chw.permute(1, 2, 0).numpy() * 255.0).round().astype(np.uint8)
            suffix = f"_{i}" if len(batch) > 1 else ""
            image = Image.fromarray(array.squeeze(-1) if array.shape[-1] == 1 else array)
            write_atomic(folder / f"{name}{suffix}.png", lambda f, image=image: image.save(f, format="PNG"))


def write_json(path: Path, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, indent=2) + "\n")

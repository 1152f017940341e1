"""``nasflow run``: search -> derive -> train the compiled network -> evaluate -> export.

Every stage writes into one run folder::

    runs/<task>-<timestamp>/
      config.yaml  genotype.json  genotype.dot/.svg  metrics.json  model.pt  log.txt
      checkpoints/last.ckpt  checkpoints/prev.ckpt  .nasflow.lock (while running)

Faults never lose a result: every file is written under a temporary name and renamed; the
search keeps its last two checkpoints and a resume takes the newest one that loads; a run
folder is locked against a second run (a lock left by a killed run is taken over); a loss or
weight that turns NaN/inf stops the run with :class:`~nasflow.errors.TrainingDiverged`
before it can overwrite a good checkpoint; Ctrl-C during the search finishes the current step,
writes a checkpoint and stops (resume continues exactly).
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import signal
import sys
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch
import yaml
from torch import nn
from tqdm import tqdm

from nasflow.run.checkpoint import (
    LOCK_NAME,
    RunLock,
    check_state_dict,
    checkpoint_files,
    load_latest,
    load_state_checked,
    rng_state,
    save_rotating,
    set_rng_state,
)
from nasflow.atomic import write_atomic, write_text_atomic
from nasflow.core.compile import compile_model
from nasflow.run.modelfile import MODEL_FILE, model_payload, read_model_file, rebuild, save_model_file
from nasflow.config import (
    apply_overrides,
    check_plain_data,
    from_dict,
    import_paths_in,
    read_yaml,
    safe_load_yaml,
    to_dict,
)
from nasflow.search.distributed import (
    DistContext,
    average_buffers_,
    barrier,
    broadcast_module_,
    broadcast_object,
    gather_digests,
    init_distributed,
    pick_device,
    shard,
    shutdown,
)
from nasflow.errors import (
    CheckpointError,
    ConfigError,
    GenotypeError,
    NasflowError,
    RegistryError,
    TrainingDiverged,
)
from nasflow.core.genotype import Genotype
from nasflow.run.layout import batch_to, resolve_memory_format
from nasflow.registries import DERIVE_RULES, HYPERGRADIENTS, STRATEGIES, resolve
from nasflow.schema import RunConfig
from nasflow.search.strategy import Strategy
from nasflow.task import Task, build_task, task_class
from nasflow.run.tb import open_writer

log = logging.getLogger("nasflow")


def resolve_config(spec: str | Path) -> Path:
    """A config file path, or the name of a built-in task config (``demo`` -> tasks/demo.yaml)."""
    path = Path(spec)
    if path.is_file():
        return path
    if path.suffix == "" and path.parent == Path("."):
        builtin = resources.files("nasflow.tasks").joinpath(f"{path.name}.yaml")
        if builtin.is_file():
            return Path(str(builtin))
    raise ConfigError(f"config file not found: {spec}")


def load_run_config(spec: str | Path, overrides: list[str] | None = None) -> RunConfig:
    data = apply_overrides(read_yaml(resolve_config(spec)), overrides or [])
    return from_dict(RunConfig, data)


def check_config(cfg: RunConfig) -> None:
    """Resolve every plugin the config names and validate the task's options, before anything
    is built or written; every problem is a :class:`ConfigError` naming its key."""
    task_cls = task_class(cfg.task)
    if task_cls.Options is not dict:
        from_dict(task_cls.Options, cfg.task_options, "task_options")
    strategy_cls = resolve(STRATEGIES, cfg.search.strategy, "search.strategy")
    if not (isinstance(strategy_cls, type) and issubclass(strategy_cls, Strategy)):
        raise ConfigError(f"search.strategy: {cfg.search.strategy!r} is not a strategy "
                          "(a subclass of nasflow.search.strategy.Strategy)")
    resolve(HYPERGRADIENTS, cfg.search.hypergradient, "search.hypergradient")
    for name, group in cfg.search.groups.items():
        if group.hypergradient:
            resolve(HYPERGRADIENTS, group.hypergradient, f"search.groups.{name}.hypergradient")
    if cfg.search.derive_rule:
        resolve(DERIVE_RULES, cfg.search.derive_rule, "search.derive_rule")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


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


@dataclass
class _Progress:
    quiet: bool

    def __call__(self, items: Iterable, desc: str, total: int | None = None) -> Any:
        disable = self.quiet or not sys.stderr.isatty()
        return tqdm(items, desc=desc, total=total, disable=disable, leave=False, dynamic_ncols=True)


def _setup_logging(run_dir: Path, quiet: bool) -> logging.Handler:
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


@dataclass
class SearchResult:
    model: nn.Module
    history: list[dict[str, float]]  # per-epoch mean logs
    genotypes: list[dict[str, Any]]  # derived genotype after each epoch


def _checkpoint_dir(run_dir: Path) -> Path:
    return run_dir / "checkpoints"


def _checkpoint_path(run_dir: Path) -> Path:
    return _checkpoint_dir(run_dir) / "last.ckpt"


class _Interrupt:
    """Ctrl-C during the search: finish the step, checkpoint, stop (a second Ctrl-C stops at once).

    Only in the main thread of a single-process run (under torchrun the ranks would stop at
    different steps).
    """

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.requested = False
        self._previous: Any = None

    def __enter__(self) -> "_Interrupt":
        if self.enabled:
            try:
                self._previous = signal.signal(signal.SIGINT, self._handle)
            except ValueError:  # not the main thread
                self.enabled = False
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        os.write(2, b"nasflow: interrupted; finishing this step and writing a checkpoint (Ctrl-C again to stop now)\n")

    def __exit__(self, *exc: object) -> None:
        if self.enabled:
            signal.signal(signal.SIGINT, self._previous)


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped the search after writing a checkpoint; the message says how to resume."""


def _non_finite(logs: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in logs.items() if not k.startswith("lr/") and isinstance(v, (int, float))
            and not math.isfinite(v)}


def _first_bad_parameter(model: nn.Module) -> str | None:
    for name, p in model.named_parameters():
        if not bool(torch.isfinite(p.detach()).all()):
            return name
    return None


def _describe_checkpoint(run_dir: Path | None, saved: dict[str, int] | None) -> str:
    if run_dir is None:
        return "no checkpoint is written by this run"
    if saved is None:
        files = checkpoint_files(_checkpoint_dir(run_dir))
        return (f"the checkpoint {files[0]} is kept" if files else "no checkpoint had been written yet")
    return (f"the last good checkpoint {_checkpoint_path(run_dir)} (epoch {saved['epoch'] + 1}, "
            f"step {saved['step']}) is kept")


def _search_hint(cfg: RunConfig) -> str:
    w, a = cfg.search.weight_optimizer, cfg.search.arch_optimizer
    return (f"hint: lower the learning rates (search.weight_optimizer.lr={w.lr:g}, search.arch_optimizer.lr={a.lr:g}) "
            f"or the gradient clip (search.grad_clip={cfg.search.grad_clip:g}) and start a new run")


def search(cfg: RunConfig, task: Task, progress: _Progress, run_dir: Path | None = None,
           resume: dict[str, Any] | None = None, writer: Any = None, ctx: DistContext | None = None) -> SearchResult:
    """The search loop; checkpoints into ``run_dir`` and resumes from a checkpoint dict.

    Under torchrun (``ctx`` enabled) every rank runs it on its own shard of the batches; the
    strategies average gradients, so all ranks hold identical alphas and weights.
    """
    ctx = ctx or DistContext()
    layout = resolve_memory_format(cfg.memory_format, torch.device(task.device))
    model = task.build_supernet().to(task.device, memory_format=layout)
    where = str(resume.get("_path", "the checkpoint")) if resume is not None else ""
    if resume is not None:
        load_state_checked(model, resume["model"], where)
    broadcast_module_(model)  # before the strategy: second-order strategies copy the model
    weight_batches, arch_batches = task.search_batches(0)  # every epoch has as many batches
    steps = min(len(shard(list(weight_batches), ctx)), len(shard(list(arch_batches), ctx)))
    try:
        strategy = resolve(STRATEGIES, cfg.search.strategy, "search.strategy")(model, task, cfg.search, steps)
    except NasflowError:
        raise
    except ValueError as exc:  # optimizer settings torch refuses (e.g. betas outside [0, 1))
        raise ConfigError(f"search: {exc}") from None
    history: list[dict[str, float]] = []
    genotypes: list[dict[str, Any]] = []
    start_epoch, start_step, sums = 0, 0, {}
    if resume is not None:
        try:
            strategy.load_state_dict(resume["strategy"])
        except (KeyError, ValueError, RuntimeError, TypeError, IndexError) as exc:
            raise CheckpointError(f"{where}: the optimizer/strategy state does not fit this config "
                                  f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from None
        history, genotypes, sums = resume["history"], resume["genotypes"], resume["sums"]
        start_epoch, start_step = resume["epoch"], resume["step_in_epoch"]
    if resume is not None and start_epoch >= cfg.search.epochs:  # the search was done: restore what follows it
        set_rng_state(resume["rng"])
    every = cfg.checkpoint.every_steps
    saved: dict[str, int] | None = None  # where the newest checkpoint of this process stands

    def save(epoch: int, step_in_epoch: int, stage: str = "search") -> None:
        nonlocal saved
        if run_dir is None or not ctx.is_main:
            return
        bad = _first_bad_parameter(model)
        if bad is not None:  # never replace a good checkpoint by a diverged one
            raise TrainingDiverged(f"search diverged before epoch {epoch + 1}, step {step_in_epoch}: parameter "
                                   f"'{bad}' is NaN or infinite; {_describe_checkpoint(run_dir, saved)}; "
                                   f"{_search_hint(cfg)}")
        save_rotating({
            "version": 1, "stage": stage, "epoch": epoch, "step_in_epoch": step_in_epoch,
            "model": model.state_dict(), "strategy": strategy.state_dict(), "history": history,
            "genotypes": genotypes, "sums": sums, "rng": rng_state(), "config": to_dict(cfg),
        }, _checkpoint_dir(run_dir))
        saved = {"epoch": epoch, "step": step_in_epoch}

    interrupt = _Interrupt(enabled=not ctx.enabled)

    def stop_if_interrupted(epoch: int, step_in_epoch: int) -> None:
        if interrupt.requested:
            where = (f"checkpoint {_checkpoint_path(run_dir)} written at epoch {epoch + 1}, step {step_in_epoch}; "
                     f"continue with --resume {run_dir}") if run_dir is not None else "no checkpoint (no run folder)"
            raise RunInterrupted(where)

    with interrupt:
        epoch_bar = progress(range(start_epoch, cfg.search.epochs), "search", total=cfg.search.epochs - start_epoch)
        for epoch in epoch_bar:
            resuming = resume is not None and epoch == start_epoch
            if resuming:
                set_rng_state(resume["rng"])  # the model's and strategy's randomness (e.g. GDAS samples)
            if not (resuming and start_step > 0):  # a resumed epoch already began: before_epoch ran
                strategy.before_epoch(epoch)
                sums = {}
                start_step = 0
            weight_batches, arch_batches = task.search_batches(epoch)  # (seed, epoch) decide them: resume needs no more
            pairs = list(zip(shard(list(weight_batches), ctx), shard(list(arch_batches), ctx)))[:steps]
            for i in progress(range(start_step, steps), f"epoch {epoch + 1}", total=steps - start_step):
                wb, ab = pairs[i]
                t = epoch * steps + i
                strategy.before_step(t)
                logs = strategy.step(batch_to(wb, layout), batch_to(ab, layout))
                bad = _non_finite(logs)
                if bad:
                    terms = ", ".join(f"{k}={v:.4g}" for k, v in logs.items() if not k.startswith("lr/"))
                    raise TrainingDiverged(f"search diverged at step {t + 1} (epoch {epoch + 1}, step {i + 1} of {steps}): "
                                           f"{', '.join(sorted(bad))} became NaN or infinite ({terms}); "
                                           f"{_describe_checkpoint(run_dir, saved)}; {_search_hint(cfg)}")
                strategy.after_step(t, logs)
                for k, v in logs.items():
                    sums[k] = sums.get(k, 0.0) + v
                if writer is not None:
                    writer.scalars(logs, t)
                if (every and (t + 1) % every == 0 or interrupt.requested) and i + 1 < steps:
                    save(epoch, i + 1)
                    stop_if_interrupted(epoch, i + 1)
            average_buffers_(model)  # BatchNorm statistics drift apart per shard
            strategy.after_epoch(epoch)
            means = {k: v / max(1, steps) for k, v in sums.items()}
            history.append(means)
            genotype = model.derive(cfg.search.derive_rule)  # type: ignore[operator]
            genotypes.append({"epoch": epoch + 1, "genotype": genotype.to_dict()})
            if writer is not None:
                writer.arch(model, (epoch + 1) * steps)
                writer.genotype(genotype, (epoch + 1) * steps)
            log.info("search epoch %d/%d %s", epoch + 1, cfg.search.epochs,
                     " ".join(f"{k}={v:.4g}" for k, v in means.items() if "loss" in k))
            sums = {}
            save(epoch + 1, 0)
            stop_if_interrupted(epoch + 1, 0)
    return SearchResult(model, history, genotypes)


def train(cfg: RunConfig, task: Task, model: nn.Module, progress: _Progress) -> nn.Module:
    """Train the compiled network, phase by phase (``Task.train_phases``), each for ``train.epochs``."""
    if cfg.train.epochs == 0:
        return model
    layout = resolve_memory_format(cfg.memory_format, torch.device(task.device))
    model.to(memory_format=layout)  # in place: the phases' parameter lists stay valid
    data_epoch = 0  # training epochs counted over all phases: each sees fresh batches
    for phase in task.train_phases(model):
        if not phase.parameters:
            continue
        opt = torch.optim.Adam(phase.parameters, lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.train.epochs)
        for epoch in progress(range(cfg.train.epochs), f"train {phase.name}"):
            model.train()
            total, n = 0.0, 0
            for b, batch in enumerate(task.train_batches(data_epoch)):
                opt.zero_grad(set_to_none=True)
                terms = phase.loss(model, batch_to(batch, layout))
                loss = terms["loss"]
                value = float(loss.detach())
                if not math.isfinite(value):
                    shown = ", ".join(f"{k}={float(v.detach()):.4g}" for k, v in terms.items())
                    raise TrainingDiverged(
                        f"training diverged in phase '{phase.name}', epoch {epoch + 1}, batch {b + 1}: the loss "
                        f"became NaN or infinite ({shown}); the search result (genotype.json, checkpoints) is kept; "
                        f"hint: lower the learning rate (train.lr={cfg.train.lr:g}) and train again")
                loss.backward()
                opt.step()
                total, n = total + value, n + 1
            sched.step()
            data_epoch += 1
            log.info("train %s epoch %d/%d loss=%.4g", phase.name, epoch + 1, cfg.train.epochs, total / max(1, n))
    return model


_CHECKPOINT_KEYS = ("epoch", "step_in_epoch", "model", "strategy", "history", "genotypes", "sums", "rng")


def _check_checkpoint(state: Any, path: Path) -> None:
    if not isinstance(state, dict) or any(k not in state for k in _CHECKPOINT_KEYS):
        found = sorted(map(str, state)) if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(f"{path} is not a nasflow search checkpoint (expected keys {list(_CHECKPOINT_KEYS)}, "
                              f"found {found})")
    if not isinstance(state["epoch"], int) or not isinstance(state["step_in_epoch"], int):
        raise CheckpointError(f"{path}: epoch and step_in_epoch must be integers")


def _resume_state(run_dir: Path, cfg: RunConfig, task: Task, notices: list[str],
                  tidy: bool = True) -> dict[str, Any] | None:
    """The newest usable checkpoint of ``run_dir`` (last.ckpt, else prev.ckpt), after checking that
    the run's saved config matches; ``notices`` gets what the user should be told. ``tidy``
    (rank 0 only) removes temp files left by a kill and moves an unusable last.ckpt aside."""
    folder = _checkpoint_dir(run_dir)
    if not checkpoint_files(folder):
        return None
    saved_path = run_dir / "config.yaml"
    if saved_path.is_file():
        try:
            saved = safe_load_yaml(saved_path.read_text(encoding="utf-8"), str(saved_path), ConfigError)
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot resume {run_dir}: cannot read {saved_path} ({exc})") from None
        check_plain_data(saved, str(saved_path))
        differ = _differences(saved, to_dict(cfg))
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
        _check_checkpoint(state, path)
        check_state_dict(template, state["model"], str(path))

    loaded = load_latest(folder, check)
    state = loaded.state
    if "config" in state:
        differ = _differences(state["config"], to_dict(cfg))
        if differ:
            raise CheckpointError(f"cannot resume {run_dir}: {loaded.path} was written with another config "
                                  f"(differs at {', '.join(differ[:5])})")
    for problem in loaded.skipped:
        notices.append(f"skipped an unusable checkpoint: {problem}")
    if tidy and loaded.path.name != "last.ckpt" and _checkpoint_path(run_dir).exists():
        aside = _checkpoint_path(run_dir).with_name("last.ckpt.unreadable")
        os.replace(_checkpoint_path(run_dir), aside)  # never rotated over the good one
        notices.append(f"moved the unusable checkpoint aside to {aside}")
    notices.append(f"resuming {run_dir} from {loaded.path} (epoch {state['epoch'] + 1}, step {state['step_in_epoch']})")
    state["_path"] = str(loaded.path)
    return state


def _differences(a: Any, b: Any, path: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in sorted(set(a) | set(b)):
            out += _differences(a.get(key), b.get(key), f"{path}.{key}" if path else key)
        return out
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        a, b = list(a), list(b)
    return [] if a == b else [path or "(root)"]


def configure_determinism(cfg: RunConfig) -> None:
    if cfg.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False


def run(cfg: RunConfig, out: str | Path | None = None, quiet: bool = False, resume: str | Path | None = None,
        genotype: Genotype | str | None = None, search_only: bool = False) -> Path:
    """Run the stages; returns the run folder.

    ``genotype`` (or the name of one of the task's named genotypes) skips the search and trains
    that architecture; ``search_only`` stops after the
    genotype is derived. A run folder holding a checkpoint (``resume`` or ``out``) is resumed.
    Under ``torchrun`` every rank searches on its shard; only rank 0 writes files, trains the
    compiled network and evaluates it.
    """
    check_config(cfg)
    seed_everything(cfg.seed)
    configure_determinism(cfg)
    ctx = init_distributed(cfg.device)
    try:
        return _run(cfg, ctx, out, quiet or not ctx.is_main, resume, genotype, search_only)
    finally:
        shutdown()


def _run(cfg: RunConfig, ctx: DistContext, out: str | Path | None, quiet: bool, resume: str | Path | None,
         genotype: Genotype | str | None, search_only: bool) -> Path:
    device = ctx.device  # init_distributed chose it (auto/cpu/cuda), with or without torchrun
    task = build_task(cfg, device, trusted=True)
    if isinstance(genotype, str):
        named = task.named_genotypes()
        if genotype not in named:
            known = ", ".join(sorted(named)) or "none"
            raise ConfigError(f"--genotype {genotype}: no such file, and task '{cfg.task}' names no such genotype "
                              f"(named genotypes: {known})")
        genotype = named[genotype]
    if genotype is not None:
        try:  # a genotype that does not fit fails before any file is written
            compile_model(task.build_supernet(), genotype)
        except RegistryError as exc:
            raise GenotypeError(f"genotype: {exc}") from None
    target = resume if resume is not None else out
    lock: RunLock | None = None
    if ctx.is_main and target is not None and _is_run_folder(Path(target)):
        lock = RunLock.acquire(Path(target))  # a live run in this folder is refused before we look inside
    try:
        return _run_locked(cfg, ctx, task, out, quiet, resume, genotype, search_only, target, lock)
    finally:
        if lock is not None:
            lock.release()


def _is_run_folder(path: Path) -> bool:
    return path.is_dir() and any((path / name).exists() for name in (LOCK_NAME, "checkpoints", "config.yaml"))


def _run_locked(cfg: RunConfig, ctx: DistContext, task: Task, out: str | Path | None, quiet: bool,
                resume: str | Path | None, genotype: Genotype | None, search_only: bool,
                target: str | Path | None, lock: RunLock | None) -> Path:
    state = None
    notices: list[str] = []
    if lock is not None and lock.took_over is not None:
        notices.append(f"took over the stale lock of pid {lock.took_over} (that process is no longer running)")
    if genotype is None and target is not None and checkpoint_files(_checkpoint_dir(Path(target))):
        run_dir = Path(target)
        state = _resume_state(run_dir, cfg, task, notices, tidy=ctx.is_main)
    elif resume is not None:
        raise ConfigError(f"nothing to resume: {_checkpoint_path(Path(resume))} does not exist")
    else:
        run_dir = Path(broadcast_object(str(make_run_dir(out, cfg.task)) if ctx.is_main else None))
        if ctx.is_main and lock is None:  # (a lock already held is on this very folder: target == out)
            lock = RunLock.acquire(run_dir)
            if lock.took_over is not None:
                notices.append(f"took over the stale lock of pid {lock.took_over} (that process is no longer running)")
    try:
        return _run_in_folder(cfg, ctx, task, quiet, genotype, search_only, run_dir, state, notices)
    finally:
        if lock is not None:
            lock.release()


def _run_in_folder(cfg: RunConfig, ctx: DistContext, task: Task, quiet: bool, genotype: Genotype | None,
                   search_only: bool, run_dir: Path, state: dict[str, Any] | None, notices: list[str]) -> Path:
    device = ctx.device
    if not ctx.is_main:
        if genotype is None:
            result = search(cfg, task, _Progress(quiet=True), run_dir, state, None, ctx)
            gather_digests(result.model.arch_parameters())  # type: ignore[operator]  # same collectives as rank 0
        barrier()  # rank 0 trains, evaluates and writes
        return run_dir
    handler = _setup_logging(run_dir, quiet)
    for notice in notices:
        log.warning(notice)
        if quiet:
            print(f"nasflow: {notice}", file=sys.stderr)
    progress = _Progress(quiet)
    writer = open_writer(run_dir / "tb", enabled=cfg.tensorboard)
    try:
        if state is None:
            write_text_atomic(run_dir / "config.yaml", yaml.safe_dump(to_dict(cfg), sort_keys=False))
        started = time.perf_counter()
        if genotype is None:
            genotype = _search_stage(cfg, task, progress, run_dir, state, writer, ctx)
        genotype.save(run_dir / "genotype.json")
        _draw(genotype, run_dir / "genotype")
        log.info("genotype: %s", {label: genotype.ops(label) for label in genotype.labels})
        if search_only:
            return run_dir

        torch.manual_seed(cfg.seed + 1)  # fresh weights for the compiled network
        final = compile_model(task.build_supernet(), genotype).to(device)
        final = train(cfg, task, final, progress)
        metrics = task.evaluate(final, genotype)
        task.export(final, genotype, run_dir)
        metrics["seconds"] = time.perf_counter() - started
        samples = task.samples(final)
        writer.images(samples, cfg.search.epochs)
        _save_samples(samples, run_dir / "samples")
        writer.hparams(to_dict(cfg), {k: v for k, v in metrics.items() if isinstance(v, (int, float))})
        _write_json(run_dir / "metrics.json", metrics)
        save_model_file(model_payload(final.state_dict(), genotype.to_dict(), to_dict(cfg)), run_dir / MODEL_FILE)
        log.info("metrics: %s", json.dumps(metrics))
    finally:
        writer.close()
        log.removeHandler(handler)
        handler.close()
        barrier()
    return run_dir


def _search_stage(cfg: RunConfig, task: Task, progress: _Progress, run_dir: Path, state: dict[str, Any] | None,
                  writer: Any, ctx: DistContext) -> Genotype:
    result = search(cfg, task, progress, run_dir, state, writer, ctx)
    if ctx.enabled:
        _write_json(run_dir / "distributed.json", {
            "world_size": ctx.world_size,
            "alpha_sha256_per_rank": gather_digests(result.model.arch_parameters()),  # type: ignore[operator]
        })
    _write_json(run_dir / "search_history.json", result.history)
    _write_json(run_dir / "genotype_history.json", result.genotypes)
    return result.model.derive(cfg.search.derive_rule)  # type: ignore[operator]


def _save_samples(samples: dict[str, torch.Tensor], folder: Path) -> None:
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


def _write_json(path: Path, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, indent=2) + "\n")


def evaluate_run(run_dir: str | Path) -> dict[str, float]:
    """Re-evaluate a finished run from its folder (config.yaml, genotype.json, model.pt) into eval.json."""
    run_dir = Path(run_dir)
    for name in ("config.yaml", MODEL_FILE):
        if not (run_dir / name).is_file():
            raise ConfigError(f"{run_dir} is not a finished run folder: {name} is missing")
    data = read_yaml(run_dir / "config.yaml")
    cfg = from_dict(RunConfig, data)
    check_config(cfg)
    model_path = run_dir / MODEL_FILE
    seed_everything(cfg.seed)
    # the run folder's own config builds the task (trusted, as when it ran); the file gives genotype and weights
    rebuilt = rebuild(read_model_file(model_path), pick_device(cfg.device), str(model_path), config=cfg, trusted=True,
                      allowed_paths=import_paths_in(data), seed=None)
    task, model, genotype = rebuilt.task, rebuilt.network, rebuilt.genotype
    metrics = task.evaluate(model, genotype)
    _write_json(run_dir / "eval.json", metrics)
    return metrics


def _draw(genotype: Any, stem: Path) -> None:
    from nasflow.core.viz import write_genotype_picture

    result = write_genotype_picture(genotype, stem)
    if result.hint:
        log.info(result.hint)


def run_from_file(config: str | Path, overrides: list[str] | None = None, out: str | Path | None = None,
                  quiet: bool = False, resume: str | Path | None = None, genotype: str | Path | None = None,
                  search_only: bool = False) -> Path:
    """``nasflow run|search|train``: load the config, then :func:`run`."""
    cfg = load_run_config(config, overrides)
    geno: Genotype | str | None = None
    if genotype is not None:
        path = Path(genotype)
        is_name = not path.exists() and path.suffix == "" and path.parent == Path(".")
        # a bare name: the task's named genotype; import paths only where the config itself names them
        geno = str(genotype) if is_name else Genotype.load(path, allowed_paths=import_paths_in(to_dict(cfg)))
    return run(cfg, out=out, quiet=quiet, resume=resume, genotype=geno, search_only=search_only)

"""The search loop: a strategy's steps over the task's batches, with checkpoints, resume and guards.

Ctrl-C finishes the current step, writes a checkpoint and stops (resume continues exactly); a
loss or weight that turns NaN/inf stops the search with :class:`~nasflow.errors.TrainingDiverged`
before it can overwrite a good checkpoint. A checkpoint holds the model, the strategy, the logs
and the RNG state of the model's own randomness; the task's batches are a function of (seed,
epoch), so (epoch, step) is all a resumed epoch needs to rebuild them.
"""

from __future__ import annotations

import logging
import math
import os
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nasflow.config import to_dict
from nasflow.errors import CheckpointError, ConfigError, NasflowError, TrainingDiverged
from nasflow.registries import STRATEGIES, resolve
from nasflow.run.checkpoint import load_state_checked, rng_state, save_rotating, set_rng_state
from nasflow.run.context import _Progress
from nasflow.run.folder import checkpoint_dir, checkpoint_path, describe_checkpoint
from nasflow.run.layout import batch_to, resolve_memory_format
from nasflow.schema import RunConfig
from nasflow.search.distributed import DistContext, average_buffers_, broadcast_module_, shard
from nasflow.task import Task

log = logging.getLogger("nasflow")


@dataclass
class SearchResult:
    model: nn.Module
    history: list[dict[str, float]]  # per-epoch mean logs
    genotypes: list[dict[str, Any]]  # derived genotype after each epoch


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
                                   f"'{bad}' is NaN or infinite; {describe_checkpoint(run_dir, saved)}; "
                                   f"{_search_hint(cfg)}")
        save_rotating({
            "version": 1, "stage": stage, "epoch": epoch, "step_in_epoch": step_in_epoch,
            "model": model.state_dict(), "strategy": strategy.state_dict(), "history": history,
            "genotypes": genotypes, "sums": sums, "rng": rng_state(), "config": to_dict(cfg),
        }, checkpoint_dir(run_dir))
        saved = {"epoch": epoch, "step": step_in_epoch}

    interrupt = _Interrupt(enabled=not ctx.enabled)

    def stop_if_interrupted(epoch: int, step_in_epoch: int) -> None:
        if interrupt.requested:
            where = (f"checkpoint {checkpoint_path(run_dir)} written at epoch {epoch + 1}, step {step_in_epoch}; "
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
                                           f"{describe_checkpoint(run_dir, saved)}; {_search_hint(cfg)}")
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
            epoch_logs = strategy.epoch_logs()
            means.update(epoch_logs)
            if writer is not None and epoch_logs:
                writer.scalars(epoch_logs, (epoch + 1) * steps)
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

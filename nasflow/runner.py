"""``nasflow run``: search -> derive -> train the compiled network -> evaluate -> export.

Every stage writes into one run folder::

    runs/<task>-<timestamp>/
      config.yaml  genotype.json  genotype.dot/.svg  metrics.json  model.pt  log.txt
"""

from __future__ import annotations

import json
import logging
import os
import random
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

from nasflow.checkpoint import load_safe, rng_state, save_atomic, set_rng_state
from nasflow.compile import compile_model
from nasflow.config import apply_overrides, from_dict, read_yaml, to_dict
from nasflow.distributed import (
    DistContext,
    average_buffers_,
    barrier,
    broadcast_module_,
    broadcast_object,
    gather_digests,
    init_distributed,
    shard,
    shutdown,
)
from nasflow.errors import ConfigError
from nasflow.genotype import Genotype
from nasflow.registries import STRATEGIES, TASKS
from nasflow.schema import RunConfig
from nasflow.task import Task
from nasflow.tb import open_writer

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


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def pick_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device: 'cuda' was asked for but no CUDA device is available (use device: auto or cpu)")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


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
        if path.exists() and (not path.is_dir() or any(path.iterdir())):
            raise ConfigError(f"run folder {path} already exists and is not empty; choose another --out")
    path.mkdir(parents=True, exist_ok=True)
    return path


def build_task(cfg: RunConfig, device: torch.device) -> Task:
    cls = TASKS.get(cfg.task)
    options = from_dict(cls.Options, cfg.task_options, "task_options") if cls.Options is not dict else cfg.task_options
    return cls(options, seed=cfg.seed, device=device)


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


def _checkpoint_path(run_dir: Path) -> Path:
    return run_dir / "checkpoints" / "last.ckpt"


def search(cfg: RunConfig, task: Task, progress: _Progress, run_dir: Path | None = None,
           resume: dict[str, Any] | None = None, writer: Any = None, ctx: DistContext | None = None) -> SearchResult:
    """The search loop; checkpoints into ``run_dir`` and resumes from a checkpoint dict.

    Under torchrun (``ctx`` enabled) every rank runs it on its own shard of the batches; the
    strategies average gradients, so all ranks hold identical alphas and weights.
    """
    ctx = ctx or DistContext()
    model = task.build_supernet().to(task.device)
    if resume is not None:
        model.load_state_dict(resume["model"])
    broadcast_module_(model)  # before the strategy: second-order strategies copy the model
    weight_batches, arch_batches = task.search_batches()
    steps = min(len(shard(list(weight_batches), ctx)), len(shard(list(arch_batches), ctx)))
    strategy = STRATEGIES.get(cfg.search.strategy)(model, task, cfg.search, steps)
    history: list[dict[str, float]] = []
    genotypes: list[dict[str, Any]] = []
    start_epoch, start_step, sums = 0, 0, {}
    if resume is not None:
        strategy.load_state_dict(resume["strategy"])
        history, genotypes, sums = resume["history"], resume["genotypes"], resume["sums"]
        start_epoch, start_step = resume["epoch"], resume["step_in_epoch"]
    every = cfg.checkpoint.every_steps

    def save(epoch: int, step_in_epoch: int, epoch_rng: dict, epoch_task: dict, stage: str = "search") -> None:
        if run_dir is None or not ctx.is_main:
            return
        save_atomic({
            "version": 1, "stage": stage, "epoch": epoch, "step_in_epoch": step_in_epoch,
            "model": model.state_dict(), "strategy": strategy.state_dict(), "history": history,
            "genotypes": genotypes, "sums": sums, "rng": rng_state(), "epoch_rng": epoch_rng,
            "epoch_task": epoch_task,
        }, _checkpoint_path(run_dir))

    epoch_bar = progress(range(start_epoch, cfg.search.epochs), "search", total=cfg.search.epochs - start_epoch)
    for epoch in epoch_bar:
        if resume is not None and epoch == start_epoch and start_step > 0:
            # Rebuild this epoch's batches exactly, then continue from the saved step and RNG state.
            epoch_rng, epoch_task = resume["epoch_rng"], resume["epoch_task"]
            set_rng_state(epoch_rng)
            task.load_state_dict(epoch_task)
            weight_batches, arch_batches = task.search_batches()
            set_rng_state(resume["rng"])
        else:
            if resume is not None and epoch == start_epoch:
                set_rng_state(resume["rng"])
                task.load_state_dict(resume["epoch_task"])
            strategy.before_epoch(epoch)
            epoch_rng, epoch_task = rng_state(), task.state_dict()
            weight_batches, arch_batches = task.search_batches()
            sums = {}
            start_step = 0
        pairs = list(zip(shard(list(weight_batches), ctx), shard(list(arch_batches), ctx)))[:steps]
        for i in progress(range(start_step, steps), f"epoch {epoch + 1}", total=steps - start_step):
            wb, ab = pairs[i]
            t = epoch * steps + i
            strategy.before_step(t)
            logs = strategy.step(wb, ab)
            strategy.after_step(t, logs)
            for k, v in logs.items():
                sums[k] = sums.get(k, 0.0) + v
            if writer is not None:
                writer.scalars(logs, t)
            if every and (t + 1) % every == 0 and i + 1 < steps:
                save(epoch, i + 1, epoch_rng, epoch_task)
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
        save(epoch + 1, 0, {}, task.state_dict())
    return SearchResult(model, history, genotypes)


def train(cfg: RunConfig, task: Task, model: nn.Module, progress: _Progress) -> nn.Module:
    """Train the compiled network, phase by phase (``Task.train_phases``), each for ``train.epochs``."""
    if cfg.train.epochs == 0:
        return model
    for phase in task.train_phases(model):
        if not phase.parameters:
            continue
        opt = torch.optim.Adam(phase.parameters, lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.train.epochs)
        for epoch in progress(range(cfg.train.epochs), f"train {phase.name}"):
            model.train()
            total, n = 0.0, 0
            for batch in task.train_batches():
                opt.zero_grad(set_to_none=True)
                loss = phase.loss(model, batch)["loss"]
                loss.backward()
                opt.step()
                total, n = total + float(loss.detach()), n + 1
            sched.step()
            log.info("train %s epoch %d/%d loss=%.4g", phase.name, epoch + 1, cfg.train.epochs, total / max(1, n))
    return model


def _resume_state(run_dir: Path, cfg: RunConfig) -> dict[str, Any] | None:
    """The checkpoint of ``run_dir``, after checking that the run's saved config matches."""
    ckpt = _checkpoint_path(run_dir)
    if not ckpt.is_file():
        return None
    saved_path = run_dir / "config.yaml"
    if saved_path.is_file():
        saved = yaml.safe_load(saved_path.read_text(encoding="utf-8"))
        differ = _differences(saved, to_dict(cfg))
        if differ:
            raise ConfigError(f"cannot resume {run_dir}: the config differs from the run's saved config at "
                              f"{', '.join(differ[:5])} (resume with the same config and --set values)")
    return load_safe(ckpt)


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
    task = build_task(cfg, device)
    if isinstance(genotype, str):
        named = task.named_genotypes()
        if genotype not in named:
            known = ", ".join(sorted(named)) or "none"
            raise ConfigError(f"--genotype {genotype}: no such file, and task '{cfg.task}' names no such genotype "
                              f"(named genotypes: {known})")
        genotype = named[genotype]
    if genotype is not None:
        compile_model(task.build_supernet(), genotype)  # a genotype that does not fit fails before any file is written
    target = resume if resume is not None else out
    state = None
    if genotype is None and target is not None and _checkpoint_path(Path(target)).is_file():
        run_dir = Path(target)
        state = _resume_state(run_dir, cfg)
    elif resume is not None:
        raise ConfigError(f"nothing to resume: {_checkpoint_path(Path(resume))} does not exist")
    else:
        run_dir = Path(broadcast_object(str(make_run_dir(out, cfg.task)) if ctx.is_main else None))
    if not ctx.is_main:
        if genotype is None:
            result = search(cfg, task, _Progress(quiet=True), run_dir, state, None, ctx)
            gather_digests(result.model.arch_parameters())  # type: ignore[operator]  # same collectives as rank 0
        barrier()  # rank 0 trains, evaluates and writes
        return run_dir
    handler = _setup_logging(run_dir, quiet)
    progress = _Progress(quiet)
    writer = open_writer(run_dir / "tb", enabled=cfg.tensorboard)
    try:
        if state is None:
            (run_dir / "config.yaml").write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False), encoding="utf-8")
        else:
            log.info("resuming %s from epoch %d, step %d", run_dir, state["epoch"] + 1, state["step_in_epoch"])
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
        state_dict = {k: v.detach().cpu() for k, v in final.state_dict().items()}  # loads without map_location
        save_atomic({"state_dict": state_dict, "genotype": genotype.to_dict(), "config": to_dict(cfg)},
                    run_dir / "model.pt")
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
    """Sample images as PNG files (CHW or NCHW in [0, 1]; a batch becomes one file per image)."""
    from PIL import Image

    for name, image in samples.items():
        batch = image.detach().float().cpu().clamp(0, 1)
        batch = batch.unsqueeze(0) if batch.dim() == 3 else batch
        for i, chw in enumerate(batch):
            folder.mkdir(parents=True, exist_ok=True)
            array = (chw.permute(1, 2, 0).numpy() * 255.0).round().astype(np.uint8)
            suffix = f"_{i}" if len(batch) > 1 else ""
            Image.fromarray(array.squeeze(-1) if array.shape[-1] == 1 else array).save(folder / f"{name}{suffix}.png")


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def evaluate_run(run_dir: str | Path) -> dict[str, float]:
    """Re-evaluate a finished run from its folder (config.yaml, genotype.json, model.pt) into eval.json."""
    run_dir = Path(run_dir)
    for name in ("config.yaml", "model.pt"):
        if not (run_dir / name).is_file():
            raise ConfigError(f"{run_dir} is not a finished run folder: {name} is missing")
    cfg = from_dict(RunConfig, read_yaml(run_dir / "config.yaml"))
    saved = load_safe(run_dir / "model.pt")
    genotype = Genotype.from_dict(saved["genotype"])
    seed_everything(cfg.seed)
    task = build_task(cfg, pick_device(cfg.device))
    model = compile_model(task.build_supernet(), genotype).to(task.device)
    model.load_state_dict(saved["state_dict"])
    metrics = task.evaluate(model, genotype)
    _write_json(run_dir / "eval.json", metrics)
    return metrics


def _draw(genotype: Any, stem: Path) -> None:
    from nasflow.viz import write_genotype_picture

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
        geno = str(genotype) if is_name else Genotype.load(path)  # a bare name: the task's named genotype
    return run(cfg, out=out, quiet=quiet, resume=resume, genotype=geno, search_only=search_only)

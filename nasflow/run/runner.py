"""``nasflow run``: search -> derive -> train the compiled network -> evaluate -> export.

The job, stage by stage, around one :class:`~nasflow.run.context.RunContext`: config resolution,
seeding and device here; the run folder, its lock and resume in :mod:`nasflow.run.folder`; the
loops in :mod:`nasflow.run.search_loop` and :mod:`nasflow.run.train_loop`. Every file is written
under a temporary name and renamed, so faults never lose a result (the folder's layout:
:mod:`nasflow.run.folder`).
"""

from __future__ import annotations

import json
import logging
import os
import random
import sys
import time
from importlib import resources
from pathlib import Path

import numpy as np
import torch
import yaml

from nasflow.atomic import write_text_atomic
from nasflow.config import apply_overrides, from_dict, import_paths_in, read_yaml, to_dict
from nasflow.core.compile import compile_model
from nasflow.core.genotype import Genotype
from nasflow.errors import ConfigError, GenotypeError, RegistryError
from nasflow.registries import DERIVE_RULES, HYPERGRADIENTS, STRATEGIES, resolve
from nasflow.run.context import RunContext, _Progress
from nasflow.run.folder import (  # noqa: F401  (make_run_dir: re-exported)
    make_run_dir,
    open_run_folder,
    save_samples,
    setup_logging,
    write_json,
)
from nasflow.run.modelfile import MODEL_FILE, model_payload, read_model_file, rebuild, save_model_file
from nasflow.run.search_loop import RunInterrupted, SearchResult, search  # noqa: F401  (re-exported)
from nasflow.run.tb import open_writer
from nasflow.run.train_loop import train
from nasflow.schema import RunConfig
from nasflow.search.distributed import barrier, gather_digests, init_distributed, pick_device, shutdown
from nasflow.search.strategy import Strategy
from nasflow.task import build_task, task_class

__all__ = ["RunInterrupted", "SearchResult", "_Progress", "check_config", "evaluate_run", "load_run_config",
           "make_run_dir", "resolve_config", "run", "run_from_file", "search", "seed_everything", "train"]

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
    dist = init_distributed(cfg.device)
    try:
        rc = RunContext(cfg=cfg, dist=dist, quiet=quiet or not dist.is_main, out=out, resume=resume,
                        search_only=search_only)
        rc.task = build_task(cfg, dist.device, trusted=True)  # init_distributed chose the device
        rc.genotype = _given_genotype(rc, genotype)
        with open_run_folder(rc):
            return _run_in_folder(rc)
    finally:
        shutdown()


def _given_genotype(rc: RunContext, genotype: Genotype | str | None) -> Genotype | None:
    """The genotype to train instead of searching (a task's named genotype by its name), checked to fit
    before any file is written."""
    if isinstance(genotype, str):
        named = rc.task.named_genotypes()
        if genotype not in named:
            known = ", ".join(sorted(named)) or "none"
            raise ConfigError(f"--genotype {genotype}: no such file, and task '{rc.cfg.task}' names no such genotype "
                              f"(named genotypes: {known})")
        genotype = named[genotype]
    if genotype is not None:
        try:
            compile_model(rc.task.build_supernet(), genotype)
        except RegistryError as exc:
            raise GenotypeError(f"genotype: {exc}") from None
    return genotype


def _run_in_folder(rc: RunContext) -> Path:
    cfg, task, run_dir = rc.cfg, rc.task, rc.run_dir
    if not rc.dist.is_main:
        if rc.genotype is None:
            result = search(cfg, task, _Progress(quiet=True), run_dir, rc.state, None, rc.dist)
            gather_digests(result.model.arch_parameters())  # type: ignore[operator]  # same collectives as rank 0
        barrier()  # rank 0 trains, evaluates and writes
        return run_dir
    handler = setup_logging(run_dir, rc.quiet)
    for notice in rc.notices:
        log.warning(notice)
        if rc.quiet:
            print(f"nasflow: {notice}", file=sys.stderr)
    progress = rc.progress
    writer = open_writer(run_dir / "tb", enabled=cfg.tensorboard)
    try:
        if rc.state is None:
            write_text_atomic(run_dir / "config.yaml", yaml.safe_dump(to_dict(cfg), sort_keys=False))
        started = time.perf_counter()
        genotype = rc.genotype if rc.genotype is not None else _search_stage(rc, writer)
        genotype.save(run_dir / "genotype.json")
        _draw(genotype, run_dir / "genotype")
        log.info("genotype: %s", {label: genotype.ops(label) for label in genotype.labels})
        if rc.search_only:
            return run_dir

        torch.manual_seed(cfg.seed + 1)  # fresh weights for the compiled network
        final = compile_model(task.build_supernet(), genotype).to(rc.dist.device)
        final = train(cfg, task, final, progress)
        metrics = task.evaluate(final, genotype)
        task.export(final, genotype, run_dir)
        metrics["seconds"] = time.perf_counter() - started
        samples = task.samples(final)
        writer.images(samples, cfg.search.epochs)
        save_samples(samples, run_dir / "samples")
        writer.hparams(to_dict(cfg), {k: v for k, v in metrics.items() if isinstance(v, (int, float))})
        write_json(run_dir / "metrics.json", metrics)
        save_model_file(model_payload(final.state_dict(), genotype.to_dict(), to_dict(cfg)), run_dir / MODEL_FILE)
        log.info("metrics: %s", json.dumps(metrics))
    finally:
        writer.close()
        log.removeHandler(handler)
        handler.close()
        barrier()
    return run_dir


def _search_stage(rc: RunContext, writer: object) -> Genotype:
    result = search(rc.cfg, rc.task, rc.progress, rc.run_dir, rc.state, writer, rc.dist)
    if rc.dist.enabled:
        write_json(rc.run_dir / "distributed.json", {
            "world_size": rc.dist.world_size,
            "alpha_sha256_per_rank": gather_digests(result.model.arch_parameters()),  # type: ignore[operator]
        })
    write_json(rc.run_dir / "search_history.json", result.history)
    write_json(rc.run_dir / "genotype_history.json", result.genotypes)
    return result.model.derive(rc.cfg.search.derive_rule)  # type: ignore[operator]


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
    write_json(run_dir / "eval.json", metrics)
    return metrics


def _draw(genotype: Genotype, stem: Path) -> None:
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

"""``nasflow run``: search -> derive -> train the compiled network -> evaluate -> export.

Every stage writes into one run folder::

    runs/<task>-<timestamp>/
      config.yaml  genotype.json  genotype.dot/.svg  metrics.json  model.pt  log.txt
"""

from __future__ import annotations

import json
import logging
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

from nasflow.compile import compile_model
from nasflow.config import apply_overrides, from_dict, read_yaml, to_dict
from nasflow.errors import ConfigError
from nasflow.registries import STRATEGIES, TASKS
from nasflow.schema import RunConfig
from nasflow.task import Task

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


def search(cfg: RunConfig, task: Task, progress: _Progress) -> tuple[nn.Module, list[dict[str, float]]]:
    model = task.build_supernet().to(task.device)
    weight_batches, arch_batches = task.search_batches()
    steps = min(len(list(weight_batches)), len(list(arch_batches)))
    strategy = STRATEGIES.get(cfg.search.strategy)(model, task, cfg.search, steps)
    history = []
    for epoch in progress(range(cfg.search.epochs), "search"):
        strategy.before_epoch(epoch)
        weight_batches, arch_batches = task.search_batches()
        sums: dict[str, float] = {}
        for i, (wb, ab) in enumerate(zip(weight_batches, arch_batches)):
            t = epoch * steps + i
            strategy.before_step(t)
            logs = strategy.step(wb, ab)
            strategy.after_step(t, logs)
            for k, v in logs.items():
                sums[k] = sums.get(k, 0.0) + v
        strategy.after_epoch(epoch)
        means = {k: v / max(1, steps) for k, v in sums.items()}
        history.append(means)
        log.info("search epoch %d/%d %s", epoch + 1, cfg.search.epochs,
                 " ".join(f"{k}={v:.4g}" for k, v in means.items() if "loss" in k))
    return model, history


def train(cfg: RunConfig, task: Task, model: nn.Module, progress: _Progress) -> nn.Module:
    params = [p for p in model.parameters() if p.requires_grad]
    if not params or cfg.train.epochs == 0:
        return model
    opt = torch.optim.Adam(params, lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.train.epochs)
    for epoch in progress(range(cfg.train.epochs), "train"):
        model.train()
        total, n = 0.0, 0
        for batch in task.train_batches():
            opt.zero_grad(set_to_none=True)
            loss = task.loss(model, batch)["loss"]
            loss.backward()
            opt.step()
            total, n = total + float(loss.detach()), n + 1
        sched.step()
        log.info("train epoch %d/%d loss=%.4g", epoch + 1, cfg.train.epochs, total / max(1, n))
    return model


def run(cfg: RunConfig, out: str | Path | None = None, quiet: bool = False) -> Path:
    """Run every stage; returns the run folder."""
    seed_everything(cfg.seed)
    device = pick_device(cfg.device)
    task = build_task(cfg, device)
    run_dir = make_run_dir(out, cfg.task)
    handler = _setup_logging(run_dir, quiet)
    progress = _Progress(quiet)
    try:
        (run_dir / "config.yaml").write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False), encoding="utf-8")
        started = time.perf_counter()
        supernet, history = search(cfg, task, progress)
        genotype = supernet.derive(cfg.search.derive_rule)  # type: ignore[operator]
        genotype.save(run_dir / "genotype.json")
        _draw(genotype, run_dir / "genotype")
        log.info("genotype: %s", {label: genotype.ops(label) for label in genotype.labels})

        torch.manual_seed(cfg.seed + 1)  # fresh weights for the compiled network
        final = compile_model(task.build_supernet(), genotype).to(device)
        final = train(cfg, task, final, progress)
        metrics = task.evaluate(final, genotype)
        metrics["seconds"] = time.perf_counter() - started
        (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
        (run_dir / "search_history.json").write_text(json.dumps(history, indent=1) + "\n", encoding="utf-8")
        state = {k: v.detach().cpu() for k, v in final.state_dict().items()}  # loads without map_location
        torch.save({"state_dict": state, "genotype": genotype.to_dict(), "config": to_dict(cfg)},
                   run_dir / "model.pt")
        log.info("metrics: %s", json.dumps(metrics))
    finally:
        log.removeHandler(handler)
        handler.close()
    return run_dir


def _draw(genotype: Any, stem: Path) -> None:
    from nasflow.viz import write_genotype_picture

    result = write_genotype_picture(genotype, stem)
    if result.hint:
        log.info(result.hint)


def run_from_file(config: str | Path, overrides: list[str] | None = None, out: str | Path | None = None,
                  quiet: bool = False) -> Path:
    return run(load_run_config(config, overrides), out=out, quiet=quiet)

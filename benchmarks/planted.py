"""Planted-architecture benchmark: does a search recover the ops of a random teacher cell?

For every seed a random genotype is planted (``task_options.teacher_seed`` varies with the
seed), data are generated from it (tasks/planted.py), and every strategy/hypergradient pair
searches a supernet on those data. The derived genotype is compared edge by edge with the
planted one (an edge counts when its op is recovered, as ``PlantedTask.evaluate`` does).

    .venv/bin/python benchmarks/planted.py --quick
    .venv/bin/python benchmarks/planted.py --seeds 6 --settings small default

Settings:

* ``default``: the demo task (RUAS distill cell, 7 conv-like candidates). The planted op is
  not identifiable from data there (``conv_3x3`` can imitate ``conv_1x1``, ``resconv_k`` is
  ``conv_k`` plus the identity), so every method sits near chance (1/7 of the edges).
* ``small``: a small setting where the ops are identifiable: the distill cell with three
  parameter-free candidates (skip, max pool, avg pool; chance = 1/3), 2 channels, 8x8 inputs,
  128 training samples, 60 search epochs of 4 steps, arch lr 0.05, weight lr 0.01.

  The weight lr matters for second-order DARTS. The targets are large (teacher_scale 2), so
  early weight gradients have norm ~100: at the demo's lr 0.05 the *unclipped* virtual step
  ``w' = w - lr (mu buf + g)`` overshoots (L_val(w') ~ 20x L_val(w) over the first ~100 steps),
  while the real step is tamed by ``search.grad_clip`` (5), which the virtual step does not
  model. The second-order hypergradient then optimises the loss after a divergent step and
  recovered fewer edges than random search (6 seeds: 0.38 vs 0.55). At lr 0.01 the virtual
  step is stable; measured (seeds 0-5 / 6-11 / 12-23, edges recovered): exact_hvp 0.69 / 0.67 /
  0.63, first order 0.62 / 0.64 / 0.57, random 0.38 / 0.38 / 0.43; finite_difference over seeds
  0-11: 0.68 (tests/test_planted_recovery.py checks second order > random on seeds 0-11).

Prints a markdown table: strategy, hypergradient, setting, seeds, mean fraction of edges
recovered +- std over seeds, final validation MSE of the searched model (the supernet for
DARTS/GDAS, the chosen sub-network for random search), and wall time per search step.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from nasflow.run.runner import _Progress, load_run_config, search, seed_everything  # noqa: E402
from nasflow.task import build_task  # noqa: E402

# (strategy, hypergradient); random search and GDAS ignore / use first order.
METHODS: tuple[tuple[str, str], ...] = (
    ("darts", "first_order"),
    ("darts", "finite_difference"),
    ("darts", "exact_hvp"),
    ("gdas", "first_order"),
    ("random", "first_order"),
)

# Parameter-free candidates only: any conv can imitate skip_connect / avg_pool_3x3, which makes
# the planted op unidentifiable again (measured: conv_3x3 in the set keeps everything near chance).
SMALL_CANDIDATES = "[skip_connect,max_pool_3x3,avg_pool_3x3]"

# name -> (overrides for load_run_config("demo", ...), default search epochs)
SETTINGS: dict[str, tuple[list[str], int]] = {
    "small": (
        [
            "task_options.space=distill",
            f"task_options.candidates={SMALL_CANDIDATES}",
            "task_options.channels=2",
            "task_options.size=8",
            "task_options.train_samples=128",
            "task_options.val_samples=64",
            "task_options.batch_size=16",
            "task_options.noise_std=0.01",
            "task_options.teacher_scale=2.0",
            "search.arch_optimizer.lr=0.05",
            "search.weight_optimizer.lr=0.01",  # 0.05: the unrolled (unclipped) virtual step diverges
        ],
        60,
    ),
    "default": ([], 10),
}


@dataclass
class Result:
    recovered: float
    val_mse: float
    ms_per_step: float


def run_one(setting: str, strategy: str, hypergradient: str, seed: int, epochs: int | None = None,
            extra: Sequence[str] = ()) -> Result:
    """One search on the planted task of ``seed`` (teacher_seed = 1000 + seed)."""
    overrides, default_epochs = SETTINGS[setting]
    epochs = default_epochs if epochs is None else epochs
    cfg = load_run_config("demo", [
        *overrides,
        f"seed={seed}",
        f"task_options.teacher_seed={1000 + seed}",
        f"search.strategy={strategy}",
        f"search.hypergradient={hypergradient}",
        f"search.epochs={epochs}",
        *extra,
    ])
    seed_everything(cfg.seed)
    task = build_task(cfg, torch.device("cpu"))
    weight_batches, arch_batches = task.search_batches(0)
    steps = min(len(list(weight_batches)), len(list(arch_batches)))
    start = time.perf_counter()
    result = search(cfg, task, _Progress(quiet=True))
    model = result.model if hasattr(result, "model") else result[0]  # SearchResult (or an older tuple)
    elapsed = time.perf_counter() - start
    genotype = model.derive()
    found = set(genotype.edges("cell"))
    planted = set(task.teacher_genotype.edges("cell"))
    metrics = task.evaluate(model, genotype)
    return Result(len(found & planted) / len(planted), metrics["val_mse"], 1000 * elapsed / max(1, epochs * steps))


def _fmt(values: list[float], digits: int = 3) -> str:
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5, help="number of seeds (0..N-1)")
    parser.add_argument("--epochs", type=int, default=None, help="search epochs (default: per setting)")
    parser.add_argument("--settings", nargs="+", default=["small"], choices=sorted(SETTINGS))
    parser.add_argument("--methods", nargs="+", default=None,
                        help="strategy:hypergradient pairs (default: all five)")
    parser.add_argument("--quick", action="store_true", help="2 seeds, 3 epochs, setting 'small'")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.quick:
        args.seeds, args.epochs, args.settings = 2, 3, ["small"]
    methods = METHODS if args.methods is None else [tuple(m.split(":", 1)) for m in args.methods]

    rows = []
    for setting in args.settings:
        for strategy, hyper in methods:
            results = [run_one(setting, strategy, hyper, s, args.epochs) for s in range(args.seeds)]
            rows.append((strategy, hyper, setting, args.seeds,
                         _fmt([r.recovered for r in results], 2),
                         _fmt([r.val_mse for r in results], 4),
                         f"{statistics.fmean(r.ms_per_step for r in results):.1f}"))
            print(f"{strategy:7s} {hyper:18s} {setting:8s} recovered {rows[-1][4]}  "
                  f"per seed {[round(r.recovered, 2) for r in results]}", file=sys.stderr, flush=True)

    header = ("strategy", "hypergradient", "setting", "seeds", "edges recovered (mean ± std)",
              "val MSE (mean ± std)", "ms / step")
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for _ in header) + "|")
    for row in rows:
        print("| " + " | ".join(str(c) for c in row) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

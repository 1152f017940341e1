"""One rank of the data-parallel search check (started by tests/test_distributed.py).

``python -m torch.distributed.run --nproc_per_node=2 tests/dist_worker.py OUT`` runs, on every
rank, short searches of the planted demo task on this rank's shard of the batches, and saves
``OUT/<run>.rank<r>.pt`` (alphas, model state dict, shard fingerprint) and
``OUT/<run>.rank<r>.json`` (derived genotype). Runs:

* ``darts_fd``: DARTS, finite-difference hypergradient, synced;
* ``darts_fo``: DARTS, first-order hypergradient, synced;
* ``random``: random search with weight sharing, synced;
* ``darts_fo_nosync``: as ``darts_fo`` with ``strategy.sync`` disabled (the control: ranks diverge).

``python tests/dist_worker.py OUT --union 2`` (no torchrun, world 1) runs ``darts_fo`` on the
concatenation of the 2 shards per step (what 2 synced ranks compute, up to float rounding).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from nasflow.config import from_dict  # noqa: E402
from nasflow.search.distributed import (  # noqa: E402
    DistContext,
    average_,
    average_buffers_,
    barrier,
    broadcast_module_,
    init_distributed,
    shard,
    shutdown,
)
from nasflow.schema import SearchConfig  # noqa: E402
from nasflow.strategies.darts import DartsStrategy  # noqa: E402
from nasflow.strategies.random import RandomStrategy  # noqa: E402
from nasflow.tasks.planted import PlantedOptions, PlantedTask  # noqa: E402

TASK = {"channels": 2, "size": 8, "train_samples": 64, "val_samples": 8, "batch_size": 4}
EPOCHS = 2
RUNS = {
    "darts_fd": (DartsStrategy, "finite_difference", True),
    "darts_fo": (DartsStrategy, "first_order", True),
    "random": (RandomStrategy, "first_order", True),
    "darts_fo_nosync": (DartsStrategy, "first_order", False),
}


def _union(shards: list[list]) -> list:
    """Per step, the concatenation of every rank's batch (emulates ``world`` ranks in one process)."""
    return [tuple(torch.cat(parts) for parts in zip(*batches)) for batches in zip(*shards)]


def search(name: str, ctx: DistContext, union: int = 0) -> dict:
    strategy_cls, hyper, sync = RUNS[name]
    task = PlantedTask(from_dict(PlantedOptions, TASK), seed=0, device=ctx.device)
    torch.manual_seed(0)  # (every rank also gets rank 0's supernet below)
    model = task.build_supernet().to(ctx.device)
    if ctx.rank == 1:  # prove the broadcast: rank 1 starts from different weights
        with torch.no_grad():
            for p in model.parameters():
                p.add_(1.0)
    broadcast_module_(model)
    config = from_dict(SearchConfig, {
        "strategy": "darts", "epochs": EPOCHS, "hypergradient": hyper,
        "weight_optimizer": {"lr": 0.05, "momentum": 0.9, "weight_decay": 3e-4},
        "arch_optimizer": {"lr": 0.01, "betas": [0.5, 0.999], "weight_decay": 1e-3},
        "strategy_options": {"eval_samples": 3} if strategy_cls is RandomStrategy else {},
    })

    def batches(epoch: int = 0) -> tuple[list, list]:
        wb, ab = task.search_batches(epoch)
        if union:
            fake = [DistContext(rank=r, world_size=union, enabled=True) for r in range(union)]
            return _union([shard(wb, c) for c in fake]), _union([shard(ab, c) for c in fake])
        return shard(wb, ctx), shard(ab, ctx)

    wb, ab = batches()
    steps = min(len(wb), len(ab))
    strategy = strategy_cls(model, task, config, steps)
    if not sync:
        strategy.sync = lambda tensors: tensors
    seen = []
    for epoch in range(EPOCHS):
        strategy.before_epoch(epoch)
        wb, ab = batches(epoch)
        seen.append(float(sum(float(x.sum()) for x, _ in wb)))
        for i, (w, a) in enumerate(zip(wb, ab)):
            t = epoch * steps + i
            strategy.before_step(t)
            logs = strategy.step(w, a)
            strategy.after_step(t, logs)
        average_buffers_(model)  # the planted net has no buffers; a BatchNorm net would need this
        strategy.after_epoch(epoch)
    return {
        "alphas": {label: a.detach().cpu().clone() for label, a in model.arch.alphas.items()},
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "steps": steps,
        "seen": seen,  # fingerprint of this rank's weight batches (ranks must see different data)
        "genotype": model.derive(None).to_dict(),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("--union", type=int, default=0, help="world 1: emulate this many ranks by concatenation")
    parser.add_argument("--runs", default=",".join(RUNS))
    args = parser.parse_args()
    torch.set_num_threads(1)
    ctx = init_distributed("cpu")
    try:
        tag = f"union{args.union}" if args.union else f"rank{ctx.rank}"
        info = {"rank": ctx.rank, "world_size": ctx.world_size, "enabled": ctx.enabled}
        probe = [torch.full((3,), float(ctx.rank)), torch.tensor(ctx.rank + 1.0).expand(2)]  # 2nd: not writable
        info["probe"] = [t.tolist() for t in average_(probe)]
        for name in args.runs.split(","):
            result = search(name, ctx, args.union)
            genotype = result.pop("genotype")
            torch.save(result, args.out / f"{name}.{tag}.pt")
            (args.out / f"{name}.{tag}.json").write_text(json.dumps(genotype, sort_keys=True) + "\n", encoding="utf-8")
        (args.out / f"{tag}.info.json").write_text(json.dumps(info) + "\n", encoding="utf-8")
        barrier()
    finally:
        shutdown()


if __name__ == "__main__":
    main()

"""Wall time and peak memory of one bilevel search step, per hypergradient, on a RUAS-like supernet.

One search step = the DARTS strategy's ``step()``: an architecture step (the hypergradient, then
Adam on the alphas) and a weight step (SGD), through ``STRATEGIES.get("darts")`` with a tiny task.
Each hypergradient runs in its own fresh subprocess (clean peak memory), all from one invocation
so the ratios to first order sit side by side::

    .venv/bin/python benchmarks/search_speed.py --size 320 --steps 5 --warmup 2
    .venv/bin/python benchmarks/search_speed.py --device cuda --size 320 --steps 20 --warmup 5

The supernet follows ARCHITECTURE.md section 4: IEM = 3 distill supercells on 3 channels sharing
label 'iem' (``t = clamp(sigmoid(cell(.)), 0.001, 1)``, ``u = clamp(y / t, 0, 1)``); NRM (unless
``--no-nrm``) = tagged conv3x3 3->6, 3 distill supercells on 6 channels sharing label 'nrm', tagged
conv3x3 6->3 predicting noise. Loss: 0.5 MSE(t, y) + L1-TV(t) + MSE(out, u) + L1-TV(out) (a stand-in
with the same graph shape as RUAS' losses, not the paper's weights).

Memory: CUDA, ``max_memory_allocated`` during the timed steps minus the allocation before them;
CPU, the growth of the process' peak RSS (``ru_maxrss``) over the whole stepping (warmup included)
from just before the first step, i.e. the high-water mark of one step's transient tensors (plus
allocator slack), and the absolute peak RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from typing import Any

HYPERGRADIENTS = ("first_order", "finite_difference", "exact_hvp")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, default=320, help="image height = width (default 320)")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--steps", type=int, default=5, help="timed steps (median reported)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch default)")
    p.add_argument("--no-nrm", action="store_true", help="IEM part only (one label)")
    p.add_argument("--hypergradients", default=",".join(HYPERGRADIENTS),
                   help="comma-separated subset of " + ", ".join(HYPERGRADIENTS))
    p.add_argument("--model", choices=("ruas-like", "ruas"), default="ruas-like",
                   help="ruas-like: the stand-in supernet below, DARTS strategy; ruas: the real RUAS task of "
                        "tasks/ruas.yaml (cooperative strategy, both groups stepping every step)")
    p.add_argument("--memory-format", choices=("auto", "channels_last", "contiguous"), default="auto",
                   help="layout of the model and batches (auto: channels_last on a CPU, as nasflow run does)")
    p.add_argument("--fuse", choices=("auto", "on", "off"), default="auto",
                   help="run linear mixed edges as one convolution: auto (CPU only, as nasflow does), on, off")
    p.add_argument("--compare-before", action="store_true",
                   help="also run each hypergradient with --fuse off --memory-format contiguous (the path before "
                        "fused edges and channels-last), side by side")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds per subprocess")
    p.add_argument("--json", action="store_true", help="also print the raw results as JSON")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


# -- the worker (one hypergradient, in a fresh process) ----------------------------------------------


def worker(args: argparse.Namespace) -> dict[str, Any]:
    import torch
    import torch.nn.functional as F
    from torch import nn

    from nasflow.search import hypergrad
    from nasflow.registries import STRATEGIES
    from nasflow.schema import AdamConfig, SearchConfig, SGDConfig
    from nasflow.core.space import build_space
    from nasflow.core.supernet import Supernet, tag
    from nasflow.task import Task

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    torch.manual_seed(args.seed)

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize(device)

    def maxfilter(x: torch.Tensor) -> torch.Tensor:  # 2x2, stride 1, zero pad bottom/right
        return F.max_pool2d(F.pad(x, (0, 1, 0, 1)), 2, stride=1)

    def tv(x: torch.Tensor) -> torch.Tensor:
        return (x[..., 1:, :] - x[..., :-1, :]).abs().mean() + (x[..., :, 1:] - x[..., :, :-1]).abs().mean()

    class RuasLike(Supernet):
        def __init__(self, nrm: bool) -> None:
            super().__init__()
            space = build_space("distill")
            self.iem = nn.ModuleList(space.supercell(self.arch, "iem", 3) for _ in range(3))
            self.has_nrm = nrm
            if nrm:
                self.stem = tag(nn.Conv2d(3, 6, 3, padding=1), "nrm")
                self.nrm = nn.ModuleList(space.supercell(self.arch, "nrm", 6) for _ in range(3))
                self.out = tag(nn.Conv2d(6, 3, 3, padding=1), "nrm")

        def forward(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            u = y
            t = y
            for i, cell in enumerate(self.iem):
                x = maxfilter(y) if i == 0 else maxfilter(u) - 0.5 * (u - y)
                t = torch.clamp(torch.sigmoid(cell(x)), 0.001, 1.0)
                u = torch.clamp(y / t, 0.0, 1.0)
            if not self.has_nrm:
                return u, t, u
            h = self.stem(u)
            for cell in self.nrm:
                h = cell(h)
            return u - self.out(h), t, u

    class SpeedTask(Task):
        def build_supernet(self) -> Supernet:
            return RuasLike(nrm=not args.no_nrm)

        def search_batches(self, epoch):
            raise NotImplementedError

        def train_batches(self, epoch):
            raise NotImplementedError

        def loss(self, model, batch):
            out, t, u = model(batch)
            terms = {"iem": 0.5 * F.mse_loss(t, batch) + tv(t)}
            if not args.no_nrm:
                terms["nrm"] = F.mse_loss(out, u) + tv(out)
            terms["loss"] = sum(terms.values())
            return terms

        def evaluate(self, model, genotype):
            raise NotImplementedError

    from nasflow.run.layout import batch_to, resolve_memory_format
    from nasflow.core.mixed import MixedOp

    total = args.warmup + args.steps
    layout = resolve_memory_format(args.memory_format, device)
    if args.model == "ruas":
        from nasflow.run.runner import load_run_config
        from nasflow.task import build_task

        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        cfg = load_run_config(os.path.join(root, "tasks", "ruas.yaml"),
                              [f"search.hypergradient={args.worker}", "task_options.nrm_every=1"])
        task = build_task(cfg, device, trusted=True)
        model = task.build_supernet().to(device)
        config, strategy_name = cfg.search, cfg.search.strategy
    else:
        task = SpeedTask({}, seed=args.seed, device=device)
        model = task.build_supernet().to(device)
        # RUAS' search settings (ARCHITECTURE.md section 4); weight decay as in DARTS' default
        config = SearchConfig(hypergradient=args.worker, weight_optimizer=SGDConfig(lr=0.005, momentum=0.9),
                              arch_optimizer=AdamConfig(lr=3e-4, betas=(0.5, 0.999), weight_decay=1e-3))
        strategy_name = "darts"
    for m in model.modules():
        if isinstance(m, MixedOp):
            m.fuse_linear = {"auto": None, "on": True, "off": False}[args.fuse]
    model.to(memory_format=layout)
    n_weights = sum(p.numel() for p in model.weight_parameters())
    strategy = STRATEGIES.get(strategy_name)(model, task, config, steps_per_epoch=max(1, total))

    g = torch.Generator().manual_seed(args.seed + 1)
    shape = (args.batch, 3, args.size, args.size)
    weight_batch = batch_to((0.3 * torch.rand(shape, generator=g)).to(device), layout)
    arch_batch = batch_to((0.3 * torch.rand(shape, generator=g)).to(device), layout)

    # phase timers (wrap the module-level functions the hypergradients look up at call time)
    phases: dict[str, float] = {}

    def timed(name: str, fn):
        def wrapper(*a, **k):
            sync()
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                sync()
                phases[name] = phases.get(name, 0.0) + time.perf_counter() - t0
        return wrapper

    hypergrad._virtual_step = timed("virtual", hypergrad._virtual_step)
    hypergrad.hvp_finite_difference = timed("hvp", hypergrad.hvp_finite_difference)
    hypergrad.hvp_autograd = timed("hvp", hypergrad.hvp_autograd)
    strategy.arch_step = timed("arch", strategy.arch_step)
    strategy.weight_step = timed("weight", strategy.weight_step)

    sync()
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    base_alloc = torch.cuda.memory_allocated(device) if cuda else 0
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux

    times: list[float] = []
    per_phase: dict[str, list[float]] = {}
    peak_alloc = 0
    for i in range(total):
        phases.clear()
        if cuda and i == args.warmup:
            torch.cuda.reset_peak_memory_stats(device)
        sync()
        t0 = time.perf_counter()
        strategy.step(weight_batch, arch_batch)
        sync()
        dt = time.perf_counter() - t0
        if i >= args.warmup:
            times.append(dt)
            for k, v in phases.items():
                per_phase.setdefault(k, []).append(v)
    if cuda:
        peak_alloc = torch.cuda.max_memory_allocated(device) - base_alloc
    rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "hypergradient": args.worker,
        "path": ("fused edges" if any(isinstance(m, MixedOp) and m.fused(weight_batch) for m in model.modules())
                 else "separate ops") + (", channels-last" if layout == torch.channels_last else ", contiguous"),
        "device": str(device) + (f" ({torch.cuda.get_device_name(device)})" if cuda else ""),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "weights": n_weights,
        "step_ms": 1e3 * statistics.median(times),
        "step_ms_all": [1e3 * t for t in times],
        "phase_ms": {k: 1e3 * statistics.median(v) for k, v in per_phase.items()},
        "peak_step_mib": (peak_alloc if cuda else (rss1 - rss0) * 1024) / 2**20,
        "peak_rss_mib": rss1 / 1024,
    }


# -- the driver --------------------------------------------------------------------------------------


def run_one(hg: str, argv: list[str], timeout: float) -> dict[str, Any]:
    cmd = [sys.executable, os.path.abspath(__file__), *argv, "--worker", hg]
    env = dict(os.environ)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"{hg} failed (rc {proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def table(results: list[dict[str, Any]]) -> str:
    rows = ["| hypergradient | path | step ms (median) | x first order | arch ms | weight ms | virtual step ms "
            "| hvp ms | peak step mem MiB | peak RSS MiB |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        ref = next((q["step_ms"] for q in results if q["hypergradient"] == "first_order" and q["path"] == r["path"]),
                   None)
        ph = r["phase_ms"]
        ratio = f"{r['step_ms'] / ref:.2f}" if ref else "-"
        cell = lambda k: f"{ph[k]:.1f}" if k in ph else "-"  # noqa: E731
        rows.append(f"| {r['hypergradient']} | {r['path']} | {r['step_ms']:.1f} | {ratio} | {cell('arch')} | {cell('weight')} "
                    f"| {cell('virtual')} | {cell('hvp')} | {r['peak_step_mib']:.1f} | {r['peak_rss_mib']:.0f} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args)))
        return
    hgs = [h.strip() for h in args.hypergradients.split(",") if h.strip()]
    unknown = [h for h in hgs if h not in HYPERGRADIENTS]
    if unknown:
        sys.exit(f"unknown hypergradient(s) {unknown}; choose from {HYPERGRADIENTS}")
    passthrough = [a for a in argv if a not in ("--json", "--compare-before")]
    before = ["--fuse", "off", "--memory-format", "contiguous"]
    results = []
    for hg in hgs:
        for extra in ([[], before] if args.compare_before else [[]]):
            print(f"running {hg} {' '.join(extra)}...", file=sys.stderr, flush=True)
            results.append(run_one(hg, passthrough + extra, args.timeout))
    r0 = results[0]
    part = "IEM (label iem, 3 ch)" + ("" if args.no_nrm else " + NRM (label nrm, 6 ch)")
    name = "RUAS supernet of tasks/ruas.yaml (cooperative)" if args.model == "ruas" else "RUAS-like supernet"
    print(f"{name}: {part}, {r0['weights']} weights; batch {args.batch}, {args.size}x{args.size}; "
          f"device {r0['device']}, {r0['threads']} threads, torch {r0['torch']}; "
          f"median of {args.steps} steps after {args.warmup} warmup\n")
    print(table(results))
    mem = "max_memory_allocated - allocated before" if args.device == "cuda" else "ru_maxrss growth over the stepping"
    print(f"\nstep = arch step (hypergradient + Adam) + weight step (SGD); peak step mem: {mem}.")
    if args.json:
        print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()

"""Search that pays: dev quality against fast-path time, searched cells against controls (issue 26).

    python benchmarks/pareto.py --budget smoke            # tiny: ~1 CPU-minute (the test suite runs it)
    python benchmarks/pareto.py                           # --budget default: ~30-70 min, quiet 2-core CPU
    python benchmarks/pareto.py --budget full --device cuda   # the shipped recipe's full training, for a GPU
    python benchmarks/pareto.py --weights 0,0.1 --seeds 0 # a part of the sweep (finished arms are kept)

For every latency weight of the sweep (``search.cost: {metric: latency, weight: W}``, W = 0 is the
plain search) and every seed, the RUAS IEM is searched (``cooperative`` strategy) and the derived
genotype trained with the shipped model recipe (``tasks/ruas/models/ruas-auto.yaml``: RUAS_i with
the global exposure step; the budget sets epochs, images and crops on top, as in
``benchmarks/ablation.py``, whose machinery runs every stage: same configs, split checks and
resumable run folders). Controls, trained alike at every seed: the paper genotype (``paper``),
every edge ``conv_3x3`` (``conv3x3``) and, for every searched arm and seed, ``--matched`` random
genotypes whose *predicted* ms lies within 10% of the searched genotype's (``random-K``: the K-th
uniform sample of ``ablation.fixed_genotype``, the first unused K that matches), so a win of the
search is not just "a cheaper cell is fine".

The cost model (:mod:`nasflow.core.cost`) is measured once per work folder: the op table of the
distill space at the IEM's channel count at the budget's image size, 1 thread
(``cost_table.json``, also the search's ``search.cost.table``), and the network's base term fitted
on the paper genotype's network, the comparison every arm is read against (``cost_base.json``; see
``benchmarks/cost_model.py`` for why not the all-``skip_connect`` one). Figures per run: dev PSNR / SSIM /
GT-mean PSNR on ``lol``, ``mit``, ``fivek_normal`` (``benchmarks/quality.py``'s scoring), their
mean over the sets, parameters and FLOPs at the budget's size, the predicted ms, and the measured
fast-path ms (``fast_ruas``, one piece, 1 thread, the median of repeats; every run of the work
folder timed in one sitting, interleaved over rounds: ``timing.json``, redone only when the set of
runs changes). Outputs in the work folder (``runs/pareto-<budget>``): ``table.md`` (printed),
``results.csv``, ``results.json``, ``pareto.svg`` (dev GT-mean PSNR against ms, the front drawn).
A killed benchmark continues where it stopped: one ``result.json`` per finished arm and seed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # the sibling benchmark modules (ablation, quality, pareto_report)

import ablation  # noqa: E402
from ablation import Arm, Budget  # noqa: E402

RECIPE = HERE.parent / "tasks" / "ruas" / "models" / "ruas-auto.yaml"
# the recipe's own IEM-only setting, stated so fixed genotypes are IEM-only too; without the recipe's parameter-free
# noise filter, the same for every arm, so that times and figures differ by the cells alone
RECIPE_MODEL = {"use_nrm": False, "denoise": "none"}
THREADS = 1  # the cost table's and the timing's intra-op threads


# -- budgets --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ParetoBudget:
    """The sweep on top of an ablation :class:`~ablation.Budget` (search, training and seeds)."""

    run: Budget
    weights: tuple[float, ...]  # search.cost.weight of the searched arms (0: plain search)
    matched: int  # random genotypes of matched predicted ms per searched arm and seed
    size: tuple[int, int] = (400, 600)  # H, W: ops priced, FLOPs counted and networks timed at this size
    rounds: int = 3  # interleaved timing rounds (cost table and final timing)
    tolerance: float = 0.10  # a random genotype matches when |predicted / target - 1| <= tolerance
    draws: int = 3000  # random genotypes looked at, at most, per match


BUDGETS: dict[str, ParetoBudget] = {
    "smoke": ParetoBudget(replace(ablation.BUDGETS["smoke"], speed_repeats=2), weights=(0.0, 1.0), matched=1,
                          size=(32, 48), rounds=1),
    # ablation's default training (8 epochs of 192 images at 96 px); searches of 10 epochs at 64 px. At
    # weight 1 this search ended on an all-skip_connect cell (benchmarks/README.md), hence weights below it
    "default": ParetoBudget(ablation.BUDGETS["default"], weights=(0.0, 0.03, 0.1, 0.3), matched=1),
    # the recipe's own training (3 epochs of every image at 256 px) and the paper's 20 search epochs
    "full": ParetoBudget(Budget(search_epochs=20, search_images=None, train_epochs=3, train_images=None, crop=256,
                                batch_size=4, seeds=(0, 1, 2), random_genotypes=0, speed_repeats=15,
                                hypergradient="finite_difference"),
                         weights=(0.0, 0.01, 0.03, 0.1, 0.3, 1.0), matched=2, rounds=5),
}


# -- arms -----------------------------------------------------------------------------------------
def searched_arms(b: ParetoBudget, table: Path) -> list[Arm]:
    h, w = b.size
    return [Arm(f"search-w{wt:g}", f"cooperative search, latency weight {wt:g}", "cooperative", model=RECIPE_MODEL,
                config=RECIPE, search={"cost.metric": "latency", "cost.weight": wt, "cost.size": [h, w],
                                       "cost.threads": THREADS, "cost.table": str(table)})
            for wt in b.weights]


def control_arms() -> list[Arm]:
    return [Arm("paper", "the RUAS paper's genotype (IEM)", genotype="paper", model=RECIPE_MODEL, config=RECIPE),
            Arm("conv3x3", "hand-made: every edge conv_3x3", genotype="conv3x3", model=RECIPE_MODEL, config=RECIPE)]


def matched_arm(k: int) -> Arm:
    return Arm(f"random-{k}", f"random genotype {k}, drawn at a searched arm's predicted ms", genotype=f"random:{k}",
               model=RECIPE_MODEL, config=RECIPE, family="matched")


# -- the cost model -------------------------------------------------------------------------------
@dataclass
class CostModel:
    """Predicted fast-path ms of a recipe network: ``base + sum over its cells' edges of op ms``."""

    base: float
    price: Callable[[str, int], float]
    sites: list[Any]

    def ms(self, genotype: Any) -> float:
        from nasflow.core.cost import cells_cost

        return self.base + cells_cost(genotype, self.sites, self.price)


def recipe_supernet(b: ParetoBudget, data: Path) -> Any:
    import torch

    from nasflow.task import build_task

    cfg = ablation.stage_config(control_arms()[0], b.run, "train", 0, data, "cpu")
    return build_task(cfg, torch.device("cpu"), trusted=True).build_supernet()


def fast_timer(repeats: int) -> Any:
    """The RUAS fast path, one piece on ``THREADS`` threads (as ``benchmarks/cost_model.py`` times it)."""
    from nasflow.infer.profile import FastPathTimer
    from nasflow.tasks.ruas.fast import fast_ruas

    return FastPathTimer(threads=THREADS, repeats=repeats, build=lambda m, o: fast_ruas(m, o, bands=0))


def prepare_cost(work: Path, b: ParetoBudget, data: Path, say: ablation.Log) -> CostModel:
    """The op table and base term of this work folder, measured on its first run and kept."""
    import torch

    from nasflow.core.compile import compile_model
    from nasflow.core.cost import CostTable, cell_sites, device_name, fit_base, table_price
    from nasflow.core.space import build_space
    from nasflow.core.supernet import find_arch
    from nasflow.infer.profile import FastPathTimer, interleaved_ms, profile_space

    h, w = b.size
    net = recipe_supernet(b, data)
    sites = cell_sites(net)
    space = build_space(find_arch(net).space(sites[0].label))
    table_path, base_path = work / "cost_table.json", work / "cost_base.json"
    table = CostTable.load(table_path)
    known = len(table)  # profile_space measures only the entries this size, device and torch lack
    table = profile_space(space, sorted({s.channels for s in sites}), h, w, threads=THREADS, table=table,
                          timer=FastPathTimer(threads=THREADS, repeats=b.run.speed_repeats), rounds=b.rounds)
    if len(table) != known:
        say(f"measured the op table of '{space.name}' at {h}x{w}, {THREADS} thread(s)")
        table.save(table_path)
    price = table_price(table, space.name, "latency", h, w, device_name("cpu"), THREADS)
    where = {"size": [h, w], "threads": THREADS, "device": device_name("cpu")}
    if not base_path.is_file() or json.loads(base_path.read_text()).get("where") != where:
        reference = ablation.fixed_genotype("paper", False)  # the control every searched arm is compared with
        x = torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(0))
        measured = interleaved_ms({"ref": compile_model(net, reference).eval()}, x, fast_timer(b.run.speed_repeats),
                                  b.rounds)["ref"]
        base = fit_base(measured, reference, sites, price)
        base_path.write_text(json.dumps({"base_ms": base, "reference": "paper", "measured_ms": measured,
                                         "where": where}) + "\n", encoding="utf-8")
    return CostModel(float(json.loads(base_path.read_text())["base_ms"]), price, sites)


def plan_matches(searched: list[dict[str, Any]], cost: CostModel, b: ParetoBudget) -> dict[str, dict[str, Any]]:
    """For each searched run (in order), the first ``b.matched`` unused K whose ``random:K`` genotype's
    predicted ms is within ``b.tolerance`` of the searched genotype's; deterministic given the runs."""
    from nasflow.core.genotype import Genotype

    taken: set[int] = set()
    plan: dict[str, dict[str, Any]] = {}
    for r in searched:
        target = cost.ms(Genotype.from_dict(r["genotype"]))
        found: list[int] = []
        for k in range(1, b.draws + 1):
            if len(found) == b.matched:
                break
            predicted = cost.ms(ablation.fixed_genotype(f"random:{k}", False))
            if k not in taken and abs(predicted / target - 1) <= b.tolerance:
                found.append(k)
                taken.add(k)
        plan[f"{r['arm']}/seed{r['seed']}"] = {"seed": r["seed"], "target_ms": target, "randoms": found}
    return plan


# -- evaluation -----------------------------------------------------------------------------------
def make_evaluate(size: tuple[int, int]) -> ablation.Evaluate:
    """Dev-pair figures (PSNR, SSIM, GT-mean PSNR: ``benchmarks/quality.py``'s scoring) and size of a run."""

    def evaluate(run_dir: Path, data: Path, repeats: int) -> dict[str, Any]:
        from nasflow.core.flops import count_flops
        from nasflow.infer.inference import load_model
        from quality import read_pairs, score_pairs

        enhancer = load_model(run_dir, device="cpu")
        out: dict[str, Any] = {}
        for s in ablation.PAIRED_SETS:
            scores = score_pairs(enhancer.enhance_rgb, read_pairs(data / s))
            for name in ("psnr", "ssim", "gt_mean_psnr"):
                out[f"{s}/{name}"] = float(np.mean([getattr(x, name) for x in scores]))
            out[f"{s}/n"] = len(scores)
        net = enhancer.loaded.network
        out["params"] = sum(p.numel() for p in net.parameters())
        out["gflops"] = count_flops(net, 1, 3, *size) / 1e9
        return out

    return evaluate


def time_runs(work: Path, results: list[dict[str, Any]], b: ParetoBudget, say: ablation.Log) -> dict[str, Any]:
    """Fast-path ms of every run's trained network, all in one sitting, interleaved (cached while the runs stay)."""
    import torch

    from nasflow.core.cost import device_name
    from nasflow.infer.models import load_network
    from nasflow.infer.profile import interleaved_ms

    runs = sorted(f"{r['arm']}/seed{r['seed']}" for r in results)
    h, w = b.size
    how = {"size": [h, w], "threads": THREADS, "repeats": b.run.speed_repeats, "rounds": b.rounds,
           "device": device_name("cpu"), "torch": torch.__version__}
    path = work / "timing.json"
    if path.is_file():
        cached = json.loads(path.read_text(encoding="utf-8"))
        if sorted(cached["ms"]) == runs and cached["how"] == how:
            return cached
    say(f"timing {len(runs)} network(s) at {h}x{w}, {b.rounds} interleaved round(s)")
    nets = {run: load_network(work / run / "train").network for run in runs}
    x = torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(0))
    timing = {"how": how, "ms": interleaved_ms(nets, x, fast_timer(b.run.speed_repeats), b.rounds)}
    path.write_text(json.dumps(timing, indent=1) + "\n", encoding="utf-8")
    return timing


# -- running --------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", choices=sorted(BUDGETS), default="default")
    parser.add_argument("--data", type=Path, default=ablation.DEFAULT_DATA, help="the shared data folder")
    parser.add_argument("--work", type=Path, default=None, help="work folder (default runs/pareto-<budget>)")
    parser.add_argument("--seeds", type=str, default=None, help="comma-separated seeds (default: the budget's)")
    parser.add_argument("--weights", type=str, default=None,
                        help="comma-separated cost weights (default: the budget's)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda", "auto"), help="search and training")
    args = parser.parse_args(argv)

    b = BUDGETS[args.budget]
    if args.seeds:
        b = replace(b, run=replace(b.run, seeds=tuple(int(s) for s in args.seeds.split(","))))
    if args.weights:
        b = replace(b, weights=tuple(float(w) for w in args.weights.split(",")))
    data = args.data.resolve()
    missing = ablation.missing_folders(data)
    if missing:
        print(f"skipped: {data} lacks {', '.join(missing)} (the benchmark needs ../shared/data)")
        return 0
    work = ablation.open_work(args.work, f"pareto-{args.budget}", args.budget, b)
    say = ablation.say
    started = time.perf_counter()
    cost = prepare_cost(work, b, data, say)
    held_out = {ablation._digest(p) for p in ablation.evaluation_files(data)}
    evaluate = make_evaluate(b.size)
    done = [0]

    def run(arm: Arm, seed: int) -> dict[str, Any]:
        new = not (work / arm.name / f"seed{seed}" / "result.json").is_file()
        t0 = time.perf_counter()
        result = ablation.run_arm_seed(arm, b.run, seed, data, args.device, work, held_out, say, evaluate=evaluate)
        if new:
            done[0] += 1
            say(f"{arm.name} seed {seed}: dev GT-mean PSNR "
                f"{np.mean([result[f'{s}/gt_mean_psnr'] for s in ablation.PAIRED_SETS]):.2f} dB "
                f"({time.perf_counter() - t0:.0f} s; {time.perf_counter() - started:.0f} s in all)")
        return result

    searched = [run(arm, seed) for arm in searched_arms(b, work / "cost_table.json") for seed in b.run.seeds]
    controls = [run(arm, seed) for arm in control_arms() for seed in b.run.seeds]
    plan = plan_matches(searched, cost, b)
    (work / "matches.json").write_text(json.dumps(plan, indent=1) + "\n", encoding="utf-8")
    randoms = [run(matched_arm(k), m["seed"]) for m in plan.values() for k in m["randoms"]]
    results = searched + controls + randoms
    timing = time_runs(work, results, b, say)

    from nasflow.core.genotype import Genotype
    from pareto_report import write_report

    for r in results:
        r["ms"] = timing["ms"][f"{r['arm']}/seed{r['seed']}"]
        r["predicted_ms"] = cost.ms(Genotype.from_dict(r["genotype"]))
    command = "python benchmarks/pareto.py " + " ".join(argv if argv is not None else sys.argv[1:])
    print(write_report(results, plan, b, args.budget, timing["how"], work, command))
    print(f"\n{done[0]} new arm-seed(s) in {time.perf_counter() - started:.0f} s (this invocation); files in {work}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

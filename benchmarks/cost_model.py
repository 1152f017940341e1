"""Does the op cost table predict a RUAS network's fast-path time? Predicted vs measured ms per image.

    .venv/bin/python benchmarks/cost_model.py                      # 600x400, 1 thread, 8 genotypes
    .venv/bin/python benchmarks/cost_model.py --size 64x96 --repeats 5 --rounds 1   # seconds (smoke)

Steps: the RUAS supernet (IEM 3 cells on 3 channels, NRM 3 cells on 6) gives the cell sites; the op
table of the distill space is measured at both channel counts and the image size
(:func:`nasflow.infer.profile.profile_space`: each op's cost per edge in a fused cell, medians of
interleaved rounds); each genotype is compiled and timed through the RUAS fast path (``fast_ruas``, one piece,
``--threads`` intra-op threads: the median of ``--repeats`` forwards, genotypes interleaved over
``--rounds`` rounds, each keeping its median round). The base term (stems, output fusions,
activations, the IEM update) is fitted once on the all-``skip_connect`` genotype
(:func:`nasflow.core.cost.fit_base`); every other genotype is predicted as
``base + sum over cells and edges of op ms``. Prints one line per genotype (predicted, measured,
error) and the largest error among the genotypes other than the reference; exits 1 when it is above
``--tolerance`` (default 20%).
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from nasflow.core.compile import compile_model  # noqa: E402
from nasflow.core.cost import cell_sites, cells_cost, device_name, fit_base, table_price  # noqa: E402
from nasflow.core.genotype import Genotype  # noqa: E402
from nasflow.infer.profile import FastPathTimer, format_table, interleaved_ms, profile_space  # noqa: E402
from nasflow.tasks.ruas.fast import fast_ruas  # noqa: E402
from nasflow.tasks.ruas.model import RUASNet, paper_genotype  # noqa: E402


def uniform(net: RUASNet, op: str) -> Genotype:
    graph = net.space.graph()
    edges = tuple((op, e.src, e.dst) for e in graph.edges)
    from nasflow.core.genotype import GenoEdge

    cells = {label: tuple(GenoEdge(*e) for e in edges) for label in ("iem", "nrm")}
    return Genotype.from_cells(net.space.name, cells, {"arm": f"all-{op}"})


def genotypes(net: RUASNet, n_random: int, seed: int) -> dict[str, Genotype]:
    out = {"all-skip_connect": uniform(net, "skip_connect"), "paper": paper_genotype(True)}
    for op in ("conv_1x1", "conv_3x3", "resdilconv_3x3"):
        out[f"all-{op}"] = uniform(net, op)
    rng = random.Random(seed)
    for i in range(n_random):
        cells = {label: net.space.random_edges(rng) for label in ("iem", "nrm")}
        out[f"random-{i}"] = Genotype.from_cells(net.space.name, cells, {"arm": "random"})
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", default="400x600", help="image HxW (default 400x600: a 600x400 photo)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--random", type=int, default=3, help="random genotypes besides the fixed ones")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tolerance", type=float, default=0.20)
    p.add_argument("--show-table", action="store_true")
    args = p.parse_args(argv)
    h, w = (int(v) for v in args.size.lower().split("x"))
    torch.manual_seed(args.seed)
    net = RUASNet()
    sites = cell_sites(net)
    channels = sorted({s.channels for s in sites})
    table = profile_space(net.space, channels, h, w, threads=args.threads,
                          timer=FastPathTimer(threads=args.threads, repeats=args.repeats), rounds=args.rounds)
    if args.show_table:
        print(format_table(table), "\n")
    price = table_price(table, net.space.name, "latency", h, w, device_name("cpu"), args.threads)
    arms = genotypes(net, args.random, args.seed)
    timer = FastPathTimer(threads=args.threads, repeats=args.repeats,
                          build=lambda m, o: fast_ruas(m, o, bands=0))
    x = torch.rand(1, 3, h, w)
    models = {name: compile_model(net, g).eval() for name, g in arms.items()}
    measured = interleaved_ms(models, x, timer, args.rounds)
    base = fit_base(measured["all-skip_connect"], arms["all-skip_connect"], sites, price)
    print(f"RUAS fast path (fast_ruas, one piece), {h}x{w}, {args.threads} thread(s), {device_name('cpu')}, "
          f"torch {torch.__version__}; base (fitted on all-skip_connect) {base:.2f} ms")
    print("| genotype | predicted ms | measured ms | error |")
    print("|---|---:|---:|---:|")
    worst = 0.0
    for name, g in arms.items():
        pred = base + cells_cost(g, sites, price)
        err = pred / measured[name] - 1.0
        if name != "all-skip_connect":
            worst = max(worst, abs(err))
        note = " (reference)" if name == "all-skip_connect" else ""
        print(f"| {name}{note} | {pred:.2f} | {measured[name]:.2f} | {err:+.1%} |")
    print(f"largest error over {len(arms) - 1} genotypes: {worst:.1%} (tolerance {args.tolerance:.0%})")
    return 0 if worst <= args.tolerance else 1


if __name__ == "__main__":
    sys.exit(main())

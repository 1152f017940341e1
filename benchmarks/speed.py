"""Inference speed of a RUAS network on CPU: an obvious eager network, the compiled module, the fast path.

Prints one markdown table per image size: ms per image (median of ``--repeats`` timed runs after
``--warmup`` untimed ones; the variants are interleaved run by run, so that load from other jobs
hits them alike), the ratio to the obvious eager network measured in the same run, the process CPU
time per image (all threads; steadier than wall time when other jobs share the cores, since time
spent waiting for a core is not counted) and the largest absolute difference of the output from
the compiled module's (float32)::

    .venv/bin/python benchmarks/speed.py                       # 600x400 and 1920x1080
    .venv/bin/python benchmarks/speed.py --sizes 600x400 --threads 1 --repeats 15
    .venv/bin/python benchmarks/speed.py --sizes 600x400 1920x1080 3840x2160
    .venv/bin/python benchmarks/speed.py --hold-heap   # glibc keeps freed memory (all rows)

Variants (rows), in order; each is a name and a builder, so that later rows (ONNX Runtime, tiling,
peak memory) are one more entry in ``VARIANTS``:

* ``reference``: the RUAS network written the obvious way, as the released code does: one
  ``nn.Conv2d`` per op, ``conv(x) + x`` for residual ops, ``torch.cat`` + a 1x1 conv per cell,
  the 2x2 max filter as ``F.max_pool2d`` on a padded tensor, under ``torch.no_grad`` (NCHW).
  Its weights are copied from the compiled module, so it computes the same function.
* ``compiled``: ``compile_model(RUASNet(), genotype)``, the generic ``Cell`` evaluator, under
  ``torch.no_grad``.
* ``fast_model``: :func:`nasflow.fastpath.fast_model` of the compiled module (generic engine only).
* ``fast_ruas``: :func:`nasflow.tasks.ruas.fast.fast_ruas` (the engine plus the RUAS-specific
  forward: fused IEM update, NRM chain folding, only ``out`` computed), with its default thread
  policy: one row band per intra-op thread, each on its own Python thread with one intra-op
  thread (halo = the receptive radius; the same result as one piece).
* ``fast_ruas intra-op threads`` (only with more than one thread): one piece, the intra-op
  (OpenMP) threads doing the parallel work, as the other rows do.
* ``fast_ruas 1 thread`` (only with more than one thread): one piece on one intra-op thread.

The network is the paper genotype (or ``--genotype random``) with seeded random weights.
Timings on a shared machine swing with other jobs: compare rows of one run only. Two OpenMP
threads stall when another process holds a core (every row that uses them slows down 5-20x);
the CPU-time column and the ``1 thread`` row show it.
"""

from __future__ import annotations

import argparse
import platform
import random
import statistics
import sys
import time
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from nasflow.compile import compile_model
from nasflow.genotype import GenoEdge, Genotype
from nasflow.spaces.distill_cell import RUAS_OPS, DistillCellSpace
from nasflow.tasks.ruas.model import RUASNet, paper_genotype

Runner = Callable[[torch.Tensor], torch.Tensor]


# --- the obvious eager RUAS network ----------------------------------------------------------------
class ResConv(nn.Module):
    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        self.op = conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x) + x


def ref_op(name: str, c: int) -> nn.Module:
    if name == "skip_connect":
        return nn.Identity()
    kernel, dilation = {"1x1": (1, 1), "3x3": (3, 1), "dil": (3, 2)}[
        "dil" if "dil" in name else name[-3:]]
    conv = nn.Conv2d(c, c, kernel, padding=dilation * (kernel - 1) // 2, dilation=dilation)
    return ResConv(conv) if name.startswith("res") else conv


class RefCell(nn.Module):
    """The RUAS distillation cell as the released code writes it."""

    def __init__(self, c: int, ops: list[str]) -> None:
        super().__init__()
        self.c1_d, self.c1_r, self.c2_d, self.c2_r, self.c3_d, self.c3_r, self.c4 = (ref_op(o, c) for o in ops)
        self.act = nn.LeakyReLU(0.05)
        self.c5 = nn.Conv2d(4 * c, c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d1 = self.act(self.c1_d(x))
        r1 = self.act(self.c1_r(x) + x)
        d2 = self.act(self.c2_d(r1))
        r2 = self.act(self.c2_r(r1) + r1)
        d3 = self.act(self.c3_d(r2))
        r3 = self.act(self.c3_r(r2) + r2)
        r4 = self.act(self.c4(r3))
        return self.c5(torch.cat([d1, d2, d3, r4], dim=1))


class RefRUAS(nn.Module):
    def __init__(self, genotype: Genotype, use_nrm: bool, stages: int = 3, cells: int = 3, c_nrm: int = 6) -> None:
        super().__init__()
        self.iem = nn.ModuleList(RefCell(3, genotype.ops("iem")) for _ in range(stages))
        self.use_nrm = use_nrm
        if use_nrm:
            self.stem = nn.Conv2d(3, c_nrm, 3, padding=1)
            self.nrm = nn.ModuleList(RefCell(c_nrm, genotype.ops("nrm")) for _ in range(cells))
            self.out = nn.Conv2d(c_nrm, 3, 3, padding=1)

    @staticmethod
    def max_filter(x: torch.Tensor) -> torch.Tensor:
        return F.max_pool2d(F.pad(x, (0, 1, 0, 1)), 2, stride=1)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        u = y
        for k, cell in enumerate(self.iem):
            x = self.max_filter(y) if k == 0 else self.max_filter(u) - 0.5 * (u - y)
            t = torch.clamp(torch.sigmoid(cell(x)), 0.001, 1.0)
            u = torch.clamp(y / t, 0.0, 1.0)
        if not self.use_nrm:
            return u
        feat = self.stem(u)
        for cell in self.nrm:
            feat = cell(feat)
        return u - self.out(feat)


def copy_weights(ref: RefRUAS, compiled: nn.Module) -> None:
    """Give ``ref`` the compiled module's weights (edge ops by name, the fusion conv = post)."""
    pairs = list(zip(ref.iem, compiled.iem_cells))
    if ref.use_nrm:
        pairs += list(zip(ref.nrm, compiled.nrm_cells))
        ref.stem.load_state_dict(compiled.nrm_stem.state_dict())
        ref.out.load_state_dict(compiled.nrm_out.state_dict())
    for rc, cc in pairs:
        for name, module in cc.edges.items():
            target = getattr(rc, name)
            if isinstance(module, nn.Identity):
                continue
            conv = target.op if isinstance(target, ResConv) else target
            conv.load_state_dict(module.op.state_dict())
        rc.c5.load_state_dict(cc.post.state_dict())


# --- variants ----------------------------------------------------------------------------------------------
def build_reference(compiled: nn.Module, genotype: Genotype, args: argparse.Namespace) -> Runner:
    ref = RefRUAS(genotype, use_nrm=not args.no_nrm).eval()
    copy_weights(ref, compiled)

    def run(y: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return ref(y)

    return run


def build_compiled(compiled: nn.Module, genotype: Genotype, args: argparse.Namespace) -> Runner:
    def run(y: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return compiled(y).out

    return run


def build_fast_model(compiled: nn.Module, genotype: Genotype, args: argparse.Namespace) -> Runner:
    from nasflow.fastpath import fast_model

    fast = fast_model(compiled)
    return lambda y: fast(y).out


def build_fast_ruas(
    compiled: nn.Module, genotype: Genotype, args: argparse.Namespace, threads: int | None = None,
    bands: int | None = None,
) -> Runner:
    from nasflow.tasks.ruas.fast import fast_ruas

    return fast_ruas(compiled, threads=threads, bands=bands)


def build_fast_ruas_omp(compiled: nn.Module, genotype: Genotype, args: argparse.Namespace) -> Runner | None:
    if torch.get_num_threads() == 1:
        return None
    return build_fast_ruas(compiled, genotype, args, bands=0)


def build_fast_ruas_1(compiled: nn.Module, genotype: Genotype, args: argparse.Namespace) -> Runner | None:
    if torch.get_num_threads() == 1:
        return None
    return build_fast_ruas(compiled, genotype, args, threads=1)


VARIANTS: list[tuple[str, Callable[..., Runner | None]]] = [
    ("reference", build_reference),
    ("compiled", build_compiled),
    ("fast_model", build_fast_model),
    ("fast_ruas", build_fast_ruas),
    ("fast_ruas intra-op threads", build_fast_ruas_omp),
    ("fast_ruas 1 thread", build_fast_ruas_1),
]


# --- running --------------------------------------------------------------------------------------------------
def random_genotype(seed: int, use_nrm: bool) -> Genotype:
    rng = random.Random(seed)
    graph = DistillCellSpace().graph()
    labels = ("iem", "nrm") if use_nrm else ("iem",)
    return Genotype.from_cells("distill", {
        label: tuple(GenoEdge(rng.choice(RUAS_OPS), e.src, e.dst) for e in graph.edges) for label in labels})


def parse_size(text: str) -> tuple[int, int]:
    w, h = text.lower().split("x")
    return int(w), int(h)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", nargs="+", default=["600x400", "1920x1080"], help="WxH (default 600x400 1920x1080)")
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch default)")
    p.add_argument("--repeats", type=int, default=9, help="timed runs per variant (median reported)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--genotype", choices=("paper", "random"), default="paper")
    p.add_argument("--no-nrm", action="store_true", help="IEM only (RUAS_i)")
    p.add_argument("--only", nargs="*", default=None, help="run only these variants (reference always runs)")
    p.add_argument("--hold-heap", action="store_true",
                   help="keep freed memory in glibc's heap (nasflow.fastpath.hold_heap, process-wide: all rows)")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    if args.hold_heap:
        from nasflow.fastpath import hold_heap

        print(f"hold_heap: {hold_heap()}")
    torch.manual_seed(args.seed)
    use_nrm = not args.no_nrm
    genotype = paper_genotype(use_nrm) if args.genotype == "paper" else random_genotype(args.seed, use_nrm)
    compiled = compile_model(RUASNet(use_nrm=use_nrm), genotype).eval()
    cpu = platform.processor() or platform.machine()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} intra-op threads, {cpu}, "
          f"python {platform.python_version()}")
    print(f"genotype {args.genotype}: iem={genotype.ops('iem')}" + (f" nrm={genotype.ops('nrm')}" if use_nrm else ""))
    runners: list[tuple[str, Runner]] = []
    for name, build in VARIANTS:
        if args.only is not None and name != "reference" and name not in args.only:
            continue
        t0 = time.perf_counter()
        runner = build(compiled, genotype, args)
        if runner is not None:
            runners.append((name, runner))
            print(f"built {name} in {time.perf_counter() - t0:.2f} s")
    for size in args.sizes:
        w, h = parse_size(size)
        y = torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(args.seed))
        with torch.no_grad():
            expected = compiled(y).out
        times: dict[str, list[float]] = {name: [] for name, _ in runners}
        cpu: dict[str, list[float]] = {name: [] for name, _ in runners}
        diffs: dict[str, float] = {}
        for name, run in runners:
            out = run(y)
            diffs[name] = (out - expected).abs().max().item()
            for _ in range(args.warmup - 1):
                run(y)
        for _ in range(args.repeats):
            for name, run in runners:
                c0, t0 = time.process_time(), time.perf_counter()
                run(y)
                times[name].append(time.perf_counter() - t0)
                cpu[name].append(time.process_time() - c0)
        base = statistics.median(times["reference"])
        cbase = statistics.median(cpu["reference"])
        print(f"\n{w}x{h}, {args.repeats} timed runs each:\n")
        print("| variant | ms / image (median) | min | speed-up vs reference | CPU ms / image (median, all threads) "
              "| CPU speed-up | max abs diff vs compiled |")
        print("|---|---|---|---|---|---|---|")
        for name, _ in runners:
            med, cmed = statistics.median(times[name]), statistics.median(cpu[name])
            print(f"| {name} | {med * 1e3:.1f} | {min(times[name]) * 1e3:.1f} | {base / med:.2f}x | {cmed * 1e3:.1f} "
                  f"| {cbase / cmed:.2f}x | {diffs[name]:.1e} |")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

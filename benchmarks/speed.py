"""Inference speed and peak memory of a RUAS network on CPU, from an obvious eager network to the tiled fast path.

One command prints one markdown table per image size (default 600x400, 1920x1080 and 3840x2160),
then a table of search-step times per hypergradient::

    .venv/bin/python benchmarks/speed.py                       # everything, about 10 minutes on 2 cores
    .venv/bin/python benchmarks/speed.py --sizes 600x400 --threads 1 --repeats 15 --no-search
    .venv/bin/python benchmarks/speed.py --sizes 1920x1080 --no-rss --only fast_ruas tiled
    .venv/bin/python benchmarks/speed.py --hold-heap   # glibc keeps freed memory (all rows)

Rows (``VARIANTS``: a name and a builder each; a builder returns ``None`` to leave its row out
silently or raises :class:`SkipRow` to leave it out with a printed note), in order:

* ``reference``: the RUAS network written the obvious way, as the released code does: one
  ``nn.Conv2d`` per op, ``conv(x) + x`` for residual ops, ``torch.cat`` + a 1x1 conv per cell,
  the 2x2 max filter as ``F.max_pool2d`` on a padded tensor, under ``torch.no_grad`` (NCHW).
  Its weights are copied from the compiled module, so it computes the same function.
* ``compiled``: ``compile_model(RUASNet(), genotype)``, the generic ``Cell`` evaluator, under
  ``torch.no_grad``. Its output is what the last column compares every row with.
* ``fast_model``: :func:`nasflow.infer.fastpath.fast_model` of the compiled module (generic engine only).
* ``fast_ruas``: :func:`nasflow.tasks.ruas.fast.fast_ruas` (the engine plus the RUAS-specific
  forward: fused IEM update, NRM chain folding, only ``out`` computed), with its default thread
  policy: one row band per intra-op thread, each on its own Python thread with one intra-op
  thread (halo = the receptive radius; the same result as one piece).
* ``fast_ruas intra-op threads`` (only with more than one thread): one piece, the intra-op
  (OpenMP) threads doing the parallel work, as the other rows do.
* ``fast_ruas 1 thread`` (only with more than one thread): one piece on one intra-op thread.
* ``onnxruntime``: the compiled module (returning ``.out``) exported once to a temporary ONNX file
  with :mod:`nasflow.infer.export`'s writer (opset, dynamic batch/height/width as ``nasflow export``),
  run by an ``onnxruntime.InferenceSession`` on the ``CPUExecutionProvider`` with as many
  intra-op threads as torch uses (one inter-op thread). The fast module itself is not exported:
  its forward runs row bands on Python threads under ``inference_mode`` and does not trace. Left
  out with a note when ``onnxruntime`` is not importable.
* ``tiled``: what ``nasflow.load_model(...).enhance`` runs (:class:`nasflow.infer.inference.Enhancer`):
  the fast path (``task.inference_network`` = ``fast_ruas``) applied by
  :func:`nasflow.infer.tiling.tiled_apply` in ``--tile`` tiles (default
  :data:`nasflow.infer.tiling.DEFAULT_TILE`) overlapping by the halo the Enhancer uses
  (:func:`nasflow.infer.tiling.receptive_halo` of the compiled network), under ``inference_mode``;
  without the Enhancer's final ``clamp(0, 1)``, so that it is compared with the unclamped
  output like the other rows. A note under the table gives its difference to the untiled
  ``fast_ruas`` output too. An image no larger than one tile is processed whole.

Columns: ``runs``, the timed runs behind the medians; ``ms / image``, the median (and ``min``)
wall time of one forward of a 1x3xHxW float32 image; ``x reference``, the reference's median
over the row's (same run, same size); ``CPU ms / image``, the process CPU time per image (all
threads, user + system; steadier than wall time when other jobs share the cores, since time spent
waiting for a core is not counted) and its ratio; ``RSS before forward`` and ``peak RSS`` (MiB,
see below); ``max abs diff vs compiled`` (float32).

Timing (in this process). Every row first runs once (its output gives the diff); rows then get
``--warmup`` - 1 more untimed runs and ``--repeats`` timed runs, interleaved run by run (round 1
of every row, then round 2, ...), so that load from other jobs hits all rows alike. Rule for big
images: each row gets about ``--budget`` seconds (default 12) of timed runs per size, i.e.
``min(--repeats, floor(budget / first-run time))`` timed runs, and no extra warm-up runs when that
is fewer than ``--repeats``; a row whose first run alone takes longer than the budget is not run
again: that one cold run is its sample (``runs`` shows ``1*``). With the peak-RSS workers on (see
below) such a row is not run in this process at all: its time, CPU time and output come from its
worker's one run (``runs`` shows ``1*w``). On 2 cores this makes the 3840x2160 reference and
compiled rows (about a minute per image each) one run apiece, measured once. ``--repeats 9
--budget 1e9`` times every row fully.

Peak RSS. A process' peak RSS (``ru_maxrss``) only grows, so rows measured in one process would
all report the largest of them. Each (row, size) is therefore also run in a fresh subprocess
(``speed.py --_worker ROW WxH ...``) that builds the same network (same seed) and makes the
image, reads its resident set (``VmRSS``: ``RSS before forward``, i.e. Python + torch + the model
+ the input), lowers the high-water mark to it (Linux ``/proc/self/clear_refs``, so that transient
peaks of the imports and the build do not count), runs ONE forward and reads the high-water mark
(``peak RSS``: the largest resident set during the forward, resident model and input included;
``peak - before`` is what the forward adds). The mark is ``VmHWM`` from ``/proc/self/status``
rather than ``ru_maxrss``, which in a child starts at the parent's RSS at the fork (Linux carries
it across ``exec``) and would report the driver's size; ``ru_maxrss`` is the fallback without
``/proc``. Where the reset is unavailable the peak includes imports and build, and a note says
so. The workers run one at a time, before the in-process timing of their size, so they never
overlap the timed runs. The timings are not taken from the workers (except for the rows over the
budget above): a worker runs its row alone, so the run-by-run interleaving would be lost.
``--no-rss`` skips the workers (and the two RSS columns).

Search step (``--no-search`` skips it): ``benchmarks/search_speed.py`` run as a subprocess once
per hypergradient (``--search-hypergradients``; default first order, finite difference, i.e.
DARTS' second order, and the exact Hessian-vector product) with ``--json``, its own table function
formatting the results: one DARTS bilevel step on its RUAS-like supernet, each hypergradient in a
fresh process, at ``--search-size`` (square), median of ``--search-steps`` steps after
``--search-warmup``, with this command's ``--threads``, ``--seed`` and ``--no-nrm``. Through its
own torch-free driver rather than its ``run_one`` from here, because a child's ``ru_maxrss``
(which it reports) starts at the parent's RSS, and this process holds torch and the images.

The network is the paper genotype (or ``--genotype random``) with seeded random weights.
Timings on a shared machine swing with other jobs: compare rows of one run only. Two OpenMP
threads stall when another process holds a core (every row that uses them slows down 5-20x);
the CPU-time column and the ``1 thread`` row show it.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import platform
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from nasflow.core.compile import compile_model
from nasflow.core.genotype import GenoEdge, Genotype
from nasflow.spaces.distill_cell import RUAS_OPS, DistillCellSpace
from nasflow.tasks.ruas.model import RUASNet, paper_genotype

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

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
class SkipRow(Exception):
    """A row cannot run here; the message (why) is printed as a note instead of the row."""


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
    from nasflow.infer.fastpath import fast_model

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


class OutModule(nn.Module):
    """``y -> compiled(y).out``, the tensor every row computes, as one exportable module."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return self.model(y).out


def export_onnx(compiled: nn.Module, path: Path) -> None:
    """The compiled module to ``path`` with ``nasflow export``'s ONNX writer (opset, dynamic axes)."""
    from nasflow.infer.export import _write_onnx

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about Python bools in the cells
        _write_onnx(OutModule(compiled).eval(), path)


def build_onnxruntime(compiled: nn.Module, genotype: Genotype, args: argparse.Namespace) -> Runner:
    try:
        import onnxruntime as ort
    except ImportError:
        raise SkipRow("onnxruntime is not importable (pip install onnxruntime)") from None
    if args.onnx_file is None:  # this process exports once; workers get the file
        path = Path(args.workdir) / "compiled.onnx"
        try:
            export_onnx(compiled, path)
        except Exception as exc:  # noqa: BLE001 - a benchmark row, not the library
            raise SkipRow(f"ONNX export of the compiled module failed: {type(exc).__name__}: {exc}") from None
        args.onnx_file = str(path)
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.inter_op_num_threads = 1
    # ORT's pool busy-waits after each run by default, stealing the cores from the next (interleaved) row
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(args.onnx_file, options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name

    def run(y: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(session.run(None, {name: y.contiguous().numpy()})[0])

    return run


def tiled_halo(compiled: nn.Module) -> int:
    """The halo ``Enhancer`` tiles with: ``task.halo(network)`` = ``receptive_halo`` of the compiled net."""
    from nasflow.infer.tiling import receptive_halo

    return receptive_halo(compiled)


def build_tiled(compiled: nn.Module, genotype: Genotype, args: argparse.Namespace) -> Runner:
    from nasflow.tasks.ruas.fast import fast_ruas
    from nasflow.infer.tiling import tiled_apply

    net = fast_ruas(compiled)  # RUASTask.inference_network
    halo, tile = tiled_halo(compiled), args.tile

    def run(y: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():  # as Enhancer.enhance_tensor
            return tiled_apply(net, y, tile=tile, halo=halo, out_device="cpu")

    return run


VARIANTS: list[tuple[str, Callable[..., Runner | None]]] = [
    ("reference", build_reference),
    ("compiled", build_compiled),
    ("fast_model", build_fast_model),
    ("fast_ruas", build_fast_ruas),
    ("fast_ruas intra-op threads", build_fast_ruas_omp),
    ("fast_ruas 1 thread", build_fast_ruas_1),
    ("onnxruntime", build_onnxruntime),
    ("tiled", build_tiled),
]
ALWAYS = ("reference", "compiled")  # the ratios' and the diffs' baselines


# --- setup shared by the driver and the workers -----------------------------------------------------
def random_genotype(seed: int, use_nrm: bool) -> Genotype:
    rng = random.Random(seed)
    graph = DistillCellSpace().graph()
    labels = ("iem", "nrm") if use_nrm else ("iem",)
    return Genotype.from_cells("distill", {
        label: tuple(GenoEdge(rng.choice(RUAS_OPS), e.src, e.dst) for e in graph.edges) for label in labels})


def parse_size(text: str) -> tuple[int, int]:
    w, h = text.lower().split("x")
    return int(w), int(h)


def setup(args: argparse.Namespace) -> tuple[nn.Module, Genotype]:
    """Threads, heap policy, the genotype and the seeded compiled network (identical in every process)."""
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    if args.hold_heap:
        from nasflow.infer.fastpath import hold_heap

        held = hold_heap()
        if args._worker is None:
            print(f"hold_heap: {held}")
    torch.manual_seed(args.seed)
    use_nrm = not args.no_nrm
    genotype = paper_genotype(use_nrm) if args.genotype == "paper" else random_genotype(args.seed, use_nrm)
    return compile_model(RUASNet(use_nrm=use_nrm), genotype).eval(), genotype


def make_input(w: int, h: int, seed: int) -> torch.Tensor:
    return torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(seed))


def proc_status_mib(key: str) -> float | None:
    """A ``kB`` line of ``/proc/self/status`` (``VmRSS``, ``VmHWM``) in MiB; None without /proc."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        pass
    return None


def rss_now_mib() -> float:
    """The current resident set (``VmRSS``), or the peak so far where /proc is missing."""
    now = proc_status_mib("VmRSS")
    return peak_rss_mib() if now is None else now


def reset_peak_rss() -> bool:
    """Lower the peak RSS to the current RSS (Linux ``/proc/self/clear_refs``, 5); False where unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_mib() -> float:
    """This process' peak RSS: ``VmHWM`` (this address space's high-water mark), else ``ru_maxrss``.

    Not ``ru_maxrss`` first: in a child it is at least the parent's RSS at the fork (Linux keeps
    the forked address space's high-water mark across ``exec``), so a worker started by a big
    driver would report the driver's size.
    """
    hwm = proc_status_mib("VmHWM")
    if hwm is not None:
        return hwm
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 1024  # bytes on macOS, KiB on Linux


# --- the peak-RSS worker (one row, one size, in a fresh process) ---------------------------------------
def worker(args: argparse.Namespace) -> dict[str, Any]:
    name, size = args._worker
    compiled, genotype = setup(args)
    w, h = parse_size(size)
    y = make_input(w, h, args.seed)
    runner = dict(VARIANTS)[name](compiled, genotype, args)
    if runner is None:
        raise SystemExit(f"row {name!r} does not run with these settings")
    before = rss_now_mib()
    reset = reset_peak_rss()
    c0, t0 = time.process_time(), time.perf_counter()
    out = runner(y)
    seconds, cpu_seconds = time.perf_counter() - t0, time.process_time() - c0
    peak = peak_rss_mib()
    path = None
    if seconds > args.budget and args._out_dir:  # the driver will not run this row again: hand over the output
        path = str(Path(args._out_dir) / f"{name.replace(' ', '_')}-{size}.npy")
        np.save(path, out.detach().contiguous().numpy())
    return {"row": name, "size": size, "rss_before_mib": before, "peak_rss_mib": peak, "peak_reset": reset,
            "seconds": seconds, "cpu_seconds": cpu_seconds, "output": path}


def run_worker(name: str, size: str, args: argparse.Namespace) -> dict[str, Any] | str:
    """The worker's JSON result, or a one-line reason why there is none."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--_worker", name, size, "--threads", str(args.threads),
           "--seed", str(args.seed), "--genotype", args.genotype, "--tile", str(args.tile),
           "--budget", repr(args.budget), "--_out-dir", args.workdir]
    cmd += ["--no-nrm"] * args.no_nrm + ["--hold-heap"] * args.hold_heap
    if args.onnx_file:
        cmd += ["--_onnx-file", args.onnx_file]
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.worker_timeout, env=env)
    except subprocess.TimeoutExpired:
        return f"worker timed out after {args.worker_timeout:g} s"
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or [""])[-1]
        return f"worker failed (rc {proc.returncode}): {tail[:200]}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --- the driver ------------------------------------------------------------------------------------------
@dataclass
class Row:
    name: str
    run: Runner
    times: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    runs: int = 0  # timed runs still to do in the interleaved rounds
    label: str = ""  # what the runs column shows
    diff: float = float("nan")
    rss: dict[str, Any] | None = None


def first_run(row: Row, y: torch.Tensor, args: argparse.Namespace) -> torch.Tensor:
    """The row's first run (or its over-budget worker's): its output; sets how many timed runs follow."""
    if row.rss is not None and row.rss["output"] is not None:  # over the budget in its worker
        row.times, row.cpu, row.label = [row.rss["seconds"]], [row.rss["cpu_seconds"]], "1*w"
        return torch.from_numpy(np.load(row.rss["output"]))
    c0, t0 = time.process_time(), time.perf_counter()
    out = row.run(y)
    t1, c1 = time.perf_counter() - t0, time.process_time() - c0
    row.runs = min(args.repeats, math.floor(args.budget / t1)) if t1 > 0 else args.repeats
    if row.runs == 0:
        row.times, row.cpu, row.label = [t1], [c1], "1*"
    else:
        row.label = str(row.runs)
        if row.runs == args.repeats:
            for _ in range(args.warmup - 1):
                row.run(y)
    return out


def measure(size: str, rows: list[Row], args: argparse.Namespace) -> list[str]:
    """Fill the rows' timings, diffs and RSS for one size; returns the notes to print under the table."""
    w, h = parse_size(size)
    notes: list[str] = []
    for row in rows:
        row.times, row.cpu, row.runs, row.label, row.diff, row.rss = [], [], 0, "", float("nan"), None
    if not args.no_rss:
        for row in rows:
            t0 = time.perf_counter()
            result = run_worker(row.name, size, args)
            if isinstance(result, str):
                notes.append(f"{row.name}: no RSS: {result}")
            else:
                row.rss = result
                if not result["peak_reset"]:
                    notes.append(f"{row.name}: peak RSS includes imports and build (could not reset the peak)")
            print(f"  RSS worker {row.name} {size}: {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
    y = make_input(w, h, args.seed)
    outputs: dict[str, torch.Tensor] = {}
    expected: torch.Tensor | None = None
    for row in sorted(rows, key=lambda r: r.name != "compiled"):  # compiled first: the others compare with it
        out = first_run(row, y, args)
        if expected is None:
            expected = out
        row.diff = (out.float() - expected).abs().max().item()
        if row.name in ("fast_ruas", "tiled"):
            outputs[row.name] = out
        del out
    if "tiled" in outputs:
        line = f"tiled: tile {args.tile}, halo {args.halo}"
        if "fast_ruas" in outputs:
            untiled = (outputs["tiled"] - outputs["fast_ruas"]).abs().max().item()
            line += f"; max abs diff to the untiled fast_ruas output {untiled:.1e}"
        notes.append(line)
    outputs.clear()
    for i in range(max((row.runs for row in rows), default=0)):
        for row in rows:
            if row.runs > i:
                c0, t0 = time.process_time(), time.perf_counter()
                row.run(y)
                row.times.append(time.perf_counter() - t0)
                row.cpu.append(time.process_time() - c0)
    return notes


def table(size: str, rows: list[Row], args: argparse.Namespace) -> str:
    ref = next(r for r in rows if r.name == "reference")
    base, cbase = statistics.median(ref.times), statistics.median(ref.cpu)
    rss = not args.no_rss
    head = ["variant", "runs", "ms / image (median)", "min", "x reference", "CPU ms / image (median, all threads)",
            "CPU x reference", *(["RSS before forward MiB", "peak RSS MiB"] if rss else []),
            "max abs diff vs compiled"]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for r in rows:
        med, cmed = statistics.median(r.times), statistics.median(r.cpu)
        cells = [r.name, r.label, f"{med * 1e3:.1f}", f"{min(r.times) * 1e3:.1f}", f"{base / med:.2f}x",
                 f"{cmed * 1e3:.1f}", f"{cbase / cmed:.2f}x" if cmed > 0 else "-"]
        if rss:
            cells += [f"{r.rss['rss_before_mib']:.0f}", f"{r.rss['peak_rss_mib']:.0f}"] if r.rss else ["-", "-"]
        cells.append(f"{r.diff:.1e}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def load_search_speed() -> Any:
    spec = importlib.util.spec_from_file_location("nasflow_bench_search_speed", HERE / "search_speed.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def search_step(hg: str, args: argparse.Namespace) -> dict[str, Any] | str:
    """``search_speed.py --hypergradients HG --json``: its result, or a one-line reason why there is none.

    Run through search_speed.py's own (torch-free, small) driver rather than its ``run_one`` from
    this process: a worker's ``ru_maxrss`` starts at its parent's RSS at the fork, and this process
    holds torch and the images, which would hide the step's memory.
    """
    cmd = [sys.executable, str(HERE / "search_speed.py"), "--hypergradients", hg, "--json",
           "--size", str(args.search_size), "--steps", str(args.search_steps), "--warmup", str(args.search_warmup),
           "--threads", str(args.threads), "--seed", str(args.seed), "--timeout", repr(args.search_timeout)]
    cmd += ["--no-nrm"] * args.no_nrm
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.search_timeout + 60)
    except subprocess.TimeoutExpired:
        return f"timed out after {args.search_timeout:g} s"
    if proc.returncode != 0:
        tail = [line for line in proc.stderr.strip().splitlines() if line.strip()]
        return f"failed (rc {proc.returncode}): {(tail or [''])[-1][:200]}"
    return json.loads(proc.stdout[proc.stdout.rindex("\n[") :])[0]


def search_section(args: argparse.Namespace) -> None:
    """One DARTS search step per hypergradient, each in its own process (benchmarks/search_speed.py)."""
    search_speed = load_search_speed()  # for its table
    hgs = [h.strip() for h in args.search_hypergradients.split(",") if h.strip()]
    results, notes = [], []
    for hg in hgs:
        t0 = time.perf_counter()
        result = search_step(hg, args)
        if isinstance(result, str):
            notes.append(f"{hg}: {result}")
        else:
            results.append(result)
        print(f"  search step {hg}: {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
    part = "IEM" + ("" if args.no_nrm else " + NRM")
    print(f"\nsearch step (benchmarks/search_speed.py, RUAS-like supernet {part}, batch 1, "
          f"{args.search_size}x{args.search_size}, median of {args.search_steps} steps after {args.search_warmup} "
          f"warmup, each hypergradient in its own process):\n")
    if results:
        print(search_speed.table(results))
    for note in notes:
        print(f"\n{note}")
    print("\nstep = arch step (hypergradient + Adam) + weight step (SGD); peak step mem: ru_maxrss growth over the "
          "stepping; first_order is DARTS' first order, finite_difference its second order (exact_hvp: the exact "
          "Hessian-vector product).")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from nasflow.infer.tiling import DEFAULT_TILE

    names = [name for name, _ in VARIANTS]
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", nargs="+", default=["600x400", "1920x1080", "3840x2160"],
                   help="WxH (default 600x400 1920x1080 3840x2160)")
    p.add_argument("--threads", type=int, default=0, help="torch (and onnxruntime) intra-op threads (0: torch default)")
    p.add_argument("--repeats", type=int, default=9, help="timed runs per row at most (median reported)")
    p.add_argument("--warmup", type=int, default=2, help="untimed runs per row, the first (diff) run included")
    p.add_argument("--budget", type=float, default=12.0,
                   help="seconds of timed runs per row and size; slower rows run fewer times (default 12)")
    p.add_argument("--genotype", choices=("paper", "random"), default="paper")
    p.add_argument("--no-nrm", action="store_true", help="IEM only (RUAS_i)")
    p.add_argument("--only", nargs="*", default=None, choices=names, metavar="ROW",
                   help="run only these rows (reference and compiled always run); rows: " + ", ".join(names))
    p.add_argument("--hold-heap", action="store_true",
                   help="keep freed memory in glibc's heap (nasflow.infer.fastpath.hold_heap, process-wide: all rows)")
    p.add_argument("--tile", type=int, default=DEFAULT_TILE, help=f"the tiled row's tile (default {DEFAULT_TILE})")
    p.add_argument("--no-rss", action="store_true", help="skip the per-row peak-RSS subprocesses")
    p.add_argument("--worker-timeout", type=float, default=1800.0, help="seconds per peak-RSS subprocess")
    p.add_argument("--no-search", action="store_true", help="skip the search-step table")
    p.add_argument("--search-size", type=int, default=64, help="search step image height = width (default 64)")
    p.add_argument("--search-steps", type=int, default=3, help="timed search steps (median reported)")
    p.add_argument("--search-warmup", type=int, default=1)
    p.add_argument("--search-hypergradients", default="first_order,finite_difference,exact_hvp",
                   help="comma-separated, from first_order, finite_difference, exact_hvp")
    p.add_argument("--search-timeout", type=float, default=600.0, help="seconds per search-step subprocess")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--_worker", nargs=2, default=None, metavar=("ROW", "WxH"), help=argparse.SUPPRESS)
    p.add_argument("--_onnx-file", dest="onnx_file", default=None, help=argparse.SUPPRESS)
    p.add_argument("--_out-dir", dest="_out_dir", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.tile < 16:
        p.error("--tile must be at least 16 (as nasflow.load_model's)")
    if args.repeats < 1:
        p.error("--repeats must be at least 1")
    for size in args.sizes:
        try:
            w, h = parse_size(size)
            assert w > 0 and h > 0
        except (ValueError, AssertionError):
            p.error(f"size {size!r} is not WxH")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args._worker is not None:
        args.workdir = args._out_dir
        print(json.dumps(worker(args)))
        return 0
    start = time.perf_counter()
    args.workdir = tempfile.mkdtemp(prefix="nasflow-speed-")
    try:
        compiled, genotype = setup(args)
        args.halo = tiled_halo(compiled)
        cpu = platform.processor() or platform.machine()
        try:
            import onnxruntime

            ort = f", onnxruntime {onnxruntime.__version__}"
        except ImportError:
            ort = ", no onnxruntime"
        print(f"torch {torch.__version__}{ort}, {torch.get_num_threads()} intra-op threads, {cpu} "
              f"({os.cpu_count()} CPUs), python {platform.python_version()}")
        print(f"genotype {args.genotype}: iem={genotype.ops('iem')}"
              + ("" if args.no_nrm else f" nrm={genotype.ops('nrm')}"))
        rows: list[Row] = []
        for name, build in VARIANTS:
            if args.only is not None and name not in ALWAYS and name not in args.only:
                continue
            t0 = time.perf_counter()
            try:
                runner = build(compiled, genotype, args)
            except SkipRow as exc:
                print(f"skipped {name}: {exc}")
                continue
            if runner is not None:
                rows.append(Row(name, runner))
                print(f"built {name} in {time.perf_counter() - t0:.2f} s")
        sys.stdout.flush()
        for size in args.sizes:
            t0 = time.perf_counter()
            notes = measure(size, rows, args)
            w, h = parse_size(size)
            print(f"\n{w}x{h}: median of up to {args.repeats} timed runs per row, interleaved, {args.budget:g} s "
                  f"budget per row ({time.perf_counter() - t0:.0f} s for this size):\n")
            print(table(size, rows, args))
            print()
            for note in notes:
                print(note)
            print("runs: 1* = one cold run (over the budget); 1*w = the same run in the row's peak-RSS worker"
                  + ("" if args.no_rss else "; RSS: build + one forward in a fresh process per row"))
            sys.stdout.flush()
        if not args.no_search:
            search_section(args)
    finally:
        shutil.rmtree(args.workdir, ignore_errors=True)
    print(f"\ntotal wall time {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Milliseconds per 1920x1080 frame of a shipped RUAS model on a GPU: precisions, CUDA graphs, compile.

One short prepared run for a lent GPU machine (it prints one markdown table and writes the rows as
JSON)::

    python benchmarks/gpu_speed.py                      # CUDA, 1920x1080, ruas-lol (IEM + NRM)
    python benchmarks/gpu_speed.py --json out.json --compile
    python benchmarks/gpu_speed.py --device cpu --size 64x48 --repeats 2   # a dry run of the script

Rows (each built from the same model file; ``plain`` = the compiled module, ``fast`` = the task's
inference network, :func:`nasflow.tasks.ruas.fast.fast_ruas`):

* ``plain|fast fp32|fp16|bf16 [graph] [channels-last]``: the network alone on a frame already on
  the GPU, timed with CUDA events: median over ``--repeats`` frames after warm-up. ``graph``:
  replayed from a CUDA graph (:class:`nasflow.infer.cudagraph.GraphedCall`); ``channels-last``: the fast
  path with the channels-last layout it uses on CPUs. fp32 is float32 (TF32 off, as
  ``load_model`` runs it); ``plain tf32`` lets cuDNN use TF32, its default on this GPU.
* ``compile ...`` (``--compile``): ``torch.compile`` of that network (default mode); its first call
  (the compile) is reported separately.
* ``enhance fp32|fp16|bf16``: what users call, ``load_model(name, device=..., precision=...)
  .enhance(uint8 frame)``, host to host: upload, network, download, conversion to 8 bits; wall time.

Columns: ms per frame, frames/s, the ratio to ``plain fp32`` of the same run, the largest absolute
difference from the float64 plain module, and the share of 8-bit output values that differ from the
float64 result's and by how many levels at most. ``--search`` adds the search step times of
``benchmarks/search_speed.py --device cuda`` (run as a subprocess).
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from nasflow.infer.cudagraph import GraphedCall
from nasflow.infer.inference import PRECISIONS, load_model
from nasflow.infer.models import load_network


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="ruas-lol", help="a shipped model name or model file (default: ruas-lol)")
    p.add_argument("--size", default="1920x1080", help="WIDTHxHEIGHT (default: 1920x1080)")
    p.add_argument("--device", default="cuda", help="cuda (default) or cpu for a dry run of the script")
    p.add_argument("--repeats", type=int, default=50, help="timed frames per row (default: 50)")
    p.add_argument("--warmup", type=int, default=5, help="untimed frames per row (default: 5)")
    p.add_argument("--compile", action="store_true", help="add torch.compile rows (slow first call)")
    p.add_argument("--search", action="store_true", help="add the search step times (search_speed.py)")
    p.add_argument("--json", default=None, help="also write the rows to this JSON file")
    return p.parse_args(argv)


def synthetic_frame(width: int, height: int) -> np.ndarray:
    """A dark, smooth, noisy uint8 frame (no data files on a bare GPU machine)."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    base = 0.12 + 0.08 * np.sin(xx / 97.0)[..., None] * np.cos(yy / 71.0)[..., None] * np.array([1.0, 0.8, 0.6])
    noisy = base + rng.normal(0, 0.01, (height, width, 3))
    return (np.clip(noisy, 0, 1) * 255).round().astype(np.uint8)


def timer(device: torch.device) -> Callable[[Callable[[], object], int, int], list[float]]:
    """Per-call milliseconds: CUDA events on a GPU (device time), perf_counter on a CPU."""

    def run(fn: Callable[[], object], warmup: int, repeats: int) -> list[float]:
        for _ in range(warmup):
            fn()
        times = []
        for _ in range(repeats):
            if device.type == "cuda":
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                fn()
                end.record()
                end.synchronize()
                times.append(start.elapsed_time(end))
            else:
                t0 = time.perf_counter()
                fn()
                times.append((time.perf_counter() - t0) * 1000)
        return times

    return run


def eight_bit(x: torch.Tensor) -> np.ndarray:
    return (x.detach().double().clamp(0, 1).cpu().numpy() * 255).round().astype(np.int16)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    width, height = (int(v) for v in args.size.lower().split("x"))
    device = torch.device(args.device)
    timed = timer(device)
    torch.backends.cudnn.allow_tf32 = False  # fp32 rows are float32, as nasflow.load_model runs them
    loaded = load_network(args.model, device=device)
    task, plain = loaded.task, loaded.network.eval()
    frame = synthetic_frame(width, height)
    x32 = torch.from_numpy(frame).to(device).permute(2, 0, 1).unsqueeze(0).float().div(255)
    with torch.inference_mode():
        truth = task.predict(copy.deepcopy(plain).double(), x32.double())
    truth8 = eight_bit(truth)
    rows: list[dict] = []

    def record(name: str, ms: list[float], out: torch.Tensor | np.ndarray | None, **extra) -> None:
        row = {"variant": name, "ms": statistics.median(ms), "ms_min": min(ms), **extra}
        if out is not None:
            if isinstance(out, np.ndarray):  # uint8 HxWx3 from enhance()
                out8 = out.astype(np.int16).transpose(2, 0, 1)[None]
                row["max_abs_diff"] = float(np.abs(out8 / 255.0 - truth.double().cpu().numpy()).max())
            else:
                row["max_abs_diff"] = float((out.double() - truth).abs().max())
                out8 = eight_bit(out)
            levels = np.abs(out8 - truth8)
            row["differ_8bit"] = float((levels > 0).mean())
            row["max_levels"] = int(levels.max())
        rows.append(row)
        print(f"  {name}: {row['ms']:.3f} ms", flush=True)

    builds = {"plain": lambda: copy.deepcopy(plain), "fast": lambda: task.inference_network(plain)}
    precisions = ["fp32", "fp16", "bf16"] if device.type == "cuda" else ["fp32"]
    for kind, build in builds.items():
        for prec in precisions:
            dtype = PRECISIONS[prec]
            net = build().to(device, dtype).eval()
            x = x32.to(dtype)
            fn = lambda net=net: task.predict(net, x)  # noqa: E731
            with torch.inference_mode():
                out = fn()
                record(f"{kind} {prec}", timed(fn, args.warmup, args.repeats), out)
                if device.type == "cuda":
                    graphed = GraphedCall(lambda t, net=net: task.predict(net, t))
                    gfn = lambda: graphed(x)  # noqa: E731
                    out = gfn()
                    record(f"{kind} {prec} graph", timed(gfn, args.warmup, args.repeats), out,
                           graph_disabled=graphed.disabled)
    if device.type == "cuda":  # TF32 convolutions (cuDNN's default), for the record
        torch.backends.cudnn.allow_tf32 = True
        net = copy.deepcopy(plain)
        with torch.inference_mode():
            out = task.predict(net, x32)
            record("plain tf32", timed(lambda: task.predict(net, x32), args.warmup, args.repeats), out)
        torch.backends.cudnn.allow_tf32 = False
    if device.type == "cuda":  # the fast path with channels-last, for the record
        for prec in ("fp32", "fp16"):
            from nasflow.tasks.ruas.fast import fast_ruas

            dtype = PRECISIONS[prec]
            net = fast_ruas(plain, channels_last=True).to(device, dtype)
            x = x32.to(dtype)
            graphed = GraphedCall(lambda t, net=net: task.predict(net, t))
            with torch.inference_mode():
                out = graphed(x)
                record(f"fast {prec} graph channels-last", timed(lambda: graphed(x), args.warmup, args.repeats), out)
    if args.compile:
        for kind, prec in (("plain", "fp32"), ("plain", "fp16"), ("fast", "fp16")):
            dtype = PRECISIONS[prec] if device.type == "cuda" else torch.float32
            try:
                net = builds[kind]().to(device, dtype).eval()
                compiled = torch.compile(lambda t, net=net: task.predict(net, t))
                x = x32.to(dtype)
                with torch.inference_mode():
                    t0 = time.perf_counter()
                    out = compiled(x)
                    if device.type == "cuda":
                        torch.cuda.synchronize()
                    first = time.perf_counter() - t0
                    record(f"compile {kind} {prec}", timed(lambda: compiled(x), args.warmup, args.repeats), out,
                           first_call_s=round(first, 1))
            except Exception as err:  # noqa: BLE001 - a compile failure is a row, not the end of the run
                rows.append({"variant": f"compile {kind} {prec}", "error": f"{type(err).__name__}: {err}"[:300]})
                print(f"  compile {kind} {prec}: FAILED {err}", flush=True)
    for prec in precisions:  # what users call: uint8 in host memory -> uint8 in host memory
        enhancer = load_model(args.model, device=args.device, precision=prec)
        out8 = enhancer.enhance(frame)

        def host_to_host(enhancer=enhancer) -> None:
            enhancer.enhance(frame)
            if device.type == "cuda":
                torch.cuda.synchronize()

        ms = []
        for i in range(args.warmup + max(3, args.repeats // 5)):
            t0 = time.perf_counter()
            host_to_host()
            if i >= args.warmup:
                ms.append((time.perf_counter() - t0) * 1000)
        record(f"enhance {prec}", ms, out8, graphs=enhancer._forward.__class__.__name__ == "GraphedCall")
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        big = np.tile(frame, (2, 2, 1))  # 3840x2160, in 2048-px tiles by default
        before = torch.cuda.memory_allocated()
        load_model(args.model, device=args.device, precision="fp16").enhance(big)
        rows.append({"variant": "enhance fp16 3840x2160 peak GPU MiB",
                     "peak_mib": round((torch.cuda.max_memory_allocated() - before) / 2**20, 1)})
    base = next(r["ms"] for r in rows if r["variant"] == "plain fp32")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"\n{args.model}, {width}x{height}, {name}, torch {torch.__version__}; medians of {args.repeats}\n")
    print("| variant | ms/frame | frames/s | x plain fp32 | max abs diff vs fp64 | 8-bit values differing | max levels |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        if "ms" not in r:
            print(f"| {r['variant']} | {r.get('error') or r.get('peak_mib')} | | | | | |")
            continue
        extra = f" (first call {r['first_call_s']} s)" if "first_call_s" in r else ""
        print(f"| {r['variant']}{extra} | {r['ms']:.3f} | {1000 / r['ms']:.0f} | {base / r['ms']:.2f} | "
              f"{r.get('max_abs_diff', float('nan')):.1e} | {100 * r.get('differ_8bit', 0):.2f}% | "
              f"{r.get('max_levels', '')} |")
    if args.search:
        cmd = [sys.executable, str(Path(__file__).with_name("search_speed.py")), "--device", args.device,
               "--size", "320", "--steps", "20" if device.type == "cuda" else "2", "--warmup", "5" if device.type == "cuda" else "1"]
        print("\n$ " + " ".join(cmd[1:]), flush=True)
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        print(done.stdout + done.stderr)
    if args.json:
        Path(args.json).write_text(json.dumps({"model": args.model, "size": args.size, "device": name,
                                               "torch": torch.__version__, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

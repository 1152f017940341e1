"""Side by side: time per image of model files through the path users run, ratios to the first.

    python benchmarks/model_speed.py OLD.pt ruas-auto                 # 600x400, 15 interleaved rounds
    git show c11e26a:tasks/ruas/models/ruas-auto.pt > /tmp/prev.pt && python benchmarks/model_speed.py /tmp/prev.pt ruas-auto

Each model (a shipped name, a model file or a run folder) is loaded with ``nasflow.load_model(..., device="cpu")``
and times ``enhance_rgb`` on the same 600x400 frame (uniform noise in [0, 0.3], a dark photo's
range); the models take turns, one run each per round, so that load from other processes falls on
all of them alike; the table gives the median per model and its ratio to the first model's.
Compare ratios from one run only: absolute times on a shared machine move by 2x.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("models", nargs="+", help="shipped model names, model files or run folders (the first is the baseline)")
    p.add_argument("--size", default="600x400", help="WxH of the frame (default 600x400)")
    p.add_argument("--rounds", type=int, default=15, help="interleaved rounds (one run per model each)")
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    args = p.parse_args(argv)
    import torch

    from nasflow.infer.inference import load_model

    if args.threads:
        torch.set_num_threads(args.threads)
    w, h = (int(v) for v in args.size.lower().split("x"))
    models = {name: load_model(name, device="cpu") for name in args.models}
    frame = np.random.default_rng(0).uniform(0.0, 0.3, size=(h, w, 3)).astype(np.float32)
    for m in models.values():  # warm-up: allocator, thread pools
        m.enhance_rgb(frame)
        m.enhance_rgb(frame)
    times: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(args.rounds):
        for name, m in models.items():
            t0 = time.perf_counter()
            m.enhance_rgb(frame)
            times[name].append(time.perf_counter() - t0)
    med = {name: 1e3 * float(np.median(v)) for name, v in times.items()}
    base = med[args.models[0]]
    print(f"{w}x{h}, {torch.get_num_threads()} thread(s), {args.rounds} interleaved rounds, torch {torch.__version__}")
    print("| model | median ms | ratio to the first |")
    print("|---|---:|---:|")
    for name, ms in med.items():
        print(f"| {name} | {ms:.1f} | {ms / base:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Load test of ``nasflow enhance``: many generated images, peak memory flat, throughput.

Generates N dark test images of mixed sizes (PNG and JPEG up to 64 x 64, and a few at MAX x MAX
pixels, half among the first and half among the last hundred), runs ``nasflow enhance FOLDER -o OUT``
in this process while a thread samples the resident set size (VmRSS, /proc/self/status) after
every written image, and prints images/s, the peak RSS, and the peak RSS over the first and
the last hundred images (they should be equal up to allocator noise: memory must not grow with
the folder)::

    python benchmarks/load.py                          # 1,000 images up to 2000x2000 (minutes)
    python benchmarks/load.py --count 200 --max 256    # a quick look
    python benchmarks/load.py --model runs/ruas-X --json result.json

Without ``--model`` it uses a RUAS network with torch's default initialisation (the
architecture of the paper), so no trained weights are needed. Linux only (VmRSS).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np


def rss_mib() -> float:
    """Resident set size now, MiB (VmRSS of /proc/self/status)."""
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def make_images(folder: Path, count: int, max_side: int, large: int, seed: int = 0) -> list[tuple[int, int]]:
    """``count`` images named img_00000.png|jpg..., the others of random sizes up to 64 x 64 (or
    ``max_side``); ``large`` of them at max_side x max_side, half among the first hundred and half
    among the last hundred, so that the two windows whose memory is compared hold the same work."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    window = min(100, count)
    first = np.linspace(0, window - 1, (large + 1) // 2 + 2)[1:-1]
    last = count - window + np.linspace(0, window - 1, large // 2 + 2)[1:-1]
    large_at = {int(i) for i in np.concatenate([first, last])} if large else set()
    sizes = []
    for i in range(count):
        if i in large_at:
            h = w = max_side
        else:
            h, w = (int(v) for v in rng.integers(1, max(2, min(max_side, 64)) + 1, size=2))
        low = rng.integers(0, 40, size=(max(1, h // 8), max(1, w // 8), 3), dtype=np.uint8)
        image = Image.fromarray(low).resize((w, h), Image.BILINEAR)  # smooth, photo-like, cheap to make
        suffix = ".jpg" if i % 5 == 4 else ".png"
        image.save(folder / f"img_{i:05d}{suffix}")
        sizes.append((h, w))
    return sizes


def default_model(folder: Path) -> Path:
    """A RUAS model file (paper genotype, default initialisation) in ``folder``."""
    import torch

    from nasflow.run.modelfile import model_payload, save_model_file
    from nasflow.tasks.ruas.model import paper_genotype
    from nasflow.tasks.ruas.official import run_config, target_network

    torch.manual_seed(0)
    path = folder / "ruas-untrained.pt"
    return save_model_file(model_payload(target_network(True).state_dict(), paper_genotype(True).to_dict(),
                                         run_config(True), {"name": "ruas-untrained"}), path)


def run(inputs: Path, output: Path, model: Path, extra: list[str]) -> dict:
    """``nasflow enhance`` in this process; RSS sampled after every written image and every 20 ms."""
    import nasflow.infer.imageio as imageio
    from nasflow.cli import main

    samples: list[tuple[int, float]] = []  # (images written so far, RSS MiB)
    written = [0]
    real_write = imageio.write_image

    def counting_write(*args, **kwargs):  # noqa: ANN002, ANN003
        path = real_write(*args, **kwargs)
        written[0] += 1
        samples.append((written[0], rss_mib()))
        return path

    imageio.write_image = counting_write
    stop = threading.Event()

    def sampler() -> None:
        while not stop.wait(0.02):
            samples.append((written[0], rss_mib()))

    thread = threading.Thread(target=sampler, daemon=True)
    before = rss_mib()
    thread.start()
    started = time.perf_counter()
    try:
        code = main(["enhance", str(inputs), "-o", str(output), "--model", str(model), "--quiet", *extra])
    finally:
        seconds = time.perf_counter() - started
        stop.set()
        thread.join()
        imageio.write_image = real_write
    total = written[0]
    first = [rss for n, rss in samples if n <= 100]
    last = [rss for n, rss in samples if n > total - 100]
    return {
        "exit_code": code,
        "images_written": total,
        "outputs_on_disk": sum(1 for p in output.iterdir() if not p.name.startswith(".")),
        "seconds": seconds,
        "images_per_second": total / seconds if seconds > 0 else 0.0,
        "rss_before_mib": before,
        "peak_rss_mib": max((rss for _, rss in samples), default=before),
        "peak_rss_first_100_mib": max(first, default=float("nan")),
        "peak_rss_last_100_mib": max(last, default=float("nan")),
        "peak_rss_per_100_mib": [round(max((rss for n, rss in samples if lo < n <= lo + 100), default=float("nan")), 1)
                                 for lo in range(0, total, 100)],
        "max_rss_getrusage_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "samples": len(samples),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=1000, help="images to generate (default: 1000)")
    parser.add_argument("--max", type=int, default=2000, help="largest side in pixels (default: 2000)")
    parser.add_argument("--large", type=int, default=6,
                        help="images at the largest size, half in the first and half in the last hundred (default: 6)")
    parser.add_argument("--model", default=None, help="model name, file or run folder (default: untrained RUAS)")
    parser.add_argument("--workdir", default=None, help="where to put the images (default: a temp folder)")
    parser.add_argument("--json", default=None, help="also write the result as JSON here")
    parser.add_argument("--tile", default=None, help="passed on to nasflow enhance --tile")
    args = parser.parse_args(argv)
    if not Path("/proc/self/status").exists():
        print("benchmarks/load.py needs Linux (/proc/self/status)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="nasflow-load-") as tmp:
        work = Path(args.workdir) if args.workdir else Path(tmp)
        t0 = time.perf_counter()
        sizes = make_images(work / "in", args.count, args.max, min(args.large, args.count))
        made = time.perf_counter() - t0
        model = Path(args.model) if args.model else default_model(work)
        extra = ["--tile", args.tile] if args.tile else []
        result = run(work / "in", work / "out", model, extra)
    result.update({"count": args.count, "max_side": args.max, "large": args.large,
                   "megapixels": sum(h * w for h, w in sizes) / 1e6, "generate_seconds": made,
                   "cpu_threads": os.cpu_count()})
    print(f"{result['images_written']} of {args.count} images ({result['megapixels']:.1f} MP, sides up to {args.max}) "
          f"in {result['seconds']:.1f} s: {result['images_per_second']:.2f} images/s")
    print(f"peak RSS {result['peak_rss_mib']:.0f} MiB (before {result['rss_before_mib']:.0f} MiB); "
          f"peak over the first 100 images {result['peak_rss_first_100_mib']:.0f} MiB, "
          f"over the last 100 {result['peak_rss_last_100_mib']:.0f} MiB")
    print("peak RSS per hundred images (MiB): " + " ".join(f"{v:.0f}" for v in result["peak_rss_per_100_mib"]))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0 if result["exit_code"] == 0 and result["images_written"] == args.count else 1


if __name__ == "__main__":
    sys.exit(main())

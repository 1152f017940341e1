"""Training throughput of RUAS on real folders: the input pipeline alone, and a whole training run,
with the decode cache (``task_options.decode_cache``) on and off, side by side in one invocation.

    python benchmarks/train_speed.py                    # 256 SICE/LOL images, 256 px crops
    python benchmarks/train_speed.py --images 1255 --crop 256 --epochs 3

Rows: ``pipeline``: images/s of one epoch of ``task.train_batches(epoch)`` (decode, crop, flip, batch),
first epoch and later epochs separately (the cache decodes during the first); ``training``: wall
time of ``nasflow train`` with the shipped ``ruas-mit`` recipe on the same images, and whether the
trained weights of the two runs are bitwise equal (they must be: the cache changes no item).
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = HERE.parent.parent / "shared" / "data"
RECIPE = HERE.parent / "tasks" / "ruas" / "models" / "ruas-mit.yaml"


def config(args: argparse.Namespace, cache: bool):  # noqa: ANN201 - a RunConfig
    from nasflow.config import apply_overrides, from_dict, read_yaml
    from nasflow.schema import RunConfig

    sets = [f"task_options.root={args.data}", "task_options.train=sice_dark",
            "task_options.extra_train=[sice_mid, lol/eval15_low]", f"task_options.max_train_images={args.images}",
            f"task_options.crop={args.crop}", f"task_options.decode_cache={str(cache).lower()}",
            f"train.epochs={args.epochs}", "tensorboard=false", "device=cpu"]
    return from_dict(RunConfig, apply_overrides(read_yaml(RECIPE), sets))


def pipeline(args: argparse.Namespace, cache: bool) -> tuple[float, float]:
    """Images/s of the first epoch and of the mean later epoch."""
    import torch

    from nasflow.task import build_task

    task = build_task(config(args, cache), torch.device("cpu"), trusted=True)
    n = len(task.train_set)
    rates = []
    for epoch in range(1 + args.pipeline_epochs):
        t0 = time.perf_counter()
        batches = task.train_batches(epoch)
        assert sum(len(b) for b in batches) > 0
        rates.append(n / (time.perf_counter() - t0))
    return rates[0], sum(rates[1:]) / len(rates[1:])


def training(args: argparse.Namespace, cache: bool, out: Path) -> tuple[float, dict]:
    from nasflow.run.modelfile import MODEL_FILE, read_model_file
    from nasflow.run.runner import run

    t0 = time.perf_counter()
    run(config(args, cache), out=out, quiet=True, genotype="paper")
    seconds = time.perf_counter() - t0
    return seconds, read_model_file(out / MODEL_FILE)["state_dict"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--images", type=int, default=256, help="training images (evenly spread over the folders)")
    parser.add_argument("--crop", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=2, help="epochs of the training rows")
    parser.add_argument("--pipeline-epochs", type=int, default=2, help="later epochs timed in the pipeline rows")
    args = parser.parse_args(argv)
    args.data = args.data.resolve()
    if not all((args.data / f).is_dir() for f in ("sice_dark", "sice_mid", "lol/eval15_low")):
        print(f"skipped: {args.data} lacks the training folders sice_dark, sice_mid, lol/eval15_low")
        return 0
    import torch

    logging.getLogger("nasflow").setLevel(logging.WARNING)
    print(f"{args.images} images, {args.crop} px crops, torch {torch.__version__}, {torch.get_num_threads()} threads\n")
    print("| row | decode cache off | decode cache on | on / off |")
    print("|---|---:|---:|---:|")
    (first_off, later_off), (first_on, later_on) = pipeline(args, False), pipeline(args, True)
    print(f"| pipeline, first epoch (images/s) | {first_off:.0f} | {first_on:.0f} | {first_on / first_off:.2f}x |")
    print(f"| pipeline, later epochs (images/s) | {later_off:.0f} | {later_on:.0f} | {later_on / later_off:.2f}x |")
    with tempfile.TemporaryDirectory() as tmp:
        # a tiny run first, so that neither timed run pays the one-off costs (imports, kernel setup)
        training(argparse.Namespace(**{**vars(args), "images": 4, "epochs": 1}), True, Path(tmp) / "warm-up")
        s_off, w_off = training(args, False, Path(tmp) / "off")
        s_on, w_on = training(args, True, Path(tmp) / "on")
    equal = all(torch.equal(w_off[k], w_on[k]) for k in w_off)
    print(f"| training, {args.epochs} epochs, ruas-mit recipe (s) | {s_off:.1f} | {s_on:.1f} | "
          f"{s_off / s_on:.2f}x faster |")
    print(f"\ntrained weights bitwise equal with and without the cache: {equal}")
    return 0 if equal else 1


if __name__ == "__main__":
    sys.exit(main())

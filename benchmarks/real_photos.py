"""No-reference figures and a contact sheet of the shipped models on real low-light photos.

    python benchmarks/real_photos.py                                  # shipped models on real/LIME, real/MEF
    python benchmarks/real_photos.py --model ruas-lol --model released-lol.pt --sheets runs/real-photos

The ``real/`` folders of ``../shared/data`` have no references, so each model is described by
per-image means of: brightness (mean of 8-bit RGB / 255), entropy (bits), lightness-order error
against the input (LOE, lower keeps the input's order), the noise level of the output
(Immerkaer's estimator, 8-bit levels; ``nasflow.tasks.ruas.metrics.noise_sigma``),
``noise/gain``: how much the noise level rose over how much the brightness rose (a pure gain
scales both alike, 1.0; above 1 the model amplified noise more than the picture, below 1 it
removed some), and ``dark noise``: the same estimator restricted to the flat dark areas of the
input (the flattest half of its darkest third, ``nasflow.tasks.ruas.metrics.flat_dark_mask``),
where lifted sensor noise shows, and ``hue shift``: the mean change of hue (degrees) over the pixels
coloured in both input and output (``nasflow.tasks.ruas.metrics.hue_shift``; a channel clipped on
its own turns an orange lamp yellow). ``--per-image`` also prints each photo's dark noise per model. ``--sheets DIR`` also writes one contact sheet per folder (input | each model) to
``DIR/<folder>.png`` for looking at colour casts, halos and noise: the photos are research-licensed,
so the sheets are made locally and never committed. A released RUAS model joins the comparison
through ``--model`` once converted with ``nasflow import-ruas``. Skips cleanly when the folder is absent.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np

FOLDERS = ("real/LIME", "real/MEF")
DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
FIGURES = ("brightness", "entropy", "loe", "noise", "noise/gain", "dark noise", "hue shift")


def figures(out8: np.ndarray, in8: np.ndarray) -> dict[str, float]:
    """The no-reference figures of one enhanced image against its input."""
    from nasflow.tasks.ruas.metrics import (entropy, flat_dark_noise, hue_shift, lightness_order_error,
                                            mean_brightness, noise_sigma)

    gain = mean_brightness(out8) / max(mean_brightness(in8), 1e-6)
    noise_in = max(noise_sigma(in8), 1e-6)
    noise_out = noise_sigma(out8)
    return {
        "brightness": mean_brightness(out8),
        "entropy": entropy(out8),
        "loe": lightness_order_error(out8, in8),
        "noise": noise_out,
        "noise/gain": (noise_out / noise_in) / max(gain, 1e-6),
        "dark noise": flat_dark_noise(out8, in8),
        "hue shift": hue_shift(out8, in8),
    }


def photos(folder: Path) -> list[Path]:
    from nasflow.infer.imageio import IMAGE_SUFFIXES

    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the shared data folder")
    parser.add_argument("--model", action="append", default=None,
                        help="model name, file or run folder (repeatable; default: every shipped model)")
    parser.add_argument("--folder", action="append", default=None,
                        help=f"folder under --data (repeatable; default: {', '.join(FOLDERS)})")
    parser.add_argument("--sheets", type=Path, default=None,
                        help="write a contact sheet per folder (input | each model) into this folder")
    parser.add_argument("--per-image", action="store_true", help="also print each photo's dark noise per model")
    args = parser.parse_args(argv)
    folders = args.folder or list(FOLDERS)
    if not all((args.data / f).is_dir() for f in folders):
        print(f"skipped: {args.data} does not hold {', '.join(folders)}")
        return 0
    import torch

    from nasflow.infer.imageio import read_image
    from nasflow.infer.inference import load_model
    from nasflow.registries import MODELS
    from nasflow.tasks.ruas.metrics import average, contact_sheet

    models = args.model or [n for n in MODELS.names() if ":" not in n]
    enhancers = {str(m): load_model(m, device="cpu") for m in models}
    started = time.perf_counter()
    print(f"| {'model':<28} | {'folder':<10} | " + " | ".join(f"{f:>10}" for f in FIGURES) + " |")
    print("|" + "-" * 30 + "|" + "-" * 12 + "|" + "|".join("-" * 12 for _ in FIGURES) + "|")
    for folder in folders:
        files = photos(args.data / folder)
        inputs = [np.round(read_image(p).rgb * 255).astype(np.uint8) for p in files]
        columns = " | ".join(["input", *enhancers])
        rows: dict[str, list[np.ndarray]] = {f"{p.stem}: {columns}": [im] for p, im in zip(files, inputs)}
        per_image: dict[str, list[float]] = {}
        for name, enhancer in [("input", None), *enhancers.items()]:
            values: dict[str, list[float]] = {k: [] for k in FIGURES}
            for path, in8 in zip(files, inputs):
                if enhancer is None:
                    out8 = in8
                else:
                    out = enhancer.enhance_rgb(in8.astype(np.float32) / 255.0)
                    out8 = np.round(np.clip(out, 0, 1) * 255).astype(np.uint8)
                    rows[f"{path.stem}: {columns}"].append(out8)
                for k, v in figures(out8, in8).items():
                    values[k].append(v)
                    if k == "dark noise":
                        per_image.setdefault(path.stem, []).append(v)
            # a photo with no flat dark area or no coloured pixel has no figure (NaN): the mean is over the others
            means = " | ".join(f"{average(v for v in values[k] if not math.isnan(v)):>10.3f}" for k in FIGURES)
            print(f"| {name:<28} | {folder.split('/')[-1] + f' ({len(files)})':<10} | {means} |", flush=True)
        if args.per_image:
            print(f"dark noise per photo ({columns}):")
            for stem, values in per_image.items():
                print(f"  {stem:<24} " + " ".join(f"{v:7.2f}" for v in values))
        if args.sheets is not None:
            sheet = contact_sheet(list(rows.items()), args.sheets / f"{folder.replace('/', '-')}.png")
            print(f"contact sheet ({', '.join(['input', *enhancers])}): {sheet}", flush=True)
    print(f"\n{len(models)} model(s) in {time.perf_counter() - started:.1f} s; data: {args.data}; "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    return 0


if __name__ == "__main__":
    sys.exit(main())

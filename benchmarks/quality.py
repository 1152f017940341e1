"""Quality of the shipped RUAS models on the paired sets of ``../shared/data``, next to the references.

    python benchmarks/quality.py                       # shipped models, sets lol, mit, fivek_normal
    python benchmarks/quality.py --model my.pt --model runs/ruas-X --data ../shared/data

For every model and paired set: PSNR / SSIM with the data README's protocol (8-bit RGB, rounded;
scikit-image SSIM with channel_axis=2, data_range=255; means over images), computed through
``nasflow.load_model(...).enhance`` (the path users run, tiles included). The reference rows
(released RUAS, SCI, Zero-DCE weights) are read from the data folder's README, not typed here.
Skips cleanly (exit 0, one line) when the data folder is absent.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

SETS = ("lol", "mit", "fivek_normal")
DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def reference_rows(readme: Path) -> list[tuple[str, list[str]]]:
    """``(method, ['PSNR / SSIM' per set])`` from the README's reference table (the one naming the sets)."""
    rows: list[tuple[str, list[str]]] = []
    columns: list[str] | None = None
    for line in readme.read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")] if line.strip().startswith("|") else None
        if cells is None:
            columns = None if rows else columns
            continue
        if columns is None:
            if all(any(c.startswith(s) for c in cells) for s in SETS):
                columns = cells
            continue
        if set(cells[0]) <= {"-", ":", " "}:
            continue
        values = []
        for s in SETS:
            idx = next(i for i, c in enumerate(columns) if c.startswith(s))
            values.append(cells[idx] if idx < len(cells) else "")
        rows.append((cells[0], values))
    return rows


def score(enhancer, folder: Path) -> tuple[float, float, int]:  # noqa: ANN001
    from nasflow.infer.imageio import read_image
    from nasflow.tasks.ruas.metrics import psnr, ssim

    lows = sorted(p for p in (folder / "low").iterdir() if not p.name.startswith("."))
    p_sum = s_sum = 0.0
    for low in lows:
        high = next((folder / "high").glob(low.stem + ".*"))
        out = enhancer.enhance_rgb(read_image(low).rgb)
        out8 = np.round(np.clip(out, 0, 1) * 255).astype(np.uint8)
        ref8 = np.round(read_image(high).rgb * 255).astype(np.uint8)
        p_sum += psnr(out8, ref8)
        s_sum += ssim(out8, ref8)
    return p_sum / len(lows), s_sum / len(lows), len(lows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the shared data folder")
    parser.add_argument("--model", action="append", default=None,
                        help="model name, file or run folder (repeatable; default: every shipped model)")
    args = parser.parse_args(argv)
    if not all((args.data / s / "low").is_dir() for s in SETS):
        print(f"skipped: {args.data} does not hold the paired sets {', '.join(SETS)}")
        return 0
    import torch

    from nasflow.infer.inference import load_model
    from nasflow.registries import MODELS

    torch.set_num_threads(max(1, torch.get_num_threads()))
    models = args.model or [n for n in MODELS.names() if ":" not in n]
    header = f"| {'model':<34} | " + " | ".join(f"{s + ' PSNR/SSIM':<22}" for s in SETS) + " |"
    rule = "|" + "-" * 36 + "|" + "|".join("-" * 24 for _ in SETS) + "|"
    print(header)
    print(rule)
    started = time.perf_counter()
    for name in models:
        enhancer = load_model(name, device="cpu")
        cells = []
        for s in SETS:
            p, q, n = score(enhancer, args.data / s)
            cells.append(f"{p:.2f} / {q:.3f} (n={n})")
        print(f"| {'nasflow ' + str(name):<34} | " + " | ".join(f"{c:<22}" for c in cells) + " |")
    readme = args.data / "README.md"
    if readme.is_file():
        for method, values in reference_rows(readme):
            print(f"| {'ref: ' + method:<34} | " + " | ".join(f"{v:<22}" for v in values) + " |")
    print(f"\n{len(models)} model(s) in {time.perf_counter() - started:.1f} s; data: {args.data}; "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    return 0


if __name__ == "__main__":
    sys.exit(main())

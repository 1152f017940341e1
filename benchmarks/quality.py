"""Quality of RUAS models on paired sets, with the figures that separate exposure from the rest.

    python benchmarks/quality.py                      # shipped models + input + releases on lol, mit, fivek_normal
    python benchmarks/quality.py --model my.pt --model runs/ruas-X --data ../shared/data
    python benchmarks/quality.py --pairs unseen=photos/pairs --out quality.md   # extra LOW/ + HIGH/ pairs

One markdown table per paired set, one row per model: the input unchanged, every shipped model
(or those given by ``--model``), and, when ``../shared/releases`` exists (``--releases DIR``),
the RUAS authors' released checkpoints imported in this run with the same code as ``nasflow
import-ruas`` (``release cvpr/upe`` and so on). Columns, data README protocol (8-bit RGB,
rounded; scikit-image SSIM with channel_axis=2, data_range=255; means over images):

* PSNR and SSIM, each with a 95% percentile bootstrap interval over images (10,000 resamples,
  fixed seed): with 2-8 images per set, one image more or less moves a mean by decibels;
* GT-mean PSNR (the output scaled to the ground truth's mean, then scored; low-light papers'
  convention), which takes exposure out, with its interval;
* the brightness error, ``mean(output) - mean(GT)`` in 8-bit levels (signed, with its
  interval), and its mean absolute value.

With releases, a last table per set puts each nasflow model against the best release there (the
highest mean PSNR, and the highest mean GT-mean PSNR): the mean of the per-image differences with a
paired bootstrap interval (the same images resampled for both), which says more than two
overlapping intervals do, since both models' figures move together with the images drawn.

Models run through ``nasflow.load_model(...).enhance_rgb`` (the path users run, tiles
included). The reference rows (PSNR / SSIM of other released methods) are read from the data
folder's README, never typed here. Skips cleanly (exit 0, one line) without any paired set.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SETS = ("lol", "mit", "fivek_normal")
DEFAULT_DATA = ROOT.parent / "shared" / "data"
DEFAULT_RELEASES = ROOT.parent / "shared" / "releases"
#: the authors' files their test scripts run (cvpr/denoise.pt is an NRM alone, never run by them)
RELEASE_FILES = ("cvpr/lol.pt", "cvpr/upe.pt", "cvpr/dark.pt", "journal/lol.pt", "journal/mit.pt",
                 "journal/darkface.pt")
RESAMPLES = 10_000
SEED = 0
COLUMNS = ("model", "PSNR", "PSNR 95% CI", "SSIM", "SSIM 95% CI", "GT-mean PSNR", "GT-mean PSNR 95% CI",
           "brightness err", "brightness err 95% CI", "mean abs brightness err")


# --- data ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Pair:
    """One paired image: the low-light input as float32 HxWx3 in [0, 1], the ground truth in 8 bits."""

    name: str
    low: np.ndarray
    high: np.ndarray


def read_pairs(folder: Path) -> list[Pair]:
    """``folder/low/X.*`` with ``folder/high/X.*`` (same stem), sorted by name; a low without its high is an error."""
    from nasflow.infer.imageio import IMAGE_SUFFIXES, read_image

    lows = sorted(p for p in (folder / "low").iterdir() if p.suffix.lower() in IMAGE_SUFFIXES
                  and not p.name.startswith("."))
    if not lows:
        raise SystemExit(f"error: {folder / 'low'} holds no image")
    pairs = []
    for low in lows:
        highs = sorted(p for p in (folder / "high").glob(low.stem + ".*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if not highs:
            raise SystemExit(f"error: {low} has no ground truth {folder / 'high' / low.stem}.*")
        high = np.round(read_image(highs[0]).rgb.astype(np.float64) * 255.0).astype(np.uint8)
        pairs.append(Pair(low.stem, read_image(low).rgb, high))
    return pairs


# --- scores ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ImageScore:
    name: str
    psnr: float  # capped at PSNR_CAP_DB, like the means of nasflow.tasks.ruas.metrics
    ssim: float
    gt_mean_psnr: float  # capped likewise
    brightness_error: float  # mean(output) - mean(GT), 8-bit levels


@dataclass(frozen=True)
class Summary:
    """Means over a set's images, each with its bootstrap interval ``(low, high)``."""

    n: int
    psnr: float
    psnr_ci: tuple[float, float]
    ssim: float
    ssim_ci: tuple[float, float]
    gt_mean_psnr: float
    gt_mean_psnr_ci: tuple[float, float]
    brightness_error: float
    brightness_error_ci: tuple[float, float]
    abs_brightness_error: float


def score_pairs(enhance_rgb: Callable[[np.ndarray], np.ndarray], pairs: Sequence[Pair]) -> list[ImageScore]:
    """Score ``enhance_rgb`` (float HxWx3 -> float HxWx3, both in [0, 1]) on each pair."""
    from nasflow.tasks.ruas.metrics import PSNR_CAP_DB, brightness_error, gt_mean_psnr, psnr, ssim

    scores = []
    for pair in pairs:
        out = np.clip(enhance_rgb(pair.low), 0.0, 1.0)
        out8 = np.round(out.astype(np.float64) * 255.0).astype(np.uint8)
        scores.append(ImageScore(pair.name, min(psnr(out8, pair.high), PSNR_CAP_DB), ssim(out8, pair.high),
                                 min(gt_mean_psnr(out, pair.high), PSNR_CAP_DB),
                                 brightness_error(out8, pair.high)))
    return scores


def summarize(scores: Sequence[ImageScore], resamples: int = RESAMPLES, seed: int = SEED) -> Summary:
    """Means and percentile bootstrap intervals over the images (the same seed for every column)."""
    from nasflow.tasks.ruas.metrics import bootstrap_interval

    def mean_ci(values: list[float]) -> tuple[float, tuple[float, float]]:
        return float(np.mean(values)), bootstrap_interval(values, resamples=resamples, seed=seed)

    psnr, psnr_ci = mean_ci([s.psnr for s in scores])
    ssim, ssim_ci = mean_ci([s.ssim for s in scores])
    gt_mean, gt_mean_ci = mean_ci([s.gt_mean_psnr for s in scores])
    bright, bright_ci = mean_ci([s.brightness_error for s in scores])
    return Summary(len(scores), psnr, psnr_ci, ssim, ssim_ci, gt_mean, gt_mean_ci, bright, bright_ci,
                   float(np.mean([abs(s.brightness_error) for s in scores])))


def score(enhancer, folder: Path) -> tuple[float, float, int]:  # noqa: ANN001
    """Mean PSNR, mean SSIM and the image count of ``enhancer`` on a paired folder (the model cards' figures)."""
    scores = score_pairs(enhancer.enhance_rgb, read_pairs(folder))
    return float(np.mean([s.psnr for s in scores])), float(np.mean([s.ssim for s in scores])), len(scores)


@dataclass(frozen=True)
class PairedDifference:
    """``model - reference`` over the same images: the mean difference and its paired bootstrap interval."""

    reference: str
    reference_mean: float
    mean: float
    ci: tuple[float, float]


def paired_difference(model: Sequence[ImageScore], references: dict[str, Sequence[ImageScore]], field: str,
                      resamples: int = RESAMPLES, seed: int = SEED) -> PairedDifference:
    """``model`` against the reference with the highest mean ``field`` (``"psnr"`` or ``"gt_mean_psnr"``):
    per image ``model - reference``, resampled by image (percentile bootstrap of the mean difference)."""
    from nasflow.tasks.ruas.metrics import bootstrap_interval

    def mean(scores: Sequence[ImageScore]) -> float:
        return float(np.mean([getattr(x, field) for x in scores]))

    best = max(references, key=lambda label: mean(references[label]))
    if [x.name for x in model] != [x.name for x in references[best]]:
        raise ValueError("paired differences need the same images in the same order")
    diffs = [getattr(a, field) - getattr(b, field) for a, b in zip(model, references[best])]
    return PairedDifference(best, mean(references[best]), float(np.mean(diffs)),
                            bootstrap_interval(diffs, resamples=resamples, seed=seed))


# --- rows ------------------------------------------------------------------------------------------
def identity(rgb: np.ndarray) -> np.ndarray:
    """The input unchanged: the row every enhancer has to beat."""
    return rgb


def releases_folder(given: Path | None, leave_out: bool) -> Path | None:
    """The releases to score: none with ``--no-releases``, ``--releases DIR``, else ../shared/releases if present."""
    if leave_out:
        return None
    return given or (DEFAULT_RELEASES if DEFAULT_RELEASES.is_dir() else None)


def import_releases(folder: Path, into: Path) -> list[tuple[str, Path]]:
    """``(label, model file)`` for each of :data:`RELEASE_FILES` under ``folder``, imported into ``into``
    by ``import_released`` (what ``nasflow import-ruas`` runs; default module choice)."""
    from nasflow.tasks.ruas.official import import_released

    imported = []
    for rel in RELEASE_FILES:
        path = folder / rel
        if path.is_file():
            label = "release " + rel.removesuffix(".pt")
            imported.append((label, import_released(path, into / (label.replace(" ", "-").replace("/", "-") + ".pt"))))
    return imported


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


# --- tables ----------------------------------------------------------------------------------------
def _ci(ci: tuple[float, float], fmt: str) -> str:
    return f"[{ci[0]:{fmt}}, {ci[1]:{fmt}}]"


def table_row(label: str, s: Summary) -> list[str]:
    return [label, f"{s.psnr:.2f}", _ci(s.psnr_ci, ".2f"), f"{s.ssim:.3f}", _ci(s.ssim_ci, ".3f"),
            f"{s.gt_mean_psnr:.2f}", _ci(s.gt_mean_psnr_ci, ".2f"), f"{s.brightness_error:+.1f}",
            _ci(s.brightness_error_ci, "+.1f"), f"{s.abs_brightness_error:.1f}"]


def markdown_table(rows: Sequence[Sequence[str]], columns: Sequence[str] = COLUMNS) -> str:
    """A markdown table, its columns padded to their widest cell (readable as plain text too)."""
    widths = [max(len(columns[i]), *(len(r[i]) for r in rows)) for i in range(len(columns))]

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(f"{c:<{w}}" for c, w in zip(cells, widths)) + " |"

    return "\n".join([line(columns), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, rows)])


DIFFERENCE_COLUMNS = ("set", "model", "best release in PSNR", "PSNR difference [95% CI]",
                      "best release in GT-mean PSNR", "GT-mean PSNR difference [95% CI]")


def difference_section(per_image: dict[str, dict[str, list[ImageScore]]], resamples: int) -> str:
    """Each nasflow model against the best release of each set, in PSNR and in GT-mean PSNR (paired)."""
    lines = []
    for name, by_label in per_image.items():
        releases = {label: scores for label, scores in by_label.items() if label.startswith("release ")}
        for label, scores in by_label.items():
            if not label.startswith("nasflow "):
                continue
            cells = [name, label.removeprefix("nasflow ")]
            for field in ("psnr", "gt_mean_psnr"):
                d = paired_difference(scores, releases, field, resamples)
                cells += [f"{d.reference.removeprefix('release ')} ({d.reference_mean:.2f})",
                          f"{d.mean:+.2f} {_ci(d.ci, '+.2f')}"]
            lines.append(cells)
    return ("## Against the best release per set (paired: per-image differences, model minus release)\n\n"
            + markdown_table(lines, DIFFERENCE_COLUMNS))


def _reference_cells(method: str, value: str) -> list[str]:
    """A README reference cell 'PSNR / SSIM' as a row with only those two columns."""
    psnr, _, ssim = (v.strip() for v in value.partition("/"))
    return ["ref: " + method, psnr, "", ssim] + [""] * (len(COLUMNS) - 4)


def _shown(folder: Path) -> str:
    """A folder as the reader would type it from here (``../shared/data/lol``), not a machine's absolute path."""
    return os.path.relpath(folder)


def environment() -> str:
    import torch

    try:
        commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, timeout=10).stdout.strip() or "unknown"
    except OSError:
        commit = "unknown"
    return (f"torch {torch.__version__}, {torch.get_num_threads()} threads, numpy {np.__version__}, "
            f"Python {platform.python_version()}, {platform.system()} {platform.machine()}, "
            f"code at commit {commit}, {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC")


def publish(body: str, title: str, command: str, out: Path | None) -> None:
    """Print ``body``; with ``out``, also write it there under ``title``, the command and the environment."""
    print(body, end="")
    if out is not None:
        header = f"# {title}\n\nCommand: `{command}`\n\nEnvironment: {environment()}\n\n"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(header + body, encoding="utf-8")
        print(f"wrote {out}")


# --- command line ----------------------------------------------------------------------------------
def _named_folder(text: str) -> tuple[str, Path]:
    name, sep, folder = text.partition("=")
    if not sep or not name or not folder:
        raise argparse.ArgumentTypeError(f"expected NAME=DIR, got {text!r}")
    path = Path(folder)
    if not ((path / "low").is_dir() and (path / "high").is_dir()):
        raise argparse.ArgumentTypeError(f"{path} needs the folders low/ and high/ (pairs share a file stem)")
    return name, path


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the shared data folder (sets lol, mit, "
                        "fivek_normal; those present are scored)")
    parser.add_argument("--model", action="append", default=None,
                        help="model name, file or run folder (repeatable; default: every shipped model)")
    parser.add_argument("--releases", type=Path, default=None,
                        help=f"folder of the RUAS authors' checkpoints (default: {DEFAULT_RELEASES} when it exists)")
    parser.add_argument("--no-releases", action="store_true", help="leave the released checkpoints out")
    parser.add_argument("--pairs", action="append", default=[], type=_named_folder, metavar="NAME=DIR",
                        help="also score DIR/low/* against DIR/high/* (same stems), as set NAME (repeatable)")
    parser.add_argument("--resamples", type=int, default=RESAMPLES, help="bootstrap resamples (default 10,000)")
    parser.add_argument("--out", type=Path, default=None, help="also write the tables, command and environment here")
    args = parser.parse_args(argv)
    if args.releases is not None and not args.releases.is_dir():
        parser.error(f"--releases {args.releases}: no such folder")
    names = [n for n, _ in args.pairs]
    if len(set(names)) != len(names) or set(names) & set(SETS):
        parser.error(f"--pairs names must be distinct and differ from {', '.join(SETS)}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    command = "python benchmarks/quality.py " + shlex.join(sys.argv[1:] if argv is None else list(argv))
    sets = [(s, args.data / s) for s in SETS if (args.data / s / "low").is_dir()] + list(args.pairs)
    if not sets:
        print(f"skipped: {args.data} holds none of the paired sets {', '.join(SETS)} and no --pairs was given")
        return 0
    from nasflow.infer.inference import load_model
    from nasflow.registries import MODELS

    started = time.perf_counter()
    data = {name: read_pairs(folder) for name, folder in sets}
    releases = releases_folder(args.releases, args.no_releases)
    rows: dict[str, list[list[str]]] = {name: [] for name, _ in sets}
    per_image: dict[str, dict[str, list[ImageScore]]] = {name: {} for name, _ in sets}
    with tempfile.TemporaryDirectory(prefix="nasflow-quality-") as tmp:
        models: list[tuple[str, str | Path | None]] = [("input unchanged", None)]  # None: the identity
        models += [(f"nasflow {n}", n) for n in args.model or [n for n in MODELS.names() if ":" not in n]]
        models += import_releases(releases, Path(tmp)) if releases else []
        seconds = []  # per row: load, enhance and score every set (a guide to the run's cost, not a speed figure)
        for label, source in models:
            row_started = time.perf_counter()
            enhance_rgb = identity if source is None else load_model(source, device="cpu").enhance_rgb
            for name, pairs in data.items():
                per_image[name][label] = score_pairs(enhance_rgb, pairs)
                rows[name].append(table_row(label, summarize(per_image[name][label], args.resamples)))
            seconds.append(f"{label} {time.perf_counter() - row_started:.1f}")
    references = reference_rows(args.data / "README.md") if (args.data / "README.md").is_file() else []
    elapsed = time.perf_counter() - started

    parts = []
    for name, folder in sets:
        extra = [_reference_cells(m, v[SETS.index(name)]) for m, v in references if v[SETS.index(name)]] \
            if name in SETS else []
        parts.append(f"## {name} ({len(data[name])} pairs, {_shown(folder)})\n\n{markdown_table(rows[name] + extra)}")
    if any(label.startswith("release ") for label in per_image[sets[0][0]]):
        parts.append(difference_section(per_image, args.resamples))
    notes = (f"Means over images; 95% intervals: percentile bootstrap over images ({args.resamples:,} resamples, "
             f"seed {SEED}). GT-mean PSNR: the output scaled by mean(GT)/mean(output), clipped, rounded, scored. "
             "Brightness err: mean(output) - mean(GT) in 8-bit levels. 'ref:' rows are read from the data "
             f"README (PSNR / SSIM only). Releases: {_shown(releases) if releases else 'none'}.\n\n"
             f"{len(models)} rows x {len(sets)} sets in {elapsed:.1f} s (seconds per row: {', '.join(seconds)}).")
    publish("\n\n".join(parts) + "\n\n" + notes + "\n", "Quality on paired sets", command, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

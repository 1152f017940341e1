"""How much of a shipped model's figure is its recipe, and how much its training seed?

    python benchmarks/seed_spread.py --train                       # train what is missing, then score
    python benchmarks/seed_spread.py --models ruas-mit --seeds 0 1 2 --out benchmarks/results/shipped-seeds.md

The dev sets hold 2, 3 and 8 pairs, and the released checkpoints sit within a decibel of the
shipped models on some of them: before reading a difference as the recipe's, see how far the same
recipe moves with nothing but its seed. For every shipped model (``tasks/ruas/models/<name>.yaml``)
and seed, seed 0 is the shipped file itself (the cards' command uses seed 0) and seed ``S > 0`` is the
run ``<work>/seed-<name>-s<S>``, made by the card's command with ``--set seed=S`` (``--train`` runs
the missing ones, one after another; the genotype is ``<name>.genotype.json`` beside the config when
there is one, the paper's otherwise). Every run is scored with ``benchmarks/quality.py``'s protocol
on the dev sets present under ``--data``; the imported released checkpoints are scored in the same
run, so the tables say on how many seeds a shipped model is ahead of them.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import quality  # noqa: E402 - the protocol and the release import, shared with the quality tables

CONFIGS = HERE.parent / "tasks" / "ruas" / "models"
DEFAULT_WORK = HERE.parent / "runs"


@dataclass(frozen=True)
class Run:
    """One model at one seed: where its weights are and, for a trained run, how long training took."""

    model: str
    seed: int
    source: str  # a shipped model's name or a run folder, as load_model takes it
    train_seconds: float | None


def shipped_models() -> list[str]:
    return sorted(p.stem for p in CONFIGS.glob("*.yaml") if (CONFIGS / f"{p.stem}.pt").is_file())


def run_folder(work: Path, model: str, seed: int) -> Path:
    return work / f"seed-{model}-s{seed}"


def train_command(model: str, seed: int, data: Path, out: Path) -> list[str]:
    """The card's training command at ``seed`` (``nasflow train <config> --genotype ...``)."""
    genotype = CONFIGS / f"{model}.genotype.json"
    return ["nasflow", "train", str(CONFIGS / f"{model}.yaml"), "--genotype",
            str(genotype) if genotype.is_file() else "paper", "--set", f"task_options.root={data}",
            "--set", f"seed={seed}", "--out", str(out)]


def find_run(model: str, seed: int, work: Path) -> Run | None:
    """The shipped file for seed 0, the finished run folder otherwise (None when it is not there)."""
    if seed == 0:
        return Run(model, 0, model, None)
    folder = run_folder(work, model, seed)
    if not (folder / "model.pt").is_file():
        return None
    metrics = folder / "metrics.json"
    seconds = json.loads(metrics.read_text(encoding="utf-8")).get("seconds") if metrics.is_file() else None
    return Run(model, seed, str(folder), seconds)


def spread(values: Sequence[float], fmt: str = ".2f") -> str:
    """``mean ± sd [min, max]`` (sample standard deviation; just the value for one seed)."""
    if len(values) == 1:
        return f"{values[0]:{fmt}}"
    return (f"{statistics.fmean(values):{fmt}} ± {statistics.stdev(values):{fmt.lstrip('+')}} "
            f"[{min(values):{fmt}}, {max(values):{fmt}}]")


def summaries(enhance_rgb, data: dict[str, list[quality.Pair]]) -> dict[str, quality.Summary]:  # noqa: ANN001
    """Per set, the means of ``quality.py``'s columns (its intervals are not used here: few resamples)."""
    return {s: quality.summarize(quality.score_pairs(enhance_rgb, pairs), resamples=200) for s, pairs in data.items()}


def ahead_rows(models: Sequence[str], seeds: Sequence[int], sets: Sequence[str],
               scores: dict[tuple[str, int], dict[str, quality.Summary]],
               released: dict[str, dict[str, quality.Summary]]) -> list[list[str]]:
    """Per model and set: the release with the best PSNR there and on how many seeds the model beats it,
    then the same for GT-mean PSNR."""
    rows = []
    for model in models:
        for s in sets:
            row = [model, s]
            for field in ("psnr", "gt_mean_psnr"):
                label = max(released, key=lambda name: getattr(released[name][s], field))
                best = getattr(released[label][s], field)
                wins = sum(getattr(scores[model, seed][s], field) > best for seed in seeds)
                row += [f"{label.removeprefix('release ')} ({best:.2f})", f"{wins} of {len(seeds)}"]
            rows.append(row)
    return rows


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=None, help="shipped model names (default: all of them)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="seeds (default: 0 1 2; 0 is the "
                        "shipped file)")
    parser.add_argument("--work", type=Path, default=DEFAULT_WORK, help="where the seed runs are (default: runs/)")
    parser.add_argument("--train", action="store_true", help="train the missing seed runs first (the card's "
                        "command; minutes each on a CPU)")
    parser.add_argument("--data", type=Path, default=quality.DEFAULT_DATA, help="the shared data folder")
    parser.add_argument("--releases", type=Path, default=None,
                        help=f"the RUAS authors' checkpoints (default: {quality.DEFAULT_RELEASES} when it exists)")
    parser.add_argument("--no-releases", action="store_true", help="leave the released checkpoints out")
    parser.add_argument("--out", type=Path, default=None, help="also write the report here")
    args = parser.parse_args(argv)
    known = shipped_models()
    args.models = args.models or known
    unknown = [m for m in args.models if m not in known]
    if unknown:
        parser.error(f"not a shipped model: {', '.join(unknown)} (shipped: {', '.join(known)})")
    if any(s < 0 for s in args.seeds) or len(set(args.seeds)) != len(args.seeds):
        parser.error("--seeds must be distinct and non-negative")
    if args.releases is not None and not args.releases.is_dir():
        parser.error(f"--releases {args.releases}: no such folder")
    return args


def collect_runs(args: argparse.Namespace) -> list[Run]:
    """Every (model, seed) run, training the missing ones with ``--train``; a missing run without it is an error."""
    runs = []
    for model in args.models:
        for seed in args.seeds:
            run = find_run(model, seed, args.work)
            command = train_command(model, seed, args.data, run_folder(args.work, model, seed))
            if run is None and args.train:
                print(f"training {model} seed {seed}: {shlex.join(command)}", flush=True)
                if subprocess.run(command).returncode != 0:
                    raise SystemExit(f"error: training {model} at seed {seed} failed (command above)")
                run = find_run(model, seed, args.work)
            if run is None:
                raise SystemExit(f"error: no run of {model} at seed {seed} in {args.work}; make it with "
                                 f"--train or `{shlex.join(command)}`")
            runs.append(run)
    return runs


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    command = "python benchmarks/seed_spread.py " + shlex.join(sys.argv[1:] if argv is None else list(argv))
    sets = [s for s in quality.SETS if (args.data / s / "low").is_dir()]
    if not sets:
        print(f"skipped: {args.data} holds none of the paired sets {', '.join(quality.SETS)}")
        return 0
    runs = collect_runs(args)
    from nasflow.infer.inference import load_model

    started = time.perf_counter()
    data = {s: quality.read_pairs(args.data / s) for s in sets}
    scores: dict[tuple[str, int], dict[str, quality.Summary]] = {}
    for run in runs:
        scores[run.model, run.seed] = summaries(load_model(run.source, device="cpu").enhance_rgb, data)
    releases = quality.releases_folder(args.releases, args.no_releases)
    released: dict[str, dict[str, quality.Summary]] = {}
    if releases is not None:
        with tempfile.TemporaryDirectory(prefix="nasflow-seeds-") as tmp:
            for label, path in quality.import_releases(releases, Path(tmp)):
                released[label] = summaries(load_model(path, device="cpu").enhance_rgb, data)

    per_seed = [[run.model, str(run.seed), "shipped file" if run.seed == 0 else Path(run.source).name,
                 *(f"{scores[run.model, run.seed][s].psnr:.2f} / {scores[run.model, run.seed][s].gt_mean_psnr:.2f}"
                   for s in sets),
                 "" if run.train_seconds is None else f"{run.train_seconds / 60:.1f}"] for run in runs]
    over_seeds = []
    for model in args.models:
        for s in sets:
            seeds = [scores[model, seed][s] for seed in args.seeds]
            over_seeds.append([model, s, spread([x.psnr for x in seeds]),
                               spread([x.gt_mean_psnr for x in seeds]),
                               spread([x.ssim for x in seeds], ".3f"),
                               spread([x.brightness_error for x in seeds], "+.1f")])
    unchanged = summaries(quality.identity, data)
    release_rows = [[label.removeprefix("release "), *(f"{r[s].psnr:.2f} / {r[s].gt_mean_psnr:.2f}" for s in sets)]
                    for label, r in [("input unchanged", unchanged), *released.items()]]

    table = quality.markdown_table
    parts = [
        "## Per seed (PSNR / GT-mean PSNR, dB)\n\n"
        + table(per_seed, ["model", "seed", "weights", *sets, "training (min)"]),
        "## Over seeds (mean ± sample sd [min, max])\n\n"
        + table(over_seeds, ["model", "set", "PSNR", "GT-mean PSNR", "SSIM", "brightness err (8-bit)"]),
        "## The input and the released checkpoints, imported in this run (PSNR / GT-mean PSNR, dB)\n\n"
        + table(release_rows, ["baseline", *sets]),
    ]
    if released:
        parts.append("## Seeds on which the shipped model is ahead of the best release on the set\n\n"
                     + table(ahead_rows(args.models, args.seeds, sets, scores, released), ["model", "set", "best release, PSNR", "seeds ahead in PSNR",
                                     "best release, GT-mean PSNR", "seeds ahead in GT-mean PSNR"]))
    notes = (f"Data README protocol (8-bit RGB, rounded; scikit-image SSIM), means over each set's images, "
             f"{', '.join(f'{s} {len(data[s])} pairs' for s in sets)}. Seed 0 is the shipped file; the "
             f"training time is the run's own (`metrics.json`). Releases: "
             f"{quality._shown(releases) if releases else 'none'}. Scored in {time.perf_counter() - started:.0f} s.")
    quality.publish("\n\n".join(parts) + "\n\n" + notes + "\n", "The shipped RUAS models over seeds", command,
                    args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

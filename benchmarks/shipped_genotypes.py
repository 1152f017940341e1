"""Which genotype should each shipped model use? The paper's against the ablation's searched ones,
each trained with the shipped model's own recipe.

    python benchmarks/ablation.py                       # first: the searches (runs/ablation-default)
    python benchmarks/shipped_genotypes.py              # then: every shipped config x candidate x seed

For every shipped model config (``tasks/ruas/models/<name>.yaml``), every candidate genotype and
every seed, ``nasflow train <config> --genotype <candidate> --set seed=<seed>`` is run and scored on
the paired dev sets (``benchmarks/quality.py``'s protocol). Candidates: ``paper``, and for each
searched arm of the ablation the genotype its search found at that same seed (IEM-only models
take its IEM cell). A candidate is worth shipping only where its mean beats the paper's by more
than the two seed spreads together (``ablation_report``'s rule). Resumable: finished runs are
kept in ``--work`` (default ``runs/shipped-genotypes``); prints a Markdown table and writes it to
``table.md`` there.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

MODELS = ("ruas-lol", "ruas-mit", "ruas-auto")
CONFIGS = HERE.parent / "tasks" / "ruas" / "models"
DEFAULT_DATA = HERE.parent.parent / "shared" / "data"


def candidate(ablation: Path, arm: str, seed: int, use_nrm: bool):  # noqa: ANN201 - a Genotype
    from nasflow.core.genotype import Genotype
    from nasflow.tasks.ruas.model import paper_genotype

    if arm == "paper":
        return paper_genotype(use_nrm)
    found = Genotype.load(ablation / arm / f"seed{seed}" / "search" / "genotype.json")
    cells = {label: found.edges(label) for label in (("iem", "nrm") if use_nrm else ("iem",))}
    return Genotype.from_cells(found.space, cells, {"source": f"benchmarks/ablation.py arm {arm}, seed {seed}"})


def train_and_score(model: str, arm: str, seed: int, args: argparse.Namespace) -> dict:
    from nasflow.config import apply_overrides, from_dict, read_yaml
    from nasflow.infer.inference import load_model
    from nasflow.run.runner import run
    from nasflow.schema import RunConfig
    from quality import SETS, score

    folder = args.work / model / arm / f"seed{seed}"
    result = folder / "score.json"
    if result.is_file():
        return json.loads(result.read_text())
    if folder.exists():
        shutil.rmtree(folder)  # an unfinished training (training keeps no checkpoint)
    data = apply_overrides(read_yaml(CONFIGS / f"{model}.yaml"),
                           [f"seed={seed}", f"task_options.root={args.data}", "tensorboard=false", "device=cpu"])
    cfg = from_dict(RunConfig, data)
    use_nrm = bool(cfg.task_options.get("use_nrm", True))
    run(cfg, out=folder / "run", quiet=True, genotype=candidate(args.ablation, arm, seed, use_nrm))
    enhancer = load_model(folder / "run", device="cpu")
    figures = {"model": model, "arm": arm, "seed": seed,
               "params": sum(p.numel() for p in enhancer.loaded.network.parameters())}
    for s in SETS:
        psnr, ssim, _ = score(enhancer, args.data / s)
        figures[f"{s}/psnr"], figures[f"{s}/ssim"] = psnr, ssim
    result.write_text(json.dumps(figures, indent=1) + "\n")
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--ablation", type=Path, default=Path("runs/ablation-default"),
                        help="the ablation's work folder (its searched genotypes)")
    parser.add_argument("--arms", default="cooperative,separate,joint", help="searched arms to try")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--work", type=Path, default=Path("runs/shipped-genotypes"))
    args = parser.parse_args(argv)
    args.data = args.data.resolve()
    from quality import SETS

    if not all((args.data / s / "low").is_dir() for s in SETS):
        print(f"skipped: {args.data} does not hold the paired sets {', '.join(SETS)}")
        return 0
    import logging

    logging.getLogger("nasflow").setLevel(logging.WARNING)
    from ablation_report import verdict

    seeds = [int(s) for s in args.seeds.split(",")]
    arms = ["paper", *args.arms.split(",")]
    lines = ["| model | genotype | params | " + " | ".join(f"{s} PSNR / SSIM" for s in SETS)
             + " | dev mean PSNR | vs paper (dev mean) |", "|---|---|---|" + "---|" * (len(SETS) + 2)]
    for model in args.models.split(","):
        rows = {arm: [train_and_score(model, arm, seed, args) for seed in seeds] for arm in arms}
        dev = {arm: [float(np.mean([r[f"{s}/psnr"] for s in SETS])) for r in rs] for arm, rs in rows.items()}
        for arm, rs in rows.items():
            cells = [f"{np.mean([r[f'{s}/psnr'] for r in rs]):.2f} ± {np.std([r[f'{s}/psnr'] for r in rs], ddof=1):.2f}"
                     f" / {np.mean([r[f'{s}/ssim'] for r in rs]):.3f}" for s in SETS]
            params = sorted({r["params"] for r in rs})
            diff, word = verdict(dev[arm], dev["paper"]) if arm != "paper" else (0.0, "-")
            lines.append(f"| {model} | {arm} | {params[0]}{'-' + str(params[-1]) if len(params) > 1 else ''} | "
                         + " | ".join(cells) + f" | {np.mean(dev[arm]):.2f} ± {np.std(dev[arm], ddof=1):.2f} | "
                         + (f"{diff:+.2f}, {word}" if arm != "paper" else "-") + " |")
    table = "\n".join(lines) + "\n"
    args.work.mkdir(parents=True, exist_ok=True)
    (args.work / "table.md").write_text(
        f"Command: `python benchmarks/shipped_genotypes.py {' '.join(argv if argv is not None else sys.argv[1:])}`; "
        f"seeds {seeds}; mean ± std over seeds.\n\n" + table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())

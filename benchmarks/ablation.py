"""Does the search matter? The RUAS paper's ablations as one resumable benchmark.

    python benchmarks/ablation.py                          # --budget default: <= 60 min on 2 CPU cores
    python benchmarks/ablation.py --budget smoke           # seconds: every arm, tiny settings
    python benchmarks/ablation.py --budget full --device cuda   # the paper's search settings, for a GPU
    python benchmarks/ablation.py --arms paper,random      # a subset (results of the others are kept)

Arms, each trained with the same budget, data and seeds (``--seeds``):

* ``cooperative``: RUAS's min-min search (``cooperative`` strategy, first-order hypergradient);
  ``cooperative-2nd``: the same with the second-order (finite-difference) hypergradient;
* ``separate``: the IEM searched alone on its own loss, then the NRM alone on the frozen IEM
  (``separate`` strategy; each module gets the cooperative arm's epochs);
* ``joint``: naive joint search, one loss and one architecture optimizer over both modules'
  alphas (``darts`` strategy over the RUAS supernet);
* ``random-K``: genotypes sampled uniformly from the same space (``--random`` of them);
* ``paper``: the RUAS paper's genotype; ``conv3x3``: every edge a 3x3 convolution (hand-made);
* model ablations on the paper genotype: ``paper-no-warm-start`` (``x_0 = y`` instead of the
  2x2 max filter) and ``paper-iem-only`` (RUAS_i: no NRM).

Search and training read only the reference-free folders (``sice_dark``, ``sice_mid``,
``lol/eval15_low``; ``benchmarks/ablation.yaml``); every run's ``splits.json`` is checked
against the bytes of every evaluation image. The loss and exposure recipe is the shipped default
model's (``tasks/ruas/models/ruas-auto.yaml``: global exposure step, capped exposure target), with the
NRM on. Evaluation: the paired dev sets ``lol``, ``mit``, ``fivek_normal`` (``benchmarks/quality.py``'s
scoring: PSNR on rounded 8-bit RGB, scikit-image SSIM, GT-mean PSNR; the per-image figures kept, for
bootstrap intervals over images) and no-reference figures on ``real/LIME`` and ``real/MEF``.
Work goes to ``--work`` (default ``runs/ablation-<budget>``), one folder per arm, seed and stage;
a killed benchmark continues where it stopped (a finished stage is never redone, an interrupted
search resumes from its checkpoint; a work folder holding runs of another base configuration is
refused: ``recipe.json``). Outputs in the work folder: ``table.md`` (printed too), ``results.csv``,
``results.json``, ``psnr_vs_params.svg``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import random
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # the sibling benchmark modules (quality, ablation_report)

BASE_CONFIG = HERE / "ablation.yaml"
DEFAULT_DATA = HERE.parent.parent / "shared" / "data"
PAIRED_SETS = ("lol", "mit", "fivek_normal")
REAL_SETS = ("real/LIME", "real/MEF")
TRAIN_FOLDERS = ("sice_dark", "sice_mid", "lol/eval15_low")


# -- budgets --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Budget:
    """How much work each arm gets; every arm gets the same."""

    search_epochs: int
    search_images: int | None  # None: every training image
    train_epochs: int
    train_images: int | None
    crop: int
    batch_size: int
    seeds: tuple[int, ...]
    random_genotypes: int
    speed_repeats: int
    search_crop: int | None = None  # None: ``crop``
    arch_lr: float = 3e-4  # Adam lr of the alphas (the paper's 3e-4 assumes thousands of steps)
    nrm_every: int = 10  # NRM arch step period of the cooperative and separate arms (paper: 10)
    train_lr: float = 0.01
    hypergradient: str = "first_order"  # of the cooperative, separate and joint arms


BUDGETS: dict[str, Budget] = {
    "smoke": Budget(search_epochs=1, search_images=8, train_epochs=1, train_images=8, crop=32, batch_size=2,
                    seeds=(0,), random_genotypes=2, speed_repeats=1),
    # 240 search steps on 2 cores: a 10x arch lr and an NRM arch step every step let the alphas
    # move as far as the paper's thousands of steps at 3e-4 do (with 3e-4 they stay near their init)
    "default": Budget(search_epochs=10, search_images=192, train_epochs=8, train_images=192, crop=96, batch_size=4,
                      seeds=(0, 1, 2), random_genotypes=5, speed_repeats=5, search_crop=64, arch_lr=3e-3,
                      nrm_every=1),
    # the paper's search settings (20 epochs, batch 1, 320 px crops, second order), all images
    "full": Budget(search_epochs=20, search_images=None, train_epochs=50, train_images=None, crop=320, batch_size=1,
                   seeds=(0, 1, 2), random_genotypes=10, speed_repeats=10, hypergradient="finite_difference"),
}


# -- arms -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Arm:
    """One row of the table: how its genotype is found and what model it trains."""

    name: str
    what: str
    strategy: str | None = None  # None: no search (a fixed genotype)
    hypergradient: str | None = None  # None: the budget's
    genotype: str | None = None  # "paper", "conv3x3" or "random:K" for fixed arms
    model: dict[str, Any] = field(default_factory=dict)  # task_options of the model itself
    family: str = ""  # rows summarised together (the random cloud)
    search: dict[str, Any] = field(default_factory=dict)  # search.<key> overrides (benchmarks/pareto.py: search.cost)
    config: Path = BASE_CONFIG  # the base configuration the budget and the arm's settings go on

    @property
    def searches(self) -> bool:
        return self.strategy is not None


def arms_for(budget: Budget) -> list[Arm]:
    arms = [
        Arm("cooperative", "cooperative search (RUAS min-min), 1st order", "cooperative", "first_order"),
        Arm("cooperative-2nd", "cooperative search, 2nd order (finite difference)", "cooperative",
            "finite_difference"),
        Arm("separate", "separate search: IEM alone, then NRM on the frozen IEM", "separate"),
        Arm("joint", "naive joint search: one loss, one arch optimizer", "darts"),
        *[Arm(f"random-{k}", f"random genotype {k} (uniform over the space)", genotype=f"random:{k}", family="random")
          for k in range(1, budget.random_genotypes + 1)],
        Arm("paper", "the RUAS paper's genotype", genotype="paper"),
        Arm("conv3x3", "hand-made: every edge conv_3x3", genotype="conv3x3"),
        Arm("paper-no-warm-start", "paper genotype, no warm start (x_0 = y)", genotype="paper",
            model={"warm_start": False}),
        Arm("paper-iem-only", "paper genotype, RUAS_i (IEM only, no NRM)", genotype="paper",
            model={"use_nrm": False}),
    ]
    return arms


def fixed_genotype(spec: str, use_nrm: bool) -> Any:
    """The genotype of a fixed arm: ``paper``, ``conv3x3`` (= ``all:conv_3x3``), ``all:OP`` (every edge
    OP) or ``random:K`` (K-th uniform sample)."""
    from nasflow.core.genotype import GenoEdge, Genotype
    from nasflow.registries import DERIVE_RULES
    from nasflow.spaces.distill_cell import DistillCellSpace
    from nasflow.tasks.ruas.model import paper_genotype

    if spec == "paper":
        return paper_genotype(use_nrm)
    space = DistillCellSpace()
    graph = space.graph()
    labels = ("iem", "nrm") if use_nrm else ("iem",)
    kind, _, k = ("all:conv_3x3" if spec == "conv3x3" else spec).partition(":")
    if kind == "all" and k in graph.candidates:
        cells = {label: tuple(GenoEdge(k, e.src, e.dst) for e in graph.edges) for label in labels}
        return Genotype.from_cells(space.name, cells, {"source": f"hand-made: every edge {k}"})
    if kind != "random" or not k.isdigit():
        raise ValueError(f"unknown fixed genotype {spec!r}")
    rule = DERIVE_RULES.get(space.default_rule)()
    rng = random.Random(9173 * int(k))  # the K-th genotype is the same whatever the budget or seed
    cells = {label: rule.sample(graph, rng) for label in labels}
    return Genotype.from_cells(space.name, cells, {"source": f"uniform random sample {k}"})


# -- configs --------------------------------------------------------------------------------------
def stage_config(arm: Arm, budget: Budget, stage: str, seed: int, data: Path, device: str) -> Any:
    """The RunConfig of one stage (``search`` or ``train``) of one arm and seed."""
    from nasflow.config import apply_overrides, from_dict, read_yaml
    from nasflow.schema import RunConfig

    images = budget.search_images if stage == "search" else budget.train_images
    crop = budget.search_crop or budget.crop if stage == "search" else budget.crop
    sets = [f"seed={seed}", f"device={device}", f"task_options.root={data}", f"task_options.crop={crop}",
            f"task_options.batch_size={budget.batch_size}", f"task_options.max_train_images={images or 'null'}",
            f"train.epochs={budget.train_epochs}", f"train.lr={budget.train_lr}"]
    sets += [f"task_options.{k}={json.dumps(v)}" for k, v in arm.model.items()]
    if arm.searches:
        groups = 2 if arm.strategy == "separate" else 1  # separate: each module gets the same epochs alone
        sets += [f"search.strategy={arm.strategy}", f"search.epochs={budget.search_epochs * groups}",
                 f"search.hypergradient={arm.hypergradient or budget.hypergradient}",
                 f"search.arch_optimizer.lr={budget.arch_lr}", f"task_options.nrm_every={budget.nrm_every}"]
        sets += [f"search.{k}={json.dumps(v)}" for k, v in arm.search.items()]
    return from_dict(RunConfig, apply_overrides(read_yaml(arm.config), sets))


# -- evaluation -----------------------------------------------------------------------------------
def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def evaluation_files(data: Path) -> list[Path]:
    from nasflow.tasks.ruas.data import list_images

    files = []
    for s in PAIRED_SETS:
        files += list_images(data / s / "low") + list_images(data / s / "high")
    for s in REAL_SETS:
        files += list_images(data / s)
    return files


def check_split(train: list[str], held_out: set[str], where: str) -> None:
    """Raises if a training file is byte-identical to an evaluation image or lies outside the
    reference-free training folders."""
    leaked = [f for f in train if _digest(Path(f)) in held_out]
    if leaked:
        raise RuntimeError(f"{where}: training file {leaked[0]} is an evaluation image")
    outside = [f for f in train if not any(Path(f).parent.as_posix().endswith(t) for t in TRAIN_FOLDERS)]
    if outside:
        raise RuntimeError(f"{where}: training file {outside[0]} is not in {', '.join(TRAIN_FOLDERS)}")


def planned_split(cfg: Any, held_out: set[str], where: str) -> list[str]:
    """The training files a stage will read, checked before it runs."""
    import torch

    from nasflow.task import build_task

    train = build_task(cfg, torch.device("cpu"), trusted=True).split_lists()["train"]
    check_split(train, held_out, where)
    return train


def check_splits(split_files: list[Path], held_out: set[str]) -> int:
    """The runs' own splits.json checked again (the proof kept with the results); training images."""
    trained: set[str] = set()
    for path in split_files:
        train = json.loads(path.read_text(encoding="utf-8"))["train"]
        check_split(train, held_out, str(path))
        trained.update(train)
    return len(trained)


def noise_sigma(rgb8: np.ndarray) -> float:
    """Gaussian noise estimate of an 8-bit image in 8-bit levels, on its BT.601 gray image
    (Immerkaer, "Fast noise variance estimation", CVIU 1996, eq. 4):
    ``sigma = sqrt(pi / 2) / (6 (W - 2) (H - 2)) * sum |I * N|`` with the Laplacian-difference mask
    ``N = [[1, -2, 1], [-2, 4, -2], [1, -2, 1]]``, which cancels image structure up to second
    order. Blown-up noise in dark regions shows here; texture adds a little too."""
    from nasflow.tasks.ruas.metrics import gray_uint8

    g = gray_uint8(rgb8).astype(np.float64)
    h, w = g.shape
    if h < 3 or w < 3:
        return 0.0
    conv = (g[:-2, :-2] - 2 * g[:-2, 1:-1] + g[:-2, 2:] - 2 * g[1:-1, :-2] + 4 * g[1:-1, 1:-1] - 2 * g[1:-1, 2:]
            + g[2:, :-2] - 2 * g[2:, 1:-1] + g[2:, 2:])
    return float(np.sqrt(np.pi / 2) * np.abs(conv).sum() / (6.0 * (w - 2) * (h - 2)))


def evaluate_model(run_dir: Path, data: Path, repeats: int) -> dict[str, Any]:
    """Dev-pair, no-reference, size and speed figures of one trained run, through the fast path.

    Dev pairs: mean PSNR, SSIM and GT-mean PSNR per set (``benchmarks/quality.py``'s scoring) and the
    per-image PSNR and GT-mean PSNR lists, which the report resamples for its intervals over images."""
    import torch

    from nasflow.core.flops import count_flops
    from nasflow.infer.imageio import read_image
    from nasflow.infer.inference import load_model
    from nasflow.tasks.ruas.data import list_images
    from nasflow.tasks.ruas.metrics import entropy, lightness_order_error, mean_brightness
    from quality import read_pairs, score_pairs

    enhancer = load_model(run_dir, device="cpu")
    out: dict[str, Any] = {}
    for s in PAIRED_SETS:
        scores = score_pairs(enhancer.enhance_rgb, read_pairs(data / s))  # as pareto.py's make_evaluate
        for name in ("psnr", "ssim", "gt_mean_psnr"):
            out[f"{s}/{name}"] = float(np.mean([getattr(x, name) for x in scores]))
        out[f"{s}/n"] = len(scores)
        # per image (the report bootstraps over images): names, so seeds are matched image by image
        out[f"{s}/images"] = [x.name for x in scores]
        out[f"{s}/psnr_per_image"] = [x.psnr for x in scores]
        out[f"{s}/gt_mean_psnr_per_image"] = [x.gt_mean_psnr for x in scores]
    for s in REAL_SETS:
        rows = []
        for path in list_images(data / s):
            rgb = read_image(path).rgb
            low8 = np.round(np.clip(rgb, 0, 1) * 255).astype(np.uint8)
            enh8 = np.round(np.clip(enhancer.enhance_rgb(rgb), 0, 1) * 255).astype(np.uint8)
            rows.append((mean_brightness(enh8), entropy(enh8), lightness_order_error(enh8, low8), noise_sigma(enh8),
                         noise_sigma(low8)))
        key = s.split("/")[-1]
        for i, name in enumerate(("brightness", "entropy", "loe", "noise", "input_noise")):
            out[f"{key}/{name}"] = float(np.mean([r[i] for r in rows])) if rows else float("nan")
    net = enhancer.loaded.network
    out["params"] = sum(p.numel() for p in net.parameters())
    out["gflops_600x400"] = count_flops(net, 1, 3, 400, 600) / 1e9
    frame = np.random.default_rng(0).uniform(0.0, 0.3, size=(400, 600, 3)).astype(np.float32)
    enhancer.enhance_rgb(frame)  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        enhancer.enhance_rgb(frame)
        times.append(time.perf_counter() - t0)
    out["ms_600x400"] = 1000 * float(np.median(times))
    out["threads"] = torch.get_num_threads()
    return out


# -- running --------------------------------------------------------------------------------------
Log = Callable[[str], None]


def say(line: str) -> None:
    """Progress, on stderr (the table goes to stdout)."""
    print(line, file=sys.stderr, flush=True)


def open_work(work: Path | None, default: str, budget_name: str, budget: Any) -> Path:
    """The work folder (``runs/<default>`` unless given), created, with the budget it runs written in it."""
    work = (work or Path("runs") / default).resolve()
    work.mkdir(parents=True, exist_ok=True)
    (work / "budget.json").write_text(json.dumps({"budget": budget_name, **asdict(budget)}, indent=1) + "\n")
    logging.getLogger("nasflow").setLevel(logging.WARNING)
    return work


def recipe_digest(config: Path = BASE_CONFIG) -> str:
    """sha256 of the resolved base configuration (``base:`` files merged in): the recipe of a work folder's runs."""
    from nasflow.config import read_yaml

    return hashlib.sha256(json.dumps(read_yaml(config), sort_keys=True).encode("utf-8")).hexdigest()


def check_recipe(work: Path, config: Path = BASE_CONFIG) -> None:
    """Refuses a work folder whose finished runs were trained under another base configuration (a resumed
    benchmark reuses every ``result.json``, so old-recipe runs would be mixed silently into the tables);
    records the recipe of a new one in ``recipe.json``."""
    path = work / "recipe.json"
    digest = recipe_digest(config)
    if path.is_file():
        stored: str | None = json.loads(path.read_text(encoding="utf-8")).get("sha256")
    elif any(work.glob("*/seed*/result.json")):
        stored = None  # runs from before recipe.json: their recipe is unknown
    else:
        path.write_text(json.dumps({"config": config.name, "sha256": digest}) + "\n", encoding="utf-8")
        return
    if stored != digest:
        raise SystemExit(f"error: {work} holds runs of another base configuration than {config} "
                         f"({'unknown' if stored is None else stored[:12]} vs {digest[:12]}); give a fresh --work")


def missing_folders(data: Path) -> list[str]:
    """The folders of ``data`` the benchmark reads (training, paired dev sets, real photos) that are absent."""
    return [f for f in (*PAIRED_SETS, *REAL_SETS, *TRAIN_FOLDERS) if not (data / f).is_dir()]


def _finished(folder: Path, marker: str) -> bool:
    return (folder / marker).is_file()


def _fresh(folder: Path, say: Log) -> None:
    """An unfinished stage folder that cannot resume (no checkpoint) is started again."""
    if folder.exists() and not (folder / "checkpoints").is_dir():
        say(f"  restarting the unfinished {folder}")
        shutil.rmtree(folder)


def run_search(arm: Arm, budget: Budget, seed: int, data: Path, device: str, folder: Path, held_out: set[str],
               say: Log) -> float:
    """Search of one arm and seed into ``folder`` (resumed if interrupted); its wall seconds."""
    from nasflow.run.runner import run

    timing = folder / "ablation_time.json"
    if _finished(folder, "genotype.json") and timing.is_file():
        return float(json.loads(timing.read_text())["seconds"])
    _fresh(folder, say)
    cfg = stage_config(arm, budget, "search", seed, data, device)
    train = planned_split(cfg, held_out, f"{arm.name} seed {seed} search")
    started = time.perf_counter()
    run(cfg, out=folder, quiet=True, search_only=True)
    seconds = time.perf_counter() - started
    # the search's own split (the runner writes splits.json for trained runs only)
    (folder / "splits.json").write_text(json.dumps({"train": train}, indent=1) + "\n", encoding="utf-8")
    timing.write_text(json.dumps({"seconds": seconds}) + "\n", encoding="utf-8")
    return seconds


def run_train(arm: Arm, budget: Budget, seed: int, data: Path, device: str, folder: Path, genotype: Any,
              held_out: set[str], say: Log) -> float:
    from nasflow.run.runner import run

    timing = folder / "ablation_time.json"
    if _finished(folder, "model.pt") and timing.is_file():
        return float(json.loads(timing.read_text())["seconds"])
    if folder.exists():
        say(f"  restarting the unfinished {folder}")
        shutil.rmtree(folder)
    cfg = stage_config(arm, budget, "train", seed, data, device)
    planned_split(cfg, held_out, f"{arm.name} seed {seed} training")
    started = time.perf_counter()
    run(cfg, out=folder, quiet=True, genotype=genotype)
    seconds = time.perf_counter() - started
    timing.write_text(json.dumps({"seconds": seconds}) + "\n", encoding="utf-8")
    return seconds


Evaluate = Callable[[Path, Path, int], dict[str, Any]]
"""``(trained run folder, data folder, speed repeats) -> figures`` of one trained run."""


def run_arm_seed(arm: Arm, budget: Budget, seed: int, data: Path, device: str, work: Path, held_out: set[str],
                 say: Log, evaluate: Evaluate | None = None) -> dict[str, Any]:
    """Search (if the arm searches), train and evaluate one arm at one seed; cached in result.json.

    ``evaluate`` defaults to :func:`evaluate_model` (benchmarks/pareto.py passes its own)."""
    from nasflow.core.genotype import Genotype

    root = work / arm.name / f"seed{seed}"
    result_path = root / "result.json"
    if result_path.is_file():
        return json.loads(result_path.read_text(encoding="utf-8"))
    root.mkdir(parents=True, exist_ok=True)
    search_seconds = 0.0
    splits = []
    if arm.searches:
        search_seconds = run_search(arm, budget, seed, data, device, root / "search", held_out, say)
        genotype = Genotype.load(root / "search" / "genotype.json")
        splits.append(root / "search" / "splits.json")
    else:
        genotype = fixed_genotype(arm.genotype or "paper", arm.model.get("use_nrm", True))
    train_seconds = run_train(arm, budget, seed, data, device, root / "train", genotype, held_out, say)
    splits.append(root / "train" / "splits.json")
    trained = check_splits(splits, held_out)
    figures = (evaluate or evaluate_model)(root / "train", data, budget.speed_repeats)
    result = {"arm": arm.name, "seed": seed, "family": arm.family, "genotype": genotype.to_dict(),
              "search_seconds": search_seconds, "train_seconds": train_seconds, "training_images": trained,
              **figures}
    result_path.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", choices=sorted(BUDGETS), default="default")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the shared data folder")
    parser.add_argument("--work", type=Path, default=None, help="work folder (default runs/ablation-<budget>)")
    parser.add_argument("--seeds", type=str, default=None, help="comma-separated seeds (default: the budget's)")
    parser.add_argument("--arms", type=str, default=None, help="comma-separated arm names (default: all)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda", "auto"))
    args = parser.parse_args(argv)

    budget = BUDGETS[args.budget]
    if args.seeds:
        budget = replace(budget, seeds=tuple(int(s) for s in args.seeds.split(",")))
    data = args.data.resolve()
    missing = missing_folders(data)
    if missing:
        print(f"skipped: {data} lacks {', '.join(missing)} (the benchmark needs ../shared/data)")
        return 0
    arms = arms_for(budget)
    if args.arms:
        wanted = args.arms.split(",")
        unknown = [a for a in wanted if a not in {arm.name for arm in arms}]
        if unknown:
            parser.error(f"unknown arm(s) {unknown}; arms: {', '.join(a.name for a in arms)}")
        arms = [a for a in arms if a.name in wanted]
    work = open_work(args.work, f"ablation-{args.budget}", args.budget, budget)
    check_recipe(work)
    held_out = {_digest(p) for p in evaluation_files(data)}
    started = time.perf_counter()
    results = []
    todo = [(arm, seed) for arm in arms for seed in budget.seeds]
    for i, (arm, seed) in enumerate(todo, 1):
        t0 = time.perf_counter()
        result = run_arm_seed(arm, budget, seed, data, args.device, work, held_out, say)
        results.append(result)
        say(f"[{i}/{len(todo)}] {arm.name} seed {seed}: PSNR / GT-mean PSNR "
            + ", ".join(f"{s} {result[f'{s}/psnr']:.2f} / {result[f'{s}/gt_mean_psnr']:.2f}" for s in PAIRED_SETS)
            + f" dB ({time.perf_counter() - t0:.0f} s; {time.perf_counter() - started:.0f} s in all)")

    from ablation_report import write_report

    everything = [json.loads(p.read_text()) for p in sorted(work.glob("*/seed*/result.json"))]
    table = write_report(everything, arms_for(budget), budget, args.budget, work,
                         command="python benchmarks/ablation.py " + " ".join(argv if argv is not None else sys.argv[1:]))
    print(table)
    print(f"\n{len(results)} arm-seed(s) in {time.perf_counter() - started:.0f} s (this invocation); "
          f"files in {work}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

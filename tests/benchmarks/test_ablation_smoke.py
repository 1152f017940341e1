"""``benchmarks/ablation.py --budget smoke`` end to end on a generated stand-in of ../shared/data.

Checks the table's shape (GT-mean PSNR beside PSNR, seed spread and bootstrap intervals over images),
that the arms train under the shipped ruas-auto recipe, that every arm really ran (searched arms
searched, fixed arms trained the genotype they name, random genotypes differ), that the same seed
gives the same numbers on CPU, that a killed benchmark continues where it stopped, that a work
folder of another recipe is refused, and that a training image identical to an evaluation image
stops the benchmark.
"""

from __future__ import annotations

import importlib
import json
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "benchmarks"
ARMS = ["cooperative", "cooperative-2nd", "separate", "joint", "random-1", "random-2", "paper", "conv3x3",
        "paper-no-warm-start", "paper-iem-only"]
SEARCHED = {"cooperative", "cooperative-2nd", "separate", "joint"}


def _load(name: str):
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    return importlib.import_module(name)


@pytest.fixture(scope="module")
def smoke(data: Path, tmp_path_factory) -> tuple[Path, str]:
    work = tmp_path_factory.mktemp("ablation")
    ablation = _load("ablation")
    assert ablation.main(["--budget", "smoke", "--data", str(data), "--work", str(work)]) == 0
    return work, (work / "table.md").read_text(encoding="utf-8")


def _table(text: str, heading: str) -> list[list[str]]:
    block = text.split(heading, 1)[1].split("###", 1)[0]
    rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in block.splitlines()
            if line.startswith("|")]
    return [r for r in rows[1:] if not set("".join(r)) <= set("-: ")]


def _header(text: str, heading: str) -> list[str]:
    block = text.split(heading, 1)[1].split("###", 1)[0]
    return next([c.strip() for c in line.strip().strip("|").split("|")] for line in block.splitlines()
                if line.startswith("|"))


def _cell(cell: str) -> tuple[float, float, float, float]:
    """``mean ± std [low, high]`` as four numbers."""
    spread, _, interval = cell.partition(" [")
    mean, _, std = spread.partition(" ± ")
    low, _, high = interval.rstrip("]").partition(", ")
    return float(mean), float(std), float(low), float(high)


def test_the_table_has_every_arm_and_states_the_spread(smoke) -> None:
    work, text = smoke
    rows = _table(text, "### Dev pairs")
    assert [r[0] for r in rows] == ARMS + ["random (all)"]
    assert all(len(r) == 2 + 2 * 3 + 2 + 1 for r in rows)
    assert all("±" in cell and "[" in cell for r in rows for cell in r[2:10])
    assert "exceeds the seed spread when" in text
    assert [r[0] for r in _table(text, "### Dev SSIM")] == ARMS + ["random (all)"]
    cost = {r[0]: r for r in _table(text, "### Size and time")}
    assert cost["paper"][1] == "3438" and cost["paper-iem-only"][1] == "1161"
    assert cost["paper"][2].startswith("0.825") and cost["paper-iem-only"][2].startswith("0.279")
    for name in ("table.md", "results.csv", "results.json", "psnr_vs_params.svg"):
        assert (work / name).stat().st_size > 0
    assert (work / "psnr_vs_params.svg").read_text().startswith("<svg")


def test_gt_mean_psnr_stands_beside_psnr_with_intervals_over_images(smoke) -> None:
    work, text = smoke
    head = _header(text, "### Dev pairs")
    sets = ("lol", "mit", "fivek_normal")
    assert head[2:10] == [f"{s} {m}" for s in sets for m in ("PSNR", "GT-mean PSNR")] + [
        "dev mean PSNR", "dev mean GT-mean PSNR"]
    assert "bootstrap interval over images" in text and "resampled with replacement within each set" in text
    results = {r["arm"]: r for r in json.loads((work / "results.json").read_text())}
    for row in _table(text, "### Dev pairs"):
        for column, cell in zip(head[2:10], row[2:10]):
            mean, std, low, high = _cell(cell)
            assert low <= mean <= high and low < high, (row[0], column, cell)
        if row[0] in results:  # one seed: the cell's mean is the run's own figure
            r = results[row[0]]
            for s in sets:
                assert _cell(row[2 + 2 * sets.index(s)])[0] == pytest.approx(r[f"{s}/psnr"], abs=0.006)
                assert _cell(row[3 + 2 * sets.index(s)])[0] == pytest.approx(r[f"{s}/gt_mean_psnr"], abs=0.006)
    for r in results.values():
        for s in sets:
            assert len(r[f"{s}/images"]) == len(r[f"{s}/psnr_per_image"]) == len(r[f"{s}/gt_mean_psnr_per_image"]) \
                == r[f"{s}/n"] == 2
            assert sum(r[f"{s}/gt_mean_psnr_per_image"]) / 2 == pytest.approx(r[f"{s}/gt_mean_psnr"])
            assert r[f"{s}/gt_mean_psnr"] != r[f"{s}/psnr"]
    for heading in ("### Against the paper's genotype", "### Against random genotypes"):
        assert _header(text, heading)[-4:] == ["Δ dev mean PSNR", "reading (dev mean PSNR)",
                                               "Δ dev mean GT-mean PSNR", "reading (dev mean GT-mean PSNR)"]
        assert all(r[-1] == "too few seeds to tell" for r in _table(text, heading))  # one seed
    import csv

    with open(work / "results.csv", newline="", encoding="utf-8") as f:
        columns = next(csv.reader(f))
    assert {f"{s}/gt_mean_psnr" for s in sets} <= set(columns)
    assert not any(c.endswith(("_per_image", "/images")) or c == "genotype" for c in columns)


def test_arms_train_under_the_ruas_auto_recipe(smoke) -> None:
    import yaml

    work, _ = smoke
    recipe = yaml.safe_load((ROOT / "tasks" / "ruas" / "models" / "ruas-auto.yaml").read_text())["task_options"]
    keys = ("exposure_key", "exposure_headroom_ev", "exposure_highlight_spot", "fidelity_target", "fidelity_stages",
            "exposure_luminance", "exposure_level", "exposure_power", "exposure_sigma", "exposure_max_lift_ev",
            "smooth_weight")
    for arm, nrm in (("cooperative", True), ("paper", True), ("paper-iem-only", False)):
        stage = "search" if arm == "cooperative" else "train"
        used = yaml.safe_load((work / arm / "seed0" / stage / "config.yaml").read_text())["task_options"]
        assert {k: used[k] for k in keys} == {k: recipe[k] for k in keys}, arm
        assert used["use_nrm"] is nrm


def test_a_work_folder_of_another_recipe_is_refused(tmp_path: Path) -> None:
    ablation = _load("ablation")
    other = tmp_path / "other.yaml"
    other.write_text(ablation.BASE_CONFIG.read_text().replace("exposure_level: 0.25", "exposure_level: 0.8")
                     .replace("base: ../tasks/ruas.yaml", f"base: {ROOT / 'tasks' / 'ruas.yaml'}"))
    work = tmp_path / "work"
    work.mkdir()
    ablation.check_recipe(work, other)  # a new folder takes the recipe it is given
    ablation.check_recipe(work, other)
    with pytest.raises(SystemExit, match="another base configuration"):
        ablation.check_recipe(work, ablation.BASE_CONFIG)
    old = tmp_path / "old"  # runs from before recipe.json: unknown recipe
    (old / "paper" / "seed0").mkdir(parents=True)
    (old / "paper" / "seed0" / "result.json").write_text("{}")
    with pytest.raises(SystemExit, match="another base configuration"):
        ablation.check_recipe(old, ablation.BASE_CONFIG)


def test_bootstrap_over_sets_keeps_each_sets_weight() -> None:
    from nasflow.tasks.ruas.metrics import bootstrap_interval

    report = _load("ablation_report")
    values = [3.0, 5.0, 4.0, 9.0, 1.0]
    assert report.bootstrap_sets([values], resamples=2000) == bootstrap_interval(values, resamples=2000, seed=0)
    # constant sets: every resample's mean of set means is (1 + 3) / 2, not the pooled mean 1.5
    assert report.bootstrap_sets([[1.0, 1.0, 1.0], [3.0]]) == (2.0, 2.0)
    low, high = report.bootstrap_sets([[0.0, 10.0], [5.0, 5.0]])
    assert (low, high) == (2.5, 7.5)
    with pytest.raises(ValueError):
        report.bootstrap_sets([[1.0], []])


def test_every_arm_really_ran(smoke) -> None:
    work, _ = smoke
    results = {r["arm"]: r for r in json.loads((work / "results.json").read_text())}
    assert sorted(results) == sorted(ARMS)
    for arm in ARMS:
        seed = work / arm / "seed0"
        assert (seed / "train" / "model.pt").is_file() and results[arm]["train_seconds"] > 0
        assert (seed / "search" / "genotype.json").is_file() == (arm in SEARCHED)
        assert results[arm]["training_images"] > 0
    history = json.loads((work / "separate" / "seed0" / "search" / "search_history.json").read_text())
    assert [sorted({k.split("/")[1] for k in e if k.startswith("train/")}) for e in history] == [["iem"], ["nrm"]]
    import yaml

    joint = yaml.safe_load((work / "joint" / "seed0" / "search" / "config.yaml").read_text())
    assert joint["search"]["strategy"] == "darts"
    cells = {arm: json.dumps(results[arm]["genotype"]["cells"], sort_keys=True) for arm in ARMS}
    assert cells["random-1"] != cells["random-2"] and cells["random-1"] != cells["paper"]
    assert cells["paper-no-warm-start"] == cells["paper"] and "nrm" not in results["paper-iem-only"]["genotype"]["cells"]
    assert set(e["op"] for e in results["conv3x3"]["genotype"]["cells"]["iem"]) == {"conv_3x3"}
    # the searched arms trained the genotype their search derived
    for arm in SEARCHED:
        found = json.loads((work / arm / "seed0" / "search" / "genotype.json").read_text())
        assert json.dumps(found["cells"], sort_keys=True) == cells[arm]
    assert results["paper-no-warm-start"]["lol/psnr"] != results["paper"]["lol/psnr"]  # the model differs


def test_same_seed_same_numbers_and_resume_continues(smoke, data: Path, tmp_path: Path) -> None:
    work, _ = smoke
    ablation = _load("ablation")
    again = tmp_path / "again"
    assert ablation.main(["--budget", "smoke", "--data", str(data), "--work", str(again),
                          "--arms", "cooperative,paper"]) == 0
    for arm in ("cooperative", "paper"):
        a = json.loads((work / arm / "seed0" / "result.json").read_text())
        b = json.loads((again / arm / "seed0" / "result.json").read_text())
        for key in a:
            if key.endswith(("psnr", "ssim", "brightness", "entropy", "loe", "noise")) or key == "genotype":
                assert a[key] == b[key], (arm, key)
    # a kill during training: the finished search is kept, the training redone, the rest untouched
    kept = (again / "paper" / "seed0" / "result.json").stat().st_mtime_ns
    search_ckpt = again / "cooperative" / "seed0" / "search" / "genotype.json"
    searched_at = search_ckpt.stat().st_mtime_ns
    (again / "cooperative" / "seed0" / "result.json").unlink()
    (again / "cooperative" / "seed0" / "train" / "model.pt").unlink()
    assert ablation.main(["--budget", "smoke", "--data", str(data), "--work", str(again),
                          "--arms", "cooperative,paper"]) == 0
    assert (again / "paper" / "seed0" / "result.json").stat().st_mtime_ns == kept
    assert search_ckpt.stat().st_mtime_ns == searched_at
    redone = json.loads((again / "cooperative" / "seed0" / "result.json").read_text())
    first = json.loads((work / "cooperative" / "seed0" / "result.json").read_text())
    assert redone["lol/psnr"] == first["lol/psnr"] and redone["mit/ssim"] == first["mit/ssim"]


def test_a_training_image_equal_to_an_evaluation_image_stops_it(data: Path, tmp_path: Path) -> None:
    leaky = tmp_path / "leaky"
    shutil.copytree(data, leaky)
    shutil.copy(leaky / "mit" / "low" / "00000.png", leaky / "sice_mid" / "copy.png")
    ablation = _load("ablation")
    with pytest.raises(RuntimeError, match="is an evaluation image"):
        ablation.main(["--budget", "smoke", "--data", str(leaky), "--work", str(tmp_path / "w"), "--arms", "paper"])


def test_without_the_data_it_skips_with_one_line(tmp_path: Path, capsys) -> None:
    ablation = _load("ablation")
    assert ablation.main(["--budget", "smoke", "--data", str(tmp_path / "absent"), "--work", str(tmp_path)]) == 0
    assert capsys.readouterr().out.startswith("skipped:")


@pytest.mark.parametrize("budget", ["smoke", "default", "full"])
def test_every_budget_gives_valid_configs_for_every_arm(budget: str, data: Path) -> None:
    from nasflow.run.runner import check_config

    ablation = _load("ablation")
    b = ablation.BUDGETS[budget]
    for arm in ablation.arms_for(b):
        for stage in ("search", "train") if arm.searches else ("train",):
            cfg = ablation.stage_config(arm, b, stage, 0, data, "cpu")
            check_config(cfg)
            assert cfg.train.epochs == b.train_epochs and cfg.task_options["crop"] == (
                (b.search_crop or b.crop) if stage == "search" else b.crop)
            if arm.searches:
                assert cfg.search.strategy == arm.strategy
                assert cfg.search.epochs == b.search_epochs * (2 if arm.strategy == "separate" else 1)
        genotype = None if arm.searches else ablation.fixed_genotype(arm.genotype, arm.model.get("use_nrm", True))
        assert arm.searches or genotype is not None

"""``benchmarks/ablation.py --budget smoke`` end to end on a generated stand-in of ../shared/data.

Checks the table's shape, that every arm really ran (searched arms searched, fixed arms trained the
genotype they name, random genotypes differ), that the same seed gives the same numbers on CPU,
that a killed benchmark continues where it stopped, and that a training image identical to an
evaluation image stops the benchmark.
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


def test_the_table_has_every_arm_and_states_the_spread(smoke) -> None:
    work, text = smoke
    rows = _table(text, "### Dev pairs")
    assert [r[0] for r in rows] == ARMS + ["random (all)"]
    assert all(len(r) == 2 + 2 * 3 + 2 for r in rows)
    assert all("±" in cell for r in rows for cell in r[2:9])
    assert "exceeds the seed spread when" in text
    cost = {r[0]: r for r in _table(text, "### Size and time")}
    assert cost["paper"][1] == "3438" and cost["paper-iem-only"][1] == "1161"
    assert cost["paper"][2].startswith("0.825") and cost["paper-iem-only"][2].startswith("0.279")
    for name in ("table.md", "results.csv", "results.json", "psnr_vs_params.svg"):
        assert (work / name).stat().st_size > 0
    assert (work / "psnr_vs_params.svg").read_text().startswith("<svg")


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

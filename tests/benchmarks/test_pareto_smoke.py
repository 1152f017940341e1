"""``benchmarks/pareto.py --budget smoke`` end to end on a generated stand-in of ../shared/data.

Checks that every arm ran (searched arms searched with the cost term on, the controls trained the
genotypes they name, each random control's predicted ms is within the tolerance of the searched
run it was drawn for), the table, CSV and picture (the front drawn through the arms the table
marks), and that a second run does no new work.
"""

from __future__ import annotations

import csv
import importlib
import json
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "benchmarks"


def _load(name: str):
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    return importlib.import_module(name)


@pytest.fixture(scope="module")
def smoke(data: Path, tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("pareto")
    assert _load("pareto").main(["--budget", "smoke", "--data", str(data), "--work", str(work)]) == 0
    return work


def _rows(text: str, heading: str) -> list[list[str]]:
    block = text.split(heading, 1)[1].split("###", 1)[0]
    rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in block.splitlines()
            if line.startswith("|")]
    return rows[2:]


def test_every_arm_ran_and_the_randoms_match_the_searched_latency(smoke: Path) -> None:
    results = {(r["arm"], r["seed"]): r for r in json.loads((smoke / "results.json").read_text())}
    plan = json.loads((smoke / "matches.json").read_text())
    assert sorted(plan) == ["search-w0/seed0", "search-w1/seed0"]
    randoms = {(f"random-{k}", m["seed"]) for m in plan.values() for k in m["randoms"]}
    assert len(randoms) == 2  # one per searched run, never the same genotype twice
    assert set(results) == {("search-w0", 0), ("search-w1", 0), ("paper", 0), ("conv3x3", 0), *randoms}
    for run, m in plan.items():
        for k in m["randoms"]:
            assert abs(results[(f"random-{k}", m["seed"])]["predicted_ms"] / m["target_ms"] - 1) <= 0.10
        assert results[(run.split("/")[0], 0)]["predicted_ms"] == pytest.approx(m["target_ms"])
    cfg = yaml.safe_load((smoke / "search-w1" / "seed0" / "search" / "config.yaml").read_text())
    assert cfg["search"]["cost"]["weight"] == 1.0 and cfg["search"]["cost"]["metric"] == "latency"
    recipe = yaml.safe_load((ROOT / "tasks" / "ruas" / "models" / "ruas-auto.yaml").read_text())["task_options"]
    assert cfg["task_options"]["use_nrm"] is False
    assert {k: cfg["task_options"][k] for k in ("exposure_key", "exposure_highlight_spot")} == {
        k: recipe[k] for k in ("exposure_key", "exposure_highlight_spot")}  # the recipe
    history = json.loads((smoke / "search-w1" / "seed0" / "search" / "search_history.json").read_text())
    assert any("cost/iem/expected_ms" in e for e in history)
    for arm, ops in (("conv3x3", {"conv_3x3"}), ("search-w0", None)):
        cells = results[(arm, 0)]["genotype"]["cells"]
        assert set(cells) == {"iem"} and (ops is None or {e["op"] for e in cells["iem"]} == ops)
    assert all(r["ms"] > 0 and r["params"] > 0 and r["gflops"] > 0 for r in results.values())


def test_table_csv_and_picture(smoke: Path) -> None:
    text = (smoke / "table.md").read_text()
    arms = _rows(text, "### Arms")
    names = [r[0] for r in arms]
    assert names[:4] == ["search-w0", "search-w1", "paper", "conv3x3"] and len(names) == 6
    front = [r[0] for r in arms if r[-1] == "yes"]
    assert front
    pareto_report = _load("pareto_report")
    results = json.loads((smoke / "results.json").read_text())
    means = {r["arm"]: (r["ms"], pareto_report.dev(r, "gt_mean_psnr")) for r in results}  # one seed
    assert sorted(front) == sorted(pareto_report.pareto_front(means))
    reading = _rows(text, "### Searched arms against the controls")
    assert [r[0] for r in reading] == ["search-w0", "search-w1"]
    with open(smoke / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 6 and {"dev_gt_mean_psnr", "ms", "predicted_ms", "params", "gflops"} <= set(rows[0])
    assert [r["arm"] for r in rows][:4] == names[:4]
    svg = (smoke / "pareto.svg").read_text()
    assert svg.startswith("<svg") and svg.rstrip().endswith("</svg>")
    points = svg.split('<polyline points="', 1)[1].split('"', 1)[0].split()
    assert len(points) == 2 * len(front) - 1  # a staircase through the front's arms


def test_pareto_front_keeps_only_the_undominated() -> None:
    front = _load("pareto_report").pareto_front
    points = {"fast-bad": (1.0, 10.0), "fast-good": (1.0, 12.0), "mid": (2.0, 11.0), "slow-best": (3.0, 13.0)}
    assert front(points) == ["fast-good", "slow-best"]


def test_a_second_run_does_no_new_work(smoke: Path, data: Path, capsys) -> None:
    stamps = {p: p.stat().st_mtime_ns for p in smoke.rglob("*")
              if p.is_file() and p.name in ("result.json", "model.pt", "genotype.json", "timing.json",
                                            "cost_table.json", "cost_base.json")}
    assert len(stamps) >= 6 + 6 + 2 + 3
    capsys.readouterr()
    assert _load("pareto").main(["--budget", "smoke", "--data", str(data), "--work", str(smoke)]) == 0
    captured = capsys.readouterr()
    assert "0 new arm-seed(s)" in captured.out and "timing" not in captured.err
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps


def test_without_the_data_it_skips_with_one_line(tmp_path: Path, capsys) -> None:
    assert _load("pareto").main(["--budget", "smoke", "--data", str(tmp_path / "absent"), "--work", str(tmp_path)]) == 0
    assert capsys.readouterr().out.startswith("skipped:")


@pytest.mark.parametrize("budget", ["smoke", "default", "full"])
def test_every_budget_gives_valid_search_configs(budget: str, data: Path, tmp_path: Path) -> None:
    from nasflow.run.runner import check_config

    pareto = _load("pareto")
    b = pareto.BUDGETS[budget]
    for arm in pareto.searched_arms(b, tmp_path / "table.json"):
        cfg = pareto.ablation.stage_config(arm, b.run, "search", 0, data, "cpu")
        check_config(cfg)
        assert cfg.search.cost.size == b.size and cfg.task_options["use_nrm"] is False
    assert 0.0 in b.weights and len(b.weights) >= 2

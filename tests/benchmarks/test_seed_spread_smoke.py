"""``benchmarks/seed_spread.py`` on the generated stand-in of ``../shared/data``: the shipped file as seed
0, a run folder as seed 1, the tables' rows and their arithmetic; a missing run is a clear error."""

from __future__ import annotations

import json
import shutil
import statistics
from pathlib import Path

import pytest

from bench_loader import load_benchmark

seed_spread = load_benchmark("seed_spread")
MODELS = Path(__file__).resolve().parents[2] / "tasks" / "ruas" / "models"


def _rows(text: str, heading: str) -> list[list[str]]:
    """The body rows of the markdown table under ``## heading...``."""
    block = text.split("## " + heading, 1)[1].split("\n## ", 1)[0]
    lines = [line for line in block.splitlines() if line.startswith("|")][2:]
    return [[c.strip() for c in line.strip().strip("|").split("|")] for line in lines]


@pytest.mark.usefixtures("single_thread")
def test_two_seeds_of_a_shipped_model(data: Path, tmp_path: Path, capsys) -> None:  # noqa: ANN001
    run = tmp_path / "runs" / "seed-ruas-mit-s1"
    run.mkdir(parents=True)
    shutil.copy(MODELS / "ruas-lol.pt", run / "model.pt")  # another model: the two seeds must differ
    (run / "metrics.json").write_text(json.dumps({"seconds": 90.0}), encoding="utf-8")
    out = tmp_path / "seeds.md"
    argv = ["--models", "ruas-mit", "--seeds", "0", "1", "--work", str(tmp_path / "runs"), "--data", str(data),
            "--no-releases", "--out", str(out)]
    assert seed_spread.main(argv) == 0
    printed = capsys.readouterr().out
    assert out.read_text(encoding="utf-8").startswith("# The shipped RUAS models over seeds")

    per_seed = _rows(printed, "Per seed")
    assert [(r[0], r[1], r[2]) for r in per_seed] == [("ruas-mit", "0", "shipped file"),
                                                        ("ruas-mit", "1", "seed-ruas-mit-s1")]
    assert per_seed[1][-1] == "1.5" and per_seed[0][-1] == ""  # minutes, from the run's metrics.json
    over = {r[1]: r for r in _rows(printed, "Over seeds")}
    assert set(over) == {"lol", "mit", "fivek_normal"}
    for name, row in over.items():
        psnrs = [float(r[3 + list(over).index(name)].split(" / ")[0]) for r in per_seed]
        mean, sd = (float(x) for x in row[2].split(" [")[0].split(" ± "))
        assert mean == pytest.approx(statistics.fmean(psnrs), abs=0.01)
        assert sd == pytest.approx(statistics.stdev(psnrs), abs=0.015)
        low, high = (float(x) for x in row[2].split(" [")[1].strip("]").split(", "))
        assert (low, high) == pytest.approx((min(psnrs), max(psnrs)), abs=0.005)
    assert [r[0] for r in _rows(printed, "The input")] == ["input unchanged"]
    assert "ahead of the best release" not in printed  # no releases, no comparison with them


def test_a_missing_run_says_how_to_make_it(data: Path, tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match=r"no run of ruas-mit at seed 3 .*--train or `nasflow train .*seed=3"):
        seed_spread.main(["--models", "ruas-mit", "--seeds", "0", "3", "--work", str(tmp_path), "--data", str(data),
                          "--no-releases"])


def test_an_unknown_model_is_refused(capsys) -> None:  # noqa: ANN001
    with pytest.raises(SystemExit):
        seed_spread.main(["--models", "ruas-nope"])
    assert "not a shipped model: ruas-nope" in capsys.readouterr().err


def test_train_runs_the_cards_command_for_a_missing_seed(data: Path, tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    """``--train`` runs ``nasflow train <card config> --genotype ... --set seed=S --out <work>/seed-<name>-sS``
    for each missing run (here a stand-in that writes the run folder) and then scores it."""
    calls = []

    def fake_train(command: list[str]):  # noqa: ANN202
        calls.append(command)
        out = Path(command[command.index("--out") + 1])
        out.mkdir(parents=True)
        shutil.copy(MODELS / "ruas-fast.pt", out / "model.pt")

        class Done:
            returncode = 0
        return Done()

    monkeypatch.setattr(seed_spread.subprocess, "run", fake_train)
    work = tmp_path / "runs"
    assert seed_spread.main(["--models", "ruas-fast", "--seeds", "0", "2", "--work", str(work), "--data", str(data),
                             "--no-releases", "--train"]) == 0
    assert len(calls) == 1
    command = calls[0]
    assert command[:3] == ["nasflow", "train", str(MODELS / "ruas-fast.yaml")]
    assert command[command.index("--genotype") + 1] == str(MODELS / "ruas-fast.genotype.json")
    assert "seed=2" in command and f"task_options.root={data}" in command
    assert command[command.index("--out") + 1] == str(work / "seed-ruas-fast-s2")
    # a second call finds the run and trains nothing
    assert seed_spread.main(["--models", "ruas-fast", "--seeds", "0", "2", "--work", str(work), "--data", str(data),
                             "--no-releases", "--train"]) == 0
    assert len(calls) == 1


def test_a_failed_training_stops_with_its_seed(data: Path, tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    class Failed:
        returncode = 1

    monkeypatch.setattr(seed_spread.subprocess, "run", lambda command: Failed())
    with pytest.raises(SystemExit, match="training ruas-mit at seed 1 failed"):
        seed_spread.main(["--models", "ruas-mit", "--seeds", "1", "--work", str(tmp_path), "--data", str(data),
                          "--no-releases", "--train"])

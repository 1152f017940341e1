"""``benchmarks/quality.py`` end to end on a generated data folder: the three dev sets, an extra
``--pairs`` set and a releases folder of reference networks with their default weights (the
authors' layout, imported by the benchmark). Checks the tables, not the figures of any model:
every row and column is there, the intervals bracket the means, and the identity row is the PSNR
of the inputs themselves.
"""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from nasflow.tasks.ruas.metrics import psnr

ROOT = Path(__file__).resolve().parents[1].parent


def _load(name: str, path: Path):  # noqa: ANN202
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


quality = _load("nasflow_benchmark_quality", ROOT / "benchmarks" / "quality.py")
README = """# test data

| method (official weights) | lol PSNR/SSIM | mit PSNR/SSIM | fivek_normal PSNR/SSIM |
|---|---|---|---|
| identity (input unchanged) | 7.21 / 0.277 | 9.08 / 0.517 | 18.01 / 0.841 |
| Zero-DCE | 15.83 / 0.722 | 18.30 / 0.871 | 14.53 / 0.785 |
"""


def _pairs(folder: Path, count: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """``count`` 24x32 pairs: a smooth scene as ground truth, its input darker and noisy."""
    rng = np.random.default_rng(seed)
    (folder / "low").mkdir(parents=True)
    (folder / "high").mkdir()
    made = []
    for i in range(count):
        yy, xx = np.mgrid[0:24, 0:32] / 32.0
        high = np.stack([0.3 + 0.5 * xx, 0.4 + 0.4 * yy, 0.5 + 0.2 * xx * yy], axis=2) * rng.uniform(0.6, 1.0)
        low = np.clip(high * rng.uniform(0.1, 0.4) + rng.normal(0, 0.01, high.shape), 0, 1)
        low8, high8 = (np.round(a * 255).astype(np.uint8) for a in (low, high))
        Image.fromarray(low8).save(folder / "low" / f"{i:03d}.png")
        Image.fromarray(high8).save(folder / "high" / f"{i:03d}.png")
        made.append((low8, high8))
    return made


def _releases(folder: Path) -> None:
    """A CVPR ``upe.pt`` and a journal ``mit.pt`` in the authors' layout (default weights)."""
    ref = _load("nasflow_quality_released_reference", ROOT / "tests" / "tasks" / "ruas" / "released_reference.py")
    torch.manual_seed(0)
    (folder / "cvpr").mkdir(parents=True)
    (folder / "journal").mkdir()
    torch.save(ref.ReleasedRUAS(True).state_dict(), folder / "cvpr" / "upe.pt")
    torch.save(ref.ReleasedJournalRUAS().state_dict(), folder / "journal" / "mit.pt")


def _tables(text: str) -> dict[str, tuple[list[str], list[list[str]]]]:
    """``{set name: (header, rows)}`` of the markdown tables under ``## name (...)`` headings."""
    tables: dict[str, tuple[list[str], list[list[str]]]] = {}
    current = None
    for line in text.splitlines():
        if line.startswith("## "):
            current = line[3:].split(" ")[0]
        elif line.startswith("|") and current is not None:
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if current not in tables:
                tables[current] = (cells, [])
            elif not set(line) <= set("|-: "):
                tables[current][1].append(cells)
    return tables


def _interval(cell: str) -> tuple[float, float]:
    low, high = cell.strip("[]").split(",")
    return float(low), float(high)


@pytest.mark.usefixtures("single_thread")
def test_quality_tables_on_generated_pairs(tmp_path, capsys) -> None:
    data = tmp_path / "data"
    made = {name: _pairs(data / name, count, seed) for seed, (name, count) in
            enumerate([("lol", 2), ("mit", 3), ("fivek_normal", 4)])}
    (data / "README.md").write_text(README, encoding="utf-8")
    made["extra"] = _pairs(tmp_path / "extra", 3, seed=9)
    _releases(tmp_path / "releases")
    out = tmp_path / "report" / "quality.md"
    argv = ["--data", str(data), "--model", "ruas-auto", "--releases", str(tmp_path / "releases"),
            "--pairs", f"extra={tmp_path / 'extra'}", "--resamples", "500", "--out", str(out)]
    assert quality.main(argv) == 0
    printed = capsys.readouterr().out
    tables = _tables(printed)
    assert list(tables) == ["lol", "mit", "fivek_normal", "extra", "Against"]
    differences = tables.pop("Against")
    for name, (header, rows) in tables.items():
        assert header == list(quality.COLUMNS)
        labels = [r[0] for r in rows]
        refs = ["ref: identity (input unchanged)", "ref: Zero-DCE"] if name != "extra" else []
        assert labels == ["input unchanged", "nasflow ruas-auto", "release cvpr/upe", "release journal/mit", *refs]
        col = {c: header.index(c) for c in header}
        for row in rows[:4]:
            for mean_col in ("PSNR", "SSIM", "GT-mean PSNR", "brightness err"):
                low, high = _interval(row[col[mean_col + " 95% CI"]])
                mean = float(row[col[mean_col]])
                assert low - 0.01 <= mean <= high + 0.01, (name, row[0], mean_col, row)
            assert float(row[col["mean abs brightness err"]]) >= abs(float(row[col["brightness err"]])) - 0.05
        identity = rows[0]
        expected = np.mean([psnr(low, high) for low, high in made[name]])
        assert float(identity[col["PSNR"]]) == pytest.approx(expected, abs=0.005)
        darker = np.mean([low.mean() - high.mean() for low, high in made[name]])
        assert float(identity[col["brightness err"]]) == pytest.approx(darker, abs=0.05) and darker < 0
        assert float(identity[col["GT-mean PSNR"]]) > float(identity[col["PSNR"]])  # exposure forgiven
        if refs:
            assert rows[4][col["PSNR"]] and rows[4][col["SSIM"]] and not rows[4][col["GT-mean PSNR"]]
    assert tables["lol"][1][5][1:4] == ["15.83", "", "0.722"]  # read from the README, the lol column
    # paired differences: the model against the release with the best mean on each set, per column
    header, rows = differences
    assert header == list(quality.DIFFERENCE_COLUMNS)
    assert [(r[0], r[1]) for r in rows] == [(n, "ruas-auto") for n in ("lol", "mit", "fivek_normal", "extra")]
    for row in rows:
        _, body = tables[row[0]]
        col = {c: i for i, c in enumerate(quality.COLUMNS)}
        model = next(r for r in body if r[0] == "nasflow ruas-auto")
        for metric, best_cell, diff_cell in (("PSNR", 2, 3), ("GT-mean PSNR", 4, 5)):
            releases = {r[0].removeprefix("release "): float(r[col[metric]]) for r in body if r[0].startswith("release ")}
            best = max(releases, key=releases.get)
            assert row[best_cell] == f"{best} ({releases[best]:.2f})"
            mean = float(row[diff_cell].split(" [")[0])
            assert mean == pytest.approx(float(model[col[metric]]) - releases[best], abs=0.011)  # mean of differences
            low, high = _interval("[" + row[diff_cell].split(" [")[1])
            assert low - 0.01 <= mean <= high + 0.01
    written = out.read_text(encoding="utf-8")
    assert written.startswith("# Quality on paired sets\n\nCommand: `python benchmarks/quality.py --data ")
    assert "--pairs extra=" in written and "torch " + torch.__version__ in written and " threads" in written
    assert _tables(written) == {**tables, "Against": differences}


def test_quality_skips_without_data(tmp_path, capsys) -> None:
    assert quality.main(["--data", str(tmp_path / "absent")]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("skipped:") and printed.count("\n") == 1


def test_quality_refuses_a_pairs_folder_without_high(tmp_path, capsys) -> None:
    (tmp_path / "p" / "low").mkdir(parents=True)
    with pytest.raises(SystemExit):
        quality.main(["--data", str(tmp_path), "--pairs", f"x={tmp_path / 'p'}"])
    assert "needs the folders low/ and high/" in capsys.readouterr().err


def test_score_pairs_reports_inf_psnr_capped(tmp_path) -> None:
    """A perfect output: PSNR and GT-mean PSNR capped at 100 dB, so the means and intervals stay finite."""
    pairs = quality.read_pairs(_write_one(tmp_path))
    scores = quality.score_pairs(lambda rgb: pairs[0].high.astype(np.float32) / 255.0, pairs)
    summary = quality.summarize(scores, resamples=100)
    assert summary.psnr == summary.gt_mean_psnr == 100.0 and summary.ssim == pytest.approx(1.0)
    assert summary.brightness_error == 0.0 and math.isfinite(summary.psnr_ci[0])


def _write_one(folder: Path) -> Path:
    _pairs(folder / "one", 1, seed=3)
    return folder / "one"


def test_paired_difference_resamples_the_same_images_for_both() -> None:
    """A model exactly 0.5 dB above a release on every image: the paired interval is that 0.5, however
    much the images differ from one another (two unpaired intervals would overlap widely)."""
    def scores(values: list[float]) -> list:
        return [quality.ImageScore(f"{i}", v, 0.5, v + 1.0, 0.0) for i, v in enumerate(values)]

    images = [12.0, 25.0, 18.0, 30.0]
    weaker = scores([v - 2.0 for v in images])
    d = quality.paired_difference(scores([v + 0.5 for v in images]), {"release a": scores(images),
                                                                      "release b": weaker}, "psnr", resamples=500)
    assert d.reference == "release a" and d.reference_mean == pytest.approx(21.25)
    assert d.mean == pytest.approx(0.5) and d.ci == pytest.approx((0.5, 0.5))
    with pytest.raises(ValueError, match="same images"):
        quality.paired_difference(scores(images)[::-1], {"release a": scores(images)}, "psnr", resamples=10)

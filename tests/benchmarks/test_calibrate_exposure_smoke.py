"""``benchmarks/calibrate_exposure.py`` end to end on the generated data folder: the report names both
meterings, marks one chosen, lists every case, and the chosen one has the smaller leave-one-out error."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1].parent


def _load():  # noqa: ANN202
    spec = importlib.util.spec_from_file_location("nasflow_benchmark_calibrate", ROOT / "benchmarks" / "calibrate_exposure.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_report_on_generated_pairs(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "calibration.md"
    assert _load().main(["--data", str(data), "--out", str(out)]) == 0
    text = out.read_text()
    rows = {m.group(1): (m.group(2), float(m.group(3)))
            for m in re.finditer(r"^\| (mean|reinhard)( \(chosen\))? \| [\d.]+ \| [\d.]+ - [\d.]+ \| ([\d.]+) \|", text, re.M)}
    assert set(rows) == {"mean", "reinhard"}
    chosen = [m for m, (mark, _) in rows.items() if mark]
    assert len(chosen) == 1
    assert rows[chosen[0]][1] <= min(err for _, err in rows.values())
    assert len(re.findall(r"^\| 0000[01] \| [1-4] \|", text, re.M)) == 8  # 2 photos x 4 darkenings
    knees = re.findall(r"^\| (none \(clip\)|[\d.]+)( \(chosen\))? \| [\d.]+ \| [\d.]+ \| [+-][\d.]+ \| ([\d.]+) dB \|$",
                       text, re.M)
    assert [k for k, _, _ in knees] == ["none (clip)", "0.5", "0.6", "0.7", "0.8", "0.9", "1"]
    marked = [float(p) for _, mark, p in knees if mark]
    assert len(marked) == 1 and marked[0] == max(float(p) for _, _, p in knees)  # the highest PSNR is chosen


def test_skips_without_the_data(tmp_path: Path, capsys) -> None:  # noqa: ANN001
    assert _load().main(["--data", str(tmp_path)]) == 0
    assert capsys.readouterr().out.startswith("skipped:")


def test_premise_check_of_a_shipped_model(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "calibration.md"
    assert _load().main(["--data", str(data), "--out", str(out), "--check-model", "ruas-mit"]) == 0
    row = re.search(r"^\| ruas-mit \| mean, ([\d.]+), knee [\d.]+ \| ([+-][\d.]+) \| ([+-][\d.]+) \| ([+-][\d.]+) \|$",
                    out.read_text(), re.M)
    assert row, out.read_text()
    whole, alone, gap = (float(row.group(i)) for i in (2, 3, 4))
    assert abs(gap - (whole - alone)) < 0.011
    assert float(row.group(1)) > 0



def test_an_unknown_model_is_one_line_not_a_traceback(data: Path) -> None:
    import pytest

    with pytest.raises(SystemExit, match="unknown model 'nope'"):
        _load().main(["--data", str(data), "--check-model", "nope"])

"""``benchmarks/speed.py`` end to end on a tiny image: every row is printed, and every row computes the
compiled module's output (max abs diff < 1e-5, parsed from the printed table), the tiled row too.

Not a timing test: one cold run per row (``--repeats 1 --warmup 0``), tiles of 32 so that the 64x48
image really is cut into tiles, the peak-RSS workers on, the search-step section off.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SPEED = ROOT / "benchmarks" / "speed.py"
ROWS = ["reference", "compiled", "fast_model", "fast_ruas", "fast_ruas intra-op threads", "fast_ruas 1 thread",
        "onnxruntime", "tiled"]
TOLERANCE = 1e-5


def variant_tables(text: str) -> list[tuple[list[str], list[list[str]]]]:
    """The printed markdown tables whose first column is ``variant``: (header, rows) each."""
    tables: list[tuple[list[str], list[list[str]]]] = []
    current: tuple[list[str], list[list[str]]] | None = None
    for line in text.splitlines():
        if not line.startswith("|"):
            current = None
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if current is None:
            current = (cells, [])
            if cells[0] == "variant":
                tables.append(current)
        elif not set(line) <= set("|-: "):  # skip the |---| rule
            current[1].append(cells)
    return tables


def test_speed_prints_every_row_with_matching_outputs() -> None:
    proc = subprocess.run(
        [sys.executable, str(SPEED), "--sizes", "64x48", "--repeats", "1", "--warmup", "0", "--threads", "2",
         "--tile", "32", "--no-search"],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    tables = variant_tables(proc.stdout)
    assert len(tables) == 1, proc.stdout
    header, rows = tables[0]
    names = [r[0] for r in rows]
    has_ort = importlib.util.find_spec("onnxruntime") is not None
    expected = ROWS if has_ort else [n for n in ROWS if n != "onnxruntime"]
    assert names == expected, proc.stdout
    if not has_ort:
        assert "skipped onnxruntime" in proc.stdout

    diff_col = next(i for i, h in enumerate(header) if h.startswith("max abs diff"))
    before_col, peak_col = header.index("RSS before forward MiB"), header.index("peak RSS MiB")
    ms_col = header.index("ms / image (median)")
    for row in rows:
        assert len(row) == len(header), row
        assert float(row[diff_col]) < TOLERANCE, row
        assert float(row[ms_col]) > 0, row
        before, peak = float(row[before_col]), float(row[peak_col])
        assert 50 < before <= peak + 1, row  # MiB: torch alone is more than 50

    # the tiled row compared with the untiled fast path as well
    match = re.search(r"^tiled: tile 32, halo (\d+); max abs diff to the untiled fast_ruas output (\S+)$",
                      proc.stdout, re.MULTILINE)
    assert match, proc.stdout
    assert int(match.group(1)) > 0 and float(match.group(2)) < TOLERANCE

"""Issue #8, load: ``nasflow enhance`` over 1,000 generated images (mixed sizes up to 64 x 64, plus six
at 256 x 256, three among the first and three among the last hundred) finishes with the right count
and its peak memory does not grow between the first and the last hundred images.

The measurement is ``benchmarks/load.py`` (RSS from /proc/self/status after every written image), run
in a fresh subprocess; the full-size run (sides up to 2000 x 2000) is that script's default.
Without bounded oneDNN caches (nasflow.infer.enhance.BACKEND_CACHE_LIMITS) the same run grows by 50-70 MiB.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from rbutil import env

LOAD = Path(__file__).resolve().parents[2] / "benchmarks" / "load.py"
GROWTH_MIB = 24  # allocator noise; unbounded caches add 50-70 MiB over this run


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="RSS is read from /proc (Linux)")
def test_thousand_images_finish_with_flat_memory(tmp_path: Path) -> None:
    result_file = tmp_path / "load.json"
    proc = subprocess.run([sys.executable, str(LOAD), "--count", "1000", "--max", "256", "--large", "6",
                           "--workdir", str(tmp_path / "work"), "--json", str(result_file)],
                          env={**env(), "OMP_NUM_THREADS": "2"}, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(result_file.read_text())
    assert result["exit_code"] == 0
    assert result["images_written"] == result["outputs_on_disk"] == 1000
    assert "enhanced 1000 of 1000 images" in proc.stdout
    growth = result["peak_rss_last_100_mib"] - result["peak_rss_first_100_mib"]
    assert growth <= GROWTH_MIB, result
    assert result["images_per_second"] > 0 and "images/s" in proc.stdout and "peak RSS" in proc.stdout

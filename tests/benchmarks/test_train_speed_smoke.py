"""``benchmarks/train_speed.py`` on a few real training images: every row prints, and the run with the
decode cache trains bitwise the same weights as the run without (exit code 0). Skips without
../shared/data."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT.parent / "shared" / "data"


@pytest.mark.skipif(not (DATA / "sice_dark").is_dir(), reason="needs ../shared/data")
def test_train_speed_rows_and_equal_weights() -> None:
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "train_speed.py"), "--images", "8", "--crop", "48",
                           "--epochs", "1", "--pipeline-epochs", "1"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    rows = [line for line in done.stdout.splitlines() if line.startswith("| pipeline") or line.startswith("| training")]
    assert len(rows) == 3
    assert "bitwise equal with and without the cache: True" in done.stdout

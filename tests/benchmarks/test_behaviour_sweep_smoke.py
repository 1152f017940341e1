"""``benchmarks/behaviour_sweep.py``: it finds a broken promise where there is one, passes a model that
keeps it, writes its report and refuses an unknown model with a message."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from bench_loader import load_benchmark


def _module():  # noqa: ANN202
    return load_benchmark("behaviour_sweep")


def test_a_global_gain_breaks_the_night_promise_and_the_identity_keeps_it() -> None:
    sweep = _module()

    def fog(rgb: np.ndarray, exposure_bias: float = 0.0) -> np.ndarray:  # every photo to a mean of 0.4
        return np.clip(rgb * 0.4 / max(float(rgb.mean()), 1e-6), 0, 1)

    def identity(rgb: np.ndarray, exposure_bias: float = 0.0) -> np.ndarray:
        return rgb

    broken = [case for case, ok, _ in sweep.sweep_dark_night(fog) if not ok]
    assert len(broken) == 20 and "background x" in broken[0]
    assert all(ok for _, ok, _ in sweep.sweep_dark_night(identity))
    assert all(ok for _, ok, _ in sweep.sweep_normal(identity))


def test_the_report_of_a_shipped_model(tmp_path: Path, capsys) -> None:  # noqa: ANN001
    sweep = _module()
    out = tmp_path / "sweep.md"
    assert sweep.main(["ruas-fast", "--promise", "very dark night", "--out", str(out)]) == 0
    text = out.read_text()
    assert "| ruas-fast | very dark night | 20 |" in text
    assert text == capsys.readouterr().out


def test_an_unknown_model_is_refused_with_a_message(capsys) -> None:  # noqa: ANN001
    sweep = _module()
    assert sweep.main(["no-such-model", "--promise", "grey"]) == 2
    assert "no-such-model" in capsys.readouterr().err

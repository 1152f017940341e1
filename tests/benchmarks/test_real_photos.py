"""``benchmarks/real_photos.py``: the per-image figures on generated images (the real photos are not needed),
and a clean skip when the data folder is absent."""

from __future__ import annotations


import numpy as np
import pytest
from bench_loader import load_benchmark


def _module():  # noqa: ANN202
    return load_benchmark("real_photos")


def test_dark_noise_figure_sees_noise_lifted_out_of_the_dark() -> None:
    rp = _module()
    rng = np.random.default_rng(0)
    h, w = 96, 128
    dark = np.full((h, w, 3), 10.0)
    dark[:, w // 2 :] = rng.uniform(60, 120, (h, w - w // 2, 1))  # a textured brighter half
    in8 = np.round(dark).astype(np.uint8)
    lifted = 4 * dark
    clean = rp.figures(np.clip(np.round(lifted), 0, 255).astype(np.uint8), in8)
    noisy = rp.figures(np.clip(np.round(lifted + rng.normal(0, 6, (h, w, 1))), 0, 255).astype(np.uint8), in8)
    assert set(rp.FIGURES) == set(clean) and "dark noise" in rp.FIGURES
    assert clean["dark noise"] < 0.5 and noisy["dark noise"] == pytest.approx(6, rel=0.15)


def test_skips_without_the_data(tmp_path, capsys) -> None:
    assert _module().main(["--data", str(tmp_path), "--model", "ruas-auto"]) == 0
    assert "skipped" in capsys.readouterr().out

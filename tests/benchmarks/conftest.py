"""Fixtures of the benchmark smoke tests: a generated stand-in of ../shared/data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def _image(rng: np.random.Generator, h: int, w: int, level: float) -> Image.Image:
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    base = 0.5 + 0.5 * np.sin(2 * np.pi * (rng.uniform(0.5, 2) * xx + rng.uniform(0.5, 2) * yy))[..., None]
    rgb = level * base * rng.uniform(0.6, 1.0, size=3) + rng.normal(0, 0.01, size=(h, w, 3))
    return Image.fromarray(np.clip(rgb * 255, 0, 255).round().astype(np.uint8))


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """The folders benchmarks/ablation.py and pareto.py read: training, paired dev sets, real photos."""
    root = tmp_path_factory.mktemp("shared_data")
    rng = np.random.default_rng(0)
    for folder, n, ext in (("sice_dark", 6, "jpg"), ("sice_mid", 4, "jpg"), ("lol/eval15_low", 3, "png")):
        (root / folder).mkdir(parents=True)
        for i in range(n):
            _image(rng, 48, 56, 0.2 if "mid" not in folder else 0.4).save(root / folder / f"{i}.{ext}")
    for folder in ("lol", "mit", "fivek_normal"):
        for side in ("low", "high"):
            (root / folder / side).mkdir(parents=True, exist_ok=True)
        for i in range(2):
            _image(rng, 36, 44, 0.15).save(root / folder / "low" / f"{i:05d}.png")
            _image(rng, 36, 44, 0.5).save(root / folder / "high" / f"{i:05d}.png")
    for folder, ext in (("real/LIME", "bmp"), ("real/MEF", "png")):
        (root / folder).mkdir(parents=True)
        for i in range(2):
            _image(rng, 30 + 4 * i, 40, 0.15).save(root / folder / f"{i}.{ext}")
    return root

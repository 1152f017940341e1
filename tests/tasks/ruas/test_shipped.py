"""The shipped RUAS models: weights load, cards exist and name the command that made them, the
config in each card's YAML is the config saved in the weights, and the card's figures are real."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from nasflow.run.checkpoint import load_safe
from nasflow.config import from_dict, to_dict
from nasflow.infer.inference import load_model
from nasflow.registries import MODELS
from nasflow.run.runner import load_run_config
from nasflow.schema import RunConfig

DATA = Path(__file__).resolve().parents[3].parent / "shared" / "data"
SHIPPED = ("ruas-lol", "ruas-mit", "ruas-auto", "ruas-fast")


def _card(name: str) -> str:
    path = MODELS.get(name).card_path()
    assert path is not None and path.is_file(), f"{name}: model card missing"
    return path.read_text(encoding="utf-8")


def _figures(card: str) -> dict[str, tuple[float, float]]:
    """``| set | PSNR / SSIM |`` rows of the card's 'nasflow' table."""
    rows = re.findall(r"^\| (lol|mit|fivek_normal) \| ([\d.]+) / ([\d.]+) \|", card, flags=re.M)
    return {s: (float(p), float(q)) for s, p, q in rows}


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_model_loads_and_enhances(name: str) -> None:
    enhancer = load_model(name, device="cpu")
    dark = np.full((9, 11, 3), 30, np.uint8)
    assert enhancer.enhance(dark).mean() > dark.mean()


@pytest.mark.parametrize("name", SHIPPED)
def test_card_names_its_command_and_config(name: str) -> None:
    card = _card(name)
    match = re.search(r"nasflow train (tasks/ruas/models/[\w.-]+\.yaml) --genotype (paper|tasks/ruas/models/[\w.-]+\.json)",
                      card)
    assert match, f"{name}: the card does not give the nasflow command that trained it"
    assert "never" in card.lower() and "evaluation" in card.lower()  # says what it was not trained on
    # the saved config read by today's schema: keys added since (with their defaults) filled in
    saved = to_dict(from_dict(RunConfig, load_safe(MODELS.get(name).path())["config"]))
    config = to_dict(load_run_config(Path(__file__).resolve().parents[3] / match.group(1),
                                     ["task_options.root=../shared/data"]))
    assert config == saved, f"{name}: the card's config differs from the one saved with the weights"
    if match.group(2) != "paper":  # a searched genotype: the file the card names is the one in the weights
        import json

        named = json.loads((Path(__file__).resolve().parents[3] / match.group(2)).read_text(encoding="utf-8"))
        assert load_safe(MODELS.get(name).path())["genotype"]["cells"] == named["cells"]
    assert set(_figures(card)) == {"lol", "mit", "fivek_normal"}


@pytest.mark.skipif(not (DATA / "mit" / "low").is_dir(), reason="../shared/data is absent")
@pytest.mark.parametrize("name", SHIPPED)
def test_card_figures_are_measured(name: str) -> None:
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "benchmarks"))
    from quality import score  # the benchmark's own scoring (the data README's protocol)

    enhancer = load_model(name, device="cpu")
    for set_name, (psnr, ssim) in _figures(_card(name)).items():
        measured_psnr, measured_ssim, _ = score(enhancer, DATA / set_name)
        assert abs(measured_psnr - psnr) < 0.02 and abs(measured_ssim - ssim) < 0.002, set_name

"""Tiny RUAS model files for tests (torch's default initialisation: realistic magnitudes)."""

from __future__ import annotations

from pathlib import Path

import torch


def ruas_model_file(path: Path, use_nrm: bool = True, seed: int = 0, name: str = "test-model",
                    exposure_key: float = 0.0) -> Path:
    """Write a model file of the compiled paper-genotype RUAS network to ``path``."""
    from nasflow.checkpoint import save_atomic
    from nasflow.tasks.ruas.model import paper_genotype
    from nasflow.tasks.ruas.official import run_config, target_network

    torch.manual_seed(seed)
    network = target_network(use_nrm)
    config = run_config(use_nrm)
    config["task_options"]["exposure_key"] = exposure_key  # a parameter-free step: same weights
    save_atomic({"state_dict": network.state_dict(), "genotype": paper_genotype(use_nrm).to_dict(),
                 "config": config, "meta": {"name": name}}, path)
    return path

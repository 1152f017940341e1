"""Tiny RUAS model files for tests (torch's default initialisation: realistic magnitudes)."""

from __future__ import annotations

from pathlib import Path

import torch


def ruas_model_file(path: Path, use_nrm: bool = True, seed: int = 0, name: str = "test-model",
                    exposure_key: float = 0.0) -> Path:
    """Write a model file of the compiled paper-genotype RUAS network to ``path``."""
    from nasflow.run.modelfile import model_payload, save_model_file
    from nasflow.tasks.ruas.model import paper_genotype
    from nasflow.tasks.ruas.official import run_config, target_network

    torch.manual_seed(seed)
    network = target_network(use_nrm)
    config = run_config(use_nrm)
    config["task_options"]["exposure_key"] = exposure_key  # a parameter-free step: same weights
    return save_model_file(model_payload(network.state_dict(), paper_genotype(use_nrm).to_dict(), config,
                                         {"name": name}), path)

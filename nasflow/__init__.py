"""nasflow: differentiable neural architecture search with pluggable search spaces."""

from nasflow.errors import ConfigError, GenotypeError, NasflowError, RegistryError, SpaceError
from nasflow.core.genotype import GenoEdge, Genotype

__version__ = "0.1.0"



def __getattr__(name: str):  # noqa: ANN202 - lazy, so that importing nasflow stays light
    if name == "load_model":
        from nasflow.infer.inference import load_model

        return load_model
    raise AttributeError(f"module 'nasflow' has no attribute {name!r}")


__all__ = [
    "ConfigError",
    "GenoEdge",
    "Genotype",
    "GenotypeError",
    "NasflowError",
    "RegistryError",
    "SpaceError",
    "load_model",
    "__version__",
]

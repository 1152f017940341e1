"""nasflow: differentiable neural architecture search with pluggable search spaces."""

from nasflow.errors import ConfigError, GenotypeError, NasflowError, RegistryError, SpaceError
from nasflow.genotype import GenoEdge, Genotype

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "GenoEdge",
    "Genotype",
    "GenotypeError",
    "NasflowError",
    "RegistryError",
    "SpaceError",
    "__version__",
]

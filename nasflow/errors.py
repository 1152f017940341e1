"""Exceptions that mean "the user gave us something wrong".

The CLI turns any :class:`NasflowError` into one line on stderr and exit code 2; everything
else is an internal failure (exit code 1).
"""

from __future__ import annotations


class NasflowError(Exception):
    """Base class of errors caused by user input (bad names, files, configs)."""


class RegistryError(NasflowError, LookupError):
    """An unknown or unloadable name in a registry."""


class GenotypeError(NasflowError, ValueError):
    """A malformed, inconsistent or incompatible genotype."""


class SpaceError(NasflowError, ValueError):
    """A search space or supernet used inconsistently (e.g. one label with two shapes)."""


class ConfigError(NasflowError, ValueError):
    """A bad configuration value; the message names the key path."""


def yaml_problem(exc: Exception) -> str:
    """One line saying where a YAML parse failed and why (PyYAML's own message spans lines)."""
    mark = getattr(exc, "problem_mark", None)
    where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    return f"{where}: {problem}"

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


class CheckpointError(NasflowError):
    """A checkpoint or model file that cannot be loaded, is refused, or does not fit the config."""


class StateDictMismatch(CheckpointError, ConfigError):
    """Saved weights (a checkpoint's, a model file's) that do not fit the network their config builds.

    One class for every such check: a :class:`CheckpointError`, so resume falls back to the
    previous checkpoint, and a :class:`ConfigError`, since the file was written with another
    config or genotype.
    """


class RunLockedError(NasflowError):
    """Another live nasflow process holds the run folder's lock."""


class TrainingDiverged(NasflowError):
    """A loss (or a weight) became NaN or infinite; the message names the step, the terms and a hint.

    The CLI exits with its own code (3, ``EXIT_DIVERGED``) so that scripts can retry with other
    settings; the last good checkpoint is kept.
    """


class OutputError(NasflowError):
    """The output location cannot take more files (read-only, full, no permission): stops a run."""


def yaml_problem(exc: Exception) -> str:
    """One line saying where a YAML parse failed and why (PyYAML's own message spans lines).

    Tags that would build Python objects (``!!python/object``, ``!!python/name``, ...) are named
    as refused: files are read with ``yaml.safe_load``, which never constructs them.
    """
    mark = getattr(exc, "problem_mark", None)
    where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    prefix = "could not determine a constructor for the tag "
    if problem.startswith(prefix):
        tag = problem[len(prefix):].strip()
        return f"{where}: the tag {tag} would construct a Python object; only plain data is read"
    return f"{where}: {problem}"

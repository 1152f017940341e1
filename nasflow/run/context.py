"""The one object a job's parts share: what to run, where, and what was found to resume.

:func:`nasflow.run.runner.run` fills it in stages (config and device, then the task and genotype,
then the run folder) and hands it on, instead of passing each part as an argument.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from tqdm import tqdm

from nasflow.core.genotype import Genotype
from nasflow.schema import RunConfig
from nasflow.search.distributed import DistContext
from nasflow.task import Task


@dataclass
class _Progress:
    quiet: bool

    def __call__(self, items: Iterable, desc: str, total: int | None = None) -> Any:
        disable = self.quiet or not sys.stderr.isatty()
        return tqdm(items, desc=desc, total=total, disable=disable, leave=False, dynamic_ncols=True)



@dataclass
class RunContext:
    """A job: its config, process group and options; then its task, genotype and run folder."""

    cfg: RunConfig
    dist: DistContext
    quiet: bool = False
    out: str | Path | None = None  # --out
    resume: str | Path | None = None  # --resume
    search_only: bool = False
    genotype: Genotype | None = None  # given: no search
    task: Task = None  # type: ignore[assignment]  # set by the runner before the folder is opened
    run_dir: Path = None  # type: ignore[assignment]  # set by nasflow.run.folder.open_run_folder
    state: dict[str, Any] | None = None  # the checkpoint resumed from
    notices: list[str] = field(default_factory=list)  # what the user is told once logging is set up

    @property
    def progress(self) -> _Progress:
        return _Progress(self.quiet)

"""Running a job: the run folder, search and train loops, checkpoints and resume, TensorBoard.

Lives here: the runner (``runner``), checkpoints, RNG state and the run lock (``checkpoint``),
TensorBoard logging (``tb``) and memory-format helpers (``layout``).

May import: :mod:`nasflow.search`, :mod:`nasflow.core`, :mod:`nasflow.task` and the base modules;
never :mod:`nasflow.infer`. Plugins (tasks, spaces, strategies) are reached only through
:mod:`nasflow.registries`, never imported by name.
"""

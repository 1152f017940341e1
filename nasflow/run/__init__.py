"""Running a job: the run folder, search and train loops, checkpoints and resume, TensorBoard.

Lives here, by job: the runner that drives a job's stages (``runner``) around one context
object (``context``); the run folder, its lock and what a resume continues from (``folder``);
the search loop (``search_loop``) and the train loop (``train_loop``); checkpoints, RNG state and
the lock file (``checkpoint``); the model file (``modelfile``); TensorBoard logging (``tb``) and
memory-format helpers (``layout``).

May import: :mod:`nasflow.search`, :mod:`nasflow.core`, :mod:`nasflow.task` and the base modules;
never :mod:`nasflow.infer`. Plugins (tasks, spaces, strategies) are reached only through
:mod:`nasflow.registries`, never imported by name.
"""

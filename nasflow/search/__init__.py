"""Searching: strategies that update weights and alphas, hypergradients, data-parallel averaging.

Lives here: the ``Strategy`` interface (``strategy``), the bilevel / cooperative group machinery
(``bilevel``), hypergradients (``hypergrad``) and the torch.distributed helpers that keep every
rank's alphas identical (``distributed``).

May import: :mod:`nasflow.core`, :mod:`nasflow.task` and the base modules (errors, registries,
config, schema, atomic); never :mod:`nasflow.run`, :mod:`nasflow.infer` or a plugin.
"""

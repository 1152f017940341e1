"""The NAS core: describe a search space, relax it, derive a genotype, compile it.

Lives here: candidate ops (``ops``), mixed ops and relaxations (``mixed``), cell DAGs (``graph``,
``cell``), search spaces (``space``), the supernet and its alphas (``supernet``), genotypes
(``genotype``), derivation rules (``derive``), compilation to a plain network (``compile``), FLOP
counting (``flops``) and genotype pictures (``viz``).

May import: :mod:`nasflow.errors`, :mod:`nasflow.registries`, :mod:`nasflow.config`,
:mod:`nasflow.atomic` and itself; never :mod:`nasflow.search`, :mod:`nasflow.run`,
:mod:`nasflow.infer` or a plugin (``tests/test_layering.py`` checks it).
"""

"""DARTS (Liu et al. 2019): one bilevel group over every alpha and every weight.

``search.hypergradient`` picks first order (eq. 6 with xi = 0) or second order
(``finite_difference``, eq. 7-8; ``exact_hvp``, double backprop).
"""

from __future__ import annotations

from nasflow.search.bilevel import BilevelStrategy


class DartsStrategy(BilevelStrategy):
    """Bilevel DARTS over all labels at once (first or second order)."""

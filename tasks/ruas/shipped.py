"""The RUAS models that ship with nasflow (weights and model cards in ``models/``).

Each was trained by nasflow itself, reference-free, on ``../shared/data`` training folders (never
on the evaluation pairs); its card gives the exact command and the measured metrics.
"""

from __future__ import annotations

from nasflow.infer.models import ShippedModel

_PACKAGE = "nasflow.tasks.ruas"

RUAS_LOL = ShippedModel(
    name="ruas-lol", package=_PACKAGE, file="models/ruas-lol.pt", card="models/ruas-lol.md",
    summary="RUAS IEM+NRM for very dark, noisy scenes (LOL-like); trained on LOL eval15 low-light inputs",
)
RUAS_MIT = ShippedModel(
    name="ruas-mit", package=_PACKAGE, file="models/ruas-mit.pt", card="models/ruas-mit.md",
    summary="RUAS IEM only for under-exposed photos (MIT-Adobe FiveK protocol); trained on dark SICE frames",
)
RUAS_AUTO = ShippedModel(
    name="ruas-auto", package=_PACKAGE, file="models/ruas-auto.pt", card="models/ruas-auto.md",
    summary="exposure-adaptive RUAS: brightens dark photos, leaves well-exposed ones nearly unchanged",
    tags=("default",),
)
RUAS_FAST = ShippedModel(
    name="ruas-fast", package=_PACKAGE, file="models/ruas-fast.pt", card="models/ruas-fast.md",
    summary="ruas-auto's behaviour on the cell nasflow's latency-aware search found: every IEM edge a skip connection",
)

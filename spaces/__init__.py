"""Search spaces shipped with nasflow (installed as ``nasflow.spaces``)."""

"""Search strategies shipped with nasflow (installed as ``nasflow.strategies``)."""

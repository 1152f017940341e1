"""Placeholder while developing."""
from nasflow.fastpath import fast_model


def fast_ruas(model, threads=None):
    f = fast_model(model, threads=threads)
    return lambda y: f(y).out

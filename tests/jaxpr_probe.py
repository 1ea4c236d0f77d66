"""Inspect the work a JAX function does: every traced equation and the size of its outputs.

Used to show that a partial force never builds an array whose size grows with N."""

import jax
import numpy as np


def equations_of(jaxpr):
    """Every equation of a jaxpr, descending into the jaxprs of nested calls."""
    for eqn in jaxpr.eqns:
        yield eqn
        for value in eqn.params.values():
            inner = getattr(value, "jaxpr", value)  # ClosedJaxpr or Jaxpr
            if hasattr(inner, "eqns"):
                yield from equations_of(inner)


def trace_sizes(function, *args):
    """The equations of `function` traced on `args` and the sizes of all their outputs and constants."""
    closed = jax.make_jaxpr(function)(*args)
    equations = list(equations_of(closed.jaxpr))
    sizes = [int(np.prod(v.aval.shape)) for eqn in equations for v in eqn.outvars]
    sizes += [int(np.prod(np.shape(c))) for c in closed.consts]
    return equations, sizes

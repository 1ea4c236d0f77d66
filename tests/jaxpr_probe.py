"""Inspect the work a JAX function does: every traced equation and the size of its outputs.

Used to show that a partial force never builds an array whose size grows with N."""

import jax
import numpy as np

from macroclosure.sampling import equations_of


def trace_sizes(function, *args):
    """The equations of `function` traced on `args` and the sizes of all their outputs and constants."""
    closed = jax.make_jaxpr(function)(*args)
    equations = list(equations_of(closed.jaxpr))
    sizes = [int(np.prod(v.aval.shape)) for eqn in equations for v in eqn.outvars]
    sizes += [int(np.prod(np.shape(c))) for c in closed.consts]
    return equations, sizes

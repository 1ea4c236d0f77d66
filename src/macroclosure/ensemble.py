"""Ensembles: K independently initialised copies of a latent model, trained as one.

The members' parameters are stacked (torch.func.stack_module_state) and every member is
applied to the same minibatch through torch.func.vmap, so K members cost one batched model
rather than K sequential ones. A single model is an ensemble of one.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from macroclosure.dynamics import build_model

MEMBER_STRIDE = 1000  # member m of seed s is initialised with seed s * MEMBER_STRIDE + m


def member_seed(seed: int, member: int) -> int:
    return seed * MEMBER_STRIDE + member


def build_members(name: str, dim: int, settings: dict, seed: int, count: int) -> list[nn.Module]:
    """`count` models, member m initialised from torch.manual_seed(member_seed(seed, m))."""
    members = []
    for member in range(count):
        torch.manual_seed(member_seed(seed, member))
        members.append(build_model(name, dim, settings))
    return members


class Stacked:
    """Stacked parameters of ensemble members and a way to apply all members at once."""

    def __init__(self, members: list[nn.Module]):
        self.params, self.buffers = stack_module_state(members)
        self.base = copy.deepcopy(members[0]).to("meta")
        self.count = len(members)

    def member_function(self, params: dict, buffers: dict):
        """The model of one member's (unstacked) parameters, as a function z -> dz/dt."""
        return lambda z: functional_call(self.base, (params, buffers), (z,))

    def map(self, per_member, params: dict | None = None):
        """[K, ...]: per_member(model) evaluated for every member, vectorised over members.

        A single member skips vmap, whose per-call overhead dominates for small models.
        """
        params = self.params if params is None else params
        if self.count == 1:
            first = {name: value[0] for name, value in (params | self.buffers).items()}
            return per_member(lambda z: functional_call(self.base, first, (z,)))[None]
        return vmap(lambda p, b: per_member(self.member_function(p, b)))(params, self.buffers)

    def state_dicts(self, params: dict | None = None) -> list[dict]:
        """One state_dict per member."""
        params = self.params if params is None else params
        return [
            {name: value[member].detach().clone() for name, value in (params | self.buffers).items()}
            for member in range(self.count)
        ]

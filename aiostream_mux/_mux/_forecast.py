"""Forecast a policy's next activations, so slow streams can start early.

With I/O-bound members, a freshly activated stream has nothing to give for a
while (its first sample is one latency away), and the consumer, bound to the
policy's order, waits. But a policy is pure: run a copy of it ahead, assuming
every active stream gives its whole sample budget, and it tells which members
will be activated next, with which budgets and seeds. The async driver starts
those activations early; when the real policy asks for an activation, the driver
takes the early one if it is the same, and otherwise drops every early start and
forecasts again. So forecasting changes *when* samples are produced, never
*which* come out: an activation is identified by its member, budget and seed.

A forecast is only possible when budgets are known (``rate`` given). It stops by
itself when it keeps being wrong (members that end before their budget).
"""

from __future__ import annotations

import copy
from collections import deque

from ._policy import Activation, ChildSeed, MuxPolicy

__all__ = ["Forecast", "same_activation"]


def _seed_key(seed: ChildSeed | None) -> object:
    if seed is None:
        return None
    return (seed.entropy, seed.spawn_key, seed.pool_size)


def same_activation(a: Activation, b: Activation) -> bool:
    """Tell whether two activations start the same stream in the same slot."""
    return (
        a.slot == b.slot
        and a.index == b.index
        and a.max_iter == b.max_iter
        and _seed_key(a.seed) == _seed_key(b.seed)
    )


class Forecast:
    """A copy of a policy, run ahead of the real one.

    Parameters
    ----------
    policy : MuxPolicy
        The real policy, between two steps; it is copied, not used.
    remaining : list of int or None
        For each slot, samples the real consumer may still take from it
        (``None``: no budget, which makes the future unpredictable).
    depth : int
        How many future activations to keep forecast.
    """

    def __init__(self, policy: MuxPolicy, remaining: list[int | None], depth: int) -> None:
        self._sim = copy.deepcopy(policy)
        self._remaining = list(remaining)
        self._depth = depth
        self.pending: deque[Activation] = deque()
        self.exhausted = False

    def extend(self, max_steps: int = 10_000) -> list[Activation]:
        """Forecast up to ``depth`` activations; return the ones new since the last call."""
        new: list[Activation] = []
        sim, remaining, pending = self._sim, self._remaining, self.pending
        steps = 0
        while len(pending) < self._depth and not self.exhausted and steps < max_steps:
            steps += 1
            slot = sim.next_slot()
            if slot is None:
                self.exhausted = True
                break
            left = remaining[slot]
            if left is None:
                self.exhausted = True
                break
            if left > 0:
                remaining[slot] = left - 1
                sim.on_item(slot)
                continue
            for activation in sim.on_exhausted(slot):
                remaining[activation.slot] = activation.max_iter
                pending.append(activation)
                new.append(activation)
        return new

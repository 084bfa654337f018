"""``ChainMux`` policy: run the members one after the other, as ``itertools.chain``.

The members may be a lazy iterable of streamers, unknown in advance, so the policy
works member by member. Its one slot (0) holds the current member's stream.
:attr:`Activation.index <aiostream_mux._mux._policy.Activation.index>` is the
position of the member *within the current pass*: ``index == 0`` tells the driver to
(re)start iterating the members, any other index to take the next member from the
iteration in progress. When that iteration has no member left, the driver calls
:meth:`ChainPolicy.on_members_exhausted` instead of opening a stream. Sync form::

    def open_(a):  # returns a stream, or None when there is no such member
        global members
        if a.index == 0:
            members = iter(make_members())  # list, or re-callable source of members
        member = next(members, None)
        return None if member is None else member.iterate()

    pending = policy.start()
    while pending:  # repeat the same after each on_exhausted()
        act = pending.pop()
        stream = open_(act)
        if stream is None:
            pending = policy.on_members_exhausted()
        else:
            streams[act.slot] = stream
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, cast, get_args

import numpy as np

from ._policy import Activation, SeedSpawner, check_choice

__all__ = ["ChainConfig", "ChainMode", "ChainPolicy", "validate_chain"]

ChainMode = Literal["exhaustive", "cycle"]
"""Stop after the last member, or start again from the first."""

_MODES: tuple[str, ...] = get_args(ChainMode)


@dataclass(frozen=True)
class ChainConfig:
    """Validated ``ChainMux`` parameters (see :func:`validate_chain`).

    Attributes
    ----------
    mode : {"exhaustive", "cycle"}
        Stop after one pass over the members, or restart from the first.
    """

    mode: ChainMode


def validate_chain(mode: object = "exhaustive") -> ChainConfig:
    """Check ``ChainMux`` arguments eagerly.

    An empty collection of members is allowed (as in pescador): the mux yields
    nothing.

    Parameters
    ----------
    mode : {"exhaustive", "cycle"}
        See :class:`ChainPolicy`.

    Returns
    -------
    ChainConfig

    Raises
    ------
    ConfigError
        For an unknown ``mode``.
    """
    return ChainConfig(mode=cast(ChainMode, check_choice("mode", mode, _MODES)))


class ChainPolicy:
    """Sans-I/O policy of ``ChainMux``: one member at a time, in order.

    Each member is run to exhaustion (no budget), then the next one is activated.
    When the members run out, ``"exhaustive"`` finishes and ``"cycle"`` starts a
    new pass from the first member.

    Termination: a cycling policy finishes when a whole pass gave no sample — all
    members empty, no members at all, or a one-shot iterable of members (such as a
    generator object) that yields nothing when iterated again. pescador loops
    forever in the first case and raises ``RuntimeError("generator raised
    StopIteration")`` in the other two; cycling a one-shot iterable thus gives one
    pass and ends cleanly. (pescador materialises any iterable of members into a
    list at construction, so only a generator *function* is lazy there; the mux
    decides what it materialises, this policy only sees passes.)

    Parameters
    ----------
    config : ChainConfig
        From :func:`validate_chain`.
    seed : numpy.random.SeedSequence or None
        Root of the per-activation child seeds; not mutated.
    """

    __slots__ = ("_config", "_done", "_member", "_pass_items", "_spawn", "_started", "n_slots")

    def __init__(self, config: ChainConfig, seed: np.random.SeedSequence | None = None) -> None:
        self.n_slots: int = 1
        self._config = config
        self._spawn = SeedSpawner(seed)
        self._member = 0
        self._pass_items = 0
        self._done = True
        self._started = False

    @property
    def config(self) -> ChainConfig:
        """The validated parameters."""
        return self._config

    @property
    def finished(self) -> bool:
        """Whether :meth:`next_slot` now returns ``None`` (after :meth:`start`)."""
        return self._started and self._done

    def start(self) -> list[Activation]:
        """Ask for the first member of a first pass; call once.

        Returns
        -------
        list of Activation
            ``[Activation(slot=0, index=0, ...)]``.
        """
        if self._started:
            raise RuntimeError("ChainPolicy.start() was already called")
        self._started = True
        return self._new_pass()

    def next_slot(self) -> int | None:
        """Return 0 while a member is running; ``None`` once the mux is finished."""
        return None if self._done else 0

    def on_item(self, slot: int) -> None:
        """Count a sample drawn from the current member."""
        self._pass_items += 1

    def on_exhausted(self, slot: int) -> list[Activation]:
        """Ask for the next member of the current pass.

        Returns
        -------
        list of Activation
            One activation, for slot 0, with ``index`` one more than before.
        """
        self._member += 1
        return [Activation(0, self._member, None, self._spawn())]

    def on_members_exhausted(self) -> list[Activation]:
        """Report that the member asked for last does not exist: the pass is over.

        Returns
        -------
        list of Activation
            ``[Activation(slot=0, index=0, ...)]`` to start a new pass (``"cycle"``
            mode, after a pass that gave samples), otherwise empty: finished.
        """
        if self._config.mode == "cycle" and self._pass_items:
            return self._new_pass()
        self._done = True
        return []

    def _new_pass(self) -> list[Activation]:
        self._member = 0
        self._pass_items = 0
        self._done = False
        return [Activation(0, 0, None, self._spawn())]

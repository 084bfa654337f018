"""``RoundRobinMux`` policy: one sample from each live stream in turn."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal, TypeVar, cast, get_args

import numpy as np

from .._streamer import Streamer
from ._base import DEFAULT_PREFETCH, BaseMux
from ._policy import (
    Activation,
    MuxPolicy,
    PolicyBase,
    Rng,
    check_choice,
    check_n_streams,
)

T = TypeVar("T")

__all__ = [
    "RoundRobinMux",
    "RoundRobinConfig",
    "RoundRobinMode",
    "RoundRobinPolicy",
    "validate_roundrobin",
]

RoundRobinMode = Literal["exhaustive", "cycle", "permuted_cycle"]
"""What happens once every stream has ended."""

_MODES: tuple[str, ...] = get_args(RoundRobinMode)


@dataclass(frozen=True)
class RoundRobinConfig:
    """Validated ``RoundRobinMux`` parameters (see :func:`validate_roundrobin`).

    Attributes
    ----------
    n_streams : int
        Number of streamers, >= 1.
    mode : {"exhaustive", "cycle", "permuted_cycle"}
        Stop after one pass, restart in order, or restart in a shuffled order.
    """

    n_streams: int
    mode: RoundRobinMode


def validate_roundrobin(n_streams: int, mode: object = "exhaustive") -> RoundRobinConfig:
    """Check ``RoundRobinMux`` arguments eagerly.

    Parameters
    ----------
    n_streams : int
        Number of streamers (``len(streamers)``).
    mode : {"exhaustive", "cycle", "permuted_cycle"}
        See :class:`RoundRobinPolicy`.

    Returns
    -------
    RoundRobinConfig

    Raises
    ------
    ConfigError
        Naming the offending parameter and value.
    """
    check_n_streams(n_streams)
    checked = cast(RoundRobinMode, check_choice("mode", mode, _MODES))
    return RoundRobinConfig(n_streams=n_streams, mode=checked)


class RoundRobinPolicy(PolicyBase[RoundRobinConfig]):
    """Sans-I/O policy of ``RoundRobinMux`` (pescador 3.0's algorithm).

    A *pass* activates every streamer, one per slot, and takes one sample from each
    live slot in turn, skipping slots whose stream has ended. When the last stream
    of a pass ends: ``"exhaustive"`` finishes; ``"cycle"`` starts a new pass in
    the original order; ``"permuted_cycle"`` starts a new pass in an order drawn
    with ``rng.shuffle`` (the first pass is always in the original order, as in
    pescador).

    Termination: a cycling policy also finishes when a whole pass ended without
    a single sample (every streamer was empty), where pescador loops forever;
    it does not shuffle again in that case.

    Parameters
    ----------
    config : RoundRobinConfig
        From :func:`validate_roundrobin`.
    rng : numpy.random.RandomState or numpy.random.Generator
        Used only by ``"permuted_cycle"``; a ``RandomState`` gives pescador's order.
    seed : numpy.random.SeedSequence or None
        Root of the per-activation child seeds; not mutated.
    """

    __slots__ = ("_active_index", "_live", "_n_live", "_pass_items")

    def __init__(
        self,
        config: RoundRobinConfig,
        rng: Rng,
        seed: np.random.SeedSequence | None = None,
    ) -> None:
        super().__init__(config, config.n_streams, rng, seed)
        self._active_index = 0
        self._live = [False] * config.n_streams
        self._n_live = 0
        self._pass_items = 0

    @property
    def finished(self) -> bool:
        """Whether :meth:`next_slot` now returns ``None`` (after :meth:`start`)."""
        return self._started and self._n_live == 0

    def start(self) -> list[Activation]:
        """Start the first pass, in the original order; call once.

        Returns
        -------
        list of Activation
            One per streamer, in slot order.
        """
        self._begin()
        return self._new_pass(permute=False)

    def next_slot(self) -> int | None:
        """Return the next live slot in turn; ``None`` once the mux is finished."""
        if self._n_live == 0:
            return None
        n = self.n_slots
        live = self._live
        idx = self._active_index
        following = idx + 1 if idx + 1 < n else 0
        while not live[idx]:
            idx = following
            following = idx + 1 if idx + 1 < n else 0
        self._active_index = following
        return idx

    def on_item(self, slot: int) -> None:
        """Count a sample drawn from ``slot``."""
        self._pass_items += 1

    def on_exhausted(self, slot: int) -> list[Activation]:
        """Retire ``slot``; at the end of a pass, maybe start the next one.

        Returns
        -------
        list of Activation
            Empty, or one activation per slot when a new pass starts.
        """
        if self._live[slot]:
            self._live[slot] = False
            self._n_live -= 1
        if self._n_live or self._config.mode == "exhaustive" or not self._pass_items:
            return []
        return self._new_pass(permute=self._config.mode == "permuted_cycle")

    def _new_pass(self, *, permute: bool) -> list[Activation]:
        """Activate every streamer, in order or shuffled (pescador's ``_setup_streams``)."""
        n = self.n_slots
        order = np.arange(n, dtype=int)
        if permute:
            self._rng.shuffle(order)
        self._active_index = 0
        self._live = [True] * n
        self._n_live = n
        self._pass_items = 0
        return [Activation(slot, int(order[slot]), None, self._spawn()) for slot in range(n)]


class RoundRobinMux(BaseMux[T]):
    """Take one sample from each streamer in turn.

    pescador's ``RoundRobinMux``. Streams that end drop out of the rotation.

    Parameters
    ----------
    streamers : iterable of Streamer or iterable
        The members; plain iterables are wrapped in :class:`Streamer`.
    mode : {"exhaustive", "cycle", "permuted_cycle"}
        When every stream has ended: stop (``"exhaustive"``), restart them all
        in the same order (``"cycle"``), or in a new random order
        (``"permuted_cycle"``). A whole round that gives nothing stops the mux
        (pescador loops forever there).
    random_state : None, int, numpy.random.RandomState or numpy.random.Generator
        Used by ``"permuted_cycle"``; ``None`` draws from numpy's global state.
    prefetch : int
        Samples each stream may buffer ahead (async members), >= 1.

    Raises
    ------
    ConfigError
        For any invalid parameter, naming it and its value.

    Examples
    --------
    >>> mux = RoundRobinMux([Streamer("ab"), Streamer("c"), Streamer("def")])
    >>> "".join(mux)
    'acdbef'
    >>> "".join(RoundRobinMux([Streamer("ab"), Streamer("c")], mode="cycle")(max_iter=7))
    'acbacba'
    """

    def __init__(
        self,
        streamers: Iterable[Streamer[T] | Iterable[T]],
        mode: RoundRobinMode = "exhaustive",
        random_state: int | np.random.RandomState | np.random.Generator | None = None,
        *,
        prefetch: int = DEFAULT_PREFETCH,
    ) -> None:
        super().__init__(streamers, random_state, prefetch=prefetch)
        self._config = validate_roundrobin(len(self.streamers), mode)
        self.mode: RoundRobinMode = self._config.mode

    def _make_policy(self, rng: Rng, seed: np.random.SeedSequence | None) -> MuxPolicy:
        return RoundRobinPolicy(self._config, rng, seed)

"""``ChainMux``: run the members one after the other, as ``itertools.chain``.

ChainMux needs no sans-I/O policy object: its order is its members' order. The
members may be lazy (a generator of Streamers, even an endless one), so the two
drivers here take them one by one; they only decide when a pass ends: after the
last member in ``"exhaustive"`` mode, and in ``"cycle"`` mode after a whole pass
that gave nothing (pescador loops forever there). The async driver starts the
next member while the current one runs.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypeVar, cast, get_args

import numpy as np

from .._engine import Run
from .._exceptions import ConfigError
from .._streamer import Streamer
from ._base import DEFAULT_PREFETCH, BaseMux, as_streamers, close_run, open_sync
from ._driver import (
    cancel_slots_now,
    check_can_spawn,
    close_slots,
    event_factory,
    failure_of,
    is_end,
    spawn_producer,
)
from ._policy import Activation, SeedSpawner, check_choice

if TYPE_CHECKING:
    import anyio.abc

T = TypeVar("T")

__all__ = ["ChainConfig", "ChainMode", "ChainMux", "validate_chain"]

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
        See :class:`ChainMux`.

    Returns
    -------
    ChainConfig

    Raises
    ------
    ConfigError
        For an unknown ``mode``.
    """
    return ChainConfig(mode=cast(ChainMode, check_choice("mode", mode, _MODES)))


class _Members:
    """A ChainMux's members, pass after pass; lazy iterables stay lazy.

    A list is read as it is; a callable (a generator function) is called anew
    for every pass; any other iterable (a generator object) is read lazily once
    and remembered, so later passes replay it — pescador turns such an iterable
    into a list up front, which would hang on an endless one.
    """

    def __init__(self, streamers: Any) -> None:
        self._lock = threading.Lock()
        self.known: list[Streamer[Any]] | None = None
        self._make: Callable[[], Iterable[Any]] | None = None
        self._source: Iterator[Any] | None = None
        self._cache: list[Streamer[Any]] = []
        if isinstance(streamers, (list, tuple)):
            self.known = as_streamers(streamers)
        elif callable(streamers) and not isinstance(streamers, Streamer):
            self._make = streamers
        elif isinstance(streamers, Iterable) and not isinstance(streamers, (str, bytes, Streamer)):
            self._source = iter(streamers)
        else:
            raise ConfigError(
                f"streamers={streamers!r} must be a list of Streamers, an iterable of "
                "Streamers, or a generator function yielding them"
            )

    def one_pass(self) -> Iterator[Streamer[Any]]:
        """Yield the members of one pass, as Streamers."""
        if self.known is not None:
            yield from self.known
            return
        if self._make is not None:
            for i, member in enumerate(self._make()):
                yield _as_member(member, i)
            return
        i = 0
        while True:
            with self._lock:
                if i < len(self._cache):
                    member = self._cache[i]
                else:
                    assert self._source is not None
                    raw = next(self._source, _NO_MEMBER)
                    if raw is _NO_MEMBER:
                        return
                    member = _as_member(raw, i)
                    self._cache.append(member)
            yield member
            i += 1

    def __getstate__(self) -> dict[str, Any]:
        if self._source is not None:
            raise TypeError("a ChainMux over a one-shot iterable of streamers cannot be pickled")
        state = self.__dict__.copy()
        del state["_lock"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()


_NO_MEMBER: Any = object()


def _as_member(member: Any, i: int) -> Streamer[Any]:
    if isinstance(member, Streamer):
        return member
    try:
        return Streamer(member)
    except ConfigError:
        raise ConfigError(f"streamers[{i}]={member!r} is not a Streamer or an iterable") from None


class ChainMux(BaseMux[T]):
    """Run the streamers one after the other, as :func:`itertools.chain` does.

    pescador's ``ChainMux``. ``streamers`` may be lazy: a generator of
    Streamers (read as it goes, even an endless one) or a generator function
    (called again at every pass). When members have async sources, the next
    member starts while the current one still runs, so its first samples are
    ready when it is its turn.

    Parameters
    ----------
    streamers : list, iterable or generator function of Streamer or iterable
        The members.
    mode : {"exhaustive", "cycle"}
        Stop after the last member, or start again from the first. A whole pass
        that gives nothing stops the mux (pescador loops forever there).
    random_state : None, int, numpy.random.RandomState or numpy.random.Generator
        Only seeds the child seeds given to members that are muxes themselves.
    prefetch : int
        Samples each stream may buffer ahead (async members), >= 1.

    Raises
    ------
    ConfigError
        For any invalid parameter, naming it and its value.

    Examples
    --------
    >>> "".join(ChainMux([Streamer("abc"), Streamer("de")]))
    'abcde'
    >>> "".join(ChainMux([Streamer("ab"), Streamer("c")], mode="cycle")(max_iter=7))
    'abcabca'
    >>> def shards():
    ...     for letter in "xyz":
    ...         yield Streamer(letter * 2)
    >>> "".join(ChainMux(shards()))
    'xxyyzz'
    """

    def __init__(
        self,
        streamers: Iterable[Streamer[T] | Iterable[T]] | Callable[[], Iterable[Streamer[T]]],
        mode: ChainMode = "exhaustive",
        random_state: int | np.random.RandomState | np.random.Generator | None = None,
        *,
        prefetch: int = DEFAULT_PREFETCH,
    ) -> None:
        self._config = validate_chain(mode)
        self._members = _Members(streamers)
        known = self._members.known
        super().__init__((), random_state, prefetch=prefetch, _members=known or [])
        if known is None:
            self.streamers = streamers  # type: ignore[assignment]  # as pescador: lazy
        self.mode: ChainMode = self._config.mode

    def __repr__(self) -> str:
        known = self._members.known
        size = f"{len(known)} streamers" if known is not None else "lazy streamers"
        return f"<ChainMux of {size}>"

    @property
    def n_streams(self) -> int:
        """Number of members; a ``TypeError`` when they are lazy."""
        known = self._members.known
        if known is None:
            raise TypeError("the members of this ChainMux are lazy; their number is unknown")
        return len(known)

    def _statistics_of(self, run: object) -> Any:
        raise TypeError("a ChainMux keeps no statistics: its members simply follow each other")

    def _is_async(self) -> bool:
        known = self._members.known
        return known is not None and any(member._is_async() for member in known)

    def _runs_sync(self) -> bool:
        # Not BaseMux's rule: with a ZMQStreamer among the members, the async driver
        # runs the chain (through the portal under a plain for), since it starts the
        # next member's worker while the current one still runs.
        return not self._is_async()

    def _start(
        self,
        seed: np.random.SeedSequence | None = None,
        task_group: anyio.abc.TaskGroup | None = None,
        prefer_async: bool = False,
    ) -> Run[T]:
        spawn = SeedSpawner(seed if seed is not None else self._root_seed)
        cycle = self.mode == "cycle"
        if self._is_async() or (prefer_async and self._members.known is None):
            return _ChainAsync(self._members, spawn, cycle, task_group, self.prefetch)
        return _chain_sync(self._members, spawn, cycle)


def _chain_sync(members: _Members, spawn: SeedSpawner, cycle: bool) -> Iterator[Any]:
    """Run the members one after the other; cycle until a pass gives nothing."""
    while True:
        got_any = False
        for index, member in enumerate(members.one_pass()):
            items, run = open_sync(member, Activation(0, index, None, spawn()))
            try:
                for item in items:
                    got_any = True
                    yield item
            finally:
                close_run(run)
        if not (cycle and got_any):
            return


class _ChainAsync:
    """The async chain: the next member's producer starts while the current one runs."""

    def __init__(
        self,
        members: _Members,
        spawn: SeedSpawner,
        cycle: bool,
        task_group: anyio.abc.TaskGroup | None,
        prefetch: int,
    ) -> None:
        self._members = members
        self._spawn = spawn
        self._cycle = cycle
        self._task_group = task_group
        self._prefetch = prefetch
        self._pass: Iterator[Streamer[Any]] | None = None
        self._index = 0
        self._got_any = False
        self._current: Any = None
        self._next: Any = None
        self._started = False
        self._finished = False

    def __aiter__(self) -> _ChainAsync:
        return self

    def _start_next(self) -> Any:
        """Start the next member of the pass (``None`` when the pass is over)."""
        assert self._pass is not None
        member = next(self._pass, None)
        if member is None:
            return None
        activation = Activation(0, self._index, None, self._spawn())
        self._index += 1
        return spawn_producer(member, activation, self._task_group, self._prefetch)

    def _new_pass(self) -> None:
        self._pass = self._members.one_pass()
        self._index = 0
        self._got_any = False
        self._current = self._start_next()
        self._next = self._start_next() if self._current is not None else None

    async def __anext__(self) -> Any:
        if not self._started:
            self._started = True
            check_can_spawn(self._task_group)
            self._new_pass()
        while not self._finished:
            slot = self._current
            if slot is None:  # the pass is over
                if self._cycle and self._got_any:
                    self._new_pass()
                    continue
                break
            buffer = slot.buffer
            while not buffer:
                slot.has_item = event = event_factory(self._task_group)()
                await event.wait()
            item = buffer.popleft()
            space = slot.has_space
            if space is not None and len(buffer) <= self._prefetch // 2:
                slot.has_space = None
                space.set()
            if is_end(item):
                await close_slots([slot])
                self._current = self._next
                self._next = self._start_next() if self._current is not None else None
                continue
            failure = failure_of(item)
            if failure is not None:
                await self.aclose()
                raise failure
            self._got_any = True
            return item
        await self.aclose()
        raise StopAsyncIteration

    async def aclose(self) -> None:
        """Cancel the producers and wait until each has closed its stream."""
        self._finished = True
        slots = [slot for slot in (self._current, self._next) if slot is not None]
        self._current = self._next = None
        await close_slots(slots)

    def __del__(self) -> None:
        cancel_slots_now([getattr(self, "_current", None), getattr(self, "_next", None)])

"""BaseMux: a Streamer whose source is a list of Streamers, run by a policy.

A mux's *policy* (see ``_policy.py``) decides which stream gives the next sample;
one of two drivers runs it:

- the sync driver, a plain generator, when every member is a sync source: it calls
  ``next()`` on the members directly, so pescador-style pipelines pay no event-loop
  round trip per sample, and an ``async for`` consumer runs it inline;
- the async driver (``_driver.py``) as soon as one member is async: each active
  stream gets a producer task with a bounded prefetch buffer, so slow, I/O-bound
  streams overlap. A sync consumer runs it on the background loop of the sync
  adapter.

Both drivers ask the same policy in the same order, so the sequence of samples is
the same whichever runs it, and whatever the latency of each stream.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from .._engine import Run
from .._exceptions import ConfigError
from .._streamer import Stream, Streamer
from ._policy import (
    MuxPolicy,
    Rng,
    fork_rng,
    normalize_random_state,
    seed_sequence_from,
)
from ._stats import Counters, MuxStatistics

if TYPE_CHECKING:
    import anyio.abc

    from ._policy import Activation

__all__ = [
    "DEFAULT_PREFETCH",
    "BaseMux",
    "as_streamers",
    "close_run",
    "member_seed",
    "open_sync",
]

T = TypeVar("T")

#: Samples each active stream of the async driver may prefetch.
DEFAULT_PREFETCH = 16


def as_streamers(streamers: Iterable[Any], name: str = "streamers") -> list[Streamer[Any]]:
    """Return the members as a list of Streamers, wrapping plain iterables as pescador does.

    Raises
    ------
    ConfigError
        If ``streamers`` is not iterable, or a member is not a Streamer or an iterable.
    """
    if isinstance(streamers, (str, bytes, Streamer)) or not isinstance(streamers, Iterable):
        raise ConfigError(f"{name}={streamers!r} must be a list of Streamers")
    members: list[Streamer[Any]] = []
    for i, member in enumerate(streamers):
        if isinstance(member, Streamer):
            members.append(member)
            continue
        try:
            members.append(Streamer(member))
        except ConfigError as exc:
            raise ConfigError(f"{name}[{i}]: {exc}") from None
    return members


def rng_from_seed(seed: np.random.SeedSequence, like: Rng) -> Rng:
    """Build a generator of the same kind as ``like`` from a child seed."""
    if isinstance(like, np.random.Generator):
        return np.random.Generator(type(like.bit_generator)(seed))
    return np.random.RandomState(np.random.MT19937(seed))


class BaseMux(Streamer[T]):
    """A Streamer over other Streamers; subclasses supply the policy.

    Parameters
    ----------
    streamers : iterable of Streamer or iterable
        The members; plain iterables are wrapped in :class:`Streamer`.
    random_state : None, int, numpy.random.RandomState or numpy.random.Generator
        ``None`` draws from numpy's global state, as pescador does.
    prefetch : int
        Samples each active stream may produce ahead of the consumer when the
        async driver runs (members with async sources), >= 1.
    """

    def __init__(
        self,
        streamers: Iterable[Streamer[T] | Iterable[T]],
        random_state: int | np.random.RandomState | np.random.Generator | None = None,
        *,
        prefetch: int = DEFAULT_PREFETCH,
        _members: list[Streamer[T]] | None = None,
    ) -> None:
        self.streamers: list[Streamer[T]] = (
            _members if _members is not None else as_streamers(streamers)
        )
        self.random_state = random_state
        self.rng = normalize_random_state(random_state)
        self._root_seed = seed_sequence_from(random_state)
        index = getattr(prefetch, "__index__", None)
        if isinstance(prefetch, bool) or index is None or index() < 1:
            raise ConfigError(f"prefetch={prefetch!r} must be an int >= 1")
        self.prefetch = int(index())
        # A Streamer's recipe fields, for repr and pickling.
        self.streamer = type(self).__name__
        self.args = ()
        self.kwargs = {}
        self._init_bookkeeping()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} of {len(self.streamers)} streamers>"

    @property
    def n_streams(self) -> int:
        """Number of member streamers."""
        return len(self.streamers)

    # -- what subclasses provide
    def _make_policy(self, rng: Rng, seed: np.random.SeedSequence | None) -> MuxPolicy:
        raise NotImplementedError

    def _member(self, activation: Activation) -> Streamer[T]:
        """Return the member an activation names (ChainMux overrides it)."""
        return self.streamers[activation.index]

    # -- activation
    def _uses_seed(self) -> bool:
        return True

    def _is_async(self) -> bool:
        return any(member._is_async() for member in self.streamers)

    def _runs_sync(self) -> bool:
        return all(member._runs_sync() for member in self.streamers)

    def _policy_for(self, seed: np.random.SeedSequence | None) -> MuxPolicy:
        if seed is not None:
            # Activated by a parent mux: a fresh generator per activation, so a
            # nested mux does not replay its first samples each time (pescador #131).
            return self._make_policy(rng_from_seed(seed, self.rng), seed)
        return self._make_policy(fork_rng(self.rng), self._root_seed)

    def _start(
        self,
        seed: np.random.SeedSequence | None = None,
        task_group: anyio.abc.TaskGroup | None = None,
        prefer_async: bool = False,
    ) -> Run[T]:
        policy = self._policy_for(seed)
        counters = Counters(len(self.streamers), policy.n_slots, self._targets())
        run: Run[T]
        if (prefer_async or not self._runs_sync()) and self._is_async():
            # Async members for an async consumer (each gets a task), or members
            # that need a loop even for a sync one (the Stream serves it through
            # a portal). Members that all run sync (ZMQStreamers among them) are
            # drawn from directly by the sync driver.
            from ._driver import AsyncMuxIterator

            run = AsyncMuxIterator(policy, self._member, task_group, self.prefetch, counters)
        else:
            run = _sync_driver(policy, self._member, counters)
        self._counters[run] = counters
        return run

    def _targets(self) -> Any:
        """Target share of each member (its normalised weight), or ``None``."""
        return getattr(self, "weights", None)

    def _statistics_of(self, run: object) -> MuxStatistics:
        counters: Counters | None = self._counters.get(run)
        if counters is None:
            raise RuntimeError("statistics appear once the stream has started")
        return counters.snapshot()


def member_seed(member: Streamer[Any], activation: Activation) -> np.random.SeedSequence | None:
    """Return the ``SeedSequence`` for an activation, built only if ``member`` uses it."""
    seed = activation.seed
    if seed is None or not member._uses_seed():
        return None
    return seed.sequence()


def open_sync(member: Streamer[T], activation: Activation) -> tuple[Iterator[T], object]:
    """Start ``member`` for a sync driver: (items limited to the budget, run to close)."""
    run = member._start(member_seed(member, activation), None, False)
    if hasattr(run, "__anext__"):
        # A callable that turned out async: the sync adapter serves it.
        stream = iter(Stream(_Started(member, run), max_iter=activation.max_iter))
        return stream, stream
    member._track(run)
    items: Iterator[T] = run
    if activation.max_iter is not None:
        items = itertools.islice(items, activation.max_iter)
    return items, run


class _Started(Streamer[T]):
    """A Streamer whose first run has already been started (handed over once)."""

    def __init__(self, member: Streamer[T], run: Run[T]) -> None:
        self.streamer, self.args, self.kwargs = member, (), {}
        self._run: Run[T] | None = run
        self._init_bookkeeping()

    def _start(
        self,
        seed: np.random.SeedSequence | None = None,
        task_group: anyio.abc.TaskGroup | None = None,
        prefer_async: bool = False,
    ) -> Run[T]:
        run, self._run = self._run, None
        if run is None:  # pragma: no cover - a budgeted activation never restarts
            raise RuntimeError("this activation was already started")
        return run


def _sync_driver(policy: MuxPolicy, member_of: Any, counters: Counters) -> Iterator[T]:
    """Run ``policy`` over sync members, calling ``next()`` on them directly.

    A run that ends its activation is retired at once. Runs of worker processes
    (ZMQStreamers) are asked to stop without waiting (``stop_nowait``) and closed
    once their worker is gone, or at the end, all together: one slow worker's
    stop does not hold up the next activation, nor the others' stops.
    """
    items: list[Iterator[T] | None] = [None] * policy.n_slots
    runs: list[object] = [None] * policy.n_slots
    stopping: list[Any] = []
    samples, slot_member = counters.samples, counters.slot_member

    def retire(slot: int) -> None:
        run, runs[slot], items[slot] = runs[slot], None, None
        if not stop_nowait(run):
            close_run(run)
            return
        stopping.append(run)
        for gone in [stopped for stopped in stopping if stopped.exited_nowait()]:
            stopping.remove(gone)
            gone.close()

    try:
        for activation in policy.start():
            counters.activated(activation)
            items[activation.slot], runs[activation.slot] = open_sync(
                member_of(activation), activation
            )
        next_slot, on_item, on_exhausted = policy.next_slot, policy.on_item, policy.on_exhausted
        while (slot := next_slot()) is not None:
            try:
                item = next(items[slot])  # type: ignore[arg-type]
            except StopIteration:
                counters.exhausted(slot)
                retire(slot)
                for activation in on_exhausted(slot):
                    if runs[activation.slot] is not None:
                        retire(activation.slot)
                    counters.activated(activation)
                    items[activation.slot], runs[activation.slot] = open_sync(
                        member_of(activation), activation
                    )
                continue
            on_item(slot)
            samples[slot_member[slot]] += 1
            yield item
    finally:
        for run in runs:
            stop_nowait(run)
        for run in [*stopping, *runs]:
            close_run(run)


def stop_nowait(run: object) -> bool:
    """Ask a run of a worker process to stop without waiting; False for other runs."""
    stop = getattr(run, "stop_nowait", None)
    if stop is None:
        return False
    stop()
    return True


def close_run(run: object) -> None:
    close = getattr(run, "close", None)
    if close is not None:
        close()

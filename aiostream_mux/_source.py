"""Opening sources for maps: any sync or async iterable, in the protocol asked for.

Shared by :mod:`aiostream_mux.maps` and the concurrent map.
"""

from __future__ import annotations

import reprlib
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Iterator
from typing import Any, TypeVar

import anyio.abc
import anyio.lowlevel
import numpy as np

from ._engine import CHECKPOINT_EVERY, Run, _from_sync
from ._exceptions import ConfigError
from ._streamer import Stream, Streamer, _run_of, derived_stream

__all__ = [
    "Source",
    "_close_sync",
    "_derive",
    "_int_at_least",
    "_name",
    "_open",
    "_rng",
    "_short",
]

T = TypeVar("T")
U = TypeVar("U")

Source = Iterable[T] | AsyncIterable[T]

_repr = reprlib.Repr()
_repr.maxstring = _repr.maxother = 60
_short = _repr.repr


# -- checks, run eagerly at the call


def _int_at_least(name: str, value: object, low: int) -> int:
    if not isinstance(value, bool):
        try:
            as_int = value.__index__()  # type: ignore[attr-defined]  # int, numpy integers
        except (AttributeError, TypeError):
            pass
        else:
            if as_int >= low:
                return int(as_int)
    raise ConfigError(f"{name}={value!r} must be an int >= {low}")


def _rng(random_state: object) -> np.random.RandomState | np.random.Generator:
    if random_state is None:
        return np.random.default_rng()
    if isinstance(random_state, (np.random.RandomState, np.random.Generator)):
        return random_state
    if not isinstance(random_state, bool):
        try:
            return np.random.RandomState(random_state.__index__())  # type: ignore[attr-defined]
        except (AttributeError, TypeError, ValueError):
            pass
    raise ConfigError(
        f"random_state={random_state!r} must be None, an int >= 0, "
        "a numpy.random.Generator or a numpy.random.RandomState"
    )


# -- plumbing shared by the maps


def _name(function: str, stream: object, *rest: object) -> str:
    return f"{function}({', '.join(_short(x) for x in (stream, *rest))})"


def _open(
    stream: Source[T], prefer_async: bool, task_group: anyio.abc.TaskGroup | None = None
) -> Run[T]:
    """Start one run of ``stream`` in the protocol asked for, when it speaks both.

    A Streamer is started directly rather than through a Stream of its own, to
    save a layer per item: for an async consumer, a Streamer over a sync source
    then hands back its sync iterator, which the async side of a map reads
    inline; for a sync consumer, an async source goes through the portal.
    """
    if isinstance(stream, Streamer):
        run = stream._start(None, task_group, prefer_async)
        stream._track(run)
        if not prefer_async and isinstance(run, AsyncIterator):
            from ._sync import PortalIterator

            return PortalIterator(lambda: run)
        return run
    if isinstance(stream, Stream) and task_group is not None and stream._unstarted():
        stream._task_group = stream._task_group or task_group
    return _run_of(stream, prefer_async)


def _derive(
    name: str,
    stream: Source[T],
    sync_body: Callable[[Iterator[T]], Iterator[U]],
    async_body: Callable[[AsyncIterator[T]], AsyncIterator[U]],
    every: int = CHECKPOINT_EVERY,
) -> Stream[U]:
    """Return a Stream applying ``sync_body`` or ``async_body`` to a run of ``stream``.

    Both bodies close the run they are given when they end or are closed.
    """

    def make_sync() -> Iterator[U]:
        run = _open(stream, False)
        assert isinstance(run, Iterator), "a sync run was asked for"
        return sync_body(run)

    def make_async(task_group: anyio.abc.TaskGroup | None = None) -> AsyncIterator[U]:
        run = _open(stream, True, task_group)
        if isinstance(run, AsyncIterator):
            return async_body(run)
        items = sync_body(run)
        return _from_sync(items, items, every)

    is_sync = isinstance(stream, Iterable)
    is_async = isinstance(stream, AsyncIterable)
    if not (is_sync or is_async):
        raise ConfigError(f"stream={_short(stream)} is neither iterable nor async iterable")
    return derived_stream(name, make_sync if is_sync else None, make_async if is_async else None)


def _close_sync(run: Iterator[Any]) -> None:
    close = getattr(run, "close", None)
    if close is not None:
        close()

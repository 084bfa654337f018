"""The iterators behind a Stream: one run of a source, limited, cycled, closed.

A :class:`~aiostream_mux.Stream` picks one of these for the protocol it is used
with: sync runs are served to ``for`` with C-level ``itertools`` wherever
possible, and to ``async for`` inline with a checkpoint every few items; async
runs are served to ``async for`` as they are when nothing is added per item.
"""

from __future__ import annotations

import inspect
import itertools
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
import anyio.lowlevel

from ._exceptions import ConfigError

if TYPE_CHECKING:
    import anyio.abc
    import numpy as np

    from ._streamer import Streamer

__all__ = [
    "CHECKPOINT_EVERY",
    "Run",
    "_async_engine",
    "_close_async_now",
    "_close_run",
    "_empty",
    "_is_async_run",
    "_sync_engine",
]

T = TypeVar("T")

#: A sync source consumed by ``async for`` yields to the event loop this often.
CHECKPOINT_EVERY = 64

Run = Iterator[T] | AsyncIterator[T]


def _is_async_run(run: object) -> bool:
    return hasattr(run, "__anext__")


class _RunHolder:
    """The run a Stream is currently reading, so ``close()`` can reach it."""

    __slots__ = ("run",)

    def __init__(self) -> None:
        self.run: Any = None


def _sync_runs(streamer: Streamer[T], first: Iterator[T], holder: _RunHolder) -> Iterator[T]:
    """Yield every item of ``first``, then of fresh runs, until a run yields nothing."""
    run: Iterator[T] | None = first
    while run is not None:
        holder.run = run
        marker: Any = _EMPTY
        for marker in run:
            yield marker
            yield from run
        if marker is _EMPTY:
            return
        started = streamer._start(None, None, False)
        if _is_async_run(started):
            raise ConfigError(f"{streamer!r} switched from a sync to an async source between runs")
        run = started  # type: ignore[assignment]
        streamer._track(run)


_EMPTY: Any = object()


def _sync_engine(
    streamer: Streamer[T], first: Iterator[T], max_iter: int | None, cycle: bool
) -> Iterator[T]:
    """Build the sync iterator of one Stream: the run, limited, cycled, closed at the end."""
    holder = _RunHolder()
    holder.run = first
    items: Iterator[T] = _sync_runs(streamer, first, holder) if cycle else first
    if max_iter is not None:
        items = itertools.islice(items, max_iter)
    try:
        yield from items
    finally:
        close = getattr(holder.run, "close", None)
        if close is not None:
            close()


async def _from_sync(
    items: Iterator[T], run: Iterator[T], every: int = CHECKPOINT_EVERY
) -> AsyncIterator[T]:
    """Serve ``items`` (drawn from ``run``) to ``async for``; close ``run`` at the end.

    Yields to the event loop every ``every`` items.
    """
    try:
        n = 0
        for item in items:
            yield item
            n += 1
            if n == every:
                n = 0
                await anyio.lowlevel.checkpoint()
    finally:
        close = getattr(run, "close", None)
        if close is not None:
            close()


async def _limit(run: AsyncIterator[T], max_iter: int) -> AsyncIterator[T]:
    """At most ``max_iter`` (> 0) items of an async run; closes the run at the end."""
    try:
        async for item in run:
            yield item
            max_iter -= 1
            if not max_iter:
                return
    finally:
        with anyio.CancelScope(shield=True):  # a source's cleanup may await
            await _close_run(run)


async def _async_cycle(
    streamer: Streamer[T],
    first: AsyncIterator[T],
    max_iter: int | None,
    seed: np.random.SeedSequence | None,
    task_group: anyio.abc.TaskGroup | None,
) -> AsyncIterator[T]:
    """Async runs one after another until ``max_iter`` items, or a run yields nothing."""
    remaining = max_iter
    run: AsyncIterator[T] = first
    while True:
        got_any = False
        try:
            async for item in run:
                got_any = True
                yield item
                if remaining is not None:
                    remaining -= 1
                    if not remaining:
                        return
        finally:
            with anyio.CancelScope(shield=True):  # a source's cleanup may await
                await _close_run(run)
        if not got_any:
            return
        started = streamer._start(seed, task_group, True)
        if not _is_async_run(started):
            raise ConfigError(f"{streamer!r} switched from an async to a sync source between runs")
        run = started  # type: ignore[assignment]
        streamer._track(run)


def _async_engine(
    streamer: Streamer[T],
    first: Run[T],
    max_iter: int | None,
    cycle: bool,
    seed: np.random.SeedSequence | None,
    task_group: anyio.abc.TaskGroup | None,
) -> AsyncIterator[T]:
    """Build the async iterator of one Stream: any run, limited, cycled, closed at the end."""
    if not isinstance(first, AsyncIterator):
        if cycle:
            items = _sync_engine(streamer, first, max_iter, cycle)
            return _from_sync(items, items)
        if max_iter is not None:
            return _from_sync(itertools.islice(first, max_iter), first)
        return _from_sync(first, first)
    if cycle:
        return _async_cycle(streamer, first, max_iter, seed, task_group)
    if max_iter is not None:
        return _limit(first, max_iter)
    if inspect.isasyncgen(first):
        return first  # type: ignore[return-value]  # the fast path: nothing to add per item
    return _limit_none(first)


async def _limit_none(run: AsyncIterator[T]) -> AsyncIterator[T]:
    """Wrap an async iterator that is not an async generator, to close it at the end.

    The close is shielded from cancellation, since a source's cleanup may await,
    unless the run's class says its close copes with being cancelled itself
    (``_close_copes_with_cancellation``, a ZMQStreamer's run): a cancel scope
    costs a short run a measurable part of its time.
    """
    try:
        async for item in run:
            yield item
    finally:
        if getattr(type(run), "_close_copes_with_cancellation", False):
            await _close_run(run)
        else:
            with anyio.CancelScope(shield=True):
                await _close_run(run)


async def _close_run(run: object) -> None:
    aclose = getattr(run, "aclose", None)
    if aclose is not None:
        await aclose()
        return
    close = getattr(run, "close", None)
    if close is not None:
        close()


def _close_async_now(ait: AsyncIterator[Any]) -> None:
    """Close an async iterator from sync code, when that needs no awaiting."""
    aclose = getattr(ait, "aclose", None)
    if aclose is None:
        return
    closing = aclose()
    try:
        closing.send(None)
    except StopIteration:
        return
    closing.close()
    raise RuntimeError(
        "this Stream is consumed with 'async for': close it with 'await stream.aclose()'"
    )


async def _empty() -> AsyncIterator[Any]:
    return
    yield  # pragma: no cover

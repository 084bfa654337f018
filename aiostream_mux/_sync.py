"""The sync driver's bridge: run an async iterator on a background event loop.

A sync consumer (``for x in stream``) of an async source cannot await, and the
calling thread may already run an event loop (Jupyter), where ``asyncio.run``
fails. So the async side runs on a private event loop in a daemon thread, behind
an anyio :class:`~anyio.from_thread.BlockingPortal`. A producer task there pulls
items ahead of the consumer, up to ``prefetch`` items, and the consumer takes
every item that is ready in one hand-over, so the cost of crossing threads is
paid per batch, not per item.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import threading
import weakref
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import Future
from typing import Any, Generic, TypeVar

import anyio
from anyio.from_thread import BlockingPortal

__all__ = ["PortalIterator", "start_portal"]

T = TypeVar("T")

#: Items a background producer may run ahead of a sync consumer.
DEFAULT_PREFETCH = 256


class _PortalThread:
    """An event loop in a daemon thread, reachable through a blocking portal."""

    def __init__(self) -> None:
        started: Future[BlockingPortal] = Future()

        async def serve() -> None:
            async with BlockingPortal() as portal:
                started.set_result(portal)
                await portal.sleep_until_stopped()

        def run() -> None:
            try:
                anyio.run(serve)
            except BaseException as exc:  # pragma: no cover - loop failed to start
                if not started.done():
                    started.set_exception(exc)

        self._thread = threading.Thread(target=run, name="aiostream_mux-portal", daemon=True)
        self._thread.start()
        self.portal = started.result()

    def stop(self) -> None:
        """Stop the loop, cancelling what still runs, and join the thread."""
        if threading.current_thread() is self._thread:  # pragma: no cover - defensive
            return
        with contextlib.suppress(RuntimeError):  # RuntimeError: already stopped
            self.portal.call(self.portal.stop, True)
        self._thread.join()


def start_portal() -> _PortalThread:
    """Start a private event loop in a daemon thread and return its handle."""
    return _PortalThread()


class _Channel(Generic[T]):
    """State shared by the producer task and the consumer thread.

    ``items`` is a deque: ``append`` and ``popleft`` are atomic, so the hot path
    takes no lock. The condition is used only when the consumer finds nothing
    to take and has to sleep. The producer task holds only this object, never
    the consumer-facing iterator, so dropping the iterator lets it be collected
    and closed.
    """

    def __init__(self, prefetch: int) -> None:
        self.items: deque[T] = deque()
        self.prefetch = prefetch
        self.cond = threading.Condition(threading.Lock())
        self.consumer_waiting = False
        self.finished = False
        self.error: BaseException | None = None
        self.closing = False
        self.loop: asyncio.AbstractEventLoop | None = None
        # Set while the producer waits for the consumer to make room.
        self.parked: asyncio.Event | None = None
        self.scope: anyio.CancelScope | None = None

    async def produce(self, make: Callable[[], AsyncIterator[T]]) -> None:
        """Pull from the async iterator ``make()`` into ``items`` (runs on the portal loop)."""
        self.loop = asyncio.get_running_loop()
        items, prefetch, cond = self.items, self.prefetch, self.cond
        source = make()
        try:
            with anyio.CancelScope() as scope:
                self.scope = scope
                async for item in source:
                    items.append(item)
                    if self.consumer_waiting:
                        self.consumer_waiting = False
                        with cond:
                            cond.notify()
                    if len(items) >= prefetch:
                        event = asyncio.Event()
                        with cond:
                            self.parked = event
                            cond.notify_all()  # lets observers see the parked state
                        # Re-check: the consumer may have drained before seeing ``parked``.
                        if len(items) >= prefetch and not self.closing:
                            await event.wait()
                        self.parked = None
                    if self.closing:
                        break
        except Exception as exc:
            self.error = exc
        finally:
            try:
                with anyio.CancelScope(shield=True):
                    aclose = getattr(source, "aclose", None)
                    if aclose is not None:
                        await aclose()
            except Exception as exc:  # raised by the source while closing
                if self.error is None and not self.closing:
                    self.error = exc
            finally:
                with cond:
                    self.finished = True
                    cond.notify()

    def wake_producer(self) -> None:
        """Let a producer parked on a full buffer go on (consumer thread)."""
        event, loop = self.parked, self.loop
        if event is not None and loop is not None:
            self.parked = None
            loop.call_soon_threadsafe(event.set)

    def stop(self) -> None:
        """Ask the producer to stop (runs on the portal loop).

        A producer parked on a full buffer leaves its loop and closes the source
        politely (``aclose``: ``GeneratorExit`` at its ``yield``); one busy inside
        the source is cancelled there.
        """
        self.closing = True
        if self.parked is not None:
            self.parked.set()
        elif self.scope is not None:
            self.scope.cancel()


_live: weakref.WeakSet[PortalIterator[Any]] = weakref.WeakSet()


@atexit.register
def _close_live_iterators() -> None:  # pragma: no cover - runs at interpreter exit
    for it in list(_live):
        it.close()


class PortalIterator(Generic[T]):
    """A sync iterator over an async iterator that runs on a private event loop.

    Parameters
    ----------
    make : callable
        Returns the async iterator; called on the background loop.
    prefetch : int
        Items the producer may run ahead of the consumer.
    """

    def __init__(
        self, make: Callable[[], AsyncIterator[T]], prefetch: int = DEFAULT_PREFETCH
    ) -> None:
        self._channel: _Channel[T] = _Channel(prefetch)
        self._items = self._channel.items
        self._popleft = self._items.popleft
        self._loop: _PortalThread | None = start_portal()
        self._done: Future[None] | None = self._loop.portal.start_task_soon(
            self._channel.produce, make
        )
        _live.add(self)

    def __iter__(self) -> Iterator[T]:
        return self

    def __next__(self) -> T:
        try:
            return self._popleft()
        except IndexError:
            return self._refill()

    def _refill(self) -> T:
        channel = self._channel
        items = self._items
        with channel.cond:
            try:
                while not items and not channel.finished:
                    channel.consumer_waiting = True
                    channel.wake_producer()
                    channel.cond.wait()
            finally:
                channel.consumer_waiting = False
        if items:
            return items.popleft()
        self.close()
        error, channel.error = channel.error, None
        if error is not None:
            raise error
        raise StopIteration

    def close(self) -> None:
        """Stop the producer, close the source and stop the background loop."""
        loop, self._loop = self._loop, None
        if loop is None:
            return
        _live.discard(self)
        try:
            loop.portal.call(self._channel.stop)
            if self._done is not None:
                self._done.exception()  # wait; the source's errors are in the channel
        finally:
            loop.stop()
        self._items.clear()

    def __del__(self) -> None:
        self.close()

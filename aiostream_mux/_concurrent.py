"""map_concurrent: apply an I/O-bound function with bounded concurrency.

Re-exported by :mod:`aiostream_mux.maps` and at the top level.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections import deque
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
)
from typing import Any, Generic, TypeVar, overload

import anyio
import anyio.abc
import anyio.lowlevel
import anyio.to_thread
import numpy as np

from ._engine import CHECKPOINT_EVERY, Run, _close_run
from ._exceptions import ConfigError, UnsupportedBackendError
from ._source import Source, _int_at_least, _name, _open, _short
from ._streamer import Stream, _Derived

__all__ = ["map_concurrent"]

T = TypeVar("T")
U = TypeVar("U")


# -- map_concurrent


class _Call:
    """One call of the mapped function: its cancel scope and outcome."""

    __slots__ = ("done", "error", "scope", "value")

    def __init__(self) -> None:
        self.scope = anyio.CancelScope()
        self.done = False
        self.value: Any = None
        self.error: BaseException | None = None


class _Calls:
    """The calls in flight, shared by their tasks and the consumer.

    The tasks hold this object, never the consumer-facing iterator, so dropping
    the iterator lets it be collected and its finaliser cancel them.
    """

    def __init__(self, ordered: bool) -> None:
        self.ordered = ordered
        #: Calls started and not yet handed out, oldest first.
        self.pending: deque[_Call] = deque()
        #: Unordered mode: finished calls, in completion order.
        self.ready: deque[_Call] = deque()
        self.running = 0
        self.failed = False
        self.wake: anyio.Event | None = None
        self.idle: anyio.Event | None = None
        self.loop: asyncio.AbstractEventLoop | None = None

    async def run(self, call: _Call, invoke: Callable[[], Awaitable[Any]]) -> None:
        """Run one call in its own task; record its outcome, never raise it.

        ``running`` was counted up when the task was started, so closing waits
        even for a task that has not run yet.
        """
        try:
            with call.scope:
                try:
                    call.value = await invoke()
                except Exception as exc:
                    call.error = exc
                call.done = True
        finally:
            if not call.done and not call.scope.cancel_called:
                call.error = RuntimeError("map_concurrent: a call was cancelled from outside")
                call.done = True
            self.running -= 1
            if call.done:
                self._finished(call)
            if self.idle is not None and not self.running:
                self.idle.set()

    def _finished(self, call: _Call) -> None:
        if call.error is not None and not self.failed:
            self.failed = True  # start no new call; cancel those that cannot come out now
            later = False
            for other in self.pending:
                if other is call:
                    later = True
                elif later or not self.ordered:
                    other.scope.cancel()
        if not self.ordered:
            self.ready.append(call)
        if self.wake is not None and (not self.ordered or call is self.pending[0]):
            self.wake.set()

    def next_out(self) -> _Call | None:
        """Return the call whose outcome comes out next, if it has finished."""
        if self.ordered:
            if self.pending and self.pending[0].done:
                return self.pending.popleft()
            return None
        if self.ready:
            call = self.ready.popleft()
            self.pending.remove(call)
            return call
        return None

    def cancel_all(self) -> None:
        for call in self.pending:
            call.scope.cancel()


class _ConcurrentMap(Generic[T, U]):
    """The async iterator behind :func:`map_concurrent`.

    It owns its tasks: plain asyncio tasks on the consumer's loop, or tasks in
    a task group when one is given (``task_group=``, or the group of an
    ``open()`` block once Streamer hands it to the Streams its sources return). The
    source is read by the consumer's task, in ``__anext__``, and closed there
    too. No cancel scope stays open between two ``__anext__`` calls.
    """

    def __init__(
        self,
        stream: Source[T],
        fn: Callable[[T], Any],
        concurrency: int,
        ordered: bool,
        is_async: bool,
        task_group: anyio.abc.TaskGroup | None,
    ) -> None:
        self._stream = stream
        self._fn = fn
        self._concurrency = concurrency
        self._is_async = is_async
        self._task_group = task_group
        self._calls = _Calls(ordered)
        self._run: Run[T] | None = None
        self._limiter: anyio.CapacityLimiter | None = None
        self._source_done = False
        self._source_error: BaseException | None = None
        self._finished = False
        self._since_checkpoint = 0

    def __aiter__(self) -> _ConcurrentMap[T, U]:
        return self

    def _start(self) -> None:
        if self._task_group is None:
            try:
                self._calls.loop = asyncio.get_running_loop()
            except RuntimeError:
                raise UnsupportedBackendError(
                    "map_concurrent starts its calls as asyncio tasks unless it is given "
                    "a task group; outside asyncio (trio), pass one: 'async with "
                    "anyio.create_task_group() as tg: async for y in "
                    "map_concurrent(stream, fn, task_group=tg): ...'"
                ) from None
        if not self._is_async:
            self._limiter = anyio.CapacityLimiter(self._concurrency)
        self._run = _open(self._stream, True, self._task_group)

    def _invoke(self, item: T) -> Callable[[], Awaitable[Any]]:
        fn, limiter = self._fn, self._limiter
        if limiter is None:

            async def call_async() -> Any:
                return await fn(item)

            return call_async

        async def call_in_thread() -> Any:
            result = await anyio.to_thread.run_sync(fn, item, limiter=limiter)
            if inspect.isawaitable(result):  # a plain function that returned a coroutine
                result = await result
            return result

        return call_in_thread

    def _spawn(self, item: T) -> None:
        calls = self._calls
        call = _Call()
        calls.pending.append(call)
        invoke = self._invoke(item)
        calls.running += 1
        if self._task_group is not None:
            self._task_group.start_soon(calls.run, call, invoke)
        else:
            assert calls.loop is not None
            calls.loop.create_task(calls.run(call, invoke))

    async def _fill(self) -> None:
        """Read the source until ``concurrency`` calls are pending, or it ends or fails."""
        calls, run = self._calls, self._run
        while not self._source_done and not calls.failed:
            if len(calls.pending) >= self._concurrency:
                return
            try:
                if isinstance(run, AsyncIterator):
                    item = await run.__anext__()
                else:
                    assert run is not None
                    item = next(run)
            except (StopIteration, StopAsyncIteration):
                self._source_done = True
            except Exception as exc:  # raised after the items before it are out
                self._source_done = True
                self._source_error = exc
            else:
                self._spawn(item)

    async def __anext__(self) -> U:
        if self._finished:
            raise StopAsyncIteration
        if self._run is None:
            self._start()
        await self._fill()
        calls = self._calls
        while True:
            call = calls.next_out()
            if call is not None:
                if call.error is not None:
                    error = call.error
                    try:
                        await self._shutdown()
                        raise error
                    finally:
                        del error, call  # no cycle through the traceback
                self._since_checkpoint += 1
                if self._since_checkpoint == CHECKPOINT_EVERY:
                    self._since_checkpoint = 0
                    await anyio.lowlevel.checkpoint()
                return call.value  # type: ignore[no-any-return]
            if not calls.pending:
                source_error, self._source_error = self._source_error, None
                await self._shutdown()
                if source_error is None:
                    raise StopAsyncIteration
                try:
                    raise source_error
                finally:
                    del source_error
            calls.wake = anyio.Event()
            try:
                await calls.wake.wait()
            finally:
                calls.wake = None
            self._since_checkpoint = 0

    async def _shutdown(self) -> None:
        """Cancel the calls, wait for them to end, and close the source."""
        self._finished = True
        calls = self._calls
        calls.failed = True
        calls.cancel_all()
        with anyio.CancelScope(shield=True):
            if calls.running:
                calls.idle = anyio.Event()
                await calls.idle.wait()
            calls.pending.clear()
            calls.ready.clear()
            run, self._run = self._run, None
            if run is not None:
                await _close_run(run)

    async def aclose(self) -> None:
        """Cancel every call in flight, wait for them, and close the source."""
        if not self._finished:
            await self._shutdown()

    def __del__(self) -> None:
        calls = self._calls
        if self._finished or not calls.pending or calls.loop is None:
            return
        with contextlib.suppress(RuntimeError):  # RuntimeError: the loop is closed
            calls.loop.call_soon_threadsafe(calls.cancel_all)


class _MapStreamer(_Derived[U]):
    """The recipe inside a :func:`map_concurrent` Stream: hands on the task group."""

    def __init__(
        self, name: str, make: Callable[[anyio.abc.TaskGroup | None], _ConcurrentMap[Any, U]]
    ) -> None:
        super().__init__(name, None, make)
        self._make = make

    def _start(
        self,
        seed: np.random.SeedSequence | None = None,
        task_group: anyio.abc.TaskGroup | None = None,
        prefer_async: bool = False,
    ) -> Run[U]:
        return self._make(task_group)


def _is_async_callable(fn: object) -> bool:
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004  # an instance with an async __call__
    )


@overload
def map_concurrent(
    stream: Source[T],
    fn: Callable[[T], Awaitable[U]],
    *,
    concurrency: int = 8,
    ordered: bool = True,
    task_group: anyio.abc.TaskGroup | None = None,
) -> Stream[U]: ...
@overload
def map_concurrent(
    stream: Source[T],
    fn: Callable[[T], U],
    *,
    concurrency: int = 8,
    ordered: bool = True,
    task_group: anyio.abc.TaskGroup | None = None,
) -> Stream[U]: ...
def map_concurrent(
    stream: Source[T],
    fn: Callable[[T], Any],
    *,
    concurrency: int = 8,
    ordered: bool = True,
    task_group: anyio.abc.TaskGroup | None = None,
) -> Stream[Any]:
    """Apply ``fn`` to every item, with up to ``concurrency`` calls in flight.

    For I/O-bound transforms (fetch, decode, augment). An ``async def`` ``fn``
    runs as tasks on the consumer's event loop; a plain function runs in worker
    threads (``anyio.to_thread.run_sync``).

    Parameters
    ----------
    stream : iterable or async iterable
        A Streamer, a Stream, a list, a generator or an async generator. It is
        read by the consumer's task, ahead of the consumer by up to
        ``concurrency`` items; a sync source's ``next()`` runs on the loop.
    fn : callable
        ``async def fn(item)``, or a plain ``fn(item)``.
    concurrency : int
        Most calls in flight (and, in order, results held back), >= 1.
    ordered : bool
        ``True`` yields results in the order of the items; ``False`` as the
        calls finish.
    task_group : anyio.abc.TaskGroup or None
        Run the calls as tasks of this group, on any backend. ``None`` starts
        them as plain asyncio tasks owned by the Stream (asyncio only). With a
        group, close the Stream before the group's block ends (``async with``
        the Stream, or exhaust it), else the block waits for the calls in flight.

    Returns
    -------
    Stream
        Iterate it with ``async for`` — or with ``for``: the calls then run on
        a background event loop.

    Raises
    ------
    ConfigError
        At the call, if ``concurrency < 1`` or ``fn`` is not callable.
    UnsupportedBackendError
        On the first item, outside asyncio (trio) without a ``task_group``.

    Notes
    -----
    Errors: an exception raised by ``fn`` or by ``stream`` reaches the consumer
    with its own type and traceback. In order, results come out as from a plain
    loop: every item before the failing one, then the error; the calls after
    it are cancelled as soon as it fails. Out of order, the error comes out in
    its completion order, and every call still running is cancelled when it
    fails. Breaking out of the loop, ``aclose()``, cancellation and garbage
    collection cancel the calls in flight and close ``stream``. A call in a
    thread cannot be interrupted: closing waits for it.

    Examples
    --------
    >>> import anyio
    >>> from aiostream_mux.maps import map_concurrent
    >>> async def double(x):
    ...     await anyio.sleep(0.01 * (3 - x))
    ...     return 2 * x
    >>> async def main():
    ...     ordered = [y async for y in map_concurrent(range(4), double, concurrency=4)]
    ...     done_first = map_concurrent(range(4), double, concurrency=4, ordered=False)
    ...     return ordered, sorted([y async for y in done_first])
    >>> anyio.run(main)
    ([0, 2, 4, 6], [0, 2, 4, 6])

    A sync consumer, and a plain function (run in threads):

    >>> list(map_concurrent(["a", "b"], str.upper, concurrency=2))
    ['A', 'B']

    On any backend, in a task group:

    >>> async def main():
    ...     async with anyio.create_task_group() as tg:
    ...         async with map_concurrent(range(3), double, task_group=tg) as stream:
    ...             return [y async for y in stream]
    >>> anyio.run(main, backend="trio")
    [0, 2, 4]
    """
    limit = _int_at_least("concurrency", concurrency, 1)
    if not callable(fn):
        raise ConfigError(f"fn={fn!r} is not callable")
    if inspect.isasyncgenfunction(fn) or inspect.isgeneratorfunction(fn):
        raise ConfigError(
            f"fn={fn!r} is a generator function: map_concurrent needs a function that "
            "returns one result per item (async def ... return, or a plain def)"
        )
    if not isinstance(stream, (Iterable, AsyncIterable)):
        raise ConfigError(f"stream={_short(stream)} is neither iterable nor async iterable")
    is_async = _is_async_callable(fn)
    in_order = bool(ordered)

    def make(group: anyio.abc.TaskGroup | None) -> _ConcurrentMap[Any, Any]:
        return _ConcurrentMap(stream, fn, limit, in_order, is_async, task_group or group)

    name = _name("map_concurrent", stream, getattr(fn, "__qualname__", fn), limit)
    return Stream(_MapStreamer(name, make))

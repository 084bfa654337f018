"""Streamer, the reusable recipe, and Stream, one activation of it."""

from __future__ import annotations

import functools
import inspect
import sys
import threading
import weakref
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Iterator
from contextlib import asynccontextmanager
from types import GeneratorType, TracebackType
from typing import TYPE_CHECKING, Any, Generic, TypeVar, overload

import anyio
import anyio.abc
import anyio.lowlevel

from ._engine import (
    CHECKPOINT_EVERY,
    Run,
    _async_engine,
    _close_async_now,
    _close_run,
    _empty,
    _is_async_run,
    _sync_engine,
)
from ._exceptions import ConfigError
from ._pipeline import StreamerPipeline, StreamPipeline

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup

if TYPE_CHECKING:
    import numpy as np
    from typing_extensions import ParamSpec, Self

    from ._mux._stats import MuxStatistics

    P = ParamSpec("P")

# Run, CHECKPOINT_EVERY and _close_run are re-exported for the modules built on Stream.
__all__ = [
    "CHECKPOINT_EVERY",
    "Opening",
    "Run",
    "Stream",
    "Streamer",
    "_close_run",
    "streamable",
]

T = TypeVar("T")


def _check_max_iter(max_iter: int | None, name: str = "max_iter") -> int | None:
    """Return ``max_iter`` as an int >= 0 (or None); raise ConfigError naming it otherwise."""
    if max_iter is None:
        return None
    index = getattr(max_iter, "__index__", None)  # int and numpy integers, not floats
    if isinstance(max_iter, bool) or index is None:
        raise ConfigError(f"{name}={max_iter!r} must be None or an int >= 0")
    value = int(index())
    if value < 0:
        raise ConfigError(f"{name}={value} must be None or an int >= 0")
    return value


class Streamer(StreamerPipeline[T], Generic[T]):
    """A reusable recipe for a stream: a source plus its arguments.

    A Streamer can be activated any number of times; each activation is a
    :class:`Stream`, which speaks both ``for`` and ``async for``. It pickles
    when its source does (a module-level function or a plain container), so it
    can be shipped to another process.

    Parameters
    ----------
    streamer : callable, iterable, async iterable or Streamer
        The source. A (sync or async) generator function, or any callable
        returning a (sync or async) iterable, is called with ``*args`` and
        ``**kwargs`` at every activation. An iterable or async iterable is
        iterated directly. Another :class:`Streamer` is activated.
    *args, **kwargs
        Passed to ``streamer`` when it is callable.

    Raises
    ------
    ConfigError
        If ``streamer`` is none of the above, is a coroutine function, or
        arguments are given for a source that is not callable.

    See Also
    --------
    streamable : build Streamers by decorating a generator function.

    Examples
    --------
    >>> def count(n):
    ...     yield from range(n)
    >>> streamer = Streamer(count, 5)
    >>> list(streamer)
    [0, 1, 2, 3, 4]
    >>> list(streamer(max_iter=3))
    [0, 1, 2]
    >>> list(streamer.cycle(max_iter=7))
    [0, 1, 2, 3, 4, 0, 1]

    The same Streamer works in async code:

    >>> import anyio
    >>> async def main():
    ...     return [x async for x in streamer.iterate(max_iter=2)]
    >>> anyio.run(main)
    [0, 1]
    """

    streamer: Any
    args: tuple[Any, ...]
    kwargs: dict[str, Any]

    @overload
    def __init__(
        self, streamer: Callable[P, Iterable[T]], /, *args: P.args, **kwargs: P.kwargs
    ) -> None: ...
    @overload
    def __init__(
        self, streamer: Callable[P, AsyncIterable[T]], /, *args: P.args, **kwargs: P.kwargs
    ) -> None: ...
    @overload
    def __init__(self, streamer: Streamer[T] | Iterable[T] | AsyncIterable[T], /) -> None: ...
    def __init__(self, streamer: Any, /, *args: Any, **kwargs: Any) -> None:
        target = getattr(streamer, "__wrapped_generator__", streamer)
        if inspect.iscoroutinefunction(target):
            raise ConfigError(
                f"streamer={streamer!r} is a coroutine function; a source must be an "
                "iterable, an async iterable, or a (sync or async) generator function "
                "— use 'yield' in it to make it an async generator"
            )
        if inspect.iscoroutine(streamer):
            streamer.close()  # never awaited, and never will be: no warning
            raise ConfigError(
                f"streamer={streamer!r} is a coroutine; a source must be an iterable, an "
                "async iterable, or a (sync or async) generator function — pass the "
                "function itself, and use 'yield' in it to make it an async generator"
            )
        is_streamer = isinstance(streamer, Streamer)
        if not is_streamer and not callable(streamer):
            if not isinstance(streamer, (Iterable, AsyncIterable)):
                raise ConfigError(
                    f"streamer={streamer!r} is not iterable: a source must be an iterable, "
                    "an async iterable, a (sync or async) generator function, a callable "
                    "returning one of those, or a Streamer"
                )
            if args or kwargs:
                raise ConfigError(
                    f"streamer={streamer!r} is not callable, so it takes no arguments "
                    f"(got args={args!r}, kwargs={kwargs!r})"
                )
        self.streamer = streamer
        self.args = args
        self.kwargs = kwargs
        # An iterator (a generator object, a Stream) can be read only once.
        self._one_shot = not is_streamer and isinstance(streamer, (Iterator, AsyncIterator))
        self._started_once = False
        self._init_bookkeeping()

    def _init_bookkeeping(self) -> None:
        self._runs_lock = threading.Lock()
        self._runs: weakref.WeakSet[Any] = weakref.WeakSet()
        #: Counters of running activations, for ``Stream.statistics()`` (muxes).
        self._counters: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()

    # -- pickling and copying: the bookkeeping is per object, not part of the recipe
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.pop("_runs_lock", None)
        state.pop("_runs", None)
        state.pop("_counters", None)
        state.pop("_entered", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._init_bookkeeping()

    def __repr__(self) -> str:
        name = getattr(self.streamer, "__qualname__", None) or repr(self.streamer)
        return f"<{type(self).__name__} {name}>"

    # -- activation: subclasses (muxes) override _start
    def _start(
        self,
        seed: np.random.SeedSequence | None = None,
        task_group: anyio.abc.TaskGroup | None = None,
        prefer_async: bool = False,
    ) -> Run[T]:
        """Start one run of the source: a sync or an async iterator.

        ``prefer_async`` says how the run will be consumed; a source that can
        serve both (a Stream, a map over one) picks that protocol. ``seed`` is
        the child seed a parent mux gives this activation; ``task_group`` the
        group of an ``open()`` block. An async run must do nothing until it is
        first pulled, since it may be handed to another thread's event loop.
        """
        source = self.streamer
        if isinstance(source, Streamer):
            return source._start(seed, task_group, prefer_async)
        if getattr(self, "_one_shot", False):
            if self._started_once:
                raise ConfigError(
                    f"streamer={source!r} is an iterator, which can be read only once, "
                    "and this Streamer was already activated; to restart it, give the "
                    "generator function and its arguments: Streamer(function, *args)"
                )
            self._started_once = True
        if callable(source):
            target = getattr(source, "__wrapped_generator__", source)
            source = target(*self.args, **self.kwargs)
            if type(source) is GeneratorType:  # the usual case, in one step
                return source
            if inspect.iscoroutine(source):
                source.close()
                raise ConfigError(
                    f"streamer={self.streamer!r} returned a coroutine; a source must return "
                    "an iterable or an async iterable"
                )
            if not isinstance(source, (Iterable, AsyncIterable)):
                raise ConfigError(
                    f"streamer={self.streamer!r} returned {type(source).__name__!r}, "
                    "which is not iterable"
                )
            if isinstance(source, Stream) and source._unstarted():
                # A map called by this recipe: it runs in this activation's
                # task group (``open()``) and gets its seed.
                source._task_group = source._task_group or task_group
                source._seed = source._seed or seed
        return _run_of(source, prefer_async)

    def _statistics_of(self, run: object) -> Any:
        source = self.streamer
        if isinstance(source, Streamer):
            return source._statistics_of(run)
        raise TypeError(f"{self!r} is not a mux: it keeps no statistics")

    def _uses_seed(self) -> bool:
        """Tell whether activations use the child seed a parent mux gives (muxes do)."""
        source = self.streamer
        return isinstance(source, Streamer) and source._uses_seed()

    def _is_async(self) -> bool:
        """Tell whether activations will be async iterators, when that is known in advance.

        ``False`` for sync sources and for callables whose kind only shows when called.
        Muxes use it to pick their driver.
        """
        source = self.streamer
        if isinstance(source, Streamer):
            return source._is_async()
        target = getattr(source, "__wrapped_generator__", source)
        if callable(target):
            return inspect.isasyncgenfunction(target)
        return isinstance(source, AsyncIterable) and not isinstance(source, Iterable)

    def _runs_sync(self) -> bool:
        """Tell whether a sync activation (``prefer_async=False``) needs no event loop.

        ``True`` for sync sources, and for sources with a sync path of their own
        besides the async one that a mux should use (a ZMQStreamer whose worker
        forks). A mux whose members all run sync serves ``for`` with its sync
        driver, without a background loop.
        """
        source = self.streamer
        if isinstance(source, Streamer):
            return source._runs_sync()
        return not self._is_async()

    def _track(self, run: object) -> None:
        try:
            with self._runs_lock:
                self._runs.add(run)
        except TypeError:  # no weak references to this iterator type
            pass

    @property
    def active(self) -> int:
        """Number of activations started and not yet exhausted, closed or collected."""
        with self._runs_lock:
            runs = list(self._runs)
        return sum(1 for run in runs if _run_alive(run))

    @property
    def is_activated_copy(self) -> bool:
        """``False``: a Streamer is a recipe; its activations are :class:`Stream` objects."""
        return False

    # -- pescador's interface
    def iterate(self, max_iter: int | None = None) -> Stream[T]:
        """Activate the source once.

        Parameters
        ----------
        max_iter : int or None
            Maximum number of items to yield; ``None`` exhausts the source.

        Returns
        -------
        Stream
            Iterate it with ``for`` or ``async for``.

        Raises
        ------
        ConfigError
            If ``max_iter`` is negative or not an int.
        """
        return Stream(self, max_iter=max_iter, cycle=False)

    def cycle(self, max_iter: int | None = None) -> Stream[T]:
        """Activate the source again and again, restarting it whenever it ends.

        Unlike pescador, cycling stops when a whole run of the source yields
        nothing, instead of looping forever.

        Parameters
        ----------
        max_iter : int or None
            Maximum number of items to yield; ``None`` for no limit.

        Returns
        -------
        Stream
        """
        return Stream(self, max_iter=max_iter, cycle=True)

    def __call__(self, max_iter: int | None = None, cycle: bool = False) -> Stream[T]:
        """Activate the source: ``iterate(max_iter)``, or ``cycle(max_iter)`` if ``cycle``.

        Parameters
        ----------
        max_iter : int or None
            Maximum number of items to yield.
        cycle : bool
            Restart the source whenever it ends.

        Returns
        -------
        Stream
        """
        return Stream(self, max_iter=max_iter, cycle=bool(cycle))

    def __iter__(self) -> Iterator[T]:
        return iter(Stream(self))

    def __aiter__(self) -> AsyncIterator[T]:
        return Stream(self).__aiter__()

    # -- pescador's ``with streamer as active:`` (active.stream_ is the iterator)
    def __enter__(self) -> Stream[T]:
        stream = Stream(self)
        entered: list[Stream[Any]] = self.__dict__.setdefault("_entered", [])
        entered.append(stream)
        return stream

    def __exit__(self, *exc_info: object) -> None:
        entered: list[Stream[Any]] = self.__dict__.get("_entered", [])
        if entered:
            entered.pop().close()

    def open(self, *, max_iter: int | None = None, cycle: bool = False) -> Opening[T]:
        """Activate the source inside a block that closes it; ``async with`` or ``with``.

        ``async with streamer.open() as stream:`` is the structured form, on
        every anyio backend (asyncio, uvloop, trio): everything the activation
        starts — the producer tasks of muxes, the calls of concurrent maps, in
        every stage of a recipe — lives in a task group owned by the block, and
        is closed when the block exits. ``with streamer.open() as stream:`` is
        its sync twin: the Stream is closed when the block exits.

        Parameters
        ----------
        max_iter : int or None
            Maximum number of items to yield.
        cycle : bool
            Restart the source whenever it ends.

        Returns
        -------
        Opening
            A context manager, sync and async, giving the :class:`Stream`.

        Examples
        --------
        >>> import anyio
        >>> async def main():
        ...     async with Streamer(range(5)).open(max_iter=3) as stream:
        ...         return [x async for x in stream]
        >>> anyio.run(main)
        [0, 1, 2]
        >>> with Streamer(range(5)).open(max_iter=2) as stream:
        ...     print(list(stream))
        [0, 1]
        """
        return Opening(self, _check_max_iter(max_iter), bool(cycle))

    async def take(self, n: int) -> list[T]:
        """Activate the source, return its first ``n`` items, and close it.

        Made for notebooks: ``batch = await streamer.take(8)``.

        Parameters
        ----------
        n : int
            Number of items, >= 0; fewer are returned if the source ends.

        Returns
        -------
        list
        """
        async with self.open(max_iter=_check_max_iter(n, "n")) as stream:
            return await stream.to_list()


class Opening(Generic[T]):
    """What :meth:`Streamer.open` returns: a block, ``async with`` or ``with``, giving a Stream."""

    def __init__(self, streamer: Streamer[T], max_iter: int | None, cycle: bool) -> None:
        self._streamer = streamer
        self._max_iter = max_iter
        self._cycle = cycle
        self._async: Any = None
        self._sync: Stream[T] | None = None

    async def __aenter__(self) -> Stream[T]:
        self._async = _open_block(self._streamer, self._max_iter, self._cycle)
        return await self._async.__aenter__()  # type: ignore[no-any-return]

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        block, self._async = self._async, None
        return await block.__aexit__(exc_type, exc, tb)  # type: ignore[no-any-return]

    def __enter__(self) -> Stream[T]:
        self._sync = Stream(self._streamer, max_iter=self._max_iter, cycle=self._cycle)
        return self._sync

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        stream, self._sync = self._sync, None
        if stream is not None:
            stream.close()


@asynccontextmanager
async def _open_block(
    streamer: Streamer[T], max_iter: int | None, cycle: bool
) -> AsyncIterator[Stream[T]]:
    """Run one Stream inside a task group: the structured block of :meth:`Streamer.open`."""
    try:
        async with anyio.create_task_group() as tg:
            stream = Stream(streamer, max_iter=max_iter, cycle=cycle, _task_group=tg)
            try:
                yield stream
            finally:
                await stream.aclose()
                tg.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        sole = sole_exception(group)
        if sole is group:
            raise
        # One failure is re-raised bare, with its own type and traceback.
        raise sole from sole.__cause__


def sole_exception(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """Return the one exception inside (nested) single-member groups, else the group."""
    exc: BaseException = group
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


def _run_of(source: Iterable[T] | AsyncIterable[T], prefer_async: bool) -> Run[T]:
    """Open ``source`` in the protocol asked for when it speaks both."""
    if isinstance(source, Iterable) and not (prefer_async and isinstance(source, AsyncIterable)):
        return iter(source)
    return source.__aiter__()


def _run_alive(run: Any) -> bool:
    frame = getattr(run, "gi_frame", getattr(run, "ag_frame", True))
    return frame is not None


class Stream(StreamPipeline[T], Generic[T]):
    """One activation of a :class:`Streamer`: an iterator for ``for`` and ``async for``.

    What :meth:`Streamer.iterate`, :meth:`Streamer.cycle` and
    :meth:`Streamer.__call__` return. The source starts on the first item
    requested, in whichever protocol is used first, and a Stream then stays in
    that protocol. ``with`` and ``async with`` close it for sure; so does
    exhausting it. A sync consumer of an async source gets its items from a
    private event loop in a background thread, in batches.

    Examples
    --------
    >>> stream = Streamer(range(10)).iterate(max_iter=4)
    >>> with stream:
    ...     print(next(stream), list(stream))
    0 [1, 2, 3]
    """

    def __init__(
        self,
        streamer: Streamer[T],
        max_iter: int | None = None,
        cycle: bool = False,
        *,
        _seed: np.random.SeedSequence | None = None,
        _task_group: anyio.abc.TaskGroup | None = None,
    ) -> None:
        self.streamer = streamer
        self.max_iter = _check_max_iter(max_iter)
        self.cycle = cycle
        self._seed = _seed
        self._task_group = _task_group
        self._sync: Iterator[T] | None = None
        self._async: AsyncIterator[T] | None = None
        self._closed = False
        self._first_run: object = None

    def __repr__(self) -> str:
        mode = "sync" if self._sync else "async" if self._async else "not started"
        state = "closed" if self._closed else mode
        return f"<Stream of {self.streamer!r}, max_iter={self.max_iter}, {state}>"

    @property
    def is_activated_copy(self) -> bool:
        """``True``: a Stream is an activation (pescador's "activated copy")."""
        return True

    @property
    def stream_(self) -> Iterator[T]:
        """The sync iterator of this activation (pescador's ``active.stream_``)."""
        return self._sync_iter()

    def _unstarted(self) -> bool:
        return self._sync is None and self._async is None and not self._closed

    def _start_run(self, prefer_async: bool) -> Run[T]:
        if self._closed:
            raise RuntimeError("this Stream is closed; activate the Streamer again")
        run = self.streamer._start(self._seed, self._task_group, prefer_async)
        self._first_run = run
        self.streamer._track(run)
        return run

    # -- sync protocol
    def _sync_iter(self) -> Iterator[T]:
        it = self._sync
        if it is not None:
            return it
        if self._async is not None:
            raise RuntimeError("this Stream is being consumed with 'async for'; use it there")
        if self.max_iter == 0 or self._closed:
            it = iter(())
        else:
            run = self._start_run(False)
            if _is_async_run(run):
                from ._sync import PortalIterator

                streamer, max_iter, cycle, seed = (
                    self.streamer,
                    self.max_iter,
                    self.cycle,
                    self._seed,
                )
                it = PortalIterator(
                    lambda: _async_engine(streamer, run, max_iter, cycle, seed, None)
                )
            else:
                it = _sync_engine(self.streamer, run, self.max_iter, self.cycle)  # type: ignore[arg-type]
        self._sync = it
        return it

    def __iter__(self) -> Iterator[T]:
        return self._sync_iter()

    def __next__(self) -> T:
        return next(self._sync_iter())

    def close(self) -> None:
        """Close the source (its ``finally:`` runs) and anything the Stream started."""
        self._closed = True
        it = self._sync
        if it is not None:
            it.close()  # type: ignore[attr-defined]
        elif self._async is not None:
            _close_async_now(self._async)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- async protocol
    def _async_iter(self) -> AsyncIterator[T]:
        ait = self._async
        if ait is not None:
            return ait
        if self._sync is not None:
            raise RuntimeError("this Stream is being consumed with 'for'; use it there")
        if self.max_iter == 0 or self._closed:
            ait = _empty()
        else:
            run = self._start_run(True)
            ait = _async_engine(
                self.streamer, run, self.max_iter, self.cycle, self._seed, self._task_group
            )
        self._async = ait
        return ait

    def __aiter__(self) -> AsyncIterator[T]:
        return self._async_iter()

    async def __anext__(self) -> T:
        return await self._async_iter().__anext__()

    async def aclose(self) -> None:
        """Close the source (its ``finally:`` runs) and anything the Stream started."""
        self._closed = True
        if self._async is not None:
            await _close_run(self._async)
        elif self._sync is not None:
            self._sync.close()  # type: ignore[attr-defined]
        await anyio.lowlevel.checkpoint()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def statistics(self) -> MuxStatistics:
        """Return what a running mux has done so far: per member and in total.

        Samples drawn, activations and exhaustions per member, samples buffered
        ahead right now, seconds the consumer waited, and each member's share
        of the samples against its target weight.

        Returns
        -------
        MuxStatistics

        Raises
        ------
        TypeError
            If this is not an activation of a StochasticMux, ShuffledMux or
            RoundRobinMux.
        RuntimeError
            Before the first sample is asked for.

        Examples
        --------
        >>> from aiostream_mux import ShuffledMux
        >>> mux = ShuffledMux([Streamer("a" * 100), Streamer("b" * 100)],
        ...                   weights=[3, 1], random_state=0)
        >>> stream = mux.iterate(max_iter=1000)
        >>> _ = list(stream)
        >>> stats = stream.statistics()
        >>> stats.samples, [m.target for m in stats.members]
        (1000, [0.75, 0.25])
        >>> stats.mixture_error < 0.05
        True
        """
        if self._first_run is None:
            raise RuntimeError("statistics appear once the stream has started")
        return self.streamer._statistics_of(self._first_run)  # type: ignore[no-any-return]

    # -- notebook helpers
    async def take(self, n: int) -> list[T]:
        """Return the next ``n`` items (fewer if the stream ends first).

        Parameters
        ----------
        n : int
            Number of items, >= 0.

        Returns
        -------
        list

        Examples
        --------
        >>> import anyio
        >>> async def main():
        ...     stream = Streamer(range(10)).iterate()
        ...     return await stream.take(3), await stream.take(2)
        >>> anyio.run(main)
        ([0, 1, 2], [3, 4])
        """
        n = _check_max_iter(n, "n") or 0
        out: list[T] = []
        ait = self._async_iter()
        while len(out) < n:
            try:
                out.append(await ait.__anext__())
            except StopAsyncIteration:
                break
        return out

    async def to_list(self) -> list[T]:
        """Return every remaining item; the stream must be finite.

        Returns
        -------
        list
        """
        return [item async for item in self._async_iter()]


class _Streamable(Generic[T]):
    """A generator function turned into a Streamer factory; pickles by name."""

    def __init__(self, function: Callable[..., Any]) -> None:
        functools.update_wrapper(self, function)
        self.__wrapped_generator__ = function

    def __call__(self, *args: Any, **kwargs: Any) -> Streamer[T]:
        return Streamer(self, *args, **kwargs)

    def __reduce__(self) -> str:
        return self.__qualname__  # type: ignore[attr-defined,no-any-return]


@overload
def streamable(function: Callable[P, AsyncIterable[T]]) -> Callable[P, Streamer[T]]: ...
@overload
def streamable(function: Callable[P, Iterable[T]]) -> Callable[P, Streamer[T]]: ...
def streamable(function: Callable[..., Any]) -> Callable[..., Streamer[Any]]:
    """Decorate a generator function so that calling it returns a :class:`Streamer`.

    Parameters
    ----------
    function : callable
        A sync or async generator function (or any callable returning an iterable).

    Returns
    -------
    callable
        Same signature as ``function``; returns ``Streamer(function, *args, **kwargs)``.

    Examples
    --------
    >>> @streamable
    ... def letters(n):
    ...     yield from "abcdef"[:n]
    >>> streamer = letters(3)
    >>> "".join(streamer)
    'abc'
    """
    if inspect.iscoroutinefunction(function):
        raise ConfigError(
            f"function={function!r} is a coroutine function; streamable needs a generator "
            "function (sync or async)"
        )
    if not callable(function):
        raise ConfigError(f"function={function!r} is not callable")
    return _Streamable(function)


class _Derived(Streamer[T]):
    """A Streamer built from two factories, one per protocol (maps use it).

    Either factory may be ``None`` when the upstream speaks only the other
    protocol; the Stream then adapts (inline for sync, a portal for async).
    """

    def __init__(
        self,
        name: str,
        make_sync: Callable[[], Iterator[T]] | None,
        make_async: Callable[[anyio.abc.TaskGroup | None], AsyncIterator[T]] | None,
    ) -> None:
        if make_sync is None and make_async is None:  # pragma: no cover - internal misuse
            raise ValueError("need at least one factory")
        self.streamer = name
        self.args = ()
        self.kwargs = {}
        self._make_sync = make_sync
        self._make_async = make_async
        self._init_bookkeeping()

    def __repr__(self) -> str:
        return f"<{self.streamer}>"

    def _is_async(self) -> bool:
        return self._make_sync is None

    def _start(
        self,
        seed: np.random.SeedSequence | None = None,
        task_group: anyio.abc.TaskGroup | None = None,
        prefer_async: bool = False,
    ) -> Run[T]:
        if self._make_async is not None and (prefer_async or self._make_sync is None):
            return self._make_async(task_group)
        assert self._make_sync is not None
        return self._make_sync()


def derived_stream(
    name: str,
    make_sync: Callable[[], Iterator[T]] | None,
    make_async: Callable[[anyio.abc.TaskGroup | None], AsyncIterator[T]] | None,
) -> Stream[T]:
    """Return a Stream running ``make_sync()`` for ``for``, ``make_async(tg)`` for ``async for``.

    The building block of maps: a map over an upstream that speaks both
    protocols gives both factories, so it never crosses threads needlessly.
    ``tg`` is the task group of the ``open()`` block the map runs in (or
    ``None``): hand it on to the upstream, so every stage runs in the block.
    """
    return Stream(_Derived(name, make_sync, make_async))

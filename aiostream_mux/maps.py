"""Maps: functions that take a stream and return a transformed :class:`~aiostream_mux.Stream`.

pescador's maps (:func:`buffer_stream`, :func:`tuples`, :func:`keras_tuples`,
:func:`cache`) with pescador 3.0's semantics, plus :func:`map_concurrent` for
I/O-bound transforms. Each takes any sync or async iterable — a
:class:`~aiostream_mux.Streamer`, a :class:`~aiostream_mux.Stream`, a list, a
generator, an async generator — and returns a Stream, which works with ``for``
and ``async for``. When the input speaks both protocols (a Streamer or a Stream),
``for`` reads it with ``for`` and ``async for`` with ``async for``, so nothing
crosses threads needlessly. Arguments are checked at the call, not at the first
item. Like pescador's, a map is one activation: to reuse it, make it a recipe,
``Streamer(buffer_stream, streamer, 16)``.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import math
import numbers
import reprlib
from collections import deque
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Hashable,
    Iterable,
    Iterator,
    Mapping,
)
from itertools import islice
from operator import itemgetter
from typing import TYPE_CHECKING, Any, Generic, TypeVar, overload

import anyio
import anyio.abc
import anyio.lowlevel
import anyio.to_thread
import numpy as np

from ._exceptions import ConfigError, DataError, UnsupportedBackendError
from ._streamer import (
    CHECKPOINT_EVERY,
    Run,
    Stream,
    Streamer,
    _close_run,
    _Derived,
    _run_of,
    derived_stream,
)

if TYPE_CHECKING:
    from numpy.typing import NDArray

__all__ = ["buffer_stream", "cache", "keras_tuples", "map_concurrent", "tuples"]

T = TypeVar("T")
U = TypeVar("U")
K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

Source = Iterable[T] | AsyncIterable[T]

#: buffer_stream over a sync run, consumed by ``async for``, yields to the loop
#: after about this many input items (a checkpoint costs a loop iteration).
_CHECKPOINT_ITEMS = 1024
_repr = reprlib.Repr()
_repr.maxstring = _repr.maxother = 60
_short = _repr.repr


class _MissingKeyError(DataError, KeyError):
    """A key is missing from an item: a DataError, and a KeyError as in pescador."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


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


def _open(stream: Source[T], prefer_async: bool) -> Run[T]:
    """Start one run of ``stream`` in the protocol asked for, when it speaks both.

    A Streamer is started directly rather than through a Stream of its own, to
    save a layer per item: for an async consumer, a Streamer over a sync source
    then hands back its sync iterator, which the async side of a map reads
    inline; for a sync consumer, an async source goes through the portal.
    """
    if isinstance(stream, Streamer):
        run = stream._start(None, None, prefer_async)
        stream._track(run)
        if not prefer_async and isinstance(run, AsyncIterator):
            from ._sync import PortalIterator

            return PortalIterator(lambda: run)
        return run
    return _run_of(stream, prefer_async)


async def _aiter_sync(items: Iterator[U], every: int) -> AsyncIterator[U]:
    """Serve a sync iterator to ``async for``, yielding to the loop every ``every`` items."""
    try:
        n = 0
        for item in items:
            yield item
            n += 1
            if n == every:
                n = 0
                await anyio.lowlevel.checkpoint()
    finally:
        await _close_run(items)


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

    def make_async() -> AsyncIterator[U]:
        run = _open(stream, True)
        if isinstance(run, AsyncIterator):
            return async_body(run)
        return _aiter_sync(sync_body(run), every)

    is_sync = isinstance(stream, Iterable)
    is_async = isinstance(stream, AsyncIterable)
    if not (is_sync or is_async):
        raise ConfigError(f"stream={_short(stream)} is neither iterable nor async iterable")
    return derived_stream(name, make_sync if is_sync else None, make_async if is_async else None)


def _close_sync(run: Iterator[Any]) -> None:
    close = getattr(run, "close", None)
    if close is not None:
        close()


# -- buffer_stream


def _shape(value: Any) -> tuple[int, ...] | str:
    try:
        return tuple(np.shape(value))
    except ValueError:  # a ragged nested sequence
        return "ragged"


def _compatible(a: tuple[int, ...] | str, b: tuple[int, ...] | str, axis: int | None) -> bool:
    """Whether values of shapes ``a`` and ``b`` stack (``axis=None``) or concatenate."""
    if axis is None or isinstance(a, str) or isinstance(b, str):
        return a == b
    if len(a) != len(b) or not -len(a) <= axis < len(a):
        return False
    along = axis % len(a)
    return all(x == y for d, (x, y) in enumerate(zip(a, b, strict=True)) if d != along)


def _stack_error(batch: list[Any], axis: int | None, cause: BaseException | None) -> DataError:
    """Say precisely why ``batch`` cannot be stacked (the slow path, on failure only)."""
    for i, item in enumerate(batch):
        if not isinstance(item, Mapping):
            return DataError(
                f"buffer_stream needs items that are mappings of arrays, like "
                f"dict(X=..., y=...); item {i} of the batch is a "
                f"{type(item).__name__!r}: {_short(item)}"
            )
    first = batch[0]
    for i, item in enumerate(batch[1:], 1):
        if item.keys() != first.keys():
            missing = [k for k in first if k not in item]
            extra = [k for k in item if k not in first]
            key, where = (missing[0], f"item {i}") if missing else (extra[0], "item 0")
            return DataError(
                f"items of one batch must have the same keys: key {key!r} is missing "
                f"from {where} (item 0 has keys {list(first)}, item {i} has {list(item)})"
            )
    for key in first:
        shape0 = _shape(first[key])
        if (
            axis is not None
            and isinstance(shape0, tuple)
            and not -len(shape0) <= axis < len(shape0)
        ):
            return DataError(
                f"axis={axis} is out of bounds for key {key!r} of shape {shape0}: "
                "to stack items along a new axis, use axis=None"
            )
        for i, item in enumerate(batch[1:], 1):
            shape = _shape(item[key])
            if not _compatible(shape0, shape, axis):
                along = "" if axis is None else f" (outside axis {axis})"
                return DataError(
                    f"key {key!r} has shape {shape0} in item 0 but {shape} in item {i} "
                    f"of the same batch{along}"
                )
    return DataError(f"cannot stack a batch of {len(batch)} items: {cause}")


def _stack(batch: list[Any], axis: int | None) -> dict[Any, NDArray[Any]]:
    """Stack a batch of mappings key by key: one ``np.array`` call per key, no per-item check."""
    first = batch[0]
    try:
        keys = first.keys()
        if axis is None:
            out = {key: np.array([item[key] for item in batch]) for key in keys}
        else:
            out = {key: np.concatenate([item[key] for item in batch], axis=axis) for key in keys}
        # Every item has every key of the first; equal totals then mean equal key sets.
        if sum(map(len, batch)) == len(keys) * len(batch):
            return out
    except (AttributeError, TypeError, KeyError, IndexError, ValueError) as exc:
        raise _stack_error(batch, axis, exc) from exc
    raise _stack_error(batch, axis, None)


def buffer_stream(
    stream: Source[Mapping[K, Any]],
    buffer_size: int,
    partial: bool = False,
    axis: int | None = None,
) -> Stream[dict[K, NDArray[Any]]]:
    """Collect ``buffer_size`` consecutive items into one batch, key by key.

    Each item is a mapping of arrays (``dict(X=..., y=...)``); a batch maps each
    key to the items' values stacked along a new first axis (``np.array``), or
    concatenated along ``axis``.

    Parameters
    ----------
    stream : iterable or async iterable of mappings
        A Streamer, a Stream, a list, a generator or an async generator.
    buffer_size : int
        Items per batch, >= 1.
    partial : bool
        Also yield the last, smaller batch when the stream ends mid-batch.
    axis : int or None
        ``None`` stacks along a new first axis; an int concatenates along that
        existing axis (for items that already are batches).

    Returns
    -------
    Stream
        Of ``dict`` batches; iterate it with ``for`` or ``async for``.

    Raises
    ------
    ConfigError
        At the call, if ``buffer_size < 1`` or ``axis`` is not an int or None.
    DataError
        While iterating, if an item is not a mapping, or items of one batch
        differ in keys or shapes; the message names the key and both shapes.

    Examples
    --------
    >>> import numpy as np
    >>> from aiostream_mux import Streamer
    >>> from aiostream_mux.maps import buffer_stream
    >>> def numbers(n):
    ...     for i in range(n):
    ...         yield dict(x=np.asarray(i), y=np.asarray(i % 2))
    >>> for batch in buffer_stream(Streamer(numbers, 7), 3, partial=True):
    ...     print(batch["x"], batch["y"])
    [0 1 2] [0 1 0]
    [3 4 5] [1 0 1]
    [6] [0]

    A reusable recipe, activated anew by each ``for`` or ``async for``:

    >>> import anyio
    >>> batches = Streamer(buffer_stream, Streamer(numbers, 4), 2)
    >>> async def main():
    ...     return [batch["x"].tolist() async for batch in batches]
    >>> anyio.run(main)
    [[0, 1], [2, 3]]
    """
    size = _int_at_least("buffer_size", buffer_size, 1)
    if axis is not None and (isinstance(axis, bool) or not isinstance(axis, int)):
        raise ConfigError(f"axis={axis!r} must be None or an int")
    partial = bool(partial)

    def sync_body(run: Iterator[Mapping[K, Any]]) -> Iterator[dict[K, NDArray[Any]]]:
        try:
            while True:
                batch = list(islice(run, size))
                if len(batch) < size:
                    if batch and partial:
                        yield _stack(batch, axis)
                    return
                yield _stack(batch, axis)
        finally:
            _close_sync(run)

    async def async_body(
        run: AsyncIterator[Mapping[K, Any]],
    ) -> AsyncIterator[dict[K, NDArray[Any]]]:
        try:
            batch: list[Mapping[K, Any]] = []
            append = batch.append  # the per-item path: one call, one comparison
            async for item in run:
                append(item)
                if len(batch) == size:
                    out, batch = _stack(batch, axis), []
                    append = batch.append
                    yield out
            if batch and partial:
                yield _stack(batch, axis)
        finally:
            await _close_run(run)

    name = _name("buffer_stream", stream, size)
    return _derive(name, stream, sync_body, async_body, every=max(1, _CHECKPOINT_ITEMS // size))


# -- tuples and keras_tuples


def _key_error(function: str, data: object, key: object) -> DataError:
    if not isinstance(data, Mapping):
        return DataError(
            f"{function} needs items that are mappings, like dict(X=..., y=...); "
            f"got a {type(data).__name__!r}: {_short(data)}"
        )
    return _MissingKeyError(f"{function}: item has no key {key!r} (its keys: {list(data)})")


def _picker(function: str, keys: tuple[Any, ...]) -> Callable[[Any], tuple[Any, ...]]:
    """``item -> tuple of item[key]``, raising a DataError that names a missing key."""
    first = keys[0]

    def get_one(data: Any) -> tuple[Any, ...]:
        return (data[first],)

    get: Callable[[Any], tuple[Any, ...]] = get_one if len(keys) == 1 else itemgetter(*keys)

    def pick(data: Any) -> tuple[Any, ...]:
        try:
            return get(data)
        except (KeyError, TypeError, IndexError, AttributeError) as exc:
            bad = next((k for k in keys if not _has(data, k)), first)
            raise _key_error(function, data, bad) from exc

    return pick


def _has(data: object, key: object) -> bool:
    try:
        return key in data  # type: ignore[operator]
    except TypeError:
        return False


def _per_item(name: str, stream: Source[T], fn: Callable[[T], U]) -> Stream[U]:
    """Return a Stream of ``fn(item)`` for each item of ``stream``."""

    def sync_body(run: Iterator[T]) -> Iterator[U]:
        try:
            yield from map(fn, run)
        finally:
            _close_sync(run)

    async def async_body(run: AsyncIterator[T]) -> AsyncIterator[U]:
        try:
            async for item in run:
                yield fn(item)
        finally:
            await _close_run(run)

    return _derive(name, stream, sync_body, async_body)


def tuples(stream: Source[Mapping[K, V]], *keys: K) -> Stream[tuple[V, ...]]:
    """Turn each item into the tuple of its values at ``keys``.

    Parameters
    ----------
    stream : iterable or async iterable of mappings
        A Streamer, a Stream, a list, a generator or an async generator.
    *keys
        At least one key; the tuple follows their order.

    Returns
    -------
    Stream
        Of tuples; iterate it with ``for`` or ``async for``.

    Raises
    ------
    ConfigError
        At the call, if no key is given.
    DataError
        While iterating, if an item is not a mapping or lacks a key (then the
        error is also a ``KeyError``, as in pescador, and names the key).

    Examples
    --------
    >>> from aiostream_mux.maps import tuples
    >>> items = [dict(X=1, y=2), dict(X=3, y=4)]
    >>> list(tuples(items, "X", "y"))
    [(1, 2), (3, 4)]
    >>> list(tuples(items, "y"))
    [(2,), (4,)]
    """
    if not keys:
        raise ConfigError("tuples needs at least one key, got none")
    return _per_item(_name("tuples", stream, *keys), stream, _picker("tuples", keys))


def _keys_arg(name: str, value: object) -> tuple[tuple[Any, ...], bool]:
    """``(keys, flatten)`` for one of keras_tuples' ``inputs``/``outputs``."""
    if value is None:
        return (), False
    if isinstance(value, (str, bytes)):
        return (value,), True
    if isinstance(value, Iterable):
        return tuple(value), False
    raise ConfigError(f"{name}={value!r} must be a key (str), an iterable of keys, or None")


def keras_tuples(
    stream: Source[Mapping[K, V]],
    inputs: str | Iterable[K] | None = None,
    outputs: str | Iterable[K] | None = None,
) -> Stream[tuple[Any, Any]]:
    """Turn each item into a Keras-style ``(x, y)`` pair.

    Parameters
    ----------
    stream : iterable or async iterable of mappings
        A Streamer, a Stream, a list, a generator or an async generator.
    inputs : str, iterable of keys, or None
        A str gives ``x = item[inputs]``; an iterable of keys (a list or a
        tuple) gives the list ``x = [item[k] for k in inputs]``; ``None`` or an
        empty iterable gives ``x = None``.
    outputs : str, iterable of keys, or None
        The same, for ``y``.

    Returns
    -------
    Stream
        Of ``(x, y)`` tuples; iterate it with ``for`` or ``async for``.

    Raises
    ------
    ConfigError
        At the call, if neither ``inputs`` nor ``outputs`` names a key.
    DataError
        While iterating, if an item is not a mapping or lacks a key.

    Examples
    --------
    >>> from aiostream_mux.maps import keras_tuples
    >>> items = [dict(a=1, b=2, c=3)]
    >>> list(keras_tuples(items, inputs="a", outputs="c"))
    [(1, 3)]
    >>> list(keras_tuples(items, inputs=("a", "b"), outputs="c"))
    [([1, 2], 3)]
    >>> list(keras_tuples(items, outputs=["c"]))
    [(None, [3])]
    """
    in_keys, flat_in = _keys_arg("inputs", inputs)
    out_keys, flat_out = _keys_arg("outputs", outputs)
    if not in_keys and not out_keys:
        raise ConfigError(
            f"keras_tuples needs at least one key in inputs or outputs "
            f"(got inputs={inputs!r}, outputs={outputs!r})"
        )
    n_in = len(in_keys)
    pick = _picker("keras_tuples", in_keys + out_keys)

    def pair(data: Mapping[K, V]) -> tuple[Any, Any]:
        values = pick(data)
        x = values[0] if flat_in else list(values[:n_in]) or None
        y = values[n_in] if flat_out else list(values[n_in:]) or None
        return x, y

    name = _name("keras_tuples", stream, inputs, outputs)
    return _per_item(name, stream, pair)


# -- cache


class _CachePolicy(Generic[T]):
    """pescador's cache decisions, with no I/O: which item comes out next.

    Draws from the generator in pescador's order (an index, then a coin), so a
    ``RandomState`` seeded alike gives pescador's sequence.
    """

    def __init__(
        self, n_cache: int, prob: float, rng: np.random.RandomState | np.random.Generator
    ) -> None:
        self.items: list[T] = []
        self.n_cache = n_cache
        self.prob = prob
        if isinstance(rng, np.random.Generator):
            self._index: Callable[[], int] = lambda: int(rng.integers(0, n_cache))
            self._coin: Callable[[], float] = rng.random
        else:
            self._index = lambda: int(rng.randint(low=0, high=n_cache))
            self._coin = rng.rand

    def step(self) -> tuple[bool, int]:
        """``(take_new, index)``: whether to read a new item, and the slot to emit."""
        if len(self.items) < self.n_cache:
            return True, -1
        index = self._index()
        return self._coin() <= self.prob, index

    def put(self, index: int, item: T) -> T:
        """Store a newly read ``item`` in slot ``index`` (-1: append) and return it."""
        if index < 0:
            self.items.append(item)
        else:
            self.items[index] = item
        return item


def cache(
    stream: Source[T],
    n_cache: int,
    prob: float = 0.5,
    random_state: int | np.random.Generator | np.random.RandomState | None = None,
) -> Stream[T]:
    """Replay items from a random cache of recent items, reading new ones with probability ``prob``.

    The first ``n_cache`` items are read and yielded in order. Then, for each
    item: a cache slot is drawn at random; with probability ``prob`` a new item
    is read into it; the slot's item is yielded. The stream ends when a new item
    is needed and the input has ended. Cached items are over-represented, so
    the statistics differ from the input's.

    Parameters
    ----------
    stream : iterable or async iterable
        A Streamer, a Stream, a list, a generator or an async generator.
    n_cache : int
        Size of the cache, >= 1.
    prob : float
        Probability of reading a new item, in [0, 1]. ``1`` passes the input
        through; ``0`` replays the first ``n_cache`` items forever.
    random_state : None, int, numpy.random.Generator or numpy.random.RandomState
        An int seeds a ``RandomState``, as in pescador, so a seed gives
        pescador's sequence. ``None`` uses fresh entropy (pescador used numpy's
        global state). A generator passed in is shared by every call.

    Returns
    -------
    Stream
        Iterate it with ``for`` or ``async for``.

    Raises
    ------
    ConfigError
        At the call, if ``n_cache < 1``, ``prob`` is outside [0, 1], or
        ``random_state`` is none of the above.

    Examples
    --------
    >>> from aiostream_mux.maps import cache
    >>> list(cache(range(6), 2, prob=1.0))
    [0, 1, 2, 3, 4, 5]
    >>> out = list(cache(range(6), 2, prob=0.5, random_state=0))
    >>> out[:2], sorted(set(out)) == list(range(6))
    ([0, 1], True)
    """
    n = _int_at_least("n_cache", n_cache, 1)
    given: object = prob  # any object may come in
    p = float(given) if isinstance(given, numbers.Real) else math.nan
    if isinstance(given, bool) or not 0.0 <= p <= 1.0:
        raise ConfigError(f"prob={prob!r} must be a number in [0, 1]")
    rng = _rng(random_state)

    def sync_body(run: Iterator[T]) -> Iterator[T]:
        policy: _CachePolicy[T] = _CachePolicy(n, p, rng)
        try:
            while True:
                take_new, index = policy.step()
                if not take_new:
                    yield policy.items[index]
                    continue
                try:
                    item = next(run)
                except StopIteration:
                    return
                yield policy.put(index, item)
        finally:
            _close_sync(run)

    async def async_body(run: AsyncIterator[T]) -> AsyncIterator[T]:
        policy: _CachePolicy[T] = _CachePolicy(n, p, rng)
        replayed = 0
        try:
            while True:
                take_new, index = policy.step()
                if not take_new:
                    yield policy.items[index]
                    replayed += 1
                    if replayed == CHECKPOINT_EVERY:  # a run of replays never awaits
                        replayed = 0
                        await anyio.lowlevel.checkpoint()
                    continue
                try:
                    item = await run.__anext__()
                except StopAsyncIteration:
                    return
                yield policy.put(index, item)
        finally:
            await _close_run(run)

    name = _name("cache", stream, n, p)
    return _derive(name, stream, sync_body, async_body)


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
        self._run = _open(self._stream, True)

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
        super().__init__(name, None, lambda: make(None))
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
    if not isinstance(stream, (Iterable, AsyncIterable)):
        raise ConfigError(f"stream={_short(stream)} is neither iterable nor async iterable")
    is_async = _is_async_callable(fn)
    in_order = bool(ordered)

    def make(group: anyio.abc.TaskGroup | None) -> _ConcurrentMap[Any, Any]:
        return _ConcurrentMap(stream, fn, limit, in_order, is_async, task_group or group)

    name = _name("map_concurrent", stream, getattr(fn, "__qualname__", fn), limit)
    return Stream(_MapStreamer(name, make))

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

import math
import numbers
from collections.abc import (
    AsyncIterator,
    Callable,
    Hashable,
    Iterable,
    Iterator,
    Mapping,
)
from itertools import islice
from operator import itemgetter
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import anyio
import anyio.abc
import anyio.lowlevel
import anyio.to_thread
import numpy as np

from ._concurrent import map_concurrent
from ._engine import CHECKPOINT_EVERY, _close_run
from ._exceptions import ConfigError, DataError, MissingKeyError
from ._source import (
    Source,
    _close_sync,
    _derive,
    _int_at_least,
    _name,
    _rng,
    _short,
)
from ._streamer import Stream

if TYPE_CHECKING:
    from numpy.typing import NDArray

__all__ = ["buffer_stream", "cache", "keras_tuples", "map_concurrent", "tuples"]

T = TypeVar("T")
U = TypeVar("U")
K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

#: buffer_stream over a sync run, consumed by ``async for``, yields to the loop
#: after about this many input items (a checkpoint costs a loop iteration).
_CHECKPOINT_ITEMS = 1024


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
    return MissingKeyError(f"{function}: item has no key {key!r} (its keys: {list(data)})")


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
    for key in keys:
        if not isinstance(key, Hashable):
            raise ConfigError(
                f"tuples: key {key!r} is not hashable; give the keys as separate "
                f"arguments: tuples(stream, *{key!r})"
            )
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

"""Maps: pescador parity, both protocols, bad input, the concurrent map, cleanup."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import pickle
import threading
import traceback
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator, Mapping
from typing import Any, cast

import anyio
import anyio.lowlevel
import numpy as np
import pescador
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import aiostream_mux as am
from aiostream_mux import ConfigError, DataError, Stream, Streamer, UnsupportedBackendError
from aiostream_mux.maps import buffer_stream, cache, keras_tuples, map_concurrent, tuples

from .conftest import Lifecycle

Item = dict[str, Any]

# -- sources (module level, so recipes pickle)


def items(n: int, width: int = 3) -> Iterator[Item]:
    for i in range(n):
        yield {"X": np.full(width, i, dtype=np.float32), "y": i}


async def aitems(n: int, width: int = 3) -> AsyncIterator[Item]:
    for item in items(n, width):
        yield item


def count(n: int) -> Iterator[int]:
    yield from range(n)


async def acount(n: int) -> AsyncIterator[int]:
    for i in range(n):
        yield i


def upstreams() -> list[Any]:
    """Every kind of input a map takes, each giving ``items(n)``."""
    return [
        pytest.param(lambda n: Streamer(items, n), id="streamer"),
        pytest.param(lambda n: Streamer(aitems, n), id="streamer-async"),
        pytest.param(lambda n: Streamer(items, n).iterate(), id="stream"),
        pytest.param(lambda n: Streamer(aitems, n).iterate(), id="stream-async"),
        pytest.param(lambda n: list(items(n)), id="list"),
        pytest.param(items, id="generator"),
        pytest.param(aitems, id="async-generator"),
    ]


def assert_same(ours: list[Any], theirs: list[Any]) -> None:
    """Equal lists of batches (dicts of arrays), tuples of arrays, or plain values."""
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs, strict=True):
        if isinstance(b, Mapping):
            assert isinstance(a, dict)
            assert list(a) == list(b)
            for key in b:
                np.testing.assert_array_equal(a[key], b[key])
                assert a[key].dtype == b[key].dtype
        elif isinstance(b, (tuple, list)):
            assert type(a) is type(b)
            assert_same(list(a), list(b))
        else:
            np.testing.assert_array_equal(a, b)


def frames(exc: BaseException) -> list[str]:
    return [frame.name for frame in traceback.extract_tb(exc.__traceback__)]


# -- buffer_stream


BUFFER_CASES = [
    pytest.param(10, 3, False, id="3"),
    pytest.param(10, 3, True, id="3-partial"),
    pytest.param(9, 3, True, id="3-exact-partial"),
    pytest.param(2, 5, False, id="underrun"),
    pytest.param(2, 5, True, id="underrun-partial"),
    pytest.param(0, 2, True, id="empty"),
    pytest.param(7, 1, False, id="1"),
]


@pytest.mark.parametrize("make", upstreams())
@pytest.mark.parametrize(("n", "size", "partial"), BUFFER_CASES)
def test_buffer_stream_matches_pescador_sync(
    make: Callable[[int], Any], n: int, size: int, partial: bool
) -> None:
    theirs = list(pescador.buffer_stream(items(n), size, partial=partial))
    stream = buffer_stream(make(n), size, partial=partial)
    assert isinstance(stream, Stream)
    assert_same(list(stream), theirs)


@pytest.mark.anyio
@pytest.mark.parametrize("make", upstreams())
@pytest.mark.parametrize(("n", "size", "partial"), BUFFER_CASES)
async def test_buffer_stream_matches_pescador_async(
    make: Callable[[int], Any], n: int, size: int, partial: bool
) -> None:
    theirs = list(pescador.buffer_stream(items(n), size, partial=partial))
    assert_same([b async for b in buffer_stream(make(n), size, partial=partial)], theirs)


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(0, 40),
    size=st.integers(1, 12),
    partial=st.booleans(),
    width=st.integers(0, 4),
)
def test_buffer_stream_matches_pescador_property(
    n: int, size: int, partial: bool, width: int
) -> None:
    theirs = list(pescador.buffer_stream(items(n, width), size, partial=partial))
    assert_same(list(buffer_stream(Streamer(items, n, width), size, partial=partial)), theirs)

    async def main() -> list[Any]:
        return [b async for b in buffer_stream(aitems(n, width), size, partial=partial)]

    assert_same(asyncio.run(main()), theirs)


@pytest.mark.asyncio
async def test_sync_consumer_inside_a_running_loop() -> None:
    # As in a notebook cell: plain `for` while this thread runs an event loop.
    theirs = list(pescador.buffer_stream(items(10), 4))
    assert_same(list(buffer_stream(Streamer(aitems, 10), 4)), theirs)
    assert_same(list(buffer_stream(Streamer(items, 10), 4)), theirs)
    assert list(map_concurrent(range(10), double, concurrency=3)) == list(range(0, 20, 2))


def batched(n: int, width: int) -> Iterator[Item]:
    """Items that already have a batch axis of length 1."""
    for item in items(n, width):
        yield {key: np.asarray(value)[None] for key, value in item.items()}


@pytest.mark.parametrize("axis", [0, -1])
def test_buffer_stream_axis_matches_pescador(axis: int) -> None:
    theirs = list(pescador.buffer_stream(batched(7, 3), 2, partial=True, axis=axis))
    assert_same(list(buffer_stream(batched(7, 3), 2, partial=True, axis=axis)), theirs)


def test_buffer_of_buffers() -> None:
    inner = buffer_stream(Streamer(items, 12), 2)
    outer = list(buffer_stream(inner, 3, axis=0))
    assert [batch["y"].tolist() for batch in outer] == [[0, 1, 2, 3, 4, 5], [6, 7, 8, 9, 10, 11]]
    assert outer[0]["X"].shape == (6, 3)


def test_buffer_stream_as_recipe_like_pescador() -> None:
    streamer = Streamer(items, 10)
    recipe = Streamer(buffer_stream, streamer, 4)
    theirs = list(pescador.Streamer(pescador.buffer_stream, pescador.Streamer(items, 10), 4))
    for _ in range(2):  # activated anew each time
        assert_same(list(recipe), theirs)
    assert_same(list(recipe.iterate(max_iter=1)), theirs[:1])
    assert_same(list(recipe.cycle(max_iter=5)), theirs * 2 + theirs[:1])
    assert_same(list(pickle.loads(pickle.dumps(recipe))), theirs)


@pytest.mark.anyio
async def test_buffer_stream_as_recipe_async() -> None:
    recipe = Streamer(buffer_stream, Streamer(aitems, 10), 4, partial=True)
    theirs = list(pescador.buffer_stream(items(10), 4, partial=True))
    assert_same([b async for b in recipe], theirs)
    async with recipe.open(max_iter=2) as stream:
        assert_same([b async for b in stream], theirs[:2])
    assert_same(await recipe.take(1), theirs[:1])


# -- protocol selection


class Dual:
    """An iterable that speaks both protocols and records which one was used."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.used: list[str] = []
        self.threads: list[int] = []

    def __iter__(self) -> Iterator[Item]:
        self.used.append("sync")
        self.threads.append(threading.get_ident())
        return items(self.n)

    def __aiter__(self) -> AsyncIterator[Item]:
        self.used.append("async")
        self.threads.append(threading.get_ident())
        return aitems(self.n)


MAPS: list[Any] = [
    pytest.param(lambda s: buffer_stream(s, 2), id="buffer_stream"),
    pytest.param(lambda s: tuples(s, "y"), id="tuples"),
    pytest.param(lambda s: keras_tuples(s, "y", ["y"]), id="keras_tuples"),
    pytest.param(lambda s: cache(s, 2, random_state=0), id="cache"),
]


@pytest.mark.parametrize("apply", MAPS)
def test_dual_source_is_read_with_for_by_for(apply: Callable[[Any], Stream[Any]]) -> None:
    source = Dual(4)
    assert list(apply(source))
    assert source.used == ["sync"]
    assert source.threads == [threading.get_ident()]


@pytest.mark.anyio
@pytest.mark.parametrize("apply", MAPS)
async def test_dual_source_is_read_with_async_for_by_async_for(
    apply: Callable[[Any], Stream[Any]],
) -> None:
    source = Dual(4)
    assert [x async for x in apply(source)]
    assert source.used == ["async"]
    assert source.threads == [threading.get_ident()]


class Recorder:
    """Records the thread each item of a sync generator is produced in."""

    def __init__(self) -> None:
        self.threads: set[int] = set()

    def gen(self, n: int) -> Iterator[Item]:
        for item in items(n):
            self.threads.add(threading.get_ident())
            yield item


@pytest.mark.anyio
async def test_sync_streamer_under_async_for_stays_in_the_loop_thread() -> None:
    record = Recorder()
    batches = [b async for b in tuples(buffer_stream(Streamer(record.gen, 8), 4), "y")]
    assert [b[0].tolist() for b in batches] == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert record.threads == {threading.get_ident()}


def test_stream_cannot_be_mapped_in_both_protocols() -> None:
    stream = Streamer(count, 5).iterate()
    assert next(stream) == 0
    mapped = cache(stream, 1, prob=1.0)

    async def use() -> list[int]:
        return [x async for x in mapped]

    with pytest.raises(RuntimeError, match="'for'"):
        asyncio.run(use())
    stream.close()


# -- buffer_stream: bad input


@pytest.mark.parametrize(
    ("bad", "fragment"),
    [
        (0, "buffer_size=0"),
        (-3, "buffer_size=-3"),
        (2.5, "buffer_size=2.5"),
        ("4", "buffer_size='4'"),
        (True, "buffer_size=True"),
        (None, "buffer_size=None"),
    ],
)
def test_buffer_size_is_checked_at_call(bad: Any, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment) as info:
        buffer_stream(items(3), bad)
    assert isinstance(info.value, ValueError)
    assert ">= 1" in str(info.value)


def test_buffer_size_accepts_numpy_integers() -> None:
    assert len(list(buffer_stream(items(4), np.int64(2)))) == 2  # type: ignore[arg-type]


def test_buffer_stream_bad_axis_and_source() -> None:
    with pytest.raises(ConfigError, match="axis='0'"):
        buffer_stream(items(3), 2, axis="0")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="stream=42"):
        buffer_stream(42, 2)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("data", "fragments"),
    [
        pytest.param([1, 2], ["item 0", "'int'"], id="int"),
        pytest.param([{"y": 1}, [1]], ["item 1", "'list'"], id="list-second"),
        pytest.param([{"y": 1}, "ab"], ["item 1", "'str'"], id="str-second"),
        pytest.param([{"y": 1}, np.zeros(2)], ["item 1", "'ndarray'"], id="array-second"),
        pytest.param([(1, 2), (3, 4)], ["item 0", "'tuple'"], id="tuple"),
    ],
)
@pytest.mark.parametrize("partial", [False, True])
def test_non_mapping_item_names_its_type(
    data: list[Any], fragments: list[str], partial: bool
) -> None:
    size = len(data) + 1 if partial else len(data)
    with pytest.raises(DataError) as info:
        list(buffer_stream(data, size, partial=partial))
    assert isinstance(info.value, TypeError)
    for fragment in fragments:
        assert fragment in str(info.value)


@pytest.mark.parametrize(
    ("data", "fragments"),
    [
        pytest.param([{"X": 1, "y": 1}, {"X": 2}], ["'y'", "missing from item 1"], id="missing"),
        pytest.param([{"X": 1}, {"X": 2, "y": 1}], ["'y'", "missing from item 0"], id="extra"),
        pytest.param([{"X": 1}, {"y": 2}], ["'X'", "missing from item 1"], id="different"),
    ],
)
def test_keys_that_differ_in_a_batch_are_named(data: list[Item], fragments: list[str]) -> None:
    # pescador raises KeyError for a missing key, and silently drops an extra one.
    with pytest.raises(DataError) as info:
        list(buffer_stream(data, 2))
    for fragment in fragments:
        assert fragment in str(info.value)


def test_shapes_that_differ_in_a_batch_are_named() -> None:
    data = [{"X": np.zeros((2, 3)), "y": 0}, {"X": np.zeros((2, 4)), "y": 1}]
    with pytest.raises(DataError, match=r"key 'X' has shape \(2, 3\) in item 0 but \(2, 4\)"):
        list(buffer_stream(data, 2))
    scalar_and_vector: list[Item] = [{"y": 0}, {"y": np.zeros(2)}]
    with pytest.raises(DataError, match=r"key 'y' has shape \(\) in item 0 but \(2,\)"):
        list(buffer_stream(scalar_and_vector, 2))


def test_shapes_that_differ_outside_the_axis_are_named() -> None:
    fine = [{"X": np.zeros((1, 3))}, {"X": np.zeros((2, 3))}]
    assert next(iter(buffer_stream(fine, 2, axis=0)))["X"].shape == (3, 3)
    bad = [{"X": np.zeros((1, 3))}, {"X": np.zeros((1, 4))}]
    with pytest.raises(DataError, match=r"'X' has shape \(1, 3\) in item 0 but \(1, 4\)"):
        list(buffer_stream(bad, 2, axis=0))


@pytest.mark.parametrize(("axis", "key"), [(0, "y"), (1, "X"), (-2, "X")])
def test_axis_out_of_bounds_is_named(axis: int, key: str) -> None:
    # X has shape (3,), y is a 0-d int.
    with pytest.raises(DataError, match=f"axis={axis} is out of bounds for key '{key}' of shape"):
        list(buffer_stream(items(4), 2, axis=axis))


@pytest.mark.anyio
async def test_bad_batch_is_a_data_error_in_async_for_too() -> None:
    async def bad() -> AsyncIterator[Any]:
        yield {"X": np.zeros(2)}
        yield {"X": np.zeros(3)}

    with pytest.raises(DataError, match="'X'"):
        [b async for b in buffer_stream(bad(), 2)]


# -- tuples and keras_tuples


@pytest.mark.parametrize("make", upstreams())
@pytest.mark.parametrize("keys", [("X",), ("X", "y"), ("y", "X", "y")])
def test_tuples_match_pescador(make: Callable[[int], Any], keys: tuple[str, ...]) -> None:
    theirs = list(pescador.tuples(items(5), *keys))
    assert_same(list(tuples(make(5), *keys)), theirs)


@pytest.mark.anyio
@pytest.mark.parametrize("make", upstreams())
async def test_tuples_async(make: Callable[[int], Any]) -> None:
    theirs = list(pescador.tuples(items(5), "X", "y"))
    assert_same([t async for t in tuples(make(5), "X", "y")], theirs)


def test_tuples_errors() -> None:
    with pytest.raises(ConfigError, match="at least one key"):
        tuples(items(2))
    with pytest.raises(DataError, match="no key 'z'") as missing:
        list(tuples(items(2), "X", "z"))
    assert isinstance(missing.value, KeyError)  # as in pescador
    assert "'X'" in str(missing.value)  # the keys the item has
    with pytest.raises(DataError, match="'int'") as not_a_mapping:
        list(tuples([1], "X"))  # type: ignore[arg-type]
    assert not isinstance(not_a_mapping.value, KeyError)


KERAS_CASES = [
    pytest.param("X", "y", id="str-str"),
    pytest.param(["X"], "y", id="list-str"),
    pytest.param(["X", "y"], ["y"], id="list-list"),
    pytest.param("X", None, id="str-none"),
    pytest.param(None, ["y", "X"], id="none-list"),
    pytest.param([], "y", id="empty-str"),
]


@pytest.mark.parametrize(("inputs", "outputs"), KERAS_CASES)
def test_keras_tuples_match_pescador(inputs: Any, outputs: Any) -> None:
    theirs = list(pescador.keras_tuples(items(3), inputs, outputs))
    assert_same(list(keras_tuples(items(3), inputs, outputs)), theirs)


@pytest.mark.anyio
@pytest.mark.parametrize(("inputs", "outputs"), KERAS_CASES)
async def test_keras_tuples_async(inputs: Any, outputs: Any) -> None:
    theirs = list(pescador.keras_tuples(items(3), inputs, outputs))
    assert_same([t async for t in keras_tuples(aitems(3), inputs, outputs)], theirs)


def test_keras_tuples_take_tuples_of_keys() -> None:
    # pescador 3.0 fails here: "can only concatenate tuple (not "list") to tuple".
    with pytest.raises(TypeError):
        list(pescador.keras_tuples(items(1), inputs=("X", "y"), outputs="y"))
    [(x, y)] = list(keras_tuples(items(1), inputs=("X", "y"), outputs="y"))
    assert isinstance(x, list)
    assert len(x) == 2
    assert y == 0
    [(x, y)] = list(keras_tuples(items(1), inputs=("X",)))
    assert isinstance(x, list)
    assert y is None


def test_keras_tuples_errors() -> None:
    nothing: list[tuple[Any, Any]] = [(None, None), ([], None), ((), [])]
    for inputs, outputs in nothing:
        with pytest.raises(ConfigError, match="at least one key"):
            keras_tuples(items(1), inputs, outputs)
    with pytest.raises(ConfigError, match="inputs=3"):
        keras_tuples(items(1), 3)  # type: ignore[arg-type]
    with pytest.raises(DataError, match="no key 'z'") as info:
        list(keras_tuples(items(1), "X", ["y", "z"]))
    assert isinstance(info.value, KeyError)


# -- cache


def cache_cases() -> list[Any]:
    return [
        pytest.param(3, 0.5, 0, id="3-0.5-seed0"),
        pytest.param(1, 0.5, 1, id="1-0.5-seed1"),
        pytest.param(5, 0.2, 123, id="5-0.2-seed123"),
        pytest.param(4, 1.0, 7, id="prob1"),
        pytest.param(20, 0.5, 3, id="bigger-than-stream"),
    ]


@pytest.mark.parametrize(("n_cache", "prob", "seed"), cache_cases())
def test_cache_matches_pescador(n_cache: int, prob: float, seed: int) -> None:
    theirs = list(pescador.cache(count(12), n_cache, prob=prob, random_state=seed))
    assert list(cache(count(12), n_cache, prob=prob, random_state=seed)) == theirs
    rng = np.random.RandomState(seed)
    ours = list(cache(Streamer(count, 12), n_cache, prob=prob, random_state=rng))
    assert ours == theirs


@pytest.mark.anyio
@pytest.mark.parametrize(("n_cache", "prob", "seed"), cache_cases())
@pytest.mark.parametrize("source", [count, acount])
async def test_cache_matches_pescador_async(
    n_cache: int, prob: float, seed: int, source: Callable[[int], Any]
) -> None:
    theirs = list(pescador.cache(count(12), n_cache, prob=prob, random_state=seed))
    ours = [x async for x in cache(Streamer(source, 12), n_cache, prob, random_state=seed)]
    assert ours == theirs


def test_cache_takes_any_iterable() -> None:
    # pescador 3.0 calls next() on its input, so a list or a Streamer fails there.
    with pytest.raises(TypeError, match="not an iterator"):
        list(pescador.cache([1, 2, 3], 2, random_state=0))
    assert list(cache([0, 1, 2], 2, prob=1.0)) == [0, 1, 2]
    assert list(cache(Streamer(count, 3), 2, prob=1.0)) == [0, 1, 2]


def test_cache_with_generator_is_deterministic() -> None:
    def run(seed: int) -> list[int]:
        return list(cache(count(30), 4, random_state=np.random.default_rng(seed)))

    assert run(5) == run(5)
    assert run(5)[:4] == [0, 1, 2, 3]
    assert set(run(5)) == set(range(30))
    assert len(run(5)) >= 30


def test_cache_prob_zero_replays_forever() -> None:
    stream = cache(count(100), 3, prob=0.0, random_state=0)
    out = [x for x, _ in zip(stream, range(50), strict=False)]
    assert out[:3] == [0, 1, 2]
    assert set(out) == {0, 1, 2}
    stream.close()


@pytest.mark.anyio
async def test_cache_replays_yield_to_the_loop() -> None:
    stream = cache(acount(100), 2, prob=0.0, random_state=0)
    async with stream:
        assert len(await stream.take(1000)) == 1000


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"n_cache": 0}, "n_cache=0"),
        ({"n_cache": -1}, "n_cache=-1"),
        ({"n_cache": 1.5}, "n_cache=1.5"),
        ({"n_cache": 2, "prob": -0.1}, "prob=-0.1"),
        ({"n_cache": 2, "prob": 1.5}, "prob=1.5"),
        ({"n_cache": 2, "prob": float("nan")}, "prob=nan"),
        ({"n_cache": 2, "prob": "0.5"}, "prob='0.5'"),
        ({"n_cache": 2, "random_state": "seed"}, "random_state='seed'"),
        ({"n_cache": 2, "random_state": 1.5}, "random_state=1.5"),
        ({"n_cache": 2, "random_state": -1}, "random_state=-1"),
    ],
)
def test_cache_arguments_are_checked_at_call(kwargs: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        cache(count(5), **kwargs)
    assert isinstance(info.value, ValueError)
    assert fragment in str(info.value)


# -- cleanup of the pescador maps


def dicts(lifecycle: Lifecycle, n: int) -> Iterator[Item]:
    for i in lifecycle.sync_source(n):
        yield {"y": i}


async def adicts(lifecycle: Lifecycle, n: int) -> AsyncIterator[Item]:
    # aclosing: a dropped async generator is finalised later, on the loop; close it now.
    source = cast("AsyncGenerator[int, None]", lifecycle.async_source(n))
    async with contextlib.aclosing(source):
        async for i in source:
            yield {"y": i}


def all_maps() -> list[Any]:
    return [
        *MAPS,
        pytest.param(lambda s: map_concurrent(s, dict.copy, concurrency=2), id="map_concurrent"),
    ]


@pytest.mark.parametrize("apply", all_maps())
@pytest.mark.parametrize("kind", ["sync", "async"])
def test_break_closes_the_source_sync(
    lifecycle: Lifecycle, apply: Callable[[Any], Stream[Any]], kind: str
) -> None:
    source = Streamer(dicts if kind == "sync" else adicts, lifecycle, 1000)
    for n, _ in enumerate(apply(source)):
        if n == 3:
            break
    assert lifecycle.started == 1
    assert lifecycle.open == 0
    with apply(source) as stream:
        next(stream)
        assert lifecycle.open == 1
    assert lifecycle.open == 0


@pytest.mark.anyio
@pytest.mark.parametrize("apply", MAPS)
@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_aclose_closes_the_source(
    lifecycle: Lifecycle, apply: Callable[[Any], Stream[Any]], kind: str
) -> None:
    source = Streamer(dicts if kind == "sync" else adicts, lifecycle, 1000)
    async with apply(source) as stream:
        n = 0
        async for _ in stream:
            n += 1
            if n == 3:
                break
        assert lifecycle.open == 1
    assert lifecycle.open == 0
    stream = apply(source)
    await stream.__anext__()
    await stream.aclose()
    assert lifecycle.open == 0


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_source_error_reaches_the_consumer(lifecycle: Lifecycle, kind: str) -> None:
    source = Streamer(lifecycle.sync_source if kind == "sync" else lifecycle.async_source, 10, 5)
    with pytest.raises(ValueError, match="failed at 5") as info:
        list(cache(source, 2, prob=1.0))
    assert f"{kind}_source" in frames(info.value)
    assert lifecycle.open == 0


# -- map_concurrent


async def double(x: int) -> int:
    await anyio.lowlevel.checkpoint()
    return 2 * x


def sources_of_ints() -> list[Any]:
    return [
        pytest.param(lambda n: Streamer(count, n), id="streamer"),
        pytest.param(lambda n: Streamer(acount, n), id="streamer-async"),
        pytest.param(lambda n: Streamer(acount, n).iterate(), id="stream-async"),
        pytest.param(lambda n: list(range(n)), id="list"),
        pytest.param(count, id="generator"),
        pytest.param(acount, id="async-generator"),
    ]


@pytest.mark.asyncio
@pytest.mark.parametrize("make", sources_of_ints())
@pytest.mark.parametrize("concurrency", [1, 3, 100])
async def test_map_concurrent_ordered(make: Callable[[int], Any], concurrency: int) -> None:
    out = [y async for y in map_concurrent(make(20), double, concurrency=concurrency)]
    assert out == [2 * x for x in range(20)]


@pytest.mark.parametrize("make", sources_of_ints())
def test_map_concurrent_sync_consumer(make: Callable[[int], Any]) -> None:
    assert list(map_concurrent(make(20), double, concurrency=4)) == [2 * x for x in range(20)]
    out = list(map_concurrent(make(20), double, concurrency=4, ordered=False))
    assert sorted(out) == [2 * x for x in range(20)]


async def jittered(x: int) -> int:
    """Finish in a scrambled order: the completion order is not the item order."""
    for _ in range((x * 7) % 5):
        await anyio.lowlevel.checkpoint()
    return x


@pytest.mark.asyncio
async def test_map_concurrent_order_survives_scrambled_completion() -> None:
    out = [y async for y in map_concurrent(range(50), jittered, concurrency=8)]
    assert out == list(range(50))
    unordered = [y async for y in map_concurrent(range(50), jittered, concurrency=8, ordered=False)]
    assert sorted(unordered) == list(range(50))
    assert unordered != list(range(50))


class Gate:
    """Counts calls in flight; opens when ``expected`` of them are in flight at once."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.in_flight = 0
        self.most = 0
        self.opened = anyio.Event()

    async def fn(self, x: int) -> int:
        self.in_flight += 1
        self.most = max(self.most, self.in_flight)
        try:
            if self.in_flight >= self.expected:
                self.opened.set()
            await self.opened.wait()
            return x
        finally:
            self.in_flight -= 1


@pytest.mark.asyncio
@pytest.mark.parametrize("ordered", [True, False])
async def test_map_concurrent_runs_exactly_concurrency_calls_at_once(ordered: bool) -> None:
    # Deadlocks (caught by fail_after) unless 4 calls run at once; never more than 4.
    gate = Gate(4)
    with anyio.fail_after(10):
        out = [y async for y in map_concurrent(range(10), gate.fn, concurrency=4, ordered=ordered)]
    assert sorted(out) == list(range(10))
    assert gate.most == 4


@pytest.mark.asyncio
async def test_unordered_yields_in_completion_order_ordered_waits() -> None:
    release = anyio.Event()

    async def slow_first(x: int) -> int:
        if x == 0:
            await release.wait()
        return x

    unordered = map_concurrent(range(3), slow_first, concurrency=3, ordered=False)
    async with unordered:
        assert await unordered.take(2) == [1, 2]
        release.set()
        assert await unordered.to_list() == [0]

    release = anyio.Event()
    ordered = map_concurrent(range(3), slow_first, concurrency=3)
    async with ordered:
        first = asyncio.ensure_future(ordered.__anext__())
        for _ in range(5):
            await asyncio.sleep(0)
        assert not first.done()  # item 0 comes first, and it is not ready
        release.set()
        assert await first == 0
        assert await ordered.to_list() == [1, 2]


def test_map_concurrent_sync_function_runs_in_threads() -> None:
    threads: set[int] = set()

    def work(x: int) -> int:
        threads.add(threading.get_ident())
        return x + 1

    async def main() -> list[int]:
        return [y async for y in map_concurrent(range(10), work, concurrency=3)]

    assert asyncio.run(main()) == list(range(1, 11))
    assert threading.get_ident() not in threads
    assert list(map_concurrent(range(5), work)) == [1, 2, 3, 4, 5]


@pytest.mark.asyncio
async def test_map_concurrent_callable_kinds() -> None:
    class AsyncCallable:
        async def __call__(self, x: int) -> int:
            return -x

    assert [y async for y in map_concurrent(range(3), AsyncCallable())] == [0, -1, -2]
    # A plain function returning a coroutine: called in a thread, awaited on the loop.
    out = [y async for y in map_concurrent(range(3), lambda x: double(x))]
    assert out == [0, 2, 4]


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"concurrency": 0}, "concurrency=0"),
        ({"concurrency": -2}, "concurrency=-2"),
        ({"concurrency": 2.0}, "concurrency=2.0"),
        ({"fn": 3}, "fn=3"),
        ({"stream": 3}, "stream=3"),
    ],
)
def test_map_concurrent_arguments_are_checked_at_call(
    kwargs: dict[str, Any], fragment: str
) -> None:
    arguments: dict[str, Any] = {"stream": range(3), "fn": double, **kwargs}
    with pytest.raises(ConfigError) as info:
        map_concurrent(**arguments)
    assert isinstance(info.value, ValueError)
    assert fragment in str(info.value)


class Calls:
    """Records calls of a mapped function that were started, finished, cancelled."""

    def __init__(self, fail_at: int | None = None, block_from: int | None = None) -> None:
        self.fail_at = fail_at
        self.block_from = block_from
        self.started: list[int] = []
        self.cancelled: list[int] = []
        self.all_started = anyio.Event()
        self.expected = 0

    async def fn(self, x: int) -> int:
        self.started.append(x)
        if len(self.started) == self.expected:
            self.all_started.set()
        try:
            if x == self.fail_at:
                await self.all_started.wait()
                raise KeyError(f"call failed at {x}")
            if self.block_from is not None and x >= self.block_from:
                await anyio.sleep_forever()
            return x
        except anyio.get_cancelled_exc_class():
            self.cancelled.append(x)
            raise


@pytest.mark.asyncio
async def test_call_error_in_order_like_a_plain_loop(lifecycle: Lifecycle) -> None:
    calls = Calls(fail_at=2, block_from=3)
    calls.expected = 6
    seen: list[int] = []
    with pytest.raises(KeyError, match="call failed at 2") as info:
        async for y in map_concurrent(
            Streamer(lifecycle.async_source, 100), calls.fn, concurrency=6
        ):
            seen.append(y)
    assert seen == [0, 1]  # every item before the failing one, then the error
    after = sorted(x for x in calls.started if x > 2)
    assert len(after) >= 5
    assert sorted(calls.cancelled) == after  # the calls after it, cancelled
    assert "fn" in frames(info.value)
    assert lifecycle.open == 0


@pytest.mark.asyncio
async def test_call_error_out_of_order_cancels_the_rest(lifecycle: Lifecycle) -> None:
    calls = Calls(fail_at=2, block_from=0)
    calls.expected = 5
    source = Streamer(lifecycle.sync_source, 100)
    with pytest.raises(KeyError, match="call failed at 2"):
        async for _ in map_concurrent(source, calls.fn, concurrency=5, ordered=False):
            pass
    assert sorted(calls.cancelled) == sorted(x for x in calls.started if x != 2)
    assert len(calls.cancelled) >= 4
    assert lifecycle.open == 0


@pytest.mark.parametrize("ordered", [True, False])
def test_call_error_reaches_a_sync_consumer(lifecycle: Lifecycle, ordered: bool) -> None:
    def fail(x: int) -> int:
        if x == 3:
            raise ArithmeticError("bad item 3")
        return x

    source = Streamer(lifecycle.async_source, 100)
    with pytest.raises(ArithmeticError, match="bad item 3") as info:
        list(map_concurrent(source, fail, concurrency=2, ordered=ordered))
    assert "fail" in frames(info.value)
    assert lifecycle.open == 0


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", ["sync", "async"])
@pytest.mark.parametrize("ordered", [True, False])
async def test_source_error_comes_after_the_items_before_it(
    lifecycle: Lifecycle, kind: str, ordered: bool
) -> None:
    source = Streamer(lifecycle.sync_source if kind == "sync" else lifecycle.async_source, 10, 6)
    seen: list[int] = []
    with pytest.raises(ValueError, match="failed at 6") as info:
        async for y in map_concurrent(source, jittered, concurrency=4, ordered=ordered):
            seen.append(y)
    assert sorted(seen) == [0, 1, 2, 3, 4, 5]
    assert f"{kind}_source" in frames(info.value)
    assert lifecycle.open == 0


@pytest.mark.asyncio
@pytest.mark.parametrize("ordered", [True, False])
async def test_break_and_aclose_cancel_calls_and_close_source(
    lifecycle: Lifecycle, ordered: bool
) -> None:
    calls = Calls(block_from=2)
    source = Streamer(lifecycle.async_source, 100)
    async with map_concurrent(source, calls.fn, concurrency=4, ordered=ordered) as stream:
        async for y in stream:
            assert y in (0, 1)
            break
    assert sorted(calls.started) == [0, 1, 2, 3]
    assert sorted(calls.cancelled) == [2, 3]
    assert lifecycle.open == 0

    calls = Calls(block_from=1)
    stream = map_concurrent(source, calls.fn, concurrency=3, ordered=ordered)
    assert await stream.__anext__() == 0
    await stream.aclose()
    assert sorted(calls.cancelled) == [1, 2]
    assert lifecycle.open == 0


@pytest.mark.asyncio
async def test_cancelling_the_consumer_cancels_the_calls(lifecycle: Lifecycle) -> None:
    calls = Calls(block_from=0)
    calls.expected = 3
    source = Streamer(lifecycle.async_source, 100)
    with anyio.CancelScope() as scope:
        async with map_concurrent(source, calls.fn, concurrency=3) as stream:

            async def cancel_when_all_started() -> None:
                await calls.all_started.wait()
                scope.cancel()

            async with anyio.create_task_group() as tg:
                tg.start_soon(cancel_when_all_started)
                async for _ in stream:
                    pytest.fail("no call finishes")
    assert scope.cancelled_caught
    assert sorted(calls.cancelled) == [0, 1, 2]
    assert lifecycle.open == 0


@pytest.mark.asyncio
async def test_dropped_stream_cancels_its_calls(lifecycle: Lifecycle) -> None:
    calls = Calls(block_from=1)
    stream = map_concurrent(Streamer(lifecycle.async_source, 100), calls.fn, concurrency=3)
    assert await stream.__anext__() == 0
    del stream
    gc.collect()
    for _ in range(20):  # the finalisers run on the next loop iterations
        if len(calls.cancelled) == 2 and lifecycle.open == 0:
            break
        await asyncio.sleep(0)
    assert sorted(calls.cancelled) == [1, 2]
    assert lifecycle.open == 0


def test_sync_break_cancels_calls(lifecycle: Lifecycle) -> None:
    calls = Calls(block_from=2)
    for y in map_concurrent(Streamer(lifecycle.async_source, 100), calls.fn, concurrency=4):
        assert y == 0
        break
    # The bridge reads ahead: calls 0 and 1 are done, every other one started is cancelled.
    assert sorted(calls.cancelled) == sorted(x for x in calls.started if x >= 2)
    assert len(calls.cancelled) >= 2
    assert lifecycle.open == 0


@pytest.mark.anyio
async def test_map_concurrent_without_asyncio_needs_a_task_group(anyio_backend: Any) -> None:
    name = anyio_backend if isinstance(anyio_backend, str) else anyio_backend[0]
    stream = map_concurrent(range(5), double)
    if name == "trio":
        with pytest.raises(UnsupportedBackendError, match="task_group=tg"):
            await stream.__anext__()
    else:
        assert await stream.to_list() == [0, 2, 4, 6, 8]
    await stream.aclose()


@pytest.mark.anyio
@pytest.mark.parametrize("ordered", [True, False])
async def test_map_concurrent_in_a_task_group(lifecycle: Lifecycle, ordered: bool) -> None:
    async with anyio.create_task_group() as tg:
        source = Streamer(lifecycle.async_source, 30)
        stream = map_concurrent(source, jittered, concurrency=4, ordered=ordered, task_group=tg)
        out = [y async for y in stream]
        assert sorted(out) == list(range(30))
        if ordered:
            assert out == list(range(30))
        gate = Gate(3)
        assert sorted(
            await map_concurrent(range(6), gate.fn, concurrency=3, task_group=tg).to_list()
        ) == list(range(6))
        calls = Calls(block_from=1)
        async with map_concurrent(source, calls.fn, concurrency=3, task_group=tg) as stream:
            assert await stream.__anext__() == 0
        assert sorted(calls.cancelled) == [1, 2]
    assert lifecycle.open == 0


@pytest.mark.anyio
async def test_map_concurrent_error_in_a_task_group() -> None:
    calls = Calls(fail_at=1, block_from=2)
    calls.expected = 4
    async with anyio.create_task_group() as tg:
        with pytest.raises(KeyError, match="call failed at 1"):
            async for _ in map_concurrent(range(10), calls.fn, concurrency=4, task_group=tg):
                pass
    assert sorted(calls.cancelled) == sorted(x for x in calls.started if x > 1)
    assert len(calls.cancelled) >= 2


# -- pipelines


def load(x: int) -> Item:
    return {"X": np.full(2, x, dtype=np.float32), "y": x % 3}


async def aload(x: int) -> Item:
    await anyio.lowlevel.checkpoint()
    return load(x)


def expected_pipeline(n: int, size: int) -> list[tuple[Any, ...]]:
    return list(pescador.tuples(pescador.buffer_stream(map(load, range(n)), size), "X", "y"))


def test_pipeline_sync() -> None:
    decoded = map_concurrent(Streamer(count, 20), aload, concurrency=8)
    batches = tuples(buffer_stream(decoded, 4), "X", "y")
    assert_same(list(batches), expected_pipeline(20, 4))


@pytest.mark.asyncio
async def test_pipeline_async() -> None:
    decoded = map_concurrent(Streamer(acount, 20), aload, concurrency=8)
    batches = tuples(buffer_stream(decoded, 4), "X", "y")
    assert_same([b async for b in batches], expected_pipeline(20, 4))


def test_pipeline_as_a_recipe() -> None:
    def pipeline(n: int) -> Stream[tuple[Any, ...]]:
        decoded = map_concurrent(Streamer(count, n), aload, concurrency=8)
        return tuples(buffer_stream(decoded, 4), "X", "y")

    recipe = Streamer(pipeline, 12)
    for _ in range(2):
        assert_same(list(recipe), expected_pipeline(12, 4))

    async def main() -> list[tuple[Any, ...]]:
        return [b async for b in recipe]

    assert_same(asyncio.run(main()), expected_pipeline(12, 4))


# -- pipeline methods and recipes


async def _double_later(x: int) -> int:
    await anyio.lowlevel.checkpoint()
    return 2 * x


def _shard(k: int) -> Iterator[dict[str, Any]]:
    for i in range(20):
        yield {"X": np.full(2, k, dtype=np.float32), "y": i}


def test_pipeline_methods_build_reusable_recipes() -> None:
    mux = am.ShuffledMux([am.Streamer(_shard, k) for k in range(3)], random_state=0)
    recipe = mux.buffer(8).tuples("X", "y")
    assert isinstance(recipe, am.Streamer)
    first = [(X.tolist(), y.tolist()) for X, y in recipe(max_iter=3)]
    again = [(X.tolist(), y.tolist()) for X, y in pickle.loads(pickle.dumps(recipe))(max_iter=3)]
    assert first == again
    assert all(len(y) == 8 for _, y in first)
    assert list(am.Streamer(range(4)).map(_double_later, concurrency=2)) == [0, 2, 4, 6]


def test_pipeline_methods_check_arguments_at_the_call() -> None:
    with pytest.raises(ConfigError, match="concurrency"):
        am.Streamer(range(3)).map(_double_later, concurrency=0)
    with pytest.raises(ConfigError, match="buffer_size"):
        am.Streamer(range(3)).buffer(0)
    with pytest.raises(ConfigError):
        am.Streamer(range(3)).iterate().buffer(-1)


@pytest.mark.anyio
async def test_stream_methods_and_recipe_in_open_block() -> None:
    stream = am.Streamer([{"a": i, "b": -i} for i in range(5)]).iterate().tuples("b", "a")
    assert [t async for t in stream] == [(-i, i) for i in range(5)]
    # A recipe of a concurrent map runs in the open() block's task group (trio too).
    recipe = am.Streamer(range(6)).map(_double_later, concurrency=3)
    async with recipe.open() as mapped:
        assert [x async for x in mapped] == [0, 2, 4, 6, 8, 10]


async def _same_later(sample: dict[str, Any]) -> dict[str, Any]:
    await anyio.lowlevel.checkpoint()
    return sample


async def _shard_later(k: int) -> AsyncIterator[dict[str, Any]]:
    for i in range(40):
        await anyio.lowlevel.checkpoint()
        yield {"X": np.full(2, k), "y": i}


@pytest.mark.anyio
async def test_every_stage_of_a_recipe_runs_in_the_open_block() -> None:
    """On trio too: the mux's producers and the map's calls use the block's task group."""
    mux = am.StochasticMux([am.Streamer(_shard_later, k) for k in range(4)], 2, 4, random_state=0)
    recipes: list[Any] = [
        mux.buffer(4),
        mux.buffer(4).tuples("X", "y"),
        mux.map(_same_later, concurrency=4),
        mux.map(_same_later, concurrency=2).buffer(4).tuples("X", "y"),
        am.Streamer(buffer_stream, mux.map(_same_later), 4),
    ]
    for recipe in recipes:
        async with recipe.open(max_iter=5) as stream:
            assert len([x async for x in stream]) == 5


async def _agen_fn(x: int) -> AsyncIterator[int]:
    yield x


def test_common_mistakes_fail_at_the_call() -> None:
    with pytest.raises(ConfigError, match=r"tuples\(stream, \*\['X', 'y'\]\)"):
        tuples([{"X": 1, "y": 2}], ["X", "y"])  # type: ignore[misc]
    with pytest.raises(ConfigError, match="generator function"):
        map_concurrent([1, 2], _agen_fn)

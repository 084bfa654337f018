"""Streamer and Stream: sources, pescador's semantics, both protocols, errors, cleanup."""

from __future__ import annotations

import asyncio
import copy
import pickle
import traceback
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pescador
import pytest

import aiostream_mux as am
from aiostream_mux import ConfigError, PescadorError, Stream, Streamer

from .conftest import Lifecycle

# -- module-level sources (picklable)


def count(n: int, start: int = 0) -> Iterator[int]:
    yield from range(start, start + n)


async def acount(n: int, start: int = 0) -> AsyncIterator[int]:
    for i in range(start, start + n):
        yield i


def empty() -> Iterator[int]:
    return
    yield


@am.streamable
def decorated(n: int) -> Iterator[int]:
    yield from range(n)


@am.streamable
async def adecorated(n: int) -> AsyncIterator[int]:
    for i in range(n):
        yield i


class AsyncRange:
    """An async iterable that is not an async generator."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __aiter__(self) -> AsyncIterator[int]:
        return acount(self.n)


def sources() -> list[Any]:
    return [
        pytest.param(lambda: Streamer(count, 5), id="sync-genfunc"),
        pytest.param(lambda: Streamer(acount, 5), id="async-genfunc"),
        pytest.param(lambda: Streamer([0, 1, 2, 3, 4]), id="list"),
        pytest.param(lambda: Streamer(AsyncRange(5)), id="async-iterable"),
        pytest.param(lambda: Streamer(Streamer(count, 5)), id="nested"),
        pytest.param(lambda: Streamer(Streamer(acount, 5)), id="nested-async"),
        pytest.param(lambda: Streamer(lambda: iter(range(5))), id="callable"),
        pytest.param(lambda: Streamer(count, n=5), id="kwargs"),
        pytest.param(lambda: decorated(5), id="streamable"),
        pytest.param(lambda: adecorated(5), id="streamable-async"),
    ]


@pytest.mark.parametrize("make", sources())
def test_every_source_kind_sync(make: Any) -> None:
    streamer = make()
    assert list(streamer) == [0, 1, 2, 3, 4]
    assert list(streamer.iterate(max_iter=3)) == [0, 1, 2]
    assert list(streamer(max_iter=2)) == [0, 1]
    assert list(streamer.cycle(max_iter=12)) == [0, 1, 2, 3, 4] * 2 + [0, 1]
    assert list(streamer(max_iter=7, cycle=True)) == [0, 1, 2, 3, 4, 0, 1]


@pytest.mark.anyio
@pytest.mark.parametrize("make", sources())
async def test_every_source_kind_async(make: Any) -> None:
    streamer = make()
    assert [x async for x in streamer] == [0, 1, 2, 3, 4]
    assert [x async for x in streamer.iterate(max_iter=3)] == [0, 1, 2]
    assert [x async for x in streamer(max_iter=2)] == [0, 1]
    assert [x async for x in streamer.cycle(max_iter=12)] == [0, 1, 2, 3, 4] * 2 + [0, 1]
    async with streamer.open(max_iter=7, cycle=True) as stream:
        assert [x async for x in stream] == [0, 1, 2, 3, 4, 0, 1]


@pytest.mark.parametrize("max_iter", [None, 0, 1, 3, 10])
@pytest.mark.parametrize("cycle", [False, True])
def test_matches_pescador(max_iter: int | None, cycle: bool) -> None:
    if cycle and max_iter is None:
        max_iter = 23
    ours = list(Streamer(count, 4)(max_iter=max_iter, cycle=cycle))
    theirs = list(pescador.Streamer(count, 4)(max_iter=max_iter, cycle=cycle))
    assert ours == theirs


def test_string_source_like_pescador() -> None:
    assert "".join(Streamer("abc")) == "".join(pescador.Streamer("abc")) == "abc"


def test_cycle_of_empty_source_ends() -> None:
    # pescador loops forever here; a run that yields nothing ends the cycle.
    assert list(Streamer(empty).cycle()) == []
    assert list(Streamer([]).cycle(max_iter=5)) == []


@pytest.mark.anyio
async def test_cycle_of_empty_async_source_ends() -> None:
    async def nothing() -> AsyncIterator[int]:
        return
        yield

    assert [x async for x in Streamer(nothing).cycle()] == []
    assert await Streamer(nothing).take(3) == []


def test_generator_object_source_is_one_shot() -> None:
    streamer = Streamer(count(3))
    assert list(streamer) == [0, 1, 2]
    with pytest.raises(ConfigError, match="read only once"):
        list(streamer)
    with pytest.raises(ConfigError, match="read only once"):
        list(Streamer(count(2)).cycle())


def test_coroutine_object_is_rejected_without_a_warning() -> None:
    async def coro() -> int:
        return 1

    with pytest.raises(ConfigError, match="coroutine"):
        Streamer(coro())  # type: ignore[call-overload]


# -- bad input


@pytest.mark.parametrize(
    ("source", "fragment"),
    [(42, "42"), (None, "None"), (3.5, "3.5")],
)
def test_non_source_is_rejected_at_construction(source: Any, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment) as info:
        Streamer(source)
    assert isinstance(info.value, PescadorError)


def test_coroutine_function_is_rejected_at_construction() -> None:
    async def not_a_generator() -> int:
        return 1

    with pytest.raises(ConfigError, match="coroutine function"):
        Streamer(not_a_generator)  # type: ignore[call-overload]
    with pytest.raises(ConfigError, match="coroutine function"):
        am.streamable(not_a_generator)  # type: ignore[arg-type]


def test_arguments_for_a_non_callable_are_rejected() -> None:
    with pytest.raises(ConfigError, match="takes no arguments"):
        Streamer([1, 2], 3)  # type: ignore[call-overload]


def test_callable_returning_a_coroutine_fails_cleanly() -> None:
    async def coro() -> int:
        return 1

    streamer = Streamer(lambda: coro())  # type: ignore[call-overload]
    with pytest.raises(ConfigError, match="coroutine"):
        list(streamer)


def test_callable_returning_a_non_iterable_fails_cleanly() -> None:
    streamer = Streamer(lambda: 7)  # type: ignore[call-overload]
    with pytest.raises(ConfigError, match="'int'"):
        next(iter(streamer))


@pytest.mark.parametrize("max_iter", [-1, -10, 2.5, "3", True])
def test_bad_max_iter_is_rejected_at_call(max_iter: Any) -> None:
    streamer = Streamer(count, 3)
    for method in (streamer.iterate, streamer.cycle, streamer):
        with pytest.raises(ConfigError, match="max_iter"):
            method(max_iter)


def test_numpy_integer_max_iter() -> None:
    import numpy as np

    assert list(Streamer(count, 5).iterate(np.int64(2))) == [0, 1]  # type: ignore[arg-type]


# -- errors from the source


def _frames(exc: BaseException) -> list[str]:
    return [frame.name for frame in traceback.extract_tb(exc.__traceback__)]


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_source_error_reaches_sync_consumer(lifecycle: Lifecycle, kind: str) -> None:
    source = lifecycle.sync_source if kind == "sync" else lifecycle.async_source
    seen: list[int] = []
    with pytest.raises(ValueError, match="failed at 3") as info:
        for x in Streamer(source, 10, fail_at=3):
            seen.append(x)
    assert seen == [0, 1, 2]
    assert f"{kind}_source" in _frames(info.value)


@pytest.mark.anyio
@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_source_error_reaches_async_consumer(lifecycle: Lifecycle, kind: str) -> None:
    source = lifecycle.sync_source if kind == "sync" else lifecycle.async_source
    seen: list[int] = []
    with pytest.raises(ValueError, match="failed at 3") as info:
        async with Streamer(source, 10, fail_at=3).open() as stream:
            async for x in stream:
                seen.append(x)
    assert seen == [0, 1, 2]
    assert f"{kind}_source" in _frames(info.value)


# -- cleanup


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_break_runs_finally_promptly_sync(lifecycle: Lifecycle, kind: str) -> None:
    source = lifecycle.sync_source if kind == "sync" else lifecycle.async_source
    for x in Streamer(source, 1000):
        if x == 2:
            break
    assert lifecycle.started == 1
    assert lifecycle.open == 0


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_with_block_closes(lifecycle: Lifecycle, kind: str) -> None:
    source = lifecycle.sync_source if kind == "sync" else lifecycle.async_source
    streamer = Streamer(source, 1000)
    with streamer.iterate() as stream:
        assert next(stream) == 0
        assert next(stream) == 1
        assert lifecycle.open == 1
    assert lifecycle.open == 0
    with pytest.raises(StopIteration):
        next(stream)


@pytest.mark.anyio
@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_async_with_and_aclose_run_finally(lifecycle: Lifecycle, kind: str) -> None:
    source = lifecycle.sync_source if kind == "sync" else lifecycle.async_source
    async with Streamer(source, 1000).iterate() as stream:
        async for x in stream:
            if x == 2:
                break
    assert lifecycle.open == 0
    stream = Streamer(source, 1000).iterate()
    assert await stream.__anext__() == 0
    await stream.aclose()
    assert lifecycle.open == 0
    async with Streamer(source, 1000).open() as stream:
        assert await stream.take(3) == [0, 1, 2]
    assert lifecycle.open == 0


@pytest.mark.asyncio
async def test_plain_async_for_break_closes_on_asyncio(lifecycle: Lifecycle) -> None:
    async for x in Streamer(lifecycle.async_source, 1000):
        if x == 1:
            break
    # asyncio finalises the dropped generator on its next loop iteration.
    for _ in range(3):
        await asyncio.sleep(0)
    assert lifecycle.open == 0


def test_sync_and_async_protocols_do_not_mix() -> None:
    stream = Streamer(count, 5).iterate()
    assert next(stream) == 0

    async def use_async() -> None:
        await stream.__anext__()

    with pytest.raises(RuntimeError, match="'for'"):
        asyncio.run(use_async())
    stream.close()


def test_closed_stream_does_not_restart() -> None:
    stream = Streamer(count, 5).iterate()
    stream.close()
    assert list(stream) == []


# -- pescador's bookkeeping


def test_active_and_is_activated_copy() -> None:
    streamer = Streamer(count, 5)
    assert streamer.active == 0
    assert not streamer.is_activated_copy
    first = streamer.iterate()
    assert first.is_activated_copy
    assert next(first) == 0
    assert streamer.active == 1
    second = streamer.iterate()
    next(second)
    assert streamer.active == 2
    first.close()
    assert streamer.active == 1
    assert list(second) == [1, 2, 3, 4]
    assert streamer.active == 0


def test_copy_deepcopy_and_pickle() -> None:
    streamer = Streamer(count, 3, start=10)
    for clone in (
        copy.copy(streamer),
        copy.deepcopy(streamer),
        pickle.loads(pickle.dumps(streamer)),
    ):
        assert isinstance(clone, Streamer)
        assert list(clone) == [10, 11, 12]
        assert clone.args == (3,)
        assert clone.kwargs == {"start": 10}
    async_clone = pickle.loads(pickle.dumps(Streamer(acount, 2)))
    assert list(async_clone) == [0, 1]
    assert list(pickle.loads(pickle.dumps(decorated(3)))) == [0, 1, 2]
    assert list(pickle.loads(pickle.dumps(adecorated(2)))) == [0, 1]


def test_pickle_while_active() -> None:
    streamer = Streamer(count, 3)
    stream = streamer.iterate()
    next(stream)
    assert list(pickle.loads(pickle.dumps(streamer))) == [0, 1, 2]
    stream.close()


def test_streamable_keeps_metadata() -> None:
    assert decorated.__name__ == "decorated"
    assert decorated.__doc__ is None
    assert isinstance(decorated(2), Streamer)
    assert decorated(2).args == (2,)


def test_repr() -> None:
    streamer = Streamer(count, 3)
    assert "count" in repr(streamer)
    stream = streamer.iterate(max_iter=2)
    assert "not started" in repr(stream)
    next(stream)
    assert "sync" in repr(stream)
    stream.close()
    assert "closed" in repr(stream)


# -- notebook helpers


@pytest.mark.anyio
async def test_take_and_to_list() -> None:
    streamer = Streamer(acount, 10)
    assert await streamer.take(3) == [0, 1, 2]
    assert await streamer.take(0) == []
    assert await Streamer(count, 2).take(5) == [0, 1]
    stream = streamer.iterate()
    assert await stream.take(4) == [0, 1, 2, 3]
    assert await stream.to_list() == [4, 5, 6, 7, 8, 9]
    assert await stream.take(2) == []
    with pytest.raises(ConfigError):
        await streamer.take(-1)


def test_stream_type_is_exported() -> None:
    assert isinstance(Streamer(count, 1).iterate(), Stream)


def test_pescador_with_block_gives_an_activation() -> None:
    streamer = Streamer(count, 4)
    with streamer as active:
        assert active.is_activated_copy
        assert streamer.active == 0  # not started yet
        assert next(active.stream_) == 0
        assert streamer.active == 1
        with streamer as other:
            assert list(other) == [0, 1, 2, 3]
        assert list(active.stream_) == [1, 2, 3]
    assert streamer.active == 0
    theirs = pescador.Streamer(count, 4)
    with theirs as active_p:
        assert list(active_p.stream_) == [0, 1, 2, 3]


def test_open_also_works_with_a_plain_with(lifecycle: Lifecycle) -> None:
    with Streamer(lifecycle.async_source, 100).open(max_iter=50) as stream:
        assert next(stream) == 0
        assert len(list(stream)) == 49
    with Streamer(lifecycle.sync_source, 100).open() as stream:
        assert next(stream) == 0
    assert lifecycle.open == 0

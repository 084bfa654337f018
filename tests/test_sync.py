"""The sync adapter: plain scripts, running event loops (Jupyter), threads, batching."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from aiostream_mux import Streamer, _sync

from .conftest import Lifecycle


def count(n: int) -> Iterator[int]:
    yield from range(n)


async def acount(n: int) -> AsyncIterator[int]:
    for i in range(n):
        yield i


def portal_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "aiostream_mux-portal"]


def test_sync_pipeline_starts_no_thread_or_loop() -> None:
    before = threading.active_count()
    stream = Streamer(count, 1000).iterate()
    assert next(stream) == 0
    assert threading.active_count() == before
    assert portal_threads() == []
    assert sum(stream) == sum(range(1, 1000))


def test_async_source_portal_is_closed_after_use(lifecycle: Lifecycle) -> None:
    assert list(Streamer(lifecycle.async_source, 50)) == list(range(50))
    assert portal_threads() == []
    for x in Streamer(lifecycle.async_source, 10_000):
        if x == 5:
            break
    assert portal_threads() == []
    assert lifecycle.open == 0
    with Streamer(lifecycle.async_source, 10_000).iterate() as stream:
        assert next(stream) == 0
        assert len(portal_threads()) == 1
    assert portal_threads() == []
    assert lifecycle.open == 0


def test_async_source_items_cross_in_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    refills = 0
    original = _sync.PortalIterator._refill

    def counting_refill(self: _sync.PortalIterator[int]) -> int:
        nonlocal refills
        refills += 1
        return original(self)

    monkeypatch.setattr(_sync.PortalIterator, "_refill", counting_refill)
    n = 20_000
    assert sum(Streamer(acount, n)) == sum(range(n))
    # One hand-over per item would mean n refills; batches of up to the
    # prefetch size mean far fewer.
    assert refills <= n // 8, refills


def test_prefetch_is_bounded(lifecycle: Lifecycle) -> None:
    stream = Streamer(lifecycle.async_source, 100_000).iterate()
    with stream:
        next(stream)
        # The producer stops when the buffer is full: wait for that state.
        channel = stream._sync._channel  # type: ignore[union-attr]
        with channel.cond:
            channel.cond.wait_for(lambda: channel.parked is not None or channel.finished)
        assert lifecycle.yielded <= 1 + _sync.DEFAULT_PREFETCH + 1
    assert lifecycle.open == 0


def test_async_source_with_latency_sync_consumer(lifecycle: Lifecycle) -> None:
    out = list(Streamer(lifecycle.async_source, 20, delay=0.001))
    assert out == list(range(20))


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_sync_iteration_inside_a_running_loop(lifecycle: Lifecycle, kind: str) -> None:
    """The Jupyter situation: plain ``for`` on a thread whose asyncio loop runs."""
    source = lifecycle.sync_source if kind == "sync" else lifecycle.async_source

    async def cell() -> list[int]:
        asyncio.get_running_loop()  # a loop is running here
        streamer = Streamer(source, 300)
        first = [x for x in streamer.iterate(max_iter=5)]
        rest = list(streamer.cycle(max_iter=400))
        return first + rest[-3:]

    assert asyncio.run(cell()) == [0, 1, 2, 3, 4, 97, 98, 99]
    assert lifecycle.open == 0


def test_sync_iteration_from_many_threads(lifecycle: Lifecycle) -> None:
    shared = Streamer(lifecycle.async_source, 2000)
    sync_shared = Streamer(lifecycle.sync_source, 2000)

    def consume(i: int) -> int:
        streamer = shared if i % 2 else sync_shared
        return sum(streamer.iterate(max_iter=1500 + i))

    with ThreadPoolExecutor(max_workers=6) as pool:
        results = list(pool.map(consume, range(12)))
    assert results == [sum(range(1500 + i)) for i in range(12)]
    assert lifecycle.open == 0
    assert shared.active == 0


def test_error_while_closing_async_source_surfaces() -> None:
    async def bad_finally() -> AsyncIterator[int]:
        try:
            yield 1
        finally:
            raise KeyError("cleanup failed")

    with pytest.raises(KeyError, match="cleanup failed"):
        list(Streamer(bad_finally))

"""Quickstart: one Streamer, used from a plain script and from async code.

Run it with ``python examples/quickstart.py``.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator

import anyio

import aiostream_mux as pescador  # drop-in: pescador code keeps working


def numbers(n: int) -> Iterator[int]:
    """A classic pescador source: a sync generator function."""
    yield from range(n)


async def downloads(n: int, latency: float) -> AsyncIterator[dict[str, float]]:
    """An I/O-bound async source: every sample waits, as a download would."""
    for i in range(n):
        await anyio.sleep(latency)
        yield {"index": float(i), "value": i * 0.5}


def sync_part() -> None:
    print("== sync, exactly as with pescador")
    streamer = pescador.Streamer(numbers, 5)
    print("all:        ", list(streamer))
    print("max_iter=3: ", list(streamer(max_iter=3)))
    print("cycle(7):   ", list(streamer.cycle(max_iter=7)))

    # An async source in a plain for loop: it runs on a background event loop.
    samples = pescador.Streamer(downloads, 20, 0.001)
    total = sum(sample["value"] for sample in samples)
    print("async source, sync loop: total =", total)


async def async_part() -> None:
    print("== async")
    streamer = pescador.Streamer(downloads, 1000, 0.001)
    first = await streamer.take(3)
    print("take(3):    ", [s["index"] for s in first])

    start = time.perf_counter()
    async with streamer.open(max_iter=50) as stream:
        n = 0
        async for _sample in stream:
            n += 1
    print(f"open():      {n} samples in {time.perf_counter() - start:.3f} s")

    # The same sync generator works with async for, too.
    print("async for:  ", [x async for x in pescador.Streamer(numbers, 4)])


def main() -> None:
    sync_part()
    anyio.run(async_part)
    print("done")


if __name__ == "__main__":
    main()

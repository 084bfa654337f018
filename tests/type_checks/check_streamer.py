"""Static checks (mypy): the item type flows from the source to every use.

Not collected by pytest; ``nox -s typecheck`` checks it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

from typing_extensions import assert_type

import aiostream_mux as am


def words(n: int, sep: str = " ") -> Iterator[str]:
    yield from (sep * i for i in range(n))


async def floats(n: int) -> AsyncIterator[float]:
    for i in range(n):
        yield float(i)


@am.streamable
def decorated(n: int) -> Iterator[bytes]:
    yield b"x" * n


def sync_uses() -> None:
    streamer = am.Streamer(words, 3, sep="-")
    assert_type(streamer, am.Streamer[str])
    assert_type(am.Streamer(floats, 2), am.Streamer[float])
    assert_type(am.Streamer([1, 2]), am.Streamer[int])
    assert_type(am.Streamer(streamer), am.Streamer[str])
    assert_type(streamer.iterate(max_iter=2), am.Stream[str])
    assert_type(streamer.cycle(), am.Stream[str])
    assert_type(streamer(max_iter=1, cycle=True), am.Stream[str])
    assert_type(decorated(3), am.Streamer[bytes])
    for word in streamer:
        assert_type(word, str)
    with streamer.iterate() as stream:
        assert_type(next(stream), str)


async def async_uses() -> None:
    streamer = am.Streamer(floats, 3)
    async for value in streamer:
        assert_type(value, float)
    async with streamer.open(max_iter=2) as stream:
        assert_type(stream, am.Stream[float])
        assert_type(await stream.take(1), list[float])
    assert_type(await streamer.take(2), list[float])


def wrong_arguments() -> Any:
    # A source's own signature is checked.
    return am.Streamer(words, "three")  # type: ignore[call-overload]

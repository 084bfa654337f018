"""Per-item overhead of a plain Streamer: aiostream_mux against pescador 3.0 and bare generators.

Every variant drains ``n`` integers ``0 .. n-1`` with the same trivial loop
(``for x in it: pass`` or ``async for x in it: pass``) and returns ``x + 1``, the
item count, so the loop body does no bookkeeping. The floors are the bare
generators with no Streamer in between.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator

import pescador

import aiostream_mux

from ._harness import Ratio, Workload, run_async

N_DEFAULT = 200_000
N_QUICK = 20_000

FLOOR = "bare generator (floor)"
AFLOOR = "bare async generator (floor)"
PESCADOR = "pescador"
MUX = "aiostream_mux"


# One Python-level step per item, like a real source (``yield from range(n)`` would not be).
def gen(n: int) -> Iterator[int]:
    for i in range(n):  # noqa: UP028
        yield i


async def agen(n: int) -> AsyncIterator[int]:
    for i in range(n):
        yield i


# The loop bodies are empty; the last item, n - 1, gives the count.
def drain(it: Iterable[int]) -> int:
    x = -1
    for x in it:  # noqa: B007
        pass
    return x + 1


async def adrain(ait: AsyncIterable[int]) -> int:
    x = -1
    async for x in ait:  # noqa: B007
        pass
    return x + 1


def workloads(*, quick: bool = False) -> list[Workload]:
    n = N_QUICK if quick else N_DEFAULT

    def floor() -> int:
        return drain(gen(n))

    async def afloor() -> int:
        return await adrain(agen(n))

    def pescador_for() -> int:
        return drain(pescador.Streamer(gen, n))

    return [
        Workload(
            "sync Streamer over a sync generator",
            {
                FLOOR: floor,
                PESCADOR: pescador_for,
                MUX: lambda: drain(aiostream_mux.Streamer(gen, n)),
            },
            ratios=(Ratio(MUX, PESCADOR, target=1.0), Ratio(MUX, FLOOR)),
            items=n,
            note="for x in Streamer(gen, n)",
        ),
        Workload(
            "sync Streamer.iterate(max_iter=n) over a sync generator",
            {
                FLOOR: floor,
                PESCADOR: lambda: drain(pescador.Streamer(gen, n).iterate(max_iter=n)),
                MUX: lambda: drain(aiostream_mux.Streamer(gen, n).iterate(max_iter=n)),
            },
            ratios=(Ratio(MUX, PESCADOR, target=1.0), Ratio(MUX, FLOOR)),
            items=n,
            note="for x in Streamer(gen, n).iterate(max_iter=n)",
        ),
        Workload(
            "async Streamer over an async generator",
            {
                AFLOOR: run_async(afloor),
                MUX: run_async(lambda: adrain(aiostream_mux.Streamer(agen, n))),
            },
            ratios=(Ratio(MUX, AFLOOR, target=0.67),),
            items=n,
            note="asyncio.run: async for x in Streamer(agen, n)",
        ),
        Workload(
            "async Streamer.iterate(max_iter=n) over an async generator",
            {
                AFLOOR: run_async(afloor),
                MUX: run_async(lambda: adrain(aiostream_mux.Streamer(agen, n).iterate(max_iter=n))),
            },
            ratios=(Ratio(MUX, AFLOOR),),
            items=n,
            note="asyncio.run: async for x in Streamer(agen, n).iterate(max_iter=n)",
        ),
        Workload(
            "async for over a sync generator (informative)",
            {
                FLOOR: floor,
                PESCADOR: pescador_for,
                MUX: run_async(lambda: adrain(aiostream_mux.Streamer(gen, n))),
            },
            ratios=(Ratio(MUX, PESCADOR),),
            items=n,
            note="aiostream_mux: asyncio.run: async for x in Streamer(gen, n); "
            "pescador: for x in Streamer(gen, n)",
        ),
        Workload(
            "sync for over an async generator, background-loop bridge (informative)",
            {
                FLOOR: floor,
                AFLOOR: run_async(afloor),
                PESCADOR: pescador_for,
                MUX: lambda: drain(aiostream_mux.Streamer(agen, n)),
            },
            ratios=(Ratio(MUX, PESCADOR), Ratio(MUX, AFLOOR)),
            items=n,
            note="aiostream_mux: for x in Streamer(agen, n); "
            "pescador (sync generator): for x in Streamer(gen, n)",
        ),
    ]


if __name__ == "__main__":
    from .__main__ import main

    raise SystemExit(main(["streamer", *sys.argv[1:]]))

"""Maps: ``buffer_stream`` against pescador 3.0 and a list + ``np.array`` floor; ``map_concurrent``.

``buffer_stream`` workloads batch ``n`` items ``{'X': float32 (128,), 'y': int}`` by 64
and return the number of items batched. The floor collects items in a list and
stacks each key with ``np.array``, as pescador does (``np.stack`` is about 3x slower
on 64 small arrays, so it would be no floor). The arrays are made once, up front;
the generators only build the dicts, as a real source would.

``map_concurrent`` workloads apply an async function that waits 1 ms
(``await asyncio.sleep(0.001)``) at concurrency 32, against a sequential
``await`` loop over the same function.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Iterator
from typing import Any

import numpy as np
import pescador

import aiostream_mux
from aiostream_mux.maps import buffer_stream, map_concurrent

from ._harness import Ratio, Workload, run_async

BATCH = 64
WIDTH = 128
N_DEFAULT = 64 * 3_000
N_QUICK = 64 * 300
CALLS_DEFAULT = 1_000
CALLS_QUICK = 200
CONCURRENCY = 32
DELAY = 0.001

FLOOR = "list + np.array (floor)"
AFLOOR = "async for + list + np.array (floor)"
PESCADOR = "pescador"
MUX = "aiostream_mux"

_X = [np.random.default_rng(0).random(WIDTH, dtype=np.float32) for _ in range(256)]


def gen(n: int) -> Iterator[dict[str, Any]]:
    for i in range(n):
        yield {"X": _X[i & 255], "y": i}


async def agen(n: int) -> AsyncIterator[dict[str, Any]]:
    for i in range(n):
        yield {"X": _X[i & 255], "y": i}


def stack(batch: list[dict[str, Any]]) -> dict[str, Any]:
    return {key: np.array([item[key] for item in batch]) for key in batch[0]}


def floor(n: int) -> int:
    batch: list[dict[str, Any]] = []
    done = 0
    for item in gen(n):
        batch.append(item)
        if len(batch) == BATCH:
            done += len(stack(batch)["y"])
            batch = []
    return done


async def afloor(n: int) -> int:
    batch: list[dict[str, Any]] = []
    done = 0
    async for item in agen(n):
        batch.append(item)
        if len(batch) == BATCH:
            done += len(stack(batch)["y"])
            batch = []
    return done


def drain(batches: Any) -> int:
    return sum(len(batch["y"]) for batch in batches)


async def adrain(batches: Any) -> int:
    done = 0
    async for batch in batches:
        done += len(batch["y"])
    return done


async def wait_1ms(x: int) -> int:
    await asyncio.sleep(DELAY)
    return x


async def sequential(n: int) -> int:
    done = 0
    for x in range(n):
        await wait_1ms(x)
        done += 1
    return done


async def concurrent(n: int, ordered: bool) -> int:
    done = 0
    async for _ in map_concurrent(range(n), wait_1ms, concurrency=CONCURRENCY, ordered=ordered):
        done += 1
    return done


def workloads(*, quick: bool = False) -> list[Workload]:
    n = N_QUICK if quick else N_DEFAULT
    calls = CALLS_QUICK if quick else CALLS_DEFAULT

    def pescador_for() -> int:
        return drain(pescador.buffer_stream(pescador.Streamer(gen, n), BATCH))

    return [
        Workload(
            "sync buffer_stream, batch 64 of {'X': float32 (128,), 'y': int}",
            {
                FLOOR: lambda: floor(n),
                PESCADOR: pescador_for,
                MUX: lambda: drain(buffer_stream(aiostream_mux.Streamer(gen, n), BATCH)),
            },
            ratios=(
                Ratio(MUX, PESCADOR, target=1.0),
                Ratio(MUX, FLOOR),
                Ratio(PESCADOR, FLOOR),
            ),
            items=n,
            note="for b in buffer_stream(Streamer(gen, n), 64)",
        ),
        Workload(
            "async buffer_stream over an async generator, batch 64",
            {
                FLOOR: lambda: floor(n),
                AFLOOR: run_async(lambda: afloor(n)),
                PESCADOR: pescador_for,
                MUX: run_async(
                    lambda: adrain(buffer_stream(aiostream_mux.Streamer(agen, n), BATCH))
                ),
            },
            ratios=(Ratio(MUX, PESCADOR, target=0.8), Ratio(MUX, AFLOOR)),
            items=n,
            note="aiostream_mux: asyncio.run: async for b in buffer_stream(Streamer(agen, n), 64); "
            "pescador: for b in buffer_stream(Streamer(gen, n), 64)",
        ),
        Workload(
            "async buffer_stream over a sync generator, batch 64",
            {
                FLOOR: lambda: floor(n),
                PESCADOR: pescador_for,
                MUX: run_async(
                    lambda: adrain(buffer_stream(aiostream_mux.Streamer(gen, n), BATCH))
                ),
            },
            ratios=(Ratio(MUX, PESCADOR, target=0.8), Ratio(MUX, FLOOR)),
            items=n,
            note="aiostream_mux: asyncio.run: async for b in buffer_stream(Streamer(gen, n), 64)",
        ),
        Workload(
            "recipe Streamer(buffer_stream, streamer, 64), sync (informative)",
            {
                FLOOR: lambda: floor(n),
                PESCADOR: lambda: drain(
                    pescador.Streamer(pescador.buffer_stream, pescador.Streamer(gen, n), BATCH)
                ),
                MUX: lambda: drain(
                    aiostream_mux.Streamer(buffer_stream, aiostream_mux.Streamer(gen, n), BATCH)
                ),
            },
            ratios=(Ratio(MUX, PESCADOR),),
            items=n,
        ),
        Workload(
            "map_concurrent, 1 ms async function, concurrency 32",
            {
                "sequential await loop": run_async(lambda: sequential(calls)),
                MUX: run_async(lambda: concurrent(calls, ordered=True)),
                f"{MUX} ordered=False": run_async(lambda: concurrent(calls, ordered=False)),
                f"{MUX} sync for": lambda: sum(
                    1 for _ in map_concurrent(range(calls), wait_1ms, concurrency=CONCURRENCY)
                ),
            },
            ratios=(
                Ratio(MUX, "sequential await loop", target=15.0),
                Ratio(f"{MUX} ordered=False", "sequential await loop"),
                Ratio(f"{MUX} sync for", "sequential await loop"),
            ),
            items=calls,
            note="async for y in map_concurrent(range(n), wait_1ms, concurrency=32) "
            "vs for x in range(n): await wait_1ms(x)",
        ),
    ]


if __name__ == "__main__":
    from .__main__ import main

    raise SystemExit(main(["maps", *sys.argv[1:]]))

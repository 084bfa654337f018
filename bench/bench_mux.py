"""Muxes: StochasticMux, ShuffledMux, RoundRobinMux and ChainMux against pescador 3.0.

Every variant builds its members and its mux, draws ``n`` samples with
``mux(max_iter=n)`` and counts them with the same trivial loop
(``for _ in it: count += 1``, or its ``async for`` form), returning the count.
The members are endless generators (finite ones for ChainMux) with one
Python-level step per item; member ``k`` yields ``k * 10**9, k * 10**9 + 1, ...``,
so an item names its member and its position.

The StochasticMux is seeded (``random_state=1``), which makes aiostream_mux give
pescador's exact sequence: :func:`check_same_sequence` asserts it once, before
any timing, for sync members and for async ones.

The I/O-bound workload waits 1 ms per sample (``time.sleep`` in pescador's sync
members, ``await asyncio.sleep`` in aiostream_mux's async ones). pescador runs it
serially, so it gets a much smaller ``n`` than aiostream_mux; the ratio is one of
items/s, so different counts compare fairly (an informative variant runs
aiostream_mux at pescador's ``n`` to show its start-up cost).
"""

from __future__ import annotations

import asyncio
import itertools
import sys
import time
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator

import pescador

import aiostream_mux

from ._harness import Ratio, Workload, run_async

# StochasticMux and ShuffledMux: pescador spends ~10 us and ~6 us per sample.
N_DEFAULT = 50_000
N_QUICK = 5_000
# RoundRobinMux and ChainMux: pescador spends well under 1 us per sample.
N_LIGHT_DEFAULT = 200_000
N_LIGHT_QUICK = 20_000
# I/O-bound: pescador sleeps 1 ms per sample, serially.
N_IO_PESCADOR_DEFAULT = 300
N_IO_PESCADOR_QUICK = 60
N_IO_MUX_DEFAULT = 3_000
N_IO_MUX_QUICK = 1_500
# Samples compared by check_same_sequence.
N_CHECK = 2_000

N_STOCHASTIC = 100
N_ACTIVE = 10
RATE = 16
SEED = 1
N_SMALL = 10  # members of ShuffledMux, RoundRobinMux and ChainMux
CHAIN_LENGTH = 100  # items per ChainMux member
N_IO = 32
IO_RATE = 16
DELAY = 0.001
STRIDE = 1_000_000_000

PESCADOR = "pescador"
MUX = "aiostream_mux"
MUX_ASYNC = "aiostream_mux async for, async members"
MUX_ASYNC_SYNC = "aiostream_mux async for, sync members"


# One Python-level step per item, like a real source.
def gen(k: int) -> Iterator[int]:
    for i in itertools.count(k * STRIDE):  # noqa: UP028
        yield i


async def agen(k: int) -> AsyncIterator[int]:
    for i in itertools.count(k * STRIDE):
        yield i


def finite_gen(k: int, n: int) -> Iterator[int]:
    for i in range(k * STRIDE, k * STRIDE + n):  # noqa: UP028
        yield i


def slow_gen(k: int) -> Iterator[int]:
    for i in itertools.count(k * STRIDE):
        time.sleep(DELAY)
        yield i


async def slow_agen(k: int) -> AsyncIterator[int]:
    for i in itertools.count(k * STRIDE):
        await asyncio.sleep(DELAY)
        yield i


# The loop bodies only count.
def count(it: Iterable[int]) -> int:
    n = 0
    for _ in it:
        n += 1
    return n


async def acount(ait: AsyncIterable[int]) -> int:
    n = 0
    async for _ in ait:
        n += 1
    return n


# -- the muxes, built inside each timed run (construction is part of the work)
def pescador_stochastic() -> pescador.StochasticMux:
    members = [pescador.Streamer(gen, k) for k in range(N_STOCHASTIC)]
    return pescador.StochasticMux(members, n_active=N_ACTIVE, rate=RATE, random_state=SEED)


def mux_stochastic(*, async_members: bool = False) -> aiostream_mux.StochasticMux[int]:
    members = [
        aiostream_mux.Streamer(agen, k) if async_members else aiostream_mux.Streamer(gen, k)
        for k in range(N_STOCHASTIC)
    ]
    return aiostream_mux.StochasticMux(members, n_active=N_ACTIVE, rate=RATE, random_state=SEED)


def check_same_sequence(n: int = N_CHECK) -> None:
    """Assert that seeded StochasticMuxes give pescador's sequence (outside any timing)."""
    expected = list(pescador_stochastic()(max_iter=n))
    got_sync = list(mux_stochastic()(max_iter=n))
    got_async = asyncio.run(mux_stochastic(async_members=True)(max_iter=n).to_list())
    assert len(expected) == n, f"pescador gave {len(expected)} samples, expected {n}"
    assert got_sync == expected, "aiostream_mux StochasticMux (sync) differs from pescador"
    assert got_async == expected, "aiostream_mux StochasticMux (async) differs from pescador"


def workloads(*, quick: bool = False) -> list[Workload]:
    n = N_QUICK if quick else N_DEFAULT
    n_light = N_LIGHT_QUICK if quick else N_LIGHT_DEFAULT
    n_io_pescador = N_IO_PESCADOR_QUICK if quick else N_IO_PESCADOR_DEFAULT
    n_io_mux = N_IO_MUX_QUICK if quick else N_IO_MUX_DEFAULT

    check_same_sequence()

    def pescador_stochastic_for() -> int:
        return count(pescador_stochastic()(max_iter=n))

    def pescador_shuffled() -> int:
        members = [pescador.Streamer(gen, k) for k in range(N_SMALL)]
        return count(pescador.ShuffledMux(members, random_state=SEED)(max_iter=n))

    def mux_shuffled() -> int:
        members = [aiostream_mux.Streamer(gen, k) for k in range(N_SMALL)]
        return count(aiostream_mux.ShuffledMux(members, random_state=SEED)(max_iter=n))

    def pescador_roundrobin() -> int:
        members = [pescador.Streamer(gen, k) for k in range(N_SMALL)]
        return count(pescador.RoundRobinMux(members, mode="cycle")(max_iter=n_light))

    def mux_roundrobin() -> int:
        members = [aiostream_mux.Streamer(gen, k) for k in range(N_SMALL)]
        return count(aiostream_mux.RoundRobinMux(members, mode="cycle")(max_iter=n_light))

    def pescador_chain() -> int:
        members = [pescador.Streamer(finite_gen, k, CHAIN_LENGTH) for k in range(N_SMALL)]
        return count(pescador.ChainMux(members, mode="cycle")(max_iter=n_light))

    def mux_chain() -> int:
        members = [aiostream_mux.Streamer(finite_gen, k, CHAIN_LENGTH) for k in range(N_SMALL)]
        return count(aiostream_mux.ChainMux(members, mode="cycle")(max_iter=n_light))

    def pescador_io() -> int:
        members = [pescador.Streamer(slow_gen, k) for k in range(N_IO)]
        mux = pescador.StochasticMux(members, n_active=N_IO, rate=IO_RATE, random_state=SEED)
        return count(mux(max_iter=n_io_pescador))

    async def mux_io(n_items: int) -> int:
        members = [aiostream_mux.Streamer(slow_agen, k) for k in range(N_IO)]
        mux = aiostream_mux.StochasticMux(members, n_active=N_IO, rate=IO_RATE, random_state=SEED)
        return await acount(mux(max_iter=n_items))

    stochastic = f"StochasticMux({N_STOCHASTIC} streamers, n_active={N_ACTIVE}, rate={RATE})"
    io_mux_small = f"{MUX} n={n_io_pescador}"
    return [
        Workload(
            f"sync {stochastic} over endless sync generators",
            {
                PESCADOR: pescador_stochastic_for,
                MUX: lambda: count(mux_stochastic()(max_iter=n)),
            },
            ratios=(Ratio(MUX, PESCADOR, target=4.0),),
            items=n,
            note=f"for _ in StochasticMux(..., random_state={SEED})(max_iter=n); "
            "same sequence checked",
        ),
        Workload(
            f"async {stochastic} over endless async generators",
            {
                PESCADOR: pescador_stochastic_for,
                MUX_ASYNC: run_async(
                    lambda: acount(mux_stochastic(async_members=True)(max_iter=n))
                ),
                MUX_ASYNC_SYNC: run_async(lambda: acount(mux_stochastic()(max_iter=n))),
            },
            ratios=(Ratio(MUX_ASYNC, PESCADOR, target=2.0), Ratio(MUX_ASYNC_SYNC, PESCADOR)),
            items=n,
            note="aiostream_mux: asyncio.run: async for _ in mux(max_iter=n); "
            "pescador (sync generators): for _ in mux(max_iter=n)",
        ),
        Workload(
            f"sync ShuffledMux({N_SMALL} streamers) over endless sync generators",
            {PESCADOR: pescador_shuffled, MUX: mux_shuffled},
            ratios=(Ratio(MUX, PESCADOR, target=9.0),),
            items=n,
            note=f"for _ in ShuffledMux(..., random_state={SEED})(max_iter=n)",
        ),
        Workload(
            f"sync RoundRobinMux({N_SMALL} streamers, mode='cycle') over endless sync generators",
            {PESCADOR: pescador_roundrobin, MUX: mux_roundrobin},
            ratios=(Ratio(MUX, PESCADOR, target=2.5),),
            items=n_light,
            note="for _ in RoundRobinMux(..., mode='cycle')(max_iter=n)",
        ),
        Workload(
            f"sync ChainMux({N_SMALL} streamers of {CHAIN_LENGTH} items, mode='cycle')",
            {PESCADOR: pescador_chain, MUX: mux_chain},
            ratios=(Ratio(MUX, PESCADOR, target=2.5),),
            items=n_light,
            note="for _ in ChainMux(..., mode='cycle')(max_iter=n)",
        ),
        Workload(
            f"I/O-bound StochasticMux({N_IO} streamers, n_active={N_IO}, rate={IO_RATE}), "
            "1 ms per sample",
            {
                PESCADOR: pescador_io,
                MUX: run_async(lambda: mux_io(n_io_mux)),
                io_mux_small: run_async(lambda: mux_io(n_io_pescador)),
            },
            ratios=(Ratio(MUX, PESCADOR, target=18.0), Ratio(io_mux_small, PESCADOR)),
            note=f"pescador: for _ in mux(max_iter={n_io_pescador}), time.sleep(0.001) per sample; "
            f"aiostream_mux: asyncio.run: async for _ in mux(max_iter={n_io_mux}), "
            "await asyncio.sleep(0.001) per sample",
        ),
    ]


if __name__ == "__main__":
    from .__main__ import main

    raise SystemExit(main(["mux", *sys.argv[1:]]))

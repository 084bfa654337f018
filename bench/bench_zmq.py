"""ZMQStreamer: arrays from a worker process, against pescador 3.0, raw pyzmq and memcpy.

Transfer workloads: a worker process yields the same float32 array ``n`` times
(4 KiB, 256 KiB, 4 MiB and 32 MiB); the consumer drains it with an empty loop.
Every variant pays for starting its process, as a user's epoch does:

- ``aiostream_mux`` — ``for x in ZMQStreamer(Streamer(gen, ...))`` (sync, through the
  background-loop bridge) and ``async for`` under ``asyncio.run``;
- ``pescador`` — ``for x in pescador.ZMQStreamer(pescador.Streamer(gen, ...))``;
- ``raw pyzmq`` — a process that sends the bare array buffer on a PUSH socket
  (``copy=False``), received on PULL with ``copy=False`` and ``np.frombuffer``,
  over ipc and tcp: the floor for a process plus ZeroMQ;
- ``memcpy`` — ``np.copyto`` of the same bytes in this process: the memory floor.

Multiply items/s by the item size for MB/s (it is in each workload's title).

Fairness (what each side does per run):

- the same bytes: one float32 array per item, made once in the worker. Raw sends
  it zero-copy (pyzmq copies frames under 64 KiB) and receives it zero-copy
  (``copy=False``, ``np.frombuffer``). Ours, with its defaults: arrays under 64 KiB
  are copied into a shared frame, several samples to a message; larger ones are
  written into a recycled shared-memory file (one copy, in the worker) and mapped
  by the consumer (no copy), with a small msgpack header per message, checked;
- the same process start: ``multiprocessing``'s default start method for both,
  a new process per run; the consumer's ZeroMQ context is one per process for
  both (ours shares one, raw uses ``zmq.Context.instance()``), the worker makes
  its own;
- socket options: raw keeps pyzmq's defaults (HWM 1000 messages, kernel
  buffer sizes); ours bounds what the worker sends ahead to 16 MiB (at least two
  messages), so memory stays bounded for any array size — stricter than raw's;
- the consumer does not read the arrays in the transfer workloads, for every
  variant; "consumer reads every page" repeats 4 MiB with a consumer that touches
  each 4 KiB page of each array, where a mapping pays its page faults;
- the end: raw receives exactly ``n`` arrays and joins its sender; ours
  receives an end message, asks the worker to stop and reaps it.

Time to first item: start, receive one array, end the worker; ``k`` (20) times
per run, and six times the rounds of the other workloads, since a round is
short and its paired ratios scatter. Both sides end and reap their worker inside
the timed loop (raw: SIGTERM, an immediate kill; ours: the polite STOP message,
the source closed in the worker, then its exit), so the time is "first item plus
ending the process" for both; ours pays the politeness. Each of ours is held
against raw pyzmq consumed the same way: ``for`` against a blocking PULL
socket, ``async for`` against a zmq.asyncio PULL socket, both async variants
under one ``asyncio.run`` per run. The async ratio against the sync raw is
reported too.
Two workers: a CPU-bound source on one ZMQStreamer, against a RoundRobinMux over
two ZMQStreamers sharing the same work.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pescador
import zmq
import zmq.asyncio

import aiostream_mux
from aiostream_mux._zmq import ZMQStreamer

from ._harness import Ratio, Workload, run_async

KiB, MiB = 1024, 1024 * 1024
#: (item size in bytes, items per run, items per run with --quick)
SIZES = [
    (4 * KiB, 50_000, 5_000),
    (256 * KiB, 2_000, 200),
    (4 * MiB, 128, 16),
    (32 * MiB, 16, 4),
]

MUX_SYNC = "aiostream_mux (for)"
MUX_ASYNC = "aiostream_mux (async for)"
PESCADOR = "pescador"
RAW_IPC = "raw pyzmq ipc"
RAW_TCP = "raw pyzmq tcp"
MEMCPY = "numpy memcpy (floor)"
RAW_FIRST = "raw pyzmq ipc + process start"
RAW_FIRST_ASYNC = "raw pyzmq ipc (zmq.asyncio) + process start"


# -- sources, at module level so every start method can import them


def arrays(n: int, nbytes: int) -> Iterator[dict[str, np.ndarray[Any, Any]]]:
    """The same array, ``n`` times: no allocation in the source."""
    x = np.ones(nbytes // 4, dtype=np.float32)
    for _ in range(n):
        yield {"x": x}


def spin(n: int, work: int) -> Iterator[dict[str, int]]:
    """CPU-bound samples: ``work`` steps of pure Python each."""
    for i in range(n):
        total = 0
        for j in range(work):
            total += j * j
        yield {"i": i, "v": total}


def raw_sender(address: str, n: int, nbytes: int) -> None:
    """The raw pyzmq worker: PUSH the bare buffer ``n`` times without copies."""
    x = np.ones(nbytes // 4, dtype=np.float32)
    context = zmq.Context()
    socket = context.socket(zmq.PUSH)
    socket.connect(address)
    for _ in range(n):
        socket.send(x.data, copy=False)
    socket.close(linger=-1)
    context.term()


# -- consumers


def drain(it: Any) -> int:
    count = 0
    for _ in it:
        count += 1
    return count


PAGE = 4096 // 4  # float32 elements per 4 KiB page


def drain_touching(it: Any) -> int:
    """Drain, reading one float32 of every 4 KiB page of each array."""
    count = 0
    for sample in it:
        sample["x"][::PAGE].sum()
        count += 1
    return count


async def adrain(ait: Any) -> int:
    count = 0
    async for _ in ait:
        count += 1
    return count


def raw_receive(
    n: int, nbytes: int, transport: str, first_only: bool = False, touch: bool = False
) -> int:
    """Start a raw sender process and receive its ``n`` arrays (or the first, then stop it).

    The receiving context is the process's shared one (``zmq.Context.instance()``),
    as ZMQStreamer shares one per process: neither pays for starting and joining
    ZeroMQ's I/O thread per run.
    """
    context: zmq.Context[Any] = zmq.Context.instance()
    socket = context.socket(zmq.PULL)
    directory = None
    try:
        if transport == "ipc":
            directory = tempfile.mkdtemp(prefix="bench-zmq-")
            address = f"ipc://{directory}/socket"
            socket.bind(address)
        else:
            port = socket.bind_to_random_port("tcp://127.0.0.1")
            address = f"tcp://127.0.0.1:{port}"
        process = multiprocessing.Process(target=raw_sender, args=(address, n, nbytes))
        process.start()
        count = 0
        for _ in range(n):
            frame = socket.recv(copy=False)
            x = np.frombuffer(frame.buffer, dtype=np.float32)
            if touch:
                x[::PAGE].sum()
            count += 1
            if first_only:
                process.terminate()  # a stream stopped mid-way, like the others
                break
        process.join()
        return count
    finally:
        socket.close(linger=0)
        if directory is not None:
            shutil.rmtree(directory, ignore_errors=True)


async def raw_first_async(nbytes: int) -> int:
    """``raw_receive(..., first_only=True)`` for an asyncio consumer: a zmq.asyncio PULL socket.

    The worker is ended as in the sync one (SIGTERM, then a blocking join: the
    cheapest way a bare script waits for a process).
    """
    context: zmq.asyncio.Context = zmq.asyncio.Context.instance()
    socket = context.socket(zmq.PULL)
    directory = tempfile.mkdtemp(prefix="bench-zmq-")
    try:
        address = f"ipc://{directory}/socket"
        socket.bind(address)
        process = multiprocessing.Process(target=raw_sender, args=(address, 10, nbytes))
        process.start()
        frame = await socket.recv(copy=False)
        np.frombuffer(frame.buffer, dtype=np.float32)
        process.terminate()
        process.join()
        return 1
    finally:
        socket.close(linger=0)
        shutil.rmtree(directory, ignore_errors=True)


def memcpy(n: int, nbytes: int) -> int:
    src = np.ones(nbytes // 4, dtype=np.float32)
    dst = np.empty_like(src)
    for _ in range(n):
        np.copyto(dst, src)
    return n


def _size(nbytes: int) -> str:
    return f"{nbytes // MiB} MiB" if nbytes >= MiB else f"{nbytes // KiB} KiB"


def transfer(nbytes: int, n: int) -> Workload:
    """One array size, every variant."""
    variants: dict[str, Callable[[], int]] = {
        MUX_SYNC: lambda: drain(ZMQStreamer(aiostream_mux.Streamer(arrays, n, nbytes))),
        MUX_ASYNC: run_async(
            lambda: adrain(ZMQStreamer(aiostream_mux.Streamer(arrays, n, nbytes)))
        ),
        PESCADOR: lambda: drain(pescador.ZMQStreamer(pescador.Streamer(arrays, n, nbytes))),
        RAW_IPC: lambda: raw_receive(n, nbytes, "ipc"),
        RAW_TCP: lambda: raw_receive(n, nbytes, "tcp"),
        MEMCPY: lambda: memcpy(n, nbytes),
    }
    small = nbytes < 256 * KiB
    ratios = [
        Ratio(MUX_SYNC, PESCADOR, target=1.6 if small else 1.3),
        Ratio(MUX_ASYNC, PESCADOR, target=1.6 if small else 1.3),
    ]
    if not small:
        ratios += [
            Ratio(MUX_SYNC, RAW_IPC, target=0.9),
            Ratio(MUX_ASYNC, RAW_IPC, target=0.9),
            Ratio(MUX_SYNC, RAW_TCP),
        ]
    else:
        ratios += [Ratio(MUX_SYNC, RAW_IPC)]
    ratios.append(Ratio(MUX_SYNC, MEMCPY))
    return Workload(
        f"ZMQ transfer of {_size(nbytes)} float32 arrays",
        variants,
        ratios=tuple(ratios),
        items=n,
        note=f"1 item = {nbytes:,} bytes: MB/s = items/s x {nbytes / 1e6:g}; "
        "each run starts its worker process; zero-copy both ways for every ZeroMQ "
        "variant; raw keeps pyzmq's default HWM (1000), ours bounds the worker's lead "
        "to 16 MiB; ours sends arrays of 64 KiB and more through shared memory",
    )


def touching(nbytes: int, n: int) -> Workload:
    """4 MiB arrays, a consumer that reads every page of each."""
    return Workload(
        f"ZMQ transfer of {_size(nbytes)} float32 arrays, consumer reads every page",
        {
            MUX_SYNC: lambda: drain_touching(
                ZMQStreamer(aiostream_mux.Streamer(arrays, n, nbytes))
            ),
            PESCADOR: lambda: drain_touching(
                pescador.ZMQStreamer(pescador.Streamer(arrays, n, nbytes))
            ),
            RAW_IPC: lambda: raw_receive(n, nbytes, "ipc", touch=True),
        },
        ratios=(
            Ratio(MUX_SYNC, PESCADOR, target=1.3),
            Ratio(MUX_SYNC, RAW_IPC, target=0.9),
        ),
        items=n,
        note="as the transfer workload, but the consumer reads one float32 of each "
        "4 KiB page of every array, so a mapped array pays its page faults",
    )


def first_item(k: int) -> Workload:
    """Start a worker, take one 4 KiB array, close: ``k`` times per run."""
    nbytes = 4 * KiB

    def ours() -> int:
        for _ in range(k):
            with ZMQStreamer(aiostream_mux.Streamer(arrays, 10, nbytes)).iterate() as stream:
                next(stream)
        return k

    async def ours_async() -> int:
        for _ in range(k):
            async with ZMQStreamer(aiostream_mux.Streamer(arrays, 10, nbytes)).iterate() as s:
                await s.__anext__()
        return k

    def raw() -> int:
        for _ in range(k):
            raw_receive(10, nbytes, "ipc", first_only=True)
        return k

    async def raw_async() -> int:
        for _ in range(k):
            await raw_first_async(nbytes)
        return k

    def pescador_first() -> int:
        for _ in range(k):
            stream = pescador.ZMQStreamer(pescador.Streamer(arrays, 10, nbytes)).iterate()
            next(stream)
            stream.close()
        return k

    return Workload(
        "ZMQ time to first item (start, first 4 KiB array, close)",
        {
            MUX_SYNC: ours,
            MUX_ASYNC: run_async(ours_async),
            RAW_FIRST: raw,
            RAW_FIRST_ASYNC: run_async(raw_async),
            PESCADOR: pescador_first,
        },
        ratios=(
            # items/s is 1 / time to first item: >= 1/1.2 means <= 1.2x the raw time.
            # Each consumer against raw pyzmq consumed the same way: for, or async for
            # on a zmq.asyncio socket; and async for against the sync raw, for the record.
            Ratio(MUX_SYNC, RAW_FIRST, target=1 / 1.2),
            Ratio(MUX_ASYNC, RAW_FIRST_ASYNC, target=1 / 1.2),
            Ratio(MUX_ASYNC, RAW_FIRST),
            Ratio(RAW_FIRST_ASYNC, RAW_FIRST),
            Ratio(MUX_SYNC, PESCADOR),
        ),
        items=k,
        round_factor=6,  # a round takes ~1 s, and its paired ratios scatter by +-0.2
        note=f"start method {multiprocessing.get_start_method()!r} for every variant; "
        "the consumer's ZeroMQ context is shared per process for ours and raw; "
        "each iteration also ends and reaps the worker (raw: SIGTERM; ours: polite "
        "stop, source closed); target: time <= 1.2x raw, i.e. ratio >= 0.833",
    )


def two_workers(n: int, work: int) -> Workload:
    """A CPU-bound source: one worker against a mux over two."""

    def one() -> int:
        return drain(ZMQStreamer(aiostream_mux.Streamer(spin, n, work)))

    def two_mux() -> aiostream_mux.RoundRobinMux[dict[str, int]]:
        half = n // 2
        return aiostream_mux.RoundRobinMux(
            [
                ZMQStreamer(aiostream_mux.Streamer(spin, half, work)),
                ZMQStreamer(aiostream_mux.Streamer(spin, n - half, work)),
            ]
        )

    one_name, two_name = "one ZMQStreamer", "RoundRobinMux of two ZMQStreamers"
    return Workload(
        "ZMQ parallelism: CPU-bound source, two workers vs one",
        {
            f"{one_name} (for)": one,
            f"{two_name} (for)": lambda: drain(two_mux()),
            f"{one_name} (async for)": run_async(
                lambda: adrain(ZMQStreamer(aiostream_mux.Streamer(spin, n, work)))
            ),
            f"{two_name} (async for)": run_async(lambda: adrain(two_mux())),
        },
        ratios=(
            Ratio(f"{two_name} (for)", f"{one_name} (for)", target=1.7),
            Ratio(f"{two_name} (async for)", f"{one_name} (async for)", target=1.7),
        ),
        items=n,
        round_factor=3,  # a round's ratio scatters by +-0.2 on this machine
        note=f"{n} samples of {work:,} pure-Python steps each; "
        f"{os.cpu_count()} CPUs; ~1.8x expected on 2 cores",
    )


def workloads(*, quick: bool = False) -> list[Workload]:
    found = [transfer(nbytes, q if quick else n) for nbytes, n, q in SIZES]
    found.append(touching(4 * MiB, 16 if quick else 128))
    found.append(first_item(4 if quick else 20))
    found.append(two_workers(40 if quick else 200, 100_000))
    return found


if __name__ == "__main__":
    from .__main__ import main

    raise SystemExit(main(["zmq", *sys.argv[1:]]))

"""An async service: one task consumes a mux while the event loop does other work.

Twenty-four "sensors" are async sources whose every sample waits a few
milliseconds, as a network read would. A StochasticMux runs twelve of them at
once, so their waits overlap, and a consumer task reads batches from it with
``async with mux.open()``. Meanwhile, on the same event loop, a heartbeat task
reports the running mux's statistics and how late the loop woke it — the loop
is never blocked. The service runs until it is told to stop (Ctrl-C, SIGTERM,
or the end of a time budget); stopping cancels both tasks, and ``async with``
then closes every source: each one's ``finally:`` runs.

Run it with ``python examples/async_service.py`` (``--run-for SECONDS``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import numpy as np

import aiostream_mux as am

N_SENSORS = 24
N_ACTIVE = 12
LATENCY = 0.004  # seconds per sample, per sensor
RUN_FOR = 1.5  # seconds; a real service runs until a signal
BATCH = 32
HEARTBEAT = 0.25


@dataclass
class Service:
    """What the tasks share: counters, and the stream once it is open."""

    open_sources: int = 0
    batches: int = 0
    samples: int = 0
    heartbeats: int = 0
    max_lag: float = 0.0
    stream: am.Stream[dict[str, float]] | None = None
    log: list[str] = field(default_factory=list)


async def sensor(sensor_id: int, service: Service) -> AsyncIterator[dict[str, float]]:
    """An endless async source: each reading waits, as a network read would."""
    rng = np.random.default_rng(sensor_id)
    service.open_sources += 1
    try:
        while True:
            await asyncio.sleep(LATENCY * rng.uniform(0.5, 1.5))
            yield {"sensor": float(sensor_id), "value": float(rng.normal(sensor_id, 1.0))}
    finally:
        service.open_sources -= 1  # runs when the mux closes this source


async def consume(mux: am.StochasticMux[dict[str, float]], service: Service) -> None:
    """Read batches from the mux until cancelled."""
    async with mux.open() as stream:
        service.stream = stream
        async for batch in stream.buffer(BATCH):
            service.batches += 1
            service.samples += len(batch["value"])
            # ... a real service would write the batch out, or serve it.


async def heartbeat(service: Service) -> None:
    """Report progress every HEARTBEAT seconds, and how late the loop woke us."""
    loop = asyncio.get_running_loop()
    while True:
        planned = loop.time() + HEARTBEAT
        await asyncio.sleep(HEARTBEAT)
        lag = loop.time() - planned
        service.max_lag = max(service.max_lag, lag)
        service.heartbeats += 1
        if service.stream is not None:
            stats = service.stream.statistics()
            buffered = sum(member.buffered for member in stats.members)
            print(
                f"heartbeat {service.heartbeats}: {stats.samples:5d} samples, "
                f"{stats.activations:3d} activations, {buffered:3d} buffered ahead, "
                f"consumer waited {stats.waited:.2f} s, loop lag {lag * 1000:.1f} ms"
            )


async def main(run_for: float = RUN_FOR) -> Service:
    service = Service()
    mux = am.StochasticMux(
        [am.Streamer(sensor, k, service) for k in range(N_SENSORS)],
        n_active=N_ACTIVE,
        rate=32,
        random_state=0,
    )

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):  # not on Windows
            loop.add_signal_handler(sig, stop.set)
    loop.call_later(run_for, stop.set)

    start = time.perf_counter()
    consumer = asyncio.create_task(consume(mux, service), name="consumer")
    beat = asyncio.create_task(heartbeat(service), name="heartbeat")
    stopping = asyncio.create_task(stop.wait(), name="stop")
    # Run until told to stop, or until the consumer ends (a failure ends the service).
    await asyncio.wait([consumer, stopping], return_when=asyncio.FIRST_COMPLETED)
    for task in (consumer, beat, stopping):
        task.cancel()
    for task in (consumer, beat, stopping):
        with contextlib.suppress(asyncio.CancelledError):
            await task  # re-raises a consumer's failure
    elapsed = time.perf_counter() - start

    stats = service.stream.statistics() if service.stream is not None else None
    print(f"ran {elapsed:.2f} s: {service.batches} batches, {service.samples} samples")
    sequential = elapsed / LATENCY
    print(
        f"throughput {service.samples / elapsed:.0f} samples/s "
        f"({service.samples / sequential:.1f}x a sequential reader)"
    )
    if stats is not None:
        read = sum(1 for member in stats.members if member.samples)
        print(f"{read} of {N_SENSORS} sensors read, in {stats.activations} activations")
    print(f"worst heartbeat lag: {service.max_lag * 1000:.1f} ms")
    print(f"sources still open after shutdown: {service.open_sources}")
    return service


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-for", type=float, default=RUN_FOR, help="seconds before stopping")
    result = asyncio.run(main(parser.parse_args().run_for))
    if result.open_sources or not result.samples:
        raise SystemExit("the service did not shut down cleanly")
    print("done")

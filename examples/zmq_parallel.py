"""Process parallelism: CPU-bound sources in worker processes, mixed on one event loop.

Run it with ``python examples/zmq_parallel.py``. Each ZMQStreamer runs its
streamer in a worker process; a mux over several of them receives from all
workers at once, so two workers on two cores give nearly twice the samples.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import numpy as np

import aiostream_mux as pescador


def augmented(seed: int, n: int) -> Iterator[dict[str, np.ndarray]]:
    """A CPU-bound source (pure Python, like a decoder). Module level: importable."""
    rng = np.random.default_rng(seed)
    for _ in range(n):
        noise = 0.0
        for k in range(100_000):
            noise += (k * 7919) % 13
        image = rng.random((32, 32), dtype=np.float32) + noise * 0.0
        yield {"image": image, "label": np.int64(seed)}


def sync_part() -> None:
    print("== plain for, as with pescador")
    start = time.perf_counter()
    one = pescador.ZMQStreamer(pescador.Streamer(augmented, 0, 200))
    count = sum(1 for _ in one)
    print(f"one worker: {count} samples in {time.perf_counter() - start:.2f} s")

    start = time.perf_counter()
    two = pescador.RoundRobinMux(
        [
            pescador.ZMQStreamer(pescador.Streamer(augmented, 1, 100)),
            pescador.ZMQStreamer(pescador.Streamer(augmented, 2, 100)),
        ]
    )
    labels = [int(sample["label"]) for sample in two]
    print(f"two workers: {len(labels)} samples in {time.perf_counter() - start:.2f} s")
    print("first labels:", labels[:6])


async def async_part() -> None:
    print("== async for, on the caller's loop")
    streamer = pescador.ZMQStreamer(pescador.Streamer(augmented, 3, 50))
    total = 0.0
    async for sample in streamer.iterate(max_iter=10):
        total += float(sample["image"].mean())
    print(f"mean of 10 images: {total / 10:.3f}")


if __name__ == "__main__":
    sync_part()
    asyncio.run(async_part())
    print("done")

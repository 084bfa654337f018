"""Command line: ``python -m aiostream_mux demo`` and ``python -m aiostream_mux bench``."""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import anyio
import numpy as np

import aiostream_mux as am


async def shard(index: int, n_samples: int, latency: float) -> AsyncIterator[dict[str, Any]]:
    """Yield one data shard read over a slow link: each sample waits ``latency`` seconds."""
    rng = np.random.default_rng(index)
    for i in range(n_samples):
        await anyio.sleep(latency)
        yield {"X": rng.standard_normal(32).astype(np.float32), "y": index, "i": i}


async def augment(sample: dict[str, Any]) -> dict[str, Any]:
    """Double the features after 2 ms: an I/O-bound transform, as a decode or a fetch."""
    await anyio.sleep(0.002)
    return {"X": sample["X"] * 2.0, "y": sample["y"]}


def _pipeline(n_shards: int, latency: float) -> am.Streamer[tuple[Any, ...]]:
    shards = [am.Streamer(shard, k, 10_000, latency) for k in range(n_shards)]
    mux = am.StochasticMux(shards, n_active=16, rate=32, random_state=0)
    return mux.map(augment, concurrency=32).buffer(64).tuples("X", "y")


def demo(batches: int, n_shards: int, latency: float) -> None:
    """Train-loop shaped demo: sync ``for`` and ``async for`` over the same recipe."""
    recipe = _pipeline(n_shards, latency)
    print(
        f"{n_shards} shards (each sample waits {latency * 1e3:.1f} ms) -> StochasticMux("
        "n_active=16, rate=32) -> map(augment, 2 ms, concurrency=32) -> buffer(64) -> tuples"
    )
    start = time.perf_counter()
    seen: dict[int, int] = {}
    batches_seen = am.progress(
        recipe(max_iter=batches), total=batches, desc="batches", unit="batch"
    )
    for X, y in batches_seen:
        assert X.shape == (64, 32)
        for label in y.tolist():
            seen[label] = seen.get(label, 0) + 1
    took = time.perf_counter() - start
    samples = batches * 64
    sequential = samples * (latency + 0.002)
    print(
        f"sync:  {samples} samples in {took:.2f} s ({samples / took:,.0f} samples/s); "
        f"one at a time would take ~{sequential:.1f} s ({sequential / took:.0f}x longer)"
    )
    print(f"       {len(seen)} shards contributed; most from one shard: {max(seen.values())}")

    async def main() -> tuple[int, float]:
        start = time.perf_counter()
        n = 0
        async with recipe.open(max_iter=batches) as stream:
            async for _X, y in stream:
                n += len(y)
        return n, time.perf_counter() - start

    n, took = anyio.run(main)
    print(f"async: {n} samples in {took:.2f} s ({n / took:,.0f} samples/s)")
    print("done")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line."""
    parser = argparse.ArgumentParser(
        prog="python -m aiostream_mux",
        description="aiostream_mux: asyncio-native stream multiplexing (pescador's successor).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {am.__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    demo_args = sub.add_parser(
        "demo",
        help="run a realistic pipeline and summarise it",
        description="Slow shards -> StochasticMux -> concurrent map -> batches, "
        "read with for and with async for.",
    )
    demo_args.add_argument("--batches", type=int, default=40, help="batches of 64 to read")
    demo_args.add_argument("--shards", type=int, default=64, help="number of data shards")
    demo_args.add_argument(
        "--latency", type=float, default=0.005, help="seconds each sample waits (I/O)"
    )
    bench_args = sub.add_parser(
        "bench", help="run the benchmarks against pescador 3.0 (from a clone of the repository)"
    )
    bench_args.add_argument("args", nargs=argparse.REMAINDER)
    options = parser.parse_args(argv)
    if options.command == "demo":
        demo(options.batches, options.shards, options.latency)
        return 0
    root = Path(__file__).resolve().parent.parent
    if not (root / "bench").is_dir():
        print("the benchmarks live in the source tree: run this from a clone", file=sys.stderr)
        return 2
    return subprocess.call([sys.executable, "-m", "bench", *options.args], cwd=root)


if __name__ == "__main__":
    sys.exit(main())

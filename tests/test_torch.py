"""aiostream_mux.torch: a DataLoader's workers divide a Streamer instead of repeating it."""

from __future__ import annotations

import doctest
import itertools
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio.lowlevel
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

import aiostream_mux as am
import aiostream_mux.torch as am_torch
from aiostream_mux import ConfigError, Streamer
from aiostream_mux.torch import Split, StreamerDataset, partition

from .conftest import Lifecycle

# -- sources: module level, so that "spawn" workers can unpickle them

SHARD_SIZE = 1000


def numbered(shard: int, n: int) -> Iterator[int]:
    """``n`` distinct ints tagged with their shard: ``shard * 1000 + i``."""
    for i in range(n):
        yield shard * SHARD_SIZE + i


def endless(shard: int) -> Iterator[int]:
    """Ints tagged with their shard, without end."""
    for i in itertools.count():
        yield shard * SHARD_SIZE + i % SHARD_SIZE


async def anumbered(shard: int, n: int) -> AsyncIterator[int]:
    """The async twin of :func:`numbered`, yielding to its event loop before each item."""
    for i in range(n):
        await anyio.lowlevel.checkpoint()
        yield shard * SHARD_SIZE + i


def samples(shard: int, n: int) -> Iterator[dict[str, Any]]:
    for i in range(n):
        yield {"x": np.full(2, i, dtype=np.float32), "shard": shard}


def shard_of(item: int) -> int:
    return item // SHARD_SIZE


def everything(n_shards: int, n: int) -> list[int]:
    return sorted(shard * SHARD_SIZE + i for shard in range(n_shards) for i in range(n))


def shards(n_shards: int, n: int, source: Any = numbered) -> list[Streamer[int]]:
    return [Streamer(source, k, n) for k in range(n_shards)]


def load(dataset: StreamerDataset[int], num_workers: int = 0, **kwargs: Any) -> list[int]:
    """Everything a DataLoader gives, one item at a time, in the order it gives them."""
    loader = DataLoader(dataset, batch_size=None, num_workers=num_workers, **kwargs)
    return [int(item) for item in loader]


def exhaustive_muxes(n_shards: int, n: int, source: Any = numbered) -> list[Any]:
    return [
        pytest.param(lambda: am.RoundRobinMux(shards(n_shards, n, source)), id="roundrobin"),
        pytest.param(lambda: am.ChainMux(shards(n_shards, n, source)), id="chain"),
        pytest.param(
            lambda: am.StochasticMux(
                shards(n_shards, n, source), n_active=2, rate=None, mode="exhaustive"
            ),
            id="stochastic-exhaustive",
        ),
    ]


# -- each item exactly once


@pytest.mark.parametrize("num_workers", [0, 1, 2])
@pytest.mark.parametrize("make_mux", exhaustive_muxes(7, 15))
def test_exhaustive_mux_is_covered_once(make_mux: Any, num_workers: int) -> None:
    got = load(StreamerDataset(make_mux()), num_workers)
    assert sorted(got) == everything(7, 15)


def test_without_workers_the_order_is_the_mux_order() -> None:
    mux = am.RoundRobinMux(shards(4, 5))
    assert load(StreamerDataset(mux)) == list(mux)


def test_workers_run_disjoint_members_of_an_endless_mux() -> None:
    # An endless mux: only the split keeps the workers apart.
    mux = am.StochasticMux([Streamer(endless, k) for k in range(6)], n_active=2, rate=3)
    got = load(StreamerDataset(mux, max_iter=40), num_workers=2)
    assert len(got) == 40
    # batch_size=None: the loader takes one item from each worker in turn.
    assert {shard_of(x) % 2 for x in got[0::2]} == {0}
    assert {shard_of(x) % 2 for x in got[1::2]} == {1}


@pytest.mark.parametrize("max_iter", [0, 1, 9, 10])
def test_max_iter_counts_over_all_workers(max_iter: int) -> None:
    mux = am.ShuffledMux(shards(4, 100))
    assert len(load(StreamerDataset(mux, max_iter=max_iter), num_workers=2)) == max_iter


def test_cycle_restarts_each_share() -> None:
    mux = am.ChainMux(shards(2, 3))
    got = load(StreamerDataset(mux, cycle=True, max_iter=12), num_workers=2)
    assert Counter(got) == Counter({x: 2 for x in everything(2, 3)})


def test_pipeline_recipe_is_split_at_its_mux() -> None:
    mux = am.RoundRobinMux([Streamer(samples, k, 6) for k in range(4)])
    batches = mux.buffer(4, partial=True).tuples("x", "shard")
    loader = DataLoader(StreamerDataset(batches), batch_size=None, num_workers=2)
    seen: Counter[int] = Counter()
    for x, shard in loader:
        assert isinstance(x, torch.Tensor)
        assert x.shape[1:] == (2,)
        assert len({int(s) % 2 for s in shard}) == 1, "a batch mixes both workers' shards"
        seen.update(int(s) for s in shard)
    assert seen == Counter({k: 6 for k in range(4)})


def test_mux_with_fewer_members_than_workers_is_split_by_items() -> None:
    mux = am.ChainMux(shards(1, 10))
    assert sorted(load(StreamerDataset(mux), num_workers=2)) == everything(1, 10)


def test_lazy_chain_is_split_by_items() -> None:
    def lazy() -> Iterator[Streamer[int]]:
        yield from shards(3, 4)

    mux = am.ChainMux(lazy)
    assert sorted(load(StreamerDataset(mux), num_workers=2)) == everything(3, 4)


def test_plain_streamer_is_split_by_items() -> None:
    streamer = Streamer(numbered, 0, 25)
    assert load(StreamerDataset(streamer), num_workers=2) == list(range(25))


def test_items_split_gives_the_single_process_sequence() -> None:
    mux = am.StochasticMux(shards(5, 30), n_active=3, rate=4)
    alone = load(StreamerDataset(mux, max_iter=60, split="items", random_state=3))
    split = load(StreamerDataset(mux, max_iter=60, split="items", random_state=3), num_workers=2)
    assert len(alone) == 60
    assert split == alone


def test_seeds_split_gives_each_worker_its_own_draws() -> None:
    mux = am.ShuffledMux(shards(4, 1000))
    got = load(StreamerDataset(mux, max_iter=40, split="seeds", random_state=5), num_workers=2)
    assert got[0::2] != got[1::2]
    assert {shard_of(x) for x in got[0::2]} == {shard_of(x) for x in got[1::2]} == {0, 1, 2, 3}


# -- async sources: a background event loop inside each worker


@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_async_sources_in_workers(context: str) -> None:
    mux = am.StochasticMux(shards(6, 20, anumbered), n_active=3, rate=None, mode="exhaustive")
    got = load(StreamerDataset(mux), num_workers=2, multiprocessing_context=context)
    assert sorted(got) == everything(6, 20)


def test_async_pipeline_in_spawned_workers() -> None:
    mux = am.RoundRobinMux([Streamer(anumbered, k, 8) for k in range(4)])
    batches = Streamer(am.buffer_stream, mux.map(as_sample, concurrency=4), 3, True)
    loader = DataLoader(
        StreamerDataset(batches), batch_size=None, num_workers=2, multiprocessing_context="spawn"
    )
    values = sorted(int(v) for batch in loader for v in batch["v"])
    assert values == everything(4, 8)


async def as_sample(item: int) -> dict[str, int]:
    await anyio.lowlevel.checkpoint()
    return {"v": item}


# -- seeds


def test_fixed_random_state_replays() -> None:
    dataset = StreamerDataset(
        am.StochasticMux(shards(6, 50), n_active=2, rate=3), max_iter=30, random_state=11
    )
    first = load(dataset, num_workers=2)
    assert load(dataset, num_workers=2) == first
    other = StreamerDataset(dataset.streamer, max_iter=30, random_state=12)
    assert load(other, num_workers=2) != first


@pytest.mark.parametrize("num_workers", [0, 2])
def test_default_seed_follows_torch(num_workers: int) -> None:
    dataset = StreamerDataset(am.StochasticMux(shards(6, 50), n_active=2, rate=3), max_iter=30)
    torch.manual_seed(0)
    first, second = load(dataset, num_workers), load(dataset, num_workers)
    assert first != second, "two epochs gave the same samples"
    torch.manual_seed(0)
    assert load(dataset, num_workers) == first
    generator = torch.Generator().manual_seed(1)
    assert load(dataset, num_workers, generator=generator) != first


def test_persistent_workers_get_new_seeds_each_epoch() -> None:
    dataset = StreamerDataset(am.StochasticMux(shards(6, 50), n_active=2, rate=3), max_iter=30)
    torch.manual_seed(0)
    loader = DataLoader(dataset, batch_size=None, num_workers=2, persistent_workers=True)
    epochs = [[int(x) for x in loader] for _ in range(2)]
    assert epochs[0] != epochs[1]
    for epoch in epochs:
        assert {shard_of(x) % 2 for x in epoch[0::2]} == {0}


def test_the_mux_given_is_left_alone() -> None:
    mux = am.StochasticMux(shards(4, 10), n_active=2, rate=2, random_state=0)
    before = list(mux(max_iter=20))
    load(StreamerDataset(mux, max_iter=20), num_workers=0)
    partition(mux, 1, 2, random_state=4)
    assert mux.random_state == 0
    assert list(mux(max_iter=20)) == before


# -- partition


def test_partition_keeps_the_mux_parameters() -> None:
    mux = am.StochasticMux(
        shards(5, 10),
        n_active=3,
        rate=2.5,
        weights=[1, 2, 3, 4, 5],
        mode="single_active",
        prune_empty_streams=False,
        dist="poisson",
        prefetch=4,
    )
    share = partition(mux, 1, 2, random_state=0)
    assert isinstance(share, am.StochasticMux)
    assert share.streamers == [mux.streamers[1], mux.streamers[3]]
    np.testing.assert_allclose(share.weights, [2 / 6, 4 / 6])
    assert share.n_active == 2  # single_active needs n_active <= members
    assert (share.rate, share.mode, share.dist) == (2.5, "single_active", "poisson")
    assert (share.prune_empty_streams, share.prefetch) == (False, 4)


def test_partition_keeps_with_replacement_n_active() -> None:
    mux = am.StochasticMux(shards(4, 10), n_active=3, rate=2)
    share = partition(mux, 0, 2)
    assert isinstance(share, am.StochasticMux)
    assert share.n_active == 3


@pytest.mark.parametrize(
    "make_mux",
    [
        pytest.param(lambda m: am.ShuffledMux(m, weights=[1, 1, 2]), id="shuffled"),
        pytest.param(lambda m: am.RoundRobinMux(m, mode="permuted_cycle"), id="roundrobin"),
        pytest.param(lambda m: am.ChainMux(m, mode="cycle"), id="chain"),
    ],
)
def test_partition_of_each_mux(make_mux: Any) -> None:
    mux = make_mux(shards(3, 4))
    parts = [partition(mux, k, 2, random_state=1) for k in range(2)]
    assert [type(part) for part in parts] == [type(mux)] * 2
    assert [len(part.streamers) for part in parts if isinstance(part, am.BaseMux)] == [2, 1]
    assert {shard_of(x) for x in parts[1](max_iter=12)} == {1}


def test_partition_with_one_share_is_the_whole() -> None:
    mux = am.ChainMux(shards(3, 4))
    assert list(partition(mux, 0, 1)) == list(mux)


def test_partition_rebuilds_nested_wrappers() -> None:
    wrapped = Streamer(Streamer(am.ChainMux(shards(4, 2))))
    assert list(partition(wrapped, 1, 2)) == [1000, 1001, 3000, 3001]


# -- errors


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"split": "workers"}, "split='workers'"),
        ({"random_state": -1}, "random_state=-1"),
        ({"random_state": 1.5}, "random_state=1.5"),
        ({"random_state": True}, "random_state=True"),
        ({"max_iter": -1}, "max_iter=-1"),
    ],
)
def test_bad_arguments(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        StreamerDataset(Streamer(range(3)), **kwargs)


def test_not_a_streamer() -> None:
    with pytest.raises(ConfigError, match="wrap it"):
        StreamerDataset(range(3))  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="activated from"):
        StreamerDataset(Streamer(range(3)).iterate())  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("index", "count", "match"),
    [(2, 2, "index=2 must be less than count=2"), (-1, 2, "index=-1"), (0, 0, "count=0")],
)
def test_partition_bad_share(index: int, count: int, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        partition(Streamer(range(3)), index, count)


@pytest.mark.parametrize(
    ("streamer", "split", "match"),
    [
        (Streamer(range(3)), "streamers", "needs a mux"),
        (am.ChainMux(shards(1, 3)), "streamers", "1 streamers for count=2"),
        (Streamer(range(3)), "seeds", "needs a random_state"),
        (am.ShuffledMux(shards(4, 3), weights=[1, 0, 1, 0]), "auto", "weight 0"),
    ],
)
def test_partition_refuses(streamer: Streamer[int], split: Split, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        partition(streamer, 1, 2, split=split)


def test_worker_error_reaches_the_loop() -> None:
    dataset = StreamerDataset(am.ChainMux(shards(1, 3)), split="streamers")
    batches = iter(DataLoader(dataset, batch_size=None, num_workers=2))
    error: Exception | None = None
    try:
        next(batches)
    except ConfigError as exc:
        error = exc
        # A traceback holding the loader's iterator makes it wait for the garbage
        # collector, which then joins each worker for 5 s: drop it, close at once.
        exc.__traceback__ = None
    del batches
    assert isinstance(error, ConfigError)
    assert "1 streamers for count=2" in str(error)


# -- closing, and the docs


def test_break_closes_the_sources(lifecycle: Lifecycle) -> None:
    mux = am.RoundRobinMux([Streamer(lifecycle.sync_source, 10) for _ in range(3)])
    loader = DataLoader(StreamerDataset(mux), batch_size=None)
    for i, _ in enumerate(loader):
        if i == 4:
            break
    assert lifecycle.started == 3
    assert lifecycle.open == 0


def test_docstring_examples() -> None:
    results = doctest.testmod(am_torch, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert results.attempted >= 6
    assert results.failed == 0

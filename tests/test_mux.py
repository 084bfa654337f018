"""The four muxes: pescador's sequences, one order in every mode, cleanup, errors."""

from __future__ import annotations

import asyncio
import pickle
import random
import traceback
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import anyio
import anyio.lowlevel
import numpy as np
import pescador
import pytest

import aiostream_mux as am
from aiostream_mux import (
    ChainMux,
    ConfigError,
    RoundRobinMux,
    ShuffledMux,
    StochasticMux,
    Streamer,
    UnsupportedBackendError,
)

from .conftest import Lifecycle

# -- module-level sources (picklable)


async def count_coroutine() -> int:
    return 1


def letters(label: str, n: int) -> Iterator[str]:
    for i in range(n):
        yield f"{label}{i}"


async def aletters(label: str, n: int, max_delay: float = 0.0, seed: int = 0) -> AsyncIterator[str]:
    rng = random.Random(f"{label}-{seed}")
    for i in range(n):
        if max_delay:
            await anyio.sleep(rng.random() * max_delay)
        yield f"{label}{i}"


SIZES = [5, 0, 12, 3, 7, 1]


def members(kind: str = "sync", sizes: list[int] = SIZES, max_delay: float = 0.0) -> list[Any]:
    labels = "abcdefghijklmnopqrstuvwxyz"
    if kind == "pescador":
        return [pescador.Streamer(letters, labels[i], n) for i, n in enumerate(sizes)]
    if kind == "async":
        return [Streamer(aletters, labels[i], n, max_delay) for i, n in enumerate(sizes)]
    return [Streamer(letters, labels[i], n) for i, n in enumerate(sizes)]


# (name, our constructor, pescador's constructor, max_iter) over the same members
CASES: list[tuple[str, Callable[[list[Any]], Any], Callable[[list[Any]], Any], int | None]] = []


def _stochastic_case(mode: str, dist: str) -> tuple[str, Any, Any, int | None]:
    def ours(s: list[Any]) -> Any:
        return StochasticMux(s, 3, 4, mode=mode, dist=dist, random_state=11)  # type: ignore[arg-type]

    def theirs(s: list[Any]) -> Any:
        return pescador.StochasticMux(s, 3, 4, mode=mode, dist=dist, random_state=11)

    return (f"stochastic-{mode}-{dist}", ours, theirs, 60)


for _mode in ("with_replacement", "single_active", "exhaustive"):
    for _dist in ("binomial", "poisson", "constant"):
        CASES.append(_stochastic_case(_mode, _dist))
CASES += [
    (
        "stochastic-weights",
        lambda s: StochasticMux(s, 2, 3, weights=[1, 2, 3, 4, 5, 6.0], random_state=3),
        lambda s: pescador.StochasticMux(s, 2, 3, weights=[1, 2, 3, 4, 5, 6.0], random_state=3),
        80,
    ),
    (
        "stochastic-rate-none",
        lambda s: StochasticMux(s, 2, None, mode="exhaustive", random_state=5),
        lambda s: pescador.StochasticMux(s, 2, None, mode="exhaustive", random_state=5),
        None,
    ),
    (
        "shuffled",
        lambda s: ShuffledMux(s, random_state=np.random.RandomState(8)),
        lambda s: pescador.ShuffledMux(s, random_state=np.random.RandomState(8)),
        60,
    ),
    (
        "shuffled-weights",
        lambda s: ShuffledMux(s, weights=[3, 1, 1, 2, 1, 1.0], random_state=4),
        lambda s: pescador.ShuffledMux(s, weights=[3, 1, 1, 2, 1, 1.0], random_state=4),
        60,
    ),
    ("roundrobin", lambda s: RoundRobinMux(s), lambda s: pescador.RoundRobinMux(s), None),
    (
        "roundrobin-cycle",
        lambda s: RoundRobinMux(s, mode="cycle"),
        lambda s: pescador.RoundRobinMux(s, mode="cycle"),
        70,
    ),
    (
        "roundrobin-permuted",
        lambda s: RoundRobinMux(s, mode="permuted_cycle", random_state=2),
        lambda s: pescador.RoundRobinMux(s, mode="permuted_cycle", random_state=2),
        70,
    ),
    ("chain", lambda s: ChainMux(s), lambda s: pescador.ChainMux(s), None),
    (
        "chain-cycle",
        lambda s: ChainMux(s, mode="cycle"),
        lambda s: pescador.ChainMux(s, mode="cycle"),
        50,
    ),
]
CASE_PARAMS = [pytest.param(make, theirs, n, id=name) for name, make, theirs, n in CASES]


def expected(theirs: Callable[[list[Any]], Any], max_iter: int | None) -> list[str]:
    return list(theirs(members("pescador"))(max_iter=max_iter))


@pytest.mark.parametrize(("make", "theirs", "max_iter"), CASE_PARAMS)
def test_same_sequence_as_pescador_sync(make: Any, theirs: Any, max_iter: int | None) -> None:
    assert list(make(members())(max_iter=max_iter)) == expected(theirs, max_iter)


@pytest.mark.parametrize(("make", "theirs", "max_iter"), CASE_PARAMS)
def test_async_members_sync_consumer(make: Any, theirs: Any, max_iter: int | None) -> None:
    assert list(make(members("async"))(max_iter=max_iter)) == expected(theirs, max_iter)


@pytest.mark.asyncio
@pytest.mark.parametrize(("make", "theirs", "max_iter"), CASE_PARAMS)
async def test_async_for_random_latency(make: Any, theirs: Any, max_iter: int | None) -> None:
    """Prefetch and concurrency change when samples come, never which or in what order."""
    mux = make(members("async", max_delay=0.002))
    assert [x async for x in mux(max_iter=max_iter)] == expected(theirs, max_iter)
    sync_mux = make(members("sync"))
    assert [x async for x in sync_mux(max_iter=max_iter)] == expected(theirs, max_iter)


@pytest.mark.anyio
@pytest.mark.parametrize(("make", "theirs", "max_iter"), CASE_PARAMS)
async def test_open_on_every_backend(make: Any, theirs: Any, max_iter: int | None) -> None:
    mux = make(members("async", max_delay=0.001))
    async with mux.open(max_iter=max_iter) as stream:
        got = [x async for x in stream]
    assert got == expected(theirs, max_iter)


@pytest.mark.anyio
async def test_plain_async_for_on_trio_points_to_open(anyio_backend: Any) -> None:
    mux = StochasticMux(members("async"), 2, 3, random_state=1)
    if anyio_backend == "trio":
        with pytest.raises(UnsupportedBackendError, match="open"):
            async for _ in mux:
                pass
    else:
        assert len([x async for x in mux(max_iter=10)]) == 10


# -- seeds


def test_seeded_mux_replays_and_unseeded_follows_numpy_global_state() -> None:
    mux = StochasticMux(members(), 2, 3, random_state=42)
    assert list(mux(max_iter=40)) == list(mux(max_iter=40))
    np.random.seed(7)
    ours = list(StochasticMux(members(), 2, 3)(max_iter=40))
    np.random.seed(7)
    theirs = list(pescador.StochasticMux(members("pescador"), 2, 3)(max_iter=40))
    assert ours == theirs


def test_generator_random_state_is_deterministic() -> None:
    a = list(ShuffledMux(members(), random_state=np.random.default_rng(5))(max_iter=30))
    b = list(ShuffledMux(members(), random_state=np.random.default_rng(5))(max_iter=30))
    c = list(ShuffledMux(members(), random_state=np.random.default_rng(6))(max_iter=30))
    assert a == b
    assert a != c


def test_nested_seeded_mux_gets_a_new_seed_per_activation() -> None:
    """pescador #131: a nested seeded mux repeats its first samples on every activation."""
    inner = ShuffledMux([Streamer(letters, label, 1000) for label in "wxyz"], random_state=1)
    outer = StochasticMux([inner], n_active=1, rate=4, dist="constant", random_state=2)
    got = list(outer(max_iter=40))
    runs = [tuple(got[i : i + 4]) for i in range(0, 40, 4)]
    assert len(set(runs)) > 1, runs
    assert got == list(outer(max_iter=40))  # still deterministic from the top

    p_inner = pescador.ShuffledMux(
        [pescador.Streamer(letters, label, 1000) for label in "wxyz"], random_state=1
    )
    p_outer = pescador.StochasticMux([p_inner], 1, 4, dist="constant", random_state=2)
    p_got = list(p_outer(max_iter=40))
    assert len({tuple(p_got[i : i + 4]) for i in range(0, 40, 4)}) == 1  # the bug we fix


def test_nested_muxes_agree_across_modes() -> None:
    def build(kind: str) -> Any:
        inner = [RoundRobinMux(members(kind, [4, 2]), mode="cycle") for _ in range(3)]
        return StochasticMux(inner, 2, 3, random_state=9)

    sync_got = list(build("sync")(max_iter=50))
    assert list(build("async")(max_iter=50)) == sync_got

    async def main() -> list[str]:
        return [x async for x in build("async")(max_iter=50)]

    assert asyncio.run(main()) == sync_got


# -- weights


def test_integer_weights_and_caller_array_untouched() -> None:
    weights = np.array([1, 2, 3, 4, 5, 6])
    mux = StochasticMux(members(), 2, 3, weights=weights, random_state=0)
    assert len(list(mux(max_iter=20))) == 20
    assert weights.tolist() == [1, 2, 3, 4, 5, 6]
    float_weights = np.array([1.0, 2, 3, 4, 5, 6])
    ShuffledMux(members(), weights=float_weights)
    assert float_weights.tolist() == [1.0, 2, 3, 4, 5, 6]


# -- bad input


def good_members() -> list[Any]:
    return members()


@pytest.mark.parametrize(
    ("build", "fragment"),
    [
        (lambda: StochasticMux([], 1, 2), "empty"),
        (lambda: StochasticMux([42], 1, 2), "42"),  # type: ignore[arg-type]
        (lambda: StochasticMux(good_members(), 0, 2), "n_active=0"),
        (lambda: StochasticMux(good_members(), 1, 0), "rate=0"),
        (lambda: StochasticMux(good_members(), 1, -1.5), "rate=-1.5"),
        (lambda: StochasticMux(good_members(), 1, 2, weights=[1, 2]), "weights"),
        (lambda: StochasticMux(good_members(), 1, 2, weights=[-1, 1, 1, 1, 1, 1]), ">= 0"),
        (lambda: StochasticMux(good_members(), 1, 2, weights=[0] * 6), "> 0"),
        (lambda: StochasticMux(good_members(), 1, 2, weights=[np.nan] + [1] * 5), "finite"),
        (lambda: StochasticMux(good_members(), 1, 2, mode="sometimes"), "sometimes"),  # type: ignore[arg-type]
        (lambda: StochasticMux(good_members(), 1, 2, dist="zipf"), "zipf"),  # type: ignore[arg-type]
        (lambda: StochasticMux(good_members(), 9, 2, mode="exhaustive"), "n_active=9"),
        (lambda: StochasticMux(good_members(), 1, 2, random_state="x"), "random_state"),  # type: ignore[arg-type]
        (lambda: StochasticMux(good_members(), 1, 2, prefetch=0), "prefetch=0 must be an int >= 1"),
        (lambda: ShuffledMux(good_members(), prefetch=-1), "prefetch=-1 must be an int >= 1"),
        (lambda: ShuffledMux([count_coroutine]), "coroutine function"),  # type: ignore[arg-type]
        (lambda: ShuffledMux([]), "empty"),
        (lambda: ShuffledMux(good_members(), weights=[1.0]), "weights"),
        (lambda: RoundRobinMux(good_members(), mode="random"), "random"),  # type: ignore[arg-type]
        (lambda: ChainMux(good_members(), mode="permuted_cycle"), "permuted_cycle"),  # type: ignore[arg-type]
        (lambda: ChainMux(42), "42"),  # type: ignore[arg-type]
        (lambda: RoundRobinMux(Streamer("abc")), "list of Streamers"),
    ],
)
def test_bad_input_fails_at_construction(build: Callable[[], Any], fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        build()


# -- cleanup and errors


def mux_kinds() -> list[Any]:
    return [
        pytest.param(lambda s: StochasticMux(s, 2, 4, random_state=0), id="stochastic"),
        pytest.param(lambda s: ShuffledMux(s, random_state=0), id="shuffled"),
        pytest.param(lambda s: RoundRobinMux(s, mode="cycle"), id="roundrobin"),
        pytest.param(lambda s: ChainMux(s, mode="cycle"), id="chain"),
    ]


def recorded(
    lifecycle: Lifecycle, kind: str, n: int = 1000, fail_at: int | None = None
) -> list[Any]:
    source = lifecycle.sync_source if kind == "sync" else lifecycle.async_source
    return [Streamer(source, n, fail_at=fail_at) for _ in range(3)]


@pytest.mark.parametrize("kind", ["sync", "async"])
@pytest.mark.parametrize("make", mux_kinds())
def test_break_closes_every_member_sync(lifecycle: Lifecycle, make: Any, kind: str) -> None:
    for i, _ in enumerate(make(recorded(lifecycle, kind))):
        if i == 20:
            break
    assert lifecycle.started >= 1
    assert lifecycle.open == 0


@pytest.mark.anyio
@pytest.mark.parametrize("kind", ["sync", "async"])
@pytest.mark.parametrize("make", mux_kinds())
async def test_open_block_closes_every_member(lifecycle: Lifecycle, make: Any, kind: str) -> None:
    async with make(recorded(lifecycle, kind)).open() as stream:
        seen = 0
        async for _ in stream:
            seen += 1
            if seen == 20:
                break
    assert lifecycle.open == 0


@pytest.mark.asyncio
@pytest.mark.parametrize("make", mux_kinds())
async def test_aclose_and_cancel_close_every_member(lifecycle: Lifecycle, make: Any) -> None:
    stream = make(recorded(lifecycle, "async")).iterate()
    assert len(await stream.take(5)) == 5
    await stream.aclose()
    assert lifecycle.open == 0

    busy = asyncio.Event()

    async def consume() -> None:
        async with make(recorded(lifecycle, "async")).iterate() as stream:
            seen = 0
            async for _ in stream:
                seen += 1
                if seen == 50:
                    busy.set()
                await asyncio.sleep(0)

    task = asyncio.create_task(consume())
    await busy.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert lifecycle.open == 0


@pytest.mark.parametrize("kind", ["sync", "async"])
@pytest.mark.parametrize("make", mux_kinds())
def test_member_error_reaches_consumer(lifecycle: Lifecycle, make: Any, kind: str) -> None:
    with pytest.raises(ValueError, match="failed at 3") as info:
        list(make(recorded(lifecycle, kind, n=10, fail_at=3)))
    frames = [frame.name for frame in traceback.extract_tb(info.value.__traceback__)]
    assert f"{kind}_source" in frames
    assert lifecycle.open == 0


@pytest.mark.anyio
@pytest.mark.parametrize("make", mux_kinds())
async def test_member_error_reaches_async_consumer(lifecycle: Lifecycle, make: Any) -> None:
    with pytest.raises(ValueError, match="failed at 3"):
        async with make(recorded(lifecycle, "async", n=10, fail_at=3)).open() as stream:
            async for _ in stream:
                pass
    assert lifecycle.open == 0


# -- concurrency


@pytest.mark.asyncio
async def test_slow_members_overlap() -> None:
    in_flight = 0
    peak = 0

    async def slow(label: str) -> AsyncIterator[str]:
        nonlocal in_flight, peak
        for i in range(50):
            in_flight += 1
            peak = max(peak, in_flight)
            await asyncio.sleep(0.001)
            in_flight -= 1
            yield f"{label}{i}"

    mux = StochasticMux([Streamer(slow, str(k)) for k in range(8)], 8, 16, random_state=0)
    assert len([x async for x in mux(max_iter=200)]) == 200
    assert peak >= 4  # many members wait at the same time, not one after the other


@pytest.mark.asyncio
async def test_prefetch_is_bounded() -> None:
    produced = 0

    async def counting() -> AsyncIterator[int]:
        nonlocal produced
        while True:
            produced += 1
            yield produced

    mux = ShuffledMux([Streamer(counting)], random_state=0, prefetch=4)
    async with mux.iterate() as stream:
        await stream.take(2)
        for _ in range(20):
            await asyncio.sleep(0)
        assert produced <= 2 + 4 + 1


# -- ChainMux's lazy members


def test_chain_of_an_endless_generator_of_streamers() -> None:
    def shards() -> Iterator[Streamer[str]]:
        k = 0
        while True:
            yield Streamer(letters, f"s{k}-", 2)
            k += 1

    assert list(ChainMux(shards())(max_iter=5)) == ["s0-0", "s0-1", "s1-0", "s1-1", "s2-0"]


def test_chain_generator_function_is_called_every_pass() -> None:
    calls = 0

    def shards() -> Iterator[Streamer[str]]:
        nonlocal calls
        calls += 1
        yield Streamer(letters, "p", 2)

    assert list(ChainMux(shards, mode="cycle")(max_iter=5)) == ["p0", "p1", "p0", "p1", "p0"]
    assert calls == 3


def test_chain_one_shot_iterable_cycles_like_pescador() -> None:
    ours = ChainMux(iter(members()), mode="cycle")
    theirs = pescador.ChainMux(iter(members("pescador")), mode="cycle")
    assert list(ours(max_iter=40)) == list(theirs(max_iter=40))
    assert list(ChainMux(iter([]), mode="cycle")) == []


# -- recipes


def test_mux_pickles_and_reports_itself() -> None:
    mux = StochasticMux(members(), 2, 3, random_state=1)
    clone = pickle.loads(pickle.dumps(mux))
    assert list(clone(max_iter=30)) == list(mux(max_iter=30))
    assert mux.n_streams == len(SIZES)
    assert "StochasticMux" in repr(mux)
    assert isinstance(mux, am.BaseMux)
    assert mux.n_active == 2


# -- statistics


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_statistics_count_what_the_mux_did(kind: str) -> None:
    weights = [3.0, 1, 1, 1, 1, 1]
    mux = StochasticMux(members(kind, [400] * 6), 3, 8, weights=weights, random_state=0)
    stream = mux.iterate(max_iter=3000)
    with pytest.raises(RuntimeError, match="started"):
        stream.statistics()
    got = list(stream)
    stats = stream.statistics()
    assert stats.samples == len(got) == 3000
    per_member = [sum(1 for x in got if x[0] == label) for label in "abcdef"]
    assert [m.samples for m in stats.members] == per_member
    assert stats.activations == sum(m.activations for m in stats.members) >= 3000 // 16
    assert all(m.activations >= m.exhaustions for m in stats.members)
    assert [m.target for m in stats.members] == pytest.approx([0.375] + [0.125] * 5)
    assert stats.mixture_error == max(abs(m.share - m.target) for m in stats.members)  # type: ignore[operator]
    assert all(m.buffered == 0 for m in stats.members) or kind == "async"


@pytest.mark.asyncio
async def test_statistics_of_a_running_async_mux() -> None:
    mux = ShuffledMux(members("async", [1000] * 4, max_delay=0.001), random_state=0, prefetch=5)
    async with mux.iterate() as stream:
        await stream.take(200)
        stats = stream.statistics()
    assert stats.samples == 200
    assert stats.waited > 0.0  # sources with latency make the consumer wait at times
    assert all(0 <= m.buffered <= 5 for m in stats.members)
    assert stats.members[0].target == 0.25


def test_statistics_only_for_muxes() -> None:
    stream = Streamer(letters, "a", 3).iterate()
    next(stream)
    with pytest.raises(TypeError, match="not a mux"):
        stream.statistics()
    chain = ChainMux(members()).iterate()
    next(chain)
    with pytest.raises(TypeError, match="ChainMux"):
        chain.statistics()


@pytest.mark.asyncio
async def test_chain_starts_the_next_async_member_early(lifecycle: Lifecycle) -> None:
    chain = ChainMux([Streamer(lifecycle.async_source, 50) for _ in range(4)])
    async with chain.iterate() as stream:
        assert await stream.take(1) == [0]
        # While the first member still runs, the second has been started.
        while lifecycle.started < 2:
            await anyio.lowlevel.checkpoint()
        assert lifecycle.started == 2
        rest = await stream.to_list()
    assert len(rest) == 4 * 50 - 1
    assert lifecycle.open == 0

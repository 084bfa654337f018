"""Reference sync driver for the mux policies, the pescador runner used to compare with
them, and the tests of the shared policy helpers (``aiostream_mux._mux._policy``)."""

from __future__ import annotations

import copy
import pickle
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

import numpy as np
import pescador
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aiostream_mux._exceptions import ConfigError
from aiostream_mux._mux._policy import (
    Activation,
    MuxPolicy,
    SeedSpawner,
    check_bool,
    check_choice,
    check_int,
    check_n_streams,
    check_rate,
    check_weights,
    choice_cdf,
    fork_rng,
    global_random_state,
    normalize_random_state,
    seed_sequence_from,
    uniform_draw,
)

Label = tuple[int, int]

# ---------------------------------------------------------------- reference driver


@dataclass
class Trace:
    """What the reference driver saw."""

    items: list[Any] = field(default_factory=list)
    slots: list[int] = field(default_factory=list)
    activations: list[Activation] = field(default_factory=list)
    yielded: list[int] = field(default_factory=list)  # samples per activation
    finished: bool = False  # next_slot() returned None (rather than hitting limit)


def labelled(lengths: Sequence[int]) -> list[list[Label]]:
    """Stream contents of the given lengths, with labels distinct across streams."""
    return [[(i, j) for j in range(n)] for i, n in enumerate(lengths)]


def drive(
    policy: MuxPolicy,
    contents: Sequence[Iterable[Any]],
    limit: int | None = None,
    max_steps: int = 200_000,
) -> Trace:
    """Run ``policy`` over streams replaying ``contents[index]`` (the sync driver loop)."""
    trace = Trace()
    streams: dict[int, Iterator[Any]] = {}
    current: dict[int, int] = {}

    def open_(act: Activation) -> None:
        assert 0 <= act.slot < policy.n_slots
        assert act.max_iter is None or act.max_iter >= 1
        trace.activations.append(act)
        trace.yielded.append(0)
        current[act.slot] = len(trace.activations) - 1
        it = iter(contents[act.index])
        streams[act.slot] = it if act.max_iter is None else islice(it, act.max_iter)

    for act in policy.start():
        open_(act)
    steps = 0
    while limit is None or len(trace.items) < limit:
        slot = policy.next_slot()
        if slot is None:
            trace.finished = True
            break
        steps += 1
        if steps > max_steps:
            raise AssertionError("policy did not terminate")
        assert slot in streams, f"slot {slot} was never activated"
        try:
            item = next(streams[slot])
        except StopIteration:
            for act in policy.on_exhausted(slot):
                open_(act)
            continue
        policy.on_item(slot)
        trace.items.append(item)
        trace.slots.append(slot)
        trace.yielded[current[slot]] += 1
    return trace


class PescadorHang(Exception):
    """pescador kept activating streams without yielding: it would loop forever."""


def pescador_streamers(
    contents: Sequence[Sequence[Any]], *, after: int = 0, patience: int = 5_000
) -> list[pescador.Streamer]:
    """pescador Streamers replaying ``contents``.

    Once ``after`` samples were produced, ``patience`` activations in a row without a
    sample raise PescadorHang: pescador's infinite loops activate streams forever.
    Run our policy first and pass its sample count as ``after`` when it finished.
    """
    produced = [0]
    idle = [0]

    def source(i: int) -> Iterator[Any]:
        idle[0] += 1
        if produced[0] >= after and idle[0] > patience:
            raise PescadorHang
        for item in contents[i]:
            produced[0] += 1
            idle[0] = 0
            yield item

    return [pescador.Streamer(source, i) for i in range(len(contents))]


def run_pescador(mux: Any, limit: int) -> list[Any]:
    """Samples pescador yields (up to ``limit``; fewer if it ends or hangs)."""
    out: list[Any] = []
    try:
        for item in mux.iterate(max_iter=limit):
            out.append(item)
    except PescadorHang:
        pass
    return out


# ----------------------------------------------------------------------- tests


class _Fixed:
    """A trivial policy: slot 0 forever, restarting streamer 0 once."""

    def __init__(self) -> None:
        self.n_slots = 1
        self.restarted = False

    def start(self) -> list[Activation]:
        return [Activation(0, 0, 2, None)]

    def next_slot(self) -> int | None:
        return 0

    def on_item(self, slot: int) -> None:
        pass

    def on_exhausted(self, slot: int) -> list[Activation]:
        if self.restarted:
            return []
        self.restarted = True
        return [Activation(0, 1, None, None)]


def test_driver_honours_budgets_and_guards_loops() -> None:
    policy = _Fixed()
    with pytest.raises(AssertionError, match="did not terminate"):
        drive(policy, [["a", "b", "c"], ["d"]], max_steps=50)
    trace = drive(_Fixed(), [["a", "b", "c"], ["d"]], limit=3)
    assert trace.items == ["a", "b", "d"]
    assert trace.yielded == [2, 1]


def test_activation_is_frozen() -> None:
    act = Activation(1, 2, None, None)
    with pytest.raises(AttributeError):
        act.slot = 3  # type: ignore[misc]
    assert act == Activation(1, 2, None, None)
    assert pickle.loads(pickle.dumps(act)) == act


# -- normalize_random_state


def test_normalize_none_is_global_state() -> None:
    rng = normalize_random_state(None)
    assert rng is global_random_state()
    np.random.seed(7)
    a = uniform_draw(rng)()
    np.random.seed(7)
    assert np.random.random_sample() == a


@pytest.mark.parametrize("seed", [0, 5, 2**32 - 1, np.int64(3), np.uint32(9)])
def test_normalize_int(seed: Any) -> None:
    rng = normalize_random_state(seed)
    assert isinstance(rng, np.random.RandomState)
    assert rng.random_sample() == np.random.RandomState(int(seed)).random_sample()


def test_normalize_passes_generators_through() -> None:
    rs = np.random.RandomState(1)
    gen = np.random.default_rng(1)
    assert normalize_random_state(rs) is rs
    assert normalize_random_state(gen) is gen


@pytest.mark.parametrize(
    ("value", "match"),
    [
        (True, r"random_state=True must be None, an int"),
        (np.bool_(False), r"random_state=np.False_ must be None, an int"),
        (-1, r"random_state=-1 must be between 0 and 2\*\*32 - 1"),
        (2**32, r"random_state=4294967296 must be between"),
        (1.5, r"random_state=1.5 must be None, an int"),
        ("3", r"random_state='3' must be"),
        (np.random.SeedSequence(1), r"must be None, an int"),
    ],
)
def test_normalize_rejects(value: object, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        normalize_random_state(value)


def test_normalize_names_parameter() -> None:
    with pytest.raises(ConfigError, match=r"^seed=-2 "):
        normalize_random_state(-2, name="seed")


def test_fork_rng() -> None:
    rs = np.random.RandomState(3)
    fork = fork_rng(rs)
    assert fork is not rs
    assert fork.random_sample() == rs.random_sample()
    gen = np.random.default_rng(3)
    gfork = fork_rng(gen)
    assert gfork is not gen
    assert gfork.random() == gen.random()
    assert fork_rng(global_random_state()) is global_random_state()


# -- seed_sequence_from


def test_seed_sequence_from_int_and_none() -> None:
    assert seed_sequence_from(None) is None
    assert seed_sequence_from(global_random_state()) is None
    ss = seed_sequence_from(5)
    assert ss is not None
    assert ss.entropy == 5
    root = np.random.SeedSequence(9)
    assert seed_sequence_from(root) is root
    with pytest.raises(ConfigError, match="random_state=-1"):
        seed_sequence_from(-1)
    with pytest.raises(ConfigError, match="random_state=True"):
        seed_sequence_from(True)


@pytest.mark.parametrize(
    "make",
    [lambda s: np.random.RandomState(s), lambda s: np.random.default_rng(s)],
    ids=["RandomState", "Generator"],
)
def test_seed_sequence_from_state_does_not_consume(make: Callable[[int], Any]) -> None:
    rng = make(11)
    ref = make(11)
    ss1 = seed_sequence_from(rng)
    ss2 = seed_sequence_from(rng)
    assert ss1 is not None
    assert ss2 is not None
    assert ss1.entropy == ss2.entropy  # deterministic
    assert seed_sequence_from(make(12)).entropy != ss1.entropy  # type: ignore[union-attr]
    draw, ref_draw = uniform_draw(rng), uniform_draw(ref)
    assert draw() == ref_draw()  # rng was not consumed
    assert seed_sequence_from(rng).entropy != ss1.entropy  # type: ignore[union-attr]


def test_seed_spawner_matches_spawn_without_mutating() -> None:
    root = np.random.SeedSequence(42)
    spawner = SeedSpawner(root)
    mine = [spawner() for _ in range(3)]
    assert root.n_children_spawned == 0
    theirs = copy.deepcopy(root).spawn(3)
    for a, b in zip(mine, theirs, strict=True):
        assert a is not None
        assert a.spawn_key == b.spawn_key
        assert (a.sequence().generate_state(4) == b.generate_state(4)).all()
    assert SeedSpawner(None)() is None
    again = SeedSpawner(root)()
    assert again is not None
    assert again.spawn_key == (0,)


# -- choice_cdf is rng.choice's cdf


@settings(max_examples=200, deadline=None)
@given(
    weights=st.lists(
        st.sampled_from([0.0, 1e-300, 1e-9, 0.1, 0.5, 1.0, 3.3, 7.0, 1e9]), min_size=1, max_size=12
    ).filter(lambda w: sum(w) > 0),
    seed=st.integers(0, 2**32 - 1),
    generator=st.booleans(),
)
def test_choice_cdf_matches_rng_choice(weights: list[float], seed: int, generator: bool) -> None:
    from bisect import bisect_right

    w = np.array(weights)
    p = w / np.sum(w)
    cdf = choice_cdf(p)
    make: Callable[[int], Any] = np.random.default_rng if generator else np.random.RandomState
    ours, theirs = make(seed), make(seed)
    draw = uniform_draw(ours)
    for _ in range(30):
        assert bisect_right(cdf, draw()) == int(theirs.choice(len(w), p=p))


# -- validation helpers


def test_check_helpers() -> None:
    assert check_n_streams(3) == 3
    with pytest.raises(ConfigError, match=r"streamers has 0 members: cannot mux an empty"):
        check_n_streams(0)
    assert check_int("n_active", np.int32(4), 1) == 4
    with pytest.raises(ConfigError, match=r"^n_active=0 must be >= 1$"):
        check_int("n_active", 0, 1)
    for bad in (True, 2.0, "2", None):
        with pytest.raises(ConfigError, match=r"^n_active=.* must be an int$"):
            check_int("n_active", bad, 1)
    assert check_bool("prune_empty_streams", np.bool_(True)) is True
    with pytest.raises(ConfigError, match=r"prune_empty_streams=1 must be True or False"):
        check_bool("prune_empty_streams", 1)
    assert check_choice("mode", "cycle", ("exhaustive", "cycle")) == "cycle"
    with pytest.raises(ConfigError, match=r"mode='x' is not valid; use one of 'a', 'b'"):
        check_choice("mode", "x", ("a", "b"))


@pytest.mark.parametrize(
    ("rate", "dist", "match"),
    [
        (0, "constant", r"rate=0 must be > 0"),
        (-1.0, "poisson", r"rate=-1.0 must be > 0"),
        (float("nan"), "constant", r"rate=nan must be > 0"),
        (float("inf"), "constant", r"rate=inf must be finite"),
        (0.5, "binomial", r"rate=0.5 must be >= 1 with dist='binomial'"),
        (0.5, "poisson", r"rate=0.5 must be >= 1 with dist='poisson'"),
        (True, "constant", r"rate=True must be a number"),
        ("5", "constant", r"rate='5' must be a number"),
    ],
)
def test_check_rate_rejects(rate: object, dist: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        check_rate(rate, dist)


def test_check_rate_accepts() -> None:
    assert check_rate(None, "binomial") is None
    assert check_rate(0.5, "constant") == 0.5
    assert check_rate(1, "poisson") == 1.0
    assert check_rate(np.float32(2.5), "binomial") == 2.5


@pytest.mark.parametrize(
    ("weights", "match"),
    [
        ([1.0, 2.0], r"weights=\[1.0, 2.0\] has 2 entries; it must have one per streamer \(3\)"),
        ([[1.0, 2.0, 3.0]], r"must be 1-D, not of shape \(1, 3\)"),
        ([1.0, -1.0, 3.0], r"weights=\[1.0, -1.0, 3.0\] must all be >= 0"),
        ([0.0, 0.0, 0.0], r"must contain at least one value > 0"),
        ([1.0, float("nan"), 1.0], r"must all be finite"),
        ([1.0, float("inf"), 1.0], r"must all be finite"),
        ([1e308, 1e308, 1e308], r"sum to inf, which is not finite"),
        (["a", "b", "c"], r"must be real numbers"),
        ([True, False, True], r"must be real numbers"),
        ([1 + 1j, 1, 1], r"must be real numbers"),
        ([None, 1, 2], r"must be real numbers"),
        ([[1], [2, 3], 4], r"must be an array of numbers"),
    ],
)
def test_check_weights_rejects(weights: object, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        check_weights(weights, 3, keep_float_dtype=True)


def test_check_weights_normalises_a_copy() -> None:
    w = np.array([1.0, 3.0])
    out = check_weights(w, 2, keep_float_dtype=True)
    assert w.tolist() == [1.0, 3.0]
    assert out.tolist() == [0.25, 0.75]
    assert not out.flags.writeable
    ints = check_weights(np.array([1, 3]), 2, keep_float_dtype=True)
    assert ints.dtype == np.float64
    assert ints.tolist() == [0.25, 0.75]
    f32 = check_weights(np.array([1, 3], dtype=np.float32), 2, keep_float_dtype=True)
    assert f32.dtype == np.float32
    assert (
        check_weights(np.array([1, 3], dtype=np.float32), 2, keep_float_dtype=False).dtype
        == np.float64
    )
    assert check_weights(2.0, 1, keep_float_dtype=True).tolist() == [1.0]
    uniform = check_weights(None, 3, keep_float_dtype=True)
    expected = 1.0 / 3 * np.ones(3)
    expected /= np.sum(expected)
    assert uniform.tolist() == expected.tolist()

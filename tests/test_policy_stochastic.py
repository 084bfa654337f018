"""StochasticPolicy: pescador 3.0's exact sequence, validation, fixed bugs, invariants."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np
import pescador
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aiostream_mux._exceptions import ConfigError
from aiostream_mux._mux._stochastic import StochasticPolicy, validate_stochastic

from .test_policy_driver import drive, labelled, pescador_streamers, run_pescador

MODES = ("with_replacement", "single_active", "exhaustive")
DISTS = ("constant", "binomial", "poisson")
WEIGHT_VALUES = [0.0, 0.25, 0.5, 1.0, 2.0, 3.7, 10.0]


@dataclass
class Case:
    lengths: list[int]
    n_active: int
    rate: float | int | None
    weights: list[float] | None
    float32: bool
    mode: str
    prune: bool
    dist: str
    seed: int
    as_random_state: bool

    def weights_array(self) -> Any:
        if self.weights is None:
            return None
        return np.array(self.weights, dtype=np.float32 if self.float32 else np.float64)

    def rng(self) -> Any:
        return np.random.RandomState(self.seed) if self.as_random_state else self.seed

    def policy(self, rng: Any = None, seed: Any = None) -> StochasticPolicy:
        config = validate_stochastic(
            len(self.lengths),
            self.n_active,
            self.rate,
            weights=self.weights_array(),
            mode=self.mode,
            prune_empty_streams=self.prune,
            dist=self.dist,
        )
        return StochasticPolicy(
            config, np.random.RandomState(self.seed) if rng is None else rng, seed
        )

    def pescador_mux(self, after: int = 0) -> Any:
        return pescador.StochasticMux(
            pescador_streamers(labelled(self.lengths), after=after),
            self.n_active,
            self.rate,
            weights=self.weights_array(),
            mode=self.mode,
            prune_empty_streams=self.prune,
            dist=self.dist,
            random_state=self.rng(),
        )


@st.composite
def cases(draw: st.DrawFn, max_streams: int = 6) -> Case:
    lengths = draw(st.lists(st.integers(0, 8), min_size=1, max_size=max_streams))
    n = len(lengths)
    mode = draw(st.sampled_from(MODES))
    n_active = draw(st.integers(1, n + 2 if mode == "with_replacement" else n))
    dist = draw(st.sampled_from(DISTS))
    low = 0.3 if dist == "constant" else 1.0
    rate = draw(st.none() | st.integers(1, 8) | st.floats(low, 8.0))
    weights = draw(
        st.none()
        | st.lists(
            st.sampled_from(WEIGHT_VALUES) | st.floats(0.1, 10.0), min_size=n, max_size=n
        ).filter(lambda w: any(x > 0 for x in w))
    )
    return Case(
        lengths=lengths,
        n_active=n_active,
        rate=rate,
        weights=weights,
        float32=draw(st.booleans()) if weights is not None else False,
        mode=mode,
        prune=draw(st.booleans()),
        dist=dist,
        seed=draw(st.integers(0, 2**32 - 1)),
        as_random_state=draw(st.booleans()),
    )


LIMIT = 120


@settings(max_examples=300, deadline=None)
@given(case=cases())
def test_same_sequence_as_pescador(case: Case) -> None:
    trace = drive(case.policy(), labelled(case.lengths), limit=LIMIT)
    # Where we finish, pescador either finishes too or loops forever (cut short).
    after = len(trace.items) if trace.finished else LIMIT
    theirs = run_pescador(case.pescador_mux(after=after), LIMIT)
    assert trace.items == theirs


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dist", DISTS)
def test_same_sequence_as_pescador_on_global_state(mode: str, dist: str) -> None:
    lengths = [3, 0, 7, 5, 1]
    n_active = 3
    np.random.seed(1234)
    mux = pescador.StochasticMux(
        pescador_streamers(labelled(lengths)), n_active, 2.5, mode=mode, dist=dist
    )
    theirs = run_pescador(mux, 300)
    after_theirs = np.random.random_sample()
    np.random.seed(1234)
    config = validate_stochastic(len(lengths), n_active, 2.5, mode=mode, dist=dist)
    from aiostream_mux._mux._policy import normalize_random_state

    trace = drive(StochasticPolicy(config, normalize_random_state(None)), labelled(lengths), 300)
    assert trace.items == theirs
    if len(theirs) == 300:  # both consumed the global state identically
        assert np.random.random_sample() == after_theirs


def test_pescador_docstring_example() -> None:
    config = validate_stochastic(3, 2, 5)
    contents = [["a"] * 100, ["b"] * 100, ["c"] * 100]
    mux = pescador.StochasticMux(
        [pescador.Streamer(c) for c in contents], 2, rate=5, random_state=0
    )
    expected = "".join(mux(max_iter=30))
    trace = drive(StochasticPolicy(config, np.random.RandomState(0)), contents, 30)
    assert "".join(trace.items) == expected


# ------------------------------------------------------------------ validation


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(n_streams=0), r"streamers has 0 members: cannot mux an empty collection"),
        (dict(n_active=0), r"^n_active=0 must be >= 1$"),
        (dict(n_active=-3), r"^n_active=-3 must be >= 1$"),
        (dict(n_active=2.0), r"^n_active=2.0 must be an int$"),
        (dict(n_active=True), r"^n_active=True must be an int$"),
        (dict(rate=0), r"^rate=0 must be > 0"),
        (dict(rate=-2.0), r"^rate=-2.0 must be > 0"),
        (dict(rate=float("nan")), r"^rate=nan must be > 0"),
        (dict(rate=float("inf")), r"^rate=inf must be finite"),
        (dict(rate=0.5), r"^rate=0.5 must be >= 1 with dist='binomial'"),
        (dict(rate="3"), r"^rate='3' must be a number"),
        (dict(weights=[1.0, 2.0]), r"^weights=\[1.0, 2.0\] has 2 entries"),
        (dict(weights=[1.0, -2.0, 1.0]), r"must all be >= 0"),
        (dict(weights=[0, 0, 0]), r"must contain at least one value > 0"),
        (dict(weights=[1.0, float("nan"), 0]), r"must all be finite"),
        (dict(weights=[1.0, float("inf"), 0]), r"must all be finite"),
        (dict(weights=np.ones((3, 1))), r"must be 1-D"),
        (
            dict(mode="replace"),
            r"^mode='replace' is not valid; use one of 'with_replacement', "
            r"'single_active', 'exhaustive'$",
        ),
        (
            dict(dist="gauss"),
            r"^dist='gauss' is not valid; use one of 'constant', 'binomial', "
            r"'poisson'$",
        ),
        (
            dict(mode="single_active", n_active=4),
            r"^mode='single_active' requires that "
            r"n_active=4 be at most the number of streamers=3$",
        ),
        (dict(mode="exhaustive", n_active=5), r"^mode='exhaustive' requires that n_active=5"),
        (dict(prune_empty_streams=None), r"^prune_empty_streams=None must be True or False$"),
    ],
)
def test_validation(kwargs: dict[str, Any], match: str) -> None:
    args: dict[str, Any] = dict(n_streams=3, n_active=2, rate=4.0)
    args.update(kwargs)
    with pytest.raises(ConfigError, match=match):
        validate_stochastic(**args)


def test_validation_accepts_and_normalises() -> None:
    config = validate_stochastic(3, 5, None, mode="with_replacement")
    assert config.n_active == 5
    assert config.rate is None
    config = validate_stochastic(3, np.int64(3), 0.5, dist="constant", mode="exhaustive")
    assert config.n_active == 3
    assert type(config.n_active) is int
    assert config.rate == 0.5


# ------------------------------------------------------------------ fixed bugs


def test_integer_weights_are_accepted() -> None:
    config = validate_stochastic(3, 2, 3.0, weights=[1, 0, 3])
    assert config.weights.dtype == np.float64
    as_floats = validate_stochastic(3, 2, 3.0, weights=[1.0, 0.0, 3.0])
    contents = labelled([5, 5, 5])
    a = drive(StochasticPolicy(config, np.random.RandomState(0)), contents, 50)
    b = drive(StochasticPolicy(as_floats, np.random.RandomState(0)), contents, 50)
    assert a.items == b.items
    with pytest.raises(TypeError):  # pescador 3.0 cannot normalise integer weights in place
        pescador.StochasticMux(pescador_streamers(contents), 2, 3.0, weights=np.array([1, 0, 3]))


def test_callers_weights_are_not_mutated() -> None:
    weights = np.array([1.0, 3.0])
    config = validate_stochastic(2, 1, 2.0, weights=weights)
    drive(StochasticPolicy(config, np.random.RandomState(0)), labelled([4, 4]), 20)
    assert weights.tolist() == [1.0, 3.0]
    assert config.weights.tolist() == [0.25, 0.75]


@pytest.mark.parametrize("mode", ["with_replacement", "single_active"])
@pytest.mark.parametrize("rate", [None, 3.0])
def test_all_empty_streams_terminate(mode: str, rate: float | None) -> None:
    # pescador 3.0 loops forever here (prune_empty_streams=False).
    lengths = [0, 0, 0]
    config = validate_stochastic(3, 2, rate, mode=mode, prune_empty_streams=False)
    trace = drive(StochasticPolicy(config, np.random.RandomState(0)), labelled(lengths))
    assert trace.finished
    assert trace.items == []
    assert {a.index for a in trace.activations} == {0, 1, 2}
    mux = pescador.StochasticMux(
        pescador_streamers(labelled(lengths), patience=500),
        2,
        rate,
        mode=mode,
        prune_empty_streams=False,
        random_state=0,
    )
    assert run_pescador(mux, 10) == []  # ... until the activation budget ran out


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("prune", [False, True])
def test_one_shot_streams_terminate(mode: str, prune: bool) -> None:
    """Iterators consumed across activations: once all are drained, the mux ends."""
    contents = [iter(range(i * 10, i * 10 + 4)) for i in range(3)]
    config = validate_stochastic(3, 2, 2.0, mode=mode, prune_empty_streams=prune)
    trace = drive(StochasticPolicy(config, np.random.RandomState(1)), contents)
    assert trace.finished
    everything = [i * 10 + j for i in range(3) for j in range(4)]
    if mode == "exhaustive":  # each streamer gets one activation and its budget
        assert set(trace.items) <= set(everything)
    else:
        assert sorted(trace.items) == everything


def test_termination_needs_every_positive_streamer_empty_since_last_sample() -> None:
    # Streamer 2 has weight 0: it may be activated but is never drawn, so it does
    # not count; streamer 0 is empty, streamer 1 has samples.
    config = validate_stochastic(
        3, 1, 2.0, weights=[1.0, 1.0, 0.0], mode="with_replacement", prune_empty_streams=False
    )
    for seed in range(20):
        trace = drive(
            StochasticPolicy(config, np.random.RandomState(seed)), labelled([0, 3, 5]), 200
        )
        # Either a zero-weight streamer took the only slot (pescador ends too), or
        # samples keep coming from streamer 1.
        assert set(trace.items) <= {(1, 0), (1, 1), (1, 2)}
        assert trace.finished == (len(trace.items) < 200)


# ------------------------------------------------------------------ invariants


@settings(max_examples=200, deadline=None)
@given(case=cases(), generator=st.booleans())
def test_budgets_weights_and_slots(case: Case, generator: bool) -> None:
    rng: Any = np.random.default_rng(case.seed) if generator else None
    policy = case.policy(rng=rng)
    trace = drive(policy, labelled(case.lengths), limit=150)
    weights = policy.config.weights
    for act, count in zip(trace.activations, trace.yielded, strict=True):
        if case.rate is None:
            assert act.max_iter is None
        else:
            assert act.max_iter is not None
            assert count <= act.max_iter
            if case.dist == "constant":
                assert act.max_iter == math.ceil(case.rate)
    # Samples only ever come from streamers with a positive weight.
    assert all(weights[label[0]] > 0 for label in trace.items)
    counts = Counter(trace.items)
    if case.mode == "exhaustive":
        assert max(counts.values(), default=1) == 1
        assert Counter(a.index for a in trace.activations).most_common(1)[0][1] == 1
    if case.mode != "with_replacement":
        # A streamer is never active in two slots at once.
        live: dict[int, int] = {}
        for act in trace.activations:
            live[act.slot] = act.index
            assert len(set(live.values())) == len(live)


@settings(max_examples=150, deadline=None)
@given(
    lengths=st.lists(st.integers(0, 8), min_size=1, max_size=7),
    data=st.data(),
    generator=st.booleans(),
)
def test_exhaustive_without_rate_yields_everything_once(
    lengths: list[int], data: st.DataObject, generator: bool
) -> None:
    n = len(lengths)
    n_active = data.draw(st.integers(1, n))
    seed = data.draw(st.integers(0, 2**32 - 1))
    rng: Any = np.random.default_rng(seed) if generator else np.random.RandomState(seed)
    config = validate_stochastic(n, n_active, None, mode="exhaustive")
    trace = drive(StochasticPolicy(config, rng), labelled(lengths))
    assert trace.finished
    assert sorted(trace.items) == sorted(x for stream in labelled(lengths) for x in stream)
    # Within each stream, order is kept.
    for i in range(n):
        assert [x for x in trace.items if x[0] == i] == labelled(lengths)[i]


def test_generator_is_deterministic_and_seeds_do_not_consume_rng() -> None:
    config = validate_stochastic(4, 2, 3.0, weights=[1, 2, 3, 4], mode="single_active")
    contents = labelled([6, 2, 0, 9])
    root = np.random.SeedSequence(99)
    a = drive(StochasticPolicy(config, np.random.default_rng(5), root), contents, 200)
    b = drive(StochasticPolicy(config, np.random.default_rng(5), root), contents, 200)
    c = drive(StochasticPolicy(config, np.random.default_rng(5)), contents, 200)
    assert a.items == b.items == c.items
    assert [(x.slot, x.index, x.max_iter) for x in a.activations] == [
        (x.slot, x.index, x.max_iter) for x in b.activations
    ]
    keys = [act.seed.spawn_key for act in a.activations if act.seed is not None]
    assert len(keys) == len(a.activations) == len(set(keys))
    assert all(act.seed is None for act in c.activations)
    assert root.n_children_spawned == 0
    # Same with a RandomState: pescador-exact whether or not seeds are spawned.
    d = drive(StochasticPolicy(config, np.random.RandomState(5), root), contents, 200)
    e = drive(StochasticPolicy(config, np.random.RandomState(5)), contents, 200)
    assert d.items == e.items


def test_start_once_and_properties() -> None:
    config = validate_stochastic(3, 2, None)
    policy = StochasticPolicy(config, np.random.RandomState(0))
    assert policy.n_slots == 2
    assert policy.next_slot() is None  # not started
    assert not policy.finished
    acts = policy.start()
    assert [a.slot for a in acts] == [0, 1]
    assert policy.active_indices == tuple(a.index for a in acts)
    assert policy.config is config
    with pytest.raises(RuntimeError, match="already called"):
        policy.start()

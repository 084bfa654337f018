"""ShuffledPolicy: pescador 3.0's exact sequence, validation, fixed bugs, invariants."""

from __future__ import annotations

from typing import Any

import numpy as np
import pescador
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aiostream_mux._exceptions import ConfigError
from aiostream_mux._mux._policy import normalize_random_state
from aiostream_mux._mux._shuffled import ShuffledPolicy, validate_shuffled

from .test_policy_driver import drive, labelled, pescador_streamers, run_pescador

LIMIT = 150

weights_for = st.lists(st.sampled_from([0.0, 0.25, 1.0, 2.0, 5.0]) | st.floats(0.1, 10.0)).filter(
    lambda w: any(x > 0 for x in w)
)


@settings(max_examples=250, deadline=None)
@given(
    lengths=st.lists(st.integers(0, 6), min_size=1, max_size=6),
    data=st.data(),
    seed=st.integers(0, 2**32 - 1),
    as_random_state=st.booleans(),
)
def test_same_sequence_as_pescador(
    lengths: list[int], data: st.DataObject, seed: int, as_random_state: bool
) -> None:
    n = len(lengths)
    weights = data.draw(
        st.none()
        | st.lists(
            st.sampled_from([0.0, 0.25, 1.0, 2.0, 5.0]) | st.floats(0.1, 10.0),
            min_size=n,
            max_size=n,
        ).filter(lambda w: any(x > 0 for x in w))
    )
    config = validate_shuffled(n, weights)
    trace = drive(ShuffledPolicy(config, np.random.RandomState(seed)), labelled(lengths), LIMIT)
    after = len(trace.items) if trace.finished else LIMIT
    mux = pescador.ShuffledMux(
        pescador_streamers(labelled(lengths), after=after),
        weights=None if weights is None else list(weights),
        random_state=np.random.RandomState(seed) if as_random_state else seed,
    )
    assert trace.items == run_pescador(mux, LIMIT)


def test_same_sequence_as_pescador_on_global_state() -> None:
    lengths = [4, 0, 2, 6]
    np.random.seed(77)
    theirs = run_pescador(pescador.ShuffledMux(pescador_streamers(labelled(lengths))), 100)
    np.random.seed(77)
    policy = ShuffledPolicy(validate_shuffled(4), normalize_random_state(None))
    assert drive(policy, labelled(lengths), 100).items == theirs


def test_pescador_docstring_example() -> None:
    contents = [["a"] * 100, ["b"] * 100, ["c"] * 100]
    mux = pescador.ShuffledMux(
        [pescador.Streamer(c) for c in contents], weights=[0.5, 0.25, 0.25], random_state=0
    )
    expected = "".join(mux(max_iter=30))
    config = validate_shuffled(3, [0.5, 0.25, 0.25])
    trace = drive(ShuffledPolicy(config, np.random.RandomState(0)), contents, 30)
    assert "".join(trace.items) == expected


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(n_streams=0), r"streamers has 0 members: cannot mux an empty collection"),
        (dict(weights=[1.0]), r"^weights=\[1.0\] has 1 entries; it must have one per streamer"),
        (dict(weights=[1.0, -1.0, 0.0]), r"must all be >= 0"),
        (dict(weights=[0.0, 0.0, 0.0]), r"must contain at least one value > 0"),
        (dict(weights=[np.nan, 1.0, 1.0]), r"must all be finite"),
        (dict(weights=[np.inf, 1.0, 1.0]), r"must all be finite"),
        (dict(weights=np.ones((3, 3))), r"must be 1-D, not of shape \(3, 3\)"),
    ],
)
def test_validation(kwargs: dict[str, Any], match: str) -> None:
    args: dict[str, Any] = dict(n_streams=3, weights=None)
    args.update(kwargs)
    with pytest.raises(ConfigError, match=match):
        validate_shuffled(**args)


def test_integer_weights_and_no_mutation() -> None:
    weights = np.array([2, 0, 2])
    config = validate_shuffled(3, weights)
    assert weights.tolist() == [2, 0, 2]
    assert config.weights.dtype == np.float64
    assert config.weights.tolist() == [0.5, 0.0, 0.5]
    floats = np.array([2.0, 0.0, 2.0])
    validate_shuffled(3, floats)
    assert floats.tolist() == [2.0, 0.0, 2.0]


@pytest.mark.parametrize("n", [1, 3])
def test_all_empty_streams_terminate(n: int) -> None:
    config = validate_shuffled(n)
    trace = drive(ShuffledPolicy(config, np.random.RandomState(0)), labelled([0] * n))
    assert trace.finished
    assert trace.items == []
    assert len(trace.activations) == n  # one empty activation each, never restarted


def test_one_shot_streams_terminate() -> None:
    contents = [iter(range(i * 10, i * 10 + 3)) for i in range(3)]
    policy = ShuffledPolicy(validate_shuffled(3), np.random.RandomState(0))
    trace = drive(policy, contents)
    assert trace.finished
    assert policy.finished
    assert sorted(trace.items) == [0, 1, 2, 10, 11, 12, 20, 21, 22]


@settings(max_examples=150, deadline=None)
@given(
    lengths=st.lists(st.integers(0, 5), min_size=1, max_size=6),
    data=st.data(),
    seed=st.integers(0, 2**32 - 1),
    generator=st.booleans(),
)
def test_never_draws_a_zero_weight_slot(
    lengths: list[int], data: st.DataObject, seed: int, generator: bool
) -> None:
    n = len(lengths)
    weights = data.draw(
        st.lists(st.sampled_from([0.0, 0.5, 1.0, 3.0]), min_size=n, max_size=n).filter(
            lambda w: any(x > 0 for x in w)
        )
    )
    rng: Any = np.random.default_rng(seed) if generator else np.random.RandomState(seed)
    trace = drive(ShuffledPolicy(validate_shuffled(n, weights), rng), labelled(lengths), 100)
    assert all(weights[slot] > 0 for slot in trace.slots)
    assert all(weights[a.index] > 0 for a in trace.activations)
    assert all(a.slot == a.index and a.max_iter is None for a in trace.activations)
    # Streams with samples and a positive weight restart forever: only a mux
    # whose positive-weight streams are all empty finishes.
    assert trace.finished == all(n_ == 0 for n_, w in zip(lengths, weights, strict=True) if w)


def test_seeds_and_start_once() -> None:
    root = np.random.SeedSequence(3)
    policy = ShuffledPolicy(validate_shuffled(2), np.random.RandomState(0), root)
    assert not policy.finished
    trace = drive(policy, labelled([2, 1]), 20)
    keys = [a.seed.spawn_key for a in trace.activations if a.seed is not None]
    assert keys == [(i,) for i in range(len(trace.activations))]
    assert policy.config.n_streams == 2
    with pytest.raises(RuntimeError, match="already called"):
        policy.start()

"""RoundRobinPolicy: pescador 3.0's exact sequence, validation, fixed bugs, invariants."""

from __future__ import annotations

from typing import Any

import numpy as np
import pescador
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aiostream_mux._exceptions import ConfigError
from aiostream_mux._mux._policy import normalize_random_state
from aiostream_mux._mux._roundrobin import RoundRobinPolicy, validate_roundrobin

from .test_policy_driver import drive, labelled, pescador_streamers, run_pescador

MODES = ("exhaustive", "cycle", "permuted_cycle")
LIMIT = 150


def policy_for(n: int, mode: str, rng: Any = None) -> RoundRobinPolicy:
    rng = np.random.RandomState(0) if rng is None else rng
    return RoundRobinPolicy(validate_roundrobin(n, mode), rng)


@settings(max_examples=250, deadline=None)
@given(
    lengths=st.lists(st.integers(0, 6), min_size=1, max_size=7),
    mode=st.sampled_from(MODES),
    seed=st.integers(0, 2**32 - 1),
    as_random_state=st.booleans(),
)
def test_same_sequence_as_pescador(
    lengths: list[int], mode: str, seed: int, as_random_state: bool
) -> None:
    trace = drive(
        policy_for(len(lengths), mode, np.random.RandomState(seed)), labelled(lengths), LIMIT
    )
    after = len(trace.items) if trace.finished else LIMIT
    mux = pescador.RoundRobinMux(
        pescador_streamers(labelled(lengths), after=after, patience=200),
        mode=mode,
        random_state=np.random.RandomState(seed) if as_random_state else seed,
    )
    assert trace.items == run_pescador(mux, LIMIT)


def test_same_sequence_as_pescador_on_global_state() -> None:
    lengths = [3, 1, 0, 2]
    np.random.seed(5)
    mux = pescador.RoundRobinMux(pescador_streamers(labelled(lengths)), mode="permuted_cycle")
    theirs = run_pescador(mux, 100)
    np.random.seed(5)
    policy = policy_for(4, "permuted_cycle", normalize_random_state(None))
    assert drive(policy, labelled(lengths), 100).items == theirs


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(n_streams=0), r"streamers has 0 members: cannot mux an empty collection"),
        (
            dict(mode="shuffle"),
            r"^mode='shuffle' is not valid; use one of 'exhaustive', "
            r"'cycle', 'permuted_cycle'$",
        ),
        (dict(mode=None), r"^mode=None is not valid"),
    ],
)
def test_validation(kwargs: dict[str, Any], match: str) -> None:
    args: dict[str, Any] = dict(n_streams=3, mode="exhaustive")
    args.update(kwargs)
    with pytest.raises(ConfigError, match=match):
        validate_roundrobin(**args)


@settings(max_examples=150, deadline=None)
@given(lengths=st.lists(st.integers(0, 6), min_size=1, max_size=7))
def test_exhaustive_is_round_robin_order(lengths: list[int]) -> None:
    trace = drive(policy_for(len(lengths), "exhaustive"), labelled(lengths))
    assert trace.finished
    expected = [(i, j) for j in range(max(lengths)) for i, n in enumerate(lengths) if j < n]
    assert trace.items == expected


@settings(max_examples=100, deadline=None)
@given(
    lengths=st.lists(st.integers(0, 4), min_size=1, max_size=6).filter(any),
    seed=st.integers(0, 2**32 - 1),
    generator=st.booleans(),
)
def test_permuted_cycle_passes_are_permutations(
    lengths: list[int], seed: int, generator: bool
) -> None:
    rng: Any = np.random.default_rng(seed) if generator else np.random.RandomState(seed)
    n = len(lengths)
    trace = drive(policy_for(n, "permuted_cycle", rng), labelled(lengths), 200)
    assert not trace.finished
    passes = [trace.activations[k : k + n] for k in range(0, len(trace.activations), n)]
    assert [a.index for a in passes[0]] == list(range(n))  # first pass in order
    for group in passes:
        assert sorted(a.index for a in group) == list(range(n))
        assert [a.slot for a in group] == list(range(n))
    total = sum(lengths)
    # Every full pass yields every sample exactly once.
    for k in range(len(trace.items) // total):
        chunk = trace.items[k * total : (k + 1) * total]
        assert sorted(chunk) == sorted(x for s in labelled(lengths) for x in s)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("n", [1, 4])
def test_all_empty_streams_terminate(mode: str, n: int) -> None:
    # pescador 3.0 loops forever here in both cycling modes.
    policy = policy_for(n, mode)
    trace = drive(policy, labelled([0] * n))
    assert trace.finished
    assert policy.finished
    assert trace.items == []
    assert len(trace.activations) == n  # one pass, no restart


@pytest.mark.parametrize("mode", ["cycle", "permuted_cycle"])
def test_cycle_ends_after_a_pass_without_samples(mode: str) -> None:
    contents = [iter(range(i * 10, i * 10 + i)) for i in range(3)]  # one-shot
    trace = drive(policy_for(3, mode), contents)
    assert trace.finished
    assert sorted(trace.items) == [10, 20, 21]
    assert len(trace.activations) == 6  # two passes: the second gave nothing


def test_cycle_restarts() -> None:
    trace = drive(policy_for(3, "cycle"), [["a"], ["b", "B"], []], 9)
    assert "".join(trace.items) == "abBabBabB"


def test_seeds_and_start_once() -> None:
    root = np.random.SeedSequence(8)
    policy = RoundRobinPolicy(validate_roundrobin(2, "cycle"), np.random.RandomState(0), root)
    trace = drive(policy, labelled([1, 2]), 10)
    keys = [a.seed.spawn_key for a in trace.activations if a.seed is not None]
    assert keys == [(i,) for i in range(len(trace.activations))]
    assert policy.config.mode == "cycle"
    with pytest.raises(RuntimeError, match="already called"):
        policy.start()

"""ChainPolicy: member-by-member chaining, validation, termination of cycles."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pescador
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aiostream_mux._exceptions import ConfigError
from aiostream_mux._mux._chain import ChainPolicy, validate_chain

from .test_policy_driver import drive_chain, labelled


def chain(mode: str = "exhaustive", seed: Any = None) -> ChainPolicy:
    return ChainPolicy(validate_chain(mode), seed)


@settings(max_examples=150, deadline=None)
@given(
    lengths=st.lists(st.integers(0, 5), max_size=6),
    mode=st.sampled_from(["exhaustive", "cycle"]),
)
def test_same_sequence_as_pescador(lengths: list[int], mode: str) -> None:
    contents = labelled(lengths)
    trace = drive_chain(chain(mode), lambda: contents, 60)
    if mode == "cycle" and not any(lengths):
        # pescador loops forever (members all empty) or raises (no members).
        assert trace.finished
        assert trace.items == []
        return
    mux = pescador.ChainMux([pescador.Streamer(c) for c in contents], mode=mode)
    assert trace.items == list(mux.iterate(max_iter=60))


def test_members_from_a_generator_function() -> None:
    """A lazy source of members is iterated again at each pass, as pescador does."""
    calls = [0]

    def members() -> Iterator[Sequence[str]]:
        calls[0] += 1
        yield "ab"
        yield ""
        yield "cd"

    trace = drive_chain(chain("cycle"), members, 10)
    assert "".join(trace.items) == "abcdabcdab"
    assert calls[0] == 3
    assert [a.index for a in trace.activations][:4] == [0, 1, 2, 0]


def test_cycling_a_one_shot_iterable_gives_one_pass() -> None:
    # pescador: RuntimeError("generator raised StopIteration") at the second pass.
    once = iter(["ab", "cd"])
    policy = chain("cycle")
    trace = drive_chain(policy, lambda: once)
    assert trace.finished
    assert policy.finished
    assert "".join(trace.items) == "abcd"

    def oneshot() -> Iterator[pescador.Streamer]:
        yield from once_streamers

    once_streamers = iter([pescador.Streamer("ab"), pescador.Streamer("cd")])
    with pytest.raises(RuntimeError, match="generator raised StopIteration"):
        list(pescador.ChainMux(oneshot, mode="cycle").iterate(max_iter=10))


@pytest.mark.parametrize("mode", ["exhaustive", "cycle"])
@pytest.mark.parametrize("members", [[], ["", "", ""]], ids=["none", "all-empty"])
def test_nothing_to_chain_terminates(mode: str, members: list[str]) -> None:
    policy = chain(mode)
    trace = drive_chain(policy, lambda: members)
    assert trace.finished
    assert trace.items == []
    assert len(trace.activations) == len(members)


def test_protocol_steps() -> None:
    root = np.random.SeedSequence(1)
    policy = chain("cycle", root)
    assert policy.n_slots == 1
    assert not chain().finished  # not started
    (first,) = policy.start()
    assert (first.slot, first.index, first.max_iter) == (0, 0, None)
    assert first.seed is not None
    assert first.seed.spawn_key == (0,)
    assert policy.next_slot() == 0
    policy.on_item(0)
    (second,) = policy.on_exhausted(0)
    assert second.index == 1
    (restart,) = policy.on_members_exhausted()  # the pass gave a sample
    assert restart.index == 0
    assert policy.on_members_exhausted() == []  # this pass gave none
    assert policy.next_slot() is None
    assert policy.finished
    assert policy.config.mode == "cycle"
    with pytest.raises(RuntimeError, match="already called"):
        policy.start()


def test_validation() -> None:
    assert validate_chain().mode == "exhaustive"
    with pytest.raises(
        ConfigError, match=r"^mode='permuted_cycle' is not valid; use one of 'exhaustive', 'cycle'$"
    ):
        validate_chain("permuted_cycle")

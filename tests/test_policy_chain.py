"""ChainMux's order: pescador's sequence, lazy members, termination of cycles, validation.

ChainMux needs no sans-I/O policy object: its order is its members' order, and its
two drivers (`_chain_sync`, `_ChainAsync`) only decide when a pass ends.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pescador
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aiostream_mux import ChainMux, Streamer
from aiostream_mux._exceptions import ConfigError
from aiostream_mux._mux._chain import validate_chain

from .test_policy_driver import labelled


@settings(max_examples=150, deadline=None)
@given(
    lengths=st.lists(st.integers(0, 5), max_size=6),
    mode=st.sampled_from(["exhaustive", "cycle"]),
)
def test_same_sequence_as_pescador(lengths: list[int], mode: str) -> None:
    contents = labelled(lengths)
    ours = list(ChainMux([Streamer(c) for c in contents], mode=mode)(max_iter=60))  # type: ignore[arg-type]
    if mode == "cycle" and not any(lengths):
        # pescador loops forever (members all empty) or raises (no members).
        assert ours == []
        return
    mux = pescador.ChainMux([pescador.Streamer(c) for c in contents], mode=mode)
    assert ours == list(mux.iterate(max_iter=60))


def test_members_from_a_generator_function() -> None:
    """A lazy source of members is iterated again at each pass, as pescador does."""
    calls = [0]

    def members() -> Iterator[Streamer[str]]:
        calls[0] += 1
        yield Streamer("ab")
        yield Streamer("")
        yield Streamer("cd")

    assert "".join(ChainMux(members, mode="cycle")(max_iter=10)) == "abcdabcdab"
    assert calls[0] == 3


def test_cycling_a_one_shot_iterable_replays_it() -> None:
    # pescador materialises an iterable of members up front, so it cycles over it;
    # we read it lazily once and replay what we read.
    once = iter([Streamer("ab"), Streamer("cd")])
    assert "".join(ChainMux(once, mode="cycle")(max_iter=10)) == "abcdabcdab"

    def oneshot() -> Iterator[pescador.Streamer]:
        yield from once_streamers

    # A generator *function* over a one-shot iterable: pescador fails at the second pass.
    once_streamers = iter([pescador.Streamer("ab"), pescador.Streamer("cd")])
    with pytest.raises(RuntimeError, match="generator raised StopIteration"):
        list(pescador.ChainMux(oneshot, mode="cycle").iterate(max_iter=10))


@pytest.mark.parametrize("mode", ["exhaustive", "cycle"])
@pytest.mark.parametrize("members", [[], ["", "", ""]], ids=["none", "all-empty"])
def test_nothing_to_chain_terminates(mode: str, members: list[str]) -> None:
    assert list(ChainMux([Streamer(m) for m in members], mode=mode)) == []  # type: ignore[arg-type]


async def nothing() -> AsyncIterator[str]:
    return
    yield


@pytest.mark.anyio
@pytest.mark.parametrize("n", [0, 3], ids=["none", "all-empty"])
async def test_nothing_to_chain_terminates_async(n: int) -> None:
    async with ChainMux([Streamer(nothing) for _ in range(n)], mode="cycle").open() as stream:
        assert [x async for x in stream] == []


def test_validation() -> None:
    assert validate_chain().mode == "exhaustive"
    with pytest.raises(
        ConfigError, match=r"^mode='permuted_cycle' is not valid; use one of 'exhaustive', 'cycle'$"
    ):
        validate_chain("permuted_cycle")

"""Forecasting a policy's next activations: right when budgets hold, harmless when not."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest

from aiostream_mux import ShuffledMux, StochasticMux, Streamer
from aiostream_mux._mux._driver import AsyncMuxIterator
from aiostream_mux._mux._forecast import Forecast, same_activation
from aiostream_mux._mux._policy import Activation, ChildSeed
from aiostream_mux._mux._stochastic import StochasticPolicy, validate_stochastic


def _policy(seed: int, mode: str = "with_replacement") -> StochasticPolicy:
    config = validate_stochastic(12, 4, 5, mode=mode, dist="poisson")
    return StochasticPolicy(config, np.random.RandomState(seed), np.random.SeedSequence(seed))


@pytest.mark.parametrize("mode", ["with_replacement", "single_active"])
@pytest.mark.parametrize("seed", range(5))
def test_forecast_predicts_activations_when_budgets_hold(seed: int, mode: str) -> None:
    real = _policy(seed, mode)
    remaining: list[int | None] = [None] * real.n_slots
    for activation in real.start():
        remaining[activation.slot] = activation.max_iter
    forecast = Forecast(real, remaining, depth=6)
    predicted = list(forecast.extend())
    assert len(predicted) == 6
    # Drive the real policy with endless members: every budget is spent exactly.
    actual: list[Activation] = []
    while len(actual) < len(predicted):
        slot = real.next_slot()
        assert slot is not None
        left = remaining[slot]
        assert left is not None
        if left:
            remaining[slot] = left - 1
            real.on_item(slot)
        else:
            for activation in real.on_exhausted(slot):
                remaining[activation.slot] = activation.max_iter
                actual.append(activation)
    assert all(same_activation(p, a) for p, a in zip(predicted, actual, strict=False))


def test_same_activation_compares_member_budget_and_seed() -> None:
    seed = ChildSeed(7, (0,), 4)
    a = Activation(0, 3, 5, seed)
    assert same_activation(a, Activation(0, 3, 5, ChildSeed(7, (0,), 4)))
    assert not same_activation(a, Activation(0, 3, 6, seed))
    assert not same_activation(a, Activation(1, 3, 5, seed))
    assert not same_activation(a, Activation(0, 3, 5, ChildSeed(7, (1,), 4)))
    assert not same_activation(a, Activation(0, 3, 5, None))


async def _slow(label: int, n: int | None) -> AsyncIterator[tuple[int, int]]:
    i = 0
    while n is None or i < n:
        await asyncio.sleep(0.0005)
        yield (label, i)
        i += 1


def _run(mux: Any, n: int) -> tuple[list[Any], AsyncMuxIterator[Any]]:
    async def main() -> tuple[list[Any], AsyncMuxIterator[Any]]:
        run = mux._start(None, None, True)
        assert isinstance(run, AsyncMuxIterator)
        out = []
        try:
            for _ in range(n):
                out.append(await run.__anext__())
        finally:
            await run.aclose()
        return out, run

    return asyncio.run(main())


def test_driver_forecasts_slow_endless_members_without_misses() -> None:
    mux = StochasticMux([Streamer(_slow, k, None) for k in range(16)], 8, 6, random_state=3)
    got, run = _run(mux, 400)
    assert got == list(
        StochasticMux([Streamer(_slow, k, None) for k in range(16)], 8, 6, random_state=3).iterate(
            max_iter=400
        )
    )
    assert run._hits > 0
    assert run._misses == 0


def test_driver_survives_wrong_forecasts() -> None:
    """Members shorter than their budgets make forecasts wrong: same output regardless."""
    members = [Streamer(_slow, k, 1 + k % 3) for k in range(10)]
    mux = StochasticMux(members, 4, 8, mode="exhaustive", random_state=1)
    expected = list(mux.iterate())
    got, run = _run(StochasticMux(members, 4, 8, mode="exhaustive", random_state=1), len(expected))
    assert run._misses > 0  # the forecasts were wrong, and it did not matter
    assert got == expected
    shuffled = ShuffledMux([Streamer(_slow, k, 3) for k in range(4)], random_state=2)
    got, _ = _run(shuffled, 60)
    assert got == list(
        ShuffledMux([Streamer(_slow, k, 3) for k in range(4)], random_state=2)(max_iter=60)
    )


def test_a_deep_copied_policy_draws_from_its_own_generator() -> None:
    """The forecast runs a deep copy ahead: the real policy's sequence must not move."""
    untouched = _policy(11)
    untouched.start()
    expected = [untouched.next_slot() for _ in range(50)]
    real = _policy(11)
    real.start()
    ahead = copy.deepcopy(real)
    for _ in range(200):
        ahead.next_slot()
    assert [real.next_slot() for _ in range(50)] == expected

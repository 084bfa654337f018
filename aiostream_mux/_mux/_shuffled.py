"""``ShuffledMux`` policy: every streamer active, samples drawn by weight.

Reproduces pescador 3.0's ``ShuffledMux`` exactly for a ``RandomState``: the
per-sample ``rng.choice(n_streams, p=...)`` is one ``random_sample()`` plus a bisection
of the same cumulative distribution.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import numpy.typing as npt

from .._streamer import Streamer
from ._base import DEFAULT_PREFETCH, BaseMux
from ._policy import (
    Activation,
    FloatArray,
    MuxPolicy,
    PolicyBase,
    Rng,
    check_n_streams,
    check_weights,
    choice_cdf,
)

T = TypeVar("T")

__all__ = ["ShuffledMux", "ShuffledConfig", "ShuffledPolicy", "validate_shuffled"]


@dataclass(frozen=True, eq=False)
class ShuffledConfig:
    """Validated, immutable ``ShuffledMux`` parameters (see :func:`validate_shuffled`).

    Attributes
    ----------
    n_streams : int
        Number of streamers, >= 1.
    weights : numpy.ndarray
        Read-only float64 weights normalised to sum 1.
    """

    n_streams: int
    weights: FloatArray


def validate_shuffled(n_streams: int, weights: object = None) -> ShuffledConfig:
    """Check ``ShuffledMux`` arguments eagerly and normalise them.

    Parameters
    ----------
    n_streams : int
        Number of streamers (``len(streamers)``).
    weights : array-like or None
        Non-negative sampling weights, one per streamer, not all zero; ``None`` is
        uniform. The caller's array is never modified.

    Returns
    -------
    ShuffledConfig

    Raises
    ------
    ConfigError
        Naming the offending parameter and value.
    """
    check_n_streams(n_streams)
    return ShuffledConfig(
        n_streams=n_streams,
        weights=check_weights(weights, n_streams, keep_float_dtype=False),
    )


class ShuffledPolicy(PolicyBase[ShuffledConfig]):
    """Sans-I/O policy of ``ShuffledMux`` (pescador 3.0's algorithm).

    Slot ``i`` always holds streamer ``i``. Each sample comes from a slot drawn with
    probability proportional to its weight; a streamer with weight 0 is never
    activated. When a stream ends after giving samples it is restarted; when an
    activation ends without a sample, the streamer's weight drops to 0 for good.
    The policy finishes once every weight is 0 — so a mux whose streams are all
    empty (or one-shot iterators, once consumed) terminates.

    Parameters
    ----------
    config : ShuffledConfig
        From :func:`validate_shuffled`.
    rng : numpy.random.RandomState or numpy.random.Generator
        Consumed by this policy alone; a ``RandomState`` gives pescador's draws.
    seed : numpy.random.SeedSequence or None
        Root of the per-activation child seeds; not mutated.
    """

    __slots__ = ("_counts", "_weights")

    def __init__(
        self,
        config: ShuffledConfig,
        rng: Rng,
        seed: np.random.SeedSequence | None = None,
    ) -> None:
        super().__init__(config, config.n_streams, rng, seed)
        # pescador's stream_weights_ and stream_counts_.
        self._weights: FloatArray = np.array(config.weights, dtype=float)
        self._counts = [0] * config.n_streams

    def start(self) -> list[Activation]:
        """Activate every streamer with a positive weight; call once.

        Returns
        -------
        list of Activation
            Slot ``i`` runs streamer ``i``, in slot order.
        """
        self._begin()
        activations = [
            Activation(slot, slot, None, self._spawn())
            for slot in range(self.n_slots)
            if self._weights[slot]
        ]
        self._refresh()
        return activations

    def on_item(self, slot: int) -> None:
        """Count a sample drawn from ``slot``."""
        self._counts[slot] += 1

    def on_exhausted(self, slot: int) -> list[Activation]:
        """Restart ``slot``'s streamer if it gave samples, else drop it.

        Returns
        -------
        list of Activation
            Zero or one activation, for ``slot``.
        """
        weights = self._weights
        if self._counts[slot] == 0:
            weights[slot] = 0
        activations = []
        if (weights > 0).any():
            if weights[slot]:
                activations.append(Activation(slot, slot, None, self._spawn()))
            self._counts[slot] = 0
        else:
            weights[slot] = 0.0
        self._refresh()
        return activations

    def _refresh(self) -> None:
        """Recompute the sampling CDF and the end condition after a change."""
        norm = np.sum(self._weights)
        self._done = not norm > 0.0
        if not self._done:
            self._cdf = choice_cdf(self._weights / norm)


class ShuffledMux(BaseMux[T]):
    """Interleave samples from all streamers at once, at random, restarting them as they end.

    pescador's ``ShuffledMux``: every streamer is always active; each sample
    comes from a streamer drawn in proportion to its weight; a streamer that
    ends is restarted, and one that gave nothing is dropped. Same sequence as
    pescador for a seed given as an int or a ``RandomState``.

    Parameters
    ----------
    streamers : iterable of Streamer or iterable
        The members; plain iterables are wrapped in :class:`Streamer`.
    weights : array-like or None
        Sampling weight per streamer (non-negative, not all zero); uniform if ``None``.
    random_state : None, int, numpy.random.RandomState or numpy.random.Generator
        ``None`` draws from numpy's global state (as pescador).
    prefetch : int
        Samples each stream may buffer ahead (async members), >= 1.

    Raises
    ------
    ConfigError
        For any invalid parameter, naming it and its value.

    Examples
    --------
    >>> mux = ShuffledMux([Streamer("a"), Streamer("b"), Streamer("c")], random_state=0)
    >>> "".join(mux(max_iter=12))
    'bcbbcbbcaacc'
    """

    def __init__(
        self,
        streamers: Iterable[Streamer[T] | Iterable[T]],
        weights: npt.ArrayLike | None = None,
        random_state: int | np.random.RandomState | np.random.Generator | None = None,
        *,
        prefetch: int = DEFAULT_PREFETCH,
    ) -> None:
        super().__init__(streamers, random_state, prefetch=prefetch)
        self._config = validate_shuffled(len(self.streamers), weights)
        self.weights = self._config.weights

    def _make_policy(self, rng: Rng, seed: np.random.SeedSequence | None) -> MuxPolicy:
        return ShuffledPolicy(self._config, rng, seed)

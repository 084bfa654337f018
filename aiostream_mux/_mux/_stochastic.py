"""``StochasticMux`` policy: a random active set, random draws among it.

The policy reproduces pescador 3.0's ``StochasticMux`` exactly: given the same
``RandomState`` and the same stream contents, the reference driver yields the same
sequence, because the same generator methods are called in the same order with the
same arguments. The per-sample draw — pescador's ``rng.choice(n_active, p=...)`` — is
replaced by one ``random_sample()`` and a bisection of the same cumulative
distribution, which gives the same index bit for bit at a fraction of the cost.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar, cast, get_args

import numpy as np
import numpy.typing as npt

from .._exceptions import ConfigError
from .._streamer import Streamer
from ._base import DEFAULT_PREFETCH, BaseMux
from ._policy import (
    Activation,
    FloatArray,
    MuxPolicy,
    PolicyBase,
    Rng,
    check_bool,
    check_choice,
    check_int,
    check_n_streams,
    check_rate,
    check_weights,
    choice_cdf,
)

__all__ = [
    "StochasticConfig",
    "StochasticMux",
    "StochasticDist",
    "StochasticMode",
    "StochasticPolicy",
    "validate_stochastic",
]

T = TypeVar("T")

StochasticMode = Literal["with_replacement", "single_active", "exhaustive"]
"""How streamers enter and leave the active set."""

StochasticDist = Literal["constant", "binomial", "poisson"]
"""Distribution of an activation's sample budget."""

_MODES: tuple[str, ...] = get_args(StochasticMode)
_DISTS: tuple[str, ...] = get_args(StochasticDist)


@dataclass(frozen=True, eq=False)
class StochasticConfig:
    """Validated, immutable ``StochasticMux`` parameters (see :func:`validate_stochastic`).

    Attributes
    ----------
    n_streams : int
        Number of streamers, >= 1.
    n_active : int
        Size of the active set, >= 1.
    rate : float or None
        Mean sample budget per activation; ``None``: until exhausted.
    weights : numpy.ndarray
        Read-only weights normalised to sum 1, one per streamer.
    mode : {"with_replacement", "single_active", "exhaustive"}
        Activation mode.
    prune_empty_streams : bool
        Drop a streamer for good once an activation of it gives nothing.
    dist : {"constant", "binomial", "poisson"}
        Distribution of the budgets.
    """

    n_streams: int
    n_active: int
    rate: float | None
    weights: FloatArray
    mode: StochasticMode
    prune_empty_streams: bool
    dist: StochasticDist


def validate_stochastic(
    n_streams: int,
    n_active: object,
    rate: object,
    weights: object = None,
    mode: object = "with_replacement",
    prune_empty_streams: object = True,
    dist: object = "binomial",
) -> StochasticConfig:
    """Check ``StochasticMux`` arguments eagerly and normalise them.

    Parameters
    ----------
    n_streams : int
        Number of streamers (``len(streamers)``).
    n_active : int
        Number of simultaneously active streams, >= 1; at most ``n_streams``
        unless ``mode="with_replacement"``.
    rate : float or None
        Mean number of samples per activation, > 0 and finite (>= 1 unless
        ``dist="constant"``), or ``None`` to run each activation to exhaustion.
    weights : array-like or None
        Non-negative sampling weights, one per streamer, not all zero. Integers
        are accepted (converted to float); the caller's array is never modified.
    mode : {"with_replacement", "single_active", "exhaustive"}
        Activation mode.
    prune_empty_streams : bool
        Stop activating a streamer once one of its activations was empty.
    dist : {"constant", "binomial", "poisson"}
        Budget distribution; ``"constant"`` gives ``ceil(rate)`` samples.

    Returns
    -------
    StochasticConfig

    Raises
    ------
    ConfigError
        Naming the offending parameter and value.
    """
    check_n_streams(n_streams)
    checked_mode = cast(StochasticMode, check_choice("mode", mode, _MODES))
    checked_dist = cast(StochasticDist, check_choice("dist", dist, _DISTS))
    active = check_int("n_active", n_active, 1)
    if checked_mode != "with_replacement" and active > n_streams:
        raise ConfigError(
            f"mode={checked_mode!r} requires that n_active={active} be at most "
            f"the number of streamers={n_streams}"
        )
    return StochasticConfig(
        n_streams=n_streams,
        n_active=active,
        rate=check_rate(rate, checked_dist),
        weights=check_weights(weights, n_streams, keep_float_dtype=True),
        mode=checked_mode,
        prune_empty_streams=check_bool("prune_empty_streams", prune_empty_streams),
        dist=checked_dist,
    )


class StochasticPolicy(PolicyBase[StochasticConfig]):
    """Sans-I/O policy of ``StochasticMux`` (pescador 3.0's algorithm).

    ``start`` chooses ``n_active`` streamers uniformly (without repeats unless
    ``mode="with_replacement"``), each with a sample budget drawn from ``dist``.
    Every sample comes from an active slot drawn with probability proportional
    to its streamer's weight. When a slot's stream ends, another streamer replaces
    it; in ``"exhaustive"`` mode a streamer is used at most once, in
    ``"single_active"`` mode it becomes eligible again once it has ended.

    Termination: the policy finishes when pescador's does (no slot with positive
    weight left, or, with ``prune_empty_streams``, every streamer pruned), and
    also — where pescador would loop forever without yielding — as soon as every
    streamer with a positive weight has had an activation that ended without a
    sample since the last sample was produced. Streams are assumed to be
    deterministic in the sense that an activation found empty would stay empty
    until some other stream yields; under that assumption no further sample can
    come, so the sequence is the same as pescador's.

    Parameters
    ----------
    config : StochasticConfig
        From :func:`validate_stochastic`.
    rng : numpy.random.RandomState or numpy.random.Generator
        Consumed by this policy alone (give each top-level activation its own copy).
        With a ``RandomState`` the draws are exactly pescador's.
    seed : numpy.random.SeedSequence or None
        Root of the per-activation child seeds; not mutated.
    """

    __slots__ = (
        "_all_empty",
        "_counts",
        "_dist_cdf",
        "_distribution",
        "_empty",
        "_empty_mark",
        "_n_positive",
        "_retired",
        "_stream_idxs",
        "_stream_weights",
        "_valid",
    )

    def __init__(
        self,
        config: StochasticConfig,
        rng: Rng,
        seed: np.random.SeedSequence | None = None,
    ) -> None:
        super().__init__(config, config.n_active, rng, seed)
        n = config.n_streams
        # pescador's distribution_: which streamer the next activation picks.
        self._distribution = 1.0 / n * np.ones(n)
        self._dist_cdf: list[float] | None = None  # its CDF, while it is unchanged
        self._valid = np.ones(n, dtype=bool)
        # pescador's stream_weights_, stream_idxs_, stream_counts_.
        self._stream_weights: FloatArray = np.zeros(config.n_active)
        self._stream_idxs = [0] * config.n_active
        self._counts = [0] * config.n_active
        # Termination when every positive-weight streamer is known to be empty.
        self._n_positive = int(np.count_nonzero(config.weights > 0))
        self._retired = 0
        self._empty_mark = -1
        self._empty: set[int] = set()
        self._all_empty = False

    @property
    def active_indices(self) -> tuple[int, ...]:
        """Streamer index held by each slot (stale for slots that were not refilled)."""
        return tuple(self._stream_idxs)

    def start(self) -> list[Activation]:
        """Choose the initial active set; call once.

        Returns
        -------
        list of Activation
            One per slot, in slot order.
        """
        self._begin()
        cfg = self._config
        w = cfg.weights
        try:
            # Only consumed for its draws and for the binomial budgets of the
            # initial activations: pescador overwrites each entry on activation.
            self._stream_weights = np.asarray(
                self._rng.choice(
                    w,
                    size=cfg.n_active,
                    p=(w / np.sum(w)),
                    replace=(cfg.mode == "with_replacement"),
                )
            )
        except ValueError:
            # Fewer positive weights than n_active without replacement.
            self._stream_weights = np.zeros(cfg.n_active)
        activations = []
        for slot in range(cfg.n_active):
            if not (self._distribution > 0).any():
                break
            activations.append(self._new_stream(slot))
        self._refresh()
        return activations

    def on_item(self, slot: int) -> None:
        """Count a sample drawn from ``slot``."""
        self._counts[slot] += 1

    def on_exhausted(self, slot: int) -> list[Activation]:
        """Retire the stream in ``slot`` and pick its replacement, if any.

        Returns
        -------
        list of Activation
            Zero or one activation, for ``slot``.
        """
        cfg = self._config
        sidx = self._stream_idxs[slot]
        count = self._counts[slot]
        dist = self._distribution
        if cfg.prune_empty_streams and count == 0:
            dist[sidx] = 0.0
            self._valid[sidx] = False
            self._dist_cdf = None
        if cfg.mode == "single_active":
            dist[sidx] = np.max(dist) if dist.any() else 1.0
            self._dist_cdf = None
        if count == 0:
            self._note_empty(sidx)
        self._retired += count
        self._counts[slot] = 0
        activations = []
        if self._all_empty:
            pass
        elif (dist > 0).any():
            total = np.sum(dist)
            if total != 1.0:  # dividing by exactly 1.0 would change nothing
                dist[:] /= total
                self._dist_cdf = None
            activations.append(self._new_stream(slot))
        else:
            self._stream_weights[slot] = 0.0
        self._refresh()
        return activations

    # ------------------------------------------------------------------ internals

    def _new_stream(self, slot: int) -> Activation:
        """Pick a streamer for ``slot`` and its budget (pescador's ``_new_stream``)."""
        # pescador's ``rng.choice(n_streams, p=distribution)``: one uniform draw
        # searched in the same CDF, so the same index, without the 5 us call.
        cdf = self._dist_cdf
        if cdf is None:
            cdf = self._dist_cdf = choice_cdf(self._distribution)
        sidx = bisect_right(cdf, self._draw())
        weight = self._config.weights[sidx]
        budget = self._budget(weight, slot)
        if self._config.mode != "with_replacement":
            dist = self._distribution
            dist[sidx] = 0.0
            self._dist_cdf = None
            if (dist > 0).any():
                dist[:] /= np.sum(dist)
        self._stream_weights[slot] = weight
        self._stream_idxs[slot] = sidx
        self._counts[slot] = 0
        return Activation(slot, sidx, budget, self._spawn())

    def _budget(self, weight: np.floating[Any], old_slot: int) -> int | None:
        """Draw an activation's sample budget (pescador's ``_activate_stream``)."""
        rate = self._config.rate
        if rate is None:
            return None
        if self._config.dist == "constant":
            # pescador's Streamer.iterate(max_iter=rate) yields ceil(rate) samples.
            return math.ceil(rate)
        rng = self._rng
        if self._config.dist == "binomial":
            sw = self._stream_weights
            # p = chance of drawing the new streamer within the active set.
            with np.errstate(invalid="ignore", divide="ignore"):
                p = weight / (np.sum(sw) - sw[old_slot] + weight)
            if not (p > 0.9999 or np.isnan(p)):
                return 1 + int(rng.binomial((rate - 1) / (1 - p), 1 - p))
        # Poisson, and the binomial's single-stream (or all-zero) limit.
        return 1 + int(rng.poisson(lam=rate - 1))

    def _note_empty(self, sidx: int) -> None:
        """Track positive-weight streamers found empty since the last sample."""
        if not self._config.weights[sidx] > 0:
            return
        produced = self._retired + sum(self._counts)
        if produced != self._empty_mark:
            self._empty.clear()
            self._empty_mark = produced
        self._empty.add(sidx)
        if len(self._empty) >= self._n_positive:
            self._all_empty = True

    def _refresh(self) -> None:
        """Recompute the sampling CDF and the end condition after a change."""
        sw = self._stream_weights
        norm = np.sum(sw)
        self._done = self._all_empty or not (norm > 0.0 and self._valid.any())
        if not self._done:
            self._cdf = choice_cdf(sw / norm)


class StochasticMux(BaseMux[T]):
    """Sample from a random active subset of streamers, replacing streams as they end.

    pescador's ``StochasticMux``, with the same parameters, defaults and — for a
    seed given as an int or a ``RandomState`` — the same sequence of samples.
    ``n_active`` streamers are active at once; each activation gets a sample
    budget with mean ``rate``; every sample comes from an active stream drawn in
    proportion to its weight; a stream that ends is replaced.

    When members have async sources, every active stream runs in its own task
    with ``prefetch`` samples of buffer, so slow streams overlap; the sequence is
    the same either way.

    Parameters
    ----------
    streamers : iterable of Streamer or iterable
        The members; plain iterables are wrapped in :class:`Streamer`.
    n_active : int
        Number of streams active at once, >= 1 (at most ``len(streamers)``
        unless ``mode="with_replacement"``).
    rate : float or None
        Mean sample budget per activation; ``None`` runs each to exhaustion.
    weights : array-like or None
        Sampling weight per streamer (non-negative, not all zero); uniform if
        ``None``. Copied and normalised; the caller's array is left alone.
    mode : {"with_replacement", "single_active", "exhaustive"}
        ``"with_replacement"``: streamers are drawn independently, possibly
        several times at once. ``"single_active"``: a streamer is active at most
        once at a time. ``"exhaustive"``: each streamer is used at most once.
    prune_empty_streams : bool
        Never activate again a streamer whose activation was empty.
    dist : {"binomial", "constant", "poisson"}
        Distribution of the sample budgets.
    random_state : None, int, numpy.random.RandomState or numpy.random.Generator
        ``None`` draws from numpy's global state (as pescador). A seeded mux
        replays the same sequence each time it is iterated from the top; a mux
        activated by another mux gets a fresh child seed per activation.
    prefetch : int
        Samples each active stream may buffer ahead (async members), >= 1.

    Raises
    ------
    ConfigError
        For any invalid parameter, naming it and its value.

    Examples
    --------
    >>> a, b, c = Streamer("a" * 5), Streamer("b" * 5), Streamer("c" * 5)
    >>> mux = StochasticMux([a, b, c], n_active=2, rate=2, random_state=0)
    >>> "".join(mux(max_iter=12))
    'bbbbbbcaccbb'
    >>> "".join(mux(max_iter=12))  # a seeded mux replays its sequence
    'bbbbbbcaccbb'
    """

    def __init__(
        self,
        streamers: Iterable[Streamer[T] | Iterable[T]],
        n_active: int,
        rate: float | None,
        weights: npt.ArrayLike | None = None,
        mode: StochasticMode = "with_replacement",
        prune_empty_streams: bool = True,
        dist: StochasticDist = "binomial",
        random_state: int | np.random.RandomState | np.random.Generator | None = None,
        *,
        prefetch: int = DEFAULT_PREFETCH,
    ) -> None:
        super().__init__(streamers, random_state, prefetch=prefetch)
        self._config = validate_stochastic(
            len(self.streamers), n_active, rate, weights, mode, prune_empty_streams, dist
        )
        self.n_active = self._config.n_active
        self.rate = self._config.rate
        self.weights = self._config.weights
        self.mode: StochasticMode = self._config.mode
        self.prune_empty_streams = self._config.prune_empty_streams
        self.dist: StochasticDist = self._config.dist

    def _make_policy(self, rng: Rng, seed: np.random.SeedSequence | None) -> MuxPolicy:
        return StochasticPolicy(self._config, rng, seed)

"""The sans-I/O mux policy protocol, and helpers shared by the four policies.

A *policy* decides everything that makes a mux's output order: which streamers are
activated (and with what sample budget), which active stream gives the next sample,
and what happens when a stream ends. It holds no stream and does no I/O, so one
policy object drives the sync driver and the async driver alike, and both yield the
same sequence. The driver loop, in its sync form::

    streams = {a.slot: open_(a) for a in policy.start()}
    while (slot := policy.next_slot()) is not None:
        try:
            item = next(streams[slot])
        except StopIteration:
            for a in policy.on_exhausted(slot):
                streams[a.slot] = open_(a)  # open_ honours a.max_iter
            continue
        policy.on_item(slot)
        yield item

Randomness
----------
A policy receives a ready ``rng`` (a :class:`numpy.random.RandomState` or
:class:`numpy.random.Generator`) that it alone consumes; the mux hands each top-level
activation its own copy (:func:`fork_rng`), so re-iterating a seeded mux replays the
same sequence, as pescador does. With a ``RandomState`` the calls are exactly
pescador 3.0's, so the sequence matches pescador's for the same seed. Child seeds for
activations are spawned from an optional :class:`numpy.random.SeedSequence`
(:func:`seed_sequence_from`), never drawn from ``rng``.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import math
import numbers
from bisect import bisect_right
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeAlias, TypeVar

import numpy as np
import numpy.typing as npt

from .._exceptions import ConfigError

__all__ = [
    "Activation",
    "ChildSeed",
    "PolicyBase",
    "FloatArray",
    "MuxPolicy",
    "Rng",
    "SeedSpawner",
    "check_bool",
    "check_choice",
    "check_int",
    "check_n_streams",
    "check_rate",
    "check_weights",
    "choice_cdf",
    "fork_rng",
    "global_random_state",
    "normalize_random_state",
    "seed_sequence_from",
    "uniform_draw",
]

Rng: TypeAlias = "np.random.RandomState | np.random.Generator"
"""A random number generator a policy can consume."""

FloatArray: TypeAlias = "npt.NDArray[np.floating[Any]]"

RngT = TypeVar("RngT", bound="np.random.RandomState | np.random.Generator")


@dataclass(frozen=True, slots=True)
class Activation:
    """An order from a policy to its driver: start one stream in one slot.

    Attributes
    ----------
    slot : int
        Position in the active set, ``0 <= slot < policy.n_slots``. Any stream
        already in that slot is dropped (it has ended).
    index : int
        Which member of the mux's streamers to activate (for ``ChainMux``, the
        position of the member within the current pass over its members).
    max_iter : int or None
        Sample budget of this activation (>= 1); ``None`` means until exhausted.
    seed : ChildSeed or None
        Child seed for this activation (``seed.sequence()`` is the
        ``SeedSequence``), or ``None`` when the mux is unseeded.
    """

    slot: int
    index: int
    max_iter: int | None
    seed: ChildSeed | None


class MuxPolicy(Protocol):
    """What a driver needs from a mux policy.

    Call :meth:`start` once, then loop on :meth:`next_slot` until it returns
    ``None``; after each draw report either :meth:`on_item` or
    :meth:`on_exhausted` for that slot.
    """

    n_slots: int
    """Size of the active set: slots are ``0 .. n_slots - 1``."""

    def start(self) -> list[Activation]:
        """Return the initial activations (pescador's ``_activate``)."""
        ...

    def next_slot(self) -> int | None:
        """Return the slot to draw the next sample from, or ``None`` when finished."""
        ...

    def on_item(self, slot: int) -> None:
        """Record that a sample was drawn from ``slot``."""
        ...

    def on_exhausted(self, slot: int) -> list[Activation]:
        """Record that the stream in ``slot`` ended; return replacement activations."""
        ...


# --------------------------------------------------------------------------- RNG


def global_random_state() -> np.random.RandomState:
    """Return numpy's global ``RandomState``: the one ``np.random.seed`` seeds."""
    return np.random.mtrand._rand


def normalize_random_state(random_state: object, name: str = "random_state") -> Rng:
    """Turn a user's ``random_state`` into a generator object, once.

    Parameters
    ----------
    random_state : None, int, numpy.random.RandomState or numpy.random.Generator
        ``None`` is numpy's global ``RandomState`` (as pescador: its draws come from
        and advance ``np.random``'s state); an int in ``[0, 2**32)`` seeds a new
        ``RandomState``; a ``RandomState`` or ``Generator`` is used as given (the
        mux copies it per activation, see :func:`fork_rng`).
    name : str
        Parameter name used in error messages.

    Returns
    -------
    numpy.random.RandomState or numpy.random.Generator

    Raises
    ------
    ConfigError
        For a bool, a negative or too large int, or any other type.
    """
    if random_state is None:
        return global_random_state()
    if isinstance(random_state, np.random.RandomState | np.random.Generator):
        return random_state
    seed = _seed_int(random_state, name)
    return np.random.RandomState(seed)


def _seed_int(value: object, name: str) -> int:
    if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Integral):
        raise ConfigError(
            f"{name}={value!r} must be None, an int, a numpy.random.RandomState "
            "or a numpy.random.Generator"
        )
    seed = int(value)
    if not 0 <= seed < 2**32:
        raise ConfigError(f"{name}={seed} must be between 0 and 2**32 - 1")
    return seed


def fork_rng(rng: RngT) -> RngT:
    """Return an independent copy of ``rng`` for one top-level activation.

    numpy's global ``RandomState`` is returned as is (pescador cannot copy the
    ``np.random`` module either), so unseeded muxes keep advancing the global state.
    """
    if rng is global_random_state():
        return rng
    return copy.deepcopy(rng)


def seed_sequence_from(
    random_state: object, name: str = "random_state"
) -> np.random.SeedSequence | None:
    """Derive a root :class:`~numpy.random.SeedSequence` without consuming any draw.

    Pass the user's original ``random_state`` (not the normalised one: an int gives
    ``SeedSequence(int)``, whereas the ``RandomState`` it seeds gives a hash).

    Parameters
    ----------
    random_state : None, int, RandomState, Generator or SeedSequence
        ``None`` (or numpy's global ``RandomState``) gives ``None``: unseeded.
        A ``RandomState`` hashes its MT19937 key and position; a ``Generator`` hashes
        its bit generator's state; a ``SeedSequence`` is returned unchanged.
    name : str
        Parameter name used in error messages.

    Returns
    -------
    numpy.random.SeedSequence or None

    Raises
    ------
    ConfigError
        For the values :func:`normalize_random_state` rejects.
    """
    if random_state is None or random_state is global_random_state():
        return None
    if isinstance(random_state, np.random.SeedSequence):
        return random_state
    if isinstance(random_state, np.random.RandomState):
        state = random_state.get_state(legacy=False)
        return np.random.SeedSequence(_digest("RandomState", state))
    if isinstance(random_state, np.random.Generator):
        return np.random.SeedSequence(_digest("Generator", random_state.bit_generator.state))
    return np.random.SeedSequence(_seed_int(random_state, name))


def _digest(tag: str, state: object) -> int:
    """Hash a (nested) generator state into a 256-bit int, deterministically."""
    h = hashlib.sha256(b"aiostream_mux.seed:" + tag.encode())

    def feed(obj: object) -> None:
        if isinstance(obj, dict):
            h.update(b"{")
            for key in sorted(obj, key=str):
                feed(str(key))
                feed(obj[key])
            h.update(b"}")
        elif isinstance(obj, np.ndarray):
            h.update(f"a{obj.dtype.str}{obj.shape}".encode())
            h.update(np.ascontiguousarray(obj).tobytes())
        elif isinstance(obj, list | tuple):
            h.update(b"[")
            for item in obj:
                feed(item)
            h.update(b"]")
        else:
            h.update(f"{type(obj).__name__}:{obj!r};".encode())

    feed(state)
    return int.from_bytes(h.digest(), "little")


class ChildSeed:
    """A child of a :class:`~numpy.random.SeedSequence`, built only when needed.

    Building a ``SeedSequence`` costs a few microseconds, and most members
    (plain Streamers) never use their seed; nested muxes call :meth:`sequence`.

    Attributes
    ----------
    entropy, spawn_key, pool_size
        Those of the ``SeedSequence`` it stands for.
    """

    __slots__ = ("entropy", "pool_size", "spawn_key")

    def __init__(self, entropy: Any, spawn_key: tuple[int, ...], pool_size: int) -> None:
        self.entropy = entropy
        self.spawn_key = spawn_key
        self.pool_size = pool_size

    def sequence(self) -> np.random.SeedSequence:
        """Return the ``SeedSequence`` itself."""
        return np.random.SeedSequence(
            self.entropy, spawn_key=self.spawn_key, pool_size=self.pool_size
        )

    def _key(self) -> tuple[Any, ...]:
        return (self.entropy, self.spawn_key, self.pool_size)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ChildSeed) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash((str(self.entropy), self.spawn_key, self.pool_size))

    def __repr__(self) -> str:
        return f"ChildSeed(entropy={self.entropy}, spawn_key={self.spawn_key})"


class SeedSpawner:
    """Hand out one child seed per activation.

    Children are those ``root.spawn`` would give, in order, but ``root`` itself is
    never mutated, so a policy built twice from the same root replays the same seeds.

    Parameters
    ----------
    root : numpy.random.SeedSequence or None
        ``None`` makes every child ``None``.
    """

    __slots__ = ("_count", "_root")

    def __init__(self, root: np.random.SeedSequence | None) -> None:
        self._root = root
        self._count = 0 if root is None else root.n_children_spawned

    def __call__(self) -> ChildSeed | None:
        """Return the next child seed (``None`` if unseeded)."""
        root = self._root
        if root is None:
            return None
        child = ChildSeed(root.entropy, (*root.spawn_key, self._count), root.pool_size)
        self._count += 1
        return child


ConfigT = TypeVar("ConfigT")


class PolicyBase(Generic[ConfigT]):
    """What every mux policy shares: its config, its slots, its child seeds, one start.

    Parameters
    ----------
    config
        The validated parameters.
    n_slots : int
        Size of the active set.
    rng : RandomState or Generator
        Consumed by this policy alone.
    seed : numpy.random.SeedSequence or None
        Root of the per-activation child seeds; not mutated.
    """

    __slots__ = ("_cdf", "_config", "_done", "_draw", "_rng", "_spawn", "_started", "n_slots")

    def __init__(
        self, config: ConfigT, n_slots: int, rng: Rng, seed: np.random.SeedSequence | None
    ) -> None:
        self.n_slots = n_slots
        self._config = config
        self._rng = rng
        self._draw = uniform_draw(rng)
        self._spawn = SeedSpawner(seed)
        # The CDF of the per-sample draw over slots (weighted policies).
        self._cdf: list[float] = []
        self._done = True
        self._started = False

    @property
    def config(self) -> ConfigT:
        """The validated parameters."""
        return self._config

    @property
    def finished(self) -> bool:
        """Whether :meth:`next_slot` now returns ``None`` (after :meth:`start`)."""
        return self._started and self._done

    def _begin(self) -> None:
        """Mark the policy started; :meth:`start` may be called once."""
        if self._started:
            raise RuntimeError(f"{type(self).__name__}.start() was already called")
        self._started = True

    def next_slot(self) -> int | None:
        """Draw the slot of the next sample by weight; ``None`` once the mux is finished.

        pescador's ``rng.choice(n, p=weights)``: one uniform draw searched in the
        same CDF gives the same index.
        """
        if self._done:
            return None
        return bisect_right(self._cdf, self._draw())


def uniform_draw(rng: Rng) -> Callable[[], float]:
    """Return the bound method drawing one float in ``[0, 1)`` from ``rng``.

    It is the draw ``rng.choice(n, p=...)`` makes: ``random_sample`` for a
    ``RandomState``, ``random`` for a ``Generator``.
    """
    # functools.partial over the unbound method, not the bound method: with
    # numpy < 2 the methods of RandomState are builtin methods, which
    # copy.deepcopy treats as atomic, so a deep copy of a policy (the forecast
    # runs one ahead) would keep drawing from the real policy's generator.
    if isinstance(rng, np.random.RandomState):
        return functools.partial(np.random.RandomState.random_sample, rng)
    return functools.partial(np.random.Generator.random, rng)


def choice_cdf(p: npt.NDArray[Any]) -> list[float]:
    """Return the cumulative distribution ``rng.choice(n, p=p)`` searches.

    numpy computes ``cdf = p.cumsum(); cdf /= cdf[-1]`` (in float64) and picks
    ``cdf.searchsorted(u, side="right")`` for one uniform ``u``;
    ``bisect.bisect_right(choice_cdf(p), u)`` is the same index, bit for bit, and
    several times faster for a single draw.
    """
    cdf = np.asarray(p, dtype=np.float64).cumsum()
    cdf /= cdf[-1]
    result: list[float] = cdf.tolist()
    return result


# -------------------------------------------------------------------- validation


def _fmt(value: object) -> str:
    """Short repr of a value for error messages."""
    if isinstance(value, np.ndarray):
        return np.array2string(value, separator=", ", threshold=10, edgeitems=3)
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def check_n_streams(n_streams: int) -> int:
    """Check that a mux has at least one streamer.

    Raises
    ------
    ConfigError
        If ``n_streams`` is 0.
    """
    if n_streams < 1:
        raise ConfigError(f"streamers has {n_streams} members: cannot mux an empty collection")
    return n_streams


def check_int(name: str, value: object, minimum: int) -> int:
    """Check that ``value`` is an int (not a bool) ``>= minimum``.

    Raises
    ------
    ConfigError
        If it is not an integer or is too small.
    """
    if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Integral):
        raise ConfigError(f"{name}={_fmt(value)} must be an int")
    number = int(value)
    if number < minimum:
        raise ConfigError(f"{name}={number} must be >= {minimum}")
    return number


def check_bool(name: str, value: object) -> bool:
    """Check that ``value`` is a bool (``numpy.bool_`` included).

    Raises
    ------
    ConfigError
        Otherwise.
    """
    if not isinstance(value, bool | np.bool_):
        raise ConfigError(f"{name}={_fmt(value)} must be True or False")
    return bool(value)


def check_choice(name: str, value: object, allowed: tuple[str, ...]) -> str:
    """Check that ``value`` is one of the ``allowed`` strings.

    Raises
    ------
    ConfigError
        Naming the allowed values.
    """
    if not isinstance(value, str) or value not in allowed:
        options = ", ".join(repr(a) for a in allowed)
        raise ConfigError(f"{name}={_fmt(value)} is not valid; use one of {options}")
    return value


def check_rate(rate: object, dist: str) -> float | None:
    """Check a ``StochasticMux`` rate: ``None``, or a finite number > 0.

    With ``dist="poisson"`` or ``"binomial"`` the budget is ``1 + X`` with
    ``E[X] = rate - 1``, so ``rate`` must also be >= 1 (pescador fails at the first
    activation otherwise).

    Returns
    -------
    float or None

    Raises
    ------
    ConfigError
        For a non-number, NaN, ``rate <= 0``, infinity, or ``rate < 1`` with a
        random ``dist``.
    """
    if rate is None:
        return None
    if isinstance(rate, bool | np.bool_) or not isinstance(rate, numbers.Real):
        raise ConfigError(f"rate={_fmt(rate)} must be a number > 0, or None")
    value = float(rate)
    if math.isnan(value) or value <= 0:
        raise ConfigError(f"rate={rate!r} must be > 0 (or None: until exhausted)")
    if math.isinf(value):
        raise ConfigError(f"rate={rate!r} must be finite; use rate=None for no limit")
    if dist != "constant" and value < 1:
        raise ConfigError(f"rate={rate!r} must be >= 1 with dist={dist!r}")
    return value


def check_weights(weights: object, n_streams: int, *, keep_float_dtype: bool) -> FloatArray:
    """Validate ``weights`` and return them normalised to sum 1, as pescador does.

    The caller's array is never modified. ``None`` means uniform weights, built as
    pescador builds them (``1.0 / n * ones(n)``, then normalised again).

    Parameters
    ----------
    weights : array-like or None
        One non-negative finite weight per streamer, at least one positive. A scalar
        is taken as a 1-element array (pescador applies ``np.atleast_1d``).
    n_streams : int
        Number of streamers.
    keep_float_dtype : bool
        Keep a floating input's dtype (``StochasticMux``); otherwise convert to
        float64 (``ShuffledMux``). Integers always become float64.

    Returns
    -------
    numpy.ndarray
        A new read-only 1-D array.

    Raises
    ------
    ConfigError
        If the weights are not real numbers, not 1-D, of the wrong length, negative,
        NaN or infinite, all zero, or sum to infinity.
    """
    if weights is None:
        arr: FloatArray = 1.0 / n_streams * np.ones(n_streams)
    else:
        try:
            raw = np.atleast_1d(np.asarray(weights))
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"weights={_fmt(weights)} must be an array of numbers") from exc
        if raw.dtype.kind not in "iuf":
            raise ConfigError(f"weights={_fmt(weights)} must be real numbers, not {raw.dtype}")
        if raw.ndim != 1:
            raise ConfigError(f"weights={_fmt(weights)} must be 1-D, not of shape {raw.shape}")
        if len(raw) != n_streams:
            raise ConfigError(
                f"weights={_fmt(weights)} has {len(raw)} entries; "
                f"it must have one per streamer ({n_streams})"
            )
        arr = raw.copy() if raw.dtype.kind == "f" and keep_float_dtype else raw.astype(np.float64)
        if not np.isfinite(arr).all():
            raise ConfigError(f"weights={_fmt(weights)} must all be finite (no NaN or inf)")
        if (arr < 0).any():
            raise ConfigError(f"weights={_fmt(weights)} must all be >= 0")
        if not (arr > 0).any():
            raise ConfigError(f"weights={_fmt(weights)} must contain at least one value > 0")
    with np.errstate(over="ignore"):
        total = np.sum(arr)
    if not np.isfinite(total):
        raise ConfigError(f"weights={_fmt(weights)} sum to {total}, which is not finite")
    arr /= total
    arr.setflags(write=False)
    return arr

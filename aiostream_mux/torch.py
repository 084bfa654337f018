"""PyTorch: feed a :class:`torch.utils.data.DataLoader` from a Streamer, split across workers.

Opt in with ``import aiostream_mux.torch``; it needs PyTorch
(``pip install "aiostream-mux[torch]"``).

A DataLoader copies an :class:`~torch.utils.data.IterableDataset` into each of
its worker processes, and every copy iterates from the start: a Streamer wrapped
naively makes every worker yield the same samples (pescador #133).
:class:`StreamerDataset` gives each worker its own share instead, by one of
three rules, its ``split``:

``"streamers"``
    Worker ``k`` of ``W`` runs the mux on its members ``k, k+W, k+2W, ...``,
    with the mux's other parameters. The shares are disjoint, and an
    exhaustive mux (``RoundRobinMux``, ``ChainMux``, ``StochasticMux`` with
    ``mode="exhaustive"``) gives every member's data exactly once across the
    workers. A pipeline recipe over a mux — ``mux.map(f).buffer(64).tuples("X",
    "y")``, ``Streamer(buffer_stream, mux, 64)``: any Streamer whose source
    takes a Streamer as its first argument — is split at that mux, and each
    worker runs the whole recipe over its share, so maps and batching run in
    the workers too. Each worker mixes its own members: the realized mixture
    over all workers is the target one when the workers' shares of the weight
    are equal (equal weights and a number of members divisible by ``W``).
    ``n_active`` applies per worker (capped at the worker's members where the
    mode requires it).
``"items"``
    Every worker runs the whole stream with the same seed and keeps the items
    ``k, k+W, k+2W, ...``: exactly the items of one process, divided, for any
    Streamer; each worker reads everything, though, so it costs ``W`` times
    the reading.
``"seeds"``
    Every worker runs the whole stream with a seed of its own: for streams of
    random samples (no fixed data to divide), where another seed is all it
    takes to get other samples.
``"auto"`` (the default)
    ``"streamers"`` when the stream is (a recipe over) a ``StochasticMux``,
    ``ShuffledMux``, ``RoundRobinMux`` or ``ChainMux`` with a list of at least
    ``W`` members; ``"items"`` otherwise.

Seeds
-----
The muxes of the stream — the first mux a recipe reads, which passes child
seeds on to nested muxes — are re-seeded in every worker: with a child seed of
its own for ``"streamers"`` and ``"seeds"``, with one shared seed for
``"items"``. By default (``random_state=None``) the seed comes from PyTorch,
like the DataLoader's own shuffling: from the loader's base seed in a worker,
from torch's default generator without workers. So ``torch.manual_seed`` (or
the loader's ``generator=``) makes a run reproducible, and each epoch — each
``iter(loader)`` — gets other samples, persistent workers included. An int
``random_state`` fixes the seed instead, and each epoch replays the same
sequence, as a seeded mux does.

Sources with async generators work too: each worker runs them on a private
event loop in a background thread, as any sync consumer of them does. With the
``"spawn"`` or ``"forkserver"`` start method, the Streamer is pickled into the
workers, so its sources must be module-level functions.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable, Iterator
from typing import Any, Literal, TypeAlias, TypeVar, cast

import numpy as np

try:
    import torch
    from torch.utils.data import IterableDataset, get_worker_info
except ModuleNotFoundError as _exc:  # pragma: no cover - depends on the environment
    if _exc.name != "torch":
        raise
    raise ModuleNotFoundError(
        "aiostream_mux.torch needs PyTorch, which is not installed: "
        "pip install 'aiostream-mux[torch]' (or pip install torch)",
        name="torch",
    ) from _exc

from ._exceptions import ConfigError
from ._mux._base import BaseMux
from ._mux._chain import ChainMux
from ._mux._policy import normalize_random_state, seed_sequence_from
from ._mux._roundrobin import RoundRobinMux
from ._mux._shuffled import ShuffledMux
from ._mux._stochastic import StochasticMux
from ._streamer import Stream, Streamer, _check_max_iter

__all__ = ["Split", "StreamerDataset", "partition"]

T = TypeVar("T")

Split: TypeAlias = Literal["auto", "streamers", "items", "seeds"]
"""How :class:`StreamerDataset` and :func:`partition` divide a stream."""

_SPLITS = ("auto", "streamers", "items", "seeds")


class StreamerDataset(IterableDataset[T]):
    """A :class:`torch.utils.data.IterableDataset` that runs a Streamer, split across workers.

    Each DataLoader worker iterates its own share of ``streamer`` (see
    :mod:`aiostream_mux.torch` for the rules); without workers, the dataset
    iterates the whole of it. Items are passed on as the Streamer yields them:
    let the DataLoader batch samples (``batch_size=n``), or batch them in the
    Streamer (``mux.buffer(n)``) and give the loader ``batch_size=None``.

    Parameters
    ----------
    streamer : Streamer
        The recipe: a mux, a pipeline over one, or any Streamer. It is pickled
        into the workers under the ``"spawn"`` start method.
    max_iter : int or None
        At most this many items in all, over all workers (worker ``k`` of
        ``W`` yields at most ``len(range(k, max_iter, W))``); ``None`` for no
        limit.
    cycle : bool
        Restart each worker's share whenever it ends (then set ``max_iter``,
        or stop the loop yourself).
    split : {"auto", "streamers", "items", "seeds"}
        How the workers divide the stream.
    random_state : int, numpy.random.SeedSequence or None
        Base seed of the muxes. ``None`` takes it from PyTorch at each
        iteration, so epochs differ; an int replays one sequence every epoch.

    Raises
    ------
    ConfigError
        At construction, for an argument of the wrong kind or value; in the
        worker, if ``split="streamers"`` finds no mux to split, or fewer
        members than workers.

    See Also
    --------
    partition : the share one worker (or process) of several runs.

    Examples
    --------
    >>> import torch
    >>> import aiostream_mux as am
    >>> from aiostream_mux.torch import StreamerDataset
    >>> shards = [am.Streamer(range(10 * k, 10 * k + 3)) for k in range(4)]
    >>> dataset = StreamerDataset(am.RoundRobinMux(shards))
    >>> loader = torch.utils.data.DataLoader(dataset, batch_size=4)
    >>> [batch.tolist() for batch in loader]
    [[0, 10, 20, 30], [1, 11, 21, 31], [2, 12, 22, 32]]

    With two workers, worker 0 runs shards 0 and 2, and worker 1 shards 1 and
    3; the loader takes a batch from each in turn:

    >>> loader = torch.utils.data.DataLoader(dataset, batch_size=4, num_workers=2)
    >>> [batch.tolist() for batch in loader]
    [[0, 20, 1, 21], [10, 30, 11, 31], [2, 22], [12, 32]]
    """

    def __init__(
        self,
        streamer: Streamer[T],
        *,
        max_iter: int | None = None,
        cycle: bool = False,
        split: Split = "auto",
        random_state: int | np.random.SeedSequence | None = None,
    ) -> None:
        given: object = streamer
        if not isinstance(given, Streamer):
            hint = (
                "pass the Streamer it was activated from"
                if isinstance(given, Stream)
                else "wrap it: Streamer(source)"
            )
            raise ConfigError(f"streamer={given!r} must be a Streamer (a recipe); {hint}")
        self.streamer = streamer
        self.max_iter = _check_max_iter(max_iter)
        self.cycle = bool(cycle)
        self.split: Split = _check_split(split)
        self.random_state = random_state
        self._seed = _check_seed(random_state)
        # Iterations started in this worker: varies the seeds of persistent workers.
        self._iterations = 0

    def __repr__(self) -> str:
        return (
            f"<StreamerDataset of {self.streamer!r}, split={self.split!r}, "
            f"max_iter={self.max_iter}>"
        )

    def _seed_for(self, worker_seed: int | None, worker_id: int) -> np.random.SeedSequence:
        """Return the base seed of one iteration: fixed, or drawn from torch (module doc)."""
        if self._seed is not None:
            return self._seed
        if worker_seed is None:  # no workers: a new draw from torch's default generator
            return np.random.SeedSequence(int(torch.empty((), dtype=torch.int64).random_().item()))
        # In a worker: the loader's base seed, which its workers share. A persistent
        # worker keeps it from epoch to epoch, so count the epochs too.
        iteration = self._iterations
        self._iterations += 1
        return np.random.SeedSequence([worker_seed - worker_id, iteration])

    def __iter__(self) -> Iterator[T]:
        """Iterate this process's share: the whole stream, or one DataLoader worker's."""
        info = get_worker_info()
        if info is None:
            index, count, seed = 0, 1, self._seed_for(None, 0)
        else:
            index, count, seed = info.id, info.num_workers, self._seed_for(info.seed, info.id)
        share = partition(self.streamer, index, count, split=self.split, random_state=seed)
        max_iter = None if self.max_iter is None else len(range(index, self.max_iter, count))
        return iter(share(max_iter=max_iter, cycle=self.cycle))


def partition(
    streamer: Streamer[T],
    index: int,
    count: int,
    *,
    split: Split = "auto",
    random_state: int | np.random.SeedSequence | None = None,
) -> Streamer[T]:
    """Return the share of ``streamer`` that part ``index`` of ``count`` runs.

    What :class:`StreamerDataset` runs in DataLoader worker ``index`` of
    ``count``; use it to divide a stream between other processes too (ranks of
    a distributed job: ``partition(streamer, rank, world_size)``). The
    ``count`` shares of one ``split`` and ``random_state`` divide the stream
    without overlap (see :mod:`aiostream_mux.torch` for the rules).

    Parameters
    ----------
    streamer : Streamer
        A mux, a pipeline recipe over one, or any Streamer.
    index : int
        Which share, ``0 <= index < count``.
    count : int
        Number of shares, >= 1.
    split : {"auto", "streamers", "items", "seeds"}
        How the shares divide the stream.
    random_state : int, numpy.random.SeedSequence or None
        Base seed: the mux of each share gets a child seed of it
        (``"streamers"``, ``"seeds"``) or the seed itself (``"items"``).
        ``None`` keeps the muxes' own ``random_state``; then ``"items"`` needs
        a stream that is the same in every share, and ``"seeds"`` is refused.

    Returns
    -------
    Streamer
        A new recipe; ``streamer`` itself is left as it is.

    Raises
    ------
    ConfigError
        For a bad argument; if ``split="streamers"`` finds no mux to split, or
        fewer members than shares; if ``split="seeds"`` has no
        ``random_state``.

    Examples
    --------
    >>> import aiostream_mux as am
    >>> from aiostream_mux.torch import partition
    >>> mux = am.ChainMux([am.Streamer("ab"), am.Streamer("cd"), am.Streamer("ef")])
    >>> ["".join(partition(mux, k, 2)) for k in range(2)]
    ['abef', 'cd']
    >>> ["".join(partition(am.Streamer("abcde"), k, 2)) for k in range(2)]
    ['ace', 'bd']
    """
    count = _check_int("count", count, 1)
    index = _check_int("index", index, 0)
    if index >= count:
        raise ConfigError(f"index={index} must be less than count={count}")
    split = _check_split(split)
    root = _check_seed(random_state)
    if split == "auto":
        split = "streamers" if _splittable(streamer, count) else "items"

    if split == "streamers":
        seed = _seed_int(root, index)

        def take_share(mux: BaseMux[Any]) -> BaseMux[Any]:
            return _share(mux, index, count, seed)

        share = _rewrite(streamer, take_share)
        if share is None:
            raise ConfigError(
                f"split='streamers' needs a mux (or a recipe over one) with a list of members; "
                f"{streamer!r} has none: use split='items'"
            )
        return share
    if split == "seeds":
        if root is None:
            raise ConfigError("split='seeds' needs a random_state to derive each share's seed")
        return _reseeded(streamer, _seed_int(root, index))
    whole = _reseeded(streamer, _seed_int(root, None))
    if count == 1:
        return whole
    return Streamer(_every, whole, index, count)


# -- checks


def _check_int(name: str, value: object, low: int) -> int:
    index = getattr(value, "__index__", None)
    if isinstance(value, bool) or index is None or int(index()) < low:
        raise ConfigError(f"{name}={value!r} must be an int >= {low}")
    return int(index())


def _check_split(split: object) -> Split:
    if split not in _SPLITS:
        raise ConfigError(f"split={split!r} must be one of {', '.join(map(repr, _SPLITS))}")
    return cast(Split, split)


def _check_seed(random_state: object) -> np.random.SeedSequence | None:
    if random_state is None or isinstance(random_state, np.random.SeedSequence):
        return random_state
    index = getattr(random_state, "__index__", None)
    if not isinstance(random_state, bool) and index is not None and int(index()) >= 0:
        return np.random.SeedSequence(int(index()))
    raise ConfigError(
        f"random_state={random_state!r} must be None, an int >= 0 or a numpy.random.SeedSequence"
    )


def _seed_int(root: np.random.SeedSequence | None, child: int | None) -> int | None:
    """Return a mux's ``random_state``: a 32-bit int from ``root`` (or its child), or None."""
    if root is None:
        return None
    if child is not None:
        root = np.random.SeedSequence(
            root.entropy, spawn_key=(*root.spawn_key, child), pool_size=root.pool_size
        )
    return int(root.generate_state(1, np.uint32)[0])


# -- rewriting a recipe at its mux


def _rewrite(
    streamer: Streamer[T], at_mux: Callable[[BaseMux[Any]], BaseMux[Any]]
) -> Streamer[T] | None:
    """Rebuild ``streamer`` with ``at_mux(mux)`` for the first mux it reads, or ``None``.

    Follows plain Streamers over a Streamer (``Streamer(other)``) and pipeline
    recipes (a source called with a Streamer as its first argument).
    """
    if isinstance(streamer, BaseMux):
        return at_mux(streamer)
    if type(streamer) is not Streamer:  # maps' activations and other internals
        return None
    source, args = streamer.streamer, streamer.args
    if isinstance(source, Streamer):
        inner = _rewrite(source, at_mux)
        return None if inner is None else Streamer(inner)
    if callable(source) and args and isinstance(args[0], Streamer):
        inner = _rewrite(args[0], at_mux)
        if inner is None:
            return None
        rebuilt: Streamer[T] = Streamer(source, inner, *args[1:], **streamer.kwargs)
        return rebuilt
    return None


def _first_mux(streamer: Streamer[Any]) -> BaseMux[Any] | None:
    found: list[BaseMux[Any]] = []

    def keep(mux: BaseMux[Any]) -> BaseMux[Any]:
        found.append(mux)
        return mux

    _rewrite(streamer, keep)
    return found[0] if found else None


_SPLITTABLE = (StochasticMux, ShuffledMux, RoundRobinMux, ChainMux)


def _splittable(streamer: Streamer[Any], count: int) -> bool:
    mux = _first_mux(streamer)
    return (
        mux is not None
        and type(mux) in _SPLITTABLE
        and isinstance(mux.streamers, list)  # a lazy ChainMux has no list
        and len(mux.streamers) >= count
    )


def _reseeded(streamer: Streamer[T], random_state: int | None) -> Streamer[T]:
    """``streamer`` with its first mux seeded by ``random_state`` (unchanged for ``None``)."""
    if random_state is None:
        return streamer

    def reseed(mux: BaseMux[Any]) -> BaseMux[Any]:
        new = copy.copy(mux)
        new.random_state = random_state
        new.rng = normalize_random_state(random_state)
        new._root_seed = seed_sequence_from(random_state)
        return new

    return _rewrite(streamer, reseed) or streamer


def _share(mux: BaseMux[T], index: int, count: int, random_state: int | None) -> BaseMux[T]:
    """Return a mux like ``mux`` over its members ``index, index + count, ...``."""
    members = mux.streamers
    if type(mux) not in _SPLITTABLE or not isinstance(members, list):
        raise ConfigError(
            f"split='streamers' cannot split {mux!r}: it splits StochasticMux, ShuffledMux, "
            "RoundRobinMux and ChainMux over a list of members; use split='items'"
        )
    if len(members) < count:
        raise ConfigError(
            f"split='streamers' needs at least one member per share: the mux has "
            f"{len(members)} streamers for count={count}; use split='items'"
        )
    mine = members[index::count]
    seed = mux.random_state if random_state is None else random_state
    weights = None
    if isinstance(mux, (StochasticMux, ShuffledMux)):
        weights = np.asarray(mux.weights)[index::count]
        if not np.any(weights > 0):
            raise ConfigError(
                f"split='streamers': share {index} of {count} gets only streamers of weight 0 "
                f"(members {index}, {index + count}, ...); reorder the streamers or use "
                "split='items'"
            )
    if isinstance(mux, StochasticMux):
        n_active = mux.n_active
        if mux.mode != "with_replacement":
            n_active = min(n_active, len(mine))
        return StochasticMux(
            mine,
            n_active,
            mux.rate,
            weights=weights,
            mode=mux.mode,
            prune_empty_streams=mux.prune_empty_streams,
            dist=mux.dist,
            random_state=seed,
            prefetch=mux.prefetch,
        )
    if isinstance(mux, ShuffledMux):
        return ShuffledMux(mine, weights=weights, random_state=seed, prefetch=mux.prefetch)
    if isinstance(mux, RoundRobinMux):
        return RoundRobinMux(mine, mode=mux.mode, random_state=seed, prefetch=mux.prefetch)
    chain = cast(ChainMux[T], mux)
    return ChainMux(mine, mode=chain.mode, random_state=seed, prefetch=chain.prefetch)


def _every(streamer: Streamer[T], start: int, step: int) -> Iterator[T]:
    """Items ``start, start + step, ...`` of one activation of ``streamer``."""
    with streamer.iterate() as stream:
        yield from itertools.islice(stream, start, None, step)

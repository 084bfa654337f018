"""Pipeline methods: ``streamer.map(...).buffer(64).tuples("X", "y")``.

The same maps as :mod:`aiostream_mux.maps`, as methods. On a :class:`Streamer`
they return a new Streamer — a recipe, reusable and picklable when its parts
are; on a :class:`Stream` they return a Stream. Arguments are checked at the
call either way.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Generic, TypeVar, overload

if TYPE_CHECKING:
    from numpy.typing import NDArray

    from ._streamer import Stream, Streamer

__all__ = ["StreamerPipeline", "StreamPipeline"]

T = TypeVar("T")
U = TypeVar("U")


def _me(obj: object) -> Any:
    """Return the Streamer or Stream a method is called on, typed as the maps' input."""
    return obj


class StreamerPipeline(Generic[T]):
    """Methods of :class:`Streamer` that build a pipeline recipe."""

    @overload
    def map(
        self, fn: Callable[[T], Awaitable[U]], *, concurrency: int = 8, ordered: bool = True
    ) -> Streamer[U]: ...
    @overload
    def map(
        self, fn: Callable[[T], U], *, concurrency: int = 8, ordered: bool = True
    ) -> Streamer[U]: ...
    def map(self, fn: Any, *, concurrency: int = 8, ordered: bool = True) -> Streamer[Any]:
        """Apply ``fn`` to every item, ``concurrency`` calls at a time (:func:`map_concurrent`).

        Parameters
        ----------
        fn : callable
            An async function, or a sync one (run in a worker thread).
        concurrency : int
            Calls in flight at most, >= 1.
        ordered : bool
            Keep the input order (else completion order).

        Returns
        -------
        Streamer
            A recipe: every activation maps a new activation of this Streamer.

        Examples
        --------
        >>> import anyio
        >>> async def double(x):
        ...     await anyio.sleep(0.001)
        ...     return 2 * x
        >>> list(Streamer(range(5)).map(double, concurrency=3))
        [0, 2, 4, 6, 8]
        """
        from ._concurrent import map_concurrent
        from ._streamer import Streamer

        map_concurrent(_me(self), fn, concurrency=concurrency, ordered=ordered)  # checks arguments
        return Streamer(map_concurrent, _me(self), fn, concurrency=concurrency, ordered=ordered)

    def buffer(
        self, size: int, *, partial: bool = False, axis: int | None = None
    ) -> Streamer[dict[Any, NDArray[Any]]]:
        """Stack ``size`` consecutive items into one batch (:func:`buffer_stream`).

        Parameters
        ----------
        size : int
            Items per batch, >= 1.
        partial : bool
            Also yield a last, smaller batch.
        axis : int or None
            Concatenate along this axis instead of stacking on a new one.

        Returns
        -------
        Streamer

        Examples
        --------
        >>> samples = Streamer([{"x": i} for i in range(6)])
        >>> [batch["x"].tolist() for batch in samples.buffer(4, partial=True)]
        [[0, 1, 2, 3], [4, 5]]
        """
        from ._streamer import Streamer
        from .maps import buffer_stream

        buffer_stream(_me(self), size, partial, axis)  # checks arguments
        return Streamer(buffer_stream, _me(self), size, partial, axis)

    def progress(self, *, total: int | None = None, desc: str | None = None) -> Streamer[T]:
        """Show a progress bar while iterating (:func:`progress`).

        Returns
        -------
        Streamer
        """
        from ._progress import progress
        from ._streamer import Streamer

        return Streamer(progress, _me(self), total=total, desc=desc)

    def tuples(self, *keys: Any) -> Streamer[tuple[Any, ...]]:
        """Turn each mapping into a tuple of its values at ``keys`` (:func:`tuples`).

        Returns
        -------
        Streamer

        Examples
        --------
        >>> list(Streamer([{"x": 1, "y": 2}]).tuples("y", "x"))
        [(2, 1)]
        """
        from ._streamer import Streamer
        from .maps import tuples

        tuples(_me(self), *keys)  # checks arguments
        return Streamer(tuples, _me(self), *keys)


class StreamPipeline(Generic[T]):
    """Methods of :class:`Stream` that chain maps onto one activation."""

    @overload
    def map(
        self, fn: Callable[[T], Awaitable[U]], *, concurrency: int = 8, ordered: bool = True
    ) -> Stream[U]: ...
    @overload
    def map(
        self, fn: Callable[[T], U], *, concurrency: int = 8, ordered: bool = True
    ) -> Stream[U]: ...
    def map(self, fn: Any, *, concurrency: int = 8, ordered: bool = True) -> Stream[Any]:
        """Apply ``fn`` to every item, ``concurrency`` calls at a time (:func:`map_concurrent`).

        Returns
        -------
        Stream
        """
        from ._concurrent import map_concurrent

        return map_concurrent(_me(self), fn, concurrency=concurrency, ordered=ordered)

    def buffer(
        self, size: int, *, partial: bool = False, axis: int | None = None
    ) -> Stream[dict[Any, NDArray[Any]]]:
        """Stack ``size`` consecutive items into one batch (:func:`buffer_stream`).

        Returns
        -------
        Stream
        """
        from .maps import buffer_stream

        return buffer_stream(_me(self), size, partial, axis)

    def progress(self, *, total: int | None = None, desc: str | None = None) -> Stream[T]:
        """Show a progress bar while iterating (:func:`progress`).

        Returns
        -------
        Stream
        """
        from ._progress import progress

        return progress(_me(self), total=total, desc=desc)

    def tuples(self, *keys: Any) -> Stream[tuple[Any, ...]]:
        """Turn each mapping into a tuple of its values at ``keys`` (:func:`tuples`).

        Returns
        -------
        Stream
        """
        from .maps import tuples

        return tuples(_me(self), *keys)

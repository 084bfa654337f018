"""A progress bar over any stream, sync or async (tqdm)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any, TypeVar

from tqdm import tqdm

from ._engine import _close_run
from ._source import Source, _close_sync, _derive, _name
from ._streamer import Stream

__all__ = ["progress"]

T = TypeVar("T")


def progress(
    stream: Source[T],
    *,
    total: int | None = None,
    desc: str | None = None,
    bar: type[tqdm[Any]] = tqdm,
    **options: Any,
) -> Stream[T]:
    """Show a progress bar while ``stream`` is iterated, with ``for`` or ``async for``.

    The bar opens with the first item asked for and closes when the stream ends
    or is closed. Its cost is a counter per item: tqdm redraws a few times a
    second at most.

    Parameters
    ----------
    stream : iterable or async iterable
        A Streamer, a Stream, a list, a generator or an async generator.
    total : int or None
        Expected number of items, for a percentage and a time estimate.
    desc : str or None
        Label in front of the bar.
    bar : type
        The tqdm class: ``tqdm.tqdm`` (a terminal), ``tqdm.auto.tqdm`` (a
        widget in notebooks), or a subclass.
    **options
        More arguments for the bar (``unit="batch"``, ``file=...``, ...).

    Returns
    -------
    Stream

    Examples
    --------
    >>> import io
    >>> out = io.StringIO()
    >>> sum(progress(Streamer(range(1000)), total=1000, desc="samples", file=out))
    499500
    >>> "samples: 100%" in out.getvalue()
    True
    """

    def sync_body(run: Iterator[T]) -> Iterator[T]:
        meter = bar(total=total, desc=desc, **options)
        try:
            for item in run:
                meter.update()
                yield item
        finally:
            meter.close()
            _close_sync(run)

    async def async_body(run: AsyncIterator[T]) -> AsyncIterator[T]:
        meter = bar(total=total, desc=desc, **options)
        try:
            async for item in run:
                meter.update()
                yield item
        finally:
            meter.close()
            await _close_run(run)

    return _derive(_name("progress", stream, total), stream, sync_body, async_body)

"""progress(): a tqdm bar over any stream, in both protocols."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator

import anyio
import anyio.lowlevel
import pytest

import aiostream_mux as am

from .conftest import Lifecycle


def test_progress_counts_sync_items_and_closes() -> None:
    out = io.StringIO()
    stream = am.progress(am.Streamer(range(50)), total=50, desc="items", file=out)
    assert list(stream) == list(range(50))
    text = out.getvalue()
    assert "items: 100%" in text
    assert "50/50" in text


@pytest.mark.anyio
async def test_progress_async_and_break_closes_source(lifecycle: Lifecycle) -> None:
    out = io.StringIO()
    async with am.progress(
        am.Streamer(lifecycle.async_source, 100), desc="async", file=out
    ) as stream:
        seen = 0
        async for _ in stream:
            seen += 1
            if seen == 10:
                break
    assert lifecycle.open == 0
    assert "async: 10it" in out.getvalue()


def test_progress_method_on_streamer_is_a_recipe() -> None:
    async def letters() -> AsyncIterator[str]:
        for letter in "abc":
            await anyio.lowlevel.checkpoint()
            yield letter

    recipe = am.Streamer(letters).progress(total=3, desc="letters")
    assert isinstance(recipe, am.Streamer)
    assert "".join(recipe) == "abc"
    assert "".join(recipe) == "abc"

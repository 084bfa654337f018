"""Shared fixtures: anyio backends, and sources that record their own life cycle."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import anyio
import pytest

BACKENDS = [
    pytest.param("asyncio", id="asyncio"),
    pytest.param(("asyncio", {"use_uvloop": True}), id="uvloop"),
    pytest.param("trio", id="trio"),
]


@pytest.fixture(params=BACKENDS)
def anyio_backend(request: pytest.FixtureRequest) -> Any:
    """Run each ``@pytest.mark.anyio`` test on asyncio, uvloop and trio."""
    return request.param


@dataclass
class Lifecycle:
    """Counts how often a recorded source started, yielded and reached ``finally:``."""

    started: int = 0
    finished: int = 0
    yielded: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def open(self) -> int:
        return self.started - self.finished

    def sync_source(self, n: int, fail_at: int | None = None) -> Iterator[int]:
        """A sync generator of ``range(n)`` that may raise ``ValueError`` at item ``fail_at``."""
        with self.lock:
            self.started += 1
        try:
            for i in range(n):
                if i == fail_at:
                    raise ValueError(f"source failed at {i}")
                with self.lock:
                    self.yielded += 1
                yield i
        finally:
            with self.lock:
                self.finished += 1

    async def async_source(
        self, n: int, fail_at: int | None = None, delay: float = 0.0
    ) -> AsyncIterator[int]:
        """The async twin of :meth:`sync_source`; ``delay`` seconds before each item."""
        with self.lock:
            self.started += 1
        try:
            for i in range(n):
                await anyio.sleep(delay)
                if i == fail_at:
                    raise ValueError(f"source failed at {i}")
                with self.lock:
                    self.yielded += 1
                yield i
        finally:
            with self.lock:
                self.finished += 1


@pytest.fixture
def lifecycle() -> Iterator[Lifecycle]:
    """A :class:`Lifecycle`; after the test, every source it started has finished."""
    record = Lifecycle()
    yield record
    assert record.open == 0, f"{record.open} source(s) never reached finally:"

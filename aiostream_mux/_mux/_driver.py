"""The async mux driver: one producer task per active stream, bounded prefetch.

The consumer asks the policy which slot gives the next sample and takes it from
that slot's buffer, waiting only if the buffer is empty. Meanwhile every active
stream's producer task fills its own buffer, up to ``prefetch`` samples, so slow
streams overlap and fast ones are throttled. The policy alone decides the order,
so latency changes *when* samples are produced, never *which* come out.

Tasks: inside ``Streamer.open()`` the producers run in the block's task group (any
anyio backend). For a plain ``async for`` on asyncio they are plain asyncio tasks
owned by this iterator: ``aclose()`` cancels them and waits for their cleanup, and
the finaliser cancels them if the iterator is dropped. The iterator is a class,
not an async generator, so no cancel scope stays open between ``__anext__`` calls.
Each producer iterates and closes its own stream, in its own task.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import weakref
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Any, Generic, TypeVar

import anyio
import anyio.abc
import anyio.lowlevel

from .._engine import CHECKPOINT_EVERY, _close_run, _from_sync
from .._exceptions import UnsupportedBackendError
from .._streamer import Streamer
from ._base import member_seed
from ._forecast import Forecast, same_activation
from ._policy import Activation, MuxPolicy
from ._stats import Counters

__all__ = [
    "AsyncMuxIterator",
    "cancel_slots_now",
    "check_can_spawn",
    "close_slots",
    "failure_of",
    "is_end",
    "spawn_producer",
]

T = TypeVar("T")


class _End:
    """Marks the end of a stream in its slot's buffer."""


_END = _End()


class _Failure:
    """Carries a stream's exception through its slot's buffer, in order."""

    __slots__ = ("exc",)

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


def is_end(item: object) -> bool:
    """Tell whether a buffered item marks the end of its stream."""
    return item is _END


def failure_of(item: object) -> BaseException | None:
    """Return the exception a buffered item carries, if it is a failure."""
    return item.exc if type(item) is _Failure else None


class _Slot:
    """One activation in one slot: its buffer and its producer's state."""

    __slots__ = (
        "buffer",
        "cancelled",
        "done",
        "has_item",
        "has_space",
        "resuming",
        "running",
        "scope",
        "task",
    )

    def __init__(self, event: Callable[[], Any]) -> None:
        self.buffer: deque[Any] = deque()
        self.has_item: Any = None  # an event, set when the consumer waits
        self.has_space: Any = None  # an event, set when the producer waits
        self.scope: anyio.CancelScope | None = None
        self.cancelled = False
        self.running = False  # the producer has started pulling from its stream
        self.resuming = False  # woken from a full buffer, not yet back at work
        self.done = event()
        self.task: asyncio.Task[None] | None = None

    def push(self, item: object) -> None:
        self.buffer.append(item)
        waiter = self.has_item
        if waiter is not None:
            self.has_item = None
            waiter.set()

    def cancel(self) -> None:
        self.cancelled = True
        if self.scope is not None:
            self.scope.cancel()
        elif self.task is not None:
            self.task.cancel()


async def _produce(
    slot: _Slot,
    member: Streamer[Any],
    activation: Activation,
    task_group: anyio.abc.TaskGroup | None,
    prefetch: int,
    event: Callable[[], Any],
) -> None:
    """Fill ``slot.buffer`` from one activation of ``member`` (a producer's whole life).

    The sample budget is counted here rather than by a wrapper, to keep one
    layer per sample.
    """
    run: Any = None
    try:
        if slot.cancelled:
            return
        run = member._start(member_seed(member, activation), task_group, True)
        member._track(run)
        slot.running = True
        buffer = slot.buffer
        budget = activation.max_iter if activation.max_iter is not None else -1
        if not hasattr(run, "__anext__"):
            # A sync member among async ones: read inline, yielding to the loop
            # every few samples.
            run = _from_sync(run, run)
        async for item in run:
            slot.push(item)
            budget -= 1
            if not budget:
                break
            if len(buffer) >= prefetch:
                slot.has_space = waiter = event()
                await waiter.wait()
                slot.resuming = False
        slot.push(_END)
    except Exception as exc:
        slot.push(_Failure(exc))
    finally:
        try:
            if run is not None:
                if slot.scope is None:
                    # A plain asyncio task: cancel() is delivered once, and only
                    # aclose() of the iterator cancels it, so nothing interrupts this.
                    await _close_run(run)
                else:
                    with anyio.CancelScope(shield=True):
                        await _close_run(run)
        except Exception as exc:  # the member failed while closing
            slot.push(_Failure(exc))
        finally:
            slot.done.set()


async def _produce_scoped(
    slot: _Slot,
    member: Streamer[Any],
    activation: Activation,
    task_group: anyio.abc.TaskGroup | None,
    prefetch: int,
    event: Callable[[], Any],
) -> None:
    """Run :func:`_produce` in a cancel scope of its own (task-group mode)."""
    with anyio.CancelScope() as slot.scope:
        await _produce(slot, member, activation, task_group, prefetch, event)


def event_factory(task_group: anyio.abc.TaskGroup | None) -> Callable[[], Any]:
    """Return the event class to use: asyncio's (much cheaper) unless in a task group."""
    return asyncio.Event if task_group is None else anyio.Event


def check_can_spawn(task_group: anyio.abc.TaskGroup | None) -> None:
    """Raise a clear error if producers cannot start: no task group and not on asyncio."""
    if task_group is None:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            raise UnsupportedBackendError(
                "a mux over async streams runs a task per stream, which outside asyncio "
                "(trio) needs a task group: iterate it inside 'async with "
                "recipe.open() as stream:', where recipe is the mux or a Streamer "
                "built on it (mux.map(...).buffer(...), Streamer(buffer_stream, mux, n))"
            ) from None


def spawn_producer(
    member: Streamer[Any],
    activation: Activation,
    task_group: anyio.abc.TaskGroup | None,
    prefetch: int,
) -> _Slot:
    """Start a producer task for one activation of ``member``; return its slot state."""
    event = event_factory(task_group)
    slot = _Slot(event)
    args = (slot, member, activation, task_group, prefetch, event)
    if task_group is not None:
        task_group.start_soon(_produce_scoped, *args)
    else:
        slot.task = asyncio.get_running_loop().create_task(_produce(*args))
    return slot


async def close_slots(slots: list[_Slot]) -> None:
    """Cancel the producers of ``slots`` and wait until each has closed its stream."""
    for slot in slots:
        slot.cancel()
    tasks = [slot.task for slot in slots if slot.task is not None]
    with anyio.CancelScope(shield=True):
        if tasks:
            # A task cancelled before it started never runs its body: wait for
            # the tasks themselves, not for their ``done`` events.
            await asyncio.wait(tasks)
        else:
            for slot in slots:
                await slot.done.wait()


def cancel_slots_now(slots: list[_Slot | None]) -> None:
    """Cancel asyncio producers from a finaliser, where nothing can be awaited."""
    for slot in slots:
        if slot is not None and slot.task is not None:
            slot.cancelled = True
            with contextlib.suppress(RuntimeError):  # the loop is already closed
                slot.task.cancel()


def _buffered_probe(ref: weakref.ref[AsyncMuxIterator[Any]]) -> Callable[[], list[tuple[int, int]]]:
    """Count the samples each member's producers hold (weakly: no reference cycle)."""

    def probe() -> list[tuple[int, int]]:
        it = ref()
        if it is None:
            return []
        member = it._counters.slot_member
        return [(member[i], len(slot.buffer)) for i, slot in enumerate(it._slots) if slot]

    return probe


class AsyncMuxIterator(Generic[T]):
    """Run a mux policy over members with async sources.

    Parameters
    ----------
    policy : MuxPolicy
        Decides the order; used by this iterator only.
    member_of : callable
        Returns the member Streamer an :class:`Activation` names.
    task_group : anyio.abc.TaskGroup or None
        Where producers run (``Streamer.open()``); ``None``: asyncio tasks.
    prefetch : int
        Samples each producer may run ahead.
    lookahead : int or None
        Activations to start early (see ``_forecast.py``). ``None``: as many as
        there are slots, once the consumer has had to wait for a stream; 0: never.
    """

    def __init__(
        self,
        policy: MuxPolicy,
        member_of: Callable[[Activation], Streamer[T]],
        task_group: anyio.abc.TaskGroup | None,
        prefetch: int,
        counters: Counters | None = None,
        lookahead: int | None = None,
    ) -> None:
        self._policy = policy
        self._member_of = member_of
        self._task_group = task_group
        self._prefetch = prefetch
        self._low_water = prefetch // 2
        self._slots: list[_Slot | None] = [None] * policy.n_slots
        self._retired: list[_Slot] = []  # ended slots whose tasks may still unwind
        # asyncio's own events are much cheaper; anyio's serve any backend.
        self._event = event_factory(task_group)
        self._started = False
        self._finished = False
        self._countdown = CHECKPOINT_EVERY
        # Forecasting (see _forecast.py): off until the consumer waits for real.
        self._remaining: list[int | None] = [None] * policy.n_slots
        self._lookahead = policy.n_slots if lookahead is None else lookahead
        self._want_forecast = lookahead is not None and lookahead > 0
        self._forecast: Forecast | None = None
        self._early: deque[tuple[Activation, _Slot]] = deque()
        self._hits = self._misses = 0
        self._counters = counters if counters is not None else Counters(0, policy.n_slots, None)
        self._samples = self._counters.samples
        self._counters.buffered = _buffered_probe(weakref.ref(self))

    def __aiter__(self) -> AsyncIterator[T]:
        return self

    # -- producers
    def _spawn(self, activation: Activation) -> _Slot:
        """Start a producer for ``activation`` and return its slot state."""
        return spawn_producer(
            self._member_of(activation), activation, self._task_group, self._prefetch
        )

    def _place(self, index: int, slot: _Slot) -> None:
        old = self._slots[index]
        if old is not None:
            old.cancel()  # it has ended; make sure its task is gone
            self._retired.append(old)
        self._slots[index] = slot

    def _activate(self, activation: Activation) -> None:
        """Put ``activation`` in its slot: the early start if forecast right, else a new one."""
        early = self._early
        if early and same_activation(early[0][0], activation):
            _, slot = early.popleft()
            self._hits += 1
        else:
            if early:
                self._drop_forecast()
                self._misses += 1
            slot = self._spawn(activation)
        self._place(activation.slot, slot)
        self._remaining[activation.slot] = activation.max_iter
        if self._samples:
            self._counters.activated(activation)

    def _drop_forecast(self) -> None:
        for _, slot in self._early:
            slot.cancel()
            self._retired.append(slot)
        self._early.clear()
        self._forecast = None

    def _update_forecast(self) -> None:
        """Keep the next activations started early (between two policy steps only)."""
        if self._forecast is None:
            if self._misses > self._hits + 4:
                self._lookahead = 0  # members end before their budgets: stop guessing
                return
            self._forecast = Forecast(self._policy, self._remaining, self._lookahead)
        for activation in self._forecast.extend():
            self._early.append((activation, self._spawn(activation)))
        if self._forecast.pending and len(self._forecast.pending) > len(self._early):
            for _ in range(len(self._forecast.pending) - len(self._early)):
                self._forecast.pending.popleft()

    def _start(self) -> None:
        self._started = True
        check_can_spawn(self._task_group)
        for activation in self._policy.start():
            self._activate(activation)

    # -- consumer
    async def __anext__(self) -> T:
        if not self._started:
            self._start()
        if self._finished:
            raise StopAsyncIteration
        self._countdown -= 1
        if not self._countdown:
            self._countdown = CHECKPOINT_EVERY
            await anyio.lowlevel.checkpoint()
        policy = self._policy
        slots = self._slots
        while True:
            index = policy.next_slot()
            if index is None:
                await self.aclose()
                raise StopAsyncIteration
            slot = slots[index]
            assert slot is not None, f"the policy drew slot {index}, which was never activated"
            buffer = slot.buffer
            if not buffer:
                await self._wait(slot)
            item = buffer.popleft()
            space = slot.has_space
            if space is not None and len(buffer) <= self._low_water:
                slot.has_space = None
                slot.resuming = True
                space.set()
            if item is _END:
                if self._samples:
                    self._counters.exhausted(index)
                for activation in policy.on_exhausted(index):
                    self._activate(activation)
                if self._want_forecast and self._lookahead:
                    self._update_forecast()
                if len(self._retired) > 2 * len(slots):
                    self._retired = [s for s in self._retired if not s.done.is_set()]
                continue
            if type(item) is _Failure:
                await self.aclose()
                raise item.exc
            policy.on_item(index)
            if self._samples:
                self._samples[self._counters.slot_member[index]] += 1
            left = self._remaining[index]
            if left is not None:
                self._remaining[index] = left - 1
            return item  # type: ignore[no-any-return]

    async def _wait(self, slot: _Slot) -> None:
        """Wait until ``slot`` has an item.

        A producer that already runs, is not just being woken from a full
        buffer, and has nothing to give is awaiting its source: that is
        latency, so forecasting is switched on. (A CPU-bound producer, once
        running, fills its buffer before it yields.)
        """
        if slot.running and not slot.resuming and not self._want_forecast:
            self._want_forecast = True
        started = time.perf_counter()
        while not slot.buffer:
            slot.has_item = event = self._event()
            await event.wait()
        self._counters.waited += time.perf_counter() - started

    async def aclose(self) -> None:
        """Cancel every producer and wait until each has closed its stream."""
        self._finished = True
        slots = [slot for slot in self._slots if slot is not None] + self._retired
        slots += [slot for _, slot in self._early]
        self._slots = [None] * len(self._slots)
        self._retired = []
        self._early.clear()
        await close_slots(slots)

    def __del__(self) -> None:
        # Dropped without aclose() (a break out of a plain async for): cancel the
        # asyncio tasks; each closes its own stream as it unwinds.
        early = [slot for _, slot in getattr(self, "_early", ())]
        cancel_slots_now([*getattr(self, "_slots", ()), *getattr(self, "_retired", ()), *early])

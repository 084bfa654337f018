"""A ZMQStreamer activation: start the worker, receive its samples, close it.

Each activation (each ``iterate()``, each run of ``cycle()``) is a :class:`_ZMQRun`:
on its first ``__anext__`` it binds a PAIR socket (``ipc://`` in a private
directory, on ``/dev/shm`` where it exists, or ``tcp://127.0.0.1``), starts a
worker process (``_zmq_worker.worker_main``) that connects to it, and then
receives messages in the wire format of ``_zmq_wire``: several small samples per
message, large arrays mapped from shared-memory slots (``_zmq_shm``) or built
over their own frames, without copies. It acknowledges the messages it takes in,
which is the worker's credit to send more (flow control bounded in bytes), and
gives back the slots whose arrays are gone.

Liveness: the run watches the worker's exit (a pidfd, or the process sentinel)
on the event loop, so a worker that dies without an end message surfaces as a
:class:`WorkerError` instead of a hang. Closing sends STOP (which a finished
worker waits for), then SIGTERM after ``timeout`` seconds, then SIGKILL after
``timeout`` more; the socket, the context and the private directory go with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import multiprocessing
import os
import shutil
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast

import anyio
import zmq
import zmq.asyncio

from ._exceptions import UnsupportedBackendError, WorkerError
from ._zmq_shm import SHM_ROOT, SlotReader
from ._zmq_wire import DATA, END, SOCKET_NAME, STOP, Decoder, Malformed, bind, encode_ack
from ._zmq_worker import (
    MAX_IN_FLIGHT,
    MIN_IN_FLIGHT,
    Child,
    describe_exit,
    make_process,
    reap_later,
    set_options,
    yield_cpu,
)

if TYPE_CHECKING:
    import numpy as np

    from ._zmq import ZMQStreamer

__all__ = ["_ZMQRun", "_ZMQSyncRun"]

T = TypeVar("T")

#: The consumer acknowledges at least every this many data messages.
ACK_EVERY = MAX_IN_FLIGHT // 4
#: Seconds, at most, to wait for messages still in flight after the worker exited.
EXIT_GRACE = 0.5
#: Milliseconds a closed socket keeps trying to deliver STOP.
STOP_LINGER_MS = 1000
#: Milliseconds a blocking receive waits before it looks at the worker process.
WATCH_MS = 50

_NEW, _RUNNING, _DONE = "new", "running", "done"
_NOBLOCK, _POLLIN, _EVENTS = int(zmq.NOBLOCK), int(zmq.POLLIN), int(zmq.EVENTS)
_RCVTIMEO = int(zmq.RCVTIMEO)


class _RunBase(Generic[T]):
    """What the async and the sync run share: start, decode, release.

    An async run does nothing until its first item is asked for, so it may be
    iterated on another thread's event loop than the one that created it; a sync
    run starts its worker as soon as it is made (see :meth:`_ZMQSyncRun.launch`).
    """

    _socket: zmq.Socket[Any] | None

    def __init__(self, owner: ZMQStreamer[T], seed: np.random.SeedSequence | None) -> None:
        self._owner = owner
        self._pid = os.getpid()  # a forked child's copy of the run is not its own
        self._seed = seed
        self._items: deque[Any] = deque()
        self._state = _NEW
        self._loop: asyncio.AbstractEventLoop | None = None
        self._context: zmq.Context[Any] | None = None
        self._socket = None
        self._shadow: zmq.backend.Socket | None = None
        self._dir: str | None = None
        self._decoder: Decoder | None = None
        self._lock = threading.Lock()
        self._abandoned = False
        self._child: Child | None = None
        self._stop_pipe: tuple[int, int] | None = None  # (read, write), for a forked worker
        self._watching = False  # the worker's exit, on the loop (async runs)
        self._exited: asyncio.Future[None] | None = None
        self._wait = _Wait()
        self._received = 0
        self._taken = 0  # data messages taken in
        self._acknowledged = 0  # ... and acknowledged to the worker
        self._unacknowledged_bytes = 0
        self._slots: SlotReader | None = None
        timeout = owner.timeout
        self._grace = EXIT_GRACE if timeout is None else min(EXIT_GRACE, timeout)

    def __repr__(self) -> str:
        return f"<ZMQStreamer run, {self._state}, worker pid {self.pid}>"

    @property
    def pid(self) -> int | None:
        """The worker's process id, once started."""
        return self._child.pid if self._child is not None else None

    # -- start
    def _open(self, context: zmq.Context[Any]) -> str:
        """Bind a PAIR socket of ``context``; return the address for the worker."""
        self._state = _RUNNING
        self._context = context
        socket = self._socket = context.socket(zmq.PAIR)
        set_options(socket)
        owner = self._owner
        address, self._dir = bind(
            socket, owner.transport, owner.host, owner.min_port, owner.max_port, owner.max_tries
        )
        # Blocking calls on the socket: itself when it is one, else a plain twin
        # (pyzmq's backend class: none of the Python layers of zmq.Socket).
        sync = type(socket) is zmq.Socket
        self._shadow = socket if sync else zmq.backend.Socket(shadow=socket.underlying)
        token = os.urandom(16)
        slots = None
        if owner.shm_threshold is not None and _in_shm(self._dir):
            assert self._dir is not None
            slots = self._slots = SlotReader(self._dir)
        self._decoder = Decoder(token, copy=owner.copy, slots=slots)
        return address

    def _start_method(self) -> str:
        return multiprocessing.get_context(self._owner.start_method).get_start_method()

    def _start_process(self, address: str) -> None:
        """Pickle the streamer if needed and start the worker (blocking).

        A forked worker also gets the read end of a stop pipe (see ``_send_stop``).
        """
        owner = self._owner
        assert self._decoder is not None
        stop_fd = None
        if self._start_method() == "fork":
            # Both ends stay open here until the run is released: with its read end
            # open, a write can never raise EPIPE (nor SIGPIPE) when the worker is gone.
            self._stop_pipe = os.pipe()
            stop_fd = self._stop_pipe[0]
        try:
            process = make_process(
                owner.streamer,
                owner.start_method,
                address,
                self._decoder.token,
                self._seed,
                copy=owner.copy,
                batch_bytes=owner.batch_bytes,
                batch_latency=owner.batch_latency,
                prefetch_bytes=owner.prefetch_bytes,
                shm_threshold=owner.shm_threshold,
                shared_dir=self._dir if self._slots is not None else None,
                stop_fd=stop_fd,
            )
            with self._lock:
                if self._abandoned:
                    return
                process.start()
                # Let the worker run first: a new process is queued on its parent's
                # CPU and would wait there while this one goes on (an async consumer
                # runs its event loop for a good 0.3 ms before it waits), however
                # idle the other CPUs are.
                yield_cpu()
                self._child = Child(process)
        except BaseException:
            self._close_stop_pipe()
            raise

    # -- receive
    def _handle(self, frames: list[zmq.Frame]) -> bool:
        """Take in one message: True for samples (now in ``_items``), False for the end.

        Raises the worker's exception for an error message, and WorkerError for
        anything malformed.
        """
        decoder = self._decoder
        assert decoder is not None
        try:
            kind, body = decoder.header(frames)
            if kind == DATA:
                samples = decoder.data(body, frames)
                self._received += len(samples)
                self._items.extend(samples)
                self._taken += 1
                self._unacknowledged_bytes += decoder.nbytes
                if (
                    self._taken - self._acknowledged >= ACK_EVERY
                    or self._unacknowledged_bytes * 4 >= self._owner.prefetch_bytes
                ):
                    self._acknowledge()
                return True
            if kind == END:
                count = decoder.end(body)
                if count != self._received:
                    raise Malformed(f"an end after {count} samples, but {self._received} arrived")
                return False
            raise decoder.error(body)
        except Malformed as exc:
            raise WorkerError(
                f"unexpected message on the ZMQStreamer socket (worker pid "
                f"{self.pid}): {exc}; the stream is closed"
            ) from None

    def _died(self) -> WorkerError:
        child = self._child
        code = child.process.exitcode if child is not None else None
        return WorkerError(
            f"the ZMQStreamer worker (pid {self.pid}) {describe_exit(code)} before the "
            f"end of the stream, after {self._received} samples"
        )

    def _owes_acknowledgement(self) -> bool:
        """Whether to acknowledge before waiting for the next message.

        Only when the worker may be waiting for credit, or shared memory is owed
        back. The worker always has :data:`MIN_IN_FLIGHT` messages of credit, so
        with fewer unacknowledged it cannot be waiting: any message on the way
        wakes this consumer, and with none on the way the worker still has
        credit. An acknowledgement per message would wake the worker's I/O thread
        each time, which takes its CPU from a busy worker.
        """
        return self._taken - self._acknowledged >= MIN_IN_FLIGHT or bool(
            self._slots and self._slots.owes()
        )

    def _acknowledge(self) -> None:
        """Tell the worker how many data messages were taken in: credit to send more.

        Done early (every quarter of ``prefetch_bytes``, every :data:`ACK_EVERY`
        messages) so the worker never waits on a busy consumer, and before the
        consumer waits for a message whenever the worker may be waiting for credit
        (:meth:`_owes_acknowledgement`), so neither waits on the other.
        """
        shadow, slots = self._shadow, self._slots
        if shadow is None:
            return
        returned, retired = slots.take() if slots is not None else ([], [])
        try:
            shadow.send(encode_ack(self._taken, returned, retired), _NOBLOCK)
        except zmq.Again:  # the worker is gone, or its queue full: keep it for next time
            if slots is not None:
                slots.put_back(returned, retired)
            return
        self._acknowledged = self._taken
        self._unacknowledged_bytes = 0

    def _ask_to_leave(self, close_socket: bool = True) -> None:
        """Take the first step of closing a running worker: the polite STOP.

        It reaches the worker between two samples, or while it waits after its
        end. A worker that has not connected yet (one still starting) cannot hear
        it: that one gets SIGTERM at once. The socket is closed now
        (it lingers until STOP is out) unless ``close_socket`` is false.
        """
        child = self._child
        assert child is not None
        if not self._send_stop():
            child.signal(signal.SIGTERM)
            return
        if close_socket:
            self._close_sockets(linger=STOP_LINGER_MS)  # no more reading; STOP still goes

    def _send_stop(self) -> bool:
        """Send STOP; False if it cannot go (the worker has not connected yet).

        A forked worker also hears it on the stop pipe, at once when it is
        waiting (for the consumer, or for room to send): STOP itself crosses
        ZeroMQ's I/O threads of both processes before it wakes the worker.
        """
        self._close_stop_pipe(b"!")
        shadow = self._shadow
        if shadow is None:
            return False
        try:
            shadow.send(STOP, _NOBLOCK)
        except zmq.ZMQError:
            return False
        return True

    def _close_stop_pipe(self, message: bytes = b"") -> None:
        """Write ``message`` on the stop pipe, if there is one, and close it."""
        pipe, self._stop_pipe = self._stop_pipe, None
        if pipe is not None:
            read, write = pipe
            if message:
                os.write(write, message)  # never blocks: one byte into an empty pipe
            os.close(write)
            os.close(read)

    # -- close
    def _release(self) -> None:
        """Reap the worker and close the socket, the context and the directory (sync)."""
        with self._lock:
            self._abandoned = True
            child = self._child
        if child is not None:
            if self._watching and self._loop is not None:
                exited = self._exited
                if exited is None or not exited.done():  # else _exit_seen removed it
                    self._loop.remove_reader(child.fd)
                self._watching = False
            child.end_now(self._owner.timeout)
            child.reap()
        self._close_sockets()
        self._close_stop_pipe()
        _remove(self._dir)  # the worker is gone: it writes no more files there
        self._dir = None

    def _close_sockets(self, linger: int = 0) -> None:
        loop = self._loop
        if self._wait.reading and loop is not None and not loop.is_closed():
            self._wait.pause()
        if self._socket is not None:
            self._socket.close(linger=linger)
        self._socket = self._shadow = self._context = None

    def _inherited(self) -> bool:
        """Whether this is a forked child's copy: the worker and the rest are the parent's."""
        if os.getpid() == self._pid:
            return False
        self._state = _DONE
        return True

    def _begin_close(self) -> bool:
        """Mark the run done; True if it had a worker to close (in this process)."""
        if self._inherited():
            return False
        state, self._state = self._state, _DONE
        self._items.clear()
        return state is _RUNNING

    def __del__(self) -> None:
        # Dropped without being closed: end the worker without waiting, best effort.
        if self._state is not _RUNNING or self._inherited():
            return
        self._state = _DONE
        with contextlib.suppress(Exception):
            with self._lock:
                self._abandoned = True
                child = self._child
            loop = self._loop
            wait, self._wait = self._wait, _Wait()  # _close_sockets must not touch the loop
            if wait.reading and loop is not None and not loop.is_closed():
                # The loop must stop watching the socket's descriptor before the socket
                # closes, or a later socket given the same number goes unwatched.
                if _running_loop() is loop:
                    wait.pause()
                else:  # its own thread stops watching, then closes the socket
                    socket, self._socket, self._shadow = self._socket, None, None
                    loop.call_soon_threadsafe(_pause_then_close, wait, socket)
            directory, self._dir = self._dir, None
            self._close_stop_pipe(b"!")  # a worker waiting for us stops at once
            if child is not None:
                child.signal(signal.SIGTERM)  # the worker still closes its source
                if sys.is_finalizing():
                    pass  # no new threads now; the worker sees its consumer go and exits
                elif self._watching and loop is not None and not loop.is_closed():
                    loop.call_soon_threadsafe(_forget, loop, child, self._owner.timeout, directory)
                else:
                    reap_later(child, self._owner.timeout, directory)
            self._close_sockets()
            # Now, for a consumer that looks; the reaper removes it again once the
            # worker is gone, in case the worker was writing a shared array there.
            _remove(directory)


class _ZMQRun(_RunBase[T], AsyncIterator[T]):
    """An activation consumed with ``async for``: receives with zmq.asyncio.

    Its close shields itself from a cancellation already under way when it starts
    (an anyio scope cancels every await in it), so the polite stop still gets its
    ``timeout``; a cancellation that lands while it waits ends the worker at once
    (SIGTERM, a wait of at most a second, SIGKILL). A Stream therefore closes it
    without a cancel scope of its own (``_close_copes_with_cancellation``), which
    costs a short run a measurable part of its time.
    """

    _close_copes_with_cancellation = True

    def __init__(self, owner: ZMQStreamer[T], seed: np.random.SeedSequence | None) -> None:
        super().__init__(owner, seed)
        self._start_future: asyncio.Future[None] | None = None

    def __aiter__(self) -> _ZMQRun[T]:
        return self

    async def __anext__(self) -> T:
        items = self._items
        if items:
            return items.popleft()  # type: ignore[no-any-return]
        return await self._next_message()

    async def _next_message(self) -> T:
        if self._state is _DONE:
            raise StopAsyncIteration
        try:
            if self._state is _NEW:
                await self._launch()
            while True:
                if not self._handle(await self._receive()):
                    break
                if self._items:
                    return self._items.popleft()  # type: ignore[no-any-return]
        except asyncio.CancelledError:
            raise  # the run stays usable; its owner closes it
        except BaseException:
            with contextlib.suppress(Exception):  # the original error matters more
                await self.aclose()
            raise
        await self.aclose()
        raise StopAsyncIteration

    async def _launch(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            raise UnsupportedBackendError(
                "ZMQStreamer receives with zmq.asyncio, so 'async for' needs asyncio "
                "(or uvloop); under trio, iterate it with a plain 'for', which runs it "
                "on a background asyncio loop"
            ) from None
        self._loop = loop
        self._exited = loop.create_future()
        address = self._open(_shared_context(zmq.asyncio.Context))
        assert self._shadow is not None
        self._wait.loop = loop
        self._wait.fd = cast(int, self._shadow.get(zmq.FD))
        if self._start_method() == "fork":
            self._start_process(address)  # a fork is quick, and needs no pickling
        else:  # pickling, and a pipe the child reads once it runs: not on the loop
            self._start_future = loop.run_in_executor(None, self._start_process, address)
            await asyncio.shield(self._start_future)
        self._watch_exit()

    def _watch_exit(self) -> None:
        """Resolve ``_exited`` when the worker process ends (a reader on the loop)."""
        child, loop, exited = self._child, self._loop, self._exited
        if child is None or loop is None or exited is None or self._watching:
            return
        # The callback holds no reference to the run, so a dropped run is collected.
        loop.add_reader(child.fd, _exit_seen, loop, child.fd, exited, self._wait)
        self._watching = True

    async def _receive(self) -> list[zmq.Frame]:
        """Receive a message without blocking, else wait on the loop for the socket or the exit.

        The socket's ZMQ_FD stays registered with the loop for the whole run, so a
        wait costs one future: no zmq.asyncio receive future, no reader added and
        removed per message, no ``asyncio.wait``. ZMQ_FD is edge-triggered, so ZMQ_EVENTS
        is always read last before waiting.
        """
        shadow, loop, exited, wait = self._shadow, self._loop, self._exited, self._wait
        assert shadow is not None
        assert loop is not None
        assert exited is not None
        if not self._watching:  # a launch cancelled while the worker was starting
            start = self._start_future
            if start is not None and not start.done():
                await asyncio.shield(start)
            self._watch_exit()
        deadline: float | None = None
        while True:
            # Asking ZeroMQ first is cheaper than a failed receive (an exception),
            # which is what the first message, and every wait, would cost.
            if cast(int, shadow.get(_EVENTS)) & _POLLIN:
                with contextlib.suppress(zmq.Again):
                    return _receive_message(shadow, _NOBLOCK)
                continue
            if self._owes_acknowledgement():
                self._acknowledge()
                if cast(int, shadow.get(_EVENTS)) & _POLLIN:
                    continue  # ZMQ_FD is edge-triggered: look again after sending
            if exited.done():
                # The worker is gone; what it sent before may still be on the way.
                now = loop.time()
                if deadline is None:
                    deadline = now + self._grace
                elif now >= deadline:
                    raise self._died()
            wait.listen()
            await wait.until_woken(deadline)

    async def aclose(self) -> None:
        """Stop the worker (politely, then SIGTERM, then SIGKILL) and release everything."""
        if not self._begin_close():
            return
        try:
            if _cancel_pending():
                with anyio.CancelScope(shield=True):
                    await self._stop_worker()
            else:
                await self._stop_worker()
        finally:
            self._release()  # a worker still running (a cancelled wait): SIGTERM, SIGKILL

    async def _stop_worker(self) -> None:
        waiter = self._wait.future
        if waiter is not None and not waiter.done():
            waiter.cancel()
        start = self._start_future
        if start is not None:
            if not start.done():
                await asyncio.wait((start,))
            if not start.cancelled():
                start.exception()  # retrieved: a start error was raised by _launch
        child = self._child
        if child is None:
            return
        self._watch_exit()
        if not self._exited_now():
            self._wait.pause()  # no more reading
            # The socket stays open until the worker is gone (see _release):
            # closing it would only delay the worker's wake-up on STOP.
            self._ask_to_leave(close_socket=False)
            timeout = self._owner.timeout
            if not await self._wait_exit(timeout):
                child.signal(signal.SIGTERM)
                if not await self._wait_exit(timeout):
                    child.signal(signal.SIGKILL)
                    await self._wait_exit(None)

    def _exited_now(self) -> bool:
        return self._exited is not None and self._exited.done()

    async def _wait_exit(self, seconds: float | None) -> bool:
        """Wait up to ``seconds`` (``None``: for ever) for the worker's exit; True if it exited.

        The run's one wait future, woken by the exit's reader itself
        (:func:`_exit_seen`): this task runs in the loop step after the one that
        sees the exit, a step sooner than through a done callback of ``_exited``.
        """
        exited, loop, wait = self._exited, self._loop, self._wait
        assert exited is not None
        if exited.done() or seconds == 0 or loop is None:
            return exited.done()
        deadline = None if seconds is None else loop.time() + seconds
        while not exited.done():
            if deadline is not None and loop.time() >= deadline:
                return False
            await wait.until_woken(deadline)
        return True


class _ZMQSyncRun(_RunBase[T], Iterator[T]):
    """An activation consumed with ``for``: blocking receives, no event loop.

    A sync consumer could go through the background-loop bridge, but large
    arrays then cross threads one by one and queue up there; receiving right
    here keeps the worker's bounded lead (``prefetch_bytes``) as the only buffer
    and saves a thread.
    """

    _timed = False
    _asked = False  # STOP sent by stop_nowait()

    def __iter__(self) -> _ZMQSyncRun[T]:
        return self

    def __next__(self) -> T:
        items = self._items
        if items:
            return items.popleft()  # type: ignore[no-any-return]
        return self._next_message()

    def launch(self) -> None:
        """Bind the socket and start the worker.

        Called when the run is made, not at its first item: a mux's sync driver
        opens all its active members before it draws from one, so their workers
        all run from the start (and wait on each other, if their sources do).
        """
        try:
            self._start_process(self._open(_shared_context(zmq.Context)))
        except BaseException:
            with contextlib.suppress(Exception):  # the original error matters more
                self.close()
            raise

    def _next_message(self) -> T:
        if self._state is _DONE or self._asked:
            raise StopIteration
        try:
            while True:
                if not self._handle(self._receive()):
                    break
                if self._items:
                    return self._items.popleft()  # type: ignore[no-any-return]
        except BaseException:
            with contextlib.suppress(Exception):  # the original error matters more
                self.close()
            raise
        self.close()
        raise StopIteration

    def _receive(self) -> list[zmq.Frame]:
        """Block in ZeroMQ itself (as a plain ``recv`` does), looking at the worker between waits.

        The socket's receive timeout (:data:`WATCH_MS`) bounds each wait, so a
        dead worker is seen within that time plus the grace for its last messages.
        """
        socket, child = self._socket, self._child
        assert socket is not None
        if not self._timed:
            socket.set(_RCVTIMEO, WATCH_MS)
            self._timed = True
        deadline: float | None = None
        while True:
            if self._owes_acknowledgement():
                try:
                    return _receive_message(socket, _NOBLOCK)
                except zmq.Again:
                    self._acknowledge()  # before waiting
            try:
                return _receive_message(socket, 0)
            except zmq.Again:
                pass
            if deadline is None:
                if child is None or child.exited():
                    # The worker is gone; what it sent before may still be on the way.
                    deadline = time.monotonic() + self._grace
            elif time.monotonic() >= deadline:
                raise self._died()

    def stop_nowait(self) -> None:
        """Ask the worker to stop, without waiting: :meth:`close` then waits for it.

        So a mux's sync driver stops several workers at once, each one closing its
        source meanwhile, and the next activation need not wait for a slow one.
        """
        if self._state is not _RUNNING or self._asked or self._inherited():
            return
        self._asked = True
        self._items.clear()
        child = self._child
        if child is not None and not child.exited():
            self._ask_to_leave()

    def exited_nowait(self) -> bool:
        """Whether the worker has exited (or never started, or was reaped), without waiting."""
        child = self._child
        return self._state is not _RUNNING or child is None or child.exited()

    def close(self) -> None:
        """Stop the worker (politely, then SIGTERM, then SIGKILL) and release everything."""
        if not self._begin_close():
            return
        try:
            child = self._child
            if child is not None and not child.exited():
                try:
                    if not self._asked:
                        self._ask_to_leave()
                    timeout = self._owner.timeout
                    if not child.exited(timeout):
                        child.signal(signal.SIGTERM)
                        if not child.exited(timeout):
                            child.signal(signal.SIGKILL)
                            child.exited(None)
                except BaseException:  # interrupted while waiting
                    child.end_now(self._owner.timeout)
                    raise
        finally:
            self._release()


_contexts: dict[type[Any], tuple[int, zmq.Context[Any]]] = {}
_contexts_lock = threading.Lock()


def _shared_context(kind: type[zmq.Context[Any]]) -> zmq.Context[Any]:
    """One ZeroMQ context of each kind per process, for every run's socket.

    Sockets are per run and closed with it; sharing the context saves starting
    and joining an I/O thread per activation. A forked child makes its own.
    """
    pid = os.getpid()
    with _contexts_lock:
        found = _contexts.get(kind)
        if found is None or found[0] != pid:
            found = _contexts[kind] = (pid, kind(io_threads=1))
        return found[1]


def _receive_message(socket: zmq.backend.Socket, flags: int) -> list[zmq.Frame]:
    """Receive one message, without copies: ``recv_multipart`` without its Python layers.

    ZeroMQ delivers a message whole, so once its first frame is in, the rest are.
    """
    frame = socket.recv(flags, copy=False)
    frames = [frame]
    while frame.more:
        frame = socket.recv(_NOBLOCK, copy=False)
        frames.append(frame)
    return frames


def _cancel_pending() -> bool:
    """Whether the current task is being cancelled (by an anyio scope or asyncio's cancel()).

    Before Python 3.11, where tasks do not count their cancellations, always True.
    asyncio's count comes first: asking anyio costs a fresh fork's consumer about
    0.1 ms (the pages of its code it writes to), so it is asked only about a task
    that anyio knows, one that is or was inside an anyio cancel scope.
    """
    try:
        task = asyncio.current_task()
    except RuntimeError:  # no event loop runs: driven by hand, nothing to cancel it
        return False
    cancelling = getattr(task, "cancelling", None)
    if cancelling is None or cancelling() > 0:
        return True
    if _anyio_tasks is not None and task not in _anyio_tasks:
        return False
    return anyio.current_effective_deadline() == -math.inf  # a cancelled anyio scope


def _anyio_task_states() -> Any:
    """Return the record anyio keeps of the asyncio tasks it manages, or None.

    A private name of anyio's: without it, :func:`_cancel_pending` asks anyio
    about every task, which is right, only slower.
    """
    try:
        from anyio._backends._asyncio import _task_states
    except ImportError:  # pragma: no cover - another anyio
        return None
    return _task_states


_anyio_tasks = _anyio_task_states()


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _pause_then_close(wait: _Wait, socket: zmq.Socket[Any] | None) -> None:
    wait.pause()
    if socket is not None:
        socket.close(linger=0)


def _exit_seen(
    loop: asyncio.AbstractEventLoop, fd: int, exited: asyncio.Future[None], wait: _Wait
) -> None:
    loop.remove_reader(fd)
    if not exited.done():
        exited.set_result(None)
    wait.wake()  # a wait for a message, or for the exit


class _Wait:
    """The one pending wait of an async run: for its socket, or for its worker's exit.

    The loop's callbacks hold this, never the run, so a dropped run is still
    collected. The socket's ZMQ_FD is watched only while a wait is pending or until it next
    turns readable: it stays readable until ZeroMQ is asked for its events, so a
    reader left on it while nobody receives would wake the loop for nothing.
    """

    __slots__ = ("fd", "future", "loop", "reading")

    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        self.fd: int | None = None
        self.future: asyncio.Future[None] | None = None
        self.reading = False

    def wake(self) -> None:
        future = self.future
        if future is not None and not future.done():
            future.set_result(None)

    async def until_woken(self, deadline: float | None) -> None:
        """Wait until :meth:`wake` (or :meth:`ready`), or the loop's time ``deadline``."""
        loop = self.loop
        assert loop is not None
        timer = loop.call_at(deadline, self.wake) if deadline is not None else None
        future = self.future = loop.create_future()
        try:
            await future
        finally:
            if self.future is future:  # a close may have put its own wait there
                self.future = None
            if timer is not None:
                timer.cancel()

    def ready(self) -> None:
        """Wake the wait, or stop watching: the socket's ZMQ_FD is readable."""
        future = self.future
        if future is not None and not future.done():
            future.set_result(None)
        else:
            self.pause()

    def listen(self) -> None:
        if not self.reading:
            assert self.loop is not None
            assert self.fd is not None
            self.loop.add_reader(self.fd, self.ready)
            self.reading = True

    def pause(self) -> None:
        if self.reading:
            self.reading = False
            assert self.loop is not None
            assert self.fd is not None
            self.loop.remove_reader(self.fd)


def _forget(
    loop: asyncio.AbstractEventLoop, child: Child, timeout: float | None, directory: str | None
) -> None:
    loop.remove_reader(child.fd)
    reap_later(child, timeout, directory)


def _remove(directory: str | None) -> None:
    """Remove a run's private directory: its socket and any shared arrays not taken in."""
    if directory is None:
        return
    try:  # the usual case, in three calls: the socket alone is left
        os.unlink(os.path.join(directory, SOCKET_NAME))
        os.rmdir(directory)
    except OSError:
        shutil.rmtree(directory, ignore_errors=True)


def _in_shm(directory: str | None) -> bool:
    return directory is not None and directory.startswith(SHM_ROOT + os.sep)

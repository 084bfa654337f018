"""The ZMQStreamer worker: runs a streamer in a child process and sends its samples.

:func:`worker_main` is the target of the ``multiprocessing`` process. It
connects a PAIR socket to the consumer, iterates the streamer, packs samples
into messages (several small samples per message, see :class:`Sender`) and
sends them, then an end or an error message, and waits for the consumer's
:data:`~._zmq_wire.STOP` before it closes. (Leaving on its own, even after
ZeroMQ has handed the last messages over, can lose them: over TCP a socket
closed with unread acknowledgements is reset, and a stalled consumer outlasts
any linger.)

It stops early, closing the source so its ``finally:`` runs, when

- the consumer sends STOP (checked whenever a message is sent);
- it receives SIGTERM (the consumer's second step of closing);
- the consumer process is gone: a watchdog thread sees the parent's sentinel
  close or the parent pid change, and sends SIGTERM to its own process, then
  exits hard if that did not end it.

SIGINT is ignored: on Ctrl-C the consumer decides, and closes the worker.
"""

from __future__ import annotations

import _thread
import contextlib
import itertools
import multiprocessing
import os
import pickle
import select
import shutil
import signal
import sys
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterator
from multiprocessing.reduction import ForkingPickler
from typing import TYPE_CHECKING, Any, cast

import zmq

from ._engine import _is_async_run
from ._exceptions import ConfigError, WorkerError
from ._mux._base import _Started
from ._streamer import Stream, Streamer
from ._zmq_shm import SlotError, SlotWriter
from ._zmq_wire import SOCKET_NAME, Encoder, encode_end, encode_error, parse_control

if TYPE_CHECKING:
    from multiprocessing.process import BaseProcess

__all__ = [
    "Child",
    "Sender",
    "Stopped",
    "describe_exit",
    "make_process",
    "reap_later",
    "worker_main",
]

#: Data messages the worker may have in flight whatever their size: two, so the
#: next message is on its way while the consumer takes in the last one.
MIN_IN_FLIGHT = 2
#: Most data messages in flight, however small.
MAX_IN_FLIGHT = 64
#: ZeroMQ's own queue limit per direction. The flow control keeps the data below
#: it, and the consumer sends at most one acknowledgement per data message.
HWM = 4 * MAX_IN_FLIGHT
#: Seconds a worker ended by SIGTERM waits to see whether its consumer ends too.
ORPHAN_WAIT = 0.1
#: Seconds a forked worker runs before its watchdog thread starts (see _Watchdog).
WATCHDOG_AFTER = 1.0
#: Seconds between two looks at the parent process.
WATCH_EVERY = 0.25
#: Seconds a cancelled close blocks for a worker ending on SIGTERM, before SIGKILL.
CANCEL_GRACE = 1.0
#: Seconds the worker has to end after its consumer is gone, before it exits hard.
ORPHAN_GRACE = 5.0


class Stopped(BaseException):
    """The consumer asked the worker to stop, or it received SIGTERM."""


_NOBLOCK, _SNDMORE, _POLLIN = int(zmq.NOBLOCK), int(zmq.SNDMORE), int(zmq.POLLIN)
_EVENTS, _IPV6, _POLLOUT = int(zmq.EVENTS), int(zmq.IPV6), int(zmq.POLLOUT)
_LINGER, _SNDHWM, _RCVHWM = int(zmq.LINGER), int(zmq.SNDHWM), int(zmq.RCVHWM)


def _poll(socket: zmq.backend.Socket, events: int, stop_fd: int | None = None) -> int:
    """Block until ``socket`` has one of ``events``; return those it has.

    ``zmq_poll`` itself, which takes pyzmq's plain (backend) sockets as well.

    Raises
    ------
    Stopped
        If ``stop_fd`` (the read end of the consumer's stop pipe) turns readable.
    """
    if stop_fd is None:
        for _, ready in zmq.zmq_poll([(socket, events)], -1):
            return int(ready)
        return 0  # pragma: no cover - an infinite poll returns an event
    polled: Any = [(socket, events), (stop_fd, _POLLIN)]  # zmq_poll takes plain fds too
    found = 0
    for what, ready in zmq.zmq_poll(polled, -1):
        if what is not socket:
            raise Stopped
        found = int(ready)
    return found


#: Give up the CPU to whatever else can run on it (os.sched_yield where there is one).
yield_cpu: Callable[[], None] = getattr(os, "sched_yield", lambda: None)


def set_options(socket: zmq.backend.Socket) -> None:
    """Set what both ends' sockets share: no linger, the queue limits of :data:`HWM`.

    Plain ``setsockopt`` calls: pyzmq's attribute sugar costs a short-lived
    worker, whose every first touch of a page is a copy after the fork, a
    measurable part of its start.
    """
    set_option = socket.set
    set_option(_LINGER, 0)
    set_option(_SNDHWM, HWM)
    set_option(_RCVHWM, HWM)


class Sender:
    """Coalesce samples into messages and send them on ``socket`` (worker side).

    A message is sent when it holds ``batch_bytes`` bytes or more, when its
    first sample has waited ``batch_latency`` seconds (counting the time the
    next sample is likely to take, the last gap seen), and for the very first
    sample of the stream, so the consumer gets it early.

    Flow control: the consumer acknowledges the data messages it has taken in;
    a message waits while those not yet acknowledged hold ``prefetch_bytes`` or
    more (or :data:`MAX_IN_FLIGHT` messages), unless fewer than
    :data:`MIN_IN_FLIGHT` are. So memory stays bounded by bytes, whatever the
    sample size, on the socket as in shared memory.
    """

    def __init__(
        self,
        socket: zmq.backend.Socket,
        token: bytes,
        *,
        copy: bool,
        batch_bytes: int,
        batch_latency: float,
        prefetch_bytes: int = 1 << 24,
        shared_dir: str | None = None,
        shm_threshold: int | None = None,
        stop_fd: int | None = None,
    ) -> None:
        self.socket = socket
        #: The read end of the consumer's stop pipe, if it gave one (see worker_main).
        self.stop_fd = stop_fd
        self.token = token
        self.copy = copy
        self.batch_bytes = batch_bytes
        self.batch_latency = batch_latency
        self.prefetch_bytes = prefetch_bytes
        self.slots = None
        if shared_dir is not None and shm_threshold is not None:
            self.slots = SlotWriter(shared_dir, keep_bytes=prefetch_bytes)
        self.encoder = Encoder(token, slots=self.slots, shared_bytes=shm_threshold or 0)
        self.sent = 0
        #: When (``time.perf_counter``) to call ``start_watchdog``, if ever.
        self.watchdog_due: float | None = None
        self.start_watchdog: Callable[[], None] | None = None
        self._first = 0.0
        self._last = time.perf_counter()
        self._in_flight: deque[int] = deque()  # sizes of unacknowledged data messages
        self._in_flight_bytes = 0
        self._acknowledged = 0
        self._send = socket.send

    def add(self, sample: object) -> None:
        """Queue ``sample``, and send the message if it is due."""
        now = time.perf_counter()
        gap = now - self._last
        due = self.watchdog_due
        if due is not None and now >= due and self.start_watchdog is not None:
            self.watchdog_due = None
            self.start_watchdog()
        encoder = self.encoder
        encoder.add(sample)
        if encoder.count == 1:
            self._first = now
        if (
            encoder.nbytes >= self.batch_bytes
            or now - self._first + gap >= self.batch_latency
            or self.sent == 0
            or encoder.count >= 4096
        ):
            self.flush()
        self._last = time.perf_counter()

    def flush(self) -> None:
        """Send the pending samples, if any, once the flow control allows."""
        encoder = self.encoder
        count = encoder.count
        if not count:
            return
        nbytes = encoder.nbytes
        frames = encoder.take()
        in_flight = self._in_flight
        while len(in_flight) >= MIN_IN_FLIGHT and (
            self._in_flight_bytes + nbytes > self.prefetch_bytes or len(in_flight) >= MAX_IN_FLIGHT
        ):
            self.wait_for_control()
        self.send(frames)
        if not self.sent:
            # The first message is what the consumer waits for: let it (and ZeroMQ's
            # I/O threads) run before this worker, which still has the CPU, goes on.
            yield_cpu()
        in_flight.append(nbytes)
        self._in_flight_bytes += nbytes
        self.sent += count

    def send(self, frames: list[Any]) -> None:
        """Send one message, waiting while ZeroMQ's queue is full.

        Raises
        ------
        Stopped
            If the consumer asks to stop meanwhile.
        """
        socket, send, copy = self.socket, self._send, self.copy
        if socket.get(_EVENTS) & _POLLIN:  # type: ignore[operator]
            self.check_control()
        last = len(frames) - 1
        while True:
            try:
                # A message goes whole or not at all: ZeroMQ checks its queue limit
                # on the first frame only.
                send(frames[0], _NOBLOCK | _SNDMORE if last else _NOBLOCK, copy=copy)
                break
            except zmq.Again:
                pass
            if _poll(socket, _POLLIN | _POLLOUT, self.stop_fd) & _POLLIN:
                self.check_control()
        for i in range(1, last + 1):
            send(frames[i], _SNDMORE if i < last else 0, copy=copy)

    def check_control(self) -> None:
        """Take in the consumer's acknowledgements; raise :class:`Stopped` on STOP."""
        while True:
            try:
                message = self.socket.recv(_NOBLOCK)
            except zmq.Again:
                return
            control = parse_control(message)
            if control is None:
                raise Stopped
            acknowledged, returned, retired = control
            if returned or retired:
                if self.slots is None:
                    raise WorkerError("the consumer gave back shared memory it was never given")
                try:
                    self.slots.give_back(returned)
                    self.slots.retire(retired)
                except SlotError as exc:
                    raise WorkerError(f"the consumer broke the protocol: {exc}") from None
            released = acknowledged - self._acknowledged
            if not 0 <= released <= len(self._in_flight):
                raise WorkerError(
                    f"the consumer acknowledged {acknowledged} messages, but "
                    f"{self._acknowledged + len(self._in_flight)} were sent"
                )
            self._acknowledged = acknowledged
            for _ in range(released):
                self._in_flight_bytes -= self._in_flight.popleft()

    def wait_for_control(self) -> None:
        """Block until the consumer sends something, and take it in."""
        _poll(self.socket, _POLLIN, self.stop_fd)
        self.check_control()

    def wait_for_stop(self) -> None:
        """Block until the consumer sends STOP (after the end or an error)."""
        while True:
            self.wait_for_control()  # raises Stopped


_set_handler: Callable[[int, Any], Any]
try:
    # CPython's C function under signal.signal, which takes and returns plain ints:
    # the enum conversions of signal.signal cost a fresh worker some 40 µs a call,
    # every first touch of a page being a copy after the fork (see worker_main).
    from _signal import signal as _set_handler  # type: ignore[import-not-found,no-redef]
except ImportError:  # pragma: no cover - not CPython
    _set_handler = signal.signal
_SIGINT, _SIGTERM = int(signal.SIGINT), int(signal.SIGTERM)
_SIG_IGN = int(signal.SIG_IGN)

_terminated = [False]


def _on_sigterm(signum: int, frame: Any) -> None:
    _set_handler(_SIGTERM, _SIG_IGN)  # the source closes now; only SIGKILL cuts it short
    _terminated[0] = True
    raise Stopped


def _remove_if_orphaned(consumer_pid: int, address: str) -> None:
    """After a SIGTERM: if the consumer ends too, remove its private directory.

    A SIGTERM to the whole process group (``timeout``, ``docker stop``, a job
    scheduler) ends the consumer before it can clean up, and this worker before
    its watchdog sees the consumer go: wait a moment for the consumer's end.
    """
    try:
        fd = os.pidfd_open(consumer_pid)
    except (AttributeError, OSError):  # no pidfds here, or the consumer is gone already
        gone = not _alive(consumer_pid)
    else:
        try:
            gone = bool(select.select([fd], [], [], ORPHAN_WAIT)[0])
        finally:
            os.close(fd)
    if gone:
        _remove_socket_dir(address)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover - another user's pid, reused
        return False
    return True


def _remove_socket_dir(address: str) -> None:
    """Remove the consumer's ipc socket file and its private directory.

    A consumer killed outright cannot remove them itself. Only a directory
    named as :func:`~._zmq_wire.bind` names them is touched.
    """
    if not address.startswith("ipc://"):
        return
    path = address[len("ipc://") :]
    directory = os.path.dirname(path)
    if os.path.basename(path) != SOCKET_NAME or not os.path.basename(directory).startswith(
        ("aiostream_mux-zmq-", "amz-")
    ):
        return
    with contextlib.suppress(OSError):
        os.unlink(path)
    with contextlib.suppress(OSError):
        for name in os.listdir(directory):
            if name.endswith(".shm"):  # shared arrays the consumer never took in
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(directory, name))
    with contextlib.suppress(OSError):
        os.rmdir(directory)


def _parent_watch(consumer_pid: int, start_method: str) -> tuple[int | None, int]:
    """Return what the watchdog looks at: the parent's sentinel and the parent pid to expect."""
    parent = multiprocessing.parent_process()
    sentinel = parent.sentinel if parent is not None else None
    expected = os.getppid()  # the forkserver's pid under 'forkserver'
    if expected != consumer_pid and start_method != "forkserver":
        expected = -1  # the consumer died before we looked
    return sentinel, expected


def _watch_parent(sentinel: int | None, expected: int, address: str) -> None:
    """Watchdog thread: end this process when the consumer process is gone.

    It waits in ``select`` (without the GIL) so it takes nothing from the main
    thread, which is busy getting the first sample out.
    """
    while True:
        if sentinel is not None:
            gone = bool(select.select([sentinel], [], [], WATCH_EVERY)[0])
        else:  # pragma: no cover - multiprocessing always gives one
            time.sleep(WATCH_EVERY)
            gone = False
        if gone or os.getppid() != expected:
            break
    _remove_socket_dir(address)
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(ORPHAN_GRACE)
    os._exit(1)


class _Watchdog:
    """End this worker when its consumer process is gone (see :func:`_watch_parent`).

    The watching thread and its GIL handovers cost a short-lived forked worker
    some 0.2 ms, so there it starts only once the worker has run for
    :data:`WATCHDOG_AFTER` seconds; the kernel stands in until then: it sends
    :data:`PARENT_DEATH_SIGNAL` when the thread that forked the worker ends, and
    the handler starts the watching thread at once, which ends the worker if the
    consumer itself is gone. Under ``spawn`` and ``forkserver`` (whose parent is
    not the consumer's thread) it starts at once.
    """

    def __init__(self, consumer_pid: int, start_method: str, address: str) -> None:
        self._args = (*_parent_watch(consumer_pid, start_method), address)
        self.started = False
        if start_method != "fork" or not _ask_for_parent_death_signal(consumer_pid, self):
            self.start()

    def start(self) -> None:
        """Start the watching thread, once."""
        if not self.started:
            self.started = True
            # A bare thread (a daemon one): no start-up handshake.
            _thread.start_new_thread(_watch_parent, self._args)

    def on_signal(self, signum: int, frame: Any) -> None:
        self.start()


#: The kernel's word, to a forked worker, that the thread that forked it ended.
PARENT_DEATH_SIGNAL = signal.SIGUSR2
_PR_SET_PDEATHSIG = 1


def _prctl() -> Any:
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True).prctl
    except (ImportError, OSError, AttributeError):  # not Linux
        return None


#: Looked up once in the consumer, so a forked worker finds it ready.
_PRCTL = _prctl() if sys.platform.startswith("linux") else None


def _ask_for_parent_death_signal(consumer_pid: int, watchdog: _Watchdog) -> bool:
    """Have the kernel signal the watchdog when the forking thread ends; False if it cannot."""
    if _PRCTL is None:
        return False
    _set_handler(int(PARENT_DEATH_SIGNAL), watchdog.on_signal)
    if _PRCTL(_PR_SET_PDEATHSIG, int(PARENT_DEATH_SIGNAL), 0, 0, 0) != 0:
        return False
    # The consumer may have gone between the fork and the request.
    return os.getppid() == consumer_pid


def _load(payload: Any, pickled: bool, start_method: str) -> Any:
    if not pickled:
        return payload
    try:
        return pickle.loads(payload)
    except Exception as exc:
        raise WorkerError(
            f"the ZMQ worker (start method {start_method!r}) could not load the streamer: "
            f"{type(exc).__name__}: {exc}. The worker imports the source by name: define it "
            "at module level in an importable module (not in an interactive session)"
        ) from exc


def _items(streamer: Any, seed: Any) -> Iterator[Any]:
    """Iterate ``streamer``: its own run when that is a sync iterator, else a Stream.

    The run is started first and its kind looked at, rather than the source's
    kind asked in advance, which costs a fresh worker more.
    """
    if not isinstance(streamer, Streamer):
        return iter(streamer.iterate())  # a pescador Streamer
    run = streamer._start(seed)
    if not _is_async_run(run):
        return cast("Iterator[Any]", run)  # nothing for a Stream to add here
    # An async run: a Stream serves it to this thread through its portal.
    return iter(Stream(_Started(streamer, run), _seed=seed))


def worker_main(
    address: str,
    token: bytes,
    payload: Any,
    pickled: bool,
    seed: Any,
    consumer_pid: int,
    start_method: str,
    copy: bool,
    batch_bytes: int,
    batch_latency: float,
    prefetch_bytes: int,
    shm_threshold: int | None,
    shared_dir: str | None,
    stop_fd: int | None = None,
) -> None:
    """Run the streamer and send its samples to the consumer at ``address``.

    ``stop_fd``, given to a forked worker, is the read end of a pipe on which the
    consumer writes when it sends STOP: a blocked worker wakes on it directly,
    where STOP takes three thread hand-overs through ZeroMQ's I/O threads to
    arrive (about 0.3 ms here, of a close that takes about 1 ms).

    With ``shm_threshold`` and a ``shared_dir`` (the consumer's private directory,
    when it is in :data:`~._zmq_shm.SHM_ROOT`), arrays of that many bytes or more
    go as files there.

    Everything up to the first send is the consumer's time to its first item.
    A forked worker copies each page it first writes to, some microseconds
    apiece, so that path touches little: the C signal function, plain
    ``setsockopt`` calls, and what the consumer already worked out
    (``shared_dir``) passed in rather than derived here.
    """
    try:
        code = 0
        _set_handler(_SIGINT, _SIG_IGN)
        _set_handler(_SIGTERM, _on_sigterm)
        # pyzmq's plain (backend) classes: the Python conveniences of zmq.Context
        # and zmq.Socket, unused here, cost a fresh worker a quarter millisecond.
        context = zmq.backend.Context(io_threads=1)
        socket = zmq.backend.Socket(context, zmq.PAIR)
        try:
            set_options(socket)
            if address.startswith("tcp://["):
                socket.set(_IPV6, 1)
            watchdog = _Watchdog(consumer_pid, start_method, address)
            sender = Sender(
                socket,
                token,
                copy=copy,
                batch_bytes=batch_bytes,
                batch_latency=batch_latency,
                prefetch_bytes=prefetch_bytes,
                shared_dir=shared_dir,
                shm_threshold=shm_threshold,
                stop_fd=stop_fd,
            )
            if not watchdog.started:
                sender.watchdog_due = time.perf_counter() + WATCHDOG_AFTER
                sender.start_watchdog = watchdog.start
            socket.connect(address)  # ZeroMQ's handshake goes on while the source starts
            _run(sender, payload, pickled, seed, start_method)
        except Stopped:
            pass
        except BaseException:  # ZeroMQ failed under us: say so on stderr, exit 1
            traceback.print_exc()
            code = 1
        finally:
            _set_handler(_SIGTERM, _SIG_IGN)
            if _terminated[0]:
                _remove_if_orphaned(consumer_pid, address)
            if start_method == "fork":
                # A forked child ends with os._exit anyway: the kernel closes the
                # socket, and ZeroMQ's I/O thread holds nothing to deliver (the
                # consumer asked us to stop, or is gone).
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
            socket.close(linger=0)
            context.term()
        if code:
            sys.exit(code)
    except Stopped:  # SIGTERM while starting, or in the finally above, before SIG_IGN
        if start_method == "fork":
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(0)


def _run(sender: Sender, payload: Any, pickled: bool, seed: Any, start_method: str) -> None:
    """Send the stream, then an end message, or an error message for its first failure.

    The source is closed before either goes, so that message says the worker has
    nothing left to do but wait for the consumer's STOP.
    """
    items: Iterator[Any] | None = None
    try:
        items = _items(_load(payload, pickled, start_method), seed)
        for sample in items:
            sender.add(sample)
        sender.flush()
        _close(items)
        message = encode_end(sender.token, sender.sent)
    except Stopped:
        _stop(items)
        raise
    except Exception as exc:
        try:
            sender.flush()  # samples before the failure arrive first (a bad one is never queued)
        except Stopped:
            _stop(items)
            raise
        try:
            _close(items)
        except Exception as late:  # the first failure is the one to report
            exc.add_note(f"Closing the source then raised {type(late).__name__}: {late}")
        message = encode_error(sender.token, exc)
    sender.send(message)
    sender.wait_for_stop()


def _stop(items: Iterator[Any] | None) -> None:
    """Asked to stop (STOP, or a first SIGTERM): close the source now, its ``finally:`` whole.

    A SIGTERM arriving meanwhile, the consumer's next step when it is in a hurry,
    is ignored: only SIGKILL can cut the source's cleanup short.
    """
    _set_handler(_SIGTERM, _SIG_IGN)
    try:
        _close(items)
    except Exception:  # nobody to tell any more: say it on stderr
        traceback.print_exc()


def _close(items: Iterator[Any] | None) -> None:
    close = getattr(items, "close", None)
    if close is not None:
        close()


# -- the parent's side: a handle on the worker process


def reap_later(child: Child, timeout: float | None, directory: str | None = None) -> None:
    """End and reap ``child`` in a daemon thread, then remove its private ``directory``."""

    def reap() -> None:
        child.end_now(timeout)
        child.reap()
        if directory is not None:
            shutil.rmtree(directory, ignore_errors=True)

    threading.Thread(target=reap, name="aiostream_mux-zmq-reaper", daemon=True).start()


class Child:
    """A worker process, signalled and watched through a pidfd where there is one.

    A pidfd names this very process even after its pid is reaped and reused,
    and several threads may reap children (``multiprocessing`` polls all of them
    whenever it starts one), so signals go through it.
    """

    def __init__(self, process: BaseProcess) -> None:
        self.process = process
        self.pid = process.pid
        self._pidfd: int | None = None
        pidfd_open = getattr(os, "pidfd_open", None)
        if pidfd_open is not None and self.pid is not None:
            with contextlib.suppress(OSError):  # an old kernel, a sandbox, already reaped
                self._pidfd = pidfd_open(self.pid)
        self.fd: int = self._pidfd if self._pidfd is not None else process.sentinel

    def exited(self, timeout: float | None = 0) -> bool:
        """Whether the process has ended, waiting up to ``timeout`` seconds (``None``: ever)."""
        return bool(select.select([self.fd], [], [], timeout)[0])

    def signal(self, signum: int) -> None:
        """Send ``signum``, unless the process is gone."""
        if self._pidfd is not None:
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(self._pidfd, signum)
        elif self.process.exitcode is None:  # pragma: no cover - no pidfd here
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid or 0, signum)

    def end_now(self, timeout: float | None) -> None:
        """SIGTERM (the worker still closes its source), a short blocking wait, then SIGKILL."""
        if self.exited():
            return
        self.signal(signal.SIGTERM)
        if not self.exited(min(CANCEL_GRACE, timeout) if timeout is not None else CANCEL_GRACE):
            self.signal(signal.SIGKILL)
            self.exited(None)

    def reap(self) -> None:
        """Collect the exit status and close the descriptors."""
        self.process.join()
        with contextlib.suppress(ValueError):  # another thread is mid-way reaping it
            self.process.close()
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None


def describe_exit(code: int | None) -> str:
    """Say how a process ended, from its exit code."""
    if code is None:
        return "ended"
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


_counter = itertools.count(1)


def make_process(
    streamer: Any,
    start_method: str | None,
    address: str,
    token: bytes,
    seed: Any,
    *,
    copy: bool,
    batch_bytes: int,
    batch_latency: float,
    prefetch_bytes: int,
    shm_threshold: int | None,
    shared_dir: str | None,
    stop_fd: int | None = None,
) -> BaseProcess:
    """Build (not start) the worker process; pickle the streamer first unless forking.

    Raises
    ------
    ConfigError
        If the streamer cannot be pickled for a ``spawn`` or ``forkserver`` worker.
    """
    context = multiprocessing.get_context(start_method)
    method = context.get_start_method()
    payload: Any = streamer
    pickled = method != "fork"
    if pickled:
        try:
            payload = bytes(ForkingPickler.dumps(streamer))
        except Exception as exc:
            fork = " — or use start_method='fork'" if "fork" in _methods() else ""
            raise ConfigError(
                f"ZMQStreamer cannot send {streamer!r} to a worker started with "
                f"{method!r}: {type(exc).__name__}: {exc}. With 'spawn' and "
                "'forkserver' the streamer is pickled, so its source must be "
                "importable: a generator function defined at module level (not a "
                f"lambda, a closure or a local function), with picklable arguments{fork}"
            ) from exc
    args = (address, token, payload, pickled, seed, os.getpid(), method, copy)
    process: BaseProcess = context.Process(  # type: ignore[attr-defined]
        target=worker_main,
        args=(
            *args,
            batch_bytes,
            batch_latency,
            prefetch_bytes,
            shm_threshold,
            shared_dir,
            stop_fd if method == "fork" else None,  # only a forked worker has the pipe
        ),
        name=f"aiostream_mux-zmq-worker-{next(_counter)}",
        daemon=True,
    )
    return process


def _methods() -> list[str]:
    return multiprocessing.get_all_start_methods()

"""The ZMQStreamer worker: runs a streamer in a child process and sends its samples.

:func:`worker_main` is the target of the ``multiprocessing`` process. It
connects a PAIR socket to the consumer, iterates the streamer, packs samples
into messages (several small samples per message, see :class:`Sender`) and
sends them, then an end or an error message, and waits for the consumer's
:data:`~._zmq_wire.STOP` before it closes.

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
import multiprocessing.connection
import os
import pickle
import select
import signal
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from multiprocessing.reduction import ForkingPickler
from typing import TYPE_CHECKING, Any, cast

import zmq

from ._exceptions import ConfigError, WorkerError
from ._zmq_wire import STOP, Encoder, encode_end, encode_error

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

#: Messages queued per direction before a sender waits.
HWM = 4
#: Seconds between two looks at the parent process.
WATCH_EVERY = 0.25
#: Seconds a cancelled close blocks for a worker ending on SIGTERM, before SIGKILL.
CANCEL_GRACE = 1.0
#: Seconds the worker has to end after its consumer is gone, before it exits hard.
ORPHAN_GRACE = 5.0


class Stopped(BaseException):
    """The consumer asked the worker to stop, or it received SIGTERM."""


class Sender:
    """Coalesce samples into messages and send them on ``socket`` (worker side).

    A message is sent when it holds ``batch_bytes`` bytes or more, when its
    first sample has waited ``batch_latency`` seconds (counting the time the
    next sample is likely to take, the last gap seen), and for the very first
    sample of the stream, so the consumer gets it early.
    """

    def __init__(
        self,
        socket: zmq.Socket[Any],
        token: bytes,
        *,
        copy: bool,
        batch_bytes: int,
        batch_latency: float,
    ) -> None:
        self.socket = socket
        self.token = token
        self.copy = copy
        self.batch_bytes = batch_bytes
        self.batch_latency = batch_latency
        self.encoder = Encoder(token)
        self.sent = 0
        self.stopped = False
        self._first = 0.0
        self._last = time.perf_counter()
        self._poller: zmq.Poller | None = None

    @property
    def poller(self) -> zmq.Poller:
        """A poller on the socket, made on first use (not on the way to the first sample)."""
        if self._poller is None:
            self._poller = zmq.Poller()
            self._poller.register(self.socket, zmq.POLLIN | zmq.POLLOUT)
        return self._poller

    def add(self, sample: object) -> None:
        """Queue ``sample``, and send the message if it is due."""
        now = time.perf_counter()
        gap = now - self._last
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
        """Send the pending samples, if any."""
        count = self.encoder.count
        if count:
            self.send(self.encoder.take())
            self.sent += count

    def send(self, frames: list[Any]) -> None:
        """Send one message, waiting while the consumer's queue is full.

        Raises
        ------
        Stopped
            If the consumer asks to stop meanwhile.
        """
        socket = self.socket
        if cast(int, socket.get(zmq.EVENTS)) & zmq.POLLIN:
            self.check_control()
        while True:
            try:
                socket.send_multipart(frames, flags=zmq.NOBLOCK, copy=self.copy)
                return
            except zmq.Again:
                pass
            events = dict(self.poller.poll())
            if events.get(socket, 0) & zmq.POLLIN:
                self.check_control()

    def check_control(self) -> None:
        """Read the consumer's messages; raise :class:`Stopped` on STOP."""
        while True:
            try:
                message = self.socket.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            if message == STOP:
                self.stopped = True
                raise Stopped

    def wait_for_stop(self) -> None:
        """Block until the consumer sends STOP (after the end or an error)."""
        while not self.stopped:
            self.poller.modify(self.socket, zmq.POLLIN)
            self.poller.poll()
            try:
                self.check_control()
            except Stopped:
                return


def _on_sigterm(signum: int, frame: Any) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM ends the process
    raise Stopped


def _remove_socket_dir(address: str) -> None:
    """Remove the consumer's ipc socket file and its private directory.

    A consumer killed outright cannot remove them itself. Only a directory
    named as :func:`~._zmq_wire.bind` names them is touched.
    """
    if not address.startswith("ipc://"):
        return
    path = address[len("ipc://") :]
    directory = os.path.dirname(path)
    if os.path.basename(path) != "socket" or not os.path.basename(directory).startswith(
        ("aiostream_mux-zmq-", "amz-")
    ):
        return
    with contextlib.suppress(OSError):
        os.unlink(path)
    with contextlib.suppress(OSError):
        os.rmdir(directory)


def _watch_parent(consumer_pid: int, start_method: str, address: str) -> None:
    """Watchdog thread: end this process when the consumer process is gone."""
    parent = multiprocessing.parent_process()
    sentinel = parent.sentinel if parent is not None else None
    expected = os.getppid()  # the forkserver's pid under 'forkserver'
    if expected != consumer_pid and start_method != "forkserver":
        expected = -1  # the consumer died before we looked
    while True:
        if sentinel is not None:
            gone = bool(multiprocessing.connection.wait([sentinel], WATCH_EVERY))
        else:  # pragma: no cover - multiprocessing always gives one
            time.sleep(WATCH_EVERY)
            gone = False
        if gone or os.getppid() != expected:
            break
    _remove_socket_dir(address)
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(ORPHAN_GRACE)
    os._exit(1)


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
    from ._streamer import Stream, Streamer

    if isinstance(streamer, Streamer):
        return iter(Stream(streamer, _seed=seed))
    return iter(streamer.iterate())  # a pescador Streamer


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
) -> None:
    """Run the streamer and send its samples to the consumer at ``address``."""
    code = 0
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _on_sigterm)
    # A bare thread (a daemon one): no start-up handshake on the way to the first sample.
    _thread.start_new_thread(_watch_parent, (consumer_pid, start_method, address))
    context = zmq.Context(io_threads=1)
    socket = context.socket(zmq.PAIR)
    try:
        socket.linger = 0
        socket.sndhwm = HWM
        socket.rcvhwm = HWM
        if address.startswith("tcp://["):
            socket.ipv6 = True
        socket.connect(address)
        sender = Sender(
            socket, token, copy=copy, batch_bytes=batch_bytes, batch_latency=batch_latency
        )
        _run(sender, payload, pickled, seed, start_method)
    except Stopped:
        pass
    except BaseException:  # ZeroMQ failed under us: say so on stderr, exit 1
        traceback.print_exc()
        code = 1
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        socket.close(linger=0)
        if start_method == "fork":
            # A forked child ends with os._exit anyway; skip joining ZeroMQ's I/O
            # thread, which holds nothing to deliver (the consumer asked us to stop).
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
        context.term()
    if code:
        sys.exit(code)


def _run(sender: Sender, payload: Any, pickled: bool, seed: Any, start_method: str) -> None:
    items: Iterator[Any] | None = None
    try:
        try:
            items = _items(_load(payload, pickled, start_method), seed)
            for sample in items:
                sender.add(sample)
            sender.flush()
            sender.send(encode_end(sender.token, sender.sent))
        except Exception as exc:
            # Samples before the failure arrive first (a bad sample is never queued).
            sender.flush()
            sender.send(encode_error(sender.token, exc))
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()
    except Exception as exc:  # the source failed while closing
        sender.send(encode_error(sender.token, exc))
    sender.wait_for_stop()


# -- the parent's side: a handle on the worker process


def reap_later(child: Child, timeout: float | None) -> None:
    """End and reap ``child`` in a daemon thread."""

    def reap() -> None:
        child.end_now(timeout)
        child.reap()

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
        args=(*args, batch_bytes, batch_latency),
        name=f"aiostream_mux-zmq-worker-{next(_counter)}",
        daemon=True,
    )
    return process


def _methods() -> list[str]:
    return multiprocessing.get_all_start_methods()

"""ZMQStreamer: run a streamer in a worker process, receive its samples over ZeroMQ.

The public class and its arguments. Each activation is a run of ``_zmq_run``
(``_ZMQRun`` for ``async for``, ``_ZMQSyncRun`` for ``for``), whose worker
process runs ``_zmq_worker.worker_main``; the messages between them are those of
``_zmq_wire``, and large arrays travel through the shared memory of ``_zmq_shm``.
"""

from __future__ import annotations

import contextlib
import ipaddress
import math
import multiprocessing
import socket
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import zmq

from ._exceptions import ConfigError
from ._streamer import Streamer
from ._zmq_run import _ZMQRun, _ZMQSyncRun
from ._zmq_wire import SMALL_ARRAY

if TYPE_CHECKING:
    import anyio.abc
    import numpy as np

__all__ = ["ZMQStreamer"]

T = TypeVar("T")

#: Bytes of samples per message before it is sent.
DEFAULT_BATCH_BYTES = 1 << 20
#: Seconds a sample may wait in the worker for others to share its message.
DEFAULT_BATCH_LATENCY = 0.005
#: Bytes of samples the worker may send ahead of the consumer.
DEFAULT_PREFETCH_BYTES = 1 << 24
#: Arrays of this many bytes or more travel through shared memory (measured: from
#: here up it beats a frame of their own on the socket; smaller ones share a frame).
DEFAULT_SHM_THRESHOLD = SMALL_ARRAY


def _number(value: object, name: str, *, low: float, allow_none: bool = False) -> Any:
    if value is None and allow_none:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not low <= value < math.inf
    ):
        limit = f"a finite number >= {low}" + (" or None" if allow_none else "")
        raise ConfigError(f"{name}={value!r} must be {limit}")
    return value


def _host(host: object) -> str:
    """Check ``host`` (an address, an interface, ``*``, or a name that resolves)."""
    if not isinstance(host, str) or not host:
        raise ConfigError(f"host={host!r} must be a non-empty str")
    if host in ("127.0.0.1", "*", "localhost", "::1"):  # the default, and the usual
        return host
    with contextlib.suppress(ValueError):
        ipaddress.ip_address(host.strip("[]"))
        return host
    with contextlib.suppress(OSError):
        if host in {name for _, name in socket.if_nameindex()}:
            return host
    try:
        socket.getaddrinfo(host, None)
    except (OSError, UnicodeError):
        raise ConfigError(
            f"host={host!r} is not an address, a network interface, '*' or a name that resolves"
        ) from None
    return host


def _int(value: object, name: str, low: int, high: int | None = None) -> int:
    index = getattr(value, "__index__", None)
    if isinstance(value, bool) or index is None:
        raise ConfigError(f"{name}={value!r} must be an int")
    number = int(index())
    if number < low or (high is not None and number > high):
        bound = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise ConfigError(f"{name}={number} must be {bound}")
    return number


class ZMQStreamer(Streamer[T]):
    """Run a streamer in a worker process and receive its samples over ZeroMQ.

    Every activation starts a new worker process (``multiprocessing``, with the
    ``spawn``, ``forkserver`` or ``fork`` start method) that iterates
    ``streamer`` and sends its samples; the consumer receives them with
    :mod:`zmq.asyncio`, so ``async for`` on asyncio works directly, a plain
    ``for`` receives on a blocking socket of its own (no event loop, no
    thread), and a mux over several ZMQStreamers receives from all of them
    concurrently on one loop (under a plain ``for``, a StochasticMux,
    ShuffledMux or RoundRobinMux of forked workers starts them together and
    reads each one's socket in turn, without a loop).

    Samples are dicts whose values are numpy arrays (any shape; bool, numeric,
    datetime, str or bytes dtype; C or Fortran order or not contiguous), numpy
    scalars, or ``None``, bool, int, float, str and bytes. Arrays arrive equal
    (C- and Fortran-ordered ones in their order, others C-ordered), large ones
    in shared memory or over the received frames without a copy; small samples
    are coalesced several to a message. Nothing from the worker is unpickled.

    Parameters
    ----------
    streamer : Streamer
        The streamer to run in the worker (a ``pescador.Streamer`` works too).
        With the ``spawn`` and ``forkserver`` start methods it is pickled, so its
        source must be importable: a generator function defined at module level.
    min_port, max_port : int
        The range of TCP ports to try, with ``transport="tcp"``.
    max_tries : int
        How many ports to try, with ``transport="tcp"``.
    copy : bool
        ``False`` (default): zero-copy; arrays are views of the received
        messages, and the source must not modify an array after yielding it.
        ``True``: arrays are copied on both sides and own their memory.
    timeout : float or None
        Seconds to wait at each step of closing the worker (a polite stop, then
        SIGTERM, then SIGKILL); ``None`` waits for the polite stop for ever.
        A worker that dies mid-stream is reported within this time.
    transport : {"ipc", "tcp"}
        ``"ipc"`` (default): a Unix socket in a private directory (mode 0700;
        on ``/dev/shm`` where it exists), removed on close. ``"tcp"``: a TCP
        port on ``host``.
    host : str
        The address to bind with ``transport="tcp"``: an IP address, a network
        interface, or a name that resolves (checked here); the loopback address
        by default. All interfaces (``"*"``, ``"0.0.0.0"``) only when named here.
    start_method : {"spawn", "forkserver", "fork"} or None
        How to start the worker; ``None`` is the platform's default.
    batch_bytes : int
        Send a message once its samples hold this many bytes; 0 sends each
        sample in a message of its own.
    batch_latency : float
        Seconds a sample may wait in the worker for more samples to share its
        message.
    prefetch_bytes : int
        Bytes of samples the worker may send before the consumer has taken them
        in (at least two messages are always allowed): the bound on the memory
        queued between the two processes, whatever the sample size.
    shm_threshold : int or None
        Arrays of this many bytes or more travel through shared memory instead
        of the socket, with ``transport="ipc"`` where ``/dev/shm`` exists: the
        worker writes each into a file of the run's private directory there,
        and the consumer maps it (copy on write, so the array is writable) —
        one copy in all, none in the consumer. The file goes back to the worker
        for a later array once the array and its views are gone. ``None``
        sends every array on the socket.

    Raises
    ------
    ConfigError
        On a bad argument; when iterated, if the streamer cannot be pickled for
        a ``spawn`` or ``forkserver`` worker.
    WorkerError
        When iterated, if the worker dies, sends something malformed, or fails
        with an exception whose type cannot be rebuilt; its traceback is
        attached as ``__cause__``. Builtin exceptions and aiostream_mux's own
        (such as :class:`DataError` for a sample that cannot be sent) are
        re-raised with their own type.
    UnsupportedBackendError
        When iterated with ``async for`` under trio: ZeroMQ needs asyncio (a
        plain ``for`` works everywhere).

    Examples
    --------
    >>> import numpy as np
    >>> samples = [{"x": np.full(3, i), "label": i} for i in range(5)]
    >>> streamer = ZMQStreamer(Streamer(samples))
    >>> for sample in streamer.iterate(max_iter=2):
    ...     print(sample["x"], sample["label"])
    [0 0 0] 0
    [1 1 1] 1

    The same, from asyncio:

    >>> import asyncio
    >>> async def main():
    ...     return [int(s["x"].sum()) async for s in streamer]
    >>> asyncio.run(main())
    [0, 3, 6, 9, 12]
    """

    def __init__(
        self,
        streamer: Streamer[T] | Iterable[T],
        min_port: int = 49152,
        max_port: int = 65535,
        max_tries: int = 100,
        copy: bool = False,
        timeout: float | None = 5,
        *,
        transport: Literal["ipc", "tcp"] = "ipc",
        host: str = "127.0.0.1",
        start_method: Literal["spawn", "forkserver", "fork"] | None = None,
        batch_bytes: int = DEFAULT_BATCH_BYTES,
        batch_latency: float = DEFAULT_BATCH_LATENCY,
        prefetch_bytes: int = DEFAULT_PREFETCH_BYTES,
        shm_threshold: int | None = DEFAULT_SHM_THRESHOLD,
    ) -> None:
        if not isinstance(streamer, Streamer) and not callable(getattr(streamer, "iterate", None)):
            streamer = Streamer(streamer)  # raises ConfigError if it is no source
        self.min_port = _int(min_port, "min_port", 1, 65535)
        self.max_port = _int(max_port, "max_port", 1, 65535)
        if self.max_port <= self.min_port:
            raise ConfigError(f"max_port={max_port} must be greater than min_port={min_port}")
        self.max_tries = _int(max_tries, "max_tries", 1)
        if not isinstance(copy, bool):
            raise ConfigError(f"copy={copy!r} must be True or False")
        self.copy = copy
        self.timeout: float | None = _number(timeout, "timeout", low=0, allow_none=True)
        if transport not in ("ipc", "tcp"):
            raise ConfigError(f"transport={transport!r} must be 'ipc' or 'tcp'")
        if transport == "ipc" and not hasattr(zmq, "IPC_PATH_MAX_LEN"):  # pragma: no cover
            raise ConfigError("transport='ipc' needs ZeroMQ with ipc support; use 'tcp'")
        self.transport = transport
        self.host = _host(host)
        if start_method is not None:
            methods = multiprocessing.get_all_start_methods()
            if start_method not in methods:
                raise ConfigError(f"start_method={start_method!r} must be None or one of {methods}")
        self.start_method = start_method
        self.batch_bytes = _int(batch_bytes, "batch_bytes", 0)
        self.batch_latency: float = _number(batch_latency, "batch_latency", low=0)
        self.prefetch_bytes = _int(prefetch_bytes, "prefetch_bytes", 1)
        self.shm_threshold = (
            None if shm_threshold is None else _int(shm_threshold, "shm_threshold", 1)
        )
        self.streamer = streamer
        self.args = ()
        self.kwargs = {}
        self._init_bookkeeping()

    def __repr__(self) -> str:
        return f"<ZMQStreamer of {self.streamer!r}>"

    def _is_async(self) -> bool:
        return True  # an async consumer receives from it on its own loop

    def _runs_sync(self) -> bool:
        # A sync consumer receives on a plain socket, without a loop; a mux's sync
        # driver takes it when its worker forks, which takes milliseconds. A spawned
        # worker takes a good part of a second to start: there the async driver,
        # which starts the next activations early, runs the mux (on the portal).
        context = multiprocessing.get_context(self.start_method)
        return context.get_start_method() == "fork"

    def _start(
        self,
        seed: np.random.SeedSequence | None = None,
        task_group: anyio.abc.TaskGroup | None = None,
        prefer_async: bool = False,
    ) -> Iterator[T] | AsyncIterator[T]:
        if prefer_async:
            return _ZMQRun(self, seed)
        run = _ZMQSyncRun(self, seed)
        run.launch()
        return run

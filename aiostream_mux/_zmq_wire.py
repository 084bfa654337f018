"""The ZMQStreamer wire format: a msgpack header, then one frame per array.

Worker to consumer, every message is ``[header, frame, frame, ...]``; the header
is msgpack of ``[VERSION, kind, token, body]``:

- ``kind == DATA``: ``body`` is a list of samples, each a list of fields:

  * ``[key, VALUE, value]`` for ``None``, bool, int, float, str and bytes;
  * ``[key, ARRAY, dtype, shape, fortran, frame, offset, nbytes]`` for an array:
    ``nbytes`` bytes at ``offset`` in frame number ``frame`` (>= 1) of this
    message, in C order, or in Fortran order when ``fortran``;
  * ``[key, SHARED, dtype, shape, fortran, number, nbytes]`` for an array in
    shared memory: the file ``<number>.shm`` of the run's private directory,
    which the consumer maps, and gives back once the array is gone;
  * ``[key, SCALAR, dtype, frame, offset, nbytes]`` for a numpy scalar.

  Arrays of at least :data:`SMALL_ARRAY` bytes travel in a frame of their own,
  sent without a copy, or, from ``shared_bytes`` up and when the worker was
  given a shared-memory directory, in a file there (one copy in the worker,
  none in the consumer and none through the socket); smaller ones are copied
  into one shared frame per message, so a message can carry many small
  samples (coalescing).
- ``kind == END``: ``body`` is the number of samples sent.
- ``kind == ERROR``: ``body`` is ``[module, qualname, message, args, traceback]``
  of the exception raised in the worker.

``token`` is a random secret given to the worker at start, so the consumer knows
the message comes from its own worker. The consumer checks every field of every
message and raises :class:`WorkerError` on anything unexpected. Nothing received
is ever unpickled: exceptions are rebuilt only for builtin and aiostream_mux
types, from their arguments.

Consumer to worker, single frames: :data:`STOP` asks the worker to stop, and an
acknowledgement (:func:`encode_ack`) says how many data messages the consumer
has taken in so far, which gives the worker credit to send more (flow control).
"""

from __future__ import annotations

import builtins
import math
import mmap
import os
import shutil
import struct
import tempfile
import traceback
from collections.abc import Sequence
from typing import Any

import msgpack
import numpy as np
import zmq

from . import _exceptions
from ._exceptions import DataError, WorkerError
from ._zmq_shm import SlotError, SlotReader, SlotWriter, shm_root

__all__ = [
    "MAX_IPC_PATH",
    "bind",
    "ARRAY",
    "DATA",
    "END",
    "ERROR",
    "SCALAR",
    "SHARED",
    "SMALL_ARRAY",
    "SOCKET_NAME",
    "STOP",
    "VALUE",
    "VERSION",
    "Decoder",
    "Encoder",
    "Malformed",
    "RemoteTraceback",
    "encode_ack",
    "encode_end",
    "encode_error",
    "parse_control",
    "rebuild_exception",
]

#: Format version, in every message; a consumer rejects any other.
VERSION = 2
# Message kinds.
DATA, END, ERROR = 0, 1, 2
# Field codes.
VALUE, ARRAY, SCALAR, SHARED = 0, 1, 2, 3
#: The consumer's request to stop.
STOP = b"stop"
#: The prefix of the consumer's acknowledgements, followed by a little-endian uint64.
ACK = b"ack:"

#: Arrays smaller than this are copied into the message's shared frame.
SMALL_ARRAY = 64 * 1024
#: Offsets in the shared frame are multiples of this.
ALIGN = 16
#: Most samples in one message.
MAX_SAMPLES = 8192
#: Most dimensions of an array.
MAX_NDIM = 64
#: dtype kinds that travel as raw bytes: bool, ints, floats, complex, datetimes, str, bytes.
DTYPE_KINDS = frozenset("biufcmMSU")
#: Value types that travel inside the header.
VALUE_TYPES = (type(None), bool, int, float, str, bytes)
KEY_TYPES = (str, int, bytes)
#: The ipc socket's file in a run's private directory.
SOCKET_NAME = "socket"
#: Longest ipc:// path; sockaddr_un holds 104 to 108 bytes.
MAX_IPC_PATH = 100
INT_MIN, INT_MAX = -(2**63), 2**64 - 1


class Malformed(Exception):
    """A message broke the format; the text says how."""


class RemoteTraceback(Exception):
    """The traceback of an exception raised in a worker process.

    Attached as ``__cause__`` of the exception re-raised in the consumer, as
    :mod:`concurrent.futures` does, so the remote frames show in the report.
    """

    def __init__(self, tb: str) -> None:
        super().__init__(tb)
        self.tb = tb

    def __str__(self) -> str:
        return f'\n"""\n{self.tb}"""'


def _dtype_error(key: object, dtype: np.dtype[Any]) -> DataError:
    return DataError(
        f"sample key {key!r}: arrays of dtype {dtype} cannot be sent by ZMQStreamer; "
        "only bool, numeric, datetime, str and bytes dtypes travel without pickling"
    )


def _value_error(key: object, value: object) -> DataError:
    return DataError(
        f"sample key {key!r}: a value of type {type(value).__module__}."
        f"{type(value).__qualname__} cannot be sent by ZMQStreamer; values must be numpy "
        "arrays or scalars of bool, numeric, datetime, str or bytes dtype, or None, bool, "
        "int, float, str or bytes"
    )


class Encoder:
    """Pack samples (dicts of arrays) into one message (worker side).

    ``add`` appends a sample or raises :class:`DataError` leaving the pending
    message as it was; ``take`` returns the message's frames and starts a new one.
    """

    def __init__(
        self,
        token: bytes,
        *,
        small_array: int = SMALL_ARRAY,
        slots: SlotWriter | None = None,
        shared_bytes: int = 0,
    ) -> None:
        self.token = token
        self.small_array = small_array
        #: Where arrays of ``shared_bytes`` or more go (None: on the socket).
        self.slots = slots
        self.shared_bytes = shared_bytes
        self._reset()

    def _reset(self) -> None:
        self.samples: list[list[list[Any]]] = []
        self.frames: list[Any] = [b""]
        self.nbytes = 0
        self._small: bytearray | None = None
        self._small_index = 0
        self._slots: list[int] = []  # written for the pending message

    @property
    def count(self) -> int:
        """Samples in the pending message."""
        return len(self.samples)

    def add(self, sample: object) -> None:
        """Add ``sample`` to the pending message.

        Raises
        ------
        DataError
            If ``sample`` is not a dict, or a key or value cannot travel.
        """
        if not isinstance(sample, dict):
            raise DataError(
                f"ZMQStreamer sends samples that are dicts of arrays; got a "
                f"{type(sample).__module__}.{type(sample).__qualname__}"
            )
        frames_mark = len(self.frames)
        slots, slots_mark = self.slots, len(self._slots)  # (a failed write unsets .slots)
        small_mark = len(self._small) if self._small is not None else 0
        fields: list[list[Any]] = []
        nbytes = 0
        try:
            for key, value in sample.items():
                if not isinstance(key, KEY_TYPES):
                    raise DataError(
                        f"sample key {key!r} has type {type(key).__qualname__}; "
                        "ZMQStreamer needs str, int or bytes keys"
                    )
                if isinstance(value, np.ndarray):
                    fields.append(self._array(key, value, ARRAY))
                    nbytes += value.nbytes
                elif isinstance(value, np.generic):
                    fields.append(self._array(key, np.asarray(value), SCALAR))
                    nbytes += value.nbytes
                elif isinstance(value, VALUE_TYPES):
                    if type(value) is int and not INT_MIN <= value <= INT_MAX:
                        raise DataError(
                            f"sample key {key!r}: int {value} does not fit in 64 bits; "
                            "send it as a str or a numpy array"
                        )
                    fields.append([key, VALUE, value])
                    nbytes += 8
                else:
                    raise _value_error(key, value)
        except BaseException:
            del self.frames[frames_mark:]
            if slots is not None:
                slots.give_back(self._slots[slots_mark:])
            del self._slots[slots_mark:]
            if self._small is not None:
                if self._small_index >= frames_mark:  # created for this sample
                    self._small = None
                else:
                    del self._small[small_mark:]
            raise
        self.samples.append(fields)
        self.nbytes += nbytes

    def _array(self, key: object, value: np.ndarray[Any, Any], code: int) -> list[Any]:
        dtype = value.dtype
        if dtype.kind not in DTYPE_KINDS or dtype.hasobject or dtype.itemsize == 0:
            raise _dtype_error(key, dtype)
        fortran = False
        if value.flags.c_contiguous:
            data = value
        elif value.flags.f_contiguous:
            data, fortran = value.T, True
        else:
            data = np.ascontiguousarray(value)
        raw = data.reshape(-1).view(np.uint8)
        n = raw.nbytes
        if self.slots is not None and n >= self.shared_bytes and code == ARRAY:
            slot = self.slots.write(raw)
            if slot is not None:
                self._slots.append(slot)
                return [key, SHARED, dtype.str, list(value.shape), fortran, slot, n]
            self.slots = None  # /dev/shm is full or gone: the socket from now on
        if n < self.small_array:
            small = self._small
            if small is None:
                small = self._small = bytearray()
                self._small_index = len(self.frames)
                self.frames.append(b"")
            offset = -len(small) % ALIGN + len(small)
            if offset != len(small):
                small.extend(bytes(offset - len(small)))
            small += raw.data
            frame = self._small_index
        else:
            offset, frame = 0, len(self.frames)
            self.frames.append(raw)
        if code == SCALAR:
            return [key, SCALAR, dtype.str, frame, offset, n]
        return [key, ARRAY, dtype.str, list(value.shape), fortran, frame, offset, n]

    def take(self) -> list[Any]:
        """Return the pending message's frames (header first) and start a new message."""
        frames = self.frames
        frames[0] = msgpack.packb([VERSION, DATA, self.token, self.samples], use_bin_type=True)
        if self._small is not None:
            frames[self._small_index] = self._small
        self._reset()
        return frames


def encode_ack(taken: int, returned: Sequence[int] = (), retired: Sequence[int] = ()) -> bytes:
    """Encode the consumer's acknowledgement.

    ``taken`` data messages were taken in so far; ``returned`` are the
    shared-memory slots whose arrays are gone since the last acknowledgement,
    and ``retired`` those that may not be written again (see ``_zmq_shm``).
    """
    return ACK + struct.pack(
        f"<{2 + len(returned) + len(retired)}Q", taken, len(returned), *returned, *retired
    )


def parse_control(message: bytes) -> tuple[int, tuple[int, ...], tuple[int, ...]] | None:
    """Read a message from the consumer: ``(taken, returned, retired)``, or None for STOP.

    Raises
    ------
    Malformed
        For anything else.
    """
    if message == STOP:
        return None
    size = len(message) - len(ACK)
    if size >= 16 and size % 8 == 0 and message.startswith(ACK):
        taken, n_returned, *slots = struct.unpack_from(f"<{size // 8}Q", message, len(ACK))
        if n_returned <= len(slots):
            return taken, tuple(slots[:n_returned]), tuple(slots[n_returned:])
    raise Malformed(f"an unknown message from the consumer: {_short(message)}")


def encode_end(token: bytes, count: int) -> list[bytes]:
    """Return the frames of an end message after ``count`` samples."""
    return [msgpack.packb([VERSION, END, token, count], use_bin_type=True)]


def _plain_args(args: tuple[Any, ...]) -> list[Any] | None:
    for arg in args:
        if not isinstance(arg, VALUE_TYPES) or (type(arg) is int and not INT_MIN <= arg <= INT_MAX):
            return None
    return list(args)


def encode_error(token: bytes, exc: BaseException) -> list[bytes]:
    """Return the frames of an error message carrying ``exc``, its message and its traceback."""
    try:
        message = str(exc)
    except Exception:  # a broken __str__
        message = f"<{type(exc).__qualname__}: unprintable>"
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    body = [type(exc).__module__, type(exc).__qualname__, message, _plain_args(exc.args), tb]
    return [msgpack.packb([VERSION, ERROR, token, body], use_bin_type=True)]


#: The modules whose exception types the consumer rebuilds: by name, never unpickled.
#: (aiostream_mux's public classes say ``__module__ == "aiostream_mux"``.)
_REBUILDABLE = {
    "builtins": builtins,
    _exceptions.__name__: _exceptions,
    "aiostream_mux": _exceptions,
}


def rebuild_exception(
    module: str, qualname: str, message: str, args: list[Any] | None, tb: str
) -> Exception:
    """Rebuild a remote exception as its own type when that is safe, else a WorkerError.

    Builtin exception types and aiostream_mux's own are rebuilt by name from their
    plain arguments; any other type becomes a :class:`WorkerError` naming it. The
    remote traceback is attached as ``__cause__`` and as ``remote_traceback``.
    """
    exc: Exception | None = None
    namespace = _REBUILDABLE.get(module)
    cls = None
    if namespace is _exceptions and qualname in _exceptions.__all__:
        cls = getattr(_exceptions, qualname)
    elif namespace is builtins and qualname.isidentifier():
        cls = getattr(builtins, qualname, None)
    if (
        isinstance(cls, type)
        and issubclass(cls, Exception)
        and not issubclass(cls, (StopIteration, StopAsyncIteration))
    ):
        try:
            exc = cls(*args) if args is not None else cls(message)
        except Exception:
            exc = None
    if exc is None:
        exc = WorkerError(
            f"{module}.{qualname}: {message} (raised in the ZMQ worker process; "
            "its type is rebuilt only for builtin and aiostream_mux exceptions, "
            "see the remote traceback above)"
        )
    exc.remote_type = f"{module}.{qualname}"  # type: ignore[attr-defined]
    exc.remote_traceback = tb  # type: ignore[attr-defined]
    exc.__cause__ = RemoteTraceback(tb)
    return exc


class Decoder:
    """Check and unpack messages from one worker (consumer side).

    Every method raises :class:`Malformed` on anything that breaks the format.
    """

    def __init__(
        self, token: bytes, *, copy: bool = False, slots: SlotReader | None = None
    ) -> None:
        self.token = token
        self.copy = copy
        #: Where shared-memory arrays arrive (None: refused).
        self.slots = slots
        #: Bytes of arrays in the last data message.
        self.nbytes = 0
        self._dtypes: dict[str, np.dtype[Any]] = {}

    def header(self, frames: list[Any]) -> tuple[int, Any]:
        """Return ``(kind, body)`` of a message, checking its envelope."""
        if not frames:
            raise Malformed("an empty message")
        try:
            head = msgpack.unpackb(frames[0].bytes, raw=False, use_list=True)
        except Exception as exc:
            raise Malformed(f"a header that is not msgpack ({type(exc).__name__}: {exc})") from None
        if type(head) is not list or len(head) != 4:
            raise Malformed(f"a header that is not a list of 4 fields: {_short(head)}")
        version, kind, token, body = head
        if version != VERSION or type(version) is not int:
            raise Malformed(
                f"format version {_short(version)}, expected {VERSION} (is the worker "
                "running another version of aiostream_mux?)"
            )
        if token != self.token:
            raise Malformed("a message without this stream's token: it is not from our worker")
        if kind not in (DATA, END, ERROR) or type(kind) is not int:
            raise Malformed(f"unknown message kind {_short(kind)}")
        if kind != DATA and len(frames) != 1:
            raise Malformed(f"{len(frames) - 1} unexpected frame(s) after an end or error header")
        return kind, body

    def end(self, body: Any) -> int:
        """Return the sample count of an end message."""
        if type(body) is not int or body < 0:
            raise Malformed(f"an end message with count {_short(body)}")
        return body

    def error(self, body: Any) -> Exception:
        """Return the exception an error message describes."""
        if type(body) is not list or len(body) != 5:
            raise Malformed(f"an error message body {_short(body)}")
        module, qualname, message, args, tb = body
        if not all(type(x) is str for x in (module, qualname, message, tb)):
            raise Malformed("an error message with non-text fields")
        if args is not None and (
            type(args) is not list or not all(isinstance(a, VALUE_TYPES) for a in args)
        ):
            raise Malformed("an error message with bad exception arguments")
        return rebuild_exception(module, qualname, message, args, tb)

    def _dtype(self, name: Any) -> np.dtype[Any]:
        dtype = self._dtypes.get(name)
        if dtype is not None:
            return dtype
        if type(name) is not str or len(name) > 32:
            raise Malformed(f"a dtype {_short(name)}")
        try:
            dtype = np.dtype(name)
        except Exception:
            raise Malformed(f"an unknown dtype {name!r}") from None
        if dtype.kind not in DTYPE_KINDS or dtype.hasobject or dtype.itemsize == 0:
            raise Malformed(f"a dtype {name!r} that is not allowed")
        self._dtypes[name] = dtype
        return dtype

    def data(self, body: Any, frames: list[Any]) -> list[dict[Any, Any]]:
        """Return the samples of a data message, as arrays over the frames (no copy)."""
        if type(body) is not list or not 0 < len(body) <= MAX_SAMPLES:
            raise Malformed(f"a data message body {_short(body)}")
        buffers = [None, *(frame.buffer for frame in frames[1:])]
        n_frames = len(buffers)
        copy = self.copy
        frombuffer = np.frombuffer
        samples = []
        shared = 0
        for fields in body:
            if type(fields) is not list:
                raise Malformed(f"a sample that is not a list of fields: {_short(fields)}")
            sample: dict[Any, Any] = {}
            for field in fields:
                if type(field) is not list or len(field) < 3:
                    raise Malformed(f"a field {_short(field)}")
                key, code = field[0], field[1]
                if type(key) not in KEY_TYPES or key in sample:
                    raise Malformed(f"a bad or repeated key {_short(key)}")
                if (code == ARRAY and len(field) == 8) or (code == SHARED and len(field) == 7):
                    dtype = self._dtype(field[2])
                    shape, fortran = field[3], field[4]
                    if (
                        type(shape) is not list
                        or len(shape) > MAX_NDIM
                        or not all(type(d) is int and d >= 0 for d in shape)
                    ):
                        raise Malformed(f"key {key!r}: a shape {_short(shape)}")
                    if type(fortran) is not bool:
                        raise Malformed(f"key {key!r}: an order flag {_short(fortran)}")
                    count = math.prod(shape)
                    if code == ARRAY:
                        buf = _slice(
                            buffers, n_frames, field[5], field[6], field[7], count * dtype.itemsize
                        )
                    else:
                        buf = self._map(field[5], field[6], count * dtype.itemsize)
                        shared += len(buf)
                    array = frombuffer(buf, dtype, count)
                    try:
                        array = array.reshape(shape[::-1]).T if fortran else array.reshape(shape)
                    except ValueError:  # more dimensions or a larger one than numpy takes
                        raise Malformed(f"key {key!r}: a shape {_short(shape)}") from None
                    # A small message may sit at any address in ZeroMQ's receive buffer.
                    if copy or not array.flags.aligned:
                        array = array.copy(order="K")
                    sample[key] = array
                elif code == SCALAR and len(field) == 6:
                    _, _, dtype_name, index, offset, nbytes = field
                    dtype = self._dtype(dtype_name)
                    buf = _slice(buffers, n_frames, index, offset, nbytes, dtype.itemsize)
                    sample[key] = frombuffer(buf, dtype, 1)[0]
                elif code == VALUE and len(field) == 3:
                    value = field[2]
                    if not isinstance(value, VALUE_TYPES):
                        raise Malformed(f"key {key!r}: a value of type {type(value).__name__}")
                    sample[key] = value
                else:
                    raise Malformed(f"key {key!r}: a field {_short(field)}")
            samples.append(sample)
        self.nbytes = shared + sum(len(frame) for frame in frames)
        return samples

    def _map(self, slot: Any, nbytes: Any, expected: int) -> mmap.mmap | bytearray:
        if self.slots is None:
            raise Malformed("a shared-memory array, but this stream offered no shared memory")
        if type(nbytes) is not int or nbytes != expected or nbytes == 0:
            raise Malformed(f"{_short(nbytes)} bytes for a shared array of {expected} bytes")
        try:
            return self.slots.map(slot, nbytes)
        except SlotError as exc:
            raise Malformed(str(exc)) from None


def _slice(
    buffers: list[Any], n_frames: int, index: Any, offset: Any, nbytes: Any, expected: int
) -> Any:
    if type(index) is not int or not 0 < index < n_frames:
        raise Malformed(f"a frame number {_short(index)} out of the {n_frames - 1} frame(s)")
    if nbytes != expected or type(nbytes) is not int:
        raise Malformed(f"{_short(nbytes)} bytes for an array of {expected} bytes")
    buf = buffers[index]
    if type(offset) is not int or offset < 0 or offset + nbytes > buf.nbytes:
        raise Malformed(f"bytes {_short(offset)}+{nbytes} out of a frame of {buf.nbytes} bytes")
    if offset == 0 and nbytes == buf.nbytes:
        return buf
    return buf[offset : offset + nbytes]


def _short(value: object, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def private_dir(prefix: str, parent: str) -> str:
    """Make a new directory only this user can enter (mode 0700) in ``parent``; return its path.

    As :func:`tempfile.mkdtemp` does, in a few system calls: a ZMQStreamer's
    time to first item counts every one.
    """
    for _ in range(100):
        path = os.path.join(parent, prefix + os.urandom(6).hex())
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:  # pragma: no cover - 48 random bits
            continue
        return path
    raise FileExistsError(f"no free name for a private directory in {parent}")  # pragma: no cover


def bind(
    socket: zmq.Socket[Any],
    transport: str,
    host: str,
    min_port: int,
    max_port: int,
    max_tries: int,
) -> tuple[str, str | None]:
    """Bind the consumer's ``socket``; return the address for the worker and the private dir.

    ``ipc``: a socket file in a new private directory (mode 0700), which the
    caller removes: in :data:`SHM_ROOT` (memory, so it can hold shared arrays too)
    where there is one, else in the temporary directory. ``tcp``: a random port in
    ``[min_port, max_port]`` on ``host``; a wildcard host is bound as named, and
    the worker connects to the loopback.
    """
    if transport == "ipc":
        directory = private_dir("aiostream_mux-zmq-", shm_root() or tempfile.gettempdir())
        path = os.path.join(directory, SOCKET_NAME)
        if len(path.encode()) > MAX_IPC_PATH:  # pragma: no cover - a long $TMPDIR
            shutil.rmtree(directory, ignore_errors=True)
            directory = private_dir("amz-", "/tmp")
            path = os.path.join(directory, SOCKET_NAME)
        address = f"ipc://{path}"
        try:
            socket.bind(address)
        except BaseException:
            shutil.rmtree(directory, ignore_errors=True)
            raise
        return address, directory
    if ":" in host:
        socket.ipv6 = True
    bracketed = f"[{host}]" if ":" in host else host
    try:
        port = socket.bind_to_random_port(f"tcp://{bracketed}", min_port, max_port, max_tries)
    except zmq.ZMQBindError:
        raise WorkerError(
            f"no free TCP port on {host} in [{min_port}, {max_port}] "
            f"after max_tries={max_tries} tries"
        ) from None
    peer = {"*": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1", "[::]": "::1"}.get(host, host)
    return (f"tcp://[{peer}]:{port}" if ":" in peer else f"tcp://{peer}:{port}"), None

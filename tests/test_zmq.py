"""ZMQStreamer: worker processes, both protocols, errors, fault injection, cleanup."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import glob
import itertools
import mmap
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, Literal, cast

import anyio
import numpy as np
import pescador
import pytest
import zmq

import aiostream_mux as am
from aiostream_mux import ConfigError, DataError, Streamer, UnsupportedBackendError, WorkerError
from aiostream_mux._zmq import ZMQStreamer
from aiostream_mux._zmq_run import _cancel_pending, _RunBase, _ZMQRun, _ZMQSyncRun
from aiostream_mux._zmq_shm import SHM_ROOT, shm_root
from aiostream_mux._zmq_wire import RemoteTraceback

Sample = dict[str, Any]
METHODS = ["fork", "spawn", "forkserver"]

# -- module-level sources: importable, so they work under spawn and forkserver


def counter(n: int, size: int = 4) -> Iterator[Sample]:
    for i in range(n):
        yield {"x": np.full(size, i, dtype=np.float32), "i": i, "pid": os.getpid()}


def finite(n: int, marker: str) -> Iterator[Sample]:
    """``n`` samples; touches ``marker`` in its ``finally:``."""
    try:
        for i in range(n):
            yield {"i": i}
    finally:
        Path(marker).touch()


def bad_sample_then_bad_close() -> Iterator[Sample]:
    try:
        yield {"ok": 1}
        yield {"bad": object()}  # a DataError in the worker
    finally:
        raise RuntimeError("closing failed too")


async def acounter(n: int) -> AsyncIterator[Sample]:
    for i in range(n):
        await asyncio.sleep(0)
        yield {"i": i, "pid": os.getpid()}


def forever(marker: str | None = None) -> Iterator[Sample]:
    """Endless samples; touches ``marker`` in its ``finally:``."""
    try:
        i = 0
        while True:
            yield {"i": i, "pid": os.getpid(), "x": np.zeros(16)}
            i += 1
    finally:
        if marker is not None:
            Path(marker).touch()


def failing(n: int) -> Iterator[Sample]:
    for i in range(n):
        yield {"i": i}
    raise ValueError(f"source failed after {n}")


class SourceError(Exception):
    """Not a builtin: comes back as a WorkerError."""


def failing_custom() -> Iterator[Sample]:
    yield {"i": 0}
    raise SourceError("custom failure")


def bad_values(kind: str) -> Iterator[Sample]:
    yield {"ok": np.arange(3)}
    if kind == "object":
        yield {"obj": np.array([None, 1], dtype=object)}
    else:
        yield {"lst": [1, 2, 3]}


def raise_flag(path: str) -> None:
    """Raise a :class:`Flag` from a worker: one byte into its FIFO."""
    fd = os.open(path, os.O_WRONLY)  # never blocks: the test holds the FIFO open
    try:
        os.write(fd, b"!")
    finally:
        os.close(fd)


def wait_flag(path: str) -> None:
    """Block a worker until the test raises the :class:`Flag` at ``path``."""
    fd = os.open(path, os.O_RDONLY)  # never blocks: the test holds the FIFO open
    try:
        os.read(fd, 1)
    finally:
        os.close(fd)


def stubborn(marker: str) -> Iterator[Sample]:
    """Ignores the polite stop and SIGTERM: only SIGKILL ends it."""
    yield {"pid": os.getpid()}
    raise_flag(marker)
    while True:
        with contextlib.suppress(BaseException):
            time.sleep(3600)


def slow_to_close(closing: str, go: str, marker: str) -> Iterator[Sample]:
    """Endless samples; its ``finally:`` raises ``closing``, waits for ``go``, touches ``marker``.

    A slow close, to send the worker a SIGTERM in the middle of it.
    """
    try:
        while True:
            yield {"pid": os.getpid()}
    finally:
        raise_flag(closing)
        wait_flag(go)
        Path(marker).touch()


def waits_for(path: str) -> Iterator[Sample]:
    """One sample, then a second only once the consumer raises the flag at ``path``."""
    yield {"i": 0, "pid": os.getpid()}
    wait_flag(path)
    yield {"i": 1}


def rendezvous(mine: str, other: str) -> Iterator[Sample]:
    """Yield only once the other worker runs too: proves both run at the same time."""
    raise_flag(mine)
    wait_flag(other)
    for i in range(3):
        yield {"who": mine, "i": i}


def paced(n: int, seconds: float) -> Iterator[Sample]:
    """``n`` samples, ``seconds`` apart, so the consumer usually waits for each.

    The pause shapes the workload, it synchronises nothing: assertions on this
    source hold whatever the timing.
    """
    for i in range(n):
        time.sleep(seconds)
        yield {"i": i}


def small_then_large(nbytes: int) -> Iterator[Sample]:
    """Three small samples, then one array of ``nbytes``."""
    for i in range(3):
        yield {"i": i, "x": np.full(4, i)}
    yield {"i": 3, "x": np.ones(nbytes, dtype=np.uint8)}


def spin(n: int) -> Iterator[Sample]:
    """CPU-bound samples."""
    for i in range(n):
        total = 0
        for j in range(20_000):
            total += j * j
        yield {"i": i, "v": total}


# -- helpers


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def wait_until_gone(pid: int, seconds: float = 20.0) -> bool:
    """Wait for ``pid`` to end: its pidfd turns readable when it does (no polling)."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        select.select([fd], [], [], seconds)
    finally:
        os.close(fd)
    return not alive(pid)


class Flag:
    """A one-way signal between the test and a worker process, by path: a named FIFO.

    The test holds the FIFO open for reading and writing, so a worker's open never
    blocks; a worker raises it by writing a byte (:func:`raise_flag`) or waits on it
    by reading one (:func:`wait_flag`), and the test waits with ``select``: no polling.
    """

    def __init__(self, path: Path) -> None:
        os.mkfifo(path)
        self.path = str(path)
        self._fd = os.open(path, os.O_RDWR | os.O_NONBLOCK)

    def raise_(self) -> None:
        """Let a worker blocked in :func:`wait_flag` go on."""
        os.write(self._fd, b"!")

    def wait(self, seconds: float = 20.0) -> bool:
        """Wait until a worker raises the flag; ``False`` after ``seconds``."""
        ready, _, _ = select.select([self._fd], [], [], seconds)
        if ready:
            os.read(self._fd, 1)
        return bool(ready)

    def close(self) -> None:
        os.close(self._fd)


@pytest.fixture
def make_flag(tmp_path: Path) -> Iterator[Callable[[str], Flag]]:
    """Make :class:`Flag` objects in ``tmp_path``; closed after the test."""
    made: list[Flag] = []

    def make(name: str) -> Flag:
        made.append(Flag(tmp_path / name))
        return made[-1]

    yield make
    for flag in made:
        flag.close()


def socket_dirs() -> set[str]:
    """The runs' private directories: in /dev/shm where there is one, else in $TMPDIR."""
    roots = {tempfile.gettempdir(), SHM_ROOT}
    return {d for root in roots for d in glob.glob(os.path.join(root, "aiostream_mux-zmq-*"))}


@pytest.fixture
def no_leftovers() -> Iterator[None]:
    """After the test: no socket directory left behind, no worker left running."""
    import multiprocessing

    before = socket_dirs()
    yield
    assert socket_dirs() - before == set()
    workers = [p for p in multiprocessing.active_children() if "zmq" in p.name]
    # (A reaper thread may be collecting a dropped run's worker right now.)
    assert [p for p in workers if p.pid is not None and alive(p.pid)] == []


# -- samples


def test_round_trip_sync(no_leftovers: None) -> None:
    out = list(ZMQStreamer(Streamer(counter, 20)))
    assert [s["i"] for s in out] == list(range(20))
    assert out[0]["pid"] != os.getpid()
    for s in out:
        np.testing.assert_array_equal(s["x"], np.full(4, s["i"], dtype=np.float32))


@pytest.mark.asyncio
async def test_round_trip_async(no_leftovers: None) -> None:
    out = [s async for s in ZMQStreamer(Streamer(counter, 20))]
    assert [s["i"] for s in out] == list(range(20))


def test_every_kind_of_value_arrives_equal(no_leftovers: None) -> None:
    sample: Sample = {
        "c": np.arange(12, dtype=np.float64).reshape(3, 4),
        "f": np.asfortranarray(np.arange(24, dtype=np.int32).reshape(2, 3, 4)),
        "strided": np.arange(50)[::3],
        "view": np.arange(64, dtype=np.uint8).reshape(8, 8)[::2, 1::3].T,
        "big": np.arange(300_000, dtype=np.float32).reshape(600, 500, order="F"),
        "big_strided": np.arange(400_000, dtype=np.int64)[::2],
        "bool": np.array([True, False]),
        "str_array": np.array(["ab", "c"]),
        "when": np.array(["2024-01-01"], dtype="datetime64[D]"),
        "scalar": np.float32(2.5),
        "text": "hello",
        "raw": b"\x00\xff",
        "n": 42,
        "none": None,
    }
    (got,) = list(ZMQStreamer(Streamer([sample])))
    assert got.keys() == sample.keys()
    for key, value in sample.items():
        if isinstance(value, np.ndarray):
            assert got[key].dtype == value.dtype
            np.testing.assert_array_equal(got[key], value)
            assert got[key].flags.aligned
            if value.flags.f_contiguous and not value.flags.c_contiguous:
                assert got[key].flags.f_contiguous
        else:
            assert got[key] == value
            assert type(got[key]) is type(value)


def endpoint_of(run: _ZMQRun[Any]) -> str:
    assert run._socket is not None
    return cast(bytes, run._socket.last_endpoint).decode()


def frame_of(array: np.ndarray[Any, Any]) -> object:
    """The object at the bottom of an array's chain of bases."""
    base: Any = array
    while True:
        if isinstance(base, np.ndarray) and base.base is not None:
            base = base.base
        elif isinstance(base, memoryview):
            base = base.obj
        else:
            return base


def test_32_mib_array_arrives_in_shared_memory_without_a_copy(no_leftovers: None) -> None:
    big = np.arange(8 << 20, dtype=np.float32)  # 32 MiB
    (got,) = list(ZMQStreamer(Streamer([{"x": big}])))
    np.testing.assert_array_equal(got["x"], big)
    mapping = frame_of(got["x"])
    if shm_root() is None:  # no /dev/shm here: the array came on the socket
        assert isinstance(mapping, zmq.Frame)
        return
    assert isinstance(mapping, mmap.mmap)  # a view of the worker's file, mapped
    assert len(mapping) == big.nbytes
    got["x"][:2] = -1  # writable, copy on write: nothing shared changes
    assert got["x"][0] == -1


def test_32_mib_array_is_received_without_a_copy(no_leftovers: None) -> None:
    big = np.arange(8 << 20, dtype=np.float32)  # 32 MiB
    (got,) = list(ZMQStreamer(Streamer([{"x": big}]), shm_threshold=None))
    np.testing.assert_array_equal(got["x"], big)
    assert isinstance(frame_of(got["x"]), zmq.Frame)  # a view of the received message
    for threshold in (None, 1 << 20):
        (copied,) = list(ZMQStreamer(Streamer([{"x": big}]), copy=True, shm_threshold=threshold))
        assert copied["x"].flags.owndata
        np.testing.assert_array_equal(copied["x"], big)


@pytest.mark.asyncio
async def test_small_samples_are_coalesced(no_leftovers: None) -> None:
    run = ZMQStreamer(Streamer(counter, 2000))._start(prefer_async=True)
    assert isinstance(run, _ZMQRun)
    messages = 0
    receive = run._receive

    async def counting() -> list[zmq.Frame]:
        nonlocal messages
        messages += 1
        return await receive()

    run._receive = counting  # type: ignore[method-assign]
    try:
        items = [s async for s in run]
    finally:
        await run.aclose()
    assert [s["i"] for s in items] == list(range(2000))
    assert messages < 1000  # many samples per message


@pytest.mark.asyncio
async def test_coalescing_never_holds_a_sample_back(
    make_flag: Callable[[str], Flag], no_leftovers: None
) -> None:
    # The source yields its second sample only after the consumer saw the first.
    flag = make_flag("seen-first")
    stream = ZMQStreamer(Streamer(waits_for, flag.path)).iterate()
    async with stream:
        first = await stream.__anext__()
        assert first["i"] == 0
        flag.raise_()
        assert [s["i"] async for s in stream] == [1]


def test_pescador_streamer_and_plain_iterables_are_accepted(no_leftovers: None) -> None:
    assert [s["i"] for s in ZMQStreamer(pescador.Streamer(counter, 3))] == [0, 1, 2]
    assert [s["i"] for s in ZMQStreamer([{"i": 5}])] == [5]


# -- Streamer semantics


def test_iterate_cycle_and_max_iter(no_leftovers: None) -> None:
    z = ZMQStreamer(Streamer(counter, 4))
    assert [s["i"] for s in z.iterate(max_iter=2)] == [0, 1]
    assert [s["i"] for s in z.cycle(max_iter=10)] == [0, 1, 2, 3, 0, 1, 2, 3, 0, 1]
    assert [s["i"] for s in z(max_iter=3)] == [0, 1, 2]
    assert list(z.iterate(max_iter=0)) == []


def test_each_activation_starts_a_new_worker(no_leftovers: None) -> None:
    z = ZMQStreamer(Streamer(counter, 2))
    pids = {s["pid"] for s in z} | {s["pid"] for s in z}
    assert len(pids) == 2


def test_async_source_in_the_worker(no_leftovers: None) -> None:
    assert [s["i"] for s in ZMQStreamer(Streamer(acounter, 5))] == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("method", METHODS)
def test_start_methods(method: str, no_leftovers: None) -> None:
    z = ZMQStreamer(Streamer(counter, 5), start_method=method)  # type: ignore[arg-type]
    assert [s["i"] for s in z] == [0, 1, 2, 3, 4]


def test_fork_takes_a_source_that_does_not_pickle(no_leftovers: None) -> None:
    items = [{"i": i} for i in range(3)]
    z = ZMQStreamer(Streamer(lambda: iter(items)), start_method="fork")
    assert [s["i"] for s in z] == [0, 1, 2]


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_unpicklable_source_is_a_clear_error(method: str, no_leftovers: None) -> None:
    def local_source() -> Iterator[Sample]:
        yield {"i": 0}

    z = ZMQStreamer(Streamer(local_source), start_method=method)  # type: ignore[arg-type]
    with pytest.raises(ConfigError) as info:
        list(z)
    message = str(info.value)
    assert repr(method) in message
    assert "importable" in message
    assert "local_source" in message


def test_source_that_does_not_import_in_the_worker(tmp_path: Path) -> None:
    # Pickles by reference in the consumer, fails to load in a spawned worker.
    script = tmp_path / "consumer.py"
    script.write_text(
        textwrap.dedent(
            """
            from aiostream_mux import Streamer, WorkerError
            from aiostream_mux._zmq import ZMQStreamer

            def main_source():
                yield {"i": 0}

            if __name__ == "__main__":
                import sys, types
                sys.modules["__main__"].main_source = main_source
                fake = types.ModuleType("vanishing")
                def source():
                    yield {"i": 0}
                source.__module__ = "vanishing"
                source.__qualname__ = "source"
                fake.source = source
                sys.modules["vanishing"] = fake
                try:
                    list(ZMQStreamer(Streamer(source), start_method="spawn"))
                except WorkerError as exc:
                    print("WorkerError:", exc)
            """
        )
    )
    done = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        check=True,
    )
    assert "WorkerError: the ZMQ worker (start method 'spawn') could not load" in done.stdout
    assert "vanishing" in done.stdout


# -- errors from the source


@pytest.mark.asyncio
async def test_source_exception_keeps_its_type_and_remote_traceback(no_leftovers: None) -> None:
    got = []
    with pytest.raises(ValueError, match="source failed after 3") as info:
        async for s in ZMQStreamer(Streamer(failing, 3)):
            got.append(s["i"])
    assert got == [0, 1, 2]  # every sample before the failure arrives
    cause = info.value.__cause__
    assert isinstance(cause, RemoteTraceback)
    assert "in failing" in str(cause)
    assert 'raise ValueError(f"source failed after {n}")' in str(cause)


def test_source_exception_sync(no_leftovers: None) -> None:
    with pytest.raises(ValueError, match="source failed after 0"):
        list(ZMQStreamer(Streamer(failing, 0)))


def test_custom_exception_becomes_worker_error(no_leftovers: None) -> None:
    with pytest.raises(WorkerError, match=r"test_zmq.SourceError: custom failure") as info:
        list(ZMQStreamer(Streamer(failing_custom)))
    assert "in failing_custom" in str(info.value.__cause__)


@pytest.mark.parametrize(("kind", "fragment"), [("object", "dtype object"), ("list", "list")])
def test_unsendable_value_is_a_data_error_in_the_consumer(
    kind: str, fragment: str, no_leftovers: None
) -> None:
    got = []
    with pytest.raises(DataError) as info:
        for s in ZMQStreamer(Streamer(bad_values, kind)):
            got.append(s)
    assert len(got) == 1
    assert fragment in str(info.value)
    assert "sample key" in str(info.value)


# -- fault injection


@pytest.mark.asyncio
async def test_worker_killed_mid_stream_is_a_clear_error(no_leftovers: None) -> None:
    timeout = 5.0
    stream = ZMQStreamer(Streamer(forever), timeout=timeout).iterate()
    start = 0.0
    with pytest.raises(WorkerError, match="was killed by SIGKILL") as info:
        async with stream:
            async for s in stream:
                if not start:
                    os.kill(s["pid"], signal.SIGKILL)
                    start = time.monotonic()
    assert time.monotonic() - start < timeout  # a generous liveness bound
    assert "before the end of the stream" in str(info.value)


def test_worker_killed_sync(no_leftovers: None) -> None:
    with pytest.raises(WorkerError, match="SIGKILL"):
        for i, s in enumerate(ZMQStreamer(Streamer(forever))):
            if i == 0:
                os.kill(s["pid"], signal.SIGKILL)


def rogue_worker(address: str, token: bytes, *args: Any) -> None:
    """Stands in for worker_main: sends what MALFORMED names (in ``args[0]``)."""
    import msgpack

    payload = args[0]
    kind = pickle_free_kind(payload)
    context = zmq.Context()
    sock = context.socket(zmq.PAIR)
    sock.connect(address)
    if kind == "garbage":
        sock.send(b"\x00\x01\x02 not msgpack")
    elif kind == "wrong-token":
        sock.send(msgpack.packb([1, 1, b"?" * 16, 0]))
    elif kind == "future-version":
        sock.send(msgpack.packb([99, 1, token, 0]))
    elif kind == "bad-offsets":
        sock.send_multipart(
            [msgpack.packb([1, 0, token, [[["x", 1, "<f8", [1000], False, 1, 0, 8000]]]]), b"x"]
        )
    elif kind == "lost-samples":
        sock.send(msgpack.packb([1, 1, token, 5]))
    # Wait for the consumer's STOP, like a real worker.
    sock.recv()
    sock.close(linger=0)
    context.term()


def pickle_free_kind(payload: Any) -> str:
    import pickle

    streamer = pickle.loads(payload) if isinstance(payload, bytes) else payload
    return str(streamer.streamer[0])


@pytest.mark.parametrize(
    "kind", ["garbage", "wrong-token", "future-version", "bad-offsets", "lost-samples"]
)
@pytest.mark.asyncio
async def test_malformed_message_is_rejected(
    kind: str, monkeypatch: pytest.MonkeyPatch, no_leftovers: None
) -> None:
    monkeypatch.setattr("aiostream_mux._zmq_worker.worker_main", rogue_worker)
    z = ZMQStreamer(Streamer([kind]), timeout=2)
    with pytest.raises(WorkerError, match="unexpected message on the ZMQStreamer socket"):
        async with z.iterate() as stream:
            async for _ in stream:
                pass


def test_worker_exits_when_its_consumer_is_killed(tmp_path: Path) -> None:
    # The consumer's temporary directory: short, so its ipc path stays under the limit.
    tmpdir = tempfile.mkdtemp(prefix="amzt-")
    before = socket_dirs()  # the private directories go to /dev/shm where it exists
    try:
        _consumer_killed(tmp_path, tmpdir)
    finally:
        # (multiprocessing's own pymp-* directories are not ours to check.)
        leftovers = glob.glob(os.path.join(tmpdir, "aiostream_mux-zmq-*"))
        leftovers += sorted(socket_dirs() - before)
        shutil.rmtree(tmpdir, ignore_errors=True)
    assert not leftovers, f"the orphaned workers left {leftovers} behind"


def _consumer_killed(tmp_path: Path, tmpdir: str) -> None:
    for method in ("fork", "spawn", "forkserver"):
        script = tmp_path / f"consumer_{method}.py"
        script.write_text(
            textwrap.dedent(
                f"""
                import sys, time
                from aiostream_mux import Streamer
                from aiostream_mux._zmq import ZMQStreamer
                from tests.test_zmq import forever

                if __name__ == "__main__":
                    for s in ZMQStreamer(Streamer(forever), start_method={method!r}):
                        print(s["pid"], flush=True)
                        time.sleep(3600)
                """
            )
        )
        consumer = subprocess.Popen(
            [sys.executable, str(script)],
            stdout=subprocess.PIPE,
            text=True,
            cwd=Path(__file__).parent.parent,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "TMPDIR": tmpdir},
        )
        try:
            assert consumer.stdout is not None
            worker = int(consumer.stdout.readline())
            assert alive(worker)
            consumer.kill()
            consumer.wait()
        finally:
            consumer.kill()
            consumer.wait()
            if consumer.stdout is not None:
                consumer.stdout.close()
        assert wait_until_gone(worker), f"worker {worker} outlived its consumer ({method})"


def test_sigterm_to_the_process_group_leaves_nothing(tmp_path: Path) -> None:
    # ``timeout``, ``docker stop``, a job scheduler: consumer and worker get SIGTERM
    # together; the consumer dies without cleaning up, so the worker must.
    script = tmp_path / "consumer_group.py"
    script.write_text(
        textwrap.dedent(
            """
            import time
            from aiostream_mux import Streamer
            from aiostream_mux._zmq import ZMQStreamer
            from tests.test_zmq import counter

            if __name__ == "__main__":
                for s in ZMQStreamer(Streamer(counter, 10**6, 32 * 1024)):
                    print(s["pid"], flush=True)
                    time.sleep(3600)
            """
        )
    )
    before = socket_dirs()
    consumer = subprocess.Popen(
        [sys.executable, str(script)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).parent.parent,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        start_new_session=True,
    )
    try:
        assert consumer.stdout is not None
        worker = int(consumer.stdout.readline())
        assert socket_dirs() - before  # its private directory, with shared arrays
        os.killpg(consumer.pid, signal.SIGTERM)
        consumer.wait()
        assert wait_until_gone(worker)
    finally:
        consumer.kill()
        consumer.wait()
        if consumer.stdout is not None:
            consumer.stdout.close()
    leftovers = socket_dirs() - before
    for directory in leftovers:  # do not leave them to the next test
        shutil.rmtree(directory, ignore_errors=True)
    assert not leftovers


# -- closing


@pytest.mark.asyncio
async def test_break_stops_the_worker_and_runs_the_source_finally(
    tmp_path: Path, no_leftovers: None
) -> None:
    marker = tmp_path / "finally-ran"
    stream = ZMQStreamer(Streamer(forever, str(marker))).iterate()
    async with stream:
        async for s in stream:
            pid = s["pid"]
            break
    assert not alive(pid)
    assert marker.exists()  # a polite stop: the source's finally: ran


def test_sync_break_stops_the_worker(tmp_path: Path, no_leftovers: None) -> None:
    marker = tmp_path / "finally-ran"
    with ZMQStreamer(Streamer(forever, str(marker))).iterate() as stream:
        for s in stream:
            pid = s["pid"]
            break
    assert not alive(pid)
    assert marker.exists()


@pytest.mark.asyncio
async def test_cancellation_stops_the_worker(
    make_flag: Callable[[str], Flag], no_leftovers: None
) -> None:
    # The worker is busy in its source (not reading STOP): SIGTERM after timeout.
    got = asyncio.Event()
    pids: list[int] = []
    z = ZMQStreamer(Streamer(waits_for, make_flag("never").path), timeout=0.2)

    async def consume() -> None:
        async with z.iterate() as stream:
            async for s in stream:
                pids.append(s["pid"])
                got.set()

    task = asyncio.create_task(consume())
    await got.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not alive(pids[0])


def test_a_sigterm_does_not_cut_short_a_source_closing_on_stop(
    tmp_path: Path, make_flag: Callable[[str], Flag], no_leftovers: None
) -> None:
    closing, go = make_flag("closing"), make_flag("go")
    marker = tmp_path / "finally-ran"
    stream = ZMQStreamer(Streamer(slow_to_close, closing.path, go.path, str(marker))).iterate()
    pid = next(stream)["pid"]
    closer = threading.Thread(target=stream.close)  # STOP, then waits for the worker
    closer.start()
    try:
        assert closing.wait()  # the worker is in the source's finally:
        os.kill(pid, signal.SIGTERM)  # what a hurried consumer sends next
    finally:
        go.raise_()
        closer.join()
    assert marker.exists()  # the finally: ran to its end
    assert not alive(pid)


def pipes() -> int:
    """How many pipes this process has open (a forked worker's stop pipe is one)."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(FileNotFoundError):  # the listing's own descriptor
            count += os.readlink(f"/proc/self/fd/{fd}").startswith("pipe:")
    return count


@pytest.mark.parametrize("start_method", ["fork", "spawn"])
@pytest.mark.asyncio
async def test_closed_runs_leave_no_pipe_open(start_method: str, no_leftovers: None) -> None:
    z = ZMQStreamer(Streamer(counter, 50), start_method=start_method)  # type: ignore[arg-type]
    list(z.iterate(max_iter=1))  # the first run opens what the process keeps
    before = pipes()
    for _ in range(3):
        with z.iterate() as stream:
            next(stream)
        async with z.iterate() as astream:
            await astream.__anext__()
        assert [s["i"] async for s in z.iterate(max_iter=3)] == [0, 1, 2]
    assert pipes() == before


async def exited(pid: int, seconds: float = 20.0) -> bool:
    """Wait (off the loop) until process ``pid`` has ended; False after ``seconds``."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:  # ended and reaped already
        return True
    try:
        ready, _, _ = await asyncio.to_thread(select.select, [fd], [], [], seconds)
    finally:
        os.close(fd)
    return bool(ready)


async def other_tasks() -> None:
    """Let every other task of the loop finish (such as a finalized generator's close)."""
    me = asyncio.current_task()
    await asyncio.gather(*(t for t in asyncio.all_tasks() if t is not me))


@pytest.mark.asyncio
async def test_a_stream_dropped_after_a_break_still_stops_its_worker_politely(
    tmp_path: Path, no_leftovers: None
) -> None:
    marker = tmp_path / "finally-ran"
    stream = ZMQStreamer(Streamer(forever, str(marker))).iterate()
    async for s in stream:
        pid = s["pid"]
        break
    del stream, s
    gc.collect()  # asyncio's hooks close the dropped generator, on the loop
    assert await exited(pid)
    await other_tasks()
    assert marker.exists()  # a polite stop: the source's finally: ran


@pytest.mark.asyncio
async def test_a_run_dropped_on_the_loop_stops_watching_its_socket_at_once(
    no_leftovers: None,
) -> None:
    z = ZMQStreamer(Streamer(forever))
    run = z._start(prefer_async=True)
    assert isinstance(run, _ZMQRun)
    pid = (await run.__anext__())["pid"]
    fd = run._wait.fd
    assert fd is not None
    del run
    gc.collect()  # the run's __del__, on the loop's thread, closes its socket
    # ... and the loop watches that descriptor no more: a later socket may get the
    # same number, and a reader removed later would then be that socket's.
    assert not asyncio.get_running_loop().remove_reader(fd)
    async with z.iterate() as stream:
        assert (await asyncio.wait_for(stream.__anext__(), 20))["i"] == 0
    assert await exited(pid)


@pytest.mark.asyncio
async def test_a_close_from_another_task_ends_a_pending_read(
    make_flag: Callable[[str], Flag], no_leftovers: None
) -> None:
    # One task waits for the next message while another closes the run: the read is
    # cancelled, and the close still sees the worker's exit (its wait is its own).
    z = ZMQStreamer(Streamer(waits_for, make_flag("never").path), timeout=0.5)
    run = z._start(prefer_async=True)
    assert isinstance(run, _ZMQRun)
    first = await run.__anext__()
    reader = asyncio.create_task(run.__anext__())
    await asyncio.sleep(0)  # the reader's first step: nothing to read, so it waits
    assert run._wait.future is not None
    await asyncio.wait_for(run.aclose(), 30)
    with pytest.raises(asyncio.CancelledError):
        await reader
    assert not alive(first["pid"])


@pytest.mark.asyncio
async def test_a_close_cancelled_while_it_waits_still_ends_the_worker(
    make_flag: Callable[[str], Flag], no_leftovers: None
) -> None:
    closing, go = make_flag("closing"), make_flag("go")
    stream = ZMQStreamer(Streamer(slow_to_close, closing.path, go.path, "/dev/null"), timeout=30)
    it = stream.iterate()
    pid = (await it.__anext__())["pid"]
    closer = asyncio.create_task(it.aclose())
    try:
        assert await asyncio.to_thread(closing.wait)  # the worker is in the source's finally:
        closer.cancel()  # a cleanup that would take for ever: SIGTERM is ignored, SIGKILL not
        with pytest.raises(asyncio.CancelledError):
            await closer
        assert not alive(pid)  # gone when the close returns
    finally:
        go.raise_()


def test_a_close_after_its_worker_died_survives_the_default_sigpipe(tmp_path: Path) -> None:
    # The stop byte goes into a pipe whose reader may be gone: with SIGPIPE at its
    # default (as command-line tools set it), writing there would kill the consumer.
    script = tmp_path / "consumer.py"
    script.write_text(
        textwrap.dedent(
            """
            import asyncio, os, select, signal
            from aiostream_mux import Streamer, ZMQStreamer

            signal.signal(signal.SIGPIPE, signal.SIG_DFL)

            def forever():
                while True:
                    yield {"pid": os.getpid()}

            async def main():
                z = ZMQStreamer(Streamer(forever), start_method="fork")
                async with z.iterate() as stream:
                    async for s in stream:
                        os.kill(s["pid"], signal.SIGKILL)
                        fd = os.pidfd_open(s["pid"])
                        select.select([fd], [], [], 20)  # dead, unseen by the loop yet
                        os.close(fd)
                        break

            asyncio.run(main())
            print("closed")
            """
        )
    )
    done = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "closed"


@pytest.mark.asyncio
async def test_a_close_in_a_cancelled_anyio_scope_still_ends_the_worker(
    tmp_path: Path, no_leftovers: None
) -> None:
    # anyio cancels every await inside the scope, the close's wait for the worker
    # too: the worker still ends, and its source's finally: runs.
    marker = tmp_path / "finally-ran"
    pids: list[int] = []
    with anyio.CancelScope() as scope:
        async with ZMQStreamer(Streamer(forever, str(marker))).iterate() as stream:
            async for s in stream:
                pids.append(s["pid"])
                scope.cancel()
                await anyio.sleep(10)  # cancelled at once
    assert scope.cancelled_caught
    assert not alive(pids[0])
    assert marker.exists()


@pytest.mark.asyncio
async def test_cancel_pending_sees_asyncio_and_anyio_cancellations() -> None:
    # What decides whether a close shields its polite stop: a cancellation already
    # under way, delivered (asyncio's count) or not yet (an anyio scope this task
    # cancelled itself, whose delivery waits for the task's next await).
    assert not _cancel_pending()
    with anyio.CancelScope() as scope:  # noqa: ASYNC100 - no await is the point
        assert not _cancel_pending()
        scope.cancel()
        assert _cancel_pending()
    with anyio.CancelScope(shield=True):  # noqa: ASYNC100
        assert not _cancel_pending()  # a task anyio knows, not cancelled

    async def cancelled() -> bool:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            return _cancel_pending()
        return False

    task = asyncio.create_task(cancelled())
    await asyncio.sleep(0)
    task.cancel()
    assert await task


@pytest.mark.asyncio
async def test_staged_close_kills_a_worker_that_ignores_stop_and_sigterm(
    make_flag: Callable[[str], Flag], no_leftovers: None
) -> None:
    marker = make_flag("sleeping")
    run = ZMQStreamer(Streamer(stubborn, marker.path), timeout=0.2)._start(prefer_async=True)
    assert isinstance(run, _ZMQRun)
    first = await run.__anext__()
    assert await asyncio.to_thread(marker.wait)  # now deaf to STOP and SIGTERM
    await run.aclose()
    assert not alive(first["pid"])


@pytest.mark.asyncio
async def test_aclose_before_start_and_twice(no_leftovers: None) -> None:
    run = ZMQStreamer(Streamer(counter, 3))._start(prefer_async=True)
    assert isinstance(run, _ZMQRun)
    await run.aclose()
    await run.aclose()
    with pytest.raises(StopAsyncIteration):
        await run.__anext__()


@pytest.mark.asyncio
async def test_ipc_directory_is_private_and_removed(no_leftovers: None) -> None:
    before = socket_dirs()
    run = ZMQStreamer(Streamer(forever))._start(prefer_async=True)
    assert isinstance(run, _ZMQRun)
    await run.__anext__()
    (directory,) = socket_dirs() - before
    assert os.stat(directory).st_mode & 0o777 == 0o700
    assert run._socket is not None
    assert endpoint_of(run).startswith(f"ipc://{directory}/")
    await run.aclose()
    assert not Path(directory).exists()  # noqa: ASYNC240 - a quick check


@pytest.mark.asyncio
async def test_tcp_binds_the_loopback_by_default(no_leftovers: None) -> None:
    run = ZMQStreamer(Streamer(counter, 3), transport="tcp", min_port=50000, max_port=60000)._start(
        prefer_async=True
    )
    assert isinstance(run, _ZMQRun)
    await run.__anext__()
    assert run._socket is not None
    endpoint = endpoint_of(run)
    assert endpoint.startswith("tcp://127.0.0.1:")
    assert 50000 <= int(endpoint.rsplit(":", 1)[1]) <= 60000
    await run.aclose()


@pytest.mark.asyncio
async def test_dropped_run_ends_its_worker(no_leftovers: None) -> None:
    run = ZMQStreamer(Streamer(forever))._start(prefer_async=True)
    assert isinstance(run, _ZMQRun)
    pid = (await run.__anext__())["pid"]
    del run
    await asyncio.sleep(0)  # lets the loop drop the exit watcher
    assert wait_until_gone(pid)


# -- flow control


def count_acknowledgements(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count the consumer's acknowledgements (one entry per call)."""
    calls: list[int] = []
    original = _RunBase._acknowledge

    def counted(run: _RunBase[Any]) -> None:
        calls.append(run._taken)
        original(run)

    monkeypatch.setattr(_RunBase, "_acknowledge", counted)
    return calls


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_waiting_consumer_acknowledges_every_other_message(
    mode: str, monkeypatch: pytest.MonkeyPatch, no_leftovers: None
) -> None:
    # Every sample its own message (batch_latency=0), each one waited for. The worker
    # always has two messages of credit, so an acknowledgement per message would only
    # wake its I/O thread for nothing.
    calls = count_acknowledgements(monkeypatch)
    z = ZMQStreamer(Streamer(paced, 20, 0.005), batch_latency=0)
    if mode == "sync":
        out = [s["i"] for s in z]
    else:

        async def consume() -> list[int]:
            return [s["i"] async for s in z]

        out = asyncio.run(consume())
    assert out == list(range(20))
    assert 1 <= len(calls) <= 10
    assert all(b - a >= 2 for a, b in itertools.pairwise([0, *calls]))


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_large_message_after_small_ones_gets_its_credit(mode: str, no_leftovers: None) -> None:
    # The worker has two small messages in flight and a third, larger than the rest
    # of prefetch_bytes, to send: it waits for credit, which the consumer must give
    # before it waits in turn.
    nbytes = 3 << 20
    z = ZMQStreamer(
        Streamer(small_then_large, nbytes),
        batch_latency=0,
        prefetch_bytes=1 << 20,
        shm_threshold=None,
    )
    if mode == "sync":
        out = list(z)
    else:

        async def consume() -> list[Sample]:
            return [s async for s in z]

        out = asyncio.run(consume())
    assert [s["i"] for s in out] == [0, 1, 2, 3]
    assert out[3]["x"].nbytes == nbytes


# -- composition and backends


def test_mux_runs_workers_at_the_same_time(
    make_flag: Callable[[str], Flag], no_leftovers: None
) -> None:
    a, b = make_flag("a").path, make_flag("b").path
    mux = am.RoundRobinMux(
        [ZMQStreamer(Streamer(rendezvous, a, b)), ZMQStreamer(Streamer(rendezvous, b, a))]
    )
    out = [(s["who"], s["i"]) for s in mux]
    assert out == [(a, 0), (b, 0), (a, 1), (b, 1), (a, 2), (b, 2)]


def test_which_muxes_run_their_zmq_members_without_a_loop() -> None:
    # The sync driver for forked workers; the async one (early starts) for spawned
    # workers, which take a good part of a second to start, and for chains.
    forked = [ZMQStreamer(Streamer(counter, 4), start_method="fork") for _ in range(2)]
    spawned = [ZMQStreamer(Streamer(counter, 4), start_method="spawn") for _ in range(2)]
    assert am.RoundRobinMux(forked)._runs_sync()
    assert am.RoundRobinMux([*forked, Streamer(counter, 2)])._runs_sync()
    assert not am.RoundRobinMux([*forked, spawned[0]])._runs_sync()
    assert not am.ShuffledMux(spawned)._runs_sync()
    assert not am.ChainMux(forked)._runs_sync()
    assert not am.RoundRobinMux([am.ChainMux(forked)])._runs_sync()


@pytest.mark.parametrize(
    "mux_class",
    [am.RoundRobinMux, am.ShuffledMux, am.StochasticMux],
    ids=["roundrobin", "shuffled", "stochastic"],
)  # not ChainMux: its async driver starts the next worker early, through the portal
def test_sync_mux_over_forked_zmq_streamers_receives_without_a_loop(
    mux_class: Callable[..., am.Streamer[Sample]], no_leftovers: None
) -> None:
    """A plain ``for`` draws from each worker's socket directly: no portal thread."""
    # Forked workers: spawned ones start slowly, and go through the portal's async driver.
    members = [ZMQStreamer(Streamer(counter, 4), start_method="fork") for _ in range(2)]
    kwargs: dict[str, Any] = {"mode": "exhaustive"} if mux_class is not am.ShuffledMux else {}
    if mux_class is am.StochasticMux:
        kwargs.update(n_active=2, rate=None)
    kwargs["random_state"] = 0
    mux = mux_class(members, **kwargs)
    threads = threading.active_count()
    with mux.iterate(max_iter=8) as stream:
        out = []
        for sample in stream:
            out.append(sample["i"])
            assert threading.active_count() == threads
    if mux_class is am.ShuffledMux:  # it restarts members that end
        assert len(out) == 8
        assert set(out) <= set(range(4))
    else:
        assert sorted(out) == sorted(list(range(4)) * 2)


def test_a_sync_mux_stops_a_worker_as_soon_as_its_activation_ends(
    make_flag: Callable[[str], Flag], no_leftovers: None
) -> None:
    # Member 0's activation ends after 3 samples and nothing takes its slot (each
    # member is activated once): its worker is stopped then, not when the mux ends.
    flag = make_flag("go")
    mux = am.StochasticMux(
        [
            ZMQStreamer(Streamer(forever), start_method="fork"),
            ZMQStreamer(Streamer(waits_for, flag.path), start_method="fork"),
        ],
        n_active=2,
        rate=3,
        dist="constant",
        mode="exhaustive",
        weights=[0.99, 0.01],
        random_state=0,
    )
    with mux.iterate() as stream:
        first_pids: list[int] = []
        for sample in stream:
            if "x" in sample:  # member 0
                first_pids.append(sample["pid"])
                if len(first_pids) == 3:
                    flag.raise_()  # member 1 may send its second sample now
            elif sample["i"] == 1:  # member 1's second: drawn after member 0 ended
                assert wait_until_gone(first_pids[0])
                break
    assert len(first_pids) == 3


@pytest.mark.parametrize("mux_class", [am.RoundRobinMux, am.StochasticMux], ids=["rr", "stoch"])
def test_a_sync_mux_asks_all_its_workers_to_stop_before_it_waits_for_one(
    mux_class: Callable[..., am.Streamer[Sample]],
    monkeypatch: pytest.MonkeyPatch,
    no_leftovers: None,
) -> None:
    # So each worker closes its source at the same time as the others.
    events: list[tuple[str, int]] = []
    stop_nowait, close = _ZMQSyncRun.stop_nowait, _ZMQSyncRun.close

    def recorded_stop(run: _ZMQSyncRun[Any]) -> None:
        events.append(("stop", id(run)))
        stop_nowait(run)

    def recorded_close(run: _ZMQSyncRun[Any]) -> None:
        events.append(("close", id(run)))
        close(run)

    monkeypatch.setattr(_ZMQSyncRun, "stop_nowait", recorded_stop)
    monkeypatch.setattr(_ZMQSyncRun, "close", recorded_close)
    members = [ZMQStreamer(Streamer(forever), start_method="fork") for _ in range(3)]
    kwargs: dict[str, Any] = {"mode": "cycle"} if mux_class is am.RoundRobinMux else {}
    if mux_class is am.StochasticMux:
        kwargs.update(n_active=3, rate=None, random_state=0)
    with mux_class(members, **kwargs).iterate(max_iter=9) as stream:
        assert len(list(stream)) == 9
    stopped = [run for kind, run in events if kind == "stop"]
    assert len(set(stopped)) == 3
    first_close = next(i for i, (kind, _) in enumerate(events) if kind == "close")
    assert {run for _, run in events[:first_close]} == set(stopped)


@pytest.mark.asyncio
async def test_async_mux_over_zmq_streamers(no_leftovers: None) -> None:
    mux = am.StochasticMux(
        [ZMQStreamer(Streamer(counter, 10)), ZMQStreamer(Streamer(counter, 10))],
        n_active=2,
        rate=None,
        mode="exhaustive",
        random_state=0,
    )
    out = [s["i"] async for s in mux]
    assert sorted(out) == sorted(list(range(10)) * 2)
    assert out == [s["i"] for s in mux]  # the same order, sync and async


def test_sync_for_inside_a_running_loop(no_leftovers: None) -> None:
    async def cell() -> list[int]:
        asyncio.get_running_loop()
        return [s["i"] for s in ZMQStreamer(Streamer(counter, 3))]

    assert asyncio.run(cell()) == [0, 1, 2]


def test_async_for_under_trio_points_to_plain_for() -> None:
    async def main() -> None:
        async for _ in ZMQStreamer(Streamer(counter, 3)):
            pass

    with pytest.raises(UnsupportedBackendError, match="plain 'for'"):
        anyio.run(main, backend="trio")


def test_sync_for_works_next_to_trio() -> None:
    async def main() -> list[int]:
        return [s["i"] for s in ZMQStreamer(Streamer(counter, 3))]

    assert anyio.run(main, backend="trio") == [0, 1, 2]


# -- configuration


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"min_port": 0}, "min_port=0"),
        ({"min_port": 6000, "max_port": 5000}, "max_port=5000"),
        ({"max_tries": 0}, "max_tries=0"),
        ({"timeout": -1}, "timeout=-1"),
        ({"timeout": "5"}, "timeout='5'"),
        ({"transport": "udp"}, "transport='udp'"),
        ({"host": ""}, "host=''"),
        ({"host": "not a host"}, "host='not a host' is not an address"),
        ({"start_method": "thread"}, "start_method='thread'"),
        ({"batch_bytes": -1}, "batch_bytes=-1"),
        ({"batch_latency": -0.1}, "batch_latency=-0.1"),
        ({"batch_latency": float("inf")}, "batch_latency=inf must be a finite number"),
        ({"timeout": float("inf")}, "timeout=inf must be a finite number >= 0 or None"),
        ({"copy": "yes"}, "copy='yes' must be True or False"),
        ({"prefetch_bytes": 0}, "prefetch_bytes=0 must be >= 1"),
        ({"shm_threshold": -1}, "shm_threshold=-1 must be >= 1"),
    ],
)
def test_bad_arguments(kwargs: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment.replace("(", r"\(")):
        ZMQStreamer(Streamer(counter, 1), **kwargs)


def test_non_source_is_rejected() -> None:
    with pytest.raises(ConfigError):
        ZMQStreamer(42)  # type: ignore[arg-type]


def test_pescador_attributes_and_pickling() -> None:
    import pickle

    z = ZMQStreamer(Streamer(counter, 2), copy=True, timeout=None)
    assert (z.min_port, z.max_port, z.max_tries, z.copy, z.timeout) == (
        49152,
        65535,
        100,
        True,
        None,
    )
    clone = pickle.loads(pickle.dumps(z))
    assert [s["i"] for s in clone] == [0, 1]
    assert "ZMQStreamer" in repr(z)


def test_docstring_example() -> None:
    import doctest

    from aiostream_mux import _zmq

    finder = doctest.DocTestFinder()
    (test,) = finder.find(ZMQStreamer, "ZMQStreamer", module=False)
    test.globs = {**vars(am), "ZMQStreamer": ZMQStreamer, "_zmq": _zmq}
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    runner.run(test)
    assert runner.summarize(verbose=False).failed == 0


def test_no_bind_on_all_interfaces_unless_named() -> None:
    # The default and the tcp default bind no wildcard; a named one is honoured.
    assert ZMQStreamer(Streamer(counter, 1)).transport == "ipc"
    assert ZMQStreamer(Streamer(counter, 1), transport="tcp").host == "127.0.0.1"
    named = ZMQStreamer(Streamer(counter, 3), transport="tcp", host="0.0.0.0")
    assert [s["i"] for s in named] == [0, 1, 2]


# -- the blocking receiver of plain 'for'


def test_sync_for_receives_without_a_bridge_thread(no_leftovers: None) -> None:
    import threading

    for s in ZMQStreamer(Streamer(counter, 3)):
        names = [t.name for t in threading.enumerate()]
        assert not any("portal" in name for name in names), names
        assert s["i"] in (0, 1, 2)


def test_sync_staged_close_kills_a_deaf_worker(
    make_flag: Callable[[str], Flag], no_leftovers: None
) -> None:
    marker = make_flag("sleeping")
    stream = ZMQStreamer(Streamer(stubborn, marker.path), timeout=0.2).iterate()
    with stream:
        pid = next(stream)["pid"]
        assert marker.wait()
    assert not alive(pid)


@pytest.mark.parametrize("kind", ["garbage", "lost-samples"])
def test_sync_malformed_message_is_rejected(
    kind: str, monkeypatch: pytest.MonkeyPatch, no_leftovers: None
) -> None:
    monkeypatch.setattr("aiostream_mux._zmq_worker.worker_main", rogue_worker)
    with pytest.raises(WorkerError, match="unexpected message on the ZMQStreamer socket"):
        list(ZMQStreamer(Streamer([kind]), timeout=2))


def test_a_finished_worker_waits_to_be_let_go(no_leftovers: None) -> None:
    # After its end message the worker waits for STOP: leaving on its own could
    # lose what is still on the way (a TCP reset, a stalled consumer).
    run = ZMQStreamer(Streamer(counter, 5))._start()
    assert isinstance(run, _ZMQSyncRun)
    got = [next(run) for _ in range(5)]
    assert run._socket is not None
    assert run._socket.poll(30_000)  # only the end message is left, and it is here
    assert alive(got[0]["pid"])
    with pytest.raises(StopIteration):
        next(run)
    assert [s["i"] for s in got] == list(range(5))
    assert wait_until_gone(got[0]["pid"])


@pytest.mark.parametrize("transport", ["ipc", "tcp"])
def test_every_sample_arrives_before_the_end(transport: Literal["ipc", "tcp"]) -> None:
    # 128 KiB arrays, many in flight: the end comes after all of them, over both.
    for _ in range(3):
        got = [s["i"] for s in ZMQStreamer(Streamer(counter, 600, 32 * 1024), transport=transport)]
        assert got == list(range(600))


def test_a_forked_child_leaves_its_parents_stream_alone(no_leftovers: None) -> None:
    # A child forked while a stream is open holds a copy of it; closing that copy
    # (at exit, say) must neither hang nor stop the parent's worker.
    with ZMQStreamer(Streamer(counter, 300)).iterate() as stream:
        first = [next(stream) for _ in range(100)]
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            try:
                stream.close()
            finally:
                os._exit(0)
        fd = os.pidfd_open(pid)
        try:
            done = bool(select.select([fd], [], [], 60)[0])
        finally:
            os.close(fd)
            if not done:
                os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        assert done, "the child hung closing its copy of the stream"
        rest = list(stream)
    assert [s["i"] for s in first + rest] == list(range(300))


def test_source_is_closed_before_the_end_arrives(tmp_path: Path, no_leftovers: None) -> None:
    marker = tmp_path / "finally-ran"
    assert [s["i"] for s in ZMQStreamer(Streamer(finite, 5, str(marker)))] == list(range(5))
    assert marker.exists()  # the end message says the source is closed: no race


def test_a_failing_close_is_noted_on_the_first_error(no_leftovers: None) -> None:
    with pytest.raises(DataError, match="'bad'") as info:
        list(ZMQStreamer(Streamer(bad_sample_then_bad_close)))
    remote = cast(str, info.value.remote_traceback)  # type: ignore[attr-defined]
    assert "Closing the source then raised RuntimeError: closing failed too" in remote


def test_worker_outlives_the_thread_that_started_it(tmp_path: Path, no_leftovers: None) -> None:
    # A forked worker asks the kernel for a signal when the thread that forked it
    # ends; the consumer process is still there, so the worker must go on.
    marker = tmp_path / "finally-ran"
    stream = ZMQStreamer(Streamer(forever, str(marker))).iterate()
    first: list[Sample] = []
    starter = threading.Thread(target=lambda: first.append(next(stream)))
    starter.start()
    starter.join()
    rest = [next(stream) for _ in range(2000)]
    assert [s["i"] for s in first + rest] == list(range(2001))
    assert alive(first[0]["pid"])
    stream.close()
    assert marker.exists()  # and it still stops politely


def silent() -> Iterator[Sample]:
    """Yields nothing: it hangs until its worker is ended (SIGTERM or SIGKILL)."""
    time.sleep(3600)
    yield {}


@pytest.mark.asyncio
@pytest.mark.parametrize("method", ["spawn", "forkserver"])
async def test_closing_before_the_worker_connects_is_prompt(
    method: Literal["spawn", "forkserver"], no_leftovers: None
) -> None:
    # STOP cannot go to a worker that has not connected: SIGTERM at once instead
    # of waiting ``timeout`` for an answer that cannot come.
    run = ZMQStreamer(Streamer(silent), start_method=method, timeout=30)._start(prefer_async=True)
    assert isinstance(run, _ZMQRun)
    task = asyncio.ensure_future(run.__anext__())
    await asyncio.sleep(0)  # the task runs up to its wait for the worker's start
    assert run._start_future is not None
    assert not run._start_future.done()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    start = time.perf_counter()
    await run.aclose()
    assert time.perf_counter() - start < 15  # not the 30 s timeout


@pytest.mark.asyncio
async def test_a_run_cancelled_while_starting_still_sees_its_worker_die(
    no_leftovers: None,
) -> None:
    run = ZMQStreamer(Streamer(silent), start_method="spawn", timeout=1)._start(prefer_async=True)
    assert isinstance(run, _ZMQRun)
    task = asyncio.ensure_future(run.__anext__())
    await asyncio.sleep(0)  # the task runs up to its wait for the worker's start
    assert run._start_future is not None
    task.cancel()  # a caller's timeout, say
    with pytest.raises(asyncio.CancelledError):
        await task
    await run._start_future  # the worker process is started all the same
    assert run.pid is not None
    os.kill(run.pid, signal.SIGKILL)
    try:
        with pytest.raises(WorkerError, match="killed by SIGKILL"):
            await asyncio.wait_for(run.__anext__(), 30)
    finally:
        await run.aclose()


def test_dropped_sync_run_ends_its_worker(no_leftovers: None) -> None:
    run = ZMQStreamer(Streamer(forever))._start()
    assert isinstance(run, _ZMQSyncRun)
    pid = next(run)["pid"]
    del run
    assert wait_until_gone(pid)


def test_copy_true_gives_arrays_of_their_own(no_leftovers: None) -> None:
    out = list(ZMQStreamer(Streamer(counter, 3, 100_000), copy=True))
    for s in out:
        assert s["x"].flags.owndata
        s["x"][0] = -1  # writeable, and independent of the others
    assert [float(s["x"][1]) for s in out] == [0.0, 1.0, 2.0]

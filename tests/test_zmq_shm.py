"""ZMQStreamer's shared memory and flow control: slots, the wire, the Sender, end to end."""

from __future__ import annotations

import errno
import gc
import mmap
import os
import struct
import threading
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import msgpack
import numpy as np
import pytest
import zmq

from aiostream_mux import DataError, Streamer, WorkerError
from aiostream_mux import _zmq_shm as zmq_shm
from aiostream_mux._zmq import ZMQStreamer
from aiostream_mux._zmq_run import _ZMQSyncRun
from aiostream_mux._zmq_shm import SHM_ROOT, SlotError, SlotReader, SlotWriter, slot_path
from aiostream_mux._zmq_wire import (
    ARRAY,
    SHARED,
    STOP,
    Decoder,
    Encoder,
    Malformed,
    encode_ack,
    parse_control,
)
from aiostream_mux._zmq_worker import MAX_IN_FLIGHT, Sender, Stopped

from .test_zmq import frame_of, no_leftovers  # noqa: F401 - a fixture, by name

Sample = dict[str, Any]
TOKEN = b"s" * 16
KIB, MIB = 1024, 1 << 20


def big_arrays(n: int, nbytes: int) -> Iterator[Sample]:
    """Module level, so it works under spawn: ``n`` arrays of ``nbytes``, array i full of i."""
    for i in range(n):
        yield {"x": np.full(nbytes // 8, i, dtype=np.float64), "i": i}


@pytest.fixture
def mapped_slots(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Every slot number the consumer maps, in order."""
    seen: list[int] = []
    original = SlotReader.map

    def recording(self: SlotReader, slot: Any, nbytes: int) -> mmap.mmap | bytearray:
        seen.append(slot)
        return original(self, slot, nbytes)

    monkeypatch.setattr(SlotReader, "map", recording)
    return seen


def shm_files(directory: str | Path) -> list[str]:
    return sorted(name for name in os.listdir(directory) if name.endswith(".shm"))


def as_bytes(nbytes: int, seed: int) -> np.ndarray[Any, Any]:
    return np.random.default_rng(seed).integers(0, 256, nbytes, dtype=np.uint8)


# -- SlotWriter and SlotReader, in one process


def test_slot_round_trip_is_copy_on_write(tmp_path: Path) -> None:
    writer, reader = SlotWriter(str(tmp_path), MIB), SlotReader(str(tmp_path))
    data = as_bytes(300 * KIB, 0)
    slot = writer.write(data)
    assert slot == 0
    assert writer.in_use == 1
    mapping = reader.map(slot, data.nbytes)
    assert isinstance(mapping, mmap.mmap)
    got = np.frombuffer(mapping, np.uint8)
    np.testing.assert_array_equal(got, data)
    got[:100] = 7  # writable, but private: the file keeps the worker's bytes
    assert Path(slot_path(str(tmp_path), 0)).read_bytes() == data.tobytes()


def test_slot_comes_back_once_its_array_is_gone_and_is_reused(tmp_path: Path) -> None:
    directory = str(tmp_path)
    writer, reader = SlotWriter(directory, MIB), SlotReader(directory)
    assert writer.write(as_bytes(100 * KIB, 0)) == 0
    got = np.frombuffer(reader.map(0, 100 * KIB), np.uint8)
    view = got[10:]
    del got
    assert reader.take()[0] == []  # a view still holds the mapping
    del view
    assert reader.take()[0] == [0]
    assert reader.take()[0] == []  # taken once
    writer.give_back([0])
    assert writer.in_use == 0
    again = as_bytes(100 * KIB, 1)
    assert writer.write(again) == 0  # the same slot, same size
    np.testing.assert_array_equal(np.frombuffer(reader.map(0, again.nbytes), np.uint8), again)
    # Two free slots of different sizes: a write takes the one of its own size...
    assert writer.write(as_bytes(200 * KIB, 2)) == 1
    writer.give_back([0, 1])
    assert writer.write(as_bytes(200 * KIB, 3)) == 1
    # ... else any free one, cut to size; a new slot only when none is free.
    small = as_bytes(50 * KIB, 4)
    assert writer.write(small) == 0
    assert os.path.getsize(slot_path(directory, 0)) == small.nbytes
    assert writer.write(small) == 2
    assert writer.in_use == 3
    np.testing.assert_array_equal(np.frombuffer(reader.map(0, small.nbytes), np.uint8), small)
    writer.give_back([2])
    for unknown in [2, 5]:  # given back twice, never written
        with pytest.raises(SlotError, match=f"slot {unknown} was given back, but it is not in use"):
            writer.give_back([unknown])


@pytest.mark.parametrize(("keep", "kept"), [(6, 6), (0, zmq_shm.KEEP_ALWAYS)])
def test_free_slots_beyond_keep_bytes_are_deleted(tmp_path: Path, keep: int, kept: int) -> None:
    size = 64 * KIB
    writer = SlotWriter(str(tmp_path), keep * size)
    slots = [writer.write(as_bytes(size, i)) for i in range(8)]
    assert slots == list(range(8))
    writer.give_back(range(8))
    assert writer.in_use == 0
    assert shm_files(tmp_path) == [f"{i}.shm" for i in range(kept)]


def test_reader_rejects_bad_slots(tmp_path: Path) -> None:
    directory = str(tmp_path)
    writer, reader = SlotWriter(directory, MIB), SlotReader(directory)
    n = 70 * KIB
    assert writer.write(as_bytes(n, 0)) == 0
    held = reader.map(0, n)
    for bad in ["0", 0.0, True, None, -1, 2**63]:
        with pytest.raises(SlotError, match="a shared-memory slot"):
            reader.map(bad, n)
    with pytest.raises(SlotError, match="reused while its array is alive"):
        reader.map(0, n)
    with pytest.raises(SlotError, match="cannot be opened"):
        reader.map(5, n)  # no such file
    assert writer.write(as_bytes(n, 1)) == 1
    with pytest.raises(SlotError, match=f"holds {n} bytes, not {n + 1}"):
        reader.map(1, n + 1)
    os.symlink(slot_path(directory, 1), slot_path(directory, 7))
    with pytest.raises(SlotError, match="cannot be opened"):
        reader.map(7, n)  # O_NOFOLLOW
    os.mkdir(slot_path(directory, 8))
    with pytest.raises(SlotError, match="slot 8"):
        reader.map(8, n)  # not a regular file
    assert list(reader.returned) == []
    del held
    assert reader.take()[0] == [0]


def test_a_mapping_alive_at_a_fork_is_never_given_back(tmp_path: Path) -> None:
    directory = str(tmp_path)
    writer, reader = SlotWriter(directory, MIB), SlotReader(directory)
    for i in range(2):
        writer.write(as_bytes(KIB * 80, i))
    before = reader.map(0, 80 * KIB)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child only leaves
        os._exit(0)
    assert os.waitpid(pid, 0)[1] == 0
    after = reader.map(1, 80 * KIB)
    del before, after
    # The child had slot 0: it is retired (the worker deletes it), never reused.
    assert reader.take() == ([1], [0])
    writer.give_back([1])
    writer.retire([0])
    assert not os.path.exists(slot_path(directory, 0))
    assert os.path.exists(slot_path(directory, 1))
    with pytest.raises(SlotError, match="retired, but it is not in use"):
        writer.retire([0])


def test_mappings_are_counted_out_after_their_reader_is_gone(tmp_path: Path) -> None:
    # A closed run drops its reader while the consumer still holds arrays: their
    # callbacks must still run, or the bound on live mappings would creep down.
    writer, reader = SlotWriter(str(tmp_path), MIB), SlotReader(str(tmp_path))
    live = len(zmq_shm._mappings)
    arrays = [np.frombuffer(reader.map(writer.write(as_bytes(KIB * 80, i)), 80 * KIB), np.uint8)
              for i in range(3)]  # fmt: skip
    assert len(zmq_shm._mappings) == live + 3
    del reader
    gc.collect()
    del arrays
    assert len(zmq_shm._mappings) == live


def test_a_fork_waits_for_a_mapping_being_recorded() -> None:
    # The fork hooks hold the lock a mapping is made and recorded under, and bump
    # the fork count: no fork falls between a mapping and its record.
    forks = zmq_shm._forks[0]
    zmq_shm._before_fork()
    try:
        outcome: list[bool] = []
        other = threading.Thread(target=lambda: outcome.append(zmq_shm._lock.acquire(False)))
        other.start()
        other.join()
        assert outcome == [False]
        assert zmq_shm._forks[0] == forks + 1
    finally:
        zmq_shm._after_fork()
    assert zmq_shm._lock.acquire(False)
    zmq_shm._lock.release()


@pytest.mark.usefixtures("no_leftovers")
def test_forks_retire_the_slots_they_share() -> None:
    # A consumer forking again and again (DataLoader workers, other ZMQ workers)
    # while it holds arrays: their slots are deleted, the directory does not grow.
    run = ZMQStreamer(Streamer(big_arrays, 1500, 256 * KIB))._start()
    assert isinstance(run, _ZMQSyncRun)
    most = 0
    for sample in run:
        if sample["i"] % 20 == 10:  # 75 forks, each sharing the few slots mapped then
            pid = os.fork()
            if pid == 0:  # pragma: no cover - the child only leaves
                os._exit(0)
            os.waitpid(pid, 0)
        if sample["i"] % 100 == 99:
            assert run._dir is not None
            most = max(most, len(os.listdir(run._dir)))
    # In flight at most 16 MiB / 256 KiB = 64 slots, a few free and held: were the
    # shared slots kept for ever, 75 forks would leave some 300 files.
    assert most < 150


def test_held_mappings_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    # Each live mapping holds a file descriptor before Python 3.13: past the bound,
    # arrays are copies, and every one is right.
    monkeypatch.setattr(zmq_shm, "MAX_MAPPED", 16)
    bound = zmq_shm._max_mapped()
    held = list(ZMQStreamer(Streamer(big_arrays, 60, 128 * KIB)))
    kinds = [type(frame_of(s["x"])) for s in held]
    if zmq_shm._MMAP_OPTIONS:  # Python 3.13+: mappings hold no descriptor, no bound
        assert kinds.count(mmap.mmap) == 60
    else:
        assert bound <= 16
        assert 0 < kinds.count(mmap.mmap) <= bound
        assert kinds.count(bytearray) >= 60 - bound  # beyond the bound: copies
    for s in held:
        assert (s["x"] == s["i"]).all()


def test_reader_copies_when_no_mapping_can_be_made(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*args: Any, **kwargs: Any) -> mmap.mmap:
        raise OSError(errno.ENOMEM, "vm.max_map_count")

    monkeypatch.setattr(zmq_shm, "mmap", SimpleNamespace(mmap=refuse, MAP_PRIVATE=0))
    writer, reader = SlotWriter(str(tmp_path), MIB), SlotReader(str(tmp_path))
    data = as_bytes(100 * KIB, 0)
    assert writer.write(data) == 0
    got = reader.map(0, data.nbytes)
    assert isinstance(got, bytearray)
    assert got == data.tobytes()
    assert reader.take()[0] == [0]  # at once, while the copy lives
    assert reader.map(0, data.nbytes) == got  # not held as mapped


# -- Encoder and Decoder with slots


def decode(frames: list[Any], slots: SlotReader | None) -> list[Sample]:
    """Decode a message as the consumer gets it from recv_multipart(copy=False)."""
    received = [zmq.Frame(bytes(memoryview(f).cast("B"))) for f in frames]
    decoder = Decoder(TOKEN, slots=slots)
    _, body = decoder.header(received)
    return decoder.data(body, received)


def field_codes(frames: list[Any]) -> dict[str, int]:
    _, _, _, body = msgpack.unpackb(frames[0], raw=False)
    return {field[0]: field[1] for sample in body for field in sample}


LAYOUTS: dict[str, np.ndarray[Any, Any]] = {
    "c": np.arange(64 * KIB, dtype=np.float32).reshape(256, -1),
    "fortran": np.asfortranarray(np.arange(64 * KIB, dtype=np.int32).reshape(256, -1)),
    "strided": np.arange(120_000, dtype=np.float64).reshape(300, 400)[::2, ::3],
}


@pytest.mark.parametrize("name", list(LAYOUTS))
def test_big_arrays_travel_in_slots(tmp_path: Path, name: str) -> None:
    writer, reader = SlotWriter(str(tmp_path), MIB), SlotReader(str(tmp_path))
    encoder = Encoder(TOKEN, slots=writer, shared_bytes=128 * KIB)
    value = LAYOUTS[name]
    edge = np.ones(128 * KIB, dtype=np.uint8)  # exactly shared_bytes
    mid = np.ones(100 * KIB, dtype=np.uint8)  # below: a frame of its own
    encoder.add({"x": value, "edge": edge, "mid": mid, "n": 3})
    frames = encoder.take()
    assert field_codes(frames) == {"x": SHARED, "edge": SHARED, "mid": ARRAY, "n": 0}
    assert writer.in_use == 2
    (got,) = decode(frames, reader)
    for key, sent in [("x", value), ("edge", edge), ("mid", mid)]:
        assert got[key].dtype == sent.dtype
        np.testing.assert_array_equal(got[key], sent)
    assert isinstance(frame_of(got["x"]), mmap.mmap)
    assert got["x"].flags.c_contiguous == (name != "fortran")
    assert got["x"].flags.f_contiguous == (name == "fortran")
    del got
    writer.give_back(reader.take()[0])
    assert writer.in_use == 0


def test_failed_sample_gives_its_slots_back(tmp_path: Path) -> None:
    writer, reader = SlotWriter(str(tmp_path), MIB), SlotReader(str(tmp_path))
    encoder = Encoder(TOKEN, slots=writer, shared_bytes=64 * KIB)
    big = as_bytes(64 * KIB, 0)
    with pytest.raises(DataError, match="'bad'"):
        encoder.add({"big": big, "bad": [1]})
    assert writer.in_use == 0
    encoder.add({"big": big})
    (got,) = decode(encoder.take(), reader)
    np.testing.assert_array_equal(got["big"], big)
    assert writer.in_use == 1
    assert shm_files(tmp_path) == ["0.shm"]  # the freed slot, reused


class FailsSecondWrite(SlotWriter):
    """Writes the first array, then meets a full /dev/shm."""

    writes = 0

    def write(self, raw: np.ndarray[Any, Any]) -> int | None:
        self.writes += 1
        return None if self.writes == 2 else super().write(raw)


def test_failed_sample_after_a_fallback_gives_its_slots_back(tmp_path: Path) -> None:
    """Fails: Encoder.add rolls slots back through ``self.slots``, which the fallback cleared."""
    writer = FailsSecondWrite(str(tmp_path), MIB)
    encoder = Encoder(TOKEN, slots=writer, shared_bytes=64 * KIB)
    big = as_bytes(64 * KIB, 0)
    with pytest.raises(DataError):
        encoder.add({"a": big, "b": big, "bad": [1]})
    assert encoder.slots is None  # fell back for "b"
    assert writer.in_use == 0  # "a"'s slot was written for a sample that is not sent


def test_write_failure_falls_back_to_frames(tmp_path: Path) -> None:
    gone = tmp_path / "gone"
    writer = SlotWriter(str(gone), MIB)
    encoder = Encoder(TOKEN, slots=writer, shared_bytes=64 * KIB)
    big = as_bytes(256 * KIB, 0)
    encoder.add({"x": big})
    assert encoder.slots is None
    assert writer.in_use == 0
    gone.mkdir()  # the socket from now on, even once the directory is back
    encoder.add({"y": big})
    frames = encoder.take()
    assert field_codes(frames) == {"x": ARRAY, "y": ARRAY}
    assert all(np.shares_memory(f, big) for f in frames[1:])
    got = decode(frames, None)
    np.testing.assert_array_equal(got[1]["y"], big)
    assert shm_files(gone) == []


def test_decoder_refuses_slots_it_cannot_take(tmp_path: Path) -> None:
    encoder = Encoder(TOKEN, slots=SlotWriter(str(tmp_path), MIB), shared_bytes=64 * KIB)
    encoder.add({"x": as_bytes(64 * KIB, 0)})
    frames = encoder.take()
    with pytest.raises(Malformed, match="offered no shared memory"):
        decode(frames, None)
    (tmp_path / "other").mkdir()
    with pytest.raises(Malformed, match="slot 0 cannot be opened"):
        decode(frames, SlotReader(str(tmp_path / "other")))


# -- control messages and the Sender's flow control


def test_control_messages_round_trip_and_junk_is_malformed() -> None:
    assert parse_control(STOP) is None
    assert parse_control(encode_ack(0)) == (0, (), ())
    assert parse_control(encode_ack(7, [3, 2**64 - 1])) == (7, (3, 2**64 - 1), ())
    assert parse_control(encode_ack(9, [1], [4, 5])) == (9, (1,), (4, 5))
    too_many = b"ack:" + struct.pack("<QQ", 1, 2) + struct.pack("<Q", 3)  # 2 returned, 1 slot
    junk_messages = [b"", b"ack:", b"ack:" + bytes(7), b"ack:" + bytes(12), b"ack:" + bytes(8)]
    for junk in [*junk_messages, b"ACK:" + bytes(16), b"x", too_many]:
        with pytest.raises(Malformed, match="unknown message from the consumer"):
            parse_control(junk)


@pytest.fixture
def pair() -> Iterator[tuple[zmq.Socket[Any], zmq.Socket[Any]]]:
    """A connected (worker, consumer) pair of PAIR sockets over inproc."""
    context: zmq.Context[Any] = zmq.Context()
    consumer, worker = context.socket(zmq.PAIR), context.socket(zmq.PAIR)
    consumer.bind("inproc://flow")
    worker.connect("inproc://flow")
    yield worker, consumer
    worker.close(linger=0)
    consumer.close(linger=0)
    context.term()


class Probe(Sender):
    """A Sender that says when the flow control makes it wait."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.waiting = threading.Event()

    def wait_for_control(self) -> None:
        self.waiting.set()
        super().wait_for_control()


def receive(socket: zmq.Socket[Any], count: int) -> list[list[zmq.Frame]]:
    """Receive ``count`` messages, then check nothing more is queued."""
    messages = []
    for _ in range(count):
        assert socket.poll(10_000)
        messages.append(socket.recv_multipart(copy=False))
    assert not socket.poll(0)
    return messages


@pytest.mark.parametrize(
    ("prefetch", "nbytes", "first"),
    [(3 * MIB, MIB, 3), (1, MIB, 2), (1 << 40, 16, MAX_IN_FLIGHT)],
    ids=["prefetch-bytes", "min-in-flight", "max-in-flight"],
)
def test_sender_waits_for_acknowledgements(
    pair: tuple[zmq.Socket[Any], zmq.Socket[Any]], prefetch: int, nbytes: int, first: int
) -> None:
    worker, consumer = pair
    sender = Probe(
        worker, TOKEN, copy=False, batch_bytes=1, batch_latency=60, prefetch_bytes=prefetch
    )
    samples = [{"x": np.full(nbytes, i % 256, dtype=np.uint8)} for i in range(first + 3)]
    outcome: list[BaseException] = []

    def run() -> None:
        try:
            for sample in samples:
                sender.add(sample)
            sender.flush()
        except BaseException as exc:  # Stopped included
            outcome.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    try:
        assert sender.waiting.wait(10)
        messages = receive(consumer, first)
        assert sender.sent == first
        sender.waiting.clear()
        consumer.send(encode_ack(1))  # room for one more message
        assert sender.waiting.wait(10)
        messages += receive(consumer, 1)
        assert sender.sent == first + 1
        consumer.send(encode_ack(first + 1))  # room for the rest
        thread.join(10)
        assert not thread.is_alive()
        messages += receive(consumer, 2)
    finally:
        consumer.send(STOP)  # a thread still waiting leaves on it
        thread.join(10)
    assert outcome == []
    got = [sample for message in messages for sample in decode(message, None)]
    assert [int(s["x"][0]) for s in got] == [i % 256 for i in range(first + 3)]


def test_acknowledgements_give_slots_back_and_bogus_ones_are_refused(
    pair: tuple[zmq.Socket[Any], zmq.Socket[Any]], tmp_path: Path
) -> None:
    worker, consumer = pair
    directory = str(tmp_path)
    options: dict[str, Any] = {"copy": False, "batch_bytes": 1, "batch_latency": 60.0}
    sender = Sender(worker, TOKEN, **options, shared_dir=directory, shm_threshold=64 * KIB)
    assert sender.slots is not None
    for i in range(3):
        sender.add({"x": np.full(256 * KIB, i, dtype=np.uint8)})
    assert sender.slots.in_use == 3
    reader = SlotReader(directory)
    got = [s for message in receive(consumer, 3) for s in decode(message, reader)]
    assert [int(s["x"][-1]) for s in got] == [0, 1, 2]
    del got

    def control(message: bytes) -> None:
        consumer.send(message)
        assert worker.poll(10_000)
        sender.check_control()

    control(encode_ack(3, reader.take()[0]))
    assert sender.slots.in_use == 0
    assert sender._in_flight_bytes == 0
    with pytest.raises(WorkerError, match="acknowledged 4 messages, but 3 were sent"):
        control(encode_ack(4))
    with pytest.raises(WorkerError, match="acknowledged 2 messages"):
        control(encode_ack(2))
    with pytest.raises(WorkerError, match="slot 0 was given back, but it is not in use"):
        control(encode_ack(3, [0]))
    plain = Sender(worker, TOKEN, **options)
    consumer.send(encode_ack(0, [5]))
    assert worker.poll(10_000)
    with pytest.raises(WorkerError, match="never given"):
        plain.check_control()
    with pytest.raises(Stopped):
        control(STOP)


def test_the_stop_pipe_ends_a_wait_without_a_message(
    pair: tuple[zmq.Socket[Any], zmq.Socket[Any]],
) -> None:
    worker, consumer = pair
    read, write = os.pipe()
    try:
        sender = Sender(worker, TOKEN, copy=False, batch_bytes=1, batch_latency=1.0, stop_fd=read)
        consumer.send(encode_ack(0))  # something else to wake for: no STOP on the socket
        os.write(write, b"!")  # what a closing consumer writes
        with pytest.raises(Stopped):
            sender.wait_for_control()
    finally:
        os.close(read)
        os.close(write)


# -- end to end


@pytest.mark.usefixtures("no_leftovers")
def test_many_large_arrays_recycle_a_few_slots(mapped_slots: list[int]) -> None:
    n = 200
    run = ZMQStreamer(Streamer(big_arrays, n, 256 * KIB))._start()
    assert isinstance(run, _ZMQSyncRun)
    most, directory = 0, None
    for i in range(n):
        sample = next(run)
        if directory is None:
            directory = run._dir
            assert directory is not None
            assert directory.startswith(SHM_ROOT + os.sep)
        assert sample["i"] == i
        assert isinstance(frame_of(sample["x"]), mmap.mmap)
        assert (sample["x"] == i).all()
        del sample
        most = max(most, len(shm_files(directory)))
    with pytest.raises(StopIteration):
        next(run)
    assert directory is not None
    assert not os.path.exists(directory)
    assert len(mapped_slots) == n
    # 16 MiB in flight is 64 arrays of 256 KiB: the worker writes into those again.
    assert len(set(mapped_slots)) <= 100
    assert most <= 100


@pytest.mark.usefixtures("no_leftovers")
def test_held_arrays_are_never_overwritten(mapped_slots: list[int]) -> None:
    held: list[Sample] = []
    streamer = ZMQStreamer(Streamer(big_arrays, 200, 256 * KIB), prefetch_bytes=2 * MIB)
    for sample in streamer:
        if sample["i"] % 4 == 0:
            held.append(sample)
    assert [s["i"] for s in held] == list(range(0, 200, 4))
    for sample in held:
        assert (sample["x"] == sample["i"]).all()
    assert len(set(mapped_slots)) < 150  # the 150 arrays dropped shared slots


@pytest.mark.usefixtures("no_leftovers")
def test_no_threshold_sends_frames(mapped_slots: list[int]) -> None:
    out = list(ZMQStreamer(Streamer(big_arrays, 5, 256 * KIB), shm_threshold=None))
    assert [s["i"] for s in out] == list(range(5))
    assert all(isinstance(frame_of(s["x"]), zmq.Frame) for s in out)
    assert mapped_slots == []


@pytest.mark.usefixtures("no_leftovers")
def test_close_removes_the_directory_but_held_arrays_live_on() -> None:
    run = ZMQStreamer(Streamer(big_arrays, 100, 256 * KIB))._start()
    assert isinstance(run, _ZMQSyncRun)
    held = [next(run) for _ in range(5)]
    directory = run._dir
    assert directory is not None
    assert shm_files(directory)
    run.close()
    assert not os.path.exists(directory)
    assert [bool((s["x"] == s["i"]).all()) for s in held] == [True] * 5


@pytest.mark.asyncio
@pytest.mark.usefixtures("no_leftovers")
async def test_async_for_with_large_arrays(mapped_slots: list[int]) -> None:
    count = 0
    streamer = ZMQStreamer(Streamer(big_arrays, 100, 256 * KIB), prefetch_bytes=2 * MIB)
    async for sample in streamer:
        assert sample["i"] == count
        assert isinstance(frame_of(sample["x"]), mmap.mmap)
        assert (sample["x"] == count).all()
        count += 1
    assert count == 100
    assert len(mapped_slots) == 100
    assert len(set(mapped_slots)) < 60  # slots came back and were written again

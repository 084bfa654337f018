"""The ZMQStreamer wire format, without processes: round trips, bad samples, bad messages."""

from __future__ import annotations

from typing import Any

import msgpack
import numpy as np
import pytest
import zmq

from aiostream_mux._exceptions import DataError, WorkerError
from aiostream_mux._zmq_wire import (
    ARRAY,
    DATA,
    END,
    ERROR,
    SCALAR,
    VALUE,
    VERSION,
    Decoder,
    Encoder,
    Malformed,
    RemoteTraceback,
    encode_end,
    encode_error,
    rebuild_exception,
)

TOKEN = b"t" * 16


def as_frames(frames: list[Any]) -> list[zmq.Frame]:
    """What the consumer gets from recv_multipart(copy=False)."""
    return [zmq.Frame(bytes(memoryview(f).cast("B"))) for f in frames]


def round_trip(samples: list[Any], *, copy: bool = False, small: int = 64 * 1024) -> list[Any]:
    encoder = Encoder(TOKEN, small_array=small)
    for sample in samples:
        encoder.add(sample)
    frames = as_frames(encoder.take())
    decoder = Decoder(TOKEN, copy=copy)
    kind, body = decoder.header(frames)
    assert kind == DATA
    return decoder.data(body, frames)


ARRAYS: dict[str, np.ndarray[Any, Any]] = {
    "f32-2d": np.arange(12, dtype=np.float32).reshape(3, 4),
    "fortran": np.asfortranarray(np.arange(24, dtype=np.int16).reshape(2, 3, 4)),
    "strided": np.arange(100, dtype=np.float64)[::7],
    "transposed-view": np.arange(30).reshape(5, 6)[1:4, ::2].T,
    "big-endian": np.arange(5, dtype=">i4"),
    "bool": np.array([True, False, True]),
    "complex": np.array([1 + 2j, 3 - 4j], dtype=np.complex64),
    "uint64": np.array([2**64 - 1], dtype=np.uint64),
    "0-d": np.array(3.5),
    "empty": np.zeros((0, 3), dtype=np.float32),
    "unicode": np.array(["a", "bcd", "ef"]),
    "bytes": np.array([b"xy", b"z"]),
    "datetime": np.array(["2024-01-02", "2025-03-04"], dtype="datetime64[D]"),
    "timedelta": np.array([1, 2], dtype="timedelta64[ms]"),
    "float16": np.linspace(0, 1, 9, dtype=np.float16).reshape(3, 3),
}


@pytest.mark.parametrize("small", [0, 1 << 20], ids=["own-frames", "shared-frame"])
@pytest.mark.parametrize("name", list(ARRAYS))
def test_arrays_arrive_equal(name: str, small: int) -> None:
    array = ARRAYS[name]
    (sample,) = round_trip([{"x": array}], small=small)
    got = sample["x"]
    assert got.dtype == array.dtype
    assert got.shape == array.shape
    np.testing.assert_array_equal(got, array)
    if array.flags.f_contiguous and not array.flags.c_contiguous:
        assert got.flags.f_contiguous
    assert not got.flags.owndata  # a view of the received frame


def test_copy_gives_writeable_arrays() -> None:
    (sample,) = round_trip([{"x": np.arange(4)}], copy=True)
    sample["x"][0] = 7
    assert sample["x"].flags.owndata


def test_scalars_strings_and_plain_values() -> None:
    sample = {
        "f": np.float32(1.5),
        "i": np.int64(-3),
        "b": np.bool_(True),
        "dt": np.datetime64("2024-05-06"),
        "py_int": 2**63,
        "py_neg": -(2**63),
        "py_float": 0.25,
        "py_bool": False,
        "none": None,
        "text": "héllo",
        "raw": b"\x00\x01",
        7: np.zeros(2),
        b"k": "bytes key",
    }
    (got,) = round_trip([sample])
    assert got.keys() == sample.keys()
    for key, value in sample.items():
        if isinstance(value, np.ndarray):
            np.testing.assert_array_equal(got[key], value)
        else:
            assert got[key] == value
            assert type(got[key]) is type(value)


def test_many_small_samples_share_one_message() -> None:
    samples = [{"x": np.full(10, i, dtype=np.int32), "i": i} for i in range(500)]
    encoder = Encoder(TOKEN)
    for sample in samples:
        encoder.add(sample)
    frames = encoder.take()
    assert len(frames) == 2  # the header and one shared frame
    decoded = round_trip(samples)
    assert [s["i"] for s in decoded] == list(range(500))
    for i, s in enumerate(decoded):
        np.testing.assert_array_equal(s["x"], np.full(10, i, dtype=np.int32))


def test_large_arrays_travel_in_their_own_frame_without_a_copy() -> None:
    big = np.ones(1 << 16, dtype=np.float32)  # 256 KiB
    encoder = Encoder(TOKEN)
    encoder.add({"big": big, "small": np.zeros(3)})
    frames = encoder.take()
    own = [f for f in frames[1:] if isinstance(f, np.ndarray)]
    assert len(own) == 1
    assert np.shares_memory(own[0], big)


@pytest.mark.parametrize(
    ("sample", "fragments"),
    [
        ({"x": np.array([object()], dtype=object)}, ["'x'", "dtype object"]),
        ({"rec": np.zeros(2, dtype=[("a", "i4")])}, ["'rec'", "dtype"]),
        ({"lst": [1, 2]}, ["'lst'", "builtins.list"]),
        ({"d": {"nested": 1}}, ["'d'", "builtins.dict"]),
        ({"huge": 2**70}, ["'huge'", "64 bits"]),
        ({(1, 2): np.zeros(1)}, ["(1, 2)", "tuple"]),
        ([np.zeros(1)], ["dicts of arrays", "builtins.list"]),
    ],
    ids=["object-array", "structured", "list", "dict", "big-int", "tuple-key", "not-a-dict"],
)
def test_unsupported_values_raise_data_error(sample: Any, fragments: list[str]) -> None:
    encoder = Encoder(TOKEN)
    encoder.add({"ok": np.arange(3)})
    with pytest.raises(DataError) as info:
        encoder.add(sample)
    for fragment in fragments:
        assert fragment in str(info.value)
    # The pending message is untouched by the failed sample.
    (got,) = round_trip_frames(encoder.take())
    np.testing.assert_array_equal(got["ok"], np.arange(3))


def test_failed_sample_after_a_new_shared_frame_leaves_no_trace() -> None:
    encoder = Encoder(TOKEN)
    encoder.add({"big": np.zeros(1 << 15)})  # 256 KiB, its own frame
    with pytest.raises(DataError):
        encoder.add({"a": np.zeros(2), "b": [1]})  # opens the shared frame, then fails
    encoder.add({"c": np.ones(2)})
    got = round_trip_frames(encoder.take())
    assert [list(s) for s in got] == [["big"], ["c"]]
    np.testing.assert_array_equal(got[1]["c"], np.ones(2))


def round_trip_frames(frames: list[Any]) -> list[Any]:
    received = as_frames(frames)
    decoder = Decoder(TOKEN)
    _, body = decoder.header(received)
    return decoder.data(body, received)


def test_end_and_error_messages() -> None:
    decoder = Decoder(TOKEN)
    kind, body = decoder.header(as_frames(encode_end(TOKEN, 12)))
    assert kind == END
    assert decoder.end(body) == 12
    try:
        raise KeyError("missing")
    except KeyError as exc:
        frames = encode_error(TOKEN, exc)
    kind, body = decoder.header(as_frames(frames))
    assert kind == ERROR
    error = decoder.error(body)
    assert type(error) is KeyError
    assert error.args == ("missing",)
    assert isinstance(error.__cause__, RemoteTraceback)
    assert "test_end_and_error_messages" in str(error.__cause__)


class CustomError(Exception):
    pass


def test_exceptions_are_rebuilt_only_for_safe_types() -> None:
    err = rebuild_exception("builtins", "ValueError", "bad", ["bad"], "tb")
    assert type(err) is ValueError
    err = rebuild_exception("aiostream_mux._exceptions", "DataError", "no", None, "tb")
    assert type(err) is DataError
    assert str(err) == "no"
    # Not builtin: named in a WorkerError, never imported or unpickled.
    err = rebuild_exception(__name__, "CustomError", "boom", ["boom"], "tb")
    assert type(err) is WorkerError
    assert f"{__name__}.CustomError: boom" in str(err)
    # Builtin names that are not exception types, or must not be raised from __anext__.
    for name in ("open", "StopAsyncIteration", "StopIteration", "KeyboardInterrupt", "os.system"):
        assert type(rebuild_exception("builtins", name, "x", None, "tb")) is WorkerError
    # Arguments the type refuses.
    err = rebuild_exception("builtins", "UnicodeDecodeError", "x", ["only one"], "tb")
    assert type(err) is WorkerError
    assert err.remote_traceback == "tb"  # type: ignore[attr-defined]


def header(*fields: Any) -> bytes:
    return msgpack.packb(list(fields), use_bin_type=True)  # type: ignore[no-any-return]


GOOD_ARRAY = ["x", ARRAY, "<f4", [2], False, 1, 0, 8]
PAYLOAD = b"\x00" * 8

MALFORMED: dict[str, list[bytes]] = {
    "not-msgpack": [b"\xc1garbage"],
    "not-a-list": [header()[:0] + msgpack.packb({"v": 1})],
    "short-list": [header(VERSION, DATA, TOKEN)],
    "old-version": [header(0, DATA, TOKEN, [[GOOD_ARRAY]]), PAYLOAD],
    "future-version": [header(VERSION + 1, END, TOKEN, 0)],
    "bool-version": [header(True, END, TOKEN, 0)],
    "wrong-token": [header(VERSION, END, b"x" * 16, 0)],
    "unknown-kind": [header(VERSION, 9, TOKEN, 0)],
    "end-with-frames": [header(VERSION, END, TOKEN, 0), PAYLOAD],
    "empty-body": [header(VERSION, DATA, TOKEN, [])],
    "sample-not-list": [header(VERSION, DATA, TOKEN, [5])],
    "field-short": [header(VERSION, DATA, TOKEN, [[["x"]]])],
    "bad-code": [header(VERSION, DATA, TOKEN, [[["x", 9, 1]]])],
    "repeated-key": [header(VERSION, DATA, TOKEN, [[["x", VALUE, 1], ["x", VALUE, 2]]])],
    "float-key": [header(VERSION, DATA, TOKEN, [[[1.5, VALUE, 1]]])],
    "object-dtype": [header(VERSION, DATA, TOKEN, [[["x", ARRAY, "|O", [1], False, 1, 0, 8]]])],
    "unknown-dtype": [header(VERSION, DATA, TOKEN, [[["x", ARRAY, "<q9", [1], False, 1, 0, 8]]])],
    "negative-dim": [header(VERSION, DATA, TOKEN, [[["x", ARRAY, "<f4", [-2], False, 1, 0, 8]]])],
    "huge-empty-dim": [
        header(VERSION, DATA, TOKEN, [[["x", ARRAY, "<f8", [0, 2**63], False, 1, 0, 0]]]),
        PAYLOAD,
    ],
    "huge-empty-dims": [
        header(VERSION, DATA, TOKEN, [[["x", ARRAY, "<f8", [0, 2**62, 2**62], False, 1, 0, 0]]]),
        PAYLOAD,
    ],
    "wrong-nbytes": [header(VERSION, DATA, TOKEN, [[["x", ARRAY, "<f4", [3], False, 1, 0, 8]]])],
    "missing-frame": [header(VERSION, DATA, TOKEN, [[GOOD_ARRAY]])],
    "frame-zero": [header(VERSION, DATA, TOKEN, [[["x", ARRAY, "<f4", [2], False, 0, 0, 8]]])],
    "past-the-frame": [
        header(VERSION, DATA, TOKEN, [[["x", ARRAY, "<f4", [2], False, 1, 4, 8]]]),
        PAYLOAD,
    ],
    "order-not-bool": [header(VERSION, DATA, TOKEN, [[["x", ARRAY, "<f4", [2], "F", 1, 0, 8]]])],
    "scalar-out-of-frame": [header(VERSION, DATA, TOKEN, [[["x", SCALAR, "<f8", 1, 0, 8]]])],
    "value-is-list": [header(VERSION, DATA, TOKEN, [[["x", VALUE, [1, 2]]]])],
    "end-count-negative": [header(VERSION, END, TOKEN, -1)],
    "error-short": [header(VERSION, ERROR, TOKEN, ["builtins", "ValueError"])],
    "error-not-text": [header(VERSION, ERROR, TOKEN, ["builtins", 1, "m", None, "tb"])],
    "error-bad-args": [header(VERSION, ERROR, TOKEN, ["builtins", "E", "m", [[1]], "tb"])],
    "empty": [],
}


@pytest.mark.parametrize("name", list(MALFORMED))
def test_malformed_messages_are_rejected(name: str) -> None:
    decoder = Decoder(TOKEN)
    frames = [zmq.Frame(f) for f in MALFORMED[name]]
    with pytest.raises(Malformed):
        kind, body = decoder.header(frames)
        if kind == DATA:
            decoder.data(body, frames)
        elif kind == END:
            decoder.end(body)
        else:
            decoder.error(body)


def test_good_message_of_the_malformed_table_passes() -> None:
    decoder = Decoder(TOKEN)
    frames = [zmq.Frame(header(VERSION, DATA, TOKEN, [[GOOD_ARRAY]])), zmq.Frame(PAYLOAD)]
    _, body = decoder.header(frames)
    (sample,) = decoder.data(body, frames)
    np.testing.assert_array_equal(sample["x"], np.zeros(2, dtype=np.float32))

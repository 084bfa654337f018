"""The public namespace: sorted ``__all__``, importable names, tidy ``__module__``."""

from __future__ import annotations

import aiostream_mux


def test_all_is_sorted_and_importable() -> None:
    names = aiostream_mux.__all__
    assert list(names) == sorted(names)
    assert len(set(names)) == len(names)
    for name in names:
        assert hasattr(aiostream_mux, name), name


def test_public_objects_live_in_the_top_module() -> None:
    for name in aiostream_mux.__all__:
        obj = getattr(aiostream_mux, name)
        if isinstance(obj, type) or callable(obj):
            assert obj.__module__ == "aiostream_mux", name


def test_pescador_names_are_available() -> None:
    for name in ("Streamer", "PescadorError", "DataError", "streamable"):
        assert name in aiostream_mux.__all__
    assert issubclass(aiostream_mux.DataError, aiostream_mux.PescadorError)
    assert issubclass(aiostream_mux.ConfigError, ValueError)


def test_version_is_defined_once() -> None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        installed = version("aiostream-mux")
    except PackageNotFoundError:  # running from a source tree that is not installed
        return
    assert installed == aiostream_mux.__version__

"""The whole exception tree of aiostream_mux."""

from __future__ import annotations

__all__ = [
    "AiostreamMuxError",
    "ConfigError",
    "DataError",
    "MissingKeyError",
    "PescadorError",
    "UnsupportedBackendError",
    "WorkerError",
]


class AiostreamMuxError(Exception):
    """Root of every error raised by aiostream_mux itself.

    ``PescadorError`` is the same class, so ``except pescador.PescadorError``
    keeps working after ``import aiostream_mux as pescador``.
    """


PescadorError = AiostreamMuxError


class ConfigError(AiostreamMuxError, ValueError):
    """An argument is invalid; raised eagerly, at construction or call."""


class DataError(AiostreamMuxError, TypeError):
    """An item is not data-like (for example not a mapping of arrays)."""


class MissingKeyError(DataError, KeyError):
    """An item lacks a key a map needs; also a ``KeyError``, as in pescador."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class WorkerError(AiostreamMuxError, RuntimeError):
    """A worker process died, hung, or sent something unexpected."""


class UnsupportedBackendError(AiostreamMuxError, RuntimeError):
    """The running async backend cannot do what was asked (for example ZMQ on trio)."""

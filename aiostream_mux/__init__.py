"""aiostream_mux: asyncio-native stream multiplexing, the async successor of pescador.

``import aiostream_mux as pescador`` keeps pescador code working, while every
Streamer and Stream also works with ``async for``.
"""

import contextlib

from ._exceptions import AiostreamMuxError as AiostreamMuxError
from ._exceptions import ConfigError as ConfigError
from ._exceptions import DataError as DataError
from ._exceptions import MissingKeyError as MissingKeyError
from ._exceptions import PescadorError as PescadorError
from ._exceptions import UnsupportedBackendError as UnsupportedBackendError
from ._exceptions import WorkerError as WorkerError
from ._mux._base import BaseMux as BaseMux
from ._mux._chain import ChainMux as ChainMux
from ._mux._roundrobin import RoundRobinMux as RoundRobinMux
from ._mux._shuffled import ShuffledMux as ShuffledMux
from ._mux._stats import MemberStatistics as MemberStatistics
from ._mux._stats import MuxStatistics as MuxStatistics
from ._mux._stochastic import StochasticMux as StochasticMux
from ._progress import progress as progress
from ._streamer import Opening as Opening
from ._streamer import Stream as Stream
from ._streamer import Streamer as Streamer
from ._streamer import streamable as streamable
from ._version import __version__ as __version__
from ._zmq import ZMQStreamer as ZMQStreamer
from .maps import buffer_stream as buffer_stream
from .maps import cache as cache
from .maps import keras_tuples as keras_tuples
from .maps import map_concurrent as map_concurrent
from .maps import tuples as tuples

__all__ = [
    "AiostreamMuxError",
    "BaseMux",
    "ChainMux",
    "ConfigError",
    "DataError",
    "MemberStatistics",
    "MissingKeyError",
    "MuxStatistics",
    "Opening",
    "PescadorError",
    "RoundRobinMux",
    "ShuffledMux",
    "StochasticMux",
    "Stream",
    "Streamer",
    "UnsupportedBackendError",
    "WorkerError",
    "ZMQStreamer",
    "__version__",
    "buffer_stream",
    "cache",
    "keras_tuples",
    "map_concurrent",
    "progress",
    "streamable",
    "tuples",
]

for _name in __all__:
    _obj = globals()[_name]
    if isinstance(_obj, type) or callable(_obj):
        with contextlib.suppress(AttributeError, TypeError):  # builtins refuse
            _obj.__module__ = __name__
del _name, _obj, contextlib

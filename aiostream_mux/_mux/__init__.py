"""Muxes: each module holds a pure, sans-I/O *policy* and (later) a thin mux class.

The policies decide which active stream the next sample comes from, when streams are
activated, retired or revived, and how ``random_state`` is consumed. They never touch
a stream themselves: a sync or async driver runs them (see
:class:`~aiostream_mux._mux._policy.MuxPolicy`).
"""

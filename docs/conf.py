"""Sphinx configuration for aiostream_mux."""

from __future__ import annotations

import aiostream_mux

project = "aiostream_mux"
author = "aiostream_mux developers"
release = aiostream_mux.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.doctest",
    "sphinx.ext.intersphinx",
    "numpydoc",
    "myst_parser",
]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build"]
autosummary_generate = True
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
autodoc_typehints = "none"
intersphinx_mapping = {
    "python": ("https://docs.python.org/3", None),
    "numpy": ("https://numpy.org/doc/stable", None),
    "anyio": ("https://anyio.readthedocs.io/en/stable", None),
    "zmq": ("https://pyzmq.readthedocs.io/en/latest", None),
}
html_theme = "alabaster"

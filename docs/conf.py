"""Sphinx configuration for aiostream_mux.

Build (from the repository root)::

    sphinx-build -n -W --keep-going -b html docs docs/_build/html
    sphinx-build -n -W --keep-going -b doctest docs docs/_build/doctest

The build needs no network: the intersphinx inventories are compiled from the
short lists in ``_inv/`` (set ``AIOSTREAM_MUX_DOCS_ONLINE=1`` to fetch the real
ones instead). ``_ext/aiostream_mux_docs.py`` draws the figures into
``_generated/`` at every build, from real muxes and ``bench_results.json``.
"""

from __future__ import annotations

import doctest
import importlib.util
import os
import sys
import zlib
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
# Document the checkout being built (it shadows an installed copy of the package).
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(DOCS / "_ext"))

import aiostream_mux  # noqa: E402

project = "aiostream_mux"
author = "aiostream_mux developers"
copyright = "aiostream_mux developers"
release = aiostream_mux.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.doctest",
    "sphinx.ext.intersphinx",
    "numpydoc",
    "myst_parser",
    "aiostream_mux_docs",  # _ext/: the mux pictures and the benchmark plot
]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build", "_generated", "_inv", "_templates", "README.md"]
templates_path = ["_templates"]
root_doc = "index"

# -- API reference
autosummary_generate = True
autosummary_ignore_module_all = False
autodoc_typehints = "none"
autodoc_member_order = "groupwise"
autodoc_inherit_docstrings = True
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False
numpydoc_validation_checks: set[str] = set()
# aiostream_mux.torch needs PyTorch (an optional dependency): document it from a mock
# when PyTorch is not installed, so the docs build does not need it.
autodoc_mock_imports = [] if importlib.util.find_spec("torch") else ["torch"]

# -- MyST
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3

# -- doctest: `sphinx-build -b doctest` runs the {testcode} blocks of the guide.
# The docstring examples shown in the API pages are run by the test suite
# (tests/test_docstrings.py), where optional dependencies are handled, so they are
# not run again here.
doctest_test_doctest_blocks = ""
doctest_global_setup = """
import aiostream_mux
from aiostream_mux import *
"""
doctest_default_flags = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE

# -- intersphinx, offline
#
# Each inventory is compiled from ``_inv/<name>.txt`` (the objects these pages
# and the public docstrings refer to) into ``_generated/inv/<name>.inv``, and
# that local file is read first: Sphinx stops at the first location that loads,
# so the build never touches the network and a reference to an object missing
# from the list fails under ``-n`` instead of depending on a download.
INTERSPHINX = {
    "python": "https://docs.python.org/3/",
    "numpy": "https://numpy.org/doc/stable/",
    "anyio": "https://anyio.readthedocs.io/en/stable/",
    "zmq": "https://pyzmq.readthedocs.io/en/latest/",
    "torch": "https://docs.pytorch.org/docs/stable/",
}


def _compile_inventory(name: str) -> str:
    """Write ``_generated/inv/<name>.inv`` from ``_inv/<name>.txt``; return its path."""
    lines = []
    for raw in (DOCS / "_inv" / f"{name}.txt").read_text(encoding="utf-8").splitlines():
        raw = raw.strip()
        if raw and not raw.startswith("#"):
            obj, role, uri = raw.split()
            lines.append(f"{obj} {role} 1 {uri} -\n")
    header = (
        "# Sphinx inventory version 2\n"
        f"# Project: {name}\n"
        "# Version: \n"
        "# The remainder of this file is compressed using zlib.\n"
    )
    out = DOCS / "_generated" / "inv" / f"{name}.inv"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(header.encode() + zlib.compress("".join(lines).encode()))
    return str(out)


if os.environ.get("AIOSTREAM_MUX_DOCS_ONLINE"):
    intersphinx_mapping = {name: (url, None) for name, url in INTERSPHINX.items()}
else:
    intersphinx_mapping = {
        name: (url, _compile_inventory(name)) for name, url in INTERSPHINX.items()
    }
intersphinx_disabled_reftypes = ["std:doc"]

# -- HTML
html_theme = "furo"
html_title = f"aiostream_mux {release}"
html_static_path: list[str] = []

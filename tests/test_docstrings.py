"""Every example in a public docstring runs, as a doctest."""

from __future__ import annotations

import doctest
import importlib
from typing import Any

import pytest

import aiostream_mux

PUBLIC_MODULES = ["aiostream_mux", "aiostream_mux.maps"]


def _examples() -> list[Any]:
    finder = doctest.DocTestFinder(exclude_empty=True)
    found: dict[str, doctest.DocTest] = {}
    for module_name in PUBLIC_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError:
            continue
        for name in getattr(module, "__all__", []):
            obj = getattr(module, name)
            if not (isinstance(obj, type) or callable(obj)):
                continue
            # module=False: methods defined in private modules are searched too.
            for test in finder.find(obj, f"{module_name}.{name}", module=False):
                if test.examples:
                    found.setdefault(test.name, test)
    return [pytest.param(test, id=name) for name, test in sorted(found.items())]


EXAMPLES = _examples()


def test_public_api_has_examples() -> None:
    names = {param.id for param in EXAMPLES}
    for required in ("Streamer", "Stream", "streamable", "Streamer.open", "Stream.take"):
        assert f"aiostream_mux.{required}" in names, required


@pytest.mark.parametrize("test", EXAMPLES)
def test_docstring_example(test: doctest.DocTest) -> None:
    test.globs = {"aiostream_mux": aiostream_mux, **vars(aiostream_mux)}
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} example(s) failed in {test.name}"

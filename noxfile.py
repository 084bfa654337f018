"""Development sessions: ``nox`` runs lint, typecheck and tests."""

from __future__ import annotations

import nox

nox.options.sessions = ["lint", "typecheck", "tests"]
nox.options.default_venv_backend = "venv"

PYTHONS = ["3.11"]


@nox.session(python=PYTHONS)
def tests(session: nox.Session) -> None:
    """Run the whole test suite against the installed (not editable) package."""
    session.install(".[test]")
    session.run("python", "-m", "pytest", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """Ruff: lint and formatting."""
    session.install("ruff>=0.6")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    """Mypy in strict mode over the package, the tests and the benchmarks."""
    session.install(".[test]", "mypy>=1.11")
    session.run("mypy", "--strict", "aiostream_mux", "tests", "bench")


@nox.session
def demo(session: nox.Session) -> None:
    """Install the package and run the demo."""
    session.install(".")
    session.run("python", "-m", "aiostream_mux", "demo")


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks against pescador 3.0, in one process run per module."""
    session.install(".[bench]")
    session.run("python", "-m", "bench", *session.posargs)


@nox.session
def docs(session: nox.Session) -> None:
    """Build the Sphinx site warning-free, then run its doctests."""
    session.install(".[docs]")
    for builder in ("html", "doctest"):
        session.run(
            "sphinx-build",
            "-n",
            "-W",
            "--keep-going",
            "-b",
            builder,
            "docs",
            f"docs/_build/{builder}",
        )


@nox.session
def build(session: nox.Session) -> None:
    """Build the sdist and the wheel, and check them with twine."""
    session.install("build", "twine")
    out = session.create_tmp()
    session.run("python", "-m", "build", "--outdir", out)
    session.run("twine", "check", "--strict", f"{out}/*")

"""The command line: ``python -m aiostream_mux demo`` runs the README's demo."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parent.parent


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    return subprocess.run(
        [sys.executable, "-m", "aiostream_mux", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=ROOT,
        env=env,
    )


def test_demo_runs_and_summarises() -> None:
    done = _run("demo", "--batches", "4", "--shards", "8", "--latency", "0.001")
    assert done.returncode == 0, done.stderr
    assert "sync:  256 samples" in done.stdout
    assert "async: 256 samples" in done.stdout
    assert done.stdout.rstrip().endswith("done")


def test_unknown_command_is_an_error() -> None:
    done = _run("fly")
    assert done.returncode == 2
    assert "invalid choice" in done.stderr

"""examples/async_service.py stops cleanly on SIGTERM, closing every source."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
SCRIPT = ROOT / "examples" / "async_service.py"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_stops_the_service_cleanly(sig: signal.Signals) -> None:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    with subprocess.Popen(
        [sys.executable, "-u", str(SCRIPT), "--run-for", "60"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as service:
        assert service.stdout is not None
        first = service.stdout.readline()  # the service is up once it reports
        assert first.startswith("heartbeat 1:"), first
        service.send_signal(sig)
        out, err = service.communicate(timeout=30)
    assert service.returncode == 0, err
    assert "sources still open after shutdown: 0" in out
    assert out.rstrip().endswith("done")
    assert "Traceback" not in err

"""The README's code runs as written (its ``...`` bodies left empty)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parent.parent

# Blocks that need what the README leaves to the reader: a Keras model, a module of
# ZMQ features, a notebook's top-level await (tests/test_notebook.py runs that one).
NEEDS_CONTEXT = ("model.fit", "features, k", "await streamer.take")


def test_readme_snippets_run(tmp_path: Path) -> None:
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    chosen = [b for b in blocks if not any(marker in b for marker in NEEDS_CONTEXT)]
    assert len(chosen) >= 4
    script = "\n".join(chosen).replace("...", "pass")
    script += "\nanyio.run(serve)\nanyio.run(serve, backend='trio')\nprint('README OK')\n"
    path = tmp_path / "readme_snippets.py"
    path.write_text(script)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    done = subprocess.run(
        [sys.executable, "-W", "error::RuntimeWarning", str(path)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=tmp_path,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().endswith("README OK")

"""Start an edgeship command in a real subprocess and kill it with SIGKILL once its output
file has grown to a size: the interrupted run that ``--resume`` must continue."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def kill_when_written(command: list[str], out: Path, min_bytes: int) -> None:
    """Runs ``command`` and kills its process group once ``out`` holds ``min_bytes``; fails when
    the command finished first (nothing would be left to resume)."""
    worker = subprocess.Popen(command, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and worker.poll() is None and (
            not out.exists() or out.stat().st_size < min_bytes):
        time.sleep(0.005)
    os.killpg(worker.pid, signal.SIGKILL)
    worker.wait()
    assert worker.returncode == -signal.SIGKILL, f"{command[3]} finished before it could be killed"

"""``--strategy multi-worker`` with two local workers on loopback, one killed and the job resumed.

Slow (about three minutes on two cores): each worker builds its graph and the collective
ops once per launch, and the job is launched twice.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAUNCH_TIMEOUT = 300.0
RUN_FILES = {"config.json", "labels.txt", "split.json", "model.h5", "history.json", "metrics.json", "metrics.md"}
# TrainConfig.tiny as flags, with three epochs so that one can be cut off.
TINY = ["--backbone", "mobilenet_v1", "--alpha", "0.25", "--image-size", "32", "--weights", "none", "--batch-size", "8",
        "--epochs", "3", "--fine-tune-epochs", "0", "--augment", "none"]


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _decoded(log: str) -> int:
    """Photos a worker decoded, from its log line ``train: N photo(s) decoded, ...``."""
    found = re.search(r"train: (\d+) photo\(s\) decoded", log)
    assert found, log[-3000:]
    return int(found.group(1))


def _launch(data: Path, out: Path, logs: Path, scratch: Path, resume: bool) -> list[subprocess.Popen]:
    ports = _free_ports(2)
    workers = []
    for index in range(2):
        tf_config = {"cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]}, "task": {"type": "worker", "index": index}}
        env = {**os.environ, "TF_CONFIG": json.dumps(tf_config), "PYTHONPATH": str(ROOT), "TMPDIR": str(scratch),
               "TF_CPP_MIN_LOG_LEVEL": "2", "EDGESHIP_CACHE_DIR": str(scratch.parent / "decode-cache")}
        args = [sys.executable, "-m", "edgeship.cli", "train", str(data), "--out", str(out),
                "--strategy", "multi-worker", *TINY, *(["--resume"] if resume else [])]
        log = open(logs / f"worker{index}{'_resumed' if resume else ''}.log", "w")
        workers.append(subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT,
                                        start_new_session=True))
    return workers


def _wait_for(path: Path, text: str, workers: list[subprocess.Popen], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and text in path.read_text(errors="replace"):
            return
        if any(w.poll() is not None for w in workers):
            raise AssertionError(f"a worker stopped before {text!r}:\n{path.read_text(errors='replace')[-3000:]}")
        time.sleep(0.5)
    raise AssertionError(f"no {text!r} within {timeout:.0f} s:\n{path.read_text(errors='replace')[-3000:]}")


def _kill(workers: list[subprocess.Popen]) -> None:
    for worker in workers:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()


@pytest.mark.slow
def test_two_workers_survive_a_killed_worker_and_resume(demo_data, tmp_path):
    out, logs, scratch = tmp_path / "run", tmp_path / "logs", tmp_path / "scratch"
    logs.mkdir()
    scratch.mkdir()
    workers = _launch(demo_data, out, logs, scratch, resume=False)
    try:
        # The chief logs an epoch's summary after Keras backed it up: from then on, resuming skips
        # it. (Its progress lines carry the same words, every 10 s while the epoch runs.)
        _wait_for(logs / "worker0.log", "phase 1 epoch 1/3  loss", workers, LAUNCH_TIMEOUT)
        os.killpg(workers[1].pid, signal.SIGKILL)
        workers[0].wait(timeout=60)  # its collective ops fail once the peer's socket closes
    finally:
        _kill(workers)
    assert workers[1].returncode == -signal.SIGKILL
    chief = (logs / "worker0.log").read_text(errors="replace")
    # Both workers prepared the data from one machine-wide cache, filled once between them.
    num_images = sum(1 for _ in demo_data.rglob("*.png"))
    assert _decoded(chief) + _decoded((logs / "worker1.log").read_text(errors="replace")) == num_images
    assert workers[0].returncode == 1 and "Traceback" not in chief, chief[-3000:]
    assert "error: Multi-worker training lost a worker" in chief and "--resume" in chief
    assert not (out / "model.h5").exists()

    workers = _launch(demo_data, out, logs, scratch, resume=True)
    try:
        for worker in workers:
            worker.wait(timeout=LAUNCH_TIMEOUT)
    finally:
        _kill(workers)
    resumed = [(logs / f"worker{i}_resumed.log").read_text(errors="replace") for i in range(2)]
    assert [w.returncode for w in workers] == [0, 0], resumed[0][-3000:] + resumed[1][-3000:]
    assert "phase 1 epoch 1/3" not in resumed[0] and "phase 1 epoch 3/3" in resumed[0], resumed[0][-3000:]

    # The same run directory as one machine leaves, written by the chief alone.
    assert RUN_FILES <= {p.name for p in out.iterdir()}
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["strategy"] == "multi-worker" and metrics["num_replicas"] == 2
    assert 0.0 <= metrics["accuracy"] <= 1.0 and metrics["num_test"] > 0
    assert not list(out.rglob("workertemp*")), list(out.rglob("*"))
    # Only the killed worker's scratch directory is left (SIGKILL allows no clean-up).
    assert len(list(scratch.glob("edgeship-worker-*"))) <= 1

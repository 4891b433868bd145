"""A quiet terminal by default, every library message with -v; progress on stderr only."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import textwrap

import pytest

from edgeship import progress as progress_module
from edgeship.progress import progress
from edgeship.runtime import native_stderr
from edgeship.runtime.native_stderr import filtered_native_stderr, is_chatter

from conftest import CORAL, ROOT

# What the libraries print when left alone: absl INFO/WARNING, its pre-init banner, LiteRT's notice.
NOISE = re.compile(r"^[IW]\d{4} |absl::InitializeLog|XNNPACK|oneDNN|cuda", re.MULTILINE)


def _python(code: str, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}  # as on a user's shell
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=300)


def test_native_lines_are_filtered_and_real_errors_kept(capfd):
    chatter = b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\nI0000 00:00:1.5 7 port.cc:153] oneDNN on\n"
    native_stderr.set_enabled(True)  # the default, whatever ran before
    with filtered_native_stderr():
        os.write(2, chatter + b"E0000 00:00:1.5 7 op_kernel.cc:1] Invalid argument: shape\n")
    err = capfd.readouterr().err
    assert "Invalid argument: shape" in err and "XNNPACK" not in err and "oneDNN" not in err
    native_stderr.set_enabled(False)
    try:
        with filtered_native_stderr():
            os.write(2, chatter)
    finally:
        native_stderr.set_enabled(True)
    assert "XNNPACK" in capfd.readouterr().err
    assert not is_chatter("F0000 00:00:1.5 7 check.cc:1] Check failed") and is_chatter("W0000 00:00:1.5 7 x.cc:1] y")


def test_tensorflow_import_and_litert_are_silent_by_default_and_loud_with_verbose():
    code = f"""
        import logging, sys
        from edgeship.quiet import configure
        logging.basicConfig(stream=sys.stderr)  # as the CLI does
        configure(verbose=len(sys.argv) > 1)
        import edgeship.train.tfkeras
        from edgeship.runtime import load_model
        load_model({str(CORAL / "mobilenet_v1_0.25_128_quant.tflite")!r})
        import warnings; warnings.warn("a library's own warning", UserWarning)
        print("done")
    """
    quiet = _python(code)
    assert quiet.returncode == 0 and quiet.stdout == "done\n", quiet.stderr
    assert quiet.stderr == "", quiet.stderr
    loud = _python(code, "-v")
    assert loud.returncode == 0, loud.stderr
    assert "XNNPACK" in loud.stderr and "a library's own warning" in loud.stderr and NOISE.search(loud.stderr)


def test_plain_progress_lines_when_stderr_is_not_a_terminal(caplog, capsys, monkeypatch):
    monkeypatch.setattr(progress_module, "LOG_EVERY_S", 0.0)
    with caplog.at_level(logging.INFO, logger="edgeship.progress"):
        with progress(4, "scoring", live=False) as update:
            for step in range(4):
                update(note=f"loss {step}")
    messages = [r.getMessage() for r in caplog.records]
    assert messages[0].startswith("scoring: 1/4 (25 %)") and "left" in messages[0] and messages[0].endswith("loss 0")
    assert messages[-1].startswith("scoring: 3/4 (75 %)") and len(messages) == 3  # the end has its own summary
    assert capsys.readouterr().out == ""


def test_live_bar_with_time_left_on_a_terminal_and_nothing_on_stdout():
    pty = pytest.importorskip("pty")
    master, slave = pty.openpty()
    code = """
        import logging, sys, time
        from edgeship.progress import progress
        logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
        with progress(5, "bench") as update:
            for _ in range(5):
                time.sleep(0.2)
                update()
                logging.getLogger("edgeship").info("a log line")
        print("result")
    """
    child = subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], stdout=subprocess.PIPE, stderr=slave,
                             cwd=ROOT, env={**os.environ, "TERM": "xterm", "COLUMNS": "120"})
    os.close(slave)
    terminal = b""
    while True:  # read as it comes, or the child blocks on a full terminal buffer
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the child closed its end
            break
        if not chunk:
            break
        terminal += chunk
    os.close(master)
    stdout = child.stdout.read()
    child.wait(timeout=60)
    text = terminal.decode(errors="replace")
    assert child.returncode == 0 and stdout == b"result\n"
    assert "bench" in text and "left" in text and re.search(r"[0-5]/5", text) and "a log line" in text


def test_train_prints_its_result_as_json(demo_data, tmp_path):
    from typer.testing import CliRunner

    from edgeship.cli import app

    logging.getLogger().handlers.clear()
    out = tmp_path / "run"
    result = CliRunner().invoke(app, [
        "train", str(demo_data), "--out", str(out), "--backbone", "mobilenet_v1", "--alpha", "0.25",
        "--image-size", "32", "--weights", "none", "--epochs", "1", "--fine-tune-epochs", "0", "--batch-size", "8",
        "--json",
    ])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["run_dir"] == str(out) and 0 <= report["test_accuracy"] <= 1
    assert report["metrics"]["num_test"] > 0 and report["metrics"]["weights"] == "none (random initialisation)"

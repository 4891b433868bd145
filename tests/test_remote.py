"""edgeship on a device over ssh, against a real OpenSSH server on loopback (tests/sshd.py).

The device is this machine: its edgeship is this virtualenv's, named with ``remote_command``, as
a user names a virtualenv on their Pi. Cleanup is checked on this machine directly, since the
device's processes and temporary folders are ours to see.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from sshd import loopback_sshd  # noqa: F401  (the session fixture)

import edgeship
from edgeship.errors import ConfigError, RemoteError
from edgeship.runtime.remote import compatible_versions, parse_target, run_remote

EDGESHIP = str(Path(sys.executable).parent / "edgeship")
CORAL_MODEL = Path(__file__).parent / "data" / "coral" / "mobilenet_v1_0.25_128_quant.tflite"
# Long enough to be still running when the test cuts it off, at any machine's speed.
LONG_BENCH = ["bench", str(CORAL_MODEL), "--num-runs", "1000000", "--num-warmup-runs", "0"]


@pytest.fixture()
def remote(loopback_sshd):  # noqa: F811
    """run_remote aimed at the loopback server and this virtualenv's edgeship."""

    def run(argv, files, **kwargs):
        kwargs.setdefault("remote_command", EDGESHIP)
        return run_remote(loopback_sshd.host, argv, files, ssh_options=loopback_sshd.ssh_options, **kwargs)

    return run


def _local_json(*argv: str) -> dict:
    done = subprocess.run([EDGESHIP, *argv, "--json"], capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def test_bench_runs_on_the_device_and_returns_its_json(remote, runtime_setup):
    models = runtime_setup[0]
    result = remote(["bench", str(models["float"]), str(models["uint8"]), "--num-runs", "5"],
                    [models["float"], models["uint8"]])
    local = _local_json("bench", str(models["float"]), "--num-runs", "5")
    assert [row["model"] for row in result["results"]] == [str(models["float"]), str(models["uint8"])]
    assert all("error" not in row and row["median_ms"] > 0 for row in result["results"])
    # Whatever the device reports about itself comes back as it wrote it: the same keys as here,
    # and the same identity, since the device is this machine.
    assert set(result) == set(local) and set(result["results"][0]) == set(local["results"][0])
    if "device" in local:
        assert result["device"] == local["device"]


def test_predict_on_the_device_gives_the_local_answer(remote):
    model, image = CORAL_MODEL, CORAL_MODEL.parent / "cat.bmp"
    argv = ["predict", str(model), str(image), "--top-k", "3"]
    result = remote(argv, [model, image])
    assert result == _local_json(*argv)  # the files arrived intact, byte for byte
    assert result["predictions"][0]["path"] == str(image)


def test_a_folder_is_copied_whole_and_its_paths_come_back_local(remote, runtime_setup):
    models, data, _ = runtime_setup
    argv = ["predict", str(models["float"]), str(data), "--top-k", "1"]
    result = remote(argv, [models["float"], data])
    assert result == _local_json(*argv)
    assert all(row["path"].startswith(str(data)) for row in result["predictions"])


def test_ssh_url_with_port_and_user(loopback_sshd, runtime_setup):  # noqa: F811
    model = runtime_setup[0]["uint8"]
    target = f"ssh://{loopback_sshd.user}@127.0.0.1:{loopback_sshd.port}"
    result = run_remote(target, ["bench", str(model), "--num-runs", "3"], [model],
                        ssh_options=loopback_sshd.ssh_options, remote_command=EDGESHIP)
    assert [(row["model"], "error" in row) for row in result["results"]] == [(str(model), False)]


def test_environment_names_the_ssh_config_and_the_device_command(loopback_sshd, runtime_setup,  # noqa: F811
                                                                  monkeypatch):
    # How a caller that passes neither (the CLI's --on) is pointed at a config and a virtualenv.
    monkeypatch.setenv("EDGESHIP_SSH_CONFIG", loopback_sshd.ssh_options[1])
    monkeypatch.setenv("EDGESHIP_REMOTE_COMMAND", EDGESHIP)
    model = runtime_setup[0]["float"]
    result = run_remote(loopback_sshd.host, ["bench", str(model), "--num-runs", "3"], [model])
    assert result["results"][0]["model"] == str(model)


def test_profile_on_the_device_returns_every_op_and_the_devices_identity(loopback_sshd):  # noqa: F811
    # The CLI as a user runs it (a subprocess, so the real ssh path with nothing stood in),
    # pointed at the loopback server the way --on users name a config and a virtualenv.
    env = {**os.environ, "EDGESHIP_SSH_CONFIG": loopback_sshd.ssh_options[1], "EDGESHIP_REMOTE_COMMAND": EDGESHIP}
    done = subprocess.run([EDGESHIP, "profile", str(CORAL_MODEL), "--on", loopback_sshd.host, "--threads", "1",
                           "--num-rounds", "3", "--runs-per-round", "2", "--num-warmup-runs", "1", "--json"],
                          capture_output=True, text=True, env=env, timeout=600, check=False)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["model"] == str(CORAL_MODEL) and report["target"] == loopback_sshd.host
    assert [row["index"] for row in report["ops"]] == list(range(report["num_ops"])) and report["num_ops"] == 31
    assert sorted(row["rank"] for row in report["ops"]) == list(range(1, 32))
    assert all(row["low_ms"] <= row["raw_ms"] <= row["high_ms"] for row in report["ops"])
    # The device's identity as it wrote it; the device is this machine, so it matches ours.
    from edgeship.runtime.device_info import device_identity

    identity = report["device_identity"]
    assert identity["machine"] == device_identity()["machine"] and identity["versions"]["edgeship"] == \
        edgeship.__version__


def test_missing_remote_edgeship_says_what_to_install(remote, runtime_setup):
    model = runtime_setup[0]["float"]
    with pytest.raises(RemoteError) as error:
        remote(["bench", str(model)], [model], remote_command="/nonexistent/venv/bin/edgeship")
    message = str(error.value)
    assert "not installed" in message and "/nonexistent/venv/bin/edgeship" in message
    major_minor = ".".join(edgeship.__version__.split(".")[:2])
    assert f'pip install "edgeship=={major_minor}.*"' in message and "no TensorFlow" in message


def _old_install(folder: Path, version: str) -> Path:
    """A virtualenv whose edgeship is another version: its command, as pip would write it."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True)
    site = next(folder.glob("lib/python*/site-packages"))
    (site / "edgeship").mkdir()
    (site / "edgeship" / "__init__.py").write_text(f'__version__ = "{version}"\n')
    command = folder / "bin" / "edgeship"
    command.write_text(f"#!{folder / 'bin' / 'python'}\nimport sys\nfrom edgeship.cli import main\nsys.exit(main())\n")
    command.chmod(0o755)
    return command


def test_incompatible_remote_version_says_what_to_install(remote, runtime_setup, tmp_path):
    model = runtime_setup[0]["float"]
    with pytest.raises(RemoteError) as error:
        remote(["bench", str(model)], [model], remote_command=str(_old_install(tmp_path / "venv", "0.0.9")))
    message = str(error.value)
    assert "edgeship 0.0.9" in message and f"edgeship {edgeship.__version__} here" in message
    assert 'pip install "edgeship==' in message


def test_remote_failure_surfaces_the_remote_error_line(remote, tmp_path):
    broken = tmp_path / "broken.tflite"
    broken.write_bytes(b"not a model at all")
    with pytest.raises(RemoteError) as error:
        remote(["predict", str(broken), str(CORAL_MODEL.parent / "cat.bmp")], [broken])
    assert error.value.remote_exit_code == 1
    assert "error:" in str(error.value) and str(broken) in str(error.value)  # named as here, not as there


def test_a_failed_bench_row_is_named_and_the_other_rows_kept(remote, runtime_setup, tmp_path):
    good, broken = runtime_setup[0]["float"], tmp_path / "broken.tflite"
    broken.write_bytes(b"not a model at all")
    with pytest.raises(RemoteError) as error:
        remote(["bench", str(good), str(broken), "--num-runs", "3"], [good, broken])
    assert str(broken) in str(error.value)
    rows = {row["model"]: row for row in error.value.result["results"]}
    assert "error" in rows[str(broken)] and rows[str(good)]["median_ms"] > 0


@pytest.mark.parametrize("target", ["-oProxyCommand=touch_pwned", "ssh://-oProxyCommand=x", "pi@-p22",
                                    "host name", "pi@", "ssh://pi@host:99999", "ssh://pi@host/path", ""])
def test_targets_that_ssh_could_read_as_options_are_refused(target, tmp_path):
    with pytest.raises(ConfigError, match="Received|port"):
        run_remote(target, ["bench"], [])


def test_target_grammar():
    assert parse_target("ssh://pi@raspberrypi.local:2222") == parse_target("ssh://pi@raspberrypi.local:2222/")
    assert parse_target("ssh://[::1]:22").destination == "::1"
    assert parse_target("pi5").port is None
    assert compatible_versions("0.1.0", "0.1.12") and not compatible_versions("0.1.0", "1.1.0")


# --------------------------------------------------------------------------- cleanup on the device


def _run_processes() -> dict[int, str]:
    """This machine's processes working in a run's temporary folder: pid -> folder."""
    found = {}
    for entry in Path("/proc").iterdir():
        try:
            folder = os.readlink(entry / "cwd")
        except (OSError, ValueError):
            continue
        if Path(folder).name.startswith("edgeship.") and entry.name.isdigit():
            found[int(entry.name)] = folder
    return found


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _wait_for(condition, what: str, seconds: float = 60):
    """Polls ``condition`` until it holds; a generous bound that only stops a hung test."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"gave up waiting for {what}")


def _running_bench(before: dict[int, str]) -> tuple[list[int], str]:
    """Waits until the long bench runs on the device; returns the run's processes and folder."""
    def started():
        new = {pid: folder for pid, folder in _run_processes().items() if pid not in before}
        for pid, folder in new.items():
            try:
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if EDGESHIP.encode() in argv[:2] and b"bench" in argv:  # edgeship itself, not the script
                return list(new), folder
        return None

    return _wait_for(started, "the remote bench to start")


def _assert_cleaned_up(pids: list[int], folder: str) -> None:
    _wait_for(lambda: not any(map(_alive, pids)), f"the device's processes {pids} to end")
    _wait_for(lambda: not Path(folder).exists(), f"{folder} to be removed")


def _ssh_children() -> list[int]:
    """ssh processes started by this test process."""
    children = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            name = (entry / "comm").read_text().strip()
        except OSError:
            continue
        if int(fields[1]) == os.getpid() and name == "ssh":
            children.append(int(entry.name))
    return children


def test_a_killed_connection_leaves_nothing_on_the_device(remote):
    before, outcome = _run_processes(), {}

    def run():
        try:
            remote(LONG_BENCH, [CORAL_MODEL])
        except RemoteError as e:
            outcome["error"] = e

    thread = threading.Thread(target=run)
    thread.start()
    pids, folder = _running_bench(before)
    for pid in _ssh_children():
        os.kill(pid, signal.SIGKILL)  # the connection drops as when the network goes
    thread.join(timeout=60)
    assert "connection" in str(outcome["error"])
    _assert_cleaned_up(pids, folder)


def test_ctrl_c_leaves_nothing_on_the_device(loopback_sshd, tmp_path):  # noqa: F811
    before = _run_processes()
    program = (f"from pathlib import Path; from edgeship.runtime.remote import run_remote; "
               f"run_remote({loopback_sshd.host!r}, {LONG_BENCH!r}, [Path({str(CORAL_MODEL)!r})], "
               f"ssh_options={loopback_sshd.ssh_options!r}, remote_command={EDGESHIP!r})")
    caller = subprocess.Popen([sys.executable, "-c", program], stderr=subprocess.PIPE, text=True)
    pids, folder = _running_bench(before)
    caller.send_signal(signal.SIGINT)  # the caller alone: its KeyboardInterrupt must end ssh
    _, err = caller.communicate(timeout=60)
    assert "KeyboardInterrupt" in err
    _assert_cleaned_up(pids, folder)


def _run_folders() -> set[Path]:
    return set(Path("/tmp").glob("edgeship.*"))


def test_a_timeout_stops_the_run_on_the_device(remote):
    before, folders = _run_processes(), _run_folders()
    with pytest.raises(RemoteError, match="did not finish within"):
        remote(LONG_BENCH, [CORAL_MODEL], timeout=5)
    started = [pid for pid in _run_processes() if pid not in before]
    _wait_for(lambda: not any(map(_alive, started)), "the timed-out run's processes to end")
    _wait_for(lambda: _run_folders() <= folders, "the timed-out run's folder to be removed")

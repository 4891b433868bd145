"""`edgeship doctor` on this machine (no Edge TPU here), the table of known-bad combinations, and on real
hardware where it is present (marked edgetpu)."""

from __future__ import annotations

import ctypes
import json

import pytest
from typer.testing import CliRunner

from edgeship.cli import app
from edgeship.edgetpu.compat import KNOWN_BAD, known_bad
from edgeship.edgetpu.doctor import DoctorConfig, _probe, diagnose
from edgeship.errors import ConfigError
from edgeship.runtime.device import edgetpu_library


def _libedgetpu_installed() -> bool:
    try:
        ctypes.CDLL(edgetpu_library())
        return True
    except OSError:
        return False


no_libedgetpu = pytest.mark.skipif(_libedgetpu_installed(), reason="libedgetpu is installed here")


@no_libedgetpu
def test_doctor_cpu_exits_0_and_says_there_is_no_edgetpu():
    result = CliRunner().invoke(app, ["doctor"])
    assert result.exit_code == 0, result.output
    assert "libedgetpu: not found" in result.stdout and "Edge TPU devices: none seen" in result.stdout
    assert "seen by the operating system (USB ids, /dev/apex_N): none" in result.stdout
    assert "ai-edge-litert: " in result.stdout and result.stdout.rstrip().splitlines()[-1].startswith("OK")


@no_libedgetpu
def test_doctor_usb_exits_non_zero_and_json_is_valid():
    result = CliRunner().invoke(app, ["doctor", "--device", "usb", "--json"])
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert report["usable"] is False and report["libedgetpu"]["found"] is False
    assert "coral.ai/docs/accelerator/get-started" in report["reason"]
    assert report["system"]["cpu_count"] >= 1 and report["system"]["ai_edge_litert"]
    assert any("feranick" in p["libedgetpu"] for p in report["pairings"])


def test_doctor_refuses_an_unknown_device():
    with pytest.raises(ConfigError, match="expected cpu"):
        DoctorConfig(device="tpu")
    result = CliRunner().invoke(app, ["doctor", "--device", "gpu"])
    assert result.exit_code == 1 and "Unknown device 'gpu'" in result.output


def test_a_crashing_probe_becomes_a_diagnosis():
    # A real child process dying of SIGSEGV, as an ABI-mismatched libedgetpu makes it die.
    result = _probe([], 30, ("-c", "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)"))
    assert result["crashed"] == "SIGSEGV" and "ABI" in result["error"] and "libedgetpu built for it" in result["error"]


def test_a_hanging_probe_times_out():
    result = _probe([], 0.5, ("-c", "import time; time.sleep(10)"))
    assert "no answer within 0.5 s" in result["error"]


def test_doctor_names_emulated_arm_problems_from_the_platform_check(monkeypatch):
    import edgeship.edgetpu.doctor as doctor

    monkeypatch.setattr(doctor, "known_problems", lambda machine, version, features: ["emulated: no ARM cpuinfo"])
    report = doctor.diagnose(doctor.DoctorConfig(device="cpu"))
    assert "emulated: no ARM cpuinfo" in report["known_bad"]
    assert not [bad for bad in known_bad("2.3.0", "aarch64")]  # a real Pi 4 / Pi 5 runs every release


def test_stock_libedgetpu_warning_only_where_a_libedgetpu_is_installed():
    assert not any("stock libedgetpu" in b.summary for b in known_bad("2.3.0", "x86_64", libedgetpu_found=False))
    assert any("stock libedgetpu" in b.summary for b in known_bad("2.3.0", "x86_64", libedgetpu_found=True))
    assert all(len(bad.summary.splitlines()) == 1 for bad in KNOWN_BAD)


@pytest.mark.edgetpu
def test_doctor_finds_the_edgetpu_on_real_hardware():
    if not _libedgetpu_installed():
        pytest.skip("libedgetpu is not installed")
    report = diagnose(DoctorConfig(device="edgetpu"))
    if not report["edgetpu_devices"]:
        pytest.skip("no Edge TPU attached")
    assert report["usable"], report["reason"]

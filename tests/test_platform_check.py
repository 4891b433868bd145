"""known_problems: the combinations measured under emulation (benchmarks/pi_emulation.py), as plain data."""

from __future__ import annotations

import pytest

from edgeship.runtime import platform_check
from edgeship.runtime.platform_check import known_problems, read_cpu_features

# /proc/cpuinfo "Features" of real boards (one core shown); the Pi 4's BCM2711 has no crypto extension.
PI4 = {"fp", "asimd", "evtstrm", "crc32", "cpuid"}
PI5 = {"fp", "asimd", "evtstrm", "aes", "pmull", "sha1", "sha2", "crc32", "atomics", "fphp", "asimdhp", "cpuid",
       "asimdrdm", "lrcpc", "dcpop", "asimddp"}
PI4_CPUINFO = """processor\t: 0
BogoMIPS\t: 108.00
Features\t: fp asimd evtstrm crc32 cpuid
CPU implementer\t: 0x41
CPU architecture: 8
CPU variant\t: 0x0
CPU part\t: 0xd08
CPU revision\t: 3

Hardware\t: BCM2835
Model\t\t: Raspberry Pi 4 Model B Rev 1.4
"""
X86_CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC
flags\t\t: fpu vme de pse tsc msr pae mce cx8 apic sep avx2
"""


@pytest.mark.parametrize("version", ["1.4.0", "2.0.3", "2.1.4", "2.1.6", "2.2.0", "2.3.0"])
@pytest.mark.parametrize("features", [PI4, PI5], ids=["pi4", "pi5"])
def test_real_pi_has_no_known_problem(features, version):
    assert known_problems("aarch64", version, features) == []


@pytest.mark.parametrize("version", ["2.2.0", "2.3.0", "2.2.0rc1", "2.10.1", "3.0"])
def test_no_arm_cpuinfo_crashes_from_2_2(version):
    (problem,) = known_problems("aarch64", version, set())
    assert f"ai-edge-litert {version} crashes (SIGSEGV)" in problem
    assert "/proc/cpuinfo lists no ARM processor" in problem
    assert "ai-edge-litert<2.2" in problem  # what to do


@pytest.mark.parametrize("version", ["1.2.0", "1.4.0", "2.0.3", "2.1.4", "2.1.6", "2.1.10"])
def test_no_arm_cpuinfo_is_fine_before_2_2(version):
    assert known_problems("aarch64", version, set()) == []


def test_32_bit_arm_has_no_wheels():
    (problem,) = known_problems("armv7l", "2.3.0", None)
    assert "32-bit ARM" in problem and "64-bit Raspberry Pi OS" in problem


@pytest.mark.parametrize("machine", ["x86_64", "AMD64", "arm64"])
def test_other_machines_have_no_known_problem(machine):
    assert known_problems(machine, "2.3.0", set()) == []


def test_none_reads_this_machines_cpuinfo(tmp_path, monkeypatch):
    cpuinfo = tmp_path / "cpuinfo"
    monkeypatch.setattr(platform_check, "CPUINFO", cpuinfo)
    cpuinfo.write_text(X86_CPUINFO)  # what an emulated aarch64 program reads under qemu-user 7.2
    assert len(known_problems("aarch64", "2.3.0", None)) == 1
    cpuinfo.write_text(PI4_CPUINFO)
    assert known_problems("aarch64", "2.3.0", None) == []
    cpuinfo.unlink()  # unreadable: nothing is known, nothing is claimed
    assert known_problems("aarch64", "2.3.0", None) == []


def test_read_cpu_features(tmp_path):
    pi4, x86 = tmp_path / "pi4", tmp_path / "x86"
    pi4.write_text(PI4_CPUINFO)
    x86.write_text(X86_CPUINFO)
    assert read_cpu_features(pi4) == PI4
    assert "asimddp" not in read_cpu_features(pi4)
    assert read_cpu_features(x86) == set()
    assert read_cpu_features(tmp_path / "absent") is None

"""``edgeship doctor``: what a device owner needs to know before the first run.

It reports the OS, architecture, Python, ai-edge-litert and CPU count; whether libedgetpu is
found (where, and its version string); the Edge TPUs it enumerates; whether each delegate spec
(``usb``, ``pci``, ``usb:N``, ``pci:N``) loads and runs a one-op model; and the known-bad
combinations of :mod:`edgeship.edgetpu.compat`. Every probe runs in a child process
(:mod:`edgeship.edgetpu.probe`), so a segfault from an ABI-mismatched libedgetpu becomes a
diagnosis instead of a crash.

Example:
    >>> report = diagnose(DoctorConfig(device="cpu"))
    >>> report["usable"]
    True
"""

from __future__ import annotations

import json
import os
import platform
import signal
import subprocess
import tempfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from edgeship.edgetpu.compat import PAIRINGS, known_bad
from edgeship.runtime.platform_check import known_problems
from edgeship.errors import ConfigError
from edgeship.runtime.child_process import python_command
from edgeship.runtime.device import device_hint, edgetpu_library, parse_device

__all__ = ["DoctorConfig", "diagnose", "render_doctor"]


@dataclass(frozen=True)
class DoctorConfig:
    device: str = "cpu"              # the device the owner means to use; decides the exit status
    probe_timeout_s: float = 30.0    # per child process; a USB device can take seconds to enumerate

    def __post_init__(self) -> None:
        parse_device(self.device)
        if self.probe_timeout_s <= 0:
            raise ConfigError(f"probe_timeout_s must be positive; received {self.probe_timeout_s}.")


def _system() -> dict:
    try:
        litert = metadata.version("ai-edge-litert")
    except metadata.PackageNotFoundError:
        litert = None
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"os": f"{platform.system()} {platform.release()}", "machine": platform.machine(),
            "python": platform.python_version(), "ai_edge_litert": litert, "cpu_count": cpus}


def _probe(args: list[str], timeout: float, python_args: tuple[str, ...] = ("-m", "edgeship.edgetpu.probe")) -> dict:
    """Runs one probe in a child process; a crash or a hang is reported, not suffered. The child
    imports only the installed package (:mod:`edgeship.runtime.child_process`)."""
    command = [*python_command(*python_args), *args]
    try:
        with tempfile.TemporaryDirectory(prefix="edgeship-probe-") as empty:
            done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=empty)
    except subprocess.TimeoutExpired:
        return {"error": f"no answer within {timeout:g} s (a device that does not enumerate?)"}
    if done.returncode < 0:
        name = signal.Signals(-done.returncode).name if -done.returncode in signal.valid_signals() else str(-done.returncode)
        return {"crashed": name, "error": f"the probe process died of {name}: this libedgetpu build does not match "
                "this ai-edge-litert's TensorFlow Lite ABI; install a libedgetpu built for it (see the pairings)."}
    try:
        return json.loads(done.stdout.strip().splitlines()[-1])
    except (json.JSONDecodeError, IndexError):
        tail = " ".join((done.stderr or done.stdout).split())[-300:]
        return {"error": f"the probe failed (exit {done.returncode}): {tail}"}


# USB ids of the Coral USB Accelerator before and after the runtime loads its firmware.
_USB_IDS = {("1a6e", "089a"): "Global Unichip (no firmware yet)", ("18d1", "9302"): "Google (firmware loaded)"}


def _devices_from_system() -> list[dict]:
    """Edge TPUs the operating system sees, with or without libedgetpu (Linux sysfs, /dev/apex_N)."""
    found = []
    for device in sorted(Path("/sys/bus/usb/devices").glob("*")):
        try:
            ids = ((device / "idVendor").read_text().strip(), (device / "idProduct").read_text().strip())
        except OSError:
            continue
        if ids in _USB_IDS:
            found.append({"type": "usb", "path": f"/sys/bus/usb/devices/{device.name}", "state": _USB_IDS[ids]})
    found += [{"type": "pci", "path": str(path)} for path in sorted(Path("/dev").glob("apex_*"))]
    return found


def _specs(device_option: str | None, devices: list[dict]) -> list[str]:
    specs = ["usb", "pci", "usb:0", "pci:0"]
    for kind in ("usb", "pci"):
        specs += [f"{kind}:{i}" for i in range(sum(d["type"] == kind for d in devices))]
    if device_option is not None:
        specs.append(device_option)
    return list(dict.fromkeys(specs))


def _label(option: str) -> str:
    """The device string a user types for a delegate option ("" -> edgetpu, ":1" -> edgetpu:1)."""
    return f"edgetpu{option}" if option[:1] in ("", ":") else option


def _verdict(config: DoctorConfig, system: dict, library: dict, delegates: dict, seen: list[dict]) -> tuple[bool, str]:
    option = parse_device(config.device)
    if system["ai_edge_litert"] is None:
        return False, "ai-edge-litert is not installed: pip install ai-edge-litert."
    if option is None:
        return True, "the CPU is usable (LiteRT is installed)."
    if not library.get("found"):
        plugged = f"an Edge TPU is attached ({seen[0]['type']}) but " if seen else ""
        return False, (f"{plugged}{edgetpu_library()} was not found: install the Edge TPU runtime "
                       "(https://coral.ai/docs/accelerator/get-started/), or use --device cpu.")
    probe = delegates.get(_label(option), {})
    if probe.get("loaded"):
        return True, f"the Edge TPU at {config.device!r} loads and runs a model."
    return False, f"{config.device} cannot be used: {probe.get('error', 'not probed')} {device_hint(option)}"


def diagnose(config: DoctorConfig = DoctorConfig()) -> dict:
    """Checks this machine for ``config.device``; returns a JSON-ready report with ``usable``."""
    system = _system()
    library = _probe(["library", edgetpu_library()], config.probe_timeout_s) if system["ai_edge_litert"] else {}
    library.setdefault("found", False)
    devices = library.get("devices", [])
    delegates = {}
    if library["found"]:
        for spec in _specs(parse_device(config.device), devices):
            delegates[_label(spec)] = _probe(["delegate", edgetpu_library(), spec], config.probe_timeout_s)
    bad = known_bad(system["ai_edge_litert"] or "", system["machine"], library["found"])
    seen_by_system = _devices_from_system()
    usable, reason = _verdict(config, system, library, delegates, seen_by_system)
    return {
        "device": config.device, "usable": usable, "reason": reason, "system": system,
        "libedgetpu": {"name": edgetpu_library(), **library}, "edgetpu_devices": devices,
        "devices_seen_by_system": seen_by_system, "delegates": delegates,
        "known_bad": [entry.summary for entry in bad]
        + known_problems(system["machine"], system["ai_edge_litert"] or "", None),
        "pairings": [{"libedgetpu": p.libedgetpu, "runtimes": p.runtimes, "source": p.source} for p in PAIRINGS],
    }


def render_doctor(report: dict) -> str:
    """The report as short lines, the verdict last."""
    system, library = report["system"], report["libedgetpu"]
    lines = [f"OS: {system['os']} ({system['machine']}), Python {system['python']}, {system['cpu_count']} CPU(s)",
             f"ai-edge-litert: {system['ai_edge_litert'] or 'not installed'}"]
    if library["found"]:
        lines.append(f"libedgetpu: {library.get('path') or library['name']}, version {library.get('version') or 'unknown'}")
    else:
        lines.append(f"libedgetpu: not found ({library['name']}); no Edge TPU can be used here")
    seen = ", ".join(f"{d['type']} {d['path']}" for d in report["edgetpu_devices"])
    lines.append(f"Edge TPU devices: {seen or 'none seen'}")
    system_seen = ", ".join(f"{d['type']} {d['path']} {d.get('state', '')}".strip() for d in report["devices_seen_by_system"])
    lines.append(f"seen by the operating system (USB ids, /dev/apex_N): {system_seen or 'none'}")
    for spec, probe in report["delegates"].items():
        lines.append(f"delegate {spec}: " + ("loads" if probe.get("loaded") else f"fails: {probe.get('error')}"))
    lines += [f"known bad: {summary}" for summary in report["known_bad"]]
    if report["device"] != "cpu" or report["known_bad"]:
        lines.append("libedgetpu / LiteRT pairings:")
        lines += [f"  {p['libedgetpu']}: {p['runtimes']} ({p['source']})" for p in report["pairings"]]
    lines.append(f"{'OK' if report['usable'] else 'NOT USABLE'}: {report['reason']}")
    return "\n".join(lines)

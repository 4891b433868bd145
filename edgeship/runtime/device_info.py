"""What a result was measured on: CPU, the ISA features that decide int8 speed, board, OS, versions.

Absolute latencies mean nothing without the machine: the same int8 model runs several times
faster where XNNPACK finds dot-product instructions (Arm ``asimddp``, x86 VNNI) than where it
does not. Every bench result carries :func:`device_identity`.

Example:
    >>> info = parse_cpuinfo("model name : Intel(R) Xeon(R)\\nflags : fpu sse2 avx2 avx512f avx512_vnni\\n")
    >>> info["cpu_model"], info["isa_features"]
    ('Intel(R) Xeon(R)', ['avx2', 'avx512_vnni', 'avx512f'])
"""

from __future__ import annotations

import os
import platform
from importlib import metadata

__all__ = ["INT8_FEATURES", "device_identity", "parse_cpuinfo", "usable_cores"]

# Flags (x86 ``flags``) and features (Arm ``Features``) that change which int8 kernels run.
INT8_FEATURES = (
    "avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_tile", "amx_int8",   # x86-64
    "neon", "asimd", "asimddp", "i8mm", "sve", "sve2",                         # Arm (neon: 32-bit kernels)
)
# Arm's "CPU part" numbers (implementer 0x41) of the cores found in boards and phones.
_ARM_PARTS = {
    "0xd03": "Cortex-A53", "0xd04": "Cortex-A35", "0xd05": "Cortex-A55", "0xd07": "Cortex-A57",
    "0xd08": "Cortex-A72", "0xd09": "Cortex-A73", "0xd0a": "Cortex-A75", "0xd0b": "Cortex-A76",
    "0xd0c": "Neoverse-N1", "0xd0d": "Cortex-A77", "0xd40": "Neoverse-V1", "0xd41": "Cortex-A78",
    "0xd44": "Cortex-X1", "0xd46": "Cortex-A510", "0xd47": "Cortex-A710", "0xd48": "Cortex-X2",
    "0xd49": "Neoverse-N2", "0xd4f": "Neoverse-V2", "0xd80": "Cortex-A520", "0xd81": "Cortex-A720",
}
_MAX_PROC_BYTES = 1 << 20  # /proc/cpuinfo of a 256-core server is about 400 KB
_VERSIONED = ("ai-edge-litert", "edgeship", "numpy")


def parse_cpuinfo(text: str) -> dict:
    """The CPU model, int8-relevant ISA features and board of a ``/proc/cpuinfo`` text.

    x86 names its CPU (``model name``) and lists ``flags``; Arm lists ``Features`` and a
    ``CPU part`` number, translated here (``0xd08`` is a Cortex-A72, the Pi 4's core); a
    Raspberry Pi kernel adds the board as ``Model``.

    Returns:
        ``cpu_model`` (str, "" when unknown), ``isa_features`` (sorted, those of
        :data:`INT8_FEATURES` present on every core) and ``board`` (str or None).

    Example:
        >>> parse_cpuinfo("Features : fp asimd asimddp\\nCPU implementer : 0x41\\nCPU part : 0xd0b\\n")["cpu_model"]
        'Cortex-A76'
    """
    fields: dict[str, list[str]] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:  # keys keep their case: x86's "model" is a number, a Pi's "Model" its board
            fields.setdefault(key.strip(), []).append(value.strip())
    flag_lines = fields.get("flags") or fields.get("Features") or []
    # A feature counts only when every core has it: big.LITTLE parts can differ.
    common = set.intersection(*(set(line.split()) for line in flag_lines)) if flag_lines else set()
    return {"cpu_model": _cpu_model(fields), "isa_features": sorted(common & set(INT8_FEATURES)),
            "board": _first(fields, "Model")}


def _cpu_model(fields: dict[str, list[str]]) -> str:
    part, implementer = _first(fields, "CPU part"), _first(fields, "CPU implementer")
    # 32-bit Arm kernels call every core "ARMv7 Processor rev 3 (v7l)": the part number says more.
    if part and implementer in (None, "0x41") and part.lower() in _ARM_PARTS:
        return _ARM_PARTS[part.lower()]
    named = _first(fields, "model name") or _first(fields, "cpu model")
    if named:
        return named
    return f"implementer {implementer} part {part}" if part else ""


def _first(fields: dict[str, list[str]], key: str) -> str | None:
    values = fields.get(key)
    return values[0] if values else None


def usable_cores() -> int:
    """Cores this process may run on (its affinity mask: a container or ``taskset`` can limit it)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # macOS and Windows have no affinity mask
        return os.cpu_count() or 1


def _read_small(path: str) -> str | None:
    try:
        with open(path, "rb") as handle:
            return handle.read(_MAX_PROC_BYTES).decode("utf-8", "replace")
    except OSError:
        return None


def _board(cpuinfo: dict) -> str | None:
    """The board as the OS names it: the device tree on a Pi and most Arm boards, DMI on a PC."""
    tree = _read_small("/proc/device-tree/model")
    if tree:
        return tree.rstrip("\0\n ").replace("\0", "")
    if cpuinfo.get("board"):
        return cpuinfo["board"]
    dmi = _read_small("/sys/class/dmi/id/product_name")
    return (dmi or "").strip() or None


def _os_name() -> str:
    release = _read_small("/etc/os-release") or ""
    pretty = next((line.split("=", 1)[1].strip().strip('"') for line in release.splitlines()
                   if line.startswith("PRETTY_NAME=")), "")
    kernel = f"{platform.system()} {platform.release()}"
    return f"{pretty} ({kernel})" if pretty else platform.platform()


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def device_identity() -> dict:
    """This machine, as every bench result records it.

    Returns:
        ``machine`` (``x86_64``, ``aarch64``, ...), ``cpu_model``, ``isa_features``,
        ``cores`` (usable by this process) and ``cores_total``, ``board`` (None where the OS
        does not say), ``os``, ``python`` and ``versions`` (ai-edge-litert, edgeship, numpy).

    Example:
        >>> identity = device_identity()
        >>> identity["cores"] >= 1 and "ai-edge-litert" in identity["versions"]
        True
    """
    cpuinfo = parse_cpuinfo(_read_small("/proc/cpuinfo") or "")
    return {
        "machine": platform.machine(),
        "cpu_model": cpuinfo["cpu_model"] or platform.processor() or platform.machine(),
        "isa_features": cpuinfo["isa_features"],
        "cores": usable_cores(),
        "cores_total": os.cpu_count(),
        "board": _board(cpuinfo),
        "os": _os_name(),
        "python": platform.python_version(),
        "versions": {name: _version(name) for name in _VERSIONED},
    }
